//! Shared helpers for stackpin's integration tests.
//!
//! Every test builds a [`TestHost`]: its own temp dir with a host root (what
//! `/srv` is in production), a desired-state git repository and a state dir; a
//! short unique prefix for compose project (stack) names; loopback ports that
//! it never hands out twice. [`TestHost::cmd`] runs the real `stackpin` binary
//! against that host, and a failed assertion on its output panics with the
//! command line, the exit code, both streams and a listing of the root, so a
//! CI log alone explains the failure. Dropping the host removes every
//! container, network and volume of the stacks it named.
//!
//! Tests that touch the engine call [`Fixtures::require`]: the real components
//! that `scripts/fixtures.sh` set up (a Docker engine, a compose
//! implementation, a registry on 127.0.0.1 and test images addressed by
//! digest). Modelled on ripgrep's `tests/util.rs` and uv's `TestContext`.

pub mod api_server;
pub mod fleet;
pub mod systemd;

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The binary under test.
pub const STACKPIN: &str = env!("CARGO_BIN_EXE_stackpin");

/// How long [`TestCommand::run`] waits before it kills the command and fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The real components provided by `scripts/fixtures.sh`, read from the
/// environment (`STACKPIN_TEST_*`) or from `target/test-fixtures.env`.
#[derive(Clone, Debug)]
pub struct Fixtures {
    /// `127.0.0.1:PORT` of the loopback registry (`STACKPIN_TEST_REGISTRY`).
    pub registry: String,
    /// `REGISTRY/stackpin-test/app@sha256:…`: httpd on `127.0.0.1:$PORT`
    /// (default 8080) serving `/` = `stackpin-test-app v1`, `/health` = `ok`,
    /// `/version` = `v1`. Run it with `network_mode: host`.
    pub v1: String,
    /// As `v1`, saying `v2`.
    pub v2: String,
    /// As `v1`, saying `v3`.
    pub v3: String,
    /// Serves `/` but `/health` is a 404.
    pub broken: String,
    /// Prints a line and exits with status 1 after about a second.
    pub crash: String,
    /// Well-formed digest reference that the registry does not have.
    pub missing: String,
    /// `docker compose` or `docker-compose`, whichever works here.
    pub compose: String,
    /// A Docker config dir whose `cli-plugins/` holds compose v2: with
    /// `DOCKER_CONFIG` set to it, `docker compose` is v2 (production's),
    /// while every other test runs under Debian's v1.
    pub compose_v2_config: PathBuf,
    /// Debian images (scripts/web-images.sh), addressed by digest:
    /// nginx (the stack mounts its config at /etc/nginx/nginx.conf) ...
    pub web_router: String,
    /// ... tests/images/web/app.py on :8000 answering `v1` on `/version`,
    /// `/web/health` and `/web/login`; `python3 /app/app.py health` is its
    /// healthcheck ...
    pub web_app_v1: String,
    /// ... the same answering `v2` ...
    pub web_app_v2: String,
    /// ... and one answering 500 on every path (never healthy).
    pub web_app_500: String,
    /// PostgreSQL: a cluster in `$PGDATA` (mount a named volume at
    /// /var/lib/postgresql/data), made on first start with trust
    /// authentication and the databases in `$POSTGRES_DB`.
    pub web_db: String,
    /// redis-server on :6379.
    pub web_cache: String,
    /// The cached Debian root tarball the web images are built from.
    pub web_root_tar: PathBuf,
}

const FIXTURE_VARS: [&str; 16] = [
    "STACKPIN_TEST_REGISTRY",
    "STACKPIN_TEST_IMAGE_V1",
    "STACKPIN_TEST_IMAGE_V2",
    "STACKPIN_TEST_IMAGE_V3",
    "STACKPIN_TEST_IMAGE_BROKEN",
    "STACKPIN_TEST_IMAGE_CRASH",
    "STACKPIN_TEST_IMAGE_MISSING",
    "STACKPIN_TEST_COMPOSE",
    "STACKPIN_TEST_COMPOSE_V2_CONFIG",
    "STACKPIN_TEST_WEB_ROUTER",
    "STACKPIN_TEST_WEB_APP_V1",
    "STACKPIN_TEST_WEB_APP_V2",
    "STACKPIN_TEST_WEB_APP_500",
    "STACKPIN_TEST_WEB_DB",
    "STACKPIN_TEST_WEB_CACHE",
    "STACKPIN_TEST_WEB_ROOT_TAR",
];

/// Which compose a test runs stackpin with: Debian's v1 (docker-compose
/// 1.29) or production's v2 (the fixtures' plugin; see
/// [`TestHost::cmd_with`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    V1,
    V2,
}

impl Flavour {
    /// The flavour of every stackpin command a test runs without naming
    /// one: `STACKPIN_TEST_FLAVOUR=v2` runs a whole suite under compose v2
    /// (scripts/test.sh runs the converge, rollback and crash suites so a
    /// second time); unset or `v1`, Debian's v1.
    pub fn default_for_tests() -> Flavour {
        match std::env::var("STACKPIN_TEST_FLAVOUR").as_deref() {
            Ok("v2") => Flavour::V2,
            Ok("v1") | Ok("") | Err(_) => Flavour::V1,
            Ok(other) => panic!("STACKPIN_TEST_FLAVOUR={other}: use v1 or v2"),
        }
    }

    /// The `compose:` setting that selects it.
    pub fn setting(self) -> &'static str {
        match self {
            Flavour::V1 => "docker-compose",
            Flavour::V2 => "docker compose",
        }
    }

    /// Panics unless every container of `project` was made by this
    /// flavour (their `com.docker.compose.version` label).
    pub fn assert_made(self, h: &TestHost, project: &str) {
        let cs = h.containers(project);
        assert!(!cs.is_empty(), "no containers in {project}");
        for c in cs {
            let v = c
                .labels
                .get("com.docker.compose.version")
                .map_or("", String::as_str);
            assert!(
                v.starts_with(self.major()),
                "{self:?} expected, but compose {v} made {} of {project}",
                c.service
            );
        }
    }

    /// How its containers' `com.docker.compose.version` label starts.
    pub fn major(self) -> &'static str {
        match self {
            Flavour::V1 => "1.",
            Flavour::V2 => "2.",
        }
    }
}

