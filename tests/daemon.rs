//! The daemon on a real engine and real git repositories (issue: daemon):
//! poll, GitHub webhook, trigger storms, unreachable and force-pushed
//! remotes, the control socket, metrics, logs without secrets, the unit file.

use crate::common;

use common::{Fixtures, Running, StackFixture, TestHost};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SECRET: &str = "webhook-secret-for-tests";

fn write_stack(h: &TestHost, stack: &str, image: &str, port: u16, version: &str) {
    StackFixture::new(stack, image, port, version)
        .http_only()
        .without_site_conf()
        .extra(&format!(
            "env_files: [{}]\n",
            h.tmp().join("secret.env").display()
        ))
        .compose_env("      API_TOKEN: ${API_TOKEN}\n")
        .write(h);
}

struct Daemon {
    run: Option<Running>,
    port: u16,
    socket: PathBuf,
}

impl Daemon {
    /// Starts a daemon; `watch` turns the local-path watch on, so tests of
    /// the webhook and of coalescing see only the triggers they send.
    fn start(
        h: &TestHost,
        repo_url: &str,
        poll: &str,
        watch: bool,
        extra_env: &[(&str, &str)],
    ) -> Daemon {
        let port = h.free_port();
        let socket = h.tmp().join("control.sock");
        let cfg = h.tmp().join("config.yaml");
        std::fs::write(h.tmp().join("webhook-secret"), SECRET).unwrap();
        common::write_config(
            &cfg,
            format!("concurrency: 2\nsecret_dirs: [{}]\nhttp: {{listen: \"127.0.0.1:{port}\", github_secret_file: {}}}\nrepo: {{branch: main, poll_interval: {poll}, watch: {watch}}}\n", h.tmp().display(), h.tmp().join("webhook-secret").display()),
        )
        .unwrap();
        let mut c = h.daemon_cmd(&cfg, repo_url.as_ref(), &socket);
        for (k, v) in extra_env {
            c.env(k, v);
        }
        let run = c.spawn();
        let d = Daemon {
            run: Some(run),
            port,
            socket,
        };
        d.wait_until("the HTTP server", Duration::from_secs(60), || {
            http(d.port, "GET", "/healthz", &[], b"")
                .map(|(s, _)| s == 200)
                .unwrap_or(false)
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

    fn metric_sum(&self, name: &str) -> f64 {
        let (_, body) = http(self.port, "GET", "/metrics", &[], b"").expect("metrics");
        parse_metrics(&body)
            .into_iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, _, v)| v)
            .sum()
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

/// A minimal HTTP/1.1 client on loopback: (status, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

fn sign(body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

static DELIVERY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn push_event(port: u16, branch: &str, secret: &str) -> (u16, String) {
    let body = format!("{{\"ref\":\"refs/heads/{branch}\",\"after\":\"0000\"}}");
    let headers = [
        ("X-GitHub-Event", "push".to_string()),
        // A new delivery each time: the daemon answers a replay without
        // acting.
        (
            "X-GitHub-Delivery",
            format!(
                "d-{}",
                DELIVERY.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
        ),
        ("Content-Type", "application/json".to_string()),
        ("X-Hub-Signature-256", sign(body.as_bytes(), secret)),
    ];
    http(port, "POST", "/hooks/github", &headers, body.as_bytes()).expect("webhook request")
}

/// A small Prometheus text-format parser: (name, labels, value) per sample;
/// panics on a malformed line.
fn parse_metrics(text: &str) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("malformed metrics line: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in: {line}")),
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, l)) => {
                assert!(l.ends_with('}'), "bad labels in: {line}");
                (n.to_string(), l.trim_end_matches('}').to_string())
            }
            None => (head.to_string(), String::new()),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in: {line}"
        );
        out.push((name, labels, value));
    }
    out
}

fn answer(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    use std::io::{Read, Write};
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
}

