//! [`StackFixture`]: the fixture app's stack as most tests write it.

use super::*;

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
    /// Smoke checks listed before the others (lines `    - …` ending in a
    /// newline).
    pub first_checks: String,
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
            first_checks: String::new(),
        }
    }

    /// A smoke check listed first, e.g. `"exec: {service: web, command: [true]}"`.
    pub fn check_first(mut self, check: &str) -> Self {
        self.first_checks.push_str(&format!("    - {check}\n"));
        self
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
        let mut checks = self.first_checks.clone();
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

impl TestHost {
    /// The most common arrange: the fixture app's stack `app` at `v1`,
    /// committed and synced (the sync must say `deployed`). Returns the
    /// stack's name and port.
    pub fn deployed(&self) -> (String, u16) {
        let s = self.stack("app");
        let port = self.free_port();
        StackFixture::new(&s, &Fixtures::require().v1, port, "v1").write(self);
        self.commit("v1");
        self.cmd(["sync"]).run().ok().stdout_contains("deployed");
        (s, port)
    }
}
