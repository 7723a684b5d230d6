//! Notifications (SPEC §6): a Slack-compatible incoming webhook and a generic
//! JSON webhook hear about failed deploys, rollbacks, quarantines, refusals by
//! the gate, break-glass deploys and recoveries.
//!
//! A person hears of a change once, not every loop (Flux `notify`): the
//! [`Notifier`] keeps, per stack, the last notified key of each kind of event
//! and whether the stack was last reported failing. [`decide`] — pure, tested
//! in memory — compares an event with that state: a repeated failure is
//! dropped, a success is sent only as a recovery after a failure. The state
//! is persisted under `<root>/releases/.stackpin/notify/<stack>.json`, so a
//! restarted daemon does not send everything again.
//!
//! Delivery never blocks a converge: [`EventSink::emit`] only decides and
//! puts a job on a bounded queue; a background task on the current tokio
//! runtime posts it, retrying with exponential backoff. A full queue drops
//! the event with a warning. One-shot commands call [`Notifier::flush`]
//! before they exit.
//!
//! The webhook URLs are secrets (a Slack URL is its own credential): they are
//! read from the `notify.*_url_file`s, never logged, and masked in every
//! error text.

use crate::config::Config;
use crate::events::{Event, EventSink};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What can go wrong setting up notifications. Delivery failures are not
/// errors: they are retried, then logged.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read {field} {}", path.display())]
    ReadUrl {
        field: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The content is a secret, so it is not quoted.
    #[error("{field} {} does not hold an http(s) URL: put the webhook URL, alone, in that file", path.display())]
    BadUrl { field: &'static str, path: PathBuf },
    #[error("the webhook URL is not an http(s) URL")]
    BadUrlValue,
    #[error("failed to build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("failed to start notifications: no tokio runtime")]
    NoRuntime,
}

/// How a target wants its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `{"text": "…"}` (Slack, Mattermost, Rocket.Chat, Discord's `/slack`).
    Slack,
    /// `{"event": {…}, "summary": "…", "host": "…", "at": "RFC3339"}`.
    Webhook,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Slack => "slack",
            Kind::Webhook => "webhook",
        }
    }
}

/// A webhook URL; its `Debug` and `Display` never show it.
#[derive(Clone)]
struct SecretUrl(reqwest::Url);

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl SecretUrl {
    /// `text` with the URL and its path and query (the secret parts)
    /// replaced.
    fn mask(&self, text: &str) -> String {
        let u = &self.0;
        let mut out = text.replace(u.as_str(), "<redacted>");
        out = out.replace(u.as_str().trim_end_matches('/'), "<redacted>");
        if u.path().len() > 1 {
            out = out.replace(u.path(), "/<redacted>");
        }
        if let Some(q) = u.query().filter(|q| !q.is_empty()) {
            out = out.replace(q, "<redacted>");
        }
        out
    }
}

/// One place notifications go.
#[derive(Debug, Clone)]
pub struct Target {
    kind: Kind,
    url: SecretUrl,
}

impl Target {
    /// A target from a URL. The error does not quote the URL.
    pub fn new(kind: Kind, url: &str) -> Result<Target, Error> {
        let url = reqwest::Url::parse(url.trim()).map_err(|_| Error::BadUrlValue)?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(Error::BadUrlValue);
        }
        Ok(Target {
            kind,
            url: SecretUrl(url),
        })
    }

    pub fn slack(url: &str) -> Result<Target, Error> {
        Target::new(Kind::Slack, url)
    }

    pub fn webhook(url: &str) -> Result<Target, Error> {
        Target::new(Kind::Webhook, url)
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Reads the URL from a secret file (`field` names the config key in
    /// errors).
    pub fn from_file(kind: Kind, field: &'static str, path: &Path) -> Result<Target, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadUrl {
            field,
            path: path.to_path_buf(),
            source,
        })?;
        Target::new(kind, &text).map_err(|_| Error::BadUrl {
            field,
            path: path.to_path_buf(),
        })
    }
}

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Jobs waiting for delivery; more are dropped with a warning.
    pub queue: usize,
    /// Attempts per target, the first included.
    pub tries: u32,
    /// The wait after the first failed attempt; doubled after each.
    pub first_backoff: Duration,
    /// Per request, connect included.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            queue: 64,
            tries: 5,
            first_backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What was last notified about one stack (persisted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyState {
    pub stack: String,
    /// The stack was last reported in trouble: its next success is sent as
    /// a recovery.
    #[serde(default)]
    pub failing: bool,
    /// Per event kind, the key of the last one sent.
    #[serde(default)]
    pub last: BTreeMap<String, String>,
    #[serde(default)]
    pub updated: Option<String>,
}

/// What to send for an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub summary: String,
    /// A success after a failure.
    pub recovered: bool,
}

