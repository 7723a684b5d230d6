//! A host whose PID 1 is systemd, for the tests of what ships with a real
//! systemd (`tests/hardened.rs`, `tests/package.rs`): a container of the
//! image `scripts/setup.d/systemd-host.sh` builds, on this machine's network
//! and Docker socket, with the docker CLI and the compose v2 plugin mounted
//! where a host has them. Removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The systemd image, required under CI.
pub fn image() -> Option<String> {
    super::required_under_ci(
        std::env::var("STACKPIN_TEST_SYSTEMD_IMAGE").ok(),
        "STACKPIN_TEST_SYSTEMD_IMAGE is unset: scripts/setup.d/systemd-host.sh builds it",
    )
}

pub struct SystemdHost {
    pub name: String,
}

impl SystemdHost {
    /// Starts `image` named `name` with the extra `mounts` (host path,
    /// container path, `ro`/`rw`) and waits until systemd has booted.
    pub fn start(
        image: &str,
        name: &str,
        plugin: &Path,
        mounts: &[(&Path, &str, &str)],
    ) -> SystemdHost {
        let mount = |from: &Path, to: &str, mode: &str| format!("{}:{to}:{mode}", from.display());
        let docker = which("docker");
        let mut cmd = Command::new("docker");
        cmd.args(["run", "-d", "--name", name, "--network", "host"])
            // systemd as PID 1 needs to mount its own cgroups and namespaces
            // for the sandbox; nothing here is privileged beyond that.
            .args([
                "--cap-add",
                "SYS_ADMIN",
                "--security-opt",
                "seccomp=unconfined",
            ])
            .args(["--security-opt", "apparmor=unconfined"])
            .args(["--tmpfs", "/run", "--tmpfs", "/run/lock"])
            .args(["-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw"])
            .args(["-v", "/var/run/docker.sock:/var/run/docker.sock"])
            .args(["-v", &mount(&docker, "/usr/bin/docker", "ro")])
            .args([
                "-v",
                &mount(
                    plugin,
                    "/usr/local/lib/docker/cli-plugins/docker-compose",
                    "ro",
                ),
            ]);
        for (from, to, mode) in mounts {
            cmd.args(["-v", &mount(from, to, mode)]);
        }
        let out = cmd
            .args([image, "/lib/systemd/systemd"])
            .output()
            .expect("docker run");
        let host = SystemdHost {
            name: name.to_string(),
        };
        assert!(
            out.status.success(),
            "the systemd host did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, state) = host.exec(&["systemctl", "is-system-running"]);
            if matches!(state.trim(), "running" | "degraded") {
                break;
            }
            assert!(Instant::now() < deadline, "systemd did not boot: {state}");
            std::thread::sleep(Duration::from_millis(250));
        }
        host
    }

    /// Runs `args` inside; (success, stdout and stderr).
    pub fn exec(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("docker")
            .args(["exec", &self.name])
            .args(args)
            .output()
            .expect("docker exec");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// [`SystemdHost::exec`], which must succeed.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.exec(args);
        assert!(
            ok,
            "`{}` failed:\n{text}\n{}",
            args.join(" "),
            self.journal()
        );
        text
    }

    /// The stackpin unit's journal.
    pub fn journal(&self) -> String {
        self.exec(&["journalctl", "-u", "stackpin", "--no-pager", "-o", "cat"])
            .1
    }
}

impl Drop for SystemdHost {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.name])
            .output();
    }
}

/// Where `bin` is on this machine's PATH.
pub fn which(bin: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!path.is_empty(), "{bin} not found");
    PathBuf::from(path)
}
