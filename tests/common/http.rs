//! Loopback HTTP, traffic under load, and polling.

use super::*;

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
