//! The production gate end to end (issue 5; runbook 002 验证步骤 scenarios 1
//! and 2, runbook 000 verified gate and break-glass), on the real engine and
//! real git: staging verifies, production promotes; an unverified production
//! pin is refused once and for all until break-glass; a broken image forced
//! through is reverted; a signature policy blocks an unsigned commit for
//! production only; `verify` by hand, published to git, opens the gate on a
//! host that never ran staging; `validate` and `plan` agree with `sync`.

use crate::common;

use common::{Fixtures, StackFixture, TestHost};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

fn write_stack(
    h: &TestHost,
    stack: &str,
    env: &str,
    image: &str,
    port: u16,
    version: &str,
    extra: &str,
) {
    StackFixture::new(stack, image, port, version)
        .environment(env)
        .extra(extra)
        .without_site_conf()
        .write(h);
}

/// A staging stack (`marks_verified`) and a production stack
/// (`promote_from` it), each pinned to its image.
struct Pair {
    stg: String,
    prod: String,
    stg_port: u16,
    prod_port: u16,
}

impl Pair {
    fn new(h: &TestHost) -> Pair {
        Pair {
            stg: h.stack("stg"),
            prod: h.stack("prod"),
            stg_port: h.free_port(),
            prod_port: h.free_port(),
        }
    }

    fn staging(&self, h: &TestHost, image: &str, version: &str) {
        write_stack(
            h,
            &self.stg,
            "staging",
            image,
            self.stg_port,
            version,
            "marks_verified: true\n",
        );
    }

    fn production(&self, h: &TestHost, image: &str, version: &str) {
        self.production_gated(h, image, version, &self.stg);
    }

    /// Production with `promote_from: <gate>` as written (a stack name or
    /// a flow map).
    fn production_gated(&self, h: &TestHost, image: &str, version: &str, gate: &str) {
        let extra = format!("promote_from: {gate}\n");
        write_stack(
            h,
            &self.prod,
            "production",
            image,
            self.prod_port,
            version,
            &extra,
        );
    }
}

fn lines_with(h: &TestHost, needle: &str) -> usize {
    h.history().lines().filter(|l| l.contains(needle)).count()
}

fn digest_of(image: &str) -> &str {
    image.split_once('@').unwrap().1
}

/// The gate verdict `plan --json` gives a stack: (action, why, verdict).
fn plan_verdict(h: &TestHost, stack: &str) -> (String, String, serde_json::Value) {
    let out = h.cmd(["--json", "plan", stack]).run().ok().json();
    let item = out
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["stack"] == stack)
        .unwrap_or_else(|| panic!("{stack} not in the plan: {out}"))
        .clone();
    (
        item["action"].as_str().unwrap_or_default().to_string(),
        item["why"].as_str().unwrap_or_default().to_string(),
        item["verdict"].clone(),
    )
}

/// `validate --json DIR`: the error findings about `stack`.
fn validate_errors(h: &TestHost, dir: &Path, stack: &str) -> Vec<serde_json::Value> {
    let out = h
        .cmd_raw([OsString::from("--json"), "validate".into(), dir.into()])
        .run();
    let v: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error" && f["stack"] == stack)
        .cloned()
        .collect()
}

