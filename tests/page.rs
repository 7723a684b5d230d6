//! The status page (`GET /`) served by the real HTTP server and rendered by
//! a real headless Chromium: every state of SPEC §6 shows with its colour,
//! badges and history appear newest first, and user text (stack names,
//! reasons, notes) is text, never markup. Leaves a screenshot at
//! `target/test-artifacts/status-page.png` for a person to look at.
//!
//! Needs `chromium` (scripts/setup.d/chromium.sh installs it): under CI a
//! missing browser fails the test; locally it is skipped with a message when
//! neither `STACKPIN_TEST_CHROMIUM` nor `/usr/bin/chromium` exists.

use chrono::NaiveDate;
use stackpin::history::{self, Entry};
use stackpin::metrics::Metrics;
use stackpin::server::{self, AppState, Snapshot};
use stackpin::status::StackStatus;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

const INJECTION: &str = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>";

fn row(stack: &str, state: &str, reason: &str) -> StackStatus {
    StackStatus {
        stack: stack.into(),
        state: state.parse().unwrap(),
        sync: Default::default(),
        health: Default::default(),
        version: Some("1.4.2".into()),
        release: Some("20260130T100000Z-1a2b3c".into()),
        digest: Some("0123456789ab".into()),
        last_change: Some("2026-01-30 10:00:00 deploy 1.4.2 success".into()),
        reason: reason.into(),
        code: None,
        held: false,
        quarantined: false,
    }
}

fn snapshot() -> Snapshot {
    let mut rolled = row(
        "shop",
        "RolledBack",
        "smoke failed: http http://127.0.0.1:8080/health answered 404",
    );
    rolled.quarantined = true;
    rolled.version = Some("1.9.3".into());
    let mut held = row("reports", "Held", "held: investigating INC-42");
    held.held = true;
    let mut progressing = row("api", "Progressing", "desired 2.1.0, running 2.0.9");
    progressing.digest = None;
    Snapshot {
        stacks: vec![
            row("odoo18-prod", "Converged", "running the desired release"),
            progressing,
            row("billing", "Failed", "pull failed: manifest unknown"),
            rolled,
            row("web", "Blocked", "1.4.2 has not passed staging on any host"),
            held,
            row("cache", "Drifted", "container cache-redis-1 is exited"),
            row(INJECTION, "Failed", INJECTION),
        ],
        commit: Some("19b9b98c0ffee0123456789abcdef0123456789a".into()),
        last_fetch_ok: Some(chrono::Utc::now()),
        last_fetch_error: None,
        forced_push: None,
        host: stackpin::status::HostInfo {
            name: "web-1".into(),
            labels: vec!["role=app".into(), INJECTION.into()],
            version: "0.1.0".into(),
            engine: "docker compose (Docker Compose version v2.40.3)".into(),
        },
    }
}

fn history_entries() -> Vec<Entry> {
    let t = |m: u32| {
        NaiveDate::from_ymd_opt(2026, 1, 30)
            .unwrap()
            .and_hms_opt(9, m, 0)
            .unwrap()
    };
    let e = |m, stack: &str, action: &str, version: &str, status: &str, notes: &str| Entry {
        time: t(m),
        stack: stack.into(),
        env: "production".into(),
        action: action.into(),
        version: version.into(),
        status: status.into(),
        notes: notes.into(),
    };
    vec![
        e(1, "odoo18-prod", "deploy", "1.4.2", "success", ""),
        e(2, "shop", "deploy", "2.0.0", "failed", "smoke failed"),
        e(
            3,
            "shop",
            "rollback",
            "1.9.3",
            "success",
            "smoke failed (release 20260130T090200Z-aa)",
        ),
        e(
            4,
            "web",
            "blocked",
            "1.4.2",
            "refused",
            "1.4.2 has not passed staging",
        ),
        e(
            5,
            "reports",
            "hold",
            "3.0.1",
            "success",
            "investigating INC-42",
        ),
        e(6, INJECTION, "deploy", "1", "failed", INJECTION),
        e(
            7,
            "cache",
            "deploy",
            "7.2",
            "success",
            "heal: container exited",
        ),
    ]
}

struct Server {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start(snap: Snapshot, entries: &[Entry]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let history_path = dir.path().join("deploy-history.log");
    for e in entries {
        history::append(&history_path, e).unwrap();
    }
    let (tx, _rx) = mpsc::channel(1);
    let state = AppState {
        trigger: tx,
        webhook_secret: None,
        branch: "main".into(),
        snapshot: Arc::new(RwLock::new(snap)),
        metrics: Arc::new(Metrics::new()),
        history_path,
        ready_max_age: Duration::from_secs(300),
        deliveries: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        server::serve(listener, state, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Server {
        base,
        stop: Some(stop),
        _dir: dir,
    }
}

/// The browser to use, or None (with a message) when a local run has none.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STACKPIN_TEST_CHROMIUM").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "STACKPIN_TEST_CHROMIUM={} does not exist",
            p.display()
        );
        return Some(p);
    }
    let default = Path::new("/usr/bin/chromium");
    if default.exists() {
        return Some(default.to_path_buf());
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "chromium is missing: scripts/setup.d/chromium.sh installs it (apt-get install chromium) \
             and exports STACKPIN_TEST_CHROMIUM; run the suite with scripts/test.sh"
        );
    }
    eprintln!(
        "SKIPPED: no chromium (set STACKPIN_TEST_CHROMIUM or install /usr/bin/chromium; \
         scripts/setup.d/chromium.sh does it)"
    );
    None
}

