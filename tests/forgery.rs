//! The production gate tried as an attacker with push access would (issue
//! 11), on the real engine and real git: each attack leaves production on
//! its release, `Blocked` with the cause named, and a refusal line in
//! history. Then the way it is meant to work: staging on one host signs
//! what it verifies, production on another host trusts that key and
//! promotes.
//!
//! The host's config, not the commit, says what production needs:
//! commits touching it signed by a developer, the gate from staging, and
//! break-glass only in a commit an approver signed.

use crate::common;

use common::{Fixtures, SshSigner, TestHost};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Two services, `web` and `side`, each the fixture app on its own port;
/// smoke checks `web`.
fn write_pair_stack(
    h: &TestHost,
    stack: &str,
    ports: (u16, u16),
    images: (&str, &str),
    extra: &str,
) {
    h.write(
        format!("stacks/{stack}/stack.yaml"),
        format!(
            "environment: production\nversion: {}\nimages:\n  web: {}\n  side: {}\nenv:\n  PORT: \"{}\"\n  SIDE_PORT: \"{}\"\n{extra}smoke:\n  timeout: 15s\n  checks:\n    - http: {{url: \"http://127.0.0.1:{}/health\", expect_status: 200}}\n",
            short(images.0),
            images.0,
            images.1,
            ports.0,
            ports.1,
            ports.0
        ),
    );
    h.write(
        format!("stacks/{stack}/compose.yaml"),
        "services:\n  web:\n    image: stackpin-test/app\n    network_mode: host\n    stop_grace_period: 1s\n    environment:\n      PORT: ${PORT}\n  side:\n    image: stackpin-test/app\n    network_mode: host\n    stop_grace_period: 1s\n    environment:\n      PORT: ${SIDE_PORT}\n",
    );
}

/// An unsigned entry of `staging-1` verifying `web` and `side`.
fn staging_entry(
    version: &str,
    (web, side): (&str, &str),
    verified_at: &str,
) -> stackpin::desired::spec::VerifiedEntry {
    stackpin::desired::spec::VerifiedEntry {
        version: version.into(),
        images: [
            ("web".to_string(), web.to_string()),
            ("side".to_string(), side.to_string()),
        ]
        .into(),
        verified_at: verified_at.into(),
        host: "staging-1".into(),
        commit: "0".repeat(40),
        soaked_at: None,
        signature: None,
    }
}

fn short(image: &str) -> String {
    let d = image.split_once("@sha256:").unwrap().1;
    format!("d-{}", &d[..8])
}

struct Setup {
    stg: String,
    prod: String,
    stg_ports: (u16, u16),
    prod_ports: (u16, u16),
    developer: SshSigner,
    approver: SshSigner,
    cfg: PathBuf,
}

impl Setup {
    fn new(h: &TestHost) -> Setup {
        let developer = h.ssh_signer("developer", "dev@example.com", "git");
        let approver = h.ssh_signer("approver", "approver@example.com", "git");
        // Developers (and the approver) may sign production commits; only
        // the approver may break the glass.
        let devs = h.tmp().join("developers.allowed");
        std::fs::write(
            &devs,
            format!(
                "{}{}",
                std::fs::read_to_string(&developer.allowed).unwrap(),
                std::fs::read_to_string(&approver.allowed).unwrap()
            ),
        )
        .unwrap();
        let staging_host = h.ssh_signer("staging-1", "staging-1", "stackpin-verified");
        let (stg, prod) = (h.stack("stg"), h.stack("prod"));
        let cfg = h.tmp().join("config.yaml");
        common::write_config(
            &cfg,
            format!(
                "signers:\n  developers: {{allowed_signers: {}}}\n  approvers: {{allowed_signers: {}}}\n  staging-hosts: {{allowed_signers: {}}}\nverifiers: {{{stg}: staging-hosts}}\npolicy:\n  - stacks: [{prod}]\n    signed_by: developers\n    promote_from: {stg}\n    break_glass_by: approvers\n",
                devs.display(),
                approver.allowed.display(),
                staging_host.allowed.display()
            ),
        )
        .unwrap();
        Setup {
            stg,
            prod,
            stg_ports: (h.free_port(), h.free_port()),
            prod_ports: (h.free_port(), h.free_port()),
            developer,
            approver,
            cfg,
        }
    }