#[test]
fn scenario1_staging_verifies_then_production_promotes() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let p = Pair::new(&h);

    // Staging deploys v1, passes smoke and becomes verified.
    p.staging(&h, &f.v1, "v1");
    h.commit("staging v1");
    h.cmd(["sync"]).run().ok().stdout_contains("deployed");
    assert_eq!(
        h.read_root(format!("releases/verified/{}.txt", p.stg))
            .trim(),
        "v1"
    );
    let store = h.read_root(format!("releases/verified/{}.yaml", p.stg));
    assert!(store.contains(digest_of(&f.v1)), "{store}");
    assert!(store.contains("host: test-host"), "{store}");

    // Production pinned to the same digest deploys, its history names the
    // verified version.
    p.production(&h, &f.v1, "v1");
    h.commit("prod v1");
    let (action, _, verdict) = plan_verdict(&h, &p.prod);
    assert_eq!(action, "deploy");
    assert_eq!(verdict["verdict"], "pass", "{verdict}");
    assert_eq!(verdict["version"], "v1");
    h.cmd(["sync"]).run().ok().stdout_contains("deployed");
    h.serves(p.prod_port, "stackpin-test-app v1");
    let hist = h.history();
    assert!(
        hist.contains(&format!("| {} | staging | deploy | v1 | success |", p.stg)),
        "{hist}"
    );
    assert!(
        hist.contains(&format!(
            "| {} | production | deploy | v1 | success | verified in {} as v1",
            p.prod, p.stg
        )),
        "{hist}"
    );

    // Both bumped in one commit: staging converges (and verifies) first,
    // production promotes in the same run.
    p.staging(&h, &f.v2, "v2");
    p.production(&h, &f.v2, "v2");
    h.commit("bump both to v2");
    let out = h.cmd(["sync"]).run().ok();
    let stdout = out.stdout();
    let order: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("deployed"))
        .map(|l| if l.contains(&p.prod) { "prod" } else { "stg" })
        .collect();
    assert_eq!(order, ["stg", "prod"], "{}", out.stdout());
    h.serves(p.prod_port, "stackpin-test-app v2");
    let hist = h.history();
    let stg_at = hist
        .find(&format!("| {} | staging | deploy | v2 | success |", p.stg))
        .expect("staging v2 deployed");
    let prod_at = hist
        .find(&format!(
            "| {} | production | deploy | v2 | success | verified in {} as v2",
            p.prod, p.stg
        ))
        .unwrap_or_else(|| panic!("production v2 promoted in the same run:\n{hist}"));
    assert!(stg_at < prod_at, "{hist}");
    assert_eq!(
        h.read_root(format!("releases/verified/{}.txt", p.stg))
            .trim(),
        "v2"
    );
}

/// Soak (issue 34): production waits until the staging release ran clean
/// for the gate's soak; the stamp is a second, signed-like-the-first entry
/// and a `verify` line; a heal during the soak means no stamp, and the
/// production pin stays refused.
#[test]
fn production_waits_for_the_soak_and_a_heal_spoils_it() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let p = Pair::new(&h);
    let soak = std::time::Duration::from_secs(10);
    let gate = format!("{{stack: {}, soak: 10s}}", p.stg);
    p.staging(&h, &f.v1, "v1");
    p.production_gated(&h, &f.v1, "v1", &gate);
    h.commit("v1 with a 10s soak");

    // Staging deploys and verifies; production is refused, soaking.
    let out = h.cmd(["sync"]).run().code(1);
    let started = std::time::Instant::now();
    let prod_line = out
        .stdout()
        .lines()
        .find(|l| l.contains(&p.prod))
        .unwrap_or_default()
        .to_string();
    assert!(
        prod_line.contains(&format!("verified in {} as v1, soaking until", p.stg)),
        "{}",
        out.report()
    );
    let (action, why, verdict) = plan_verdict(&h, &p.prod);
    assert_eq!(action, "skip", "{why}");
    assert_eq!(verdict["verdict"], "soaking", "{verdict}");
    assert_eq!(verdict["soak"], "10s", "{verdict}");
    assert!(h.link_target(&p.prod).is_none());
    // Staging's own line says where its soak stands (when this run was
    // surely inside it: `started` is after the entry was verified).
    let out = h.cmd(["sync"]).run();
    if started.elapsed() < soak {
        out.code(1)
            .stdout_contains("is current; verified, soaking until");
    }

    // Once the soak is over, the next run stamps staging soaked and
    // promotes in the same run.
    std::thread::sleep(
        (soak + std::time::Duration::from_secs(1)).saturating_sub(started.elapsed()),
    );
    let out = h.cmd(["sync"]).run().ok();
    let stdout = out.stdout();
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(&p.stg) && l.contains("soaked 10s since")),
        "{}",
        out.report()
    );
    h.serves(p.prod_port, "stackpin-test-app v1");
    let store = h.read_root(format!("releases/verified/{}.yaml", p.stg));
    assert_eq!(store.matches("version: v1").count(), 2, "{store}");
    assert_eq!(store.matches("soaked_at:").count(), 1, "{store}");
    assert_eq!(
        lines_with(
            &h,
            &format!(
                "| {} | staging | verify | v1 | success | soaked 10s since",
                p.stg
            )
        ),
        1,
        "{}",
        h.history()
    );
    // Stamped once.
    h.cmd(["sync"]).run().ok();
    let store = h.read_root(format!("releases/verified/{}.yaml", p.stg));
    assert_eq!(store.matches("soaked_at:").count(), 1, "{store}");

    // v2: staging deploys it; its container is killed during the soak and
    // healed. However long it then runs, it is not stamped and production
    // keeps v1.
    p.staging(&h, &f.v2, "v2");
    p.production_gated(&h, &f.v2, "v2", &gate);
    h.commit("v2");
    h.cmd(["sync"]).run().code(1);
    let started = std::time::Instant::now();
    let stg = h.containers(&p.stg);
    h.docker(["kill", &stg[0].id]).run().ok();
    h.cmd(["sync"]).run().code(1);
    assert_eq!(lines_with(&h, "heal:"), 1, "{}", h.history());
    std::thread::sleep(
        (soak + std::time::Duration::from_secs(1)).saturating_sub(started.elapsed()),
    );
    let out = h.cmd(["sync"]).run().code(1);
    assert!(
        !out.stdout().contains("soaked 10s since"),
        "{}",
        out.report()
    );
    assert!(
        out.stdout().lines().any(
            |l| l.contains(&p.stg) && l.contains("verified, but not soaked: deploy success at")
        ),
        "{}",
        out.report()
    );
    let store = h.read_root(format!("releases/verified/{}.yaml", p.stg));
    assert_eq!(store.matches("soaked_at:").count(), 1, "{store}");
    let (_, _, verdict) = plan_verdict(&h, &p.prod);
    assert_eq!(verdict["verdict"], "soaking", "{verdict}");
    h.serves(p.prod_port, "stackpin-test-app v1");
}

