//! Running the real binary: [`TestCommand`], [`Running`] and [`Output`],
//! whose failures print the command line, both streams and the root.

use super::*;

/// A command plus what is needed to explain its failure.
pub struct TestCommand {
    pub(super) cmd: Command,
    pub(super) root: PathBuf,
    pub(super) stdin: Option<Vec<u8>>,
    pub(super) timeout: Duration,
}

impl TestCommand {
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(&mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.env(key, val);
        self
    }

    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.cmd.env_remove(key);
        self
    }

    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cmd.current_dir(dir);
        self
    }

    pub fn stdin(&mut self, input: impl Into<Vec<u8>>) -> &mut Self {
        self.stdin = Some(input.into());
        self
    }

    /// Kill the command and fail after `timeout` (default 300s).
    pub fn timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = timeout;
        self
    }

    /// The command line, shell-quoted.
    pub fn command_line(&self) -> String {
        command_line(&self.cmd)
    }

    /// Runs to completion (or the timeout, which panics).
    pub fn run(&mut self) -> Output {
        let mut running = self.spawn();
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(status) = running.child.try_wait().expect("failed to wait for child") {
                return running.finish(status);
            }
            if Instant::now() >= deadline {
                let _ = running.child.kill();
                let status = running.child.wait().expect("failed to wait for child");
                let out = running.finish(status);
                panic!(
                    "command timed out after {:?}\n{}",
                    self.timeout,
                    out.report()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the command in the background (for `daemon`); it is killed when
    /// the returned handle drops.
    /// Runs the command in a process group of its own (as a service
    /// manager would), so that a test can signal it and its children
    /// without signalling itself.
    pub fn own_process_group(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt;
        self.cmd.process_group(0);
        self
    }

    pub fn spawn(&mut self) -> Running {
        // `validate` with a named config judges for that host, and a PR
        // runner has none: the test host's grants are not for it.
        if self.cmd.get_program() == STACKPIN && self.cmd.get_args().any(|a| a == "validate") {
            let ours = self
                .cmd
                .get_envs()
                .find(|(k, _)| *k == "STACKPIN_CONFIG")
                .and_then(|(_, v)| v)
                .is_some_and(|v| Path::new(v).ends_with(GRANTS_FILE));
            if ours {
                self.cmd.env_remove("STACKPIN_CONFIG");
            }
        }
        let line = self.command_line();
        let mut child = self
            .cmd
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start `{line}`: {e}"));
        if let Some(input) = self.stdin.clone() {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            std::thread::spawn(move || {
                let _ = pipe.write_all(&input);
            });
        }
        let stdout = Capture::start(child.stdout.take().expect("stdout is piped"));
        let stderr = Capture::start(child.stderr.take().expect("stderr is piped"));
        Running {
            child,
            line,
            root: self.root.clone(),
            stdout,
            stderr,
        }
    }
}

/// Collects a pipe in a thread so the child never blocks on a full pipe.
struct Capture {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    fn start(mut pipe: impl Read + Send + 'static) -> Capture {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let thread = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        Capture {
            buf,
            thread: Some(thread),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    fn finish(&mut self) -> String {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.text()
    }
}

/// A command running in the background.
pub struct Running {
    child: Child,
    line: String,
    root: PathBuf,
    stdout: Capture,
    stderr: Capture,
}

impl Running {
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Sends `signal` (e.g. `TERM`, `KILL`, `HUP`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "failed to send SIG{signal} to `{}`", self.line);
    }

    /// SIGTERM, then waits up to `grace` before SIGKILL; returns the output.
    pub fn terminate(mut self, grace: Duration) -> Output {
        if self.is_running() {
            self.signal("TERM");
        }
        let deadline = Instant::now() + grace;
        while self.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("failed to wait for child");
        self.finish(status)
    }

    /// Waits for the process to exit by itself.
    pub fn wait(mut self) -> Output {
        let status = self.child.wait().expect("failed to wait for child");
        self.finish(status)
    }

    fn finish(&mut self, status: ExitStatus) -> Output {
        Output {
            line: self.line.clone(),
            root: self.root.clone(),
            status,
            stdout: self.stdout.finish(),
            stderr: self.stderr.finish(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a finished command did. The assertions panic with [`Output::report`].
#[derive(Clone)]
pub struct Output {
    line: String,
    root: PathBuf,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.report())
    }
}

impl Output {
    /// Asserts exit status 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        if !self.status.success() {
            panic!("expected success\n{}", self.report());
        }
        self
    }

    /// Asserts exit code `code`.
    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        if self.status.code() != Some(code) {
            panic!("expected exit code {code}\n{}", self.report());
        }
        self
    }

    /// Asserts a non-zero exit.
    #[track_caller]
    pub fn failed(self) -> Self {
        if self.status.success() {
            panic!("expected failure\n{}", self.report());
        }
        self
    }

    #[track_caller]
    pub fn stdout_contains(self, needle: &str) -> Self {
        if !self.stdout.contains(needle) {
            panic!("expected stdout to contain {needle:?}\n{}", self.report());
        }
        self
    }

    #[track_caller]
    pub fn stderr_contains(self, needle: &str) -> Self {
        if !self.stderr.contains(needle) {
            panic!("expected stderr to contain {needle:?}\n{}", self.report());
        }
        self
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn status_code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout(&self) -> String {
        self.stdout.clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.clone()
    }

    /// Stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", self.report()))
    }

    /// Command line, exit status, both streams and the root listing.
    pub fn report(&self) -> String {
        format!(
            "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- root {} ---\n{}",
            self.line,
            self.status,
            self.stdout.trim_end(),
            self.stderr.trim_end(),
            self.root.display(),
            listing(&self.root),
        )
    }
}

fn command_line(cmd: &Command) -> String {
    let mut line = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            let _ = write!(line, "{}={} ", k.to_string_lossy(), quote(v));
        }
    }
    line.push_str(&quote(cmd.get_program()));
    for a in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(a));
    }
    if let Some(dir) = cmd.get_current_dir() {
        let _ = write!(line, "  (in {})", dir.display());
    }
    line
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
