//! The operator's day as a person reads it (issue 35): what `sync` prints
//! for a deploy, an upgrade and a broken bump that is reverted, then
//! `status`, `history`, `releases`, `rollback --list`, `plan`, `hold` and
//! `resume`, `backup` and `restore --list`, and `validate` and `plan` on
//! the example repository and on a file with a typo, kept as snapshots
//! (`tests/snapshots/`). Times, release ids, digests, commits,
//! ports, paths and the test's stack prefix are filtered; a change in a
//! column, a word or a line shows as a diff. `cargo insta review` (or
//! `INSTA_UPDATE=always`) accepts a deliberate change.

use crate::common;
use common::{Fixtures, StackFixture, TestHost};

fn settings(h: &TestHost, stack: &str) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("snapshots");
    s.set_prepend_module_to_snapshot(false);
    s.set_omit_expression(true);
    let (prefix, _) = stack.split_once('-').unwrap();
    for (pattern, with) in [
        (
            regex_escape(&h.tmp().display().to_string()),
            "[TMP]".to_string(),
        ),
        (regex_escape(prefix), "sp".to_string()),
        (r"sha256:[0-9a-f]{64}".into(), "sha256:[DIGEST]".into()),
        (r"\b[0-9a-f]{64}\b".into(), "[HEX64]".into()),
        (r"\b[0-9a-f]{12}\b".into(), "[HEX12]".into()),
        (r"\d{8}T\d{6}Z".into(), "[ID]".into()),
        (
            r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}Z?".into(),
            "[TIME]".into(),
        ),
        (r"127\.0\.0\.1:\d+".into(), "127.0.0.1:[PORT]".into()),
        // Durations and sizes as measured.
        (r"\b\d+(\.\d+)?(ms|s|m)\b".into(), "[DUR]".into()),
        (
            r"\b\d+(\.\d+)? ?(B|KiB|MiB|kB|MB)\b".into(),
            "[SIZE]".into(),
        ),
        // Which compose the run uses (v1 or v2) is the suite's choice.
        (r"(?m)^compose: .*$".into(), "compose: [COMPOSE]".into()),
    ] {
        s.add_filter(&pattern, with);
    }
    s
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$#&-~".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

#[test]
fn the_operators_day_reads_as_it_did() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("shop");
    let port = h.free_port();
    let write = |image: &str, version: &str| {
        StackFixture::new(&s, image, port, version)
            .smoke_timeout("10s")
            // A named volume, archived by `backup` (before every deploy
            // too): one more item of the web service's `volumes:` list,
            // which the site.conf mount opens.
            .service("      - data:/data\n")
            .top_level("volumes:\n  data: {}\n")
            .extra("backup:\n  volumes: [data]\n")
            .write(&h);
        h.commit(version);
    };
    let settings = settings(&h, &s);
    let shown = |args: &[&str]| h.cmd(args).run().ok().stdout();
    write(&f.v1, "v1");
    let deploy = shown(&["sync"]);
    write(&f.v2, "v2");
    let upgrade = shown(&["sync"]);
    write(&f.broken, "v3-broken");
    let reverted = h.cmd(["sync"]).run().code(1).stdout();
    h.serves(port, "stackpin-test-app v2");

    settings.bind(|| {
        insta::assert_snapshot!("sync_deploy", deploy);
        insta::assert_snapshot!("sync_upgrade", upgrade);
        insta::assert_snapshot!("sync_reverted", reverted);
        insta::assert_snapshot!("status", shown(&["status"]));
        insta::assert_snapshot!("history", shown(&["history"]));
        insta::assert_snapshot!("releases", shown(&["releases", &s]));
        insta::assert_snapshot!("rollback_list", shown(&["rollback", &s, "--list"]));
        insta::assert_snapshot!("plan_quarantined", shown(&["plan"]));
        insta::assert_snapshot!(
            "hold",
            shown(&["hold", &s, "--reason", "checking the database"])
        );
        insta::assert_snapshot!("status_held", shown(&["status"]));
        insta::assert_snapshot!("resume", shown(&["resume", &s]));
        insta::assert_snapshot!("backup", shown(&["backup", &s]));
        insta::assert_snapshot!("restore_list", shown(&["restore", &s, "--list"]));
    });
}

/// `validate` and `plan` on the example repository as a staging host reads
/// it, and `validate` on a file with a typo.
#[test]
fn the_example_and_a_typo_read_as_they_did() {
    let h = TestHost::new();
    let example = format!("{}/desired-state-example", env!("CARGO_MANIFEST_DIR"));
    let cfg = h.config("staging.yaml", "host: staging-1\nlabels: {role: staging}\n");
    let plan = h
        .cmd_raw(["--config".as_ref(), cfg.as_os_str()])
        .args(["--repo", &example, "--host", "staging-1", "--root"])
        .arg(h.root())
        .arg("--state-dir")
        .arg(h.state_dir())
        .arg("plan")
        .run()
        .ok()
        .stdout();
    // The files' diffs are the example's own text: their headers stay.
    let plan: Vec<&str> = plan
        .lines()
        .filter(|l| {
            !["  +", "  -", "  @@", "  \\"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    let typo = h.tmp().join("typo");
    for (file, text) in [
        (
            "stacks/shop/stack.yaml",
            "environment: staging\nkeep_release: 3\nsmoke: {timeuot: 10s}\nimages:\n  web: ghcr.io/acme/shop@sha256:1db6436ca7e084705cffcf3e760b6659cce449bd636edf94917b28de2df3fbe5\n",
        ),
        (
            "stacks/shop/compose.yaml",
            "services:\n  web:\n    image: ghcr.io/acme/shop\n    enviroment: {A: b}\n",
        ),
    ] {
        std::fs::create_dir_all(typo.join(file).parent().unwrap()).unwrap();
        std::fs::write(typo.join(file), text).unwrap();
    }
    let validate_typo = h.cmd_raw(["validate"]).arg(&typo).run().code(1).stdout();
    let mut settings = settings(&h, "sp-x");
    settings.add_filter(&regex_escape(env!("CARGO_MANIFEST_DIR")), "[SRC]");
    settings.bind(|| {
        insta::assert_snapshot!(
            "validate_example",
            h.cmd_raw(["validate", &example]).run().ok().stdout()
        );
        insta::assert_snapshot!("plan_example", plan.join("\n"));
        insta::assert_snapshot!("validate_typo", validate_typo);
    });
}