    fn staging(&self, h: &TestHost, images: (&str, &str)) {
        write_pair_stack(
            h,
            &self.stg,
            self.stg_ports,
            images,
            "marks_verified: true\n",
        );
        // Staging is not production: its environment says so.
        let p = h.repo().join(format!("stacks/{}/stack.yaml", self.stg));
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(
            &p,
            text.replace("environment: production", "environment: staging"),
        )
        .unwrap();
    }

    fn production(&self, h: &TestHost, images: (&str, &str), extra: &str) {
        let extra = format!("promote_from: {}\n{extra}", self.stg);
        write_pair_stack(h, &self.prod, self.prod_ports, images, &extra);
    }

    fn sync(&self, h: &TestHost) -> common::Output {
        h.cmd([
            OsString::from("--config"),
            self.cfg.clone().into(),
            "sync".into(),
        ])
        .run()
    }

    fn status_of(&self, h: &TestHost) -> String {
        let out = h
            .cmd([
                OsString::from("--config"),
                self.cfg.clone().into(),
                "--json".into(),
                "status".into(),
            ])
            .run()
            .json();
        out.as_array()
            .unwrap()
            .iter()
            .find(|r| r["stack"] == self.prod.as_str())
            .map(|r| r["state"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    }

    /// After an attack: production still on `release`, serving `web`'s v1,
    /// Blocked, and a refusal line in history naming `cause`.
    fn assert_held_off(&self, h: &TestHost, release: &Path, cause: &str) {
        let out = self.sync(h).code(1);
        let line = out
            .stdout()
            .lines()
            .find(|l| l.contains(&self.prod))
            .unwrap_or_default()
            .to_string();
        assert!(
            line.contains("blocked") && line.contains(cause),
            "{cause}:\n{}",
            out.stdout()
        );
        assert_eq!(
            h.link_target(&self.prod).as_deref(),
            Some(release),
            "{cause}"
        );
        h.serves(self.prod_ports.0, "stackpin-test-app v1");
        assert_eq!(self.status_of(h), "blocked", "{cause}");
        let refusals: Vec<String> = h
            .history()
            .lines()
            .filter(|l| {
                l.contains(&format!("| {} |", self.prod))
                    && l.contains("| blocked |")
                    && l.contains(cause)
            })
            .map(String::from)
            .collect();
        assert!(
            !refusals.is_empty(),
            "no refusal line naming {cause:?}:\n{}",
            h.history()
        );
    }
}

#[test]
fn each_attack_leaves_production_on_its_release() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = Setup::new(&h);
    let (v1, v2) = (f.v1.as_str(), f.v2.as_str());

    // The honest path: staging verifies {web: v1, side: v2}, production
    // promotes exactly that.
    s.staging(&h, (v1, v2));
    s.production(&h, (v1, v2), "");
    h.commit_signed(&s.developer.key, "v1 everywhere");
    s.sync(&h).ok();
    h.serves(s.prod_ports.0, "stackpin-test-app v1");
    let release = h.link_target(&s.prod).unwrap();

    // 1. Swapped digests: every digest was verified, but not for that service.
    s.production(&h, (v2, v1), "");
    h.commit_signed(&s.developer.key, "prod: swap web and side");
    s.assert_held_off(&h, &release, "unverified: web=");

    // 2. A forged marker in a signed commit: an unsigned entry, and one
    // signed by a key the host does not trust.
    s.production(&h, (v2, v2), "");
    let attacker = h.ssh_signer("attacker", "staging-1", "stackpin-verified");
    let entry = staging_entry("forged", (&f.v2, &f.v2), "2026-12-01T00:00:00Z");
    let sig = h.sign_marker(&attacker.key, &entry, &s.stg);
    let forged_signed = stackpin::desired::spec::VerifiedEntry {
        signature: Some(sig),
        version: "forged-signed".into(),
        ..entry.clone()
    };
    h.write(
        format!("verified/{}.yaml", s.stg),
        serde_json::to_string(&serde_json::json!({"verified": [entry, forged_signed]})).unwrap(),
    );
    h.commit_signed(&s.developer.key, "prod v2 (verified, honest)");
    s.assert_held_off(&h, &release, "unverified: ");
    let last = h
        .history()
        .lines()
        .rev()
        .find(|l| l.contains("| blocked |"))
        .unwrap()
        .to_string();
    assert!(
        last.contains("entry forged from staging-1: unsigned"),
        "{last}"
    );
    assert!(
        last.contains("entry forged-signed from staging-1: signing key")
            && last.contains("is not in allowed_signers"),
        "{last}"
    );
    h.remove(format!("verified/{}.yaml", s.stg));

    // 3. Break-glass in git, signed by a developer, not an approver.
    s.production(&h, (v2, v2), "break_glass: {reason: \"trust me\"}\n");
    h.commit_signed(&s.developer.key, "prod: break glass");
    s.assert_held_off(&h, &release, "break_glass in stack.yaml is ignored");

    // 4. An unsigned commit renaming the environment and dropping the gate.
    h.write(
        format!("stacks/{}/stack.yaml", s.prod),
        std::fs::read_to_string(h.repo().join(format!("stacks/{}/stack.yaml", s.prod)))
            .unwrap()
            .replace("environment: production", "environment: Production")
            .replace(&format!("promote_from: {}\n", s.stg), "")
            .replace("break_glass: {reason: \"trust me\"}\n", ""),
    );
    let unsigned = h.commit("prod: rename environment, drop promote_from");
    s.assert_held_off(
        &h,
        &release,
        &format!("untrusted commit {}: unsigned commit", &unsigned[..12]),
    );

    // 5. That unsigned commit buried under the approver's signed merge.
    h.git(["reset", "-q", "--hard", "HEAD~1"]);
    h.git(["checkout", "-q", "-b", "topic"]);
    s.production(&h, (v2, v2), "");
    let buried = h.commit("prod: v2 (unsigned, on a branch)");
    h.git(["checkout", "-q", "main"]);
    let signing = format!("user.signingkey={}", s.approver.key.display());
    h.git([
        "-c",
        "gpg.format=ssh",
        "-c",
        &signing,
        "merge",
        "-q",
        "--no-ff",
        "-S",
        "-m",
        "Merge topic (signed)",
        "topic",
    ]);
    s.assert_held_off(
        &h,
        &release,
        &format!(
            "commit {} (prod: v2 (unsigned, on a branch)) changes stacks/{}",
            &buried[..12],
            s.prod
        ),
    );

    // The approver breaks the glass in a commit they sign: it deploys, audited.
    h.git(["reset", "-q", "--hard", "HEAD~1"]);
    s.production(&h, (v2, v2), "break_glass: {reason: \"CVE hotfix\"}\n");
    h.commit_signed(&s.approver.key, "prod: break glass, approved");
    let out = s.sync(&h).ok();
    assert!(out.stdout().contains("deployed"), "{}", out.stdout());
    h.serves(s.prod_ports.0, "stackpin-test-app v2");
    assert!(
        h.history().contains("BREAK_GLASS: CVE hotfix"),
        "{}",
        h.history()
    );
}

/// Staging on one host signs each entry it verifies and publishes it to
/// the shared repository; production on another host (own root, state,
/// config) trusts that key for the staging stack and promotes; a host that
/// does not trust it refuses the same commit.
#[test]
fn signed_markers_promote_across_two_hosts() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let stg = h.stack("stg");
    let prod = h.stack("prod");
    let (stg_port, prod_port) = (h.free_port(), h.free_port());
    let marker_key = h.ssh_signer("staging-1-key", "staging-1", "stackpin-verified");
    common::StackFixture::new(&stg, &f.v1, stg_port, "v1")
        .environment("staging")
        .extra("marks_verified: true\n")
        .without_site_conf()
        .write(&h);
    common::StackFixture::new(&prod, &f.v1, prod_port, "v1")
        .environment("production")
        .extra(&format!("hosts: [prod-1, prod-2]\npromote_from: {stg}\n"))
        .without_site_conf()
        .write(&h);
    let p = h.repo().join(format!("stacks/{stg}/stack.yaml"));
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(
        &p,
        text.replace(
            "marks_verified: true\n",
            "marks_verified: true\nhosts: [staging-1]\n",
        ),
    )
    .unwrap();
    h.commit("staging and production v1");
    let remote = h.bare_remote();

