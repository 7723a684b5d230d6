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
    assert_eq!(out["new"], f.v2.as_str(), "{out}");
    assert_eq!(out["old"], f.v1.as_str(), "{out}");
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