#[test]
fn scenario2_unverified_pin_is_refused_until_break_glass() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let p = Pair::new(&h);
    p.staging(&h, &f.v1, "v1");
    p.production(&h, &f.v1, "v1");
    h.commit("v1 everywhere");
    h.cmd(["sync"]).run().ok();
    h.serves(p.prod_port, "stackpin-test-app v1");
    let good = h.link_target(&p.prod).unwrap();

    // Production pinned to v2, which staging never verified: refused, host
    // unchanged, one history line however often it syncs.
    p.production(&h, &f.v2, "v2");
    h.commit("prod v2, unverified");
    let refused = format!(
        "| {} | production | blocked | v2 | refused | unverified: web={}",
        p.prod,
        digest_of(&f.v2)
    );
    for _ in 0..3 {
        h.cmd(["sync"]).run().code(1).stdout_contains("blocked");
    }
    assert_eq!(lines_with(&h, &refused), 1, "{}", h.history());
    assert_eq!(h.link_target(&p.prod).unwrap(), good);
    h.serves(p.prod_port, "stackpin-test-app v1");
    let status = h.cmd(["status"]).run().ok();
    let row = status
        .stdout()
        .lines()
        .find(|l| l.contains(&p.prod))
        .unwrap_or_default()
        .to_string();
    assert!(row.contains("Blocked"), "{}", status.stdout());

    // validate and plan give the same verdict.
    let errs = validate_errors(&h, &h.repo(), &p.prod);
    assert!(
        errs.iter()
            .any(|e| e["field"] == "images"
                && e["message"].as_str().unwrap().contains(digest_of(&f.v2))),
        "{errs:?}"
    );
    let (action, why, verdict) = plan_verdict(&h, &p.prod);
    assert_eq!((action.as_str(), why.as_str()), ("skip", "blocked"));
    assert_eq!(verdict["verdict"], "refused", "{verdict}");
    h.cmd(["sync", "--dry-run", &p.prod])
        .run()
        .stdout_contains("unverified");

    // Break-glass for one run deploys it, audited.
    h.cmd(["sync", &p.prod, "--break-glass", "CVE hotfix"])
        .run()
        .ok()
        .stdout_contains("deployed");
    h.serves(p.prod_port, "stackpin-test-app v2");
    // The audit line names who asked (this process's user), never "the daemon".
    let me = stackpin::control::current_user();
    assert!(
        h.history().contains(&format!(
            "| {} | production | deploy | v2 | success | BREAK_GLASS: CVE hotfix (requested by {me})",
            p.prod
        )),
        "{}",
        h.history()
    );
    let on_v2 = h.link_target(&p.prod).unwrap();

    // A missing image forced through: the pull fails, nothing switches.
    p.production(&h, &f.missing, "v9-missing");
    h.commit("prod: missing image");
    h.cmd(["sync", &p.prod, "--break-glass", "CVE hotfix"])
        .run()
        .code(1)
        .stdout_contains("pull failed");
    assert_eq!(h.link_target(&p.prod).unwrap(), on_v2);

    // A broken image forced through: smoke fails, auto-revert to v2.
    p.production(&h, &f.broken, "v3-broken");
    h.commit("prod: broken image");
    h.cmd(["sync"]).run().code(1).stdout_contains("blocked");
    h.cmd(["sync", &p.prod, "--break-glass", "CVE hotfix"])
        .run()
        .code(1)
        .stdout_contains("rolled-back");
    assert_eq!(h.link_target(&p.prod).unwrap(), on_v2);
    h.serves(p.prod_port, "stackpin-test-app v2");
    let hist = h.history();
    assert!(
        hist.contains(&format!(
            "| {} | production | deploy | v3-broken | failed | smoke failed",
            p.prod
        )) && hist.contains("BREAK_GLASS: CVE hotfix"),
        "{hist}"
    );
    assert!(
        hist.contains(&format!(
            "| {} | production | rollback | v2 | success |",
            p.prod
        )),
        "{hist}"
    );
}