fn setup(h: &TestHost, f: &Fixtures, stack: &str, app_port: u16) -> PathBuf {
    std::fs::write(
        h.tmp().join("secret.env"),
        "API_TOKEN=s3cr3t-token-never-logged\n",
    )
    .unwrap();
    write_stack(h, stack, &f.v1, app_port, "v1");
    h.commit("v1");
    h.bare_remote()
}

#[test]
fn daemon_polls_a_remote_and_applies_a_pushed_commit() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("web");
    let app = h.free_port();
    let remote = setup(&h, &f, &s, app);
    let d = Daemon::start(
        &h,
        &format!("file://{}", remote.display()),
        "2s",
        false,
        &[("RUST_LOG", "stackpin=debug")],
    );
    d.wait_until("v1 to be served", Duration::from_secs(90), || {
        answer(app).as_deref() == Some("stackpin-test-app v1")
    });
    d.wait_until("/readyz", Duration::from_secs(10), || {
        http(d.port, "GET", "/readyz", &[], b"")
            .map(|(s, _)| s == 200)
            .unwrap_or(false)
    });

    // Polls that find the same commit reuse what was loaded from it (and
    // the push below is still read: the next assertion).
    d.wait_until("a poll of the same commit", Duration::from_secs(30), || {
        d.logs().contains("desired state unchanged: not read again")
    });

    write_stack(&h, &s, &f.v2, app, "v2");
    h.commit("v2");
    h.push(false);
    d.wait_until(
        "v2 after the push (one poll interval)",
        Duration::from_secs(90),
        || answer(app).as_deref() == Some("stackpin-test-app v2"),
    );

    // The JSON API and the metrics reflect it.
    d.wait_until("the API to show v2", Duration::from_secs(30), || {
        http(d.port, "GET", "/api/v1/stacks", &[], b"").is_some_and(|(_, b)| {
            b.contains("\"version\":\"v2\"") && b.contains("\"state\":\"converged\"")
        })
    });
    let (_, hist) = http(d.port, "GET", "/api/v1/history", &[], b"").unwrap();
    let hist: serde_json::Value = serde_json::from_str(&hist).expect("history JSON");
    assert!(hist.as_array().unwrap().len() >= 2, "{hist}");
    let (_, metrics) = http(d.port, "GET", "/metrics", &[], b"").unwrap();
    let samples = parse_metrics(&metrics);
    for name in [
        "stackpin_sync_runs_total",
        "stackpin_converge_duration_seconds_count",
        "stackpin_stack_state",
        "stackpin_last_success_timestamp_seconds",
    ] {
        assert!(
            samples.iter().any(|(n, _, _)| n == name),
            "{name} missing:\n{metrics}"
        );
    }
    assert!(
        samples.iter().any(|(n, l, v)| n == "stackpin_stack_state"
            && l.contains(&s)
            && l.contains("Converged")
            && *v == 1.0),
        "{metrics}"
    );

    // A rotated secret redeploys without a commit, though the daemon keeps
    // each stack's render between polls (issue 37): rewritten in place at
    // the same size, then replaced by a rename.
    let deploys = || h.history().matches("| deploy | v2 | success").count();
    assert_eq!(deploys(), 1, "{}", h.history());
    let env = h.tmp().join("secret.env");
    std::fs::write(&env, "API_TOKEN=r0tat3d-token-never-logged\n").unwrap();
    d.wait_until(
        "a redeploy for the rewritten secret",
        Duration::from_secs(90),
        || deploys() == 2,
    );
    let next = h.tmp().join("secret.env.new");
    std::fs::write(&next, "API_TOKEN=r3plac3d-token-never-logged\n").unwrap();
    std::fs::rename(&next, &env).unwrap();
    d.wait_until(
        "a redeploy for the replaced secret",
        Duration::from_secs(90),
        || deploys() == 3,
    );
    assert_eq!(answer(app).as_deref(), Some("stackpin-test-app v2"));

    // Secrets from env files never reach the logs.
    let logs = d.stop();
    assert!(logs.contains("sync run"), "{logs}");
    for secret in [
        "s3cr3t-token-never-logged",
        "r0tat3d-token-never-logged",
        "r3plac3d-token-never-logged",
    ] {
        assert!(!logs.contains(secret), "a secret was logged:\n{logs}");
    }
}

