//! Converging real stacks on the real engine (issue: converge): first deploy,
//! upgrade, auto-revert with quarantine, an unpullable digest, heal, crashes
//! at every stage, retention and concurrent syncs.

use crate::common;

use common::{Fixtures, Flavour, StackFixture, TestHost};
use std::time::Duration;

/// A one-service stack of the fixture app on `port`, pinned to `image`.
fn write_stack(h: &TestHost, stack: &str, image: &str, port: u16, version: &str, extra: &str) {
    StackFixture::new(stack, image, port, version)
        .extra(extra)
        .write(h);
}

/// The invariants every stack must satisfy after any run: the link resolves
/// to a complete release, no temp leftovers, no journal.
#[test]
fn first_deploy_then_upgrade() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (s, port) = h.deployed();
    h.serves(port, "stackpin-test-app v1");
    h.assert_consistent(&s);
    // The suite runs under the compose STACKPIN_TEST_FLAVOUR names.
    Flavour::default_for_tests().assert_made(&h, &s);
    let first = h.link_target(&s).unwrap();
    let cs = h.containers(&s);
    assert_eq!(cs.len(), 1);
    assert!(cs[0].runs_digest(&f.v1), "{cs:?}");

    // `docker compose ps` works by hand in /srv/stacks/<stack>.
    let mut ps = std::process::Command::new("sh");
    ps.arg("-c")
        .arg(format!("{} ps", f.compose))
        .current_dir(h.root().join("stacks").join(&s));
    let out = h.command(ps).run().ok();
    assert!(
        out.stdout().contains("Up") || out.stdout().contains("running"),
        "{}",
        out.stdout()
    );
    let env = std::fs::read_to_string(first.join(".env")).unwrap();
    assert!(env.contains(&format!("COMPOSE_PROJECT_NAME={s}")), "{env}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(first.join(".env"))
            .unwrap()
            .permissions()
            .mode()
            & 0o077,
        0,
        ".env must not be readable by others"
    );

    write_stack(&h, &s, &f.v2, port, "v2", "");
    h.commit("v2");
    h.cmd(["sync"]).run().ok().stdout_contains("deployed");
    h.serves(port, "stackpin-test-app v2");
    h.assert_consistent(&s);
    let second = h.link_target(&s).unwrap();
    assert_ne!(first, second, "the link must switch to a new release");
    assert!(
        first.join("release.json").is_file(),
        "the old release is kept"
    );
    assert!(h.containers(&s).iter().all(|c| c.runs_digest(&f.v2)));
    let current: serde_json::Value =
        serde_json::from_str(&h.read_root(format!("releases/current/{s}.json"))).unwrap();
    assert_eq!(current["version"], "v2");
    assert_eq!(current["images"]["web"]["pinned"], f.v2.as_str());
    assert!(
        h.history()
            .contains(&format!("| {s} | test | deploy | v2 | success |")),
        "{}",
        h.history()
    );

    // Nothing changed: a second sync does nothing.
    h.cmd(["sync"]).run().ok().stdout_contains("unchanged");
}

#[test]
fn broken_image_auto_reverts_and_is_quarantined() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("app");
    let port = h.free_port();
    write_stack(&h, &s, &f.v2, port, "v2", "");
    h.commit("v2");
    h.cmd(["sync"]).run().ok();
    let good = h.link_target(&s).unwrap();

    write_stack(&h, &s, &f.broken, port, "v3-broken", "");
    h.commit("broken");
    h.cmd(["sync"]).run().code(1).stdout_contains("rolled-back");
    assert_eq!(
        h.link_target(&s).unwrap(),
        good,
        "the link must point back at the good release"
    );
    h.serves(port, "stackpin-test-app v2");
    h.assert_consistent(&s);
    let hist = h.history();
    assert!(hist.contains(&format!("| {s} | test | rollback | v2 | success | smoke failed: http http://127.0.0.1:{port}/health")), "{hist}");
    assert!(
        hist.contains(&format!("| {s} | test | deploy | v3-broken | failed |")),
        "{hist}"
    );

    // Quarantined: a plain sync does nothing and says why.
    let lines = hist.lines().count();
    h.cmd(["sync"]).run().ok().stdout_contains("quarantined");
    assert_eq!(
        h.history().lines().count(),
        lines,
        "a quarantined stack must not be retried"
    );
    h.cmd(["status"]).run().ok().stdout_contains("RolledBack");
    // Its two axes apart: git's version is quarantined, what runs (the
    // previous release) is healthy.
    assert_eq!(h.axes(&s), ("quarantined".into(), "healthy".into()));

    // --force retries it (and it fails again, reverting again).
    h.cmd(["sync", "--force", &s])
        .run()
        .code(1)
        .stdout_contains("rolled-back");
    assert_eq!(
        h.history().matches("| rollback | v2 | success |").count(),
        2,
        "{}",
        h.history()
    );
    h.serves(port, "stackpin-test-app v2");

    // A new desired state clears the quarantine.
    write_stack(&h, &s, &f.v3, port, "v3", "");
    h.commit("v3");
    h.cmd(["sync"]).run().ok().stdout_contains("deployed");
    h.serves(port, "stackpin-test-app v3");
}