impl Fixtures {
    /// The fixtures named by the environment, if all of them are set.
    pub fn get() -> Option<Fixtures> {
        Fixtures::from_lookup(|k| std::env::var(k).ok())
    }

    /// The fixtures, from the environment or else from
    /// `target/test-fixtures.env`.
    ///
    /// # Panics
    /// When neither provides them: tests that need a real engine never skip
    /// silently. Under `CI` the file is not consulted, since the harness must
    /// have exported them.
    pub fn require() -> Fixtures {
        static CACHE: OnceLock<Fixtures> = OnceLock::new();
        CACHE.get_or_init(Fixtures::load).clone()
    }

    fn load() -> Fixtures {
        if let Some(f) = Fixtures::get() {
            return f;
        }
        if std::env::var_os("CI").is_some() {
            panic!(
                "the harness did not provide fixtures (STACKPIN_TEST_* are not set); \
                 run the tests with scripts/test.sh"
            );
        }
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-fixtures.env");
        let vars = std::fs::read_to_string(&file)
            .map(|text| parse_env_file(&text))
            .unwrap_or_default();
        Fixtures::from_lookup(|k| std::env::var(k).ok().or_else(|| vars.get(k).cloned()))
            .unwrap_or_else(|| {
                panic!(
                    "this test needs the real components (docker, compose, a registry, test \
                     images) and {} does not name them; run `scripts/fixtures.sh` first \
                     (or the whole suite with `scripts/test.sh`)",
                    file.display()
                )
            })
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Option<Fixtures> {
        let mut v: Vec<String> = Vec::with_capacity(FIXTURE_VARS.len());
        for k in FIXTURE_VARS {
            v.push(get(k).filter(|s| !s.is_empty())?);
        }
        let mut v = v.into_iter();
        let mut next = || v.next().expect("one value per variable");
        Some(Fixtures {
            registry: next(),
            v1: next(),
            v2: next(),
            v3: next(),
            broken: next(),
            crash: next(),
            missing: next(),
            compose: next(),
            compose_v2_config: PathBuf::from(next()),
            web_router: next(),
            web_app_v1: next(),
            web_app_v2: next(),
            web_app_500: next(),
            web_db: next(),
            web_cache: next(),
            web_root_tar: PathBuf::from(next()),
        })
    }

    /// The compose command split into program and leading arguments.
    pub fn compose_command(&self) -> Command {
        let mut words = self.compose.split_whitespace();
        let mut cmd = Command::new(words.next().expect("STACKPIN_TEST_COMPOSE is empty"));
        cmd.args(words);
        cmd
    }
}

/// The host powers the test stacks need, granted in the test host's config
/// as an operator would, each with its reason: the fixture app serves on
/// the host's loopback (`network_mode: host`). Every command a test runs
/// reads this config (`STACKPIN_CONFIG`) unless it names its own with
/// `--config`; a test that writes its own config starts it with these
/// lines (see [`TestHost::config`]).
pub const FIXTURE_GRANTS: &str = "allow:\n  - stacks: [\"*\"]\n    powers: [host_network]\n    reason: \"the test fixture app serves on the loopback of the host (network_mode: host)\"\n";

/// Writes a host config at `path`: [`FIXTURE_GRANTS`], then `body` (whose
/// own `allow:` rules, if any, are list items that continue the list).
pub fn write_config(path: impl AsRef<Path>, body: impl AsRef<str>) -> std::io::Result<()> {
    std::fs::write(path, format!("{FIXTURE_GRANTS}{}", body.as_ref()))
}

/// Where [`TestHost::new`] writes [`FIXTURE_GRANTS`] (in its temp dir).
pub const GRANTS_FILE: &str = "host-config.yaml";

/// A developer's own STACKPIN_* settings must not leak into the stackpin
/// a test runs (the harness's STACKPIN_TEST_* stay).
pub fn without_developer_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("STACKPIN_") && !k.starts_with("STACKPIN_TEST_") {
            cmd.env_remove(&*k);
        }
    }
}

/// `found`, or, when a component that a setup.d part provides is missing:
/// under CI a failed test (`missing` says what and who installs it), else
/// a note that the test did nothing.
#[track_caller]
pub fn required_under_ci<T>(found: Option<T>, missing: &str) -> Option<T> {
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "{missing}");
        eprintln!("SKIPPED: {missing}");
    }
    found
}

/// Parses the `export K=V` lines that `scripts/fixtures.sh` writes.
pub fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

/// One test's host: root, desired-state repo, state dir, names and ports.
pub struct TestHost {
    tmp: tempfile::TempDir,
    prefix: String,
    stacks: Mutex<Vec<String>>,
    ports: Mutex<HashSet<u16>>,
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost::new()
    }
}

impl TestHost {
    pub fn new() -> TestHost {
        let tmp = tempfile::Builder::new()
            .prefix("stackpin-test.")
            .tempdir()
            .expect("failed to create the test's temp dir");
        for d in ["root", "repo", "state"] {
            std::fs::create_dir_all(tmp.path().join(d)).expect("failed to create test dirs");
        }
        std::fs::write(tmp.path().join(GRANTS_FILE), FIXTURE_GRANTS)
            .expect("failed to write the test host's config");
        TestHost {
            tmp,
            prefix: unique_prefix(),
            stacks: Mutex::new(Vec::new()),
            ports: Mutex::new(HashSet::new()),
        }
    }

    /// The real components; see [`Fixtures::require`].
    pub fn fixtures(&self) -> Fixtures {
        Fixtures::require()
    }

    pub fn tmp(&self) -> &Path {
        self.tmp.path()
    }

