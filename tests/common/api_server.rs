//! The daemon's HTTP server on 127.0.0.1:0, in process, over a snapshot
//! and a history file the test controls (`tests/server.rs`,
//! `tests/regression.rs`).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use stackpin::metrics::Metrics;
use stackpin::server::{self, AppState, Snapshot, Trigger};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub const SECRET: &[u8] = b"test-webhook-secret";
pub const BRANCH: &str = "main";

/// One server on 127.0.0.1:0, stopped on drop.
pub struct Server {
    base: String,
    pub state: AppState,
    rx: mpsc::Receiver<Trigger>,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
    pub client: reqwest::Client,
}

impl Server {
    pub async fn start(secret: Option<&[u8]>, capacity: usize) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(capacity);
        let state = AppState {
            trigger: tx,
            webhook_secret: secret.map(|s| Arc::new(s.to_vec())),
            branch: BRANCH.to_string(),
            snapshot: Arc::new(RwLock::new(Snapshot::default())),
            metrics: Arc::new(Metrics::new()),
            history_path: dir.path().join("deploy-history.log"),
            ready_max_age: Duration::from_secs(300),
            deliveries: Default::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let st = state.clone();
        tokio::spawn(async move {
            server::serve(listener, st, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Server {
            base,
            state,
            rx,
            stop: Some(stop),
            _dir: dir,
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A delivery as GitHub sends it, each with a new delivery id; `sig`
    /// None means no signature header.
    pub async fn deliver(
        &self,
        event: &str,
        body: &[u8],
        sig: Option<String>,
    ) -> reqwest::Response {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("72d3162e-cc78-11e3-81ab-{n:012x}");
        self.deliver_as(&id, event, body, sig).await
    }

    /// [`Server::deliver`] with the delivery id `id`.
    pub async fn deliver_as(
        &self,
        id: &str,
        event: &str,
        body: &[u8],
        sig: Option<String>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url("/hooks/github"))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", id)
            .body(body.to_vec());
        if let Some(sig) = sig {
            req = req.header("x-hub-signature-256", sig);
        }
        req.send().await.unwrap()
    }

    pub async fn deliver_signed(&self, event: &str, body: &[u8]) -> reqwest::Response {
        self.deliver(event, body, Some(sign(SECRET, body))).await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// Every trigger queued so far.
    pub fn drain(&mut self) -> Vec<Trigger> {
        let mut out = Vec::new();
        while let Ok(t) = self.rx.try_recv() {
            out.push(t);
        }
        out
    }

    pub fn metrics_text(&self) -> String {
        self.state.metrics.encode()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
