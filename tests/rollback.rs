//! Manual rollback on the real engine (issue 6, item 2; the seed runbook's
//! scenario 3 `rollback.sh odoo18-prod --list | sha-4b1ce21 | --last-good`):
//! listing, `--to`, `--steps`, `--last-good`, the hold that keeps the next
//! sync from undoing it (also across a daemon restart), `resume`, and a
//! rollback whose target fails smoke being reverted.

use crate::common;

use common::{Fixtures, Running, StackFixture, TestHost};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn write_stack(h: &TestHost, stack: &str, image: &str, port: u16, version: &str, smoke: u32) {
    StackFixture::new(stack, image, port, version)
        .smoke_timeout(&format!("{smoke}s"))
        .write(h);
}

/// The stack's row of `status --json`.
fn status(h: &TestHost, stack: &str) -> serde_json::Value {
    let out = h.cmd(["--json", "status", stack]).run().ok().json();
    out.as_array()
        .and_then(|a| a.iter().find(|r| r["stack"] == stack))
        .cloned()
        .unwrap_or_else(|| panic!("no status row for {stack}: {out}"))
}

/// The rows of `rollback --list --json`.
fn list(h: &TestHost, stack: &str) -> Vec<serde_json::Value> {
    h.cmd(["--json", "rollback", stack, "--list"])
        .run()
        .ok()
        .json()
        .as_array()
        .cloned()
        .unwrap()
}

#[track_caller]
fn assert_no_journal(h: &TestHost, stack: &str) {
    assert!(
        !h.root()
            .join("releases/.stackpin/journal")
            .join(format!("{stack}.json"))
            .exists(),
        "journal not cleared\n{}",
        h.root_listing()
    );
}

/// Scenario 3 of the runbook: list, roll back by steps and by version, stay
/// held across syncs and new commits, resume.
#[test]
fn scenario_3_list_rollback_hold_and_resume() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("odoo");
    let port = h.free_port();
    for (img, v) in [(&f.v1, "v1"), (&f.v2, "v2"), (&f.v3, "v3")] {
        write_stack(&h, &s, img, port, v, 15);
        h.commit(v);
        h.cmd(["sync"]).run().ok().stdout_contains("deployed");
    }
    h.serves(port, "stackpin-test-app v3");

    // 1. --list: three releases, oldest first, v3 current, v2 previous.
    let rows = list(&h, &s);
    let versions: Vec<&str> = rows
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["v1", "v2", "v3"], "{rows:?}");
    assert!(rows.iter().all(|r| r["outcome"] == "deployed"), "{rows:?}");
    assert_eq!(rows[2]["current"], true);
    assert_eq!(rows[1]["previous"], true);
    let text = h.cmd(["rollback", &s, "--list"]).run().ok().stdout();
    let v3_line = text.lines().find(|l| l.contains("v3__")).unwrap_or("");
    assert!(v3_line.contains("current"), "{text}");

    // --steps 1: back to v2, held.
    h.cmd(["rollback", &s, "--steps", "1"])
        .run()
        .ok()
        .stdout_contains("rolled back to v2");
    h.serves(port, "stackpin-test-app v2");

    // 2. --to v1 (while held): serves v1, recorded, held on it.
    h.cmd(["rollback", &s, "--to", "v1"])
        .run()
        .ok()
        .stdout_contains("rolled back to v1");
    h.serves(port, "stackpin-test-app v1");
    assert_no_journal(&h, &s);
    assert_eq!(h.current_version(&s), "v1");
    assert!(
        h.link_target(&s)
            .unwrap()
            .to_string_lossy()
            .contains("/v1__"),
        "{}",
        h.root_listing()
    );
    let hist = h.history();
    assert!(
        hist.contains(&format!(
            "| {s} | test | manual-rollback | v1 | success | from v2"
        )),
        "{hist}"
    );
    assert!(
        hist.contains(&format!(
            "| {s} | test | hold | v1 | success | manual rollback to v1"
        )),
        "{hist}"
    );
    let st = status(&h, &s);
    assert_eq!(st["state"], "held", "{st}");
    let reason = st["reason"].as_str().unwrap();
    assert!(
        reason.contains("held: manual rollback to v1; git wants v3"),
        "{st}"
    );
    assert!(reason.contains("2 commits ahead"), "{st}");

    // A sync does not undo it.
    h.cmd(["sync"]).run().ok().stdout_contains("held");
    h.serves(port, "stackpin-test-app v1");

    // Not even after a new commit.
    write_stack(&h, &s, &f.v3, port, "v4", 15);
    h.commit("v4: new config");
    h.cmd(["sync"]).run().ok().stdout_contains("held");
    h.serves(port, "stackpin-test-app v1");
    assert_eq!(h.current_version(&s), "v1");
    let st = status(&h, &s);
    assert!(
        st["reason"]
            .as_str()
            .unwrap()
            .contains("git wants v4 (3 commits ahead)"),
        "{st}"
    );

    // Nothing older than v1 is kept: --steps 1 is refused and says what exists.
    let out = h.cmd(["rollback", &s, "--steps", "1"]).run().code(1);
    assert!(
        out.stderr()
            .contains("--steps 1 goes past the oldest kept release")
            && out.stderr().contains("v1 (v1__"),
        "{}",
        out.report()
    );
    let out = h.cmd(["rollback", &s, "--to", "v9"]).run().code(1);
    assert!(
        out.stderr()
            .contains("no kept release has the id or version `v9`"),
        "{}",
        out.report()
    );

    // resume, then sync: git wins again.
    h.cmd(["resume", &s]).run().ok().stdout_contains("resumed");
    h.cmd(["sync"]).run().ok().stdout_contains("deployed");
    h.serves(port, "stackpin-test-app v3");
    assert_eq!(h.current_version(&s), "v4");
    assert_eq!(status(&h, &s)["state"], "converged");
}