    let hr = &h;
    let host = |name: &str, config: String| {
        let dir = h.tmp().join(name);
        for d in ["root", "state"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        common::write_config(dir.join("config.yaml"), config).unwrap();
        let remote = remote.clone();
        move |args: &[&str]| {
            let mut c = hr.cmd_raw([
                OsString::from("--config"),
                dir.join("config.yaml").into(),
                "--root".into(),
                dir.join("root").into(),
                "--state-dir".into(),
                dir.join("state").into(),
                "--repo".into(),
                remote.clone().into(),
                "--host".into(),
                dir.file_name().unwrap().into(),
            ]);
            c.args(args);
            c
        }
    };
    let staging = host(
        "staging-1",
        format!(
            "verified: {{publish: true, signing_key: {}}}\n",
            marker_key.key.display()
        ),
    );
    let trusting = format!(
        "signers: {{staging-hosts: {{allowed_signers: {}}}}}\nverifiers: {{{stg}: staging-hosts}}\npolicy:\n  - {{stacks: [{prod}], promote_from: {stg}}}\n",
        marker_key.allowed.display()
    );
    let production = host("prod-1", trusting);

    // Production before staging verified anything: refused.
    production(&["sync"])
        .run()
        .code(1)
        .stdout_contains("blocked");
    // Staging deploys, verifies and signs; `verify` publishes what is
    // pending (the daemon does so after each run).
    staging(&["sync"]).run().ok().stdout_contains("deployed");
    let out = staging(&["--json", "verify", &stg]).run().ok().json();
    assert!(out["published"]["commit"].is_string(), "{out}");
    let published = h.git([
        "--git-dir",
        remote.to_str().unwrap(),
        "show",
        &format!("main:verified/{stg}.yaml"),
    ]);
    assert!(
        published.contains("-----BEGIN SSH SIGNATURE-----"),
        "{published}"
    );

    // The signature is what `ssh-keygen -Y verify` accepts, too.
    let file: stackpin::desired::spec::VerifiedFile = serde_saphyr::from_str(&published).unwrap();
    let e = &file.verified[0];
    let payload = h.tmp().join("entry");
    std::fs::write(&payload, e.signed_bytes(&stg)).unwrap();
    let sig = h.tmp().join("entry.sig");
    std::fs::write(&sig, e.signature.as_deref().unwrap()).unwrap();
    let mut verify = std::process::Command::new("sh");
    verify.arg("-c").arg(format!(
        "ssh-keygen -Y verify -f {} -I staging-1 -n stackpin-verified -s {} < {}",
        marker_key.allowed.display(),
        sig.display(),
        payload.display()
    ));
    h.command(verify).run().ok();

    // Production trusts the staging host's key: it promotes.
    let out = production(&["sync"]).run().ok();
    assert!(out.stdout().contains("deployed"), "{}", out.stdout());
    h.serves(prod_port, "stackpin-test-app v1");

    // A third host that trusts another key refuses the same entries.
    let other = h.ssh_signer("other-key", "staging-9", "stackpin-verified");
    let untrusting = host(
        "prod-2",
        format!(
            "signers: {{other: {{allowed_signers: {}}}}}\nverifiers: {{{stg}: other}}\n",
            other.allowed.display()
        ),
    );
    let plan = untrusting(&["--json", "plan", &prod]).run().json();
    let item = plan
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["stack"] == prod.as_str())
        .cloned()
        .unwrap();
    assert_eq!(item["action"], "skip", "{item}");
    assert!(
        item["reason"]
            .as_str()
            .unwrap()
            .contains("not in allowed_signers"),
        "{item}"
    );
}