/// The event kind (the serde tag) and what makes two events of that kind
/// the same news; None for the success kinds.
fn dedup_key(ev: &Event) -> (&'static str, Option<String>) {
    match ev {
        Event::DeployFailed {
            version, reason, ..
        } => ("deploy_failed", Some(format!("{version}\n{reason}"))),
        Event::RolledBack {
            failed_version,
            version,
            reason,
            ..
        } => (
            "rolled_back",
            Some(format!("{failed_version}\n{version}\n{reason}")),
        ),
        Event::Quarantined {
            version,
            fingerprint,
            ..
        } => ("quarantined", Some(format!("{version}\n{fingerprint}"))),
        Event::Blocked {
            version, reason, ..
        } => ("blocked", Some(format!("{version}\n{reason}"))),
        Event::BreakGlass {
            version, reason, ..
        } => ("break_glass", Some(format!("{version}\n{reason}"))),
        Event::Deployed { .. } => ("deployed", None),
        Event::Recovered { .. } => ("recovered", None),
    }
}

/// Decides whether `ev` is news given what was last notified, and the state
/// after it. Pure.
///
/// - A failure (failed deploy, rollback, quarantine, refusal) or a
///   break-glass deploy is sent unless the last one of its kind was the same
///   (same version and reason or fingerprint): a stack blocked for one reason
///   is reported once, and again when the reason changes.
/// - `Deployed` and `Recovered` are sent, as a recovery, only when the stack
///   was last reported failing. Either clears the remembered keys, so the
///   same failure after a recovery is news again.
pub fn decide(state: &NotifyState, ev: &Event) -> (Option<Notice>, NotifyState) {
    let mut next = state.clone();
    next.stack = ev.stack().to_string();
    let (kind, key) = dedup_key(ev);
    match key {
        Some(key) => {
            if state.last.get(kind) == Some(&key) {
                return (None, next);
            }
            next.last.insert(kind.to_string(), key);
            if ev.is_failure() {
                next.failing = true;
            }
            let notice = Notice {
                summary: ev.summary(),
                recovered: false,
            };
            (Some(notice), next)
        }
        None => {
            next.last.clear();
            next.failing = false;
            if !state.failing {
                return (None, next);
            }
            let summary = match ev {
                Event::Deployed { .. } => format!("recovered: {}", ev.summary()),
                _ => ev.summary(),
            };
            (
                Some(Notice {
                    summary,
                    recovered: true,
                }),
                next,
            )
        }
    }
}

/// The Slack message body.
pub fn slack_payload(host: &str, ev: &Event, notice: &Notice) -> serde_json::Value {
    let icon = if notice.recovered {
        ":white_check_mark:"
    } else if ev.is_failure() {
        ":red_circle:"
    } else {
        ":warning:"
    };
    json!({ "text": format!("{icon} [{host}] {}", notice.summary) })
}

/// The generic webhook body.
pub fn webhook_payload(
    host: &str,
    ev: &Event,
    notice: &Notice,
    at: chrono::DateTime<chrono::Utc>,
) -> serde_json::Value {
    json!({
        "event": ev,
        "summary": notice.summary,
        "recovered": notice.recovered,
        "host": host,
        "at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// One unit of work for the delivery task: persist the stack's new state,
/// then post the payloads (if any).
struct Job {
    state: NotifyState,
    event: Option<(String, Event, Notice)>,
}

/// Sends [`Event`]s to the configured targets, once per change.
///
/// Cheap to clone: clones share the state, the queue and the delivery task.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    host: String,
    states: Mutex<BTreeMap<String, NotifyState>>,
    tx: mpsc::Sender<Job>,
    /// Jobs queued or being delivered.
    pending: Arc<watch::Sender<usize>>,
    dropped: AtomicU64,
    targets: Vec<Kind>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("host", &self.inner.host)
            .field("targets", &self.inner.targets)
            .finish_non_exhaustive()
    }
}

/// The directory of the persisted per-stack states.
pub fn state_dir(root: &Path) -> PathBuf {
    root.join("releases").join(".stackpin").join("notify")
}

/// A file name for a stack name (stack names are directory names already;
/// anything else is hex-escaped so no name can leave the directory).
fn state_file(dir: &Path, stack: &str) -> PathBuf {
    let mut name = String::with_capacity(stack.len() + 5);
    for b in stack.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && !name.is_empty()) {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02x}"));
        }
    }
    name.push_str(".json");
    dir.join(name)
}