#[test]
fn crash_fast_image_reverts_before_the_timeout() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (s, port) = h.deployed();
    write_stack(&h, &s, &f.crash, port, "crashy", "");
    h.commit("crash");
    let out = h.cmd(["sync", "--json"]).run().code(1);
    assert!(
        h.history().contains("smoke failed: containers"),
        "{}",
        h.history()
    );
    h.serves(port, "stackpin-test-app v1");
    // What the crashing container printed is kept with the failed smoke
    // stage (read before the revert replaced it).
    let json: serde_json::Value = serde_json::from_str(&out.stdout()).expect("sync --json");
    let smoke = json[0]["stages"]
        .as_array()
        .and_then(|st| st.iter().find(|x| x["name"] == "smoke" && x["ok"] == false))
        .unwrap_or_else(|| panic!("no smoke stage\n{}", out.report()));
    let logs = smoke["output"].as_str().unwrap_or_default();
    assert!(
        logs.contains("--- service web") && logs.contains("stackpin-test-app crash: exiting 1"),
        "{}",
        out.report()
    );
}

#[test]
fn first_deploy_that_fails_is_left_stopped() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("app");
    let port = h.free_port();
    write_stack(&h, &s, &f.broken, port, "bad", "");
    h.commit("bad");
    h.cmd(["sync"]).run().code(1).stdout_contains("FAILED");
    assert!(
        h.link_target(&s).is_none(),
        "no release may stay linked\n{}",
        h.root_listing()
    );
    assert!(
        h.containers(&s).iter().all(|c| !c.is_running()),
        "{:?}",
        h.containers(&s)
    );
    assert!(
        h.history().contains("first deploy left stopped"),
        "{}",
        h.history()
    ); // Nothing runs: missing, not "failed" (issue 35); git's version is
    // not what runs.
    let (sync, health) = h.axes(&s);
    assert_eq!(health, "missing");
    assert_ne!(sync, "synced");
}

#[test]
fn unpullable_digest_leaves_the_host_untouched() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (s, port) = h.deployed();
    let before = h.link_target(&s).unwrap();
    let ids: Vec<String> = h.containers(&s).into_iter().map(|c| c.id).collect();
    let dirs = h.release_dirs(&s);

    write_stack(&h, &s, &f.missing, port, "v9", "");
    h.commit("missing");
    h.cmd(["sync"]).run().code(1).stdout_contains("pull failed");
    assert_eq!(h.link_target(&s).unwrap(), before);
    assert_eq!(
        h.containers(&s)
            .into_iter()
            .map(|c| c.id)
            .collect::<Vec<_>>(),
        ids,
        "containers must be untouched"
    );
    assert_eq!(
        h.release_dirs(&s),
        dirs,
        "the unused release must be removed"
    );
    assert!(
        h.history().contains(&format!(
            "| {s} | test | deploy | v9 | failed | pull failed:"
        )),
        "{}",
        h.history()
    );
    h.serves(port, "stackpin-test-app v1");
}

#[test]
fn heal_brings_back_a_removed_container() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (s, port) = h.deployed();
    let id = h.containers(&s)[0].id.clone();
    h.docker(["rm", "-f", &id]).run().ok();
    h.cmd(["status"]).run().ok().stdout_contains("Drifted");
    assert_eq!(h.axes(&s), ("out_of_sync".into(), "degraded".into()));
    h.cmd(["sync"]).run().ok().stdout_contains("healed");
    let cs = h.containers(&s);
    assert_eq!(cs.len(), 1);
    assert!(cs[0].is_running() && cs[0].runs_digest(&f.v1));
    h.serves(port, "stackpin-test-app v1");
}