    /// The host root passed as `--root` (stands for `/srv`).
    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    /// The desired-state git repository passed as `--repo`.
    pub fn repo(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    /// The state dir passed as `--state-dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// This host's unique prefix, `sp` + 6 hex digits.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A stack (= compose project) name unique to this test, e.g.
    /// `sp1a2b3c-web`. Its containers, networks and volumes are removed when
    /// the host drops.
    pub fn stack(&self, name: &str) -> String {
        let stack = format!("{}-{}", self.prefix, name);
        let mut stacks = self.stacks.lock().unwrap();
        if !stacks.contains(&stack) {
            stacks.push(stack.clone());
        }
        stack
    }

    /// A free port on 127.0.0.1, never the same one twice from this host.
    pub fn free_port(&self) -> u16 {
        let mut ports = self.ports.lock().unwrap();
        for _ in 0..100 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("failed to bind 127.0.0.1:0")
                .port();
            if ports.insert(port) {
                return port;
            }
        }
        panic!("no new free port after 100 tries");
    }

    // ---- desired-state repository ----

    /// Writes `contents` to `rel` under the repo, creating parent dirs.
    pub fn write(&self, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> &Self {
        write_file(&self.repo().join(rel), contents.as_ref());
        self
    }

    /// Removes a file or a directory tree under the repo.
    pub fn remove(&self, rel: impl AsRef<Path>) -> &Self {
        let path = self.repo().join(rel);
        let res = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        res.unwrap_or_else(|e| panic!("failed to remove {}: {e}", path.display()));
        self
    }

    /// Commits everything in the repo (on branch `main`, initialised on first
    /// use) and returns the commit's sha.
    pub fn commit(&self, msg: &str) -> String {
        if !self.repo().join(".git").exists() {
            self.git(["init", "-q", "-b", "main"]);
        }
        self.git(["add", "-A"]);
        self.git(["commit", "-q", "--allow-empty", "-m", msg]);
        self.git(["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Runs git in the repo with a fixed identity and no signing; returns
    /// stdout, panics on failure.
    pub fn git<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("git");
        cmd.current_dir(self.repo())
            .args([
                "-c",
                "user.name=test",
                "-c",
                "user.email=test@example.com",
                "-c",
                "commit.gpgsign=false",
                "-c",
                "tag.gpgsign=false",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1");
        self.command(cmd).run().ok().stdout()
    }

    // ---- the binary under test ----

    /// The global arguments [`TestHost::cmd`] puts before the subcommand.
    pub fn global_args(&self) -> Vec<OsString> {
        vec![
            "--root".into(),
            self.root().into(),
            "--repo".into(),
            self.repo().into(),
            "--host".into(),
            "test-host".into(),
            "--state-dir".into(),
            self.state_dir().into(),
        ]
    }

    /// Writes the host config `<tmp>/name`: [`FIXTURE_GRANTS`], then
    /// `body` (which must not have an `allow:` of its own: add its rules
    /// with [`TestHost::config_with_grants`]). Returns its path.
    pub fn config(&self, name: &str, body: &str) -> PathBuf {
        self.config_with_grants(name, body, "")
    }

    /// [`TestHost::config`] with more `allow:` rules (YAML list items,
    /// `  - {stacks: [...], powers: [...], reason: "..."}` lines).
    pub fn config_with_grants(&self, name: &str, body: &str, grants: &str) -> PathBuf {
        let path = self.tmp().join(name);
        std::fs::write(&path, format!("{FIXTURE_GRANTS}{grants}{body}"))
            .expect("failed to write a host config");
        path
    }

    /// `stackpin <global args> ARGS…` against this host.
    pub fn cmd<I, S>(&self, args: I) -> TestCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.cmd_raw(self.global_args());
        cmd.args(args);
        cmd
    }

    /// `stackpin daemon` for this host: its root, state dir and host name,
    /// the config file `cfg`, the repository `repo` (a path or URL) and the
    /// control socket `socket`. Spawn it (and stop it) as the test needs.
    pub fn daemon_cmd(&self, cfg: &Path, repo: &OsStr, socket: &Path) -> TestCommand {
        self.cmd_raw([
            "--config".as_ref(),
            cfg.as_os_str(),
            "--root".as_ref(),
            self.root().as_os_str(),
            "--repo".as_ref(),
            repo,
            "--host".as_ref(),
            "test-host".as_ref(),
            "--state-dir".as_ref(),
            self.state_dir().as_os_str(),
            "--control-socket".as_ref(),
            socket.as_os_str(),
            "daemon".as_ref(),
        ])
    }

    /// [`TestHost::cmd`] under the compose `flavour`: a config file that
    /// selects it, and for v2 `DOCKER_CONFIG` pointing at the fixtures'
    /// plugin directory.
    pub fn cmd_with<I, S>(&self, flavour: Flavour, args: I) -> TestCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let cfg = self.config(
            &format!("config-{flavour:?}.yaml"),
            &format!("compose: \"{}\"\n", flavour.setting()),
        );
        let mut c = self.cmd([OsStr::new("--config"), cfg.as_os_str()]);
        c.args(args);
        if let Flavour::V2 = flavour {
            c.env("DOCKER_CONFIG", &Fixtures::require().compose_v2_config);
        }
        c
    }

    /// `stackpin ARGS…` without the global arguments.
    pub fn cmd_raw<I, S>(&self, args: I) -> TestCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(STACKPIN);
        cmd.args(args).current_dir(self.tmp()).env("NO_COLOR", "1");
        without_developer_env(&mut cmd);
        // Not for `validate` (see `TestCommand::spawn`).
        cmd.env("STACKPIN_CONFIG", self.tmp().join(GRANTS_FILE));
        // `auto` finds v2 where DOCKER_CONFIG holds the plugin.
        if Flavour::default_for_tests() == Flavour::V2 {
            cmd.env("DOCKER_CONFIG", &Fixtures::require().compose_v2_config);
        }
        self.command(cmd)
    }

    /// Any command, with this host's failure report.
    pub fn command(&self, cmd: Command) -> TestCommand {
        TestCommand {
            cmd,
            root: self.root(),
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    // ---- engine ----

    /// `docker ARGS…`.
    pub fn docker<I, S>(&self, args: I) -> TestCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("docker");
        cmd.args(args);
        self.command(cmd)
    }

    /// The compose implementation from the fixtures, run in `dir` with
    /// project `project`.
    pub fn compose<I, S>(&self, dir: impl AsRef<Path>, project: &str, args: I) -> TestCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.fixtures().compose_command();
        cmd.current_dir(dir).args(["-p", project]).args(args);
        self.command(cmd)
    }

    /// Every container (running or not) of compose project `project`, found
    /// by label (v1 and v2 name containers differently).
    pub fn containers(&self, project: &str) -> Vec<ContainerInfo> {
        let ids = container_ids(&format!("label=com.docker.compose.project={project}"));
        if ids.is_empty() {
            return Vec::new();
        }
        let out = self
            .docker(["container", "inspect"])
            .args(&ids)
            .run()
            .ok()
            .json();
        let mut list: Vec<ContainerInfo> = out
            .as_array()
            .expect("docker inspect prints an array")
            .iter()
            .map(ContainerInfo::from_inspect)
            .collect();
        for c in &mut list {
            c.repo_digests = self.repo_digests(&c.image_id);
        }
        list.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
        list
    }

    /// `RepoDigests` of a local image (id or reference); empty if unknown.
    pub fn repo_digests(&self, image: &str) -> Vec<String> {
        let out = self
            .docker([
                "image",
                "inspect",
                "--format",
                "{{json .RepoDigests}}",
                image,
            ])
            .run();
        if !out.success() {
            return Vec::new();
        }
        serde_json::from_str(out.stdout().trim()).unwrap_or_default()
    }

    /// True when the engine has a local image for `image`.
    pub fn image_exists(&self, image: &str) -> bool {
        self.docker(["image", "inspect", image]).run().success()
    }

    // ---- polling ----

    /// The body of `GET http://127.0.0.1:PORT/PATH` when it answers 2xx.
    pub fn http_get(&self, port: u16, path: &str) -> Option<String> {
        http_get(port, path)
            .filter(|(status, _)| (200..300).contains(status))
            .map(|(_, body)| body)
    }

    /// Status and body of `GET http://127.0.0.1:PORT/PATH`, if it answers.
    pub fn http_get_status(&self, port: u16, path: &str) -> Option<(u16, String)> {
        http_get(port, path)
    }

    /// Polls [`TestHost::http_get`] until it answers 2xx or `timeout` passes.
    pub fn wait_http(&self, port: u16, path: &str, timeout: Duration) -> Option<String> {
        wait_for(timeout, || self.http_get(port, path))
    }

    // ---- inspection ----

    /// A recursive listing of the root: paths, modes, symlink targets.
    pub fn root_listing(&self) -> String {
        listing(&self.root())
    }

    /// Reads a file under the root, panicking with the listing if it is not
    /// there.
    pub fn read_root(&self, rel: impl AsRef<Path>) -> String {
        let path = self.root().join(rel);
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "failed to read {}: {e}\n--- root ---\n{}",
                path.display(),
                self.root_listing()
            )
        })
    }

    /// `status --json`'s two axes of `stack`: its sync status and its
    /// health (`("synced", "healthy")`).
    pub fn axes(&self, stack: &str) -> (String, String) {
        let rows = self.cmd(["--json", "status", stack]).run().ok().json();
        let row = &rows[0];
        let word = |k: &str| row[k].as_str().unwrap_or_default().to_string();
        (word("sync"), word("health"))
    }

    /// The audit log, `<root>/deploy-history.log` (empty when missing).
    pub fn history(&self) -> String {
        std::fs::read_to_string(self.root().join("deploy-history.log")).unwrap_or_default()
    }

    /// Where `<root>/stacks/<stack>` points, if it is a link.
    pub fn link_target(&self, stack: &str) -> Option<PathBuf> {
        std::fs::read_link(self.root().join("stacks").join(stack)).ok()
    }

    /// The names under `<root>/releases/stacks/<stack>/`, sorted.
    pub fn release_dirs(&self, stack: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root().join("releases/stacks").join(stack))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The `version` of `<root>/releases/current/<stack>.json`.
    pub fn current_version(&self, stack: &str) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&self.read_root(format!("releases/current/{stack}.json")))
                .unwrap();
        v["version"].as_str().unwrap_or_default().to_string()
    }

    /// Panics unless `stack`'s link names a complete release (it has its
    /// `release.json`), no temp release dir is left and no journal.
    #[track_caller]
    pub fn assert_consistent(&self, stack: &str) {
        let target = self
            .link_target(stack)
            .unwrap_or_else(|| panic!("no link for {stack}\n{}", self.root_listing()));
        assert!(
            target.join("release.json").is_file(),
            "link points at an incomplete release {}\n{}",
            target.display(),
            self.root_listing()
        );
        for d in self.release_dirs(stack) {
            assert!(
                !d.starts_with(".tmp"),
                "temp release left behind: {d}\n{}",
                self.root_listing()
            );
        }
        assert!(
            !self
                .root()
                .join("releases/.stackpin/journal")
                .join(format!("{stack}.json"))
                .exists(),
            "journal not cleared\n{}",
            self.root_listing()
        );
    }

    /// Waits (up to 20 s) until `GET /` on `port` answers `want` (trimmed);
    /// panics with the last answer, the history and the root listing.
    #[track_caller]
    pub fn serves(&self, port: u16, want: &str) {
        self.serves_path(port, "/", want)
    }

    /// [`TestHost::serves`] for `GET path`.
    #[track_caller]
    pub fn serves_path(&self, port: u16, path: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = None;
        while Instant::now() < deadline {
            last = self.http_get(port, path);
            if last.as_deref().map(str::trim) == Some(want) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "port {port} should serve {want:?}, last got {last:?}\n--- history ---\n{}\n--- root ---\n{}",
            self.history(),
            self.root_listing()
        );
    }

    // ---- remotes ----

    /// A bare clone of the repo at `<tmp>/remote.git`, added as `origin`, so
    /// that commits reach a "remote" only when [`TestHost::push`]ed.
    pub fn bare_remote(&self) -> PathBuf {
        let remote = self.tmp().join("remote.git");
        let mut clone = Command::new("git");
        clone
            .args(["clone", "-q", "--bare"])
            .arg(self.repo())
            .arg(&remote);
        self.command(clone).run().ok();
        self.git(["remote", "add", "origin", remote.to_str().unwrap()]);
        remote
    }

    /// `git daemon` serving the bare repositories under the temp dir (such
    /// as [`TestHost::bare_remote`]'s `remote.git`) read-only on loopback:
    /// a real network remote, `git://127.0.0.1:PORT/remote.git`.
    pub fn git_daemon(&self) -> GitDaemon {
        GitDaemon::serve(self.tmp(), false)
    }

    // ---- signing ----

    /// A fresh ed25519 key `<tmp>/<name>` and an allowed_signers file
    /// `<tmp>/<name>.allowed` listing it as `principal` for `namespaces`
    /// (`git`, `stackpin-verified`, …).
    pub fn ssh_signer(&self, name: &str, principal: &str, namespaces: &str) -> SshSigner {
        let key = self.tmp().join(name);
        let mut c = Command::new("ssh-keygen");
        c.args(["-q", "-t", "ed25519", "-N", "", "-C", principal, "-f"])
            .arg(&key);
        self.command(c).run().ok();
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let allowed = self.tmp().join(format!("{name}.allowed"));
        std::fs::write(
            &allowed,
            format!(
                "{principal} namespaces=\"{namespaces}\" {}\n",
                public.trim()
            ),
        )
        .unwrap();
        SshSigner { key, allowed }
    }

    /// The SSH signature of a verified entry of `source` by `key`, made by
    /// `ssh-keygen -Y sign` as a staging host's marker signature.
    pub fn sign_marker(
        &self,
        key: &Path,
        entry: &stackpin::desired::spec::VerifiedEntry,
        source: &str,
    ) -> String {
        let payload = self.tmp().join(format!("marker-{}", entry.version));
        std::fs::write(&payload, entry.signed_bytes(source)).unwrap();
        let mut sign = Command::new("ssh-keygen");
        sign.args(["-q", "-Y", "sign", "-n", "stackpin-verified", "-f"])
            .arg(key)
            .arg(&payload);
        self.command(sign).run().ok();
        std::fs::read_to_string(payload.with_extension("sig")).unwrap()
    }

    /// Commits everything in the repo, signed with the SSH key `key`.
    pub fn commit_signed(&self, key: &Path, msg: &str) -> String {
        if !self.repo().join(".git").exists() {
            self.git(["init", "-q", "-b", "main"]);
        }
        self.git(["add", "-A"]);
        let signing = format!("user.signingkey={}", key.display());
        self.git([
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing,
            "commit",
            "-q",
            "--allow-empty",
            "-S",
            "-m",
            msg,
        ]);
        self.git(["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Pushes `main` to `origin` (forced: rewriting its history).
    pub fn push(&self, force: bool) {
        if force {
            self.git(["push", "-q", "--force", "origin", "main"]);
        } else {
            self.git(["push", "-q", "origin", "main"]);
        }
    }
}

/// A running `git daemon` (see [`TestHost::git_daemon`]); stopped on drop.
pub struct GitDaemon {
    child: Child,
    pub port: u16,
    addr: String,
}

impl GitDaemon {
    /// Serves the bare repositories under `base` on 127.0.0.1 (pushes too
    /// when `push`). Runs `git-daemon` itself, not `git daemon`: the `git`
    /// wrapper would run it as a child that outlives a kill of the wrapper.
    pub fn serve(base: &Path, push: bool) -> GitDaemon {
        GitDaemon::serve_on("127.0.0.1", base, push)
    }

    /// As [`GitDaemon::serve`], listening on `addr` (an address of this
    /// machine: the fleet's bridge, so that test hosts in network
    /// namespaces reach it).
    pub fn serve_on(addr: &str, base: &Path, push: bool) -> GitDaemon {
        let port = TcpListener::bind((addr, 0))
            .and_then(|l| l.local_addr())
            .expect("failed to bind 127.0.0.1:0")
            .port();
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("git --exec-path");
        let exec_path = String::from_utf8_lossy(&exec_path.stdout)
            .trim()
            .to_string();
        let mut c = Command::new(Path::new(&exec_path).join("git-daemon"));
        c.args(["--export-all", "--reuseaddr", "--informative-errors"])
            .arg(format!("--listen={addr}"))
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if push {
            c.arg("--enable=receive-pack");
        }
        c.arg(base);
        let child = c.spawn().expect("failed to start git-daemon (part of git)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect((addr, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "git daemon did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        GitDaemon {
            child,
            port,
            addr: addr.to_string(),
        }
    }

    /// The URL of `name` (a repository in the served directory).
    pub fn url(&self, name: &str) -> String {
        format!("git://{}:{}/{name}", self.addr, self.port)
    }

    /// Stops serving: the remote becomes unreachable.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An SSH signing key and an allowed_signers file that lists it.
#[derive(Debug, Clone)]
pub struct SshSigner {
    pub key: PathBuf,
    pub allowed: PathBuf,
}

/// A stack of the fixture app, written into a [`TestHost`]'s repo: one
/// service `web` on the host network, listening on `port` and answering
/// `/` with its version and `/health` with `ok`, with a read-only config
/// file mounted from the stack directory. The builder methods change what
/// tests need to differ; [`StackFixture::write`] writes `stack.yaml`,
/// `compose.yaml` and `config/site.conf`.
#[derive(Debug, Clone)]
pub struct StackFixture {
    pub name: String,
    pub environment: String,
    pub version: String,
    pub image: String,
    pub port: u16,
    pub smoke_timeout: String,
    /// `containers: {}` as well as the http check.
    pub containers_check: bool,
    /// `contains: ok` on the http check.
    pub contains_ok: bool,
    /// Mount `config/site.conf` (and write it).
    pub site_conf: bool,
    /// More `stack.yaml` lines (each ending in a newline).
    pub extra: String,
    /// More lines of the `web` service's `environment:`.
    pub compose_env: String,
    /// More keys of the `web` service (lines indented by four spaces).
    pub service: String,
    /// More top-level keys of the compose file (`volumes:`, `configs:`).
    pub top_level: String,
}

impl StackFixture {
    pub fn new(name: &str, image: &str, port: u16, version: &str) -> StackFixture {
        StackFixture {
            name: name.to_string(),
            environment: "test".into(),
            version: version.to_string(),
            image: image.to_string(),
            port,
            smoke_timeout: "15s".into(),
            containers_check: true,
            contains_ok: true,
            site_conf: true,
            extra: String::new(),
            compose_env: String::new(),
            service: String::new(),
            top_level: String::new(),
        }
    }

    /// More keys of the `web` service, e.g. `"    privileged: true\n"`.
    pub fn service(mut self, lines: &str) -> Self {
        self.service.push_str(lines);
        self
    }

    /// More top-level keys of the compose file.
    pub fn top_level(mut self, yaml: &str) -> Self {
        self.top_level.push_str(yaml);
        self
    }

    pub fn environment(mut self, env: &str) -> Self {
        self.environment = env.to_string();
        self
    }

    pub fn smoke_timeout(mut self, t: &str) -> Self {
        self.smoke_timeout = t.to_string();
        self
    }

    /// Only the http check, without `contains`.
    pub fn http_only(mut self) -> Self {
        self.containers_check = false;
        self.contains_ok = false;
        self
    }

    pub fn without_site_conf(mut self) -> Self {
        self.site_conf = false;
        self
    }

    pub fn extra(mut self, yaml: &str) -> Self {
        self.extra.push_str(yaml);
        self
    }

    pub fn compose_env(mut self, lines: &str) -> Self {
        self.compose_env.push_str(lines);
        self
    }

    pub fn write(&self, h: &TestHost) {
        let (stack, port, version) = (&self.name, self.port, &self.version);
        let mut checks = String::new();
        if self.containers_check {
            checks.push_str("    - containers: {}\n");
        }
        let contains = if self.contains_ok {
            ", contains: ok"
        } else {
            ""
        };
        checks.push_str(&format!(
            "    - http: {{url: \"http://127.0.0.1:{port}/health\", expect_status: 200{contains}}}\n"
        ));
        h.write(
            format!("stacks/{stack}/stack.yaml"),
            format!(
                "environment: {}\nversion: {version}\nimages:\n  web: {}\nenv:\n  PORT: \"{port}\"\n{}smoke:\n  timeout: {}\n  checks:\n{checks}",
                self.environment, self.image, self.extra, self.smoke_timeout
            ),
        );
        let volumes = if self.site_conf {
            "    volumes:\n      - ./config/site.conf:/etc/site.conf:ro\n"
        } else {
            ""
        };
        h.write(
            format!("stacks/{stack}/compose.yaml"),
            format!(
                "services:\n  web:\n    image: stackpin-test/app\n    network_mode: host\n    stop_grace_period: 1s\n    environment:\n      PORT: ${{PORT}}\n{}{volumes}{}{}",
                self.compose_env, self.service, self.top_level
            ),
        );
        if self.site_conf {
            h.write(
                format!("stacks/{stack}/config/site.conf"),
                format!("version {version}\n"),
            );
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let stacks = std::mem::take(&mut *self.stacks.lock().unwrap_or_else(|e| e.into_inner()));
        for stack in &stacks {
            remove_project(stack);
        }
        make_writable(self.tmp.path());
        if std::env::var_os("STACKPIN_KEEP_TMP").is_some() {
            self.tmp.disable_cleanup(true);
            eprintln!("STACKPIN_KEEP_TMP: kept {}", self.tmp.path().display());
        }
    }
}

/// Removes the containers, networks and volumes of a compose project.
/// Best effort: a missing engine is not a reason to panic in drop.
pub fn remove_project(project: &str) {
    let label = format!("label=com.docker.compose.project={project}");
    let ids = container_ids(&label);
    if !ids.is_empty() {
        quiet(Command::new("docker").args(["rm", "-f", "-v"]).args(&ids));
    }
    for kind in ["network", "volume"] {
        let out = quiet(Command::new("docker").args([kind, "ls", "-q", "--filter", &label]));
        let names: Vec<&str> = out.split_whitespace().collect();
        if !names.is_empty() {
            quiet(Command::new("docker").args([kind, "rm"]).args(&names));
        }
    }
}

fn container_ids(filter: &str) -> Vec<String> {
    quiet(Command::new("docker").args(["ps", "-a", "-q", "--no-trunc", "--filter", filter]))
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Stdout of a command, or "" if it fails to run.
fn quiet(cmd: &mut Command) -> String {
    cmd.stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// A container as the engine reports it.
#[derive(Clone, Debug)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    /// `com.docker.compose.service`.
    pub service: String,
    /// The image id (`sha256:…`).
    pub image_id: String,
    /// `RepoDigests` of that image.
    pub repo_digests: Vec<String>,
    /// `running`, `exited`, `restarting`, `created`, …
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or `None` without a healthcheck.
    pub health: Option<String>,
    pub exit_code: i64,
    pub labels: BTreeMap<String, String>,
}

impl ContainerInfo {
    fn from_inspect(v: &serde_json::Value) -> ContainerInfo {
        let s = |p: &str| {
            v.pointer(p)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let labels: BTreeMap<String, String> = v
            .pointer("/Config/Labels")
            .and_then(|l| l.as_object())
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        ContainerInfo {
            id: s("/Id"),
            name: s("/Name").trim_start_matches('/').to_string(),
            service: labels
                .get("com.docker.compose.service")
                .cloned()
                .unwrap_or_default(),
            image_id: s("/Image"),
            repo_digests: Vec::new(),
            state: s("/State/Status"),
            health: v
                .pointer("/State/Health/Status")
                .and_then(|x| x.as_str())
                .map(String::from),
            exit_code: v
                .pointer("/State/ExitCode")
                .and_then(|x| x.as_i64())
                .unwrap_or(0),
            labels,
        }
    }

    pub fn is_running(&self) -> bool {
        self.state == "running"
    }

    /// True when the container's image was pulled as `pinned`
    /// (`repo@sha256:…`).
    pub fn runs_digest(&self, pinned: &str) -> bool {
        self.repo_digests.iter().any(|d| d == pinned)
    }
}

// ---- commands ----

/// A command plus what is needed to explain its failure.
pub struct TestCommand {
    cmd: Command,
    root: PathBuf,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl TestCommand {
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(&mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.env(key, val);
        self
    }

    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.env_remove(key);
        self
    }

    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cmd.current_dir(dir);
        self
    }

    pub fn stdin(&mut self, input: impl Into<Vec<u8>>) -> &mut Self {
        self.stdin = Some(input.into());
        self
    }

    /// Kill the command and fail after `timeout` (default 300s).
    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = timeout;
        self
    }

    /// The command line, shell-quoted.
    pub fn command_line(&self) -> String {
        command_line(&self.cmd)
    }

    /// Runs to completion (or the timeout, which panics).
    pub fn run(&mut self) -> Output {
        let mut running = self.spawn();
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(status) = running.child.try_wait().expect("failed to wait for child") {
                return running.finish(status);
            }
            if Instant::now() >= deadline {
                let _ = running.child.kill();
                let status = running.child.wait().expect("failed to wait for child");
                let out = running.finish(status);
                panic!(
                    "command timed out after {:?}\n{}",
                    self.timeout,
                    out.report()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the command in the background (for `daemon`); it is killed when
    /// the returned handle drops.
    /// Runs the command in a process group of its own (as a service
    /// manager would), so that a test can signal it and its children
    /// without signalling itself.
    pub fn own_process_group(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt;
        self.cmd.process_group(0);
        self
    }

    pub fn spawn(&mut self) -> Running {
        // `validate` with a named config judges for that host, and a PR
        // runner has none: the test host's grants are not for it.
        if self.cmd.get_program() == STACKPIN && self.cmd.get_args().any(|a| a == "validate") {
            let ours = self
                .cmd
                .get_envs()
                .find(|(k, _)| *k == "STACKPIN_CONFIG")
                .and_then(|(_, v)| v)
                .is_some_and(|v| Path::new(v).ends_with(GRANTS_FILE));
            if ours {
                self.cmd.env_remove("STACKPIN_CONFIG");
            }
        }
        let line = self.command_line();
        let mut child = self
            .cmd
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start `{line}`: {e}"));
        if let Some(input) = self.stdin.clone() {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            std::thread::spawn(move || {
                let _ = pipe.write_all(&input);
            });
        }
        let stdout = Capture::start(child.stdout.take().expect("stdout is piped"));
        let stderr = Capture::start(child.stderr.take().expect("stderr is piped"));
        Running {
            child,
            line,
            root: self.root.clone(),
            stdout,
            stderr,
        }
    }
}

/// Collects a pipe in a thread so the child never blocks on a full pipe.
struct Capture {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    fn start(mut pipe: impl Read + Send + 'static) -> Capture {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let thread = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        Capture {
            buf,
            thread: Some(thread),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    fn finish(&mut self) -> String {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.text()
    }
}

/// A command running in the background.
pub struct Running {
    child: Child,
    line: String,
    root: PathBuf,
    stdout: Capture,
    stderr: Capture,
}

impl Running {
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Sends `signal` (e.g. `TERM`, `KILL`, `HUP`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "failed to send SIG{signal} to `{}`", self.line);
    }

    /// SIGTERM, then waits up to `grace` before SIGKILL; returns the output.
    pub fn terminate(mut self, grace: Duration) -> Output {
        if self.is_running() {
            self.signal("TERM");
        }
        let deadline = Instant::now() + grace;
        while self.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("failed to wait for child");
        self.finish(status)
    }

    /// Waits for the process to exit by itself.
    pub fn wait(mut self) -> Output {
        let status = self.child.wait().expect("failed to wait for child");
        self.finish(status)
    }

    fn finish(&mut self, status: ExitStatus) -> Output {
        Output {
            line: self.line.clone(),
            root: self.root.clone(),
            status,
            stdout: self.stdout.finish(),
            stderr: self.stderr.finish(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a finished command did. The assertions panic with [`Output::report`].
#[derive(Clone)]
pub struct Output {
    line: String,
    root: PathBuf,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.report())
    }
}

impl Output {
    /// Asserts exit status 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        if !self.status.success() {
            panic!("expected success\n{}", self.report());
        }
        self
    }

    /// Asserts exit code `code`.
    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        if self.status.code() != Some(code) {
            panic!("expected exit code {code}\n{}", self.report());
        }
        self
    }

    /// Asserts a non-zero exit.
    #[track_caller]
    pub fn failed(self) -> Self {
        if self.status.success() {
            panic!("expected failure\n{}", self.report());
        }
        self
    }

    #[track_caller]
    pub fn stdout_contains(self, needle: &str) -> Self {
        if !self.stdout.contains(needle) {
            panic!("expected stdout to contain {needle:?}\n{}", self.report());
        }
        self
    }

    #[track_caller]
    pub fn stderr_contains(self, needle: &str) -> Self {
        if !self.stderr.contains(needle) {
            panic!("expected stderr to contain {needle:?}\n{}", self.report());
        }
        self
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn status_code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout(&self) -> String {
        self.stdout.clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.clone()
    }

    /// Stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", self.report()))
    }

    /// Command line, exit status, both streams and the root listing.
    pub fn report(&self) -> String {
        format!(
            "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- root {} ---\n{}",
            self.line,
            self.status,
            self.stdout.trim_end(),
            self.stderr.trim_end(),
            self.root.display(),
            listing(&self.root),
        )
    }
}

fn command_line(cmd: &Command) -> String {
    let mut line = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            let _ = write!(line, "{}={} ", k.to_string_lossy(), quote(v));
        }
    }
    line.push_str(&quote(cmd.get_program()));
    for a in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(a));
    }
    if let Some(dir) = cmd.get_current_dir() {
        let _ = write!(line, "  (in {})", dir.display());
    }
    line
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

// ---- files ----

fn write_file(path: &Path, contents: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("failed to create {}: {e}", parent.display()));
    }
    std::fs::write(path, contents)
        .unwrap_or_else(|e| panic!("failed to write {}: {e}", path.display()));
}

/// `path/ (mode)`, `path -> target`, `path (mode, N bytes)`, one per line,
/// sorted, relative to `root`.
pub fn listing(root: &Path) -> String {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|e| format!("<{e}>"));
                let dangling = if path.exists() { "" } else { " (dangling)" };
                out.push(format!("{rel} -> {target}{dangling}"));
            } else if meta.is_dir() {
                out.push(format!("{rel}/ ({mode:o})"));
                walk(root, &path, out);
            } else {
                out.push(format!("{rel} ({mode:o}, {} bytes)", meta.len()));
            }
        }
    }
    if !root.exists() {
        return format!("<{} does not exist>", root.display());
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    const MAX: usize = 400;
    if out.len() > MAX {
        let more = out.len() - MAX;
        out.truncate(MAX);
        out.push(format!("… {more} more entries"));
    }
    if out.is_empty() {
        "<empty>".to_string()
    } else {
        out.join("\n")
    }
}