fn load_states(dir: &Path) -> BTreeMap<String, NotifyState> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        match std::fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<NotifyState>(&b).map_err(|e| e.to_string()))
        {
            Ok(s) if !s.stack.is_empty() => {
                out.insert(s.stack.clone(), s);
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(path = %p.display(), "ignoring an unreadable notification state: {err}");
            }
        }
    }
    out
}

impl Notifier {
    /// The notifier of the config's `notify:` section, or None when no
    /// target is configured. Reads the URL files now, so a bad file fails
    /// the start, not the first failure.
    ///
    /// # Errors
    /// A URL file that cannot be read or holds no http(s) URL (the error
    /// names the file, not its content); no current tokio runtime.
    pub fn from_config(cfg: &Config, host: &str, root: &Path) -> Result<Option<Notifier>, Error> {
        let Some(n) = &cfg.file.notify else {
            return Ok(None);
        };
        let mut targets = Vec::new();
        if let Some(p) = &n.slack_url_file {
            targets.push(Target::from_file(Kind::Slack, "notify.slack_url_file", p)?);
        }
        if let Some(p) = &n.webhook_url_file {
            targets.push(Target::from_file(
                Kind::Webhook,
                "notify.webhook_url_file",
                p,
            )?);
        }
        if targets.is_empty() {
            return Ok(None);
        }
        Ok(Some(Notifier::new(
            targets,
            host,
            root,
            Options::default(),
        )?))
    }

    /// A notifier posting to `targets`, its state under [`state_dir`]`(root)`,
    /// its delivery task spawned on the current tokio runtime (which must be
    /// running for as long as notifications should go out).
    ///
    /// # Errors
    /// No current runtime; the HTTP client cannot be built.
    pub fn new(
        targets: Vec<Target>,
        host: &str,
        root: &Path,
        opts: Options,
    ) -> Result<Notifier, Error> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout)
            .user_agent(concat!("stackpin/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Client)?;
        let dir = state_dir(root);
        let (tx, rx) = mpsc::channel(opts.queue.max(1));
        let pending = Arc::new(watch::Sender::new(0usize));
        let kinds = targets.iter().map(|t| t.kind).collect();
        rt.spawn(deliver_loop(
            rx,
            Worker {
                client,
                targets,
                dir: dir.clone(),
                opts,
                pending: pending.clone(),
            },
        ));
        Ok(Notifier {
            inner: Arc::new(Inner {
                host: host.to_string(),
                states: Mutex::new(load_states(&dir)),
                tx,
                pending,
                dropped: AtomicU64::new(0),
                targets: kinds,
            }),
        })
    }

    /// Waits until every queued notification was delivered or given up, at
    /// most `timeout`. Returns whether the queue is empty. Idempotent.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.pending.subscribe();
        let done = tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0)).await;
        let ok = matches!(done, Ok(Ok(_)));
        if !ok {
            let n = *self.inner.pending.borrow();
            tracing::warn!(
                pending = n,
                "notifications not delivered within {timeout:?}; giving up on them"
            );
        }
        ok
    }

    /// Notifications dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// The last notified state of `stack`, as the next event will see it.
    pub fn state(&self, stack: &str) -> Option<NotifyState> {
        self.inner
            .states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(stack)
            .cloned()
    }
}

