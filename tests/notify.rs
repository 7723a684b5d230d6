//! Notifications over real HTTP on loopback: a small receiver (a std
//! `TcpListener` in a thread that records every request) stands for both the
//! Slack incoming webhook and the generic JSON webhook. Covers the payloads,
//! once-per-change de-duplication (also across a restart), recovery, retries
//! with backoff, a receiver that hangs or is gone (emit never waits), a full
//! queue, and that the webhook URLs never reach a log line or an error. The
//! last test runs the real `stackpin sync` on a broken image (needs the
//! Docker fixtures).

use crate::common;

use common::{Fixtures, TestHost};
use stackpin::events::{Event, EventSink};
use stackpin::notify::{self, Notifier, Options, Target};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Every URL in these tests carries this; no log line or error may.
const SECRET: &str = "T0SECRET/B0SECRET/xoxSECRETtoken";

// ---- the receiver ----

#[derive(Debug, Clone)]
struct Request {
    path: String,
    body: serde_json::Value,
}

#[derive(Clone, Copy)]
enum Behaviour {
    /// Answers these statuses in turn, then 200.
    Answer(&'static [u16]),
    /// Reads the request and never answers.
    Hang,
}

struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start(b: Behaviour) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let rec = requests.clone();
        std::thread::spawn(move || {
            let mut n = 0usize;
            for conn in listener.incoming() {
                let Ok(stream) = conn else { continue };
                let Some(req) = read_request(&stream) else {
                    continue;
                };
                rec.lock().unwrap().push(req);
                match b {
                    Behaviour::Hang => {
                        // Held open, unanswered, for the rest of the test.
                        std::mem::forget(stream);
                    }
                    Behaviour::Answer(codes) => {
                        let code = codes.get(n).copied().unwrap_or(200);
                        n += 1;
                        let mut s = stream;
                        let _ = write!(
                            s,
                            "HTTP/1.1 {code} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                        );
                    }
                }
            }
        });
        Receiver { port, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}/{SECRET}", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    fn on(&self, path: &str) -> Vec<serde_json::Value> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == format!("/{path}/{SECRET}"))
            .map(|r| r.body)
            .collect()
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        path,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    })
}

/// A port nothing listens on while the claim lives.
fn dead_port() -> common::PortClaim {
    common::claim_port("127.0.0.1")
}

// ---- captured logs ----

#[derive(Clone)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every stackpin log line of this test binary, at every level.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = LogBuf(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("stackpin=trace"))
            .with_ansi(false)
            .with_writer(move || w.clone())
            .try_init();
        buf
    })
    .clone()
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

// ---- helpers ----

fn fast() -> Options {
    Options {
        first_backoff: Duration::from_millis(50),
        timeout: Duration::from_secs(2),
        ..Options::default()
    }
}

fn notifier(rx: &Receiver, root: &Path, opts: Options) -> Notifier {
    logs();
    Notifier::new(
        vec![
            Target::slack(&rx.url("slack")).unwrap(),
            Target::webhook(&rx.url("hook")).unwrap(),
        ],
        "test-host",
        root,
        opts,
    )
    .unwrap()
}

fn blocked(stack: &str, reason: &str) -> Event {
    Event::Blocked {
        stack: stack.into(),
        environment: "production".into(),
        version: "1.4.0".into(),
        reason: reason.into(),
    }
}

fn failed(stack: &str) -> Event {
    Event::DeployFailed {
        stack: stack.into(),
        environment: "production".into(),
        version: "1.4.0".into(),
        reason: "pull failed: manifest unknown".into(),
    }
}

fn deployed(stack: &str) -> Event {
    Event::Deployed {
        stack: stack.into(),
        environment: "production".into(),
        version: "1.4.1".into(),
    }
}

async fn flushed(n: &Notifier) {
    assert!(
        n.flush(Duration::from_secs(10)).await,
        "notifications still pending after 10s"
    );
}

