//! The daemon's HTTP face (SPEC §5, §6): the GitHub push webhook that
//! triggers a sync at once, health and readiness probes, Prometheus metrics
//! and a read-only JSON API over status and history, with the same data
//! as an HTML status page at `/` (see [`crate::page`]).
//!
//! The server decides nothing about the host: it reads a [`Snapshot`] the
//! reconciler publishes, and asks for a run by sending a [`Trigger`] on a
//! bounded channel. A full channel means a run is already queued, so further
//! deliveries coalesce into it and the sender never waits.
//!
//! Webhook bodies are authenticated (HMAC-SHA256 over the raw bytes,
//! compared in constant time) before anything in them is parsed. Neither
//! bodies nor signature headers are ever logged.

use crate::metrics::{self, Metrics};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::mpsc::{self, error::TrySendError};

/// Why a sync run was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Trigger {
    Poll,
    Webhook,
    Watch,
    Operator,
    Drift,
}

pub use crate::status::Snapshot;

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Asks for a run; `try_send` only, a full channel is a queued run.
    pub trigger: mpsc::Sender<Trigger>,
    /// None: `/hooks/github` answers 404.
    pub webhook_secret: Option<Arc<Vec<u8>>>,
    /// The tracked branch (without `refs/heads/`).
    pub branch: String,
    pub snapshot: Arc<RwLock<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub history_path: PathBuf,
    /// `/readyz` fails when the last successful fetch is older than this.
    pub ready_max_age: Duration,
    /// The webhook deliveries seen lately: a replay is not acted on.
    pub deliveries: Arc<std::sync::Mutex<Deliveries>>,
}

/// How long a webhook delivery id is remembered.
pub const DELIVERY_MEMORY: Duration = Duration::from_secs(3600);
/// How many delivery ids are remembered at most (the oldest go first).
pub const DELIVERY_CAP: usize = 4096;

/// The `X-GitHub-Delivery` ids of recent signed deliveries, so that the
/// same signed request sent again (a replay) is answered without acting.
#[derive(Debug, Default)]
pub struct Deliveries {
    seen: std::collections::VecDeque<(String, std::time::Instant)>,
}

impl Deliveries {
    /// Whether `id` was not seen in the last [`DELIVERY_MEMORY`]; remembers
    /// it. Pure but for `now`.
    pub fn first_time(&mut self, id: &str, now: std::time::Instant) -> bool {
        while self
            .seen
            .front()
            .is_some_and(|(_, t)| now.saturating_duration_since(*t) > DELIVERY_MEMORY)
            || self.seen.len() >= DELIVERY_CAP
        {
            self.seen.pop_front();
        }
        if self.seen.iter().any(|(d, _)| d == id) {
            return false;
        }
        self.seen.push_back((id.to_string(), now));
        true
    }
}

/// The largest webhook body accepted; GitHub caps payloads at 25 MB but a
/// push payload is far below this, and bigger ones are answered 413.
pub const MAX_WEBHOOK_BYTES: usize = 1 << 20;

/// The default and the largest `limit` of `/api/v1/history`.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;
pub const MAX_HISTORY_LIMIT: usize = 10_000;