/// After a broken release was auto-reverted, a rollback to it fails its own
/// smoke and is reverted (not held), and `--last-good` skips it.
#[test]
fn last_good_skips_the_broken_release_and_a_failing_rollback_is_reverted() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("odoo");
    let port = h.free_port();
    for (img, v) in [(&f.v1, "v1"), (&f.v2, "v2")] {
        write_stack(&h, &s, img, port, v, 5);
        h.commit(v);
        h.cmd(["sync"]).run().ok().stdout_contains("deployed");
    }
    write_stack(&h, &s, &f.broken, port, "v3-broken", 5);
    h.commit("broken");
    h.cmd(["sync"]).run().code(1).stdout_contains("rolled-back");
    h.serves(port, "stackpin-test-app v2");
    let v2 = h.link_target(&s).unwrap();

    let rows = list(&h, &s);
    let broken = rows.iter().find(|r| r["version"] == "v3-broken").unwrap();
    assert_eq!(broken["outcome"], "failed", "{rows:?}");
    assert_eq!(broken["quarantined"], true, "{rows:?}");
    let cur = rows.iter().find(|r| r["current"] == true).unwrap();
    assert_eq!(cur["version"], "v2", "{rows:?}");
    assert_eq!(cur["outcome"], "rolled-back-to", "{rows:?}");

    // The operator insists on the broken release (runbook form: positional
    // version): it fails its smoke, v2 is brought back, nothing is held.
    let out = h.cmd(["rollback", &s, "v3-broken"]).run().code(1);
    assert!(
        out.stdout().contains("rollback to v3-broken failed")
            && out.stdout().contains("v2 runs again"),
        "{}",
        out.report()
    );
    h.serves(port, "stackpin-test-app v2");
    assert_eq!(h.link_target(&s).unwrap(), v2);
    assert_no_journal(&h, &s);
    assert_eq!(h.current_version(&s), "v2");
    let hist = h.history();
    assert!(
        hist.contains(&format!(
            "| {s} | test | manual-rollback | v3-broken | failed | smoke failed: http"
        )),
        "{hist}"
    );
    assert!(
        !h.root()
            .join(format!("releases/.stackpin/hold/{s}.json"))
            .exists(),
        "a failed rollback must not hold the stack"
    );
    assert_ne!(status(&h, &s)["state"], "held");

    // --last-good: not the current v2, not the broken one: v1.
    h.cmd(["rollback", &s, "--last-good"])
        .run()
        .ok()
        .stdout_contains("rolled back to v1");
    h.serves(port, "stackpin-test-app v1");
    assert!(
        h.history().contains(&format!(
            "| {s} | test | manual-rollback | v1 | success | from v2"
        )),
        "{}",
        h.history()
    );
    assert_eq!(status(&h, &s)["state"], "held");
}

/// A rollback killed after its switch is finished by the next run (the
/// journal says how far it got: the operator's target is brought up and
/// smoked, then recorded and held); one killed after its hold was written
/// had completed, and only its journal is cleared.
#[test]
fn a_crash_mid_rollback_is_recovered() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("odoo");
    let port = h.free_port();
    for (img, v) in [(&f.v1, "v1"), (&f.v2, "v2")] {
        write_stack(&h, &s, img, port, v, 15);
        h.commit(v);
        h.cmd(["sync"]).run().ok().stdout_contains("deployed");
    }

    let out = h
        .cmd(["rollback", &s, "--to", "v1"])
        .env("STACKPIN_FAULT", "rollback-after-switch")
        .run();
    assert!(
        !out.success()
            && out
                .stderr()
                .contains("fault injected at rollback-after-switch"),
        "{}",
        out.report()
    );
    assert_eq!(status(&h, &s)["state"], "progressing");
    h.cmd(["sync"]).run().ok().stdout_contains("recovered");
    h.serves(port, "stackpin-test-app v1");
    assert_no_journal(&h, &s);
    assert_eq!(h.current_version(&s), "v1");
    let hist = h.history();
    assert!(
        hist.contains(&format!(
            "| {s} | test | manual-rollback | v1 | success | from v2; interrupted rollback to v1__"
        )),
        "{hist}"
    );
    assert!(
        hist.contains(&format!(
            "| {s} | test | hold | v1 | success | manual rollback to v1"
        )),
        "{hist}"
    );
    assert_eq!(status(&h, &s)["state"], "held");

    // Back on git's v2, then killed after the hold was written.
    h.cmd(["resume", &s]).run().ok();
    h.cmd(["sync"]).run().ok().stdout_contains("deployed");
    h.serves(port, "stackpin-test-app v2");
    let out = h
        .cmd(["rollback", &s, "--to", "v1"])
        .env("STACKPIN_FAULT", "rollback-after-hold")
        .run();
    assert!(
        !out.success()
            && out
                .stderr()
                .contains("fault injected at rollback-after-hold"),
        "{}",
        out.report()
    );
    h.cmd(["sync"]).run().ok().stdout_contains("had completed");
    h.serves(port, "stackpin-test-app v1");
    assert_no_journal(&h, &s);
    assert_eq!(h.current_version(&s), "v1");
    assert_eq!(status(&h, &s)["state"], "held");
}

