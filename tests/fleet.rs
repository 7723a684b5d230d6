//! Past one host (issue 14, parts 1 and 2 begun): three test hosts, each in
//! its own network namespace with its own Docker engine
//! (`scripts/setup.d/fleet.sh`), converge from one desired-state
//! repository served by `git daemon` on their bridge and pull from the
//! loopback registry served there too. Each stackpin runs inside its host's
//! namespace, so cutting the host's link cuts it off from git and the
//! registry for real.
//!
//! `hosts:` selects by host name and by the hosts' `labels:`; each host
//! converges its stacks only; a host cut off keeps running its last good
//! release and converges once it is back; a host killed mid-converge
//! recovers on its next run. After every step every host is on a complete
//! release and has no journal left.

mod common;

use common::{Fixtures, GitDaemon, STACKPIN, TestCommand, TestHost, parse_env_file};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One test host of the fleet.
struct Member {
    /// Its network namespace and its stackpin host name (`spfleet1`).
    name: String,
    /// Its engine's socket.
    sock: PathBuf,
    /// Its stackpin config, root and state, under the test's temp dir.
    cfg: PathBuf,
    root: PathBuf,
}

struct Fleet {
    members: Vec<Member>,
    /// `10.231.0.1:PORT`: the registry as the hosts see it.
    registry: String,
    /// `10.231.0.1`: the machine on the bridge.
    bridge: String,
}

impl Fleet {
    /// The hosts `scripts/setup.d/fleet.sh` started (from the environment,
    /// or target/test-fleet.env outside CI), each with a home in `h`'s temp
    /// dir; [`Fleet::configure`] writes their configs.
    fn require(h: &TestHost) -> Fleet {
        let mut vars = std::collections::BTreeMap::new();
        if std::env::var_os("STACKPIN_TEST_FLEET").is_none() {
            assert!(
                std::env::var_os("CI").is_none(),
                "the harness did not start the fleet (STACKPIN_TEST_FLEET is not set); run the tests with scripts/test.sh"
            );
            let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-fleet.env");
            let text = std::fs::read_to_string(&file).unwrap_or_else(|_| {
                panic!(
                    "this test needs the fleet and {} does not exist; run `bash scripts/setup.d/fleet.sh` (as root) first",
                    file.display()
                )
            });
            vars = parse_env_file(&text);
        }
        let get = |k: &str| {
            std::env::var(k)
                .ok()
                .or_else(|| vars.get(k).cloned())
                .unwrap_or_else(|| panic!("{k} is not set (scripts/setup.d/fleet.sh)"))
        };
        let dir = PathBuf::from(get("STACKPIN_TEST_FLEET"));
        let members = get("STACKPIN_TEST_FLEET_HOSTS")
            .split_whitespace()
            .enumerate()
            .map(|(i, e)| {
                let (name, _addr) = e.split_once('=').expect("name=address");
                let home = h.tmp().join(name);
                std::fs::create_dir_all(&home).unwrap();
                Member {
                    name: name.to_string(),
                    sock: dir.join(format!("h{}", i + 1)).join("docker.sock"),
                    cfg: home.join("config.yaml"),
                    root: home.join("root"),
                }
            })
            .collect();
        Fleet {
            members,
            registry: get("STACKPIN_TEST_FLEET_REGISTRY"),
            bridge: get("STACKPIN_TEST_FLEET_BRIDGE"),
        }
    }

    /// Writes each member's config: its name, `labels[i]` (the inside of
    /// `labels: {…}`), the repository at `git_url`, and `extra[i]`.
    fn configure(&self, git_url: &str, labels: &[&str], extra: &[String]) {
        for (i, m) in self.members.iter().enumerate() {
            let home = m.cfg.parent().unwrap();
            std::fs::write(
                &m.cfg,
                format!(
                    "host: {name}\nlabels: {{{labels}}}\nroot: {root}\nstate_dir: {state}\ncontrol_socket: {sock}\nrepo: {{url: \"{git_url}\", branch: main}}\n{extra}",
                    name = m.name,
                    labels = labels[i],
                    root = m.root.display(),
                    state = home.join("state").display(),
                    sock = home.join("control.sock").display(),
                    extra = extra.get(i).map(String::as_str).unwrap_or(""),
                ),
            )
            .unwrap();
        }
    }

