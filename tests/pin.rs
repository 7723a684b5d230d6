//! `stackpin pin` (issue 34): a tag resolved to its digest in the real
//! loopback registry, the pin written into a stack.yaml that keeps every
//! other byte, committed alone, and deployed by the next sync.

use crate::common;
use common::{Fixtures, StackFixture, TestHost};

fn digest(pin: &str) -> &str {
    pin.split_once('@').map(|(_, d)| d).unwrap_or_default()
}

#[test]
fn pin_resolves_a_tag_keeps_the_file_commits_it_and_sync_deploys_it() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("app");
    let port = h.free_port();
    StackFixture::new(&s, &f.v1, port, "v1").write(&h);
    let file = h.repo().join("stacks").join(&s).join("stack.yaml");
    let written = std::fs::read_to_string(&file).unwrap();
    // A comment on the pin's line and one of its own: both must stay.
    let text = format!(
        "# the shop's app\n{}",
        written.replacen(&f.v1, &format!("{}  # bumped by CI", f.v1), 1)
    );
    std::fs::write(&file, &text).unwrap();
    h.commit("v1");
    h.cmd(["sync"]).run().ok().stdout_contains("deployed");
    h.serves(port, "stackpin-test-app v1");

    // The fixtures pushed v2 as `…/stackpin-test/app:v2`.
    let repo = f.v1.split_once('@').unwrap().0;
    let tag = format!("{repo}:v2");
    let head = h.git(["rev-parse", "HEAD"]).trim().to_string();
    // --commit signs as git's configuration says.
    h.git(["config", "user.name", "Bump Bot"]);
    h.git(["config", "user.email", "bump@example.invalid"]);
    let out = h
        .cmd([
            "--json",
            "pin",
            &s,
            "web",
            &tag,
            "--set-version",
            "v2",
            "--commit",
        ])
        .arg("--dir")
        .arg(h.repo())
        .run()
        .ok()
        .json();
    assert_eq!(out["pins"][0]["service"], "web", "{out}");
    assert_eq!(out["pins"][0]["new"], f.v2.as_str(), "{out}");
    assert_eq!(out["pins"][0]["old"], f.v1.as_str(), "{out}");
    let after = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        after,
        text.replacen(&f.v1, &f.v2, 1)
            .replacen("version: v1", "version: v2", 1),
        "only the pin and the version change"
    );
    let message = h.git(["log", "-1", "--format=%B"]);
    assert!(
        message.contains(digest(&f.v1)) && message.contains(digest(&f.v2)),
        "{message}"
    );
    assert_eq!(
        h.git(["rev-parse", "HEAD~1"]).trim(),
        head,
        "one commit on HEAD"
    );
    assert_eq!(
        h.git(["status", "--porcelain"]).trim(),
        "",
        "nothing left uncommitted"
    );

    h.cmd(["sync"]).run().ok().stdout_contains("deployed");
    h.serves(port, "stackpin-test-app v2");
    h.assert_consistent(&s);

    // A tag the registry does not have: refused (exit 1), nothing written.
    let before = std::fs::read_to_string(&file).unwrap();
    h.cmd(["pin", &s, "web", &format!("{repo}:no-such-tag")])
        .arg("--dir")
        .arg(h.repo())
        .run()
        .code(1)
        .stderr_contains("has no tag `no-such-tag`");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    // A service written through an alias is refused by name, file unchanged.
    let aliased = format!(
        "x-pin: &pin {}\n{}",
        f.v1,
        before.replacen(&f.v2, "*pin", 1)
    );
    std::fs::write(&file, &aliased).unwrap();
    h.cmd(["pin", &s, "web", &f.v3])
        .arg("--dir")
        .arg(h.repo())
        .run()
        .code(1)
        .stderr_contains("through an alias (`*pin`)");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), aliased);
}