/// Adds u+w to every directory below `dir` (the product makes release dirs
/// read-only) so that the temp dir can be removed. Never follows symlinks.
fn make_writable(dir: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mut perms = meta.permissions();
    if perms.mode() & 0o700 != 0o700 {
        perms.set_mode(perms.mode() | 0o700);
        let _ = std::fs::set_permissions(dir, perms);
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            make_writable(&e.path());
        }
    }
}

// ---- network and polling ----

/// Raw HTTP/1.0 GET to 127.0.0.1 with short timeouts: `(status, body)`.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_within(port, path, Duration::from_secs(2))
}

/// [`http_get`] with its own connect and read timeouts.
pub fn http_get_within(port: u16, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Requests sent one after the other to `GET http://127.0.0.1:PORT/PATH`
/// from a thread, until [`Traffic::stop`]: what a user of a stack sees
/// while it converges.
pub struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sent: std::sync::Arc<AtomicU64>,
    handle: std::thread::JoinHandle<TrafficReport>,
}

/// What the requests of a [`Traffic`] got.
#[derive(Debug, Default)]
pub struct TrafficReport {
    pub total: usize,
    /// Not a 200: `status NNN: body` or `no answer`, with how many times.
    pub failures: BTreeMap<String, usize>,
    /// The bodies of the 200s (trimmed), with how many times.
    pub bodies: BTreeMap<String, usize>,
}

