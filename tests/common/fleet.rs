//! The fleet's test hosts (`scripts/setup.d/fleet.sh`): three network
//! namespaces, each with its own Docker engine, on a bridge with the
//! registry and a `git daemon`; shared by tests/fleet.rs and tests/swarm.rs.

use super::{Fixtures, STACKPIN, TestCommand, TestHost, parse_env_file};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One test host of the fleet.
pub struct Member {
    /// Its network namespace and its stackpin host name (`spfleet1`).
    pub name: String,
    /// Its address on the bridge (`10.231.0.11`).
    pub addr: String,
    /// Its engine's socket.
    pub sock: PathBuf,
    /// Its stackpin config, root and state, under the test's temp dir.
    pub cfg: PathBuf,
    pub root: PathBuf,
}

pub struct Fleet {
    pub members: Vec<Member>,
    /// `10.231.0.1:PORT`: the registry as the hosts see it.
    pub registry: String,
    /// `10.231.0.1`: the machine on the bridge.
    pub bridge: String,
}

impl Fleet {
    /// The hosts `scripts/setup.d/fleet.sh` started (from the environment,
    /// or target/test-fleet.env outside CI), each with a home in `h`'s temp
    /// dir; [`Fleet::configure`] writes their configs.
    pub fn require(h: &TestHost) -> Fleet {
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
                let (name, addr) = e.split_once('=').expect("name=address");
                let home = h.tmp().join(name);
                std::fs::create_dir_all(&home).unwrap();
                Member {
                    name: name.to_string(),
                    addr: addr.to_string(),
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

    /// The members' addresses, in order.
    pub fn addresses(&self) -> Vec<String> {
        self.members.iter().map(|m| m.addr.clone()).collect()
    }

    /// Writes each member's config: its name, `labels[i]` (the inside of
    /// `labels: {…}`), the repository at `git_url`, and `extra[i]`.
    pub fn configure(&self, git_url: &str, labels: &[&str], extra: &[String]) {
        for (i, m) in self.members.iter().enumerate() {
            let home = m.cfg.parent().unwrap();
            super::write_config(
                &m.cfg,
                format!(
                    "host: {name}\nlabels: {{{labels}}}\nroot: {root}\nstate_dir: {state}\ncontrol_socket: {sock}\nrepo: {{url: \"{git_url}\", branch: main, poll_interval: 1s}}\n{extra}",
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
    pub fn stackpin(&self, h: &TestHost, i: usize, args: &[&str]) -> TestCommand {
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
        super::without_developer_env(&mut c);
        h.command(c)
    }

    /// `stackpin daemon` on member `i`, in its namespace, in a process group
    /// of its own (so a SIGKILL reaches it alone).
    pub fn daemon(&self, h: &TestHost, i: usize) -> super::Running {
        self.stackpin(h, i, &["daemon"]).own_process_group().spawn()
    }

    /// `stackpin --json status` rows of member `i`, by stack (answered by
    /// its daemon when one runs).
    pub fn states(
        &self,
        h: &TestHost,
        i: usize,
    ) -> std::collections::BTreeMap<String, (String, String)> {
        let rows = self.stackpin(h, i, &["--json", "status"]).run().ok().json();
        rows.as_array()
            .expect("status rows")
            .iter()
            .map(|r| {
                (
                    r["stack"].as_str().unwrap_or_default().to_string(),
                    (
                        r["state"].as_str().unwrap_or_default().to_string(),
                        r["version"].as_str().unwrap_or_default().to_string(),
                    ),
                )
            })
            .collect()
    }

    /// A fixture image as the hosts pull it: the same digest, from the
    /// registry on the bridge.
    pub fn image(&self, f: &Fixtures, reference: &str) -> String {
        reference.replacen(&f.registry, &self.registry, 1)
    }

    /// Services of `stack` running on member `i`'s engine, with the image
    /// each was created from.
    pub fn running(&self, i: usize, stack: &str) -> Vec<(String, String)> {
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
    pub fn get(&self, h: &TestHost, i: usize, port: u16) -> Option<String> {
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
    pub fn assert_consistent(&self) {
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
    pub fn cut(&self, i: usize) -> Cut {
        set_link(i, false);
        Cut(i)
    }
}

pub fn set_link(i: usize, up: bool) {
    let st = Command::new("ip")
        .args(["link", "set", &format!("spfl{}", i + 1)])
        .arg(if up { "up" } else { "down" })
        .status()
        .expect("ip link");
    assert!(st.success());
}

/// A member cut off; its link comes back up on drop.
pub struct Cut(usize);

impl Drop for Cut {
    fn drop(&mut self) {
        set_link(self.0, true);
    }
}