    /// `stackpin ARGS…` on member `i`, inside its namespace, on its engine.
    fn stackpin(&self, h: &TestHost, i: usize, args: &[&str]) -> TestCommand {
        let m = &self.members[i];
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/var/run/netns/{}", m.name))
            .arg(STACKPIN)
            .arg("--config")
            .arg(&m.cfg)
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", m.sock.display()))
            .env("NO_COLOR", "1")
            .current_dir(h.tmp());
        common::without_developer_env(&mut c);
        h.command(c)
    }

    /// A fixture image as the hosts pull it: the same digest, from the
    /// registry on the bridge.
    fn image(&self, f: &Fixtures, reference: &str) -> String {
        reference.replacen(&f.registry, &self.registry, 1)
    }

    /// Services of `stack` running on member `i`'s engine, with the image
    /// each was created from.
    fn running(&self, i: usize, stack: &str) -> Vec<(String, String)> {
        let out = Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.members[i].sock.display()))
            .args([
                "ps",
                "--filter",
                &format!("label=com.docker.compose.project={stack}"),
                "--format",
                "{{.Label \"com.docker.compose.service\"}} {{.Image}}",
            ])
            .output()
            .expect("docker ps");
        let mut v: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(s, i)| (s.to_string(), i.to_string()))
            .collect();
        v.sort();
        v
    }

    /// GET `http://127.0.0.1:port/` on member `i` (the fixture app listens
    /// on loopback, in the host's namespace).
    fn get(&self, h: &TestHost, i: usize, port: u16) -> Option<String> {
        let out = h
            .command({
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/var/run/netns/{}", self.members[i].name))
                    .args(["curl", "-fsS", "--max-time", "3"])
                    .arg(format!("http://127.0.0.1:{port}/"));
                c
            })
            .run();
        out.success().then(|| out.stdout())
    }

    /// Every member: each stack link on a complete release, no journal, no
    /// temp release left behind.
    fn assert_consistent(&self) {
        for m in &self.members {
            let stacks = m.root.join("stacks");
            for e in std::fs::read_dir(&stacks).into_iter().flatten().flatten() {
                let target = std::fs::read_link(e.path()).unwrap();
                assert!(
                    target.join("release.json").is_file(),
                    "{}: {} points at an incomplete release {}",
                    m.name,
                    e.path().display(),
                    target.display()
                );
            }
            let journal = m.root.join("releases/.stackpin/journal");
            let left: Vec<_> = std::fs::read_dir(&journal)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect();
            assert!(left.is_empty(), "{}: journal left: {left:?}", m.name);
        }
    }

    /// Cuts member `i` off the bridge (its link, on this machine's side)
    /// until the guard is dropped: a failing test never leaves a host cut
    /// off for the next one.
    fn cut(&self, i: usize) -> Cut {
        set_link(i, false);
        Cut(i)
    }
}

fn set_link(i: usize, up: bool) {
    let st = Command::new("ip")
        .args(["link", "set", &format!("spfl{}", i + 1)])
        .arg(if up { "up" } else { "down" })
        .status()
        .expect("ip link");
    assert!(st.success());
}

/// A member cut off; its link comes back up on drop.
struct Cut(usize);

impl Drop for Cut {
    fn drop(&mut self) {
        set_link(self.0, true);
    }
}