/// `pin --from-verified` (issue 34): the production bump written by the
/// rule that will judge it: the newest entry of the source the gate passes
/// (soaked long enough), services mapped as the gate maps them, the
/// version taken over, the file's other bytes kept; a newer entry still
/// soaking is named; with no entry passing, or none signed by the host's
/// verifiers, nothing is written.
#[test]
fn pin_from_verified_writes_the_newest_entry_the_gate_passes() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (stg, prod) = (h.stack("stg"), h.stack("prod"));
    h.write(
        format!("stacks/{stg}/stack.yaml"),
        format!(
            "environment: staging\nimages:\n  web: {}\nmarks_verified: true\n",
            f.v1
        ),
    );
    h.write(
        format!("stacks/{stg}/compose.yaml"),
        "services:\n  web:\n    image: stackpin-test/app\n",
    );
    let prod_text = format!(
        "# production\nenvironment: production\nversion: v1\nimages:\n  web: {}   # bumped by pin\n  admin: {}\npromote_from: {{stack: {stg}, services: {{admin: web}}, soak: 30m}}\n",
        f.v1, f.v1
    );
    h.write(format!("stacks/{prod}/stack.yaml"), &prod_text);
    h.write(
        format!("stacks/{prod}/compose.yaml"),
        "services:\n  web:\n    image: stackpin-test/app\n  admin:\n    image: stackpin-test/app\n",
    );
    let entry = |version: &str, image: &str, verified: &str, soaked: Option<&str>| {
        let mut e = format!(
            "  - version: {version}\n    images: {{web: \"{image}\"}}\n    verified_at: \"{verified}\"\n    host: staging-1\n    commit: abc\n"
        );
        if let Some(t) = soaked {
            e.push_str(&format!("    soaked_at: \"{t}\"\n"));
        }
        e
    };
    let v2 = entry("v2", &f.v2, "2026-12-01T10:00:00Z", None);
    let v2_soaked = entry(
        "v2",
        &f.v2,
        "2026-12-01T10:00:00Z",
        Some("2026-12-01T10:31:00Z"),
    );
    let v3 = entry("v3", &f.v3, "2026-12-01T11:00:00Z", None);
    h.write(
        format!("verified/{stg}.yaml"),
        format!("verified:\n{v2}{v2_soaked}{v3}"),
    );
    h.commit("staging verified v2 (soaked) and v3 (soaking)");
    h.git(["config", "user.name", "Promote Bot"]);
    h.git(["config", "user.email", "promote@example.invalid"]);
    // Run where a developer or a CI job runs it: no host config, so every
    // entry counts, signatures unchecked (as `validate --gate` without one).
    let pin = |extra: &[&str]| {
        let mut c = h.cmd(["pin", &prod, "--from-verified"]);
        c.args(extra)
            .arg("--dir")
            .arg(h.repo())
            .env_remove("STACKPIN_CONFIG");
        c.run()
    };

    let out = pin(&["--json", "--commit"]).ok().json();
    assert_eq!(out["from"]["version"], "v2", "{out}");
    assert_eq!(out["from"]["soaked_at"], "2026-12-01T10:31:00Z", "{out}");
    assert_eq!(out["version"], "v2", "{out}");
    let pins: Vec<(String, String)> = out["pins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["service"].as_str().unwrap().into(),
                p["new"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        pins,
        // In the file's order.
        [
            ("web".to_string(), f.v2.clone()),
            ("admin".to_string(), f.v2.clone())
        ],
        "{out}"
    );
    assert!(
        out["newer"]
            .as_str()
            .is_some_and(|n| n.contains("v3") && n.contains("soaking until 2026-12-01T11:30:00Z")),
        "{out}"
    );
    let file = h.repo().join(format!("stacks/{prod}/stack.yaml"));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        prod_text
            .replace(&f.v1, &f.v2)
            .replace("version: v1", "version: v2"),
        "only the pins and the version change"
    );
    let message = h.git(["log", "-1", "--format=%B"]);
    assert!(
        message.starts_with(&format!("promote {stg} v2 to {prod}"))
            && message.contains("soaked until 2026-12-01T10:31:00Z"),
        "{message}"
    );
    // What it wrote passes the gate it was chosen by.
    h.cmd_raw([
        std::ffi::OsString::from("validate"),
        h.repo().into(),
        "--gate".into(),
    ])
    .run()
    .ok()
    .stdout_contains(&format!("every pin verified in `{stg}` entry `v2`"));

    // No entry soaked long enough: refused, nothing written.
    h.write(
        format!("verified/{stg}.yaml"),
        format!("verified:\n{v2}{v3}"),
    );
    let before = std::fs::read_to_string(&file).unwrap();
    pin(&[])
        .code(1)
        .stderr_contains(&format!(
            "no entry of verified/{stg}.yaml passes {prod}'s gate"
        ))
        .stderr_contains("v2: verified in")
        .stderr_contains("nothing was written");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);

    // A host that trusts only signed entries counts none of these.
    h.write(
        format!("verified/{stg}.yaml"),
        format!("verified:\n{v2}{v2_soaked}{v3}"),
    );
    let signer = h.ssh_signer("staging-1", "staging-1", "stackpin-verified");
    let cfg = h.tmp().join("prod-host.yaml");
    common::write_config(
        &cfg,
        format!(
            "signers:\n  staging-hosts: {{allowed_signers: {}}}\nverifiers: {{{stg}: staging-hosts}}\n",
            signer.allowed.display()
        ),
    )
    .unwrap();
    h.cmd_raw([
        std::ffi::OsString::from("--config"),
        cfg.into(),
        "pin".into(),
        prod.clone().into(),
        "--from-verified".into(),
        "--dir".into(),
        h.repo().into(),
    ])
    .run()
    .code(1)
    .stderr_contains("not counted")
    .stderr_contains("unsigned");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
}

