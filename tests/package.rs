//! The Debian package (issue 15): `scripts/package-deb.sh` builds it with
//! cargo-deb from the binary these tests run, and it is installed with
//! `dpkg -i` into a host whose PID 1 is systemd (the image of
//! `scripts/setup.d/systemd-host.sh`). Checked there as an operator would:
//! `stackpin --version` from /usr/bin, the group, the units verified by
//! `systemd-analyze verify` with the package's drop-in, the man pages
//! through `man`, the completions, the default config (a conffile that an
//! upgrade keeps and a purge removes), and `systemctl enable --now` with a
//! config that names a repository.

use crate::common;

use common::TestHost;
use common::systemd::{SystemdHost, image};
use std::path::{Path, PathBuf};
use std::process::Command;

fn cargo_deb() -> Option<String> {
    common::required_under_ci(
        std::env::var("STACKPIN_TEST_CARGO_DEB").ok().or_else(|| {
            let out = Command::new("cargo")
                .args(["deb", "--version"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        }),
        "cargo-deb is missing: scripts/setup.d/cargo-deb.sh installs it",
    )
}

/// Builds the .deb of the binary under test into `out`; its path.
fn build_deb(out: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new("bash")
        .arg(root.join("scripts/package-deb.sh"))
        .args(["--profile", "dev", "--no-build", "--output"])
        .arg(out)
        .output()
        .expect("package-deb.sh runs");
    assert!(
        status.status.success(),
        "package-deb.sh failed:\n{}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb was written")
}

#[test]
fn the_deb_installs_a_verified_service_with_man_pages_and_completions() {
    let Some(image) = image() else { return };
    if cargo_deb().is_none() {
        return;
    }
    let h = TestHost::new();
    let f = common::Fixtures::require();
    let deb = build_deb(&h.tmp().join("deb"));
    h.write("stackpin.yaml", "prune: false\n");
    h.commit("an empty desired state");
    let plugin = f.compose_v2_config.join("cli-plugins/docker-compose");
    let host = SystemdHost::start(
        &image,
        &format!("{}-deb", h.prefix()),
        &plugin,
        &[
            (&deb, "/opt/build/stackpin.deb", "ro"),
            (&h.repo(), "/opt/desired", "ro"),
            (&h.root(), "/srv", "rw"),
        ],
    );
    // The unit's SupplementaryGroups=docker (Debian's docker.io makes it).
    host.ok(&["groupadd", "--system", "docker"]);
    host.ok(&["dpkg", "-i", "/opt/build/stackpin.deb"]);

    let version = host.ok(&["stackpin", "--version"]);
    assert!(version.starts_with("stackpin 0."), "{version}");
    assert_eq!(
        host.ok(&["sh", "-c", "command -v stackpin"]).trim(),
        "/usr/bin/stackpin"
    );
    host.ok(&["getent", "group", "stackpin"]);

    // The units as installed, with the package's drop-in: /usr/bin.
    for unit in [
        "stackpin.service",
        "stackpin-backup.service",
        "stackpin-backup.timer",
    ] {
        let (ok, text) = host.exec(&["systemd-analyze", "verify", unit]);
        assert!(ok && !text.contains(unit), "{unit}: {text}");
    }
    let exec = host.ok(&["systemctl", "show", "stackpin", "-p", "ExecStart"]);
    assert!(
        exec.contains("path=/usr/bin/stackpin") && !exec.contains("/usr/local/bin"),
        "{exec}"
    );

    // man, as a user would read it.
    let page = host.ok(&["man", "-P", "cat", "stackpin"]);
    assert!(page.contains("stackpin") && page.contains("sync"), "{page}");
    let page = host.ok(&["man", "-P", "cat", "stackpin-rollback"]);
    assert!(page.contains("--list"), "{page}");
    // The file formats, section 5.
    let page = host.ok(&["man", "-P", "cat", "5", "stackpin-stack.yaml"]);
    assert!(page.contains("keep_releases"), "{page}");
    let page = host.ok(&["man", "-P", "cat", "5", "stackpin-config.yaml"]);
    assert!(page.contains("age_identity_file"), "{page}");
    let bash = host.ok(&["cat", "/usr/share/bash-completion/completions/stackpin"]);
    assert!(bash.contains("_stackpin"), "{bash}");
    host.ok(&["test", "-s", "/usr/share/zsh/vendor-completions/_stackpin"]);
    host.ok(&[
        "test",
        "-s",
        "/usr/share/fish/vendor_completions.d/stackpin.fish",
    ]);
    // The embedded compose-spec schema's licence and notice.
    let notice = host.ok(&["cat", "/usr/share/doc/stackpin/compose-spec/NOTICE"]);
    assert!(notice.contains("Compose Specification"), "{notice}");
    host.ok(&["test", "-s", "/usr/share/doc/stackpin/compose-spec/LICENSE"]);
    // The configuration's reference, which the shipped config.yaml names.
    host.ok(&["test", "-s", "/usr/share/doc/stackpin/docs/operations.md"]);

    // The default config: group-readable by stackpin, valid, and it says
    // what is missing.
    let perms = host.ok(&["stat", "-c", "%a %U %G", "/etc/stackpin/config.yaml"]);
    assert_eq!(perms.trim(), "640 root stackpin");
    let (ok, text) = host.exec(&["stackpin", "daemon", "--check-config"]);
    assert!(!ok && !text.contains("invalid config"), "{text}");
    assert!(text.contains("desired-state repository"), "{text}");

    // Configured, it runs as a service.
    host.ok(&[
        "sh",
        "-c",
        "printf 'repo:\\n  url: /opt/desired\\n  branch: main\\n  watch: false\\n' >> /etc/stackpin/config.yaml",
    ]);
    host.ok(&["stackpin", "daemon", "--check-config"]);
    host.ok(&["systemctl", "enable", "--now", "stackpin"]);
    let active = host.ok(&["systemctl", "is-active", "stackpin"]);
    assert_eq!(active.trim(), "active", "{}", host.journal());

    // An upgrade (here: the same package again) keeps the edited conffile;
    // remove keeps it; purge removes it.
    host.ok(&["dpkg", "-i", "/opt/build/stackpin.deb"]);
    let config = host.ok(&["cat", "/etc/stackpin/config.yaml"]);
    assert!(config.contains("url: /opt/desired"), "{config}");
    host.ok(&["dpkg", "-r", "stackpin"]);
    host.ok(&["test", "!", "-e", "/usr/bin/stackpin"]);
    host.ok(&["test", "-f", "/etc/stackpin/config.yaml"]);
    host.ok(&["dpkg", "-P", "stackpin"]);
    host.ok(&["test", "!", "-e", "/etc/stackpin/config.yaml"]);
}