fn write_web(h: &TestHost, stack: &str, image: &str, port: u16, version: &str) {
    h.write(
        format!("stacks/{stack}/stack.yaml"),
        format!(
            "version: {version}\nhosts: [\"role=app\"]\nsmoke:\n  timeout: 30s\n  checks:\n    - http: {{url: \"http://127.0.0.1:{port}/health\"}}\n"
        ),
    );
    h.write(
        format!("stacks/{stack}/compose.yaml"),
        format!(
            "services:\n  web:\n    image: {image}\n    network_mode: host\n    environment: {{PORT: \"{port}\"}}\n"
        ),
    );
}

#[test]
fn three_hosts_converge_their_stacks_through_a_partition_and_a_kill() {
    let h = TestHost::new();
    let f = Fixtures::require();
    // The repository, served on the bridge to the hosts only.
    let fleet = Fleet::require(&h);
    let daemon = GitDaemon::serve_on(&fleet.bridge, h.tmp(), false);
    fleet.configure(
        &daemon.url("repo"),
        &["role: app, region: tyo", "role: app", "role: edge"],
        &[],
    );
    let web = h.stack("web");
    let edge = h.stack("edge");
    let (web_port, edge_port) = (h.free_port(), h.free_port());
    write_web(&h, &web, &fleet.image(&f, &f.v1), web_port, "v1");
    h.write(
        format!("stacks/{edge}/stack.yaml"),
        format!("hosts: [{}]\n", fleet.members[2].name),
    );
    h.write(
        format!("stacks/{edge}/compose.yaml"),
        format!(
            "services:\n  edge:\n    image: {}\n    network_mode: host\n    environment: {{PORT: \"{edge_port}\"}}\n",
            fleet.image(&f, &f.v1)
        ),
    );
    h.commit("web v1 on the app hosts, edge on host 3");

    // Each host converges its own stacks, on its own engine.
    for i in 0..3 {
        fleet.stackpin(&h, i, &["sync"]).run().ok();
    }
    for i in 0..2 {
        assert_eq!(fleet.running(i, &web).len(), 1, "host {i} runs web");
        assert!(fleet.running(i, &edge).is_empty(), "host {i} runs no edge");
        assert_eq!(
            fleet.get(&h, i, web_port).as_deref(),
            Some("stackpin-test-app v1\n")
        );
    }
    assert!(fleet.running(2, &web).is_empty(), "role=edge runs no web");
    assert_eq!(fleet.running(2, &edge).len(), 1);
    let status = fleet.stackpin(&h, 2, &["status"]).run().ok();
    assert!(
        status.stdout().contains(&web) && status.stdout().contains("role=app"),
        "status says why web is not here: {}",
        status.report()
    );
    fleet.assert_consistent();

    // Host 2 cut off: it keeps running v1; the others move to v2.
    let cut_off = fleet.cut(1);
    write_web(&h, &web, &fleet.image(&f, &f.v2), web_port, "v2");
    h.commit("web v2");
    fleet.stackpin(&h, 0, &["sync"]).run().ok();
    assert_eq!(
        fleet.get(&h, 0, web_port).as_deref(),
        Some("stackpin-test-app v2\n")
    );
    let cut = fleet.stackpin(&h, 1, &["sync"]).run();
    assert!(
        cut.stderr().contains("fetch") || cut.stdout().contains("fetch"),
        "the cut-off host says it could not fetch: {}",
        cut.report()
    );
    assert_eq!(
        fleet.get(&h, 1, web_port).as_deref(),
        Some("stackpin-test-app v1\n"),
        "the cut-off host still serves its last good release"
    );
    drop(cut_off);
    fleet.stackpin(&h, 1, &["sync"]).run().ok();
    assert_eq!(
        fleet.get(&h, 1, web_port).as_deref(),
        Some("stackpin-test-app v2\n"),
        "back on the network, host 2 converges"
    );
    fleet.assert_consistent();

    // Host 1 killed mid-converge (after the switch): its next run recovers.
    write_web(&h, &web, &fleet.image(&f, &f.v3), web_port, "v3");
    h.commit("web v3");
    let killed = fleet
        .stackpin(&h, 0, &["sync"])
        .env("STACKPIN_FAULT", "after-switch")
        .run();
    assert!(
        killed.stderr().contains("fault injected at after-switch"),
        "{}",
        killed.report()
    );
    fleet.stackpin(&h, 0, &["sync"]).run().ok();
    fleet.stackpin(&h, 1, &["sync"]).run().ok();
    for i in 0..2 {
        assert_eq!(
            fleet.get(&h, i, web_port).as_deref(),
            Some("stackpin-test-app v3\n"),
            "host {i}"
        );
    }
    assert_eq!(fleet.running(2, &edge).len(), 1, "edge untouched");
    fleet.assert_consistent();
}