/// Quarantined digests published (issue 34): a release that fails on a
/// host is reverted and quarantined there, recorded signed in the host's
/// quarantined store, published as the daemon's publisher does to
/// `quarantined/<stack>.yaml` (only that file changes), and `pin` in a
/// checkout of it refuses the digest, naming where and why it failed,
/// unless `--force`.
#[test]
fn a_failed_release_is_published_quarantined_and_pin_refuses_its_digest() {
    use stackpin::publish::{Publisher, Settings};
    let h = TestHost::new();
    let f = Fixtures::require();
    let signer = h.ssh_signer("test-host-key", "test-host", "stackpin-quarantined");
    let cfg = h.config(
        "signing.yaml",
        &format!("verified: {{signing_key: {}}}\n", signer.key.display()),
    );
    let sync = || {
        h.cmd([
            std::ffi::OsStr::new("--config"),
            cfg.as_os_str(),
            std::ffi::OsStr::new("sync"),
        ])
        .run()
    };
    let s = h.stack("app");
    let port = h.free_port();
    StackFixture::new(&s, &f.v1, port, "v1").write(&h);
    h.commit("v1");
    sync().ok();
    StackFixture::new(&s, &f.broken, port, "v2").write(&h);
    h.commit("v2, broken");
    sync().code(1);
    h.serves(port, "stackpin-test-app v1");
    let store = h.read_root(format!("releases/quarantined/{s}.yaml"));
    assert!(
        store.contains("version: v2") && store.contains(digest(&f.broken)),
        "{store}"
    );

    // Published to a bare remote as the daemon's publisher does.
    let bare = h.tmp().join("remote.git");
    h.git([
        "clone".as_ref(),
        "-q".as_ref(),
        "--bare".as_ref(),
        h.repo().as_os_str(),
        bare.as_os_str(),
    ]);
    let before = h.git(["-C", bare.to_str().unwrap(), "rev-parse", "main"]);
    let publisher = Publisher::new(Settings {
        url: bare.to_string_lossy().into_owned(),
        branch: "main".into(),
        path: ".".into(),
        auth: stackpin::source::Auth::None,
        author_name: "stackpin".into(),
        author_email: "stackpin@test-host".into(),
        host: "test-host".into(),
        state_dir: h.tmp().join("publish-state"),
        attempts: 3,
        backoff: std::time::Duration::from_millis(20),
    });
    let layout = stackpin::layout::Layout {
        root: h.root().to_path_buf(),
    };
    let out = publisher.publish_pending(&layout);
    let file = format!("quarantined/{s}.yaml");
    assert!(
        out.iter()
            .any(|(f, r)| *f == file && r.as_ref().is_ok_and(|p| p.commit.is_some())),
        "{out:?}"
    );
    let changed = h.git([
        "-C",
        bare.to_str().unwrap(),
        "diff",
        "--name-only",
        before.trim(),
        "main",
    ]);
    assert_eq!(changed.trim(), file, "only the quarantined file changes");
    assert!(
        publisher
            .publish_pending(&layout)
            .iter()
            .all(|(f, _)| *f != file),
        "published once"
    );

    // Its signature verifies with ssh-keygen against the host's key.
    let co = h.tmp().join("checkout");
    h.git([
        "clone".as_ref(),
        "-q".as_ref(),
        bare.as_os_str(),
        co.as_os_str(),
    ]);
    let text = std::fs::read_to_string(co.join(&file)).unwrap();
    let entries =
        stackpin::publish::parse::<stackpin::desired::spec::QuarantinedEntry>(&text).unwrap();
    assert_eq!(entries.len(), 1, "{text}");
    let e = &entries[0];
    assert!(e.reason.contains("smoke failed"), "{e:?}");
    std::fs::write(h.tmp().join("q.sig"), e.signature.as_deref().unwrap()).unwrap();
    let ssh_verify = |payload: Vec<u8>| {
        let mut c = std::process::Command::new("ssh-keygen");
        c.args([
            "-Y",
            "verify",
            "-I",
            "test-host",
            "-n",
            "stackpin-quarantined",
            "-f",
        ])
        .arg(&signer.allowed)
        .arg("-s")
        .arg(h.tmp().join("q.sig"));
        h.command(c).stdin(payload).run()
    };
    ssh_verify(e.signed_bytes(&s))
        .ok()
        .stdout_contains("Good \"stackpin-quarantined\" signature for test-host");
    // Its reason changed after signing: it no longer verifies.
    let tampered = stackpin::desired::spec::QuarantinedEntry {
        reason: "nothing happened".into(),
        ..e.clone()
    };
    assert!(!ssh_verify(tampered.signed_bytes(&s)).success());

    // `pin` refuses the digest in that checkout, unless --force.
    let stack_file = co.join(format!("stacks/{s}/stack.yaml"));
    let kept = std::fs::read_to_string(&stack_file).unwrap();
    let pin = |force: bool| {
        let mut c = h.cmd(["pin", &s, "web", &f.broken]);
        c.arg("--dir").arg(&co);
        if force {
            c.arg("--force");
        }
        c.run()
    };
    pin(false)
        .code(1)
        .stderr_contains("was quarantined on test-host")
        .stderr_contains("smoke failed")
        .stderr_contains("--force");
    assert_eq!(std::fs::read_to_string(&stack_file).unwrap(), kept);
    pin(true).ok();
    assert!(
        std::fs::read_to_string(&stack_file)
            .unwrap()
            .contains(&f.broken)
    );
}
