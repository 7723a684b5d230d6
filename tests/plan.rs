//! `stackpin plan` on a real host: every action kind appears with its
//! reason, and the command changes nothing (the root is hashed before and
//! after, and the containers are the same).

use crate::common;

use common::{Fixtures, StackFixture, TestHost};
use sha2::{Digest, Sha256};
use std::path::Path;

fn write_stack(h: &TestHost, stack: &str, image: &str, port: u16, version: &str, extra: &str) {
    StackFixture::new(stack, image, port, version)
        .extra(extra)
        .smoke_timeout("6s")
        .http_only()
        .write(h);
}

/// sha256 over every path, mode, symlink target and file content under `dir`.
fn hash_tree(dir: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let mut paths = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            paths.push((p, m));
        }
    }
    paths.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    for (p, m) in paths {
        h.update(p.to_string_lossy().as_bytes());
        h.update(m.permissions().mode().to_le_bytes());
        if m.file_type().is_symlink() {
            h.update(std::fs::read_link(&p).unwrap().to_string_lossy().as_bytes());
        } else if m.is_file() {
            h.update(std::fs::read(&p).unwrap());
        }
    }
    hex::encode(h.finalize())
}

#[test]
fn plan_shows_every_action_and_changes_nothing() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let names = ["same", "bump", "drift", "quar", "held", "gone", "away"].map(|n| h.stack(n));
    let [same, bump, drift, quar, held, gone, away] = names.clone();
    let ports: Vec<u16> = names.iter().map(|_| h.free_port()).collect();
    for (i, s) in names.iter().enumerate() {
        write_stack(&h, s, &f.v1, ports[i], "v1", "");
    }
    h.commit("all on v1");
    h.cmd(["sync"]).run().ok();

    // Drive each stack into the state that gives its action.
    write_stack(&h, &quar, &f.broken, ports[3], "bad", "");
    h.commit("quar: broken");
    h.cmd(["sync", &quar]).run().code(1); // reverted and quarantined
    h.cmd(["hold", &held, "--reason", "investigating"])
        .run()
        .ok();
    let id = h.containers(&drift)[0].id.clone();
    h.docker(["rm", "-f", &id]).run().ok();
    write_stack(&h, &bump, &f.v2, ports[1], "v2", "");
    h.remove(format!("stacks/{gone}"));
    write_stack(&h, &away, &f.v1, ports[6], "v1", "hosts: [another-host]\n");
    let stg = h.stack("stg");
    write_stack(
        &h,
        &stg,
        &f.v1,
        h.free_port(),
        "v1",
        "hosts: [another-host]\n",
    );
    let gated = h.stack("gated");
    write_stack(
        &h,
        &gated,
        &f.v3,
        h.free_port(),
        "v3",
        &format!("promote_from: {stg}\n"),
    );
    let bad = h.stack("bad");
    h.write(
        format!("stacks/{bad}/stack.yaml"),
        "images: {web: \"app:latest\"}\n",
    );
    h.write(
        format!("stacks/{bad}/compose.yaml"),
        "services:\n  web: {image: app}\n",
    );
    h.commit("every action");

    let before = hash_tree(&h.root());
    let containers_before: Vec<(String, String)> = names
        .iter()
        .flat_map(|s| h.containers(s))
        .map(|c| (c.id, c.state))
        .collect();

    let out = h.cmd(["plan", "--json"]).run().ok();
    let plan: Vec<serde_json::Value> = serde_json::from_str(&out.stdout()).expect("plan --json");
    let action = |s: &str| -> (String, String, String) {
        let it = plan
            .iter()
            .find(|p| p["stack"] == s)
            .unwrap_or_else(|| panic!("{s} missing from plan:\n{}", out.stdout()));
        (
            it["action"].as_str().unwrap_or("").to_string(),
            it["why"].as_str().unwrap_or("").to_string(),
            it["reason"].as_str().unwrap_or("").to_string(),
        )
    };
    let cases = [
        (&same, "noop", "", "is current"),
        (&bump, "deploy", "", "differs from release"),
        (&drift, "heal", "", "web: no container"),
        (&quar, "skip", "quarantined", "quarantined"),
        (&held, "skip", "held", "investigating"),
        (&gone, "skip", "orphaned", "prune is off"),
        // Deployed here, then moved: orphaned (prune is off), not ignored.
        (&away, "skip", "orphaned", "another-host"),
        (&stg, "skip", "not_for_this_host", "another-host"),
        (&gated, "skip", "blocked", "unverified: web=sha256:"),
        (&bad, "skip", "invalid", "has errors"),
    ];
    for (s, a, why, reason) in cases {
        let (got_a, got_why, got_reason) = action(s);
        assert_eq!(
            (got_a.as_str(), got_why.as_str()),
            (a, why),
            "{s}: {got_reason}\n{}",
            out.stdout()
        );
        assert!(
            got_reason.contains(reason),
            "{s}: reason {got_reason:?} lacks {reason:?}"
        );
    }
    // The bump shows its image change and a unified diff of the changed file.
    let bump_plan = plan.iter().find(|p| p["stack"] == bump.as_str()).unwrap();
    assert!(
        bump_plan["images"][0]
            .as_str()
            .unwrap()
            .contains("(version v1 → v2)"),
        "{bump_plan}"
    );
    let diffs = bump_plan["files"].to_string();
    assert!(
        diffs.contains("-version v1") && diffs.contains("+version v2"),
        "{diffs}"
    );
    // Text output too: the override's digests cut to 12 hex, whole with
    // --long (and in --json).
    let v2 = f.v2.split_once("@sha256:").unwrap().1;
    let text = h
        .cmd(["plan", &bump])
        .run()
        .ok()
        .stdout_contains("+version v2")
        .stdout_contains("image web: sha256:")
        .stdout_contains(&format!("@sha256:{}…", &v2[..12]))
        .stdout();
    assert!(!text.contains(v2), "{text}");
    h.cmd(["plan", "--long", &bump])
        .run()
        .ok()
        .stdout_contains(&format!("@sha256:{v2}"));
    assert!(diffs.contains(v2), "{diffs}");

    // With prune on, the orphan becomes a removal.
    h.write("stackpin.yaml", "prune: true\n");
    h.commit("prune on");
    let out = h.cmd(["plan", "--json", &gone]).run().ok();
    assert!(
        out.stdout().contains("\"action\": \"remove\""),
        "{}",
        out.stdout()
    );

    assert_eq!(
        hash_tree(&h.root()),
        before,
        "plan changed the host root\n{}",
        h.root_listing()
    );
    let containers_after: Vec<(String, String)> = names
        .iter()
        .flat_map(|s| h.containers(s))
        .map(|c| (c.id, c.state))
        .collect();
    assert_eq!(
        containers_after, containers_before,
        "plan touched containers"
    );
}

