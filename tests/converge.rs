//! Converging real stacks on the real engine (issue: converge): first deploy,
//! upgrade, auto-revert with quarantine, an unpullable digest, heal, crashes
//! at every stage, retention and concurrent syncs.

mod common;

use common::{Fixtures, TestHost};
use std::path::PathBuf;
use std::time::Duration;

/// A one-service stack of the fixture app on `port`, pinned to `image`.
fn write_stack(h: &TestHost, stack: &str, image: &str, port: u16, version: &str, extra: &str) {
    h.write(
        format!("stacks/{stack}/stack.yaml"),
        format!(
            "environment: test\nversion: {version}\nimages:\n  web: {image}\nenv:\n  PORT: \"{port}\"\n{extra}smoke:\n  timeout: 15s\n  checks:\n    - containers: {{}}\n    - http: {{url: \"http://127.0.0.1:{port}/health\", expect_status: 200, contains: ok}}\n"
        ),
    );
    h.write(
        format!("stacks/{stack}/compose.yaml"),
        "services:\n  web:\n    image: stackpin-test/app\n    network_mode: host\n    stop_grace_period: 1s\n    environment:\n      PORT: ${PORT}\n    volumes:\n      - ./config/site.conf:/etc/site.conf:ro\n",
    );
    h.write(
        format!("stacks/{stack}/config/site.conf"),
        format!("version {version}\n"),
    );
}

fn link_target(h: &TestHost, stack: &str) -> Option<PathBuf> {
    std::fs::read_link(h.root().join("stacks").join(stack)).ok()
}

fn history(h: &TestHost) -> String {
    std::fs::read_to_string(h.root().join("deploy-history.log")).unwrap_or_default()
}

fn release_dirs(h: &TestHost, stack: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(h.root().join("releases/stacks").join(stack))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The invariants every stack must satisfy after any run: the link resolves
/// to a complete release, no temp leftovers, no journal.
fn assert_consistent(h: &TestHost, stack: &str) {
    let target = link_target(h, stack)
        .unwrap_or_else(|| panic!("no link for {stack}\n{}", h.root_listing()));
    assert!(
        target.join("release.json").is_file(),
        "link points at an incomplete release {}\n{}",
        target.display(),
        h.root_listing()
    );
    for d in release_dirs(h, stack) {
        assert!(
            !d.starts_with(".tmp"),
            "temp release left behind: {d}\n{}",
            h.root_listing()
        );
    }
    assert!(
        !h.root()
            .join("releases/.stackpin/journal")
            .join(format!("{stack}.json"))
            .exists(),
        "journal not cleared\n{}",
        h.root_listing()
    );
}

/// Waits (up to 10s) until `port` serves `want` at `/`.
fn serves(h: &TestHost, port: u16, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut last = None;
    while std::time::Instant::now() < deadline {
        last = h.http_get(port, "/");
        if last.as_deref().map(str::trim) == Some(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "port {port} should serve {want:?}, last got {last:?}\n{}",
        h.root_listing()
    );
}

#[test]
fn first_deploy_then_upgrade() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("app");
    let port = h.free_port();
    write_stack(&h, &s, &f.v1, port, "v1", "");
    h.commit("v1");
    h.cmd(["sync"]).run().ok().stdout_contains("deployed");
    serves(&h, port, "stackpin-test-app v1");
    assert_consistent(&h, &s);
    let first = link_target(&h, &s).unwrap();
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
    serves(&h, port, "stackpin-test-app v2");
    assert_consistent(&h, &s);
    let second = link_target(&h, &s).unwrap();
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
        history(&h).contains(&format!("| {s} | test | deploy | v2 | success |")),
        "{}",
        history(&h)
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
    let good = link_target(&h, &s).unwrap();

    write_stack(&h, &s, &f.broken, port, "v3-broken", "");
    h.commit("broken");
    h.cmd(["sync"]).run().code(1).stdout_contains("rolled-back");
    assert_eq!(
        link_target(&h, &s).unwrap(),
        good,
        "the link must point back at the good release"
    );
    serves(&h, port, "stackpin-test-app v2");
    assert_consistent(&h, &s);
    let hist = history(&h);
    assert!(hist.contains(&format!("| {s} | test | rollback | v2 | success | smoke failed: http http://127.0.0.1:{port}/health")), "{hist}");
    assert!(
        hist.contains(&format!("| {s} | test | deploy | v3-broken | failed |")),
        "{hist}"
    );

    // Quarantined: a plain sync does nothing and says why.
    let lines = hist.lines().count();
    h.cmd(["sync"]).run().ok().stdout_contains("quarantined");
    assert_eq!(
        history(&h).lines().count(),
        lines,
        "a quarantined stack must not be retried"
    );
    h.cmd(["status"]).run().ok().stdout_contains("RolledBack");

    // --force retries it (and it fails again, reverting again).
    h.cmd(["sync", "--force", &s])
        .run()
        .code(1)
        .stdout_contains("rolled-back");
    assert_eq!(
        history(&h).matches("| rollback | v2 | success |").count(),
        2,
        "{}",
        history(&h)
    );
    serves(&h, port, "stackpin-test-app v2");

    // A new desired state clears the quarantine.
    write_stack(&h, &s, &f.v3, port, "v3", "");
    h.commit("v3");
    h.cmd(["sync"]).run().ok().stdout_contains("deployed");
    serves(&h, port, "stackpin-test-app v3");
}

#[test]
fn crash_fast_image_reverts_before_the_timeout() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("app");
    let port = h.free_port();
    write_stack(&h, &s, &f.v1, port, "v1", "");
    h.commit("v1");
    h.cmd(["sync"]).run().ok();
    write_stack(&h, &s, &f.crash, port, "crashy", "");
    h.commit("crash");
    h.cmd(["sync"]).run().code(1).stdout_contains("rolled-back");
    assert!(
        history(&h).contains("smoke failed: containers"),
        "{}",
        history(&h)
    );
    serves(&h, port, "stackpin-test-app v1");
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
        link_target(&h, &s).is_none(),
        "no release may stay linked\n{}",
        h.root_listing()
    );
    assert!(
        h.containers(&s).iter().all(|c| !c.is_running()),
        "{:?}",
        h.containers(&s)
    );
    assert!(
        history(&h).contains("first deploy left stopped"),
        "{}",
        history(&h)
    );
}

