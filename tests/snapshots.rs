//! The operator's day as a person reads it (issue 35): what `status`,
//! `history`, `releases`, `rollback --list` and `plan` print after a
//! deploy, an upgrade and a broken bump that is reverted, kept as
//! snapshots (`tests/snapshots/`). Times, release ids, digests, commits,
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
            .write(&h);
        h.commit(version);
    };
    write(&f.v1, "v1");
    h.cmd(["sync"]).run().ok();
    write(&f.v2, "v2");
    h.cmd(["sync"]).run().ok();
    write(&f.broken, "v3-broken");
    h.cmd(["sync"]).run().code(1);
    h.serves(port, "stackpin-test-app v2");

    let settings = settings(&h, &s);
    let shown = |args: &[&str]| h.cmd(args).run().ok().stdout();
    settings.bind(|| {
        insta::assert_snapshot!("status", shown(&["status"]));
        insta::assert_snapshot!("history", shown(&["history"]));
        insta::assert_snapshot!("releases", shown(&["releases", &s]));
        insta::assert_snapshot!("rollback_list", shown(&["rollback", &s, "--list"]));
        insta::assert_snapshot!("plan_quarantined", shown(&["plan"]));
    });
}
