//! `stackpin validate` through the binary: the example repository passes, a
//! broken one is reported with file, field and fix, `--json` parses, exit
//! codes follow the contract. No engine needed.

use crate::common;

use common::TestHost;

const D1: &str = "sha256:1db6436ca7e084705cffcf3e760b6659cce449bd636edf94917b28de2df3fbe5";
const D2: &str = "sha256:9dbec371551c2626c0bce9f673e67de4d6cd0332894b359a11b1243112e169ee";

fn example() -> String {
    format!("{}/desired-state-example", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_example_repository_is_valid() {
    let h = TestHost::new();
    h.cmd_raw(["validate", &example()])
        .run()
        .ok()
        .stdout_contains("5 stack(s), 0 with errors; 0 error(s)");
    let out = h.cmd_raw(["validate", "--json", &example()]).run().ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout()).expect("--json must print JSON");
    assert_eq!(v, serde_json::json!([]));
}

#[test]
fn the_examples_production_pins_are_exactly_what_staging_verified() {
    // Removing the verified file must make the production stack fail the gate.
    let h = TestHost::new();
    let copy = h.tmp().join("copy");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(example())
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_file(copy.join("verified/odoo18-staging.yaml")).unwrap();
    let out = h.cmd_raw(["validate", "--json"]).arg(&copy).run().code(1);
    let v: Vec<serde_json::Value> = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(v.len(), 1, "{v:#?}");
    assert_eq!(v[0]["file"], "stacks/odoo18-prod/stack.yaml");
    assert_eq!(v[0]["field"], "images");
    let msg = v[0]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("not verified in `odoo18-staging`: odoo-tenant=sha256:"),
        "{msg}"
    );
}

fn good(h: &TestHost, stack: &str, extra: &str) {
    h.write(
        format!("stacks/{stack}/stack.yaml"),
        format!("environment: staging\nimages:\n  web: ghcr.io/acme/app@{D1}\n{extra}"),
    );
    h.write(format!("stacks/{stack}/compose.yaml"), "services:\n  web:\n    image: ghcr.io/acme/app\n    volumes: [\"./config/a.conf:/etc/a.conf:ro\"]\n");
    h.write(format!("stacks/{stack}/config/a.conf"), "a\n");
}

#[test]
fn errors_name_file_field_and_fix_and_other_stacks_still_validate() {
    let h = TestHost::new();
    good(&h, "good", "");
    good(&h, "bad", "");
    h.write("stacks/bad/compose.yaml", "services:\n  web:\n    image: ghcr.io/acme/app\n    volumes: [\"./config/absent.conf:/etc/a.conf:ro\"]\n  db:\n    image: postgres:latest\n");
    let out = h.cmd_raw(["validate"]).arg(h.repo()).run().code(1);
    let text = out.stdout();
    assert!(
        text.contains("error: stacks/bad/compose.yaml: services.web.volumes[0]: \"./config/absent.conf\" does not exist in stacks/bad/\n  fix: add stacks/bad/config/absent.conf to the repository or fix the path"),
        "{text}"
    );
    assert!(text.contains("error: stacks/bad/compose.yaml: services.db.image: \"postgres:latest\" uses the `:latest` tag"), "{text}");
    assert!(
        text.contains("2 stack(s), 1 with errors; 2 error(s)"),
        "{text}"
    );
    assert!(!text.contains("stacks/good"), "{text}");

    let out = h
        .cmd_raw(["validate", "--json"])
        .arg(h.repo())
        .run()
        .code(1);
    let v: Vec<serde_json::Value> = serde_json::from_str(&out.stdout()).unwrap();
    assert_eq!(v.len(), 2);
    assert!(v.iter().all(|f| f["severity"] == "error"
        && f["stack"] == "bad"
        && !f["fix"].as_str().unwrap().is_empty()));
}

