//! Git beside the test host: a `git daemon` serving its repository, and
//! SSH signing keys.

use super::*;

/// A running `git daemon` (see [`TestHost::git_daemon`]); stopped on drop.
pub struct GitDaemon {
    child: Child,
    pub port: u16,
    addr: String,
    _claim: PortClaim,
}

impl GitDaemon {
    /// Serves the bare repositories under `base` on 127.0.0.1 (pushes too
    /// when `push`). Runs `git-daemon` itself, not `git daemon`: the `git`
    /// wrapper would run it as a child that outlives a kill of the wrapper.
    pub fn serve(base: &Path, push: bool) -> GitDaemon {
        GitDaemon::serve_on("127.0.0.1", base, push)
    }

    /// As [`GitDaemon::serve`], listening on `addr` (an address of this
    /// machine: the fleet's bridge, so that test hosts in network
    /// namespaces reach it).
    pub fn serve_on(addr: &str, base: &Path, push: bool) -> GitDaemon {
        let claim = claim_port(addr);
        let port = claim.port;
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("git --exec-path");
        let exec_path = String::from_utf8_lossy(&exec_path.stdout)
            .trim()
            .to_string();
        let mut c = Command::new(Path::new(&exec_path).join("git-daemon"));
        c.args(["--export-all", "--reuseaddr", "--informative-errors"])
            .arg(format!("--listen={addr}"))
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if push {
            c.arg("--enable=receive-pack");
        }
        c.arg(base);
        let child = c.spawn().expect("failed to start git-daemon (part of git)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect((addr, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "git daemon did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        GitDaemon {
            child,
            port,
            addr: addr.to_string(),
            _claim: claim,
        }
    }

    /// The URL of `name` (a repository in the served directory).
    pub fn url(&self, name: &str) -> String {
        format!("git://{}:{}/{name}", self.addr, self.port)
    }

    /// Stops serving: the remote becomes unreachable.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An SSH signing key and an allowed_signers file that lists it.
#[derive(Debug, Clone)]
pub struct SshSigner {
    pub key: PathBuf,
    pub allowed: PathBuf,
}