/// The trust chain across hosts: the staging host deploys, verifies and
/// publishes a signed marker over `git://` to the repository; the two
/// production hosts, which trust that host's key, promote the same pins on
/// their own engines. Before the marker, production is blocked.
#[test]
fn staging_on_one_host_promotes_production_on_two_others() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let fleet = Fleet::require(&h);
    let stg = h.stack("stg");
    let prod = h.stack("prod");
    let port = h.free_port();
    let key = h.ssh_signer("staging-key", &fleet.members[0].name, "stackpin-verified");
    for (stack, env, extra) in [
        (
            &stg,
            "staging",
            "marks_verified: true\nhosts: [\"role=staging\"]\n".to_string(),
        ),
        (
            &prod,
            "production",
            format!("hosts: [\"role=prod\"]\npromote_from: {stg}\n"),
        ),
    ] {
        h.write(
            format!("stacks/{stack}/stack.yaml"),
            format!(
                "environment: {env}\n{extra}smoke:\n  timeout: 30s\n  checks:\n    - http: {{url: \"http://127.0.0.1:{port}/health\"}}\n"
            ),
        );
        h.write(
            format!("stacks/{stack}/compose.yaml"),
            format!(
                "services:\n  web:\n    image: {}\n    network_mode: host\n    environment: {{PORT: \"{port}\"}}\n",
                fleet.image(&f, &f.v1)
            ),
        );
    }
    h.commit("staging on host 1, production on hosts 2 and 3");
    h.bare_remote();
    let daemon = GitDaemon::serve_on(&fleet.bridge, h.tmp(), true);
    let trusting = format!(
        "signers: {{staging-hosts: {{allowed_signers: {}}}}}\nverifiers: {{{stg}: staging-hosts}}\npolicy:\n  - {{stacks: [{prod}], promote_from: {stg}}}\n",
        key.allowed.display()
    );
    fleet.configure(
        &daemon.url("remote.git"),
        &["role: staging", "role: prod", "role: prod"],
        &[
            format!(
                "verified: {{publish: true, signing_key: {}}}\n",
                key.key.display()
            ),
            trusting.clone(),
            trusting,
        ],
    );

    let out = fleet.stackpin(&h, 1, &["sync"]).run().code(1);
    assert!(out.stdout().contains("blocked"), "{}", out.report());
    let out = fleet.stackpin(&h, 0, &["sync"]).run().ok();
    assert!(out.stdout().contains("deployed"), "{}", out.report());
    let out = fleet
        .stackpin(&h, 0, &["--json", "verify", stg.as_str()])
        .run()
        .ok()
        .json();
    assert!(
        out["published"]["commit"].is_string(),
        "published over git://: {out}"
    );
    for i in 1..3 {
        let out = fleet.stackpin(&h, i, &["sync"]).run().ok();
        assert!(
            out.stdout().contains("deployed"),
            "host {i}: {}",
            out.report()
        );
        assert_eq!(
            fleet.get(&h, i, port).as_deref(),
            Some("stackpin-test-app v1\n"),
            "host {i} promoted"
        );
        assert!(fleet.running(i, &stg).is_empty(), "no staging on host {i}");
    }
    assert!(
        fleet.running(0, &prod).is_empty(),
        "no production on staging"
    );
    fleet.assert_consistent();
}
