//! The shipped unit still converges a stack with every sandbox setting it
//! ships with (issue 19). A test machine's PID 1 is rarely systemd, so the
//! host here is a container whose PID 1 is systemd
//! (`scripts/setup.d/systemd-host.sh`), on this machine's network and
//! Docker socket. Inside it, README's install steps run as written: the
//! binary in /usr/local/bin, the `stackpin` group, the config, `daemon
//! --check-config`, the unit file unchanged, `systemctl start`. The compose
//! v2 plugin sits in a system plugin directory, as README says it must
//! (`ProtectHome=yes` hides /root).

mod common;

use common::{Fixtures, Flavour, StackFixture, TestHost};
use std::process::Command;
use std::time::{Duration, Instant};

/// The systemd container; removed on drop.
struct SystemdHost {
    name: String,
}

impl SystemdHost {
    fn exec(&self, args: &[&str]) -> (bool, String) {
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

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.exec(args);
        assert!(
            ok,
            "`{}` failed:\n{text}\n{}",
            args.join(" "),
            self.journal()
        );
        text
    }

    fn journal(&self) -> String {
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

fn image() -> Option<String> {
    common::required_under_ci(
        std::env::var("STACKPIN_TEST_SYSTEMD_IMAGE").ok(),
        "STACKPIN_TEST_SYSTEMD_IMAGE is unset: scripts/setup.d/systemd-host.sh builds it",
    )
}

#[test]
fn the_shipped_unit_converges_a_stack_under_its_sandbox() {
    let Some(image) = image() else { return };
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("hardened");
    let port = h.free_port();
    StackFixture::new(&s, &f.v1, port, "v1")
        .without_site_conf()
        .write(&h);
    h.commit("v1");

    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/stackpin.service");
    let plugin = f.compose_v2_config.join("cli-plugins/docker-compose");
    let docker = which("docker");
    let name = format!("{}-systemd", h.prefix());
    let mount =
        |from: &std::path::Path, to: &str, mode: &str| format!("{}:{to}:{mode}", from.display());
    let out = Command::new("docker")
        .args(["run", "-d", "--name", &name, "--network", "host"])
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
                &plugin,
                "/usr/local/lib/docker/cli-plugins/docker-compose",
                "ro",
            ),
        ])
        .args([
            "-v",
            &mount(
                env!("CARGO_BIN_EXE_stackpin").as_ref(),
                "/opt/build/stackpin",
                "ro",
            ),
        ])
        .args([
            "-v",
            &mount(unit.as_ref(), "/opt/build/stackpin.service", "ro"),
        ])
        .args(["-v", &mount(&h.repo(), "/opt/desired", "ro")])
        .args(["-v", &mount(&h.root(), "/srv", "rw")])
        .args([&image, "/lib/systemd/systemd"])
        .output()
        .expect("docker run");
    let host = SystemdHost { name };
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

    // README's install, step by step.
    host.ok(&[
        "install",
        "-m",
        "0755",
        "/opt/build/stackpin",
        "/usr/local/bin/stackpin",
    ]);
    host.ok(&["groupadd", "--system", "stackpin"]);
    // The unit's SupplementaryGroups=docker (Debian's docker.io makes it).
    host.ok(&["groupadd", "--system", "docker"]);
    host.ok(&["install", "-d", "-m", "0750", "/etc/stackpin"]);
    let config = format!(
        "host: hardened-host\nroot: /srv\nrepo:\n  url: /opt/desired\n  branch: main\n  poll_interval: 1h\n  watch: false\ncontrol_socket_group: stackpin\nhttp: {{listen: \"127.0.0.1:{}\"}}\n",
        h.free_port()
    );
    host.ok(&[
        "sh",
        "-c",
        &format!("printf '%s' '{config}' > /etc/stackpin/config.yaml"),
    ]);
    host.ok(&["stackpin", "daemon", "--check-config"]);
    host.ok(&[
        "install",
        "-m",
        "0644",
        "/opt/build/stackpin.service",
        "/etc/systemd/system/",
    ]);
    host.ok(&["systemctl", "daemon-reload"]);
    host.ok(&["systemctl", "enable", "--now", "stackpin"]);

    h.serves(port, "stackpin-test-app v1");
    // Served before smoke has ended: wait for the deploy to be recorded.
    let deadline = Instant::now() + Duration::from_secs(60);
    let hist = loop {
        let (_, text) = host.exec(&["stackpin", "--json", "history", &s]);
        let hist: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if hist.as_array().is_some_and(|a| !a.is_empty()) {
            break hist;
        }
        assert!(
            Instant::now() < deadline,
            "no deploy recorded: {text}\n{}",
            host.journal()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let last = &hist.as_array().unwrap().last().unwrap();
    assert_eq!(
        (&last["action"], &last["status"]),
        (&"deploy".into(), &"success".into()),
        "{hist}"
    );
    // The link is absolute (/srv/…): checked where it means something.
    host.ok(&["test", "-f", &format!("/srv/stacks/{s}/release.json")]);
    host.ok(&[
        "test",
        "!",
        "-e",
        &format!("/srv/releases/.stackpin/journal/{s}.json"),
    ]);
    // Made by the plugin from the system plugin directory, under the unit.
    Flavour::V2.assert_made(&h, &s);
    let status = host.ok(&["systemctl", "show", "stackpin", "-p", "StatusText"]);
    assert!(
        status.contains("stack(s)"),
        "no STATUS= line in systemctl: {status}"
    );
    // The sandbox is the shipped one, in force.
    let props = host.ok(&[
        "systemctl",
        "show",
        "stackpin",
        "-p",
        "ProtectSystem",
        "-p",
        "ProtectHome",
        "-p",
        "NoNewPrivileges",
        "-p",
        "KillMode",
    ]);
    for want in [
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "KillMode=mixed",
    ] {
        assert!(props.contains(want), "{want} not in force: {props}");
    }

    host.ok(&["systemctl", "stop", "stackpin"]);
    let (_, state) = host.exec(&["systemctl", "is-failed", "stackpin"]);
    assert_eq!(state.trim(), "inactive", "{}", host.journal());
    let journal = host.journal();
    assert!(
        journal.contains("stackpin daemon stopping"),
        "no clean stop: {journal}"
    );
}

fn which(bin: &str) -> std::path::PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!path.is_empty(), "{bin} not found");
    std::path::PathBuf::from(path)
}