/// `plan --detailed-exitcode`, as terraform's: 2 while a sync would change
/// something, 0 once nothing is left to do, 1 when a stack cannot converge
/// (here: invalid) or the command fails; plain `plan` exits 0 throughout.
#[test]
fn detailed_exitcode_says_whether_a_sync_would_change_something() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("web");
    write_stack(&h, &s, &f.v1, h.free_port(), "v1", "");
    h.commit("v1");
    h.cmd(["plan", "--detailed-exitcode"]).run().code(2);
    h.cmd(["plan"]).run().ok();
    h.cmd(["sync"]).run().ok().stdout_contains("deployed");
    h.cmd(["plan", "--detailed-exitcode"]).run().code(0);
    h.write(format!("stacks/{s}/stack.yaml"), "images: {web: nope}\n");
    h.commit("broken");
    h.cmd(["plan", "--detailed-exitcode"]).run().code(1);
    h.cmd(["plan"]).run().ok();
    // An error of the command itself is 1 too, not 2 ("changes").
    h.cmd(["plan", "--detailed-exitcode", "--repo", "/nonexistent"])
        .run()
        .code(1);
}

/// Where the approver runs it, the host-local secret files are not there:
/// `plan` still shows the diff and the gate verdict, and says which file is
/// missing here instead of calling the stack invalid; `sync` on the same
/// machine stops for that stack as before (issue 19).
#[test]
fn a_host_local_file_missing_here_is_named_and_the_diff_is_still_shown() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("web");
    let secret = h.tmp().join("secrets/web.env");
    write_stack(
        &h,
        &s,
        &f.v1,
        h.free_port(),
        "v1",
        &format!("env_files: [{}]\n", secret.display()),
    );
    h.commit("v1");
    let cfg = h.tmp().join("c.yaml");
    common::write_config(
        &cfg,
        format!("secret_dirs: [{}]\n", h.tmp().join("secrets").display()),
    )
    .unwrap();
    let plan = |args: &[&str]| {
        h.cmd(["--config".as_ref(), cfg.as_os_str()])
            .args(["plan"])
            .args(args)
            .run()
    };
    let out = plan(&[]).ok();
    let text = out.stdout();
    assert!(text.contains(&format!("{s}: deploy")), "{text}");
    assert!(
        text.contains(&format!("missing here (host-local): {}", secret.display())),
        "{text}"
    );
    assert!(
        text.contains("+++ b/compose.yaml"),
        "the diff is shown: {text}"
    );
    let json = plan(&["--json"]).ok().json();
    assert_eq!(
        json[0]["missing_here"][0],
        secret.display().to_string(),
        "{json}"
    );
    // A sync here cannot converge it: 1, not 2.
    plan(&["--detailed-exitcode"]).code(1);
    h.cmd(["--config".as_ref(), cfg.as_os_str(), "sync".as_ref()])
        .run()
        .code(1)
        .stdout_contains("could not be rendered");
    // Once the file exists, nothing is missing and a sync would deploy.
    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    std::fs::write(&secret, "TOKEN=x\n").unwrap();
    let text = plan(&[]).ok().stdout();
    assert!(!text.contains("missing here"), "{text}");
    plan(&["--detailed-exitcode"]).code(2);
}