/// Soak on a production host that never ran staging (issue 34): only the
/// signed `soaked_at` counts. An entry the staging host stamped after too
/// short a soak is named as such; one whose `soaked_at` was moved after
/// signing is not counted at all; the honest, long-enough stamp deploys.
#[test]
fn a_soak_is_judged_on_the_signed_stamp_only() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let staging_host = h.ssh_signer("staging-1", "staging-1", "stackpin-verified");
    let (stg, prod) = (h.stack("stg"), h.stack("prod"));
    let cfg = h.tmp().join("config.yaml");
    common::write_config(
        &cfg,
        format!(
            "signers:\n  staging-hosts: {{allowed_signers: {}}}\nverifiers: {{{stg}: staging-hosts}}\npolicy:\n  - stacks: [{prod}]\n    promote_from: {{stack: {stg}, soak: 30m}}\n",
            staging_host.allowed.display()
        ),
    )
    .unwrap();
    let ports = (h.free_port(), h.free_port());
    let images = (f.v1.as_str(), f.v2.as_str());
    write_pair_stack(&h, &stg, ports, images, "hosts: [staging-1]\n");
    write_pair_stack(&h, &prod, ports, images, "");
    let first = staging_entry("v1", (&f.v1, &f.v2), "2026-12-01T10:00:00Z");
    let signed = |e: stackpin::desired::spec::VerifiedEntry| {
        let sig = h.sign_marker(&staging_host.key, &e, &stg);
        stackpin::desired::spec::VerifiedEntry {
            signature: Some(sig),
            ..e
        }
    };
    let stamped = |at: &str| stackpin::desired::spec::VerifiedEntry {
        soaked_at: Some(at.into()),
        ..first.clone()
    };
    let sync_with = |entries: Vec<stackpin::desired::spec::VerifiedEntry>, msg: &str| {
        h.write(
            format!("verified/{stg}.yaml"),
            serde_json::to_string(&serde_json::json!({ "verified": entries })).unwrap(),
        );
        h.commit(msg);
        h.cmd([
            OsString::from("--config"),
            cfg.clone().into(),
            "sync".into(),
        ])
        .run()
    };

    // Verified, stamped after 10 minutes only.
    let out = sync_with(
        vec![
            signed(first.clone()),
            signed(stamped("2026-12-01T10:10:00Z")),
        ],
        "staging verified v1, soaked 10m",
    );
    out.code(1).stdout_contains(&format!(
        "verified in {stg} as v1, but soaked only 10m of the 30m this host asks"
    ));
    // The stamp moved after signing: not counted, and said why.
    let mut moved = signed(stamped("2026-12-01T10:10:00Z"));
    moved.soaked_at = Some("2026-12-01T10:40:00Z".into());
    let out = sync_with(vec![signed(first.clone()), moved], "soaked_at moved");
    out.code(1)
        .stdout_contains(&format!(
            "verified in {stg} as v1, soaking until 2026-12-01T10:30:00Z"
        ))
        .stdout_contains("not counted");
    assert!(h.link_target(&prod).is_none());
    // The honest stamp after 31 minutes: production deploys.
    let out = sync_with(
        vec![
            signed(first.clone()),
            signed(stamped("2026-12-01T10:31:00Z")),
        ],
        "soaked 31m",
    );
    out.ok().stdout_contains("deployed");
    h.serves(ports.0, "stackpin-test-app v1");
}
