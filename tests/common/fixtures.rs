//! The real components `scripts/fixtures.sh` set up (engine, compose, a
//! loopback registry, images by digest), the compose flavour a test runs
//! under, the host config every test host starts from, and the machine's
//! own Docker daemon (for the tests that restart it).

use super::*;

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