/// Issue 35: `plan` on the example printed 1,134 lines, the file diffs of
/// the stacks not for this host among them, and no summary. A stack not
/// for this host is now one line (`--all-hosts` shows the rest), and the
/// plan ends with what a sync would do.
#[test]
fn plan_summarises_and_keeps_other_hosts_stacks_to_one_line() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (here, away) = (h.stack("here"), h.stack("away"));
    write_stack(&h, &here, &f.v1, h.free_port(), "v1", "");
    write_stack(
        &h,
        &away,
        &f.v1,
        h.free_port(),
        "v1",
        "hosts: [another-host]\n",
    );
    h.commit("one stack for another host");
    let lines_of = |out: &str, stack: &str| -> Vec<String> {
        // The stack's line and the indented lines under it.
        let mut mine = Vec::new();
        let mut inside = false;
        for l in out.lines() {
            if !l.starts_with(' ') {
                inside = l.starts_with(&format!("{stack}: "));
            }
            if inside {
                mine.push(l.to_string());
            }
        }
        mine
    };
    let out = h.cmd(["plan"]).run().ok();
    let text = out.stdout();
    let away_lines = lines_of(&text, &away);
    assert!(
        away_lines.len() == 1 && away_lines[0].contains("skip (not_for_this_host)"),
        "{}",
        out.report()
    );
    assert!(
        lines_of(&text, &here)
            .iter()
            .any(|l| l.starts_with("  image web:")),
        "{}",
        out.report()
    );
    assert_eq!(
        text.lines().last(),
        Some("plan: 1 to deploy, 1 not for this host"),
        "{}",
        out.report()
    );
    let out = h.cmd(["plan", "--all-hosts"]).run().ok();
    assert!(
        lines_of(&out.stdout(), &away)
            .iter()
            .any(|l| l.starts_with("  image web:")),
        "{}",
        out.report()
    );
}

/// Issue 35: `sync --dry-run` exited 0 although a stack would fail, and
/// said of each stack not for this host that its env file was missing (a
/// file that host never needs). The dry run now exits as `plan
/// --detailed-exitcode` decides (one rule; 1 when a stack cannot
/// converge), `--detailed-exitcode` also says 2 for "would change", and a
/// stack not for this host is only that.
#[test]
fn a_dry_run_exits_as_plan_does() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (ok, away) = (h.stack("ok"), h.stack("away"));
    let absent = h.tmp().join("absent.env");
    write_stack(&h, &ok, &f.v1, h.free_port(), "v1", "");
    write_stack(
        &h,
        &away,
        &f.v1,
        h.free_port(),
        "v1",
        &format!("hosts: [another-host]\nenv_files: [{}]\n", absent.display()),
    );
    h.commit("one to deploy, one for another host");
    let dry = h.cmd(["sync", "--dry-run"]).run().code(0);
    let away_line = dry
        .stdout()
        .lines()
        .find(|l| l.starts_with(away.as_str()))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        away_line.contains("does not include") && !away_line.contains("absent.env"),
        "{}",
        dry.report()
    );
    h.cmd(["sync", "--dry-run", "--detailed-exitcode"])
        .run()
        .code(2);
    h.cmd(["plan", "--detailed-exitcode"]).run().code(2);

    // A stack of this host whose host-local file is missing cannot converge.
    write_stack(
        &h,
        &ok,
        &f.v1,
        h.free_port(),
        "v1",
        &format!("env_files: [{}]\n", absent.display()),
    );
    h.commit("a host-local file this host lacks");
    let dry = h.cmd(["sync", "--dry-run"]).run().code(1);
    assert!(dry.stdout().contains("absent.env"), "{}", dry.report());
    // One verdict, two views: the dry run says what plan says of it (here:
    // the file is also outside the host's secret directories), and both
    // name the file missing here with one text.
    let missing = format!(
        "missing here (host-local): {} — shown as if empty; a sync on this machine stops until it exists",
        absent.display()
    );
    let plan = h.cmd(["plan"]).run().ok().stdout();
    let head = format!("{ok}: skip (invalid) — ");
    let reason = plan
        .lines()
        .find_map(|l| l.strip_prefix(head.as_str()))
        .unwrap_or_else(|| panic!("no {head:?} line:\n{plan}"));
    assert!(plan.contains(&format!("  {missing}")), "{plan}");
    assert!(
        dry.stdout()
            .contains(&format!("would skip: {reason}; {missing}")),
        "plan said {reason:?}\n{}",
        dry.report()
    );
    h.cmd(["sync", "--dry-run", "--detailed-exitcode"])
        .run()
        .code(1);
    h.cmd(["plan", "--detailed-exitcode"]).run().code(1);
}