/// The routes of SPEC §6 over `state`.
pub fn router(state: AppState) -> Router {
    let hook = if state.webhook_secret.is_some() {
        post(github_hook)
    } else {
        // Answered before the body is read.
        post(|| async { (StatusCode::NOT_FOUND, "webhook not configured\n") })
    };
    Router::new()
        .route(
            "/hooks/github",
            hook.layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES)),
        )
        .route("/", get(status_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
        .route("/api/v1/stacks", get(stacks))
        .route("/api/v1/history", get(history))
        .route("/api/v1/openapi.json", get(openapi))
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` completes, then lets
/// requests in flight finish.
///
/// # Errors
/// Only what accepting on the listener returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "http server listening");
    }
    let app = router(state).layer(axum::middleware::from_fn(request_deadline));
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // At most MAX_CONNECTIONS at once: the others wait in the backlog.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors (EMFILE) and the like:
                    // retrying at once would spin.
                    tracing::warn!("http server: accept failed: {e}; pausing");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            // Also the most an idle keep-alive connection is kept.
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!("http connection: {e}");
            }
        });
    }
    drop(listener);
    // Requests in flight finish (each is bounded by REQUEST_TIMEOUT).
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, graceful.shutdown()).await;
    Ok(())
}

/// Connections the HTTP server serves at once; more wait in the backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a client has to send a request's headers (from its first byte,
/// or from the end of the previous request on a kept-alive connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a request may take, its body read included (a webhook sent a
/// byte at a time is cut off here); the answer is 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head (start line and headers).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long the server waits after a failed accept before it accepts again.
pub const ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// Answers 408 when a request (its body read included) takes longer than
/// [`REQUEST_TIMEOUT`].
async fn request_deadline(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request took longer than {}s\n",
                REQUEST_TIMEOUT.as_secs()
            ),
        )
            .into_response(),
    }
}

/// Whether `header` (`sha256=<hex>`, GitHub's `X-Hub-Signature-256`) is the
/// HMAC-SHA256 of `body` under `secret`. The digest comparison is constant
/// time. A malformed header or an empty secret (anyone could sign) is false.
pub fn verify_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    if secret.is_empty() {
        return false;
    }
    let Some(sig) = header
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    // `verify_slice` compares in constant time and rejects other lengths.
    mac.verify_slice(&sig).is_ok()
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response {
    (status, axum::Json(value)).into_response()
}

/// A header's value, when present and visible ASCII.
fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[derive(Deserialize)]
struct PushEvent {
    #[serde(rename = "ref")]
    git_ref: String,
}

#[derive(Deserialize)]
struct PingEvent {
    #[serde(default)]
    zen: Option<String>,
}

async fn github_hook(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let m = &st.metrics;
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            m.webhook("too_large");
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("payload larger than {MAX_WEBHOOK_BYTES} bytes\n"),
            )
                .into_response();
        }
        Err(e) => {
            m.webhook("bad_request");
            return (e.status(), "failed to read the request body\n").into_response();
        }
    };
    let secret = st.webhook_secret.as_deref().map_or(&[][..], |s| &s[..]);
    let signed = header_str(&headers, "x-hub-signature-256")
        .is_some_and(|sig| verify_signature(secret, &body, sig));
    if !signed {
        m.webhook("unauthorized");
        tracing::warn!("webhook rejected: missing or bad X-Hub-Signature-256");
        return (StatusCode::UNAUTHORIZED, "bad or missing signature\n").into_response();
    }
    // Authenticated from here on; still only short, printable header values
    // reach the log.
    let delivery: String = header_str(&headers, "x-github-delivery")
        .unwrap_or("-")
        .chars()
        .take(64)
        .collect();
    let event = header_str(&headers, "x-github-event").unwrap_or("");
    if delivery != "-" {
        let first = st
            .deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first_time(&delivery, std::time::Instant::now());
        if !first {
            m.webhook("replay");
            tracing::warn!(delivery = %delivery, "webhook replay: this delivery was already received; not acted on");
            return json_response(
                StatusCode::OK,
                json!({"accepted": false, "ignored": "replay: this delivery was already received"}),
            );
        }
    }
    match event {
        "ping" => match serde_json::from_slice::<PingEvent>(&body) {
            Ok(p) => {
                m.webhook("ping");
                tracing::info!(delivery = %delivery, "webhook ping");
                json_response(StatusCode::OK, json!({"ok": true, "zen": p.zen}))
            }
            Err(e) => bad_request(m, &delivery, &e),
        },
        "push" => {
            let push = match serde_json::from_slice::<PushEvent>(&body) {
                Ok(p) => p,
                Err(e) => return bad_request(m, &delivery, &e),
            };
            let wanted = format!("refs/heads/{}", st.branch);
            if push.git_ref != wanted {
                m.webhook("ignored");
                let why = format!("push to {}, tracking {wanted}", push.git_ref);
                tracing::info!(delivery = %delivery, "webhook ignored: {why}");
                return json_response(
                    StatusCode::ACCEPTED,
                    json!({"accepted": false, "ignored": why}),
                );
            }
            match st.trigger.try_send(Trigger::Webhook) {
                Ok(()) => {
                    tracing::info!(delivery = %delivery, branch = %st.branch, "webhook push: sync queued");
                }
                Err(TrySendError::Full(_)) => {
                    tracing::debug!(delivery = %delivery, "webhook push: a sync is already queued");
                }
                Err(TrySendError::Closed(_)) => {
                    m.webhook("unavailable");
                    tracing::error!(delivery = %delivery, "webhook push: the reconciler is not running");
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the reconciler is not running\n",
                    )
                        .into_response();
                }
            }
            m.webhook("accepted");
            json_response(StatusCode::ACCEPTED, json!({"accepted": true}))
        }
        "" => {
            m.webhook("bad_request");
            (StatusCode::BAD_REQUEST, "missing X-GitHub-Event\n").into_response()
        }
        other => {
            m.webhook("ignored");
            let why = format!("event {other:?} is not handled");
            tracing::info!(delivery = %delivery, "webhook ignored: {why}");
            json_response(
                StatusCode::ACCEPTED,
                json!({"accepted": false, "ignored": why}),
            )
        }
    }
}

fn bad_request(m: &Metrics, delivery: &str, e: &serde_json::Error) -> Response {
    m.webhook("bad_request");
    // The serde error names a position and an expectation, not the content.
    tracing::warn!(delivery = %delivery, "webhook body is not the expected JSON: {e}");
    (
        StatusCode::BAD_REQUEST,
        format!("body is not the expected JSON: {e}\n"),
    )
        .into_response()
}

/// Why the daemon is not ready, or None when it is. Pure, for tests.
pub fn not_ready_reason(snap: &Snapshot, max_age: Duration, now: DateTime<Utc>) -> Option<String> {
    let failed = snap
        .last_fetch_error
        .as_deref()
        .map(|e| format!("last fetch failed: {}", one_line(e)));
    let Some(ok) = snap.last_fetch_ok else {
        return Some(match failed {
            Some(f) => format!("never fetched successfully; {f}"),
            None => "never fetched".to_string(),
        });
    };
    // A fetch time in the future (clock step) counts as fresh.
    let age = (now - ok).to_std().unwrap_or(Duration::ZERO);
    if age <= max_age {
        return None;
    }
    let stale = format!(
        "stale since {} ({}s ago, limit {}s)",
        ok.format("%Y-%m-%dT%H:%M:%SZ"),
        age.as_secs(),
        max_age.as_secs()
    );
    Some(match failed {
        Some(f) => format!("{f}; {stale}"),
        None => stale,
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn read_snapshot(st: &AppState) -> Snapshot {
    st.snapshot
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

async fn readyz(State(st): State<AppState>) -> Response {
    let reason = {
        let snap = st.snapshot.read().unwrap_or_else(PoisonError::into_inner);
        not_ready_reason(&snap, st.ready_max_age, Utc::now())
    };
    match reason {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(r) => (StatusCode::SERVICE_UNAVAILABLE, format!("{r}\n")).into_response(),
    }
}

/// OpenMetrics when the scraper asks for it, else the classic text format.
async fn metrics_page(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if metrics::wants_openmetrics(accept) {
        (
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            st.metrics.encode(),
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, metrics::CLASSIC_CONTENT_TYPE)],
            st.metrics.encode_classic(),
        )
            .into_response()
    }
}

/// The OpenAPI document of the routes above (a test keeps it true: the
/// enums against the types, the answers against schemathesis).
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn stacks(State(st): State<AppState>) -> Response {
    axum::Json(read_snapshot(&st)).into_response()
}

#[derive(Deserialize)]
struct HistoryQuery {
    stack: Option<String>,
    /// Digits; read as text so that any number, however large, means "at
    /// most [`MAX_HISTORY_LIMIT`]" as documented.
    limit: Option<String>,
}

/// `limit` of `/api/v1/history`: the default when absent, any run of digits
/// capped at [`MAX_HISTORY_LIMIT`]; anything else is refused.
fn history_limit(limit: Option<&str>) -> Result<usize, String> {
    match limit {
        None => Ok(DEFAULT_HISTORY_LIMIT),
        Some(d) if !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) => Ok(d
            .parse::<usize>()
            .map_or(MAX_HISTORY_LIMIT, |n| n.min(MAX_HISTORY_LIMIT))),
        Some(other) => Err(format!(
            "limit must be a non-negative whole number, not {other:?}\n"
        )),
    }
}

async fn history(State(st): State<AppState>, Query(q): Query<HistoryQuery>) -> Response {
    let limit = match history_limit(q.limit.as_deref()) {
        Ok(n) => n,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let path = st.history_path.clone();
    let read = tokio::task::spawn_blocking(move || crate::history::read(&path)).await;
    let h = match read {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            tracing::error!(path = %st.history_path.display(), "failed to read history: {e}");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to read {}: {e}\n", st.history_path.display()),
            )
                .into_response();
        }
        Err(e) => {
            tracing::error!("history reader panicked: {e}");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed to read history\n",
            )
                .into_response();
        }
    };
    let mut entries: Vec<crate::history::Entry> = match &q.stack {
        Some(s) => h.entries.into_iter().filter(|e| &e.stack == s).collect(),
        None => h.entries,
    };
    let skip = entries.len().saturating_sub(limit);
    entries.drain(..skip);
    axum::Json(entries).into_response()
}

/// `GET /`: the page over the published snapshot and the audit log.
pub async fn status_page(State(st): State<AppState>) -> Response {
    let snap = st
        .snapshot
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let path = st.history_path.clone();
    let read = tokio::task::spawn_blocking(move || crate::history::read(&path)).await;
    let (entries, err) = match read {
        Ok(Ok(h)) => (h.entries, None),
        Ok(Err(e)) => {
            tracing::error!(path = %st.history_path.display(), "failed to read history: {e}");
            (
                Vec::new(),
                Some(format!("failed to read {}: {e}", st.history_path.display())),
            )
        }
        Err(e) => {
            tracing::error!("history reader panicked: {e}");
            (Vec::new(), Some("failed to read history".to_string()))
        }
    };
    let body = crate::page::render(&snap, &entries, err.as_deref(), Utc::now());
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; form-action 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    /// Every value of `T`'s JSON spelling, from an exhaustive list.
    fn spellings<T: Serialize>(all: &[T]) -> Vec<String> {
        all.iter()
            .map(|v| {
                serde_json::to_value(v)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn the_openapi_document_lists_every_state_and_reason_the_types_have() {
        use crate::outcome::{Reason, State};
        // No wildcard arm: a new reason fails to compile here until it is
        // listed, and then until the document lists it.
        let reason = |r: Reason| match r {
            Reason::InvalidSpec
            | Reason::PreflightFailed
            | Reason::BackupFailed
            | Reason::ReleaseFailed
            | Reason::PullFailed
            | Reason::JournalFailed
            | Reason::SwitchFailed
            | Reason::UpFailed
            | Reason::ReloadFailed
            | Reason::SmokeFailed
            | Reason::RecordFailed
            | Reason::RolledBack
            | Reason::RevertFailed
            | Reason::Unverified
            | Reason::Untrusted
            | Reason::Quarantined
            | Reason::Held
            | Reason::Interrupted
            | Reason::EngineUnavailable
            | Reason::LockFailed
            | Reason::StopFailed
            | Reason::RestoreFailed => r,
        };
        let reasons = [
            Reason::InvalidSpec,
            Reason::PreflightFailed,
            Reason::BackupFailed,
            Reason::ReleaseFailed,
            Reason::PullFailed,
            Reason::JournalFailed,
            Reason::SwitchFailed,
            Reason::UpFailed,
            Reason::ReloadFailed,
            Reason::SmokeFailed,
            Reason::RecordFailed,
            Reason::RolledBack,
            Reason::RevertFailed,
            Reason::Unverified,
            Reason::Untrusted,
            Reason::Quarantined,
            Reason::Held,
            Reason::Interrupted,
            Reason::EngineUnavailable,
            Reason::LockFailed,
            Reason::StopFailed,
            Reason::RestoreFailed,
        ]
        .map(reason);
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let listed = |name: &str| -> Vec<String> {
            doc["components"]["schemas"][name]["enum"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(listed("State"), spellings(&State::ALL));
        assert_eq!(
            listed("SyncStatus"),
            spellings(&crate::outcome::SyncStatus::ALL)
        );
        assert_eq!(listed("Health"), spellings(&crate::outcome::Health::ALL));
        assert_eq!(listed("Reason"), spellings(&reasons));

        // Every field a row and an entry serialize is described, and
        // required (the API always sends it, null or not).
        let row = serde_json::to_value(crate::status::StackStatus {
            stack: "s".into(),
            state: State::Converged,
            sync: Default::default(),
            health: Default::default(),
            version: None,
            release: None,
            digest: None,
            last_change: None,
            reason: String::new(),
            code: None,
            held: false,
            quarantined: false,
        })
        .unwrap();
        let snap = serde_json::to_value(crate::status::Snapshot::default()).unwrap();
        let entry = serde_json::to_value(crate::history::Entry::now(
            "s",
            "e",
            crate::history::Action::Deploy,
            "v",
            crate::history::Status::Success,
            "",
        ))
        .unwrap();
        for (schema, value) in [
            ("StackStatus", row),
            ("Snapshot", snap),
            ("HistoryEntry", entry),
        ] {
            let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
            let s = &doc["components"]["schemas"][schema];
            let mut required: Vec<&str> = s["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let mut props: Vec<&String> = s["properties"].as_object().unwrap().keys().collect();
            let mut keys_sorted = keys.clone();
            keys_sorted.sort();
            props.sort();
            required.sort_unstable();
            assert_eq!(props, keys_sorted, "{schema}: properties");
            assert_eq!(
                required,
                keys_sorted.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
                "{schema}: required"
            );
        }
    }

    #[test]
    fn github_test_vector() {
        // https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
        assert!(verify_signature(SECRET, BODY, SIG));
        assert!(verify_signature(
            SECRET,
            BODY,
            &SIG.to_uppercase().replace("SHA256=", "sha256=")
        ));
    }

    #[test]
    fn rejects_tampering_and_malformed_headers() {
        let mut body = BODY.to_vec();
        body[0] ^= 1;
        assert!(!verify_signature(SECRET, &body, SIG));
        assert!(!verify_signature(b"It's a secret to everybody", BODY, SIG));
        assert!(!verify_signature(b"", BODY, SIG));
        let hexsig = SIG.strip_prefix("sha256=").unwrap();
        let mut flipped = hexsig.to_string().into_bytes();
        flipped[63] = if flipped[63] == b'7' { b'8' } else { b'7' };
        let flipped = String::from_utf8(flipped).unwrap();
        for h in [
            hexsig.to_string(),
            format!("sha1={hexsig}"),
            format!("sha256={}", &hexsig[1..]),
            format!("sha256={}", &hexsig[..62]),
            format!("sha256={hexsig}00"),
            format!("sha256= {hexsig}"),
            format!("sha256={flipped}"),
            "sha256=".to_string(),
            "sha256=zz".to_string(),
            String::new(),
        ] {
            assert!(!verify_signature(SECRET, BODY, &h), "{h:?} verified");
        }
    }

    #[test]
    fn readiness_reasons() {
        let now = Utc::now();
        let max = Duration::from_secs(300);
        let mut s = Snapshot::default();
        assert_eq!(
            not_ready_reason(&s, max, now).as_deref(),
            Some("never fetched")
        );
        s.last_fetch_error = Some("remote\nunreachable".into());
        assert_eq!(
            not_ready_reason(&s, max, now).as_deref(),
            Some("never fetched successfully; last fetch failed: remote unreachable")
        );
        s.last_fetch_ok = Some(now - chrono::Duration::seconds(10));
        assert_eq!(not_ready_reason(&s, max, now), None);
        s.last_fetch_ok = Some(now + chrono::Duration::seconds(10));
        assert_eq!(not_ready_reason(&s, max, now), None);
        s.last_fetch_ok = Some(now - chrono::Duration::seconds(301));
        let r = not_ready_reason(&s, max, now).unwrap();
        assert!(
            r.starts_with("last fetch failed: remote unreachable; stale since "),
            "{r}"
        );
        s.last_fetch_error = None;
        let r = not_ready_reason(&s, max, now).unwrap();
        assert!(
            r.starts_with("stale since ") && r.contains("301s ago"),
            "{r}"
        );
    }
}
