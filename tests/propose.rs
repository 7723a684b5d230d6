//! The production pull request on one host (issue 34, item 3): the daemon
//! runs staging and production of one app, publishes to a bare repository
//! and proposes production's bump on the loopback GitHub of
//! `tests/common/github.rs`. What the fleet test
//! (`fleet::a_pinned_image_reaches_production_through_a_proposed_pull_request`)
//! does not: a newer soaked release updates the open pull request (same
//! number, its branch moved, its body rewritten) rather than opening a
//! second; a rate-limited forge is tried again at the next run, the token
//! never in the log; and `propose:` that cannot work is refused at start.

use crate::common;

use common::{Fixtures, StackFixture, TestHost};
use std::path::Path;
use std::process::Command;

#[test]
fn a_newer_soaked_release_updates_the_open_proposal() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (stg, prod) = (h.stack("stg"), h.stack("prod"));
    let (stg_port, prod_port) = (h.free_port(), h.free_port());
    let staging = |image: &str, version: &str| {
        StackFixture::new(&stg, image, stg_port, version)
            .http_only()
            .environment("staging")
            .extra("marks_verified: true\n")
            .write(&h);
    };
    staging(&f.v1, "v1");
    StackFixture::new(&prod, &f.v1, prod_port, "v1")
        .http_only()
        .environment("production")
        .extra(&format!("promote_from: {{stack: {stg}, soak: 1s}}\n"))
        .write(&h);
    h.commit("staging and production at v1");
    let remote = h.bare_remote();
    let forge =
        common::github::Forge::start("127.0.0.1", "acme", "desired-state", &remote, h.tmp());
    let key = h.ssh_signer("marker-key", "test-host", "stackpin-verified");
    let cfg = h.tmp().join("config.yaml");
    let write = |propose: &str| {
        common::write_config(
            &cfg,
            format!(
                "verified: {{publish: true, signing_key: {}, soak: 1s}}\nrepo: {{url: \"{}\", poll_interval: 1s}}\npropose:\n  - {propose}\n",
                key.key.display(),
                remote.display()
            ),
        )
        .unwrap();
    };

    // A propose: that cannot work is refused before anything starts.
    write(&format!(
        "{{from: {stg}, to: {prod}, forge: gitlab, repository: acme/desired-state, token_file: {}}}",
        forge.token_file.display()
    ));
    let check = h.check_config(&cfg, false).run().code(1);
    assert!(
        check
            .stderr()
            .contains("propose[0]: forge: \"gitlab\" is not one stackpin speaks; write `github`"),
        "{}",
        check.report()
    );

    write(&format!(
        "{{from: {stg}, to: {prod}, forge: github, repository: acme/desired-state, token_file: {}, api_url: \"{}\"}}",
        forge.token_file.display(),
        forge.url
    ));
    let socket = h.tmp().join("control.sock");
    let daemon = h
        .daemon_cmd(&cfg, remote.as_os_str(), &socket)
        .env("RUST_LOG", "stackpin=debug")
        .spawn();
    let wait = |what: &str, f: &mut dyn FnMut() -> bool| {
        let done = common::wait_for(std::time::Duration::from_secs(120), || f().then_some(()));
        assert!(done.is_some(), "{what}\n--- daemon:\n{}", daemon.stderr());
    };
    let push = || {
        for _ in 0..5 {
            h.git(["pull", "-q", "--rebase", "origin", "main"]);
            let ok = Command::new("git")
                .arg("-C")
                .arg(h.repo())
                .args(["push", "-q", "origin", "main"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
        }
        panic!("could not push to main");
    };
    let pin = |image: &str, version: &str| {
        h.git(["pull", "-q", "--rebase", "origin", "main"]);
        h.cmd([
            "pin",
            &stg,
            "web",
            image,
            "--set-version",
            version,
            "--commit",
        ])
        .current_dir(h.repo())
        .run()
        .ok();
        push();
    };
    let branch_file = |remote: &Path| {
        Command::new("git")
            .arg("--git-dir")
            .arg(remote)
            .args([
                "show",
                &format!("stackpin/promote/{prod}:stacks/{prod}/stack.yaml"),
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };

    pin(&f.v2, "v2");
    wait("a pull request proposes v2", &mut || {
        forge.pulls().iter().any(|p| p.title.contains("v2"))
    });
    let first = forge.pulls()[0].clone();
    assert!(
        branch_file(&remote).contains(&f.v2),
        "{}",
        branch_file(&remote)
    );

    // The forge is rate limited for a while: the proposal of v3 waits for
    // the next runs and then updates the same pull request.
    forge.rate_limit(1, 2);
    pin(&f.v3, "v3");
    wait("the pull request proposes v3", &mut || {
        forge.pulls().iter().any(|p| p.title.contains("v3"))
    });
    let pulls = forge.pulls();
    assert_eq!(pulls.len(), 1, "one pull request per (from, to): {pulls:?}");
    let pr = &pulls[0];
    assert_eq!((pr.number, pr.state.as_str()), (first.number, "open"));
    assert_eq!(pr.title, format!("Promote {stg} v3 to {prod}"));
    assert!(
        pr.body.contains("(v3) |") && !pr.body.contains("(v2) |"),
        "{}",
        pr.body
    );
    let file = branch_file(&remote);
    assert!(
        file.contains(&f.v3) && file.contains("version: v3"),
        "{file}"
    );
    let log = daemon.stderr();
    assert!(
        log.contains("rate limited by") && log.contains("waiting until"),
        "{log}"
    );
    let token = std::fs::read_to_string(&forge.token_file).unwrap();
    assert!(!log.contains(token.trim()), "the token is never logged");
    assert!(forge.rejected().is_empty(), "{:?}", forge.rejected());
    // The proposals never touch the tracked branch: production's pins
    // there are v1 until someone merges.
    let on_main = Command::new("git")
        .arg("--git-dir")
        .arg(&remote)
        .args(["show", &format!("main:stacks/{prod}/stack.yaml")])
        .output()
        .unwrap();
    let on_main = String::from_utf8_lossy(&on_main.stdout);
    assert!(
        on_main.contains(&f.v1) && !on_main.contains(&f.v3),
        "{on_main}"
    );
}