impl TrafficReport {
    pub fn failed(&self) -> usize {
        self.failures.values().sum()
    }
}

impl Traffic {
    /// Starts sending; each request has 10 s to answer.
    pub fn start(port: u16, path: &str) -> Traffic {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sent = std::sync::Arc::new(AtomicU64::new(0));
        let (flag, count) = (stop.clone(), sent.clone());
        let path = path.to_string();
        let handle = std::thread::spawn(move || {
            let mut r = TrafficReport::default();
            while !flag.load(Ordering::SeqCst) {
                r.total += 1;
                match http_get_within(port, &path, Duration::from_secs(10)) {
                    Some((200, body)) => *r.bodies.entry(body.trim().to_string()).or_default() += 1,
                    Some((status, body)) => {
                        // nginx's error pages are HTML: their title is enough.
                        let text = body
                            .split_once("<title>")
                            .and_then(|(_, t)| t.split_once("</title>"))
                            .map_or(body.trim(), |(t, _)| t);
                        *r.failures
                            .entry(format!("status {status}: {text}"))
                            .or_default() += 1
                    }
                    None => *r.failures.entry("no answer".into()).or_default() += 1,
                }
                count.fetch_add(1, Ordering::SeqCst);
            }
            r
        });
        Traffic { stop, sent, handle }
    }