#[test]
fn webhook_triggers_at_once_and_bad_signatures_do_nothing() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("web");
    let app = h.free_port();
    let remote = setup(&h, &f, &s, app);
    let d = Daemon::start(
        &h,
        &format!("file://{}", remote.display()),
        "1h",
        false,
        &[],
    );
    d.wait_until("v1 to be served", Duration::from_secs(90), || {
        answer(app).as_deref() == Some("stackpin-test-app v1")
    });
    d.wait_until("the first run to finish", Duration::from_secs(30), || {
        d.metric_sum("stackpin_sync_runs_total") >= 1.0
    });

    write_stack(&h, &s, &f.v2, app, "v2");
    h.commit("v2");
    h.push(false);
    // A wrong signature is refused and triggers nothing.
    let (status, _) = push_event(d.port, "main", "wrong-secret");
    assert_eq!(status, 401);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        answer(app).as_deref(),
        Some("stackpin-test-app v1"),
        "an unsigned delivery must not trigger a sync"
    );
    // Another branch is ignored.
    assert_eq!(push_event(d.port, "other", SECRET).0, 202);
    // A good one triggers at once (the poll interval is an hour).
    assert_eq!(push_event(d.port, "main", SECRET).0, 202);
    d.wait_until("v2 after the webhook", Duration::from_secs(90), || {
        answer(app).as_deref() == Some("stackpin-test-app v2")
    });
}

#[test]
fn a_storm_of_webhooks_coalesces() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("web");
    let app = h.free_port();
    let remote = setup(&h, &f, &s, app);
    let d = Daemon::start(
        &h,
        &format!("file://{}", remote.display()),
        "1h",
        false,
        &[],
    );
    d.wait_until("v1 to be served", Duration::from_secs(90), || {
        answer(app).as_deref() == Some("stackpin-test-app v1")
    });
    d.wait_until("the first run to finish", Duration::from_secs(30), || {
        d.metric_sum("stackpin_sync_runs_total") >= 1.0
    });
    let before = d.metric_sum("stackpin_sync_runs_total");

    write_stack(&h, &s, &f.v2, app, "v2");
    h.commit("v2");
    h.push(false);
    for _ in 0..1000 {
        assert_eq!(push_event(d.port, "main", SECRET).0, 202);
    }
    d.wait_until("v2", Duration::from_secs(90), || {
        answer(app).as_deref() == Some("stackpin-test-app v2")
    });
    std::thread::sleep(Duration::from_secs(8));
    let runs = d.metric_sum("stackpin_sync_runs_total") - before;
    assert!(
        (1.0..=2.0).contains(&runs),
        "1,000 deliveries must coalesce into at most 2 runs, got {runs}\n{}",
        d.logs()
    );
    let hist = std::fs::read_to_string(h.root().join("deploy-history.log")).unwrap();
    assert_eq!(
        hist.matches("| deploy | v2 | success |").count(),
        1,
        "{hist}"
    );
}