impl EventSink for Notifier {
    /// Decides and enqueues; never waits on the network or the queue.
    fn emit(&self, event: Event) {
        let stack = event.stack().to_string();
        let mut states = self
            .inner
            .states
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let prev = states.get(&stack).cloned().unwrap_or_default();
        let (notice, mut next) = decide(&prev, &event);
        if notice.is_none() && next.failing == prev.failing && next.last == prev.last {
            return;
        }
        next.updated = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        let summary = notice.as_ref().map(|n| n.summary.clone());
        let job = Job {
            state: next.clone(),
            event: notice.map(|n| (self.inner.host.clone(), event, n)),
        };
        // Counted before sending so that `flush` cannot miss it.
        self.inner.pending.send_modify(|n| *n += 1);
        match self.inner.tx.try_send(job) {
            Ok(()) => {
                states.insert(stack, next);
            }
            Err(e) => {
                self.inner.pending.send_modify(|n| *n -= 1);
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "the notification queue is full",
                    mpsc::error::TrySendError::Closed(_) => "the notification task stopped",
                };
                // The state stays as it was, so the next occurrence is sent.
                tracing::warn!(stack = %stack, summary = ?summary, "notification dropped: {why}");
            }
        }
    }
}

struct Worker {
    client: reqwest::Client,
    targets: Vec<Target>,
    dir: PathBuf,
    opts: Options,
    pending: Arc<watch::Sender<usize>>,
}