    /// Stops once at least `min` requests were sent (waiting up to 60 s
    /// for them), and reports.
    pub fn stop(self, min: u64) -> TrafficReport {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.sent.load(Ordering::SeqCst) < min && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("the traffic thread panicked")
    }
}

/// Polls `f` every 100ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `sp` + 6 hex digits, different per process, time and call.
fn unique_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64 finaliser: spread every input bit over the 24 we keep.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    format!("sp{:06x}", x & 0xff_ffff)
}

/// The process id of the machine's own Docker engine: the one that serves
/// `/var/run/docker.sock`, in this network namespace. The fleet's engines
/// (`scripts/setup.d/fleet.sh`) are dockerd processes too, each in its own
/// namespace with its own pidfile, so "the first `pidof dockerd`" may be one
/// of them. dockerd writes `/var/run/docker.pid` unless told otherwise; the
/// fallback keeps only the dockerd processes in this namespace that name no
/// socket of their own.
pub fn machine_engine_pid() -> Option<u32> {
    let ours = std::fs::read_link("/proc/self/ns/net").ok()?;
    let is_ours = |pid: u32| {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        comm.trim() == "dockerd"
            && std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .ok()
                .as_ref()
                == Some(&ours)
    };
    if let Some(pid) = std::fs::read_to_string("/var/run/docker.pid")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|pid| is_ours(*pid))
    {
        return Some(pid);
    }
    let out = Command::new("pidof").arg("dockerd").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .filter(|pid| is_ours(*pid))
        .find(|pid| {
            let args = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            !args
                .split(|b| *b == 0)
                .any(|a| a == b"-H" || a.starts_with(b"--host") || a.starts_with(b"--pidfile"))
        })
}

/// Restarts the machine's Docker engine (systemd's unit, else the process
/// [`machine_engine_pid`] finds, started again with its own arguments) and
/// waits until `docker info` answers. Only for tests that run alone
/// (`STACKPIN_TEST_EXCLUSIVE`).
pub fn restart_machine_engine() {
    let systemd = Command::new("systemctl")
        .args(["is-active", "--quiet", "docker"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if systemd {
        assert!(
            Command::new("systemctl")
                .args(["restart", "docker"])
                .status()
                .unwrap()
                .success()
        );
    } else {
        let pid = machine_engine_pid().expect("the machine's dockerd is not running");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        Command::new("kill").arg(pid.to_string()).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < deadline, "dockerd did not stop");
            std::thread::sleep(Duration::from_millis(200));
        }
        // dockerd outlives the test (it is the machine's engine): its log goes
        // beside the system's temp files, not into the test's temp dir.
        let logf =
            std::fs::File::create(std::env::temp_dir().join("stackpin-test-dockerd.log")).unwrap();
        #[allow(clippy::zombie_processes)] // never waited for: it keeps running
        Command::new("setsid")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("restart dockerd");
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while !Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "dockerd did not come back");
        std::thread::sleep(Duration::from_millis(500));
    }
}