#[test]
fn unreachable_remote_keeps_the_host_and_shows_in_readyz_and_metrics() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("web");
    let app = h.free_port();
    let remote = setup(&h, &f, &s, app);
    let d = Daemon::start(
        &h,
        &format!("file://{}", remote.display()),
        "1s",
        false,
        &[],
    );
    d.wait_until("v1 to be served", Duration::from_secs(90), || {
        answer(app).as_deref() == Some("stackpin-test-app v1")
    });
    // The remote disappears.
    std::fs::rename(&remote, h.tmp().join("remote-gone.git")).unwrap();
    d.wait_until("fetch errors in metrics", Duration::from_secs(30), || {
        d.metric_sum("stackpin_fetch_errors_total") >= 1.0
    });
    let (_, api) = http(d.port, "GET", "/api/v1/stacks", &[], b"").unwrap();
    assert!(
        api.contains("last_fetch_error") && !api.contains("\"last_fetch_error\":null"),
        "{api}"
    );
    assert_eq!(
        answer(app).as_deref(),
        Some("stackpin-test-app v1"),
        "the host keeps running"
    );

    // It comes back, force-pushed with v2: followed, and logged as such.
    std::fs::rename(h.tmp().join("remote-gone.git"), &remote).unwrap();
    h.git(["reset", "-q", "--hard", "HEAD"]);
    write_stack(&h, &s, &f.v2, app, "v2");
    h.git(["add", "-A"]);
    h.git([
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "commit",
        "-q",
        "--amend",
        "-m",
        "rewritten",
    ]);
    h.push(true);
    d.wait_until("v2 after the force-push", Duration::from_secs(90), || {
        answer(app).as_deref() == Some("stackpin-test-app v2")
    });
    let logs = d.stop();
    assert!(logs.contains("force-push"), "{logs}");
    assert!(logs.contains("FetchFailed"), "{logs}");
}

#[test]
fn readyz_fails_when_the_remote_never_answered() {
    let h = TestHost::new();
    let d = Daemon::start(
        &h,
        &format!("file://{}", h.tmp().join("nothing-here.git").display()),
        "1s",
        false,
        &[],
    );
    d.wait_until("a fetch error", Duration::from_secs(30), || {
        d.metric_sum("stackpin_fetch_errors_total") >= 1.0
    });
    let (status, body) = http(d.port, "GET", "/readyz", &[], b"").unwrap();
    assert_eq!(status, 503, "{body}");
}

#[test]
fn cli_actions_go_through_the_control_socket() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("web");
    let app = h.free_port();
    let remote = setup(&h, &f, &s, app);
    let d = Daemon::start(
        &h,
        &format!("file://{}", remote.display()),
        "1h",
        false,
        &[],
    );
    d.wait_until("v1 to be served", Duration::from_secs(90), || {
        answer(app).as_deref() == Some("stackpin-test-app v1")
    });
    let sock = d.socket.clone();
    let mut c = h.cmd(["sync", "--force", &s]);
    c.env("STACKPIN_CONTROL_SOCKET", &sock);
    let out = c.run().ok();
    assert!(
        out.stderr().contains("executed by the running daemon"),
        "{}",
        out.report()
    );
    assert!(out.stdout().contains("deployed"), "{}", out.report());
    let mut c = h.cmd(["hold", &s, "--reason", "investigating"]);
    c.env("STACKPIN_CONTROL_SOCKET", &sock);
    c.run().ok().stdout_contains("is held");
    let logs = d.stop();
    assert!(
        logs.contains("operator request via control socket") && logs.contains("sync --force"),
        "{logs}"
    );
    assert!(logs.contains("hold "), "{logs}");
    let mode = std::fs::metadata(&sock)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    // The socket is removed on shutdown.
    assert!(mode.is_err(), "socket left behind: {mode:?}");
}