/// A daemon with a 1s poll of the local repository and its control socket.
struct Daemon {
    run: Option<Running>,
    socket: PathBuf,
}

impl Daemon {
    fn start(h: &TestHost) -> Daemon {
        let socket = h.tmp().join("control.sock");
        let cfg = h.tmp().join("config.yaml");
        let port = h.free_port();
        common::write_config(
            &cfg,
            format!("http: {{listen: \"127.0.0.1:{port}\"}}\nrepo: {{branch: main, poll_interval: 1s, watch: false}}\n"),
        )
        .unwrap();
        let run = h.daemon_cmd(&cfg, h.repo().as_os_str(), &socket).spawn();
        let d = Daemon {
            run: Some(run),
            socket,
        };
        d.wait_until("the control socket", Duration::from_secs(60), || {
            std::os::unix::net::UnixStream::connect(&d.socket).is_ok()
        });
        d
    }

    fn logs(&self) -> String {
        self.run.as_ref().map(|r| r.stderr()).unwrap_or_default()
    }

    #[track_caller]
    fn wait_until(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "timed out waiting for {what}\n--- daemon log ---\n{}",
            self.logs()
        );
    }

    /// `stackpin ARGS…` through this daemon's socket.
    fn cmd(&self, h: &TestHost, args: &[&str]) -> common::Output {
        let mut c = h.cmd(args);
        c.env("STACKPIN_CONTROL_SOCKET", &self.socket);
        c.run()
    }

    fn stop(mut self) -> String {
        self.run
            .take()
            .unwrap()
            .terminate(Duration::from_secs(10))
            .stderr()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(r) = self.run.take() {
            r.terminate(Duration::from_secs(5));
        }
    }
}

/// A rollback through the daemon holds the stack, and the hold survives a
/// daemon restart and new commits; `resume` lets the daemon converge.
#[test]
fn hold_survives_a_daemon_restart() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("odoo");
    let port = h.free_port();
    let app = |want: &'static str| {
        move || common::http_get(port, "/").is_some_and(|(c, b)| c == 200 && b.trim() == want)
    };
    write_stack(&h, &s, &f.v1, port, "v1", 15);
    h.commit("v1");
    let d = Daemon::start(&h);
    d.wait_until("v1", Duration::from_secs(90), app("stackpin-test-app v1"));
    write_stack(&h, &s, &f.v2, port, "v2", 15);
    h.commit("v2");
    d.wait_until("v2", Duration::from_secs(60), app("stackpin-test-app v2"));

    let out = d.cmd(&h, &["rollback", &s, "--to", "v1"]).ok();
    assert!(
        out.stderr().contains("executed by the running daemon")
            && out.stdout().contains("rolled back to v1"),
        "{}",
        out.report()
    );
    h.serves(port, "stackpin-test-app v1");
    // A refusal through the daemon is exit 1 with the reason.
    let out = d.cmd(&h, &["rollback", &s, "--to", "v7"]).code(1);
    assert!(out.stderr().contains("`v7`"), "{}", out.report());
    let logs = d.stop();
    assert!(
        logs.contains("rollback ") && logs.contains("--to v1"),
        "{logs}"
    );

    let d = Daemon::start(&h);
    write_stack(&h, &s, &f.v3, port, "v3", 15);
    h.commit("v3");
    // A few polls of the new commit: still held on v1.
    std::thread::sleep(Duration::from_secs(4));
    h.serves(port, "stackpin-test-app v1");
    let st = d.cmd(&h, &["--json", "status", &s]).ok().json();
    let row = &st.as_array().unwrap()[0];
    assert_eq!(row["state"], "held", "{st}");
    assert!(
        row["reason"]
            .as_str()
            .unwrap()
            .contains("manual rollback to v1; git wants v3"),
        "{st}\n{}",
        d.logs()
    );

    d.cmd(&h, &["resume", &s]).ok().stdout_contains("resumed");
    d.wait_until(
        "v3 after resume",
        Duration::from_secs(60),
        app("stackpin-test-app v3"),
    );
    drop(d);
    assert_eq!(h.current_version(&s), "v3");
}
