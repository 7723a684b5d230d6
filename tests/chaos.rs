//! Real crashes (issue 16): a real daemon converging real digest bumps
//! (v1 → v2 → v3 → …) of a real compose project is SIGKILLed at a random
//! moment of each round and started again, alternating two ways a host
//! loses it:
//! - the daemon's process alone (`KillMode=process`, a supervisor that
//!   signals the main pid, the OOM killer): the compose it started goes on;
//! - the daemon and everything it started (systemd's default
//!   `KillMode=control-group`), compose included.
//!
//! After each round: the desired version serves within a bound, the link
//! names a complete release, no temp release or journal is left, history
//! parses, and no release was marked failed or quarantined by a crash.
//! The randomness is seeded (`STACKPIN_CHAOS_SEED`, printed), the number of
//! rounds is `STACKPIN_CHAOS_ROUNDS` (default 8).

use crate::common;

use common::{Fixtures, Running, StackFixture, TestHost};
use std::time::{Duration, Instant};

/// How long the desired version may take to serve after a restart.
const CONVERGE_BOUND: Duration = Duration::from_secs(120);

/// xorshift64*: enough to spread kill moments, and replayable from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, Debug)]
enum Kill {
    /// SIGKILL to the daemon's pid only.
    MainOnly,
    /// SIGKILL to the daemon and every process it started.
    Everything,
}

fn start_daemon(h: &TestHost) -> Running {
    let cfg = h.tmp().join("chaos.yaml");
    common::write_config(
        &cfg,
        "repo: {branch: main, poll_interval: 1s, watch: true}\nconcurrency: 1\n",
    )
    .unwrap();
    h.daemon_cmd(&cfg, h.repo().as_os_str(), &h.tmp().join("chaos.sock"))
        .own_process_group()
        .spawn()
}

/// `pid` and every process below it, from `/proc`'s parent links.
fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let p: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // `pid (comm) state ppid …`; comm may hold spaces.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            Some((p, ppid.parse().ok()?))
        })
        .collect();
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

fn kill(run: Running, how: Kill) {
    let pid = run.id();
    let targets = match how {
        Kill::MainOnly => vec![pid],
        Kill::Everything => descendants(pid),
    };
    for p in targets {
        // SAFETY: kill(2) on pids read just now; a gone one is ESRCH.
        unsafe {
            libc::kill(p as libc::pid_t, libc::SIGKILL);
        }
    }
    let _ = run.wait();
}

#[test]
fn sigkilled_mid_converge_every_round_ends_on_the_desired_release() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("chaos");
    let port = h.free_port();
    let rounds: usize = std::env::var("STACKPIN_CHAOS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("STACKPIN_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("chaos: seed {seed} (STACKPIN_CHAOS_SEED={seed} replays it), {rounds} rounds");
    let mut rng = Rng(seed);
    let images = [&f.v1, &f.v2, &f.v3];
    let write = |i: usize| {
        let label = ["v1", "v2", "v3"][i % 3];
        StackFixture::new(&s, images[i % 3], port, label)
            .smoke_timeout("20s")
            .write(&h);
        h.commit(&format!("round {i}: {label}"));
        label
    };
    write(0);
    let mut daemon = start_daemon(&h);
    h.serves(port, "stackpin-test-app v1");
    // The compose STACKPIN_TEST_FLAVOUR names is the one the daemon runs.
    common::Flavour::default_for_tests().assert_made(&h, &s);
    let started = Instant::now();
    for round in 1..=rounds {
        let how = if round % 2 == 1 {
            Kill::MainOnly
        } else {
            Kill::Everything
        };
        let label = write(round);
        let delay = Duration::from_millis(rng.below(4000));
        std::thread::sleep(delay);
        let logs = daemon.stderr();
        kill(daemon, how);
        println!("chaos round {round}: {label}, {how:?} after {delay:?}");
        daemon = start_daemon(&h);
        let want = format!("stackpin-test-app {label}");
        let t = Instant::now();
        let served = common::wait_for(CONVERGE_BOUND, || {
            (h.http_get(port, "/")
                .map(|b| b.trim().to_string())
                .as_deref()
                == Some(want.as_str())
                && h.current_version(&s) == label)
                .then_some(())
        });
        let context = || {
            format!(
                "seed {seed}, round {round} ({how:?} after {delay:?})\n--- daemon before ---\n{}\n--- daemon after ---\n{}\n--- history ---\n{}",
                logs,
                daemon.stderr(),
                h.history()
            )
        };
        assert!(
            served.is_some(),
            "{want} not served within {CONVERGE_BOUND:?}: {}",
            context()
        );
        let after = daemon.stderr();
        let what = if after.contains("recovering an interrupted") {
            "recovered an interrupted converge"
        } else {
            "nothing was interrupted"
        };
        let orphan = if after.contains("compose still running for") {
            "; waited for the orphan compose"
        } else {
            ""
        };
        println!(
            "chaos round {round}: {label} served {:?} after the restart ({what}{orphan})",
            t.elapsed()
        );
        // The run that served it may still be recording: wait for its end.
        common::wait_for(Duration::from_secs(30), || {
            (!h.root()
                .join("releases/.stackpin/journal")
                .join(format!("{s}.json"))
                .exists())
            .then_some(())
        });
        h.assert_consistent(&s);
        let history = h.cmd(["history", "--json"]).run().ok().json();
        assert!(
            history.as_array().is_some_and(|a| !a.is_empty()),
            "{history}"
        );
        let bad: Vec<_> = history
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "deploy" && e["status"] == "failed")
            .collect();
        assert!(
            bad.is_empty(),
            "a crash failed a release: {bad:?}\n{}",
            context()
        );
        assert!(
            !h.root()
                .join("releases/.stackpin/quarantine")
                .join(format!("{s}.json"))
                .exists(),
            "a crash quarantined a release: {}",
            context()
        );
    }
    println!(
        "chaos: {rounds} rounds in {:?} (seed {seed})",
        started.elapsed()
    );
    kill(daemon, Kill::Everything);
}