/// `sync` asks a running daemon before it reads anything itself (issue
/// 19): here the CLI's own config names a remote it cannot reach and a
/// state dir with no mirror, and the daemon, which fetches a real
/// `git://` remote, still runs the sync.
#[test]
fn sync_asks_the_daemon_before_it_reads_the_repository() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("web");
    let app = h.free_port();
    setup(&h, &f, &s, app);
    let git = h.git_daemon();
    let d = Daemon::start(&h, &git.url("remote.git"), "1h", false, &[]);
    d.wait_until("v1 to be served", Duration::from_secs(90), || {
        answer(app).as_deref() == Some("stackpin-test-app v1")
    });
    let elsewhere = h.tmp().join("cli-state");
    let cli = |args: &[&str]| {
        let mut c = h.cmd_raw([
            "--repo".as_ref(),
            "git://127.0.0.1:1/unreachable.git".as_ref(),
            "--root".as_ref(),
            h.root().as_os_str(),
            "--state-dir".as_ref(),
            elsewhere.as_os_str(),
            "--control-socket".as_ref(),
            d.socket.as_os_str(),
        ]);
        c.args(args);
        c
    };
    let out = cli(&["sync", "--force", &s]).run().ok();
    assert!(
        out.stderr().contains("executed by the running daemon")
            && out.stdout().contains("deployed"),
        "{}",
        out.report()
    );
    // status too goes through the daemon, and an unknown name is bad
    // input (exit 1) there as here.
    let out = cli(&["status", &s]).run().ok();
    assert!(
        out.stderr().contains("answered by the running daemon")
            && out.stdout().contains("Converged"),
        "{}",
        out.report()
    );
    let typo = format!("{s}x");
    for cmd in ["sync", "status"] {
        cli(&[cmd, &typo])
            .run()
            .code(1)
            .stderr_contains(&format!("did you mean `{s}`"));
    }
    assert!(!elsewhere.exists(), "the CLI read or fetched by itself");
}

/// `stackpin --config cfg --json daemon --check-config`, run.
fn check_config(h: &TestHost, cfg: &Path) -> common::Output {
    h.check_config(cfg, true).run()
}

/// Without `--json`, `--check-config` is a summary a person reads: one
/// setting per line, then one line per start check (issue 35).
#[test]
fn check_config_reads_as_a_summary_without_json() {
    let h = TestHost::new();
    let cfg = h.tmp().join("config.yaml");
    common::write_config(
        &cfg,
        format!(
            "repo:\n  url: {}\n  poll_interval: 1m\n",
            h.repo().display()
        ),
    )
    .unwrap();
    h.commit("empty");
    let out = h.check_config(&cfg, false).run().ok();
    let text = out.stdout();
    assert!(text.lines().any(|l| l == "poll_interval: 1m"), "{text}");
    let header = text
        .lines()
        .find(|l| l.starts_with("CHECK "))
        .unwrap_or_default();
    assert!(
        header.contains("RESULT") && header.contains("DETAIL"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("desired-state repository") && l.contains(" ok ")),
        "{text}"
    );
    assert!(!text.trim_start().starts_with('{'), "not JSON: {text}");
}

#[test]
fn check_config_masks_secrets_and_rejects_unknown_keys() {
    let h = TestHost::new();
    let cfg = h.tmp().join("c.yaml");
    std::fs::write(h.tmp().join("hook"), "very-secret").unwrap();
    common::write_config(&cfg, format!("host: web-1\nrepo: {{url: \"https://user:tok@example.com/x.git\", branch: main}}\nhttp: {{listen: \"127.0.0.1:9750\", github_secret_file: {}}}\n", h.tmp().join("hook").display())).unwrap();
    let out = check_config(&h, &cfg).ok();
    let text = out.stdout();
    assert!(
        !text.contains("very-secret") && !text.contains("tok@"),
        "{text}"
    );
    assert!(
        text.contains("https://example.com/x.git") && text.contains("\"poll_interval\": \"1m\""),
        "{text}"
    );
    common::write_config(&cfg, "host: web-1\nrepo: {url: x, brnach: main}\n").unwrap();
    check_config(&h, &cfg)
        .code(2)
        .stderr_contains("unknown field `brnach`");
}

