//! Webhook body handling through the real axum router: arbitrary bodies,
//! event names and signatures (half of them validly signed, so the parsing
//! behind the signature check is reached) never panic and always get one of
//! the documented answers.
#![no_main]
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use stackpin::metrics::Metrics;
use stackpin::server::{self, AppState, Snapshot};
use std::sync::{Arc, OnceLock, RwLock};
use tower::ServiceExt;

const SECRET: &[u8] = b"fuzz-secret";

struct Env {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    _rx: tokio::sync::mpsc::Receiver<server::Trigger>,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let state = AppState {
            trigger: tx,
            webhook_secret: Some(Arc::new(SECRET.to_vec())),
            branch: "main".into(),
            snapshot: Arc::new(RwLock::new(Snapshot::default())),
            metrics: Arc::new(Metrics::new()),
            history_path: std::env::temp_dir().join("stackpin-fuzz-history.log"),
            ready_max_age: std::time::Duration::from_secs(60),
        };
        Env {
            rt,
            app: server::router(state),
            _rx: rx,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let event = ["push", "ping", "issues", "", "push\u{0}"][(flags & 7) as usize % 5];
    let signature = if flags & 8 != 0 {
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    } else {
        format!("sha256={}", hex::encode(&body[..body.len().min(32)]))
    };
    let mut req = axum::http::Request::builder()
        .method("POST")
        .uri("/hooks/github")
        .header("X-Hub-Signature-256", signature);
    if !event.contains('\u{0}') {
        req = req.header("X-GitHub-Event", event);
    }
    let req = req.body(axum::body::Body::from(body.to_vec())).unwrap();
    let e = env();
    let status =
        e.rt.block_on(e.app.clone().oneshot(req))
            .unwrap()
            .status()
            .as_u16();
    assert!(
        [200, 202, 400, 401, 413, 503].contains(&status),
        "unexpected status {status}"
    );
});