/// A config requiring commits touching `stack` to be signed by the
/// approver, whose key signs commits for the `git` namespace.
fn signed_policy(h: &TestHost, stack: &str) -> (PathBuf, PathBuf) {
    let s = h.ssh_signer("signer", "approver@example.com", "git");
    let cfg = h.tmp().join("config.yaml");
    common::write_config(
        &cfg,
        format!(
            "signers: {{approvers: {{allowed_signers: {}}}}}\npolicy:\n  - {{stacks: [{stack}], signed_by: approvers}}\n",
            s.allowed.display()
        ),
    )
    .unwrap();
    (s.key, cfg)
}

#[test]
fn signature_policy_blocks_unsigned_commits_for_production_only() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let p = Pair::new(&h);
    let (key, cfg) = signed_policy(&h, &p.prod);
    let with_cfg = |args: &[&str]| {
        let mut c = h.cmd([std::ffi::OsStr::new("--config"), cfg.as_os_str()]);
        c.args(args);
        c
    };

    // A signed commit: staging verifies v1 and production promotes it.
    h.git(["init", "-q", "-b", "main"]);
    p.staging(&h, &f.v1, "v1");
    p.production(&h, &f.v1, "v1");
    h.commit_signed(&key, "v1, signed");
    with_cfg(&["sync"]).run().ok();
    h.serves(p.prod_port, "stackpin-test-app v1");
    let prod_release = h.link_target(&p.prod).unwrap();

    // An unsigned commit bumping both: staging converges, production is
    // Blocked with the reason and keeps its release.
    p.staging(&h, &f.v2, "v2");
    p.production(&h, &f.v2, "v2");
    let sha = h.commit("v2, unsigned");
    let reason = format!(
        "untrusted commit {}: unsigned commit (signer set `approvers`)",
        &sha[..12]
    );
    let out = with_cfg(&["sync"]).run().code(1);
    let lines = out.stdout();
    assert!(
        lines
            .lines()
            .any(|l| l.contains(&p.stg) && l.contains("deployed")),
        "{lines}"
    );
    assert!(
        lines
            .lines()
            .any(|l| l.contains(&p.prod) && l.contains("blocked") && l.contains(&reason)),
        "{lines}"
    );
    h.serves(p.stg_port, "stackpin-test-app v2");
    h.serves(p.prod_port, "stackpin-test-app v1");
    assert_eq!(h.link_target(&p.prod).unwrap(), prod_release);
    assert!(
        h.history().contains(&format!(
            "| {} | production | blocked | v2 | refused | {reason}",
            p.prod
        )),
        "{}",
        h.history()
    );
    // The approver signs the change itself (an empty signed commit on top
    // would not do: tests/forgery.rs): production converges.
    h.git(["reset", "-q", "--soft", "HEAD~1"]);
    h.commit_signed(&key, "v2, approved and signed");
    with_cfg(&["sync"]).run().ok();
    h.serves(p.prod_port, "stackpin-test-app v2");
}