/// What the daemon refuses at start, `--check-config` refuses too, naming
/// each: a control-socket group this host lacks, a missing notification
/// secret file, a missing allowed_signers file, an unreadable token file
/// and an address this host cannot listen on. Fixed, it passes.
#[test]
fn check_config_fails_where_the_daemon_would_not_start() {
    let h = TestHost::new();
    let cfg = h.tmp().join("c.yaml");
    let t = h.tmp();
    let write_cfg = |group: &str, files: &std::path::Path, listen: &str| {
        common::write_config(
            &cfg,
            format!(
                "host: web-1\nrepo: {{url: \"https://example.com/x.git\", branch: main, token_file: {f}/token}}\n\
                 http: {{listen: \"{listen}\"}}\ncontrol_socket_group: {group}\n\
                 notify: {{webhook_url_file: {f}/hook-url}}\n\
                 signers: {{approvers: {{allowed_signers: {f}/allowed_signers}}}}\n\
                 policy: [{{stacks: [\"*-prod\"], signed_by: approvers}}]\n\
                 registry_auth_file: {f}/docker.json\nage_identity_file: {f}/age.key\n",
                f = files.display()
            ),
        )
        .unwrap();
    };
    let check = || check_config(&h, &cfg);
    write_cfg(
        "no-such-group-stackpin",
        &t.join("missing"),
        "192.0.2.1:9750",
    );
    let out = check().code(1);
    let err = out.stderr();
    for want in [
        "control socket group: group `no-such-group-stackpin`",
        "host policy, signing key and notifications:",
        "desired-state repository: cannot read the token file",
        "HTTP listen address: cannot listen on 192.0.2.1:9750",
        "registry credentials:",
        "age identity (secrets):",
    ] {
        assert!(err.contains(want), "{want}\n{}", out.report());
    }
    let checks = out.json()["checks"].clone();
    assert!(
        checks
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["what"] == "docker engine and compose" && c["ok"] == true),
        "{checks}"
    );
    // The same daemon would not start either.
    h.cmd_raw(["--config".as_ref(), cfg.as_os_str(), "daemon".as_ref()])
        .timeout(std::time::Duration::from_secs(30))
        .run()
        .failed();
    // Fixed: every check passes.
    let files = t.join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("token"), "t0ken\n").unwrap();
    std::fs::write(files.join("hook-url"), "http://127.0.0.1:9/hook\n").unwrap();
    std::fs::write(files.join("docker.json"), "{\"auths\": {}}\n").unwrap();
    let age_key = age::x25519::Identity::generate();
    std::fs::write(
        files.join("age.key"),
        format!(
            "{}\n",
            age::secrecy::ExposeSecret::expose_secret(&age_key.to_string())
        ),
    )
    .unwrap();
    let signer = h.ssh_signer("approver", "approver@example.com", "git");
    std::fs::copy(&signer.allowed, files.join("allowed_signers")).unwrap();
    write_cfg("root", &files, &format!("127.0.0.1:{}", h.free_port()));
    let out = check().ok();
    assert!(!out.stdout().contains("t0ken"), "{}", out.report());
    assert!(
        out.stdout()
            .contains(&format!("(recipient {})", age_key.to_public())),
        "--check-config prints what to encrypt to: {}",
        out.report()
    );
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/stackpin.service"),
    )
    .unwrap();
    for key in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "SupplementaryGroups=docker",
    ] {
        assert!(unit.contains(key), "unit lacks {key}");
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("systemd-analyze is missing: scripts/test.sh installs systemd");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stackpin.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/stackpin", common::STACKPIN),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("stackpin.service:"),
        "systemd-analyze verify: {err}"
    );
}

use std::process::Command;