// ---- tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_sends_one_slack_message_and_one_json_payload() {
    let rx = Receiver::start(Behaviour::Answer(&[]));
    let root = tempfile::tempdir().unwrap();
    let n = notifier(&rx, root.path(), fast());
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    n.emit(Event::RolledBack {
        stack: "shop".into(),
        environment: "production".into(),
        failed_version: "2.0.0".into(),
        version: "1.9.3".into(),
        reason: "smoke failed: http /health answered 404".into(),
    });
    flushed(&n).await;

    let slack = rx.on("slack");
    assert_eq!(slack.len(), 1, "{:?}", rx.requests());
    let text = slack[0]["text"].as_str().unwrap();
    assert_eq!(slack[0].as_object().unwrap().len(), 1, "{}", slack[0]);
    assert!(text.contains("[test-host]"), "{text}");
    assert!(
        text.contains("shop (production): 2.0.0 rolled back to 1.9.3: smoke failed"),
        "{text}"
    );

    let hook = rx.on("hook");
    assert_eq!(hook.len(), 1, "{:?}", rx.requests());
    let p = &hook[0];
    assert_eq!(p["event"]["kind"], "rolled_back");
    assert_eq!(p["event"]["stack"], "shop");
    assert_eq!(p["event"]["failed_version"], "2.0.0");
    assert_eq!(p["event"]["version"], "1.9.3");
    assert_eq!(p["host"], "test-host");
    assert!(
        p["summary"]
            .as_str()
            .unwrap()
            .contains("rolled back to 1.9.3")
    );
    let at = chrono::DateTime::parse_from_rfc3339(p["at"].as_str().unwrap()).unwrap();
    assert!(at >= before, "{at}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_refusal_is_sent_once_and_a_new_reason_again() {
    let rx = Receiver::start(Behaviour::Answer(&[]));
    let root = tempfile::tempdir().unwrap();
    let n = notifier(&rx, root.path(), fast());
    n.emit(blocked("api", "1.4.0 has not passed staging"));
    n.emit(blocked("api", "1.4.0 has not passed staging"));
    flushed(&n).await;
    n.emit(blocked("api", "1.4.0 has not passed staging"));
    flushed(&n).await;
    assert_eq!(rx.on("slack").len(), 1);
    assert_eq!(rx.on("hook").len(), 1);

    n.emit(blocked("api", "signature by an unknown key"));
    flushed(&n).await;
    let hook = rx.on("hook");
    assert_eq!(hook.len(), 2);
    assert_eq!(hook[1]["event"]["reason"], "signature by an unknown key");

    // Another stack has its own state.
    n.emit(blocked("web", "1.4.0 has not passed staging"));
    flushed(&n).await;
    assert_eq!(rx.on("hook").len(), 3);

    // A restarted daemon remembers what it sent.
    drop(n);
    let state = root.path().join("releases/.stackpin/notify/api.json");
    assert!(state.is_file(), "no state file {}", state.display());
    let n = notifier(&rx, root.path(), fast());
    n.emit(blocked("api", "signature by an unknown key"));
    n.emit(blocked("web", "1.4.0 has not passed staging"));
    flushed(&n).await;
    assert_eq!(rx.on("hook").len(), 3, "{:?}", rx.on("hook"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_is_news_only_as_a_recovery() {
    let rx = Receiver::start(Behaviour::Answer(&[]));
    let root = tempfile::tempdir().unwrap();
    let n = notifier(&rx, root.path(), fast());
    n.emit(deployed("api"));
    n.emit(Event::Recovered {
        stack: "api".into(),
        environment: "production".into(),
        version: "1.4.1".into(),
        note: "finished an interrupted converge".into(),
    });
    flushed(&n).await;
    assert!(rx.requests().is_empty(), "{:?}", rx.requests());

    n.emit(failed("api"));
    n.emit(failed("api"));
    n.emit(deployed("api"));
    n.emit(deployed("api"));
    flushed(&n).await;
    let hook = rx.on("hook");
    let kinds: Vec<&str> = hook
        .iter()
        .map(|p| p["event"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["deploy_failed", "deployed"]);
    assert_eq!(hook[1]["recovered"], true);
    let slack = rx.on("slack");
    assert_eq!(slack.len(), 2);
    let text = slack[1]["text"].as_str().unwrap();
    assert!(
        text.contains("recovered: api (production): 1.4.1 deployed"),
        "{text}"
    );

    // The same failure after a recovery is news again.
    n.emit(failed("api"));
    flushed(&n).await;
    assert_eq!(rx.on("hook").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_retried_with_backoff() {
    let rx = Receiver::start(Behaviour::Answer(&[500, 503]));
    let root = tempfile::tempdir().unwrap();
    logs();
    let n = Notifier::new(
        vec![Target::webhook(&rx.url("hook")).unwrap()],
        "test-host",
        root.path(),
        Options {
            first_backoff: Duration::from_millis(100),
            ..Options::default()
        },
    )
    .unwrap();
    let t = Instant::now();
    n.emit(failed("api"));
    flushed(&n).await;
    let hook = rx.on("hook");
    assert_eq!(hook.len(), 3, "two failures, then the delivery");
    assert!(hook.iter().all(|p| p["event"]["kind"] == "deploy_failed"));
    // 100 ms after the first failure, 200 ms after the second.
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_never_waits_for_a_hung_or_dead_endpoint() {
    let hung = Receiver::start(Behaviour::Hang);
    let root = tempfile::tempdir().unwrap();
    logs();
    let dead = dead_port();
    let n = Notifier::new(
        vec![
            Target::slack(&hung.url("slack")).unwrap(),
            Target::webhook(&format!("http://127.0.0.1:{}/hook/{SECRET}", dead.port)).unwrap(),
        ],
        "test-host",
        root.path(),
        Options {
            timeout: Duration::from_secs(5),
            ..Options::default()
        },
    )
    .unwrap();
    // A converge emits a handful of events; none of them may wait.
    for i in 0..20 {
        let t = Instant::now();
        n.emit(blocked("api", &format!("reason {i}")));
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "emit took {:?}",
            t.elapsed()
        );
    }
    // The deliveries are still going on in the background.
    assert!(!n.flush(Duration::from_millis(300)).await);
    // The hung endpoint did receive the first request: delivery started.
    let t = Instant::now();
    while hung.requests().is_empty() && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(hung.on("slack").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_does_not_block() {
    let hung = Receiver::start(Behaviour::Hang);
    let root = tempfile::tempdir().unwrap();
    logs();
    let n = Notifier::new(
        vec![Target::webhook(&hung.url("hook")).unwrap()],
        "test-host",
        root.path(),
        Options {
            queue: 1,
            ..Options::default()
        },
    )
    .unwrap();
    // The first event is taken by the worker, whose delivery hangs (wait
    // until its request arrived: on a busy machine the worker may start
    // after the next emits, and then a later event would be the one queued).
    n.emit(blocked("api", "reason 0"));
    let t = Instant::now();
    while hung.requests().is_empty() && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        hung.requests().len(),
        1,
        "the worker never took the first event"
    );
    // One more fits the queue; the other three are dropped, at once.
    let t = Instant::now();
    for i in 1..5 {
        n.emit(blocked("api", &format!("reason {i}")));
    }
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(n.dropped(), 3);
    // A dropped event is not remembered as sent: it goes out next time.
    let st = n.state("api").unwrap();
    assert_ne!(
        st.last.get("blocked").map(String::as_str),
        Some("1.4.0\nreason 4")
    );
    assert!(log_text().contains("notification dropped: the notification queue is full"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_urls_never_reach_logs_or_errors() {
    let logs = logs();
    // Refused (dead port), 404 (permanent) and 500 (retried, then given up).
    let refusing = Receiver::start(Behaviour::Answer(&[404]));
    let failing = Receiver::start(Behaviour::Answer(&[500, 500, 500]));
    let root = tempfile::tempdir().unwrap();
    let dead = dead_port();
    let n = Notifier::new(
        vec![
            Target::webhook(&format!("http://127.0.0.1:{}/hook/{SECRET}", dead.port)).unwrap(),
            Target::webhook(&refusing.url("hook")).unwrap(),
            Target::slack(&failing.url("slack")).unwrap(),
        ],
        "test-host",
        root.path(),
        Options {
            tries: 3,
            first_backoff: Duration::from_millis(20),
            ..Options::default()
        },
    )
    .unwrap();
    assert!(!format!("{n:?}").contains("SECRET"));
    n.emit(failed("secret-test"));
    flushed(&n).await;
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        text.contains("failed to deliver a notification: could not connect"),
        "{text}"
    );
    assert!(
        text.contains("failed to deliver a notification: the endpoint answered 404"),
        "{text}"
    );
    assert!(
        text.contains("failed to deliver a notification: the endpoint answered 500"),
        "{text}"
    );
    assert!(
        !text.contains("SECRET"),
        "a webhook URL was logged:\n{text}"
    );

    // Errors from the config name the file, never its content.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("slack-url");
    std::fs::write(&bad, format!("htp:/not-a-url/{SECRET}\n")).unwrap();
    let cfg_file = dir.path().join("config.yaml");
    common::write_config(
        &cfg_file,
        format!("notify: {{slack_url_file: {}}}\n", bad.display()),
    )
    .unwrap();
    let cfg = config_from(&cfg_file, dir.path());
    let err = Notifier::from_config(&cfg, "h", dir.path()).unwrap_err();
    let msg = format!("{err:#} {err:?}");
    assert!(msg.contains("notify.slack_url_file"), "{msg}");
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
    assert!(!msg.contains("SECRET"), "{msg}");

    // A good file; and no notify section means no notifier.
    std::fs::write(&bad, format!("{}\n", failing.url("slack"))).unwrap();
    assert!(
        Notifier::from_config(&cfg, "h", dir.path())
            .unwrap()
            .is_some()
    );
    common::write_config(&cfg_file, "host: h\n").unwrap();
    let cfg = config_from(&cfg_file, dir.path());
    assert!(
        Notifier::from_config(&cfg, "h", dir.path())
            .unwrap()
            .is_none()
    );
}

/// The effective config of `stackpin --config FILE --root ROOT`.
fn config_from(file: &Path, root: &Path) -> stackpin::config::Config {
    use clap::Parser;
    let cli = stackpin::cli::Cli::try_parse_from([
        "stackpin".as_ref(),
        "--config".as_ref(),
        file.as_os_str(),
        "--root".as_ref(),
        root.as_os_str(),
        "status".as_ref(),
    ])
    .unwrap();
    stackpin::cli::setup::config(&cli.global).unwrap()
}

#[test]
fn state_dir_is_under_the_hosts_records() {
    assert_eq!(
        notify::state_dir(Path::new("/srv")),
        Path::new("/srv/releases/.stackpin/notify")
    );
}

/// The real pipeline: `stackpin sync` of a broken image reverts, and the
/// receiver hears of it — once, also across the next (quarantined) sync.
#[test]
fn sync_of_a_broken_image_notifies_the_rollback_once() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let rx = Receiver::start(Behaviour::Answer(&[]));
    let slack_file = h.tmp().join("slack-url");
    let hook_file = h.tmp().join("hook-url");
    std::fs::write(&slack_file, rx.url("slack")).unwrap();
    std::fs::write(&hook_file, rx.url("hook")).unwrap();
    let cfg = h.tmp().join("config.yaml");
    common::write_config(
        &cfg,
        format!(
            "notify: {{slack_url_file: {}, webhook_url_file: {}}}\n",
            slack_file.display(),
            hook_file.display()
        ),
    )
    .unwrap();
    let s = h.stack("app");
    let port = h.free_port();
    let write_stack = |image: &str, version: &str| {
        h.write(
            format!("stacks/{s}/stack.yaml"),
            format!(
                "environment: test\nversion: {version}\nimages:\n  web: {image}\nenv:\n  PORT: \"{port}\"\nsmoke:\n  timeout: 10s\n  checks:\n    - http: {{url: \"http://127.0.0.1:{port}/health\", expect_status: 200}}\n"
            ),
        );
        h.write(
            format!("stacks/{s}/compose.yaml"),
            "services:\n  web:\n    image: stackpin-test/app\n    network_mode: host\n    stop_grace_period: 1s\n    environment:\n      PORT: ${PORT}\n",
        );
    };
    let sync = |code: i32| {
        let out = h
            .cmd(["--config".as_ref(), cfg.as_os_str(), "sync".as_ref()])
            .run();
        let out = out.code(code);
        assert!(!out.stderr().contains("SECRET"), "{}", out.stderr());
        assert!(!out.stdout().contains("SECRET"), "{}", out.stdout());
    };

    write_stack(&f.v2, "v2");
    h.commit("v2");
    sync(0);
    assert!(
        rx.requests().is_empty(),
        "a plain deploy is not news: {:?}",
        rx.requests()
    );

    write_stack(&f.broken, "v3-broken");
    h.commit("broken");
    sync(1);
    let kinds = |path: &str| -> Vec<String> {
        rx.on(path)
            .iter()
            .map(|p| p["event"]["kind"].as_str().unwrap_or("slack").to_string())
            .collect()
    };
    let hook = kinds("hook");
    assert!(hook.contains(&"rolled_back".to_string()), "{hook:?}");
    let rb = rx
        .on("hook")
        .into_iter()
        .find(|p| p["event"]["kind"] == "rolled_back")
        .unwrap();
    assert_eq!(rb["event"]["stack"], s.as_str());
    assert_eq!(rb["event"]["failed_version"], "v3-broken");
    assert_eq!(rb["event"]["version"], "v2");
    assert_eq!(rb["host"], "test-host");
    let slack = rx.on("slack");
    assert_eq!(slack.len(), hook.len());
    assert!(
        slack
            .iter()
            .any(|p| p["text"].as_str().unwrap().contains("rolled back to v2")),
        "{slack:?}"
    );

    // The next sync skips the quarantined release: nothing new to say.
    let before = rx.requests().len();
    sync(0);
    assert_eq!(rx.requests().len(), before, "{:?}", rx.requests());
}