/// `status` and `plan` show the signature verdict `sync` acts on: an
/// unsigned commit is Blocked for production, with the same reason. Needs no
/// deploy: nothing runs yet.
#[test]
fn status_and_plan_show_the_signature_verdict() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let p = Pair::new(&h);
    let (_key, cfg) = signed_policy(&h, &p.prod);
    p.staging(&h, &f.v1, "v1");
    p.production(&h, &f.v1, "v1");
    let sha = h.commit("unsigned");
    let reason = format!(
        "untrusted commit {}: unsigned commit (signer set `approvers`)",
        &sha[..12]
    );
    let with_cfg = |args: &[&str]| {
        let mut c = h.cmd([std::ffi::OsStr::new("--config"), cfg.as_os_str()]);
        c.args(args);
        c
    };
    let dry = with_cfg(&["sync", "--dry-run", &p.prod]).run();
    assert!(dry.stdout().contains(&reason), "{}", dry.stdout());
    let plan = with_cfg(&["--json", "plan", &p.prod]).run().ok().json();
    assert_eq!(plan[0]["why"], "untrusted", "{plan}");
    assert_eq!(plan[0]["reason"], reason.as_str(), "{plan}");
    let status = with_cfg(&["--json", "status"]).run().json();
    let row = status
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["stack"] == p.prod.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(row["state"], "blocked", "{status}");
}