async fn deliver_loop(mut rx: mpsc::Receiver<Job>, w: Worker) {
    while let Some(job) = rx.recv().await {
        w.persist(&job.state).await;
        if let Some((host, ev, notice)) = &job.event {
            let at = chrono::Utc::now();
            let sends = w.targets.iter().map(|t| {
                let body = match t.kind {
                    Kind::Slack => slack_payload(host, ev, notice),
                    Kind::Webhook => webhook_payload(host, ev, notice, at),
                };
                w.deliver(t, body, ev.stack())
            });
            futures_util::future::join_all(sends).await;
        }
        w.pending.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Worker {
    async fn persist(&self, state: &NotifyState) {
        let path = state_file(&self.dir, &state.stack);
        let bytes = match serde_json::to_vec_pretty(state) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(stack = %state.stack, "failed to encode the notification state: {e}");
                return;
            }
        };
        let p = path.clone();
        let r = tokio::task::spawn_blocking(move || crate::fsutil::write_atomic(&p, &bytes, 0o644))
            .await;
        if let Ok(Err(e)) | Err(e) = r.map_err(std::io::Error::other) {
            // A lost state only means a repeat notification after a restart.
            tracing::warn!(path = %path.display(), "failed to record the notification state: {e}");
        }
    }

    /// Posts `body` to `t`, retrying transient failures (network, timeout,
    /// 408, 429, 5xx) with exponential backoff. Gives up after
    /// `opts.tries` or on another 4xx (the URL is wrong: retrying won't help).
    async fn deliver(&self, t: &Target, body: serde_json::Value, stack: &str) {
        let mut wait = self.opts.first_backoff;
        let tries = self.opts.tries.max(1);
        let mut last = String::new();
        for attempt in 1..=tries {
            let r = self.client.post(t.url.0.clone()).json(&body).send().await;
            match r {
                Ok(resp) if resp.status().is_success() => {
                    tracing::debug!(
                        target_kind = t.kind.as_str(),
                        stack,
                        attempt,
                        "notification delivered"
                    );
                    return;
                }
                Ok(resp) => {
                    let s = resp.status();
                    last = format!("the endpoint answered {s}");
                    if s.is_client_error()
                        && s != reqwest::StatusCode::TOO_MANY_REQUESTS
                        && s != reqwest::StatusCode::REQUEST_TIMEOUT
                    {
                        break;
                    }
                }
                Err(e) => last = describe(&t.url, e),
            }
            if attempt < tries {
                tracing::debug!(target_kind = t.kind.as_str(), stack, attempt, retry_in = ?wait, "notification not delivered: {last}");
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
        tracing::warn!(
            target_kind = t.kind.as_str(),
            stack,
            "failed to deliver a notification: {last}"
        );
    }
}

/// A reqwest error as text without the URL, its causes included.
fn describe(url: &SecretUrl, e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let e = e.without_url();
    let mut text = format!("{kind}: {e}");
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        text.push_str(&format!(": {s}"));
        src = s.source();
    }
    url.mask(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(reason: &str) -> Event {
        Event::Blocked {
            stack: "web".into(),
            environment: "production".into(),
            version: "1.2".into(),
            reason: reason.into(),
        }
    }

    fn deployed() -> Event {
        Event::Deployed {
            stack: "web".into(),
            environment: "production".into(),
            version: "1.2".into(),
        }
    }

    /// Feeds events through `decide`, returning the summaries sent.
    fn run(events: &[Event]) -> Vec<String> {
        let mut st = NotifyState::default();
        let mut sent = Vec::new();
        for e in events {
            let (n, next) = decide(&st, e);
            sent.extend(n.map(|n| n.summary));
            st = next;
        }
        sent
    }

    #[test]
    fn once_per_change() {
        let rb = Event::RolledBack {
            stack: "web".into(),
            environment: "production".into(),
            failed_version: "1.3".into(),
            version: "1.2".into(),
            reason: "smoke failed".into(),
        };
        let q = Event::Quarantined {
            stack: "web".into(),
            environment: "production".into(),
            version: "1.3".into(),
            fingerprint: "abcdef0123456789".into(),
        };
        let table: Vec<(Vec<Event>, usize)> = vec![
            (vec![blocked("a")], 1),
            (vec![blocked("a"), blocked("a"), blocked("a")], 1),
            (vec![blocked("a"), blocked("b")], 2),
            (vec![blocked("a"), blocked("b"), blocked("a")], 3),
            (vec![deployed()], 0),
            (vec![deployed(), deployed()], 0),
            (vec![blocked("a"), deployed()], 2),
            (vec![blocked("a"), deployed(), deployed()], 2),
            (vec![blocked("a"), deployed(), blocked("a")], 3),
            // A converge that reverts reports both; a repeat reports neither.
            (vec![q.clone(), rb.clone(), q.clone(), rb.clone()], 2),
        ];
        for (events, n) in table {
            assert_eq!(run(&events).len(), n, "{events:?}");
        }
        let sent = run(&[blocked("a"), deployed()]);
        assert!(
            sent[1].starts_with("recovered: web (production)"),
            "{sent:?}"
        );
    }

    #[test]
    fn break_glass_is_sent_each_deploy_and_does_not_mark_failing() {
        let bg = Event::BreakGlass {
            stack: "web".into(),
            environment: "production".into(),
            version: "1.2".into(),
            reason: "INC-1".into(),
        };
        assert_eq!(
            run(&[bg.clone(), deployed(), bg.clone(), deployed()]).len(),
            2
        );
        let (_, st) = decide(&NotifyState::default(), &bg);
        assert!(!st.failing);
    }

    #[test]
    fn recovered_only_after_failure() {
        let rec = Event::Recovered {
            stack: "web".into(),
            environment: "production".into(),
            version: "1.2".into(),
            note: "finished an interrupted converge".into(),
        };
        assert!(run(std::slice::from_ref(&rec)).is_empty());
        let sent = run(&[blocked("a"), rec]);
        assert_eq!(sent.len(), 2);
        assert!(sent[1].contains("recovered on 1.2"), "{sent:?}");
    }

    #[test]
    fn state_files_stay_in_their_directory() {
        let d = Path::new("/x");
        assert_eq!(state_file(d, "web-1_a.b"), Path::new("/x/web-1_a.b.json"));
        assert_eq!(state_file(d, "../e"), Path::new("/x/%2e.%2fe.json"));
        assert_eq!(state_file(d, ".."), Path::new("/x/%2e..json"));
    }

    #[test]
    fn masks_the_url() {
        let t = Target::slack("https://hooks.example/services/T0/B0/SECRET?k=QS").unwrap();
        let m = t.url.mask(
            "error for https://hooks.example/services/T0/B0/SECRET?k=QS and /services/T0/B0/SECRET k=QS",
        );
        assert!(!m.contains("SECRET") && !m.contains("QS"), "{m}");
        assert!(!format!("{t:?}").contains("SECRET"));
        assert!(matches!(
            Target::slack("not a url"),
            Err(Error::BadUrlValue)
        ));
        assert!(matches!(
            Target::slack("ftp://x/y"),
            Err(Error::BadUrlValue)
        ));
    }
}