#[test]
fn gate_refusal_lists_missing_digests_and_break_glass_warns() {
    let h = TestHost::new();
    good(&h, "stg", "marks_verified: true\n");
    good(&h, "prod", "promote_from: stg\n");
    h.write(
        "stacks/prod/stack.yaml",
        format!(
            "environment: production\nimages:\n  web: ghcr.io/acme/app@{D2}\npromote_from: stg\n"
        ),
    );
    h.write("verified/stg.yaml", format!("verified:\n  - {{version: v1, images: {{web: \"ghcr.io/acme/app@{D1}\"}}, verified_at: \"2026-01-31T06:55:00Z\", host: s, commit: c}}\n"));
    h.cmd_raw(["validate"])
        .arg(h.repo())
        .run()
        .code(1)
        .stdout_contains(&format!("not verified in `stg`: web={D2}"));
    h.write("stacks/prod/stack.yaml", format!("environment: production\nimages:\n  web: ghcr.io/acme/app@{D2}\npromote_from: stg\nbreak_glass: {{reason: \"CVE hotfix\"}}\n"));
    h.cmd_raw(["validate"])
        .arg(h.repo())
        .run()
        .ok()
        .stdout_contains(
            "warning: stacks/prod/stack.yaml: break_glass: break-glass skips the gate",
        );
}

#[test]
fn a_missing_directory_is_exit_2() {
    let h = TestHost::new();
    h.cmd_raw(["validate", "/nonexistent/stackpin-repo"])
        .run()
        .code(2)
        .stderr_contains("is not a directory");
}

/// `validate` reads the work tree (for pre-commit and PR checks), `plan`
/// and `sync` the committed tree: validate says which it read, and when
/// uncommitted changes make the two differ.
#[test]
fn validate_says_when_the_work_tree_differs_from_what_plan_reads() {
    let h = TestHost::new();
    good(&h, "web", "");
    let head = h.commit("web");
    let repo = h.repo();
    let out = h
        .cmd_raw(["validate".as_ref(), repo.as_os_str()])
        .run()
        .ok();
    assert!(
        out.stderr()
            .contains(&format!("the same as HEAD at {}", &head[..12])),
        "{}",
        out.report()
    );
    h.write("stacks/web/config/a.conf", "changed\n");
    let out = h
        .cmd_raw(["validate".as_ref(), repo.as_os_str()])
        .run()
        .ok();
    assert!(
        out.stderr().contains("1 uncommitted change(s)")
            && out.stderr().contains("`plan` and `sync` do not see"),
        "{}",
        out.report()
    );
}

/// `validate --gate` (issue 15): the PR check's summary. Without a host
/// config every verified entry counts and the report says the signatures
/// were not checked; with the config production hosts use, an unsigned
/// entry is ignored (the PR fails, naming why) until the staging host's key
/// signs it.
#[test]
fn the_gate_report_checks_marker_signatures_with_the_hosts_verifiers() {
    let h = TestHost::new();
    let image = format!("ghcr.io/acme/app@{D1}");
    for (stack, extra) in [
        ("shop-staging", ""),
        ("shop-production", "promote_from: shop-staging\n"),
    ] {
        h.write(
            format!("stacks/{stack}/stack.yaml"),
            format!("environment: x\nimages: {{web: \"{image}\"}}\n{extra}"),
        );
        h.write(
            format!("stacks/{stack}/compose.yaml"),
            "services:\n  web: {image: ghcr.io/acme/app}\n",
        );
    }
    let mut entry = stackpin::desired::spec::VerifiedEntry {
        version: "v1".into(),
        images: [("web".to_string(), image.clone())].into(),
        verified_at: "2026-12-01T00:00:00Z".into(),
        host: "staging-1".into(),
        commit: "0".repeat(40),
        soaked_at: None,
        signature: None,
    };
    let write_markers = |e: &stackpin::desired::spec::VerifiedEntry| {
        h.write(
            "verified/shop-staging.yaml",
            serde_json::to_string(&serde_json::json!({"verified": [e]})).unwrap(),
        );
    };
    write_markers(&entry);
    h.commit("production promotes what staging verified");
    let repo = h.repo();
    let gate = |cfg: Option<&std::path::Path>| {
        let mut c = match cfg {
            Some(p) => h.cmd_raw(["--config".as_ref(), p.as_os_str()]),
            None => h.cmd_raw(Vec::<&str>::new()),
        };
        c.args(["validate".as_ref(), "--gate".as_ref(), repo.as_os_str()]);
        c.run()
    };

    let text = gate(None).ok().stdout();
    assert!(
        text.contains("| `shop-production` | `shop-staging` | ✅ every pin verified in `shop-staging` entry `v1`; marker signatures not checked"),
        "{text}"
    );

    let signer = h.ssh_signer("staging-1", "staging-1", "stackpin-verified");
    let cfg = h.tmp().join("host.yaml");
    common::write_config(
        &cfg,
        format!(
            "signers: {{staging: {{allowed_signers: {}}}}}\nverifiers: {{shop-staging: staging}}\n",
            signer.allowed.display()
        ),
    )
    .unwrap();
    let out = gate(Some(&cfg)).code(1);
    let text = out.stdout();
    assert!(text.contains("❌ not verified: web="), "{text}");
    assert!(
        text.contains("ignored verified/shop-staging.yaml entry v1 from staging-1: unsigned"),
        "{text}"
    );

    entry.signature = Some(h.sign_marker(&signer.key, &entry, "shop-staging"));
    write_markers(&entry);
    let text = gate(Some(&cfg)).ok().stdout();
    assert!(
        text.contains("✅ every pin verified in `shop-staging` entry `v1`; 0 marker(s) ignored"),
        "{text}"
    );
    assert!(text.contains("### Findings: 0 error(s)"), "{text}");
}