#[test]
fn unpullable_digest_leaves_the_host_untouched() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("app");
    let port = h.free_port();
    write_stack(&h, &s, &f.v1, port, "v1", "");
    h.commit("v1");
    h.cmd(["sync"]).run().ok();
    let before = link_target(&h, &s).unwrap();
    let ids: Vec<String> = h.containers(&s).into_iter().map(|c| c.id).collect();
    let dirs = release_dirs(&h, &s);

    write_stack(&h, &s, &f.missing, port, "v9", "");
    h.commit("missing");
    h.cmd(["sync"]).run().code(1).stdout_contains("pull failed");
    assert_eq!(link_target(&h, &s).unwrap(), before);
    assert_eq!(
        h.containers(&s)
            .into_iter()
            .map(|c| c.id)
            .collect::<Vec<_>>(),
        ids,
        "containers must be untouched"
    );
    assert_eq!(
        release_dirs(&h, &s),
        dirs,
        "the unused release must be removed"
    );
    assert!(
        history(&h).contains(&format!(
            "| {s} | test | deploy | v9 | failed | pull failed:"
        )),
        "{}",
        history(&h)
    );
    serves(&h, port, "stackpin-test-app v1");
}

#[test]
fn heal_brings_back_a_removed_container() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("app");
    let port = h.free_port();
    write_stack(&h, &s, &f.v1, port, "v1", "");
    h.commit("v1");
    h.cmd(["sync"]).run().ok();
    let id = h.containers(&s)[0].id.clone();
    h.docker(["rm", "-f", &id]).run().ok();
    h.cmd(["status"]).run().ok().stdout_contains("Drifted");
    h.cmd(["sync"]).run().ok().stdout_contains("healed");
    let cs = h.containers(&s);
    assert_eq!(cs.len(), 1);
    assert!(cs[0].is_running() && cs[0].runs_digest(&f.v1));
    serves(&h, port, "stackpin-test-app v1");
}

#[test]
fn killed_at_every_stage_recovers_to_a_healthy_release() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("app");
    let port = h.free_port();
    write_stack(&h, &s, &f.v1, port, "v1", "");
    h.commit("v1");
    h.cmd(["sync"]).run().ok();
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
        assert_consistent(&h, &s);
        serves(&h, port, &format!("stackpin-test-app {want}"));
        h.cmd(["sync"]).run().ok().stdout_contains("unchanged");
    }
    // Killed while reverting a broken release.
    for stage in ["revert-after-switch", "revert-after-up"] {
        let good = link_target(&h, &s).unwrap();
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
        assert_consistent(&h, &s);
        assert_eq!(
            link_target(&h, &s).unwrap(),
            good,
            "{stage}: must end on the good release"
        );
        assert!(
            h.wait_http(port, "/health", Duration::from_secs(10))
                .is_some(),
            "{stage}: the good release must serve"
        );
    }
    let hist = history(&h);
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
    let dirs = release_dirs(&h, &s);
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
    let deploys = history(&h)
        .matches(&format!("| {s} | test | deploy | v1 | success |"))
        .count();
    assert_eq!(
        deploys,
        1,
        "exactly one process may deploy\n{}",
        history(&h)
    );
    let outs = format!("{}{}", a.stdout(), b.stdout());
    assert!(
        outs.contains("deployed") && outs.contains("unchanged"),
        "{outs}"
    );
    serves(&h, port, "stackpin-test-app v1");
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
    serves(&h, pb, "stackpin-test-app v1");
    h.cmd(["prune", "--dry-run"])
        .run()
        .ok()
        .stdout_contains("would remove");
    assert!(link_target(&h, &b).is_some());
    h.cmd(["prune"]).run().ok().stdout_contains("removed");
    assert!(link_target(&h, &b).is_none(), "{}", h.root_listing());
    assert!(h.containers(&b).is_empty(), "{:?}", h.containers(&b));
    assert!(
        !release_dirs(&h, &b).is_empty(),
        "releases are kept for audit"
    );
    assert!(
        history(&h).contains(&format!("| {b} | test | prune | v1 | success |")),
        "{}",
        history(&h)
    );
    serves(&h, pa, "stackpin-test-app v1");
    h.cmd(["prune"])
        .run()
        .ok()
        .stdout_contains("nothing to prune");
}