/// Every service unit scores at most 3.0 ("OK") with `systemd-analyze
/// security --offline=yes` and still verifies; the daemon's unit sets the
/// stop timeout and kill mode README promises, and leans on Docker with
/// Wants= (a Docker restart must not stop stackpin).
#[test]
fn every_unit_is_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let systemd = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let mut scored = 0;
    for e in std::fs::read_dir(&systemd).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".service") {
            continue;
        }
        let unit = std::fs::read_to_string(e.path()).unwrap();
        let path = dir.path().join(&name);
        std::fs::write(
            &path,
            unit.replace("/usr/local/bin/stackpin", common::STACKPIN),
        )
        .unwrap();
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&path)
            .output()
            .expect("systemd-analyze (scripts/test.sh installs systemd)");
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|l| l.split(": ").nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no score for {name}:\n{text}"));
        assert!(score <= 3.0, "{name} scores {score}:\n{text}");
        assert!(!unit.contains("Requires=docker.service"), "{name}");
        scored += 1;
    }
    assert_eq!(scored, 2, "stackpin.service and stackpin-backup.service");
    let daemon = std::fs::read_to_string(systemd.join("stackpin.service")).unwrap();
    for key in [
        "KillMode=mixed",
        "TimeoutStopSec=15min",
        "Wants=docker.service",
    ] {
        assert!(daemon.contains(key), "stackpin.service lacks {key}");
    }
}

/// With a remote that cannot be reached, the daemon still tells systemd it
/// is ready (an unreachable remote at boot must not hold `systemctl start`)
/// and says why it is degraded in STATUS=, over a real notify socket.
#[test]
fn ready_is_sent_when_the_remote_cannot_be_reached() {
    use std::os::unix::net::UnixDatagram;
    let h = TestHost::new();
    let sock_path = h.tmp().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // Nothing listens on port 1: the fetch fails at once.
    let d = Daemon::start(
        &h,
        "git://127.0.0.1:1/desired.git",
        "1h",
        false,
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
    );
    let mut said = String::new();
    let mut buf = [0u8; 4096];
    while !(said.contains("READY=1") && said.contains("STATUS=degraded")) {
        match sock.recv(&mut buf) {
            Ok(n) => {
                said.push_str(&String::from_utf8_lossy(&buf[..n]));
                said.push('\n');
            }
            Err(e) => panic!("no READY within 60 s ({e}); got {said:?}\n{}", d.logs()),
        }
    }
    assert!(said.contains("serving the last fetched state"), "{said}");
    let logs = d.stop();
    assert!(logs.contains("FetchFailed"), "{logs}");
}

#[test]
fn a_local_repository_path_is_watched() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("web");
    let app = h.free_port();
    std::fs::write(h.tmp().join("secret.env"), "API_TOKEN=x-token\n").unwrap();
    write_stack(&h, &s, &f.v1, app, "v1");
    h.commit("v1");
    let repo = h.repo();
    let d = Daemon::start(&h, repo.to_str().unwrap(), "1h", true, &[]);
    d.wait_until("v1 to be served", Duration::from_secs(90), || {
        answer(app).as_deref() == Some("stackpin-test-app v1")
    });
    // A commit in the local repository is picked up without a poll or webhook.
    write_stack(&h, &s, &f.v2, app, "v2");
    h.commit("v2");
    d.wait_until("v2 after the local commit", Duration::from_secs(90), || {
        answer(app).as_deref() == Some("stackpin-test-app v2")
    });
    let logs = d.stop();
    assert!(logs.contains("trigger=Watch"), "{logs}");
}