#[test]
fn verify_by_hand_publishes_and_opens_the_gate_on_another_host() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let p = Pair::new(&h);
    // Staging without marks_verified: verified only by hand.
    write_stack(&h, &p.stg, "staging", &f.v1, p.stg_port, "v1", "");
    h.commit("staging v1");
    let remote = h.bare_remote();
    // staging-1 signs what it verifies; prod-1 lists its key as a verifier.
    let marker_key = h.ssh_signer("staging-1-key", "staging-1", "stackpin-verified");
    let cfg = h.tmp().join("config.yaml");
    common::write_config(
        &cfg,
        format!(
            "host: staging-1\nverified: {{publish: true, author: \"stackpin <stackpin@staging-1>\", signing_key: {}}}\n",
            marker_key.key.display()
        ),
    )
    .unwrap();
    // Host "staging-1": root, state and config of its own; reads the bare remote.
    let staging = |args: &[&str]| {
        let mut c = h.cmd_raw([
            OsString::from("--config"),
            cfg.clone().into(),
            "--root".into(),
            h.root().into(),
            "--state-dir".into(),
            h.state_dir().into(),
            "--repo".into(),
            remote.clone().into(),
        ]);
        c.args(args);
        c
    };
    staging(&["sync"]).run().ok().stdout_contains("deployed");
    assert!(
        !h.root()
            .join(format!("releases/verified/{}.txt", p.stg))
            .exists()
    );

    // No such version: an error, nothing recorded.
    staging(&["verify", &p.stg, "v9"])
        .run()
        .code(1)
        .stderr_contains("no kept release with version v9");

    let out = staging(&["--json", "verify", &p.stg]).run().ok().json();
    assert_eq!(out["version"], "v1");
    assert_eq!(out["added"], true);
    let commit = out["published"]["commit"]
        .as_str()
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    assert_eq!(
        h.read_root(format!("releases/verified/{}.txt", p.stg))
            .trim(),
        "v1"
    );
    assert!(
        h.history().contains(&format!(
            "| {} | staging | verify | v1 | success | verified by hand",
            p.stg
        )),
        "{}",
        h.history()
    );
    let files = h.git([
        "--git-dir",
        remote.to_str().unwrap(),
        "show",
        "--name-only",
        "--format=%an <%ae>",
        &commit,
    ]);
    assert_eq!(
        files.split_whitespace().collect::<Vec<_>>(),
        [
            "stackpin",
            "<stackpin@staging-1>",
            &format!("verified/{}.yaml", p.stg)
        ],
        "{files}"
    );

    // Verifying again is idempotent (no second commit), and an older
    // version is picked by name.
    write_stack(&h, &p.stg, "staging", &f.v2, p.stg_port, "v2", "");
    h.commit("staging v2");
    h.git(["pull", "-q", "--rebase", "origin", "main"]);
    h.git(["push", "-q", "origin", "main"]);
    staging(&["sync"]).run().ok();
    let again = staging(&["--json", "verify", &p.stg, "v1"])
        .run()
        .ok()
        .json();
    assert_eq!(again["added"], false, "{again}");
    assert_eq!(
        again["release"].as_str().unwrap().split("__").next(),
        Some("v1")
    );

    // Another host that never ran staging: production pinned to v1 passes
    // the gate from git alone; validate agrees.
    let checkout = h.tmp().join("checkout");
    h.git([
        "clone",
        "-q",
        remote.to_str().unwrap(),
        checkout.to_str().unwrap(),
    ]);
    let prod_yaml = format!(
        "environment: production\nversion: v1\npromote_from: {}\nimages:\n  web: {}\nenv:\n  PORT: \"{}\"\n",
        p.stg, f.v1, p.prod_port
    );
    std::fs::create_dir_all(checkout.join(format!("stacks/{}", p.prod))).unwrap();
    std::fs::write(
        checkout.join(format!("stacks/{}/stack.yaml", p.prod)),
        &prod_yaml,
    )
    .unwrap();
    std::fs::write(
        checkout.join(format!("stacks/{}/compose.yaml", p.prod)),
        "services:\n  web:\n    image: stackpin-test/app\n    network_mode: host\n",
    )
    .unwrap();
    let co = checkout.to_str().unwrap();
    h.git(["-C", co, "add", "-A"]);
    h.git(["-C", co, "commit", "-q", "-m", "prod v1"]);
    assert!(validate_errors(&h, &checkout, &p.prod).is_empty());
    let other_root = h.tmp().join("other-root");
    std::fs::create_dir_all(&other_root).unwrap();
    let prod_plan = |config: &str| {
        let other_cfg = h.tmp().join("prod-1.yaml");
        common::write_config(&other_cfg, config).unwrap();
        h.cmd_raw([
            OsString::from("--json"),
            "--config".into(),
            other_cfg.into(),
            "--root".into(),
            other_root.clone().into(),
            "--repo".into(),
            checkout.clone().into(),
            "--host".into(),
            "prod-1".into(),
            "plan".into(),
            p.prod.clone().into(),
        ])
        .run()
        .ok()
        .json()
    };
    // Without a verifier for the source, a marker in git proves nothing.
    let plan = prod_plan("");
    assert_eq!(plan[0]["verdict"]["verdict"], "refused", "{plan}");
    assert!(
        plan[0]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("no verifiers for {}", p.stg)),
        "{plan}"
    );
    let trusting = format!(
        "signers: {{staging-hosts: {{allowed_signers: {}}}}}\nverifiers: {{{}: staging-hosts}}\n",
        marker_key.allowed.display(),
        p.stg
    );
    let plan = prod_plan(&trusting);
    assert_eq!(plan[0]["verdict"]["verdict"], "pass", "{plan}");
    assert_eq!(plan[0]["verdict"]["version"], "v1", "{plan}");

    // v2 is not verified anywhere: validate refuses it, as the gate would.
    std::fs::write(
        checkout.join(format!("stacks/{}/stack.yaml", p.prod)),
        prod_yaml
            .replace(&f.v1, &f.v2)
            .replace("version: v1", "version: v2"),
    )
    .unwrap();
    assert_eq!(validate_errors(&h, &checkout, &p.prod).len(), 1);
}