/// Runs headless Chromium with `args` then `url`; returns stdout. Fails with
/// both streams on a non-zero exit or after 90 s.
async fn run_chromium(bin: &Path, profile: &Path, args: &[String], url: &str) -> String {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args([
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--proxy-server=direct://",
        "--proxy-bypass-list=*",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .kill_on_drop(true)
    .stdin(std::process::Stdio::null());
    let line = format!("{} {} {url}", bin.display(), args.join(" "));
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("`{line}` did not finish within 90s"))
        .unwrap_or_else(|e| panic!("failed to start `{line}`: {e}"));
    assert!(
        out.status.success(),
        "`{line}` failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_a_real_browser() {
    let Some(bin) = chromium() else { return };
    let snap = snapshot();
    let entries = history_entries();
    let srv = start(snap.clone(), &entries).await;
    let url = format!("{}/", srv.base);
    let profile = tempfile::tempdir().unwrap();

    let dom = run_chromium(
        &bin,
        profile.path(),
        &["--dump-dom".into(), "--virtual-time-budget=2000".into()],
        &url,
    )
    .await;
    // Every state, as a coloured pill on its row.
    for r in &snap.stacks {
        if r.stack == INJECTION {
            continue;
        }
        assert!(
            dom.contains(&format!(
                "<tr data-stack=\"{}\" data-state=\"{}\">",
                r.stack,
                r.state.key()
            )),
            "no row for {} in\n{dom}",
            r.stack
        );
    }
    for (state, class) in [
        ("Converged", "st-converged"),
        ("Progressing", "st-progressing"),
        ("Failed", "st-failed"),
        ("RolledBack", "st-rolledback"),
        ("Blocked", "st-blocked"),
        ("Held", "st-held"),
        ("Drifted", "st-drifted"),
    ] {
        assert!(
            dom.contains(&format!("<span class=\"state {class}\">{state}</span>")),
            "no {state} pill in\n{dom}"
        );
    }
    assert!(dom.contains("<span class=\"badge held\">held</span>"));
    assert!(dom.contains("<span class=\"badge quarantined\">quarantined</span>"));
    assert!(dom.contains("0123456789ab") && dom.contains("1.9.3"));
    assert!(
        dom.contains(
            "<code title=\"19b9b98c0ffee0123456789abcdef0123456789a\">19b9b98c0ffe</code>"
        )
    );
    assert!(dom.contains("<meta http-equiv=\"refresh\" content=\"10\">"));
    // Which host this is, first.
    assert!(
        dom.contains("host <strong>web-1</strong> (role=app, ")
            && dom.contains("stackpin 0.1.0 · <span title=\"docker compose (Docker Compose version v2.40.3)\">docker compose</span>"),
        "the page does not say which host it is:\n{dom}"
    );

    // The injection is text: escaped in the DOM, no element, no script ran.
    let escaped =
        "&lt;script&gt;document.title='pwned'&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;";
    assert!(
        dom.matches(escaped).count() >= 4,
        "the injection string is not shown as text (name, reason, history stack and notes):\n{dom}"
    );
    assert!(!dom.contains("<script"), "a script element got in:\n{dom}");
    assert!(!dom.contains("<img"), "an img element got in:\n{dom}");
    assert!(dom.contains("<title>stackpin status</title>"), "{dom}");

    // History: newest first.
    let pos = |needle: &str| {
        dom.find(needle)
            .unwrap_or_else(|| panic!("{needle} missing"))
    };
    assert!(pos("2026-01-30 09:07:00") < pos("2026-01-30 09:01:00"));
    assert!(dom.contains("smoke failed (release 20260130T090200Z-aa)"));

    // The screenshot, for a person to look at.
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/status-page.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &bin,
        profile.path(),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1400,900".into(),
            "--virtual-time-budget=2000".into(),
        ],
        &url,
    )
    .await;
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 20_000,
        "a suspiciously small screenshot ({} bytes)",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_shows_what_the_api_shows() {
    let mut snap = snapshot();
    snap.last_fetch_error = Some("failed to fetch: <remote> unreachable".into());
    snap.forced_push = Some("force-push: aaaa → bbbb".into());
    let srv = start(snap, &history_entries()).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = client.get(format!("{}/", srv.base)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    assert_eq!(h["cache-control"], "no-store");
    let page = resp.text().await.unwrap();
    let api: serde_json::Value = client
        .get(format!("{}/api/v1/stacks", srv.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for s in api["stacks"].as_array().unwrap() {
        let name = stackpin::page::escape(s["stack"].as_str().unwrap());
        let state = s["state"].as_str().unwrap();
        assert!(
            page.contains(&format!(
                "<tr data-stack=\"{name}\" data-state=\"{state}\">"
            )),
            "{name} {state} missing"
        );
    }
    assert!(page.contains("failed to fetch: &lt;remote&gt; unreachable"));
    assert!(page.contains("force-push: aaaa → bbbb"));
    assert!(!page.contains(INJECTION));

    // An empty host renders too.
    let empty = start(Snapshot::default(), &[]).await;
    let page = client
        .get(format!("{}/", empty.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("No stacks on this host yet."));
    assert!(page.contains("No deploys recorded yet."));
    assert!(page.contains("desired state not fetched yet"));
}
