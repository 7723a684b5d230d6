//! The shipped unit still converges a stack with every sandbox setting it
//! ships with (issue 19). A test machine's PID 1 is rarely systemd, so the
//! host here is a container whose PID 1 is systemd
//! (`scripts/setup.d/systemd-host.sh`), on this machine's network and
//! Docker socket. Inside it, README's install steps run as written: the
//! binary in /usr/local/bin, the `stackpin` group, the config, `daemon
//! --check-config`, the unit file unchanged, `systemctl start`. The compose
//! v2 plugin sits in a system plugin directory, as README says it must
//! (`ProtectHome=yes` hides /root).

use crate::common;

use common::systemd::{SystemdHost, image};
use common::{Fixtures, Flavour, StackFixture, TestHost};
use std::time::{Duration, Instant};

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
    let (bin, unit_path) = (
        std::path::Path::new(env!("CARGO_BIN_EXE_stackpin")),
        std::path::Path::new(unit),
    );
    let host = SystemdHost::start(
        &image,
        &format!("{}-systemd", h.prefix()),
        &plugin,
        &[
            (bin, "/opt/build/stackpin", "ro"),
            (unit_path, "/opt/build/stackpin.service", "ro"),
            (&h.repo(), "/opt/desired", "ro"),
            (&h.root(), "/srv", "rw"),
        ],
    );

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
        "{}host: hardened-host\nroot: /srv\nrepo:\n  url: /opt/desired\n  branch: main\n  poll_interval: 1h\n  watch: false\ncontrol_socket_group: stackpin\nhttp: {{listen: \"127.0.0.1:{}\"}}\n",
        common::FIXTURE_GRANTS,
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