#[test]
fn killed_at_every_stage_recovers_to_a_healthy_release() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (s, port) = h.deployed();
    let mut n = 0;
    for stage in [
        "after-create",
        "after-pull",
        "after-journal",
        "after-switch",
        "after-up",
        "after-smoke",
        "after-record",
    ] {
        n += 1;
        let (img, want) = if n % 2 == 1 {
            (&f.v2, "v2")
        } else {
            (&f.v1, "v1")
        };
        write_stack(&h, &s, img, port, &format!("{want}-{n}"), "");
        h.commit(stage);
        let out = h.cmd(["sync"]).env("STACKPIN_FAULT", stage).run();
        assert!(
            !out.success(),
            "{stage}: the fault must kill the process\n{}",
            out.report()
        );
        assert!(
            out.stderr().contains(&format!("fault injected at {stage}")),
            "{}",
            out.report()
        );
        // The next run recovers and converges.
        h.cmd(["sync"]).run().ok();
        h.assert_consistent(&s);
        h.serves(port, &format!("stackpin-test-app {want}"));
        h.cmd(["sync"]).run().ok().stdout_contains("unchanged");
    }
    // Killed while reverting a broken release.
    for stage in ["revert-after-switch", "revert-after-up"] {
        let good = h.link_target(&s).unwrap();
        n += 1;
        write_stack(&h, &s, &f.broken, port, &format!("broken-{n}"), "");
        h.commit(stage);
        let out = h.cmd(["sync"]).env("STACKPIN_FAULT", stage).run();
        assert!(
            out.stderr().contains(&format!("fault injected at {stage}")),
            "{}",
            out.report()
        );
        h.cmd(["sync"]).run();
        h.assert_consistent(&s);
        assert_eq!(
            h.link_target(&s).unwrap(),
            good,
            "{stage}: must end on the good release"
        );
        assert!(
            h.wait_http(port, "/health", Duration::from_secs(10))
                .is_some(),
            "{stage}: the good release must serve"
        );
    }
    let hist = h.history();
    assert!(hist.contains("interrupted deploy"), "{hist}");
}

#[test]
fn retention_keeps_current_previous_and_verified() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("app");
    let port = h.free_port();
    write_stack(
        &h,
        &s,
        &f.v1,
        port,
        "v1",
        "keep_releases: 2\nmarks_verified: true\n",
    );
    h.commit("v1");
    h.cmd(["sync"]).run().ok();
    assert_eq!(
        h.read_root(format!("releases/verified/{s}.txt")).trim(),
        "v1"
    );
    for (i, img) in [&f.v2, &f.v3, &f.v2].into_iter().enumerate() {
        write_stack(&h, &s, img, port, &format!("r{i}"), "keep_releases: 2\n");
        h.commit(&format!("r{i}"));
        h.cmd(["sync"]).run().ok();
    }
    let dirs = h.release_dirs(&s);
    let versions: Vec<&str> = dirs.iter().map(|d| d.split("__").next().unwrap()).collect();
    assert_eq!(versions.len(), 3, "keep 2 + the verified one: {dirs:?}");
    assert!(
        versions.contains(&"v1"),
        "the verified release must stay: {dirs:?}"
    );
    assert!(
        versions.contains(&"r1") && versions.contains(&"r2"),
        "current and previous must stay: {dirs:?}"
    );
    h.cmd(["releases", &s])
        .run()
        .ok()
        .stdout_contains("current")
        .stdout_contains("verified");
}

#[test]
fn concurrent_syncs_never_converge_one_stack_twice() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("app");
    let port = h.free_port();
    write_stack(&h, &s, &f.v1, port, "v1", "");
    h.commit("v1");
    let a = h.cmd(["sync"]).spawn();
    let b = h.cmd(["sync"]).spawn();
    let (a, b) = (a.wait(), b.wait());
    assert!(a.success() && b.success(), "{}\n{}", a.report(), b.report());
    let deploys = h
        .history()
        .matches(&format!("| {s} | test | deploy | v1 | success |"))
        .count();
    assert_eq!(
        deploys,
        1,
        "exactly one process may deploy\n{}",
        h.history()
    );
    let outs = format!("{}{}", a.stdout(), b.stdout());
    assert!(
        outs.contains("deployed") && outs.contains("unchanged"),
        "{outs}"
    );
    h.serves(port, "stackpin-test-app v1");
}

#[test]
fn a_stack_removed_from_git_is_left_running_until_pruned() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (a, b) = (h.stack("keep"), h.stack("gone"));
    let (pa, pb) = (h.free_port(), h.free_port());
    write_stack(&h, &a, &f.v1, pa, "v1", "");
    write_stack(&h, &b, &f.v1, pb, "v1", "");
    h.commit("two stacks");
    h.cmd(["sync"]).run().ok();
    h.remove(format!("stacks/{b}"));
    h.commit("drop one");
    // prune is off by default: reported, left running.
    h.cmd(["sync"])
        .run()
        .ok()
        .stdout_contains("left running because prune is off");
    h.serves(pb, "stackpin-test-app v1");
    h.cmd(["prune", "--dry-run"])
        .run()
        .ok()
        .stdout_contains("would remove");
    assert!(h.link_target(&b).is_some());
    h.cmd(["prune"]).run().ok().stdout_contains("removed");
    assert!(h.link_target(&b).is_none(), "{}", h.root_listing());
    assert!(h.containers(&b).is_empty(), "{:?}", h.containers(&b));
    assert!(
        !h.release_dirs(&b).is_empty(),
        "releases are kept for audit"
    );
    assert!(
        h.history()
            .contains(&format!("| {b} | test | prune | v1 | success |")),
        "{}",
        h.history()
    );
    h.serves(pa, "stackpin-test-app v1");
    h.cmd(["prune"])
        .run()
        .ok()
        .stdout_contains("nothing to prune");
}