/// Issue 35: a mistyped stack.yaml key (`keep_release:`) listed the 18
/// keys allowed there but not the one meant, and hid the file's other
/// mistakes until it was fixed. Every unknown key is reported in one run,
/// each with the near key.
#[test]
fn every_unknown_key_of_a_file_is_said_at_once_with_the_near_key() {
    let h = TestHost::new();
    good(&h, "typos", "keep_release: 3\nsmoke: {timout: 3s}\n");
    let out = h.cmd_raw(["validate"]).arg(h.repo()).run().code(1);
    let text = out.stdout();
    assert!(
        text.contains("error: stacks/typos/stack.yaml: keep_release: unknown field `keep_release`")
            && text.contains("  fix: did you mean `keep_releases`?")
            && text
                .contains("error: stacks/typos/stack.yaml: smoke.timout: unknown field `timout`")
            && text.contains("  fix: did you mean `timeout`?")
            && text.contains("1 stack(s), 1 with errors; 2 error(s)"),
        "{text}"
    );
}

/// Colours mark the severities on a terminal only: `--color always`
/// forces them, a pipe gets none, a terminal (a pseudo-terminal from
/// `script`) gets them unless `NO_COLOR` is set or `--color never` is given.
#[test]
fn colours_mark_severities_on_a_terminal_only() {
    const ESC: &str = "\u{1b}[";
    let h = TestHost::new();
    good(&h, "bad", "");
    h.write(
        "stacks/bad/compose.yaml",
        "services:\n  web:\n    image: ghcr.io/acme/app\n  db:\n    image: postgres:latest\n",
    );
    let repo = h.repo().display().to_string();
    let piped = h
        .cmd_raw(["validate", &repo])
        .env_remove("NO_COLOR")
        .run()
        .code(1)
        .stdout();
    assert!(
        piped.contains("error: stacks/bad/compose.yaml") && !piped.contains(ESC),
        "{piped}"
    );
    let forced = h
        .cmd_raw(["validate", "--color", "always", &repo])
        .run()
        .code(1)
        .stdout();
    assert!(
        forced.contains(&format!(
            "{ESC}1m{ESC}31merror{ESC}0m: stacks/bad/compose.yaml"
        )),
        "{forced}"
    );

    // On a terminal: `script` runs the command on a pseudo-terminal and
    // copies what it printed (-e: its exit status; -q: no banner).
    let on_a_terminal = |extra: &str, no_color: bool| {
        let mut c = std::process::Command::new("script");
        let line = format!("{} validate {extra} {repo}", common::STACKPIN);
        c.args(["-qec", &line, "/dev/null"]).env("TERM", "xterm");
        common::without_developer_env(&mut c);
        if no_color {
            c.env("NO_COLOR", "1");
        } else {
            c.env_remove("NO_COLOR");
        }
        h.command(c).run().code(1).stdout()
    };
    let tty = on_a_terminal("", false);
    assert!(tty.contains(&format!("{ESC}31merror{ESC}0m")), "{tty}");
    let tty = on_a_terminal("", true);
    assert!(
        tty.contains("error: stacks/bad") && !tty.contains(ESC),
        "{tty}"
    );
    let tty = on_a_terminal("--color never", false);
    assert!(
        tty.contains("error: stacks/bad") && !tty.contains(ESC),
        "{tty}"
    );
}