/// systemd stops the unit with SIGTERM to the daemon alone
/// (`KillMode=mixed`) and waits `TimeoutStopSec`. A SIGTERM in the middle of
/// a converge lets that converge finish (deploy recorded, stack on a
/// complete release, journal cleared), then the daemon exits 0 by itself:
/// nothing is left half-way for the next start to recover.
#[test]
fn sigterm_mid_converge_finishes_the_converge_then_exits() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("web");
    let app = h.free_port();
    std::fs::write(h.tmp().join("secret.env"), "API_TOKEN=x-token\n").unwrap();
    write_stack(&h, &s, &f.v1, app, "v1");
    // The app answers only 5 s after its start: the converge is still in
    // `up` or smoke when the signal comes.
    let compose = h.repo().join(format!("stacks/{s}/compose.yaml"));
    let mut text = std::fs::read_to_string(&compose).unwrap();
    text.push_str(
        "    command: [\"/bin/sh\", \"-c\", \"sleep 5; exec httpd -f -p 127.0.0.1:$${PORT} -h /www\"]\n",
    );
    std::fs::write(&compose, text).unwrap();
    h.commit("v1, slow to start");
    let repo = h.repo();
    let mut d = Daemon::start(&h, repo.to_str().unwrap(), "1h", false, &[]);
    d.wait_until(
        "the converge to start the container",
        Duration::from_secs(90),
        || !h.containers(&s).is_empty(),
    );
    assert!(answer(app).is_none(), "the app answered before the signal");
    let run = d.run.take().unwrap();
    run.signal("TERM");
    // Generous: the converge has the smoke timeout (15 s) left at most.
    let out = run.terminate(Duration::from_secs(60));
    assert!(
        out.success(),
        "the daemon did not exit 0 by itself: {}",
        out.report()
    );
    let logs = out.stderr();
    let stopping = logs
        .find("stackpin daemon stopping")
        .expect("no stopping line");
    let deployed = logs
        .find("outcome=Deployed")
        .unwrap_or_else(|| panic!("no deploy logged: {logs}"));
    assert!(
        deployed < stopping,
        "stopped before the converge ended: {logs}"
    );
    h.assert_consistent(&s);
    assert_eq!(answer(app).as_deref(), Some("stackpin-test-app v1"));
    let hist = h.cmd(["--json", "history", &s]).run().ok().json();
    let last = hist
        .as_array()
        .and_then(|a| a.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (&last["action"], &last["status"]),
        (&"deploy".into(), &"success".into()),
        "{hist}"
    );
}

/// Through the daemon, a secret printed by a failing exec smoke check is
/// masked everywhere it could surface: history, the JSON API, the status
/// page and the logs (issue 11: only the CLI used to mask).
#[test]
fn the_daemon_masks_secrets_in_every_output() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("web");
    let app = h.free_port();
    let remote = setup(&h, &f, &s, app);
    let d = Daemon::start(
        &h,
        &format!("file://{}", remote.display()),
        "1s",
        false,
        &[],
    );
    d.wait_until("v1 to be served", Duration::from_secs(90), || {
        answer(app).as_deref() == Some("stackpin-test-app v1")
    });
    StackFixture::new(&s, &f.v2, app, "v2")
        .http_only()
        .without_site_conf()
        .extra(&format!(
            "env_files: [{}]\n",
            h.tmp().join("secret.env").display()
        ))
        .compose_env("      API_TOKEN: ${API_TOKEN}\n")
        // A check that prints the secret and fails.
        .check_first(
            "exec: {service: web, command: [\"sh\", \"-c\", \"echo token=$API_TOKEN; exit 3\"]}",
        )
        .write(&h);
    h.commit("v2 with a check that leaks");
    h.push(false);
    d.wait_until(
        "the failed smoke in history",
        Duration::from_secs(90),
        || h.history().contains("| v2 | failed |"),
    );
    let secret = "s3cr3t-token-never-logged";
    let history = h.history();
    assert!(
        history.contains("token=***"),
        "the check's output is kept, masked:\n{history}"
    );
    let (_, api) = http(d.port, "GET", "/api/v1/history", &[], b"").unwrap();
    let (_, stacks) = http(d.port, "GET", "/api/v1/stacks", &[], b"").unwrap();
    let (_, page) = http(d.port, "GET", "/", &[], b"").unwrap();
    let logs = d.stop();
    for (what, text) in [
        ("history", &history),
        ("API history", &api),
        ("API stacks", &stacks),
        ("page", &page),
        ("logs", &logs),
    ] {
        assert!(
            !text.contains(secret),
            "the secret reached the {what}:\n{text}"
        );
    }
}
