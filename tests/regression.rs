//! One test per bug fixed, each saying what broke (ripgrep's
//! `tests/regression.rs`). Real host, real engine, real git.

use crate::common;

use common::{Fixtures, StackFixture, TestHost};
use std::time::Duration;

/// `docker compose config -q` (compose v2, the oracle of what a compose
/// file means) in the stack directory of `stack`.
fn compose_v2_config(h: &TestHost, f: &Fixtures, stack: &str) -> common::Output {
    let mut config = std::process::Command::new("docker");
    config
        .args(["compose", "config", "-q"])
        .current_dir(h.repo().join(format!("stacks/{stack}")))
        .env("DOCKER_CONFIG", &f.compose_v2_config);
    h.command(config).run()
}

/// A stack whose one service `web` is pinned to the fixtures' v1, with
/// `compose` as its compose file (for the tests of what `validate` says).
fn web_stack(h: &TestHost, f: &Fixtures, s: &str, compose: &str) {
    h.write(
        format!("stacks/{s}/stack.yaml"),
        format!("environment: test\nimages:\n  web: {}\n", f.v1),
    );
    h.write(format!("stacks/{s}/compose.yaml"), compose);
}

/// A fixture stack whose service keeps its data in the named volume
/// `data` (at /data), which its backups archive.
fn with_backed_up_volume(s: &str, image: &str, port: u16, version: &str) -> StackFixture {
    StackFixture::new(s, image, port, version)
        .without_site_conf()
        .service("    volumes:\n      - data:/data\n")
        .top_level("volumes:\n  data: {}\n")
        .extra("backup:\n  volumes: [data]\n")
}

/// Broke: a verified store that did not parse was read as empty, and the
/// next `stackpin verify` wrote it back with one entry: every earlier entry
/// was lost (issue 11). Now the command refuses and the file is untouched.
#[test]
fn an_unreadable_verified_store_is_never_overwritten() {
    let h = TestHost::new();
    let (s, _) = h.deployed();
    let store = h.root().join(format!("releases/verified/{s}.yaml"));
    std::fs::create_dir_all(store.parent().unwrap()).unwrap();
    let garbage = "verified: [ {version: v0, images: \n";
    std::fs::write(&store, garbage).unwrap();
    let out = h.cmd(["verify", &s]).run();
    assert!(!out.success(), "{}", out.report());
    assert!(
        out.stderr().contains("verified store") && out.stderr().contains("never overwritten"),
        "{}",
        out.report()
    );
    assert_eq!(std::fs::read_to_string(&store).unwrap(), garbage);
}

/// Broke: `status` planned without `prune:` from stackpin.yaml while `sync`
/// and `plan` honoured it, so with `prune: true` a stack that left git was
/// "Converged" in status while plan said it would be removed (issue 10).
#[test]
fn status_and_plan_agree_on_prune() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (a, pa) = (h.stack("keep"), h.free_port());
    let (b, pb) = (h.stack("gone"), h.free_port());
    StackFixture::new(&a, &f.v1, pa, "v1").write(&h);
    StackFixture::new(&b, &f.v1, pb, "v1").write(&h);
    h.commit("two");
    h.cmd(["sync"]).run().ok();
    h.remove(format!("stacks/{b}"));
    h.write("stackpin.yaml", "prune: true\n");
    h.commit("drop one, prune on");
    let plan = h.cmd(["--json", "plan", &b]).run().ok().json();
    assert_eq!(plan[0]["action"], "remove", "{plan}");
    let status = h.cmd(["--json", "status", &b]).run().ok().json();
    assert_eq!(status[0]["state"], "progressing", "{status}");
    assert!(
        status[0]["reason"]
            .as_str()
            .unwrap()
            .contains("prune is on"),
        "{status}"
    );
}

/// Broke: a hold file that could not be parsed was read as "not held", so
/// the next sync redeployed git over an operator's hold (issue 11). Now it
/// holds, and says why.
#[test]
fn an_unreadable_hold_still_holds() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (s, port) = h.deployed();
    let hold = h.root().join(format!("releases/.stackpin/hold/{s}.json"));
    std::fs::create_dir_all(hold.parent().unwrap()).unwrap();
    std::fs::write(&hold, "{ not json").unwrap();
    StackFixture::new(&s, &f.v2, port, "v2").write(&h);
    h.commit("v2");
    h.cmd(["sync"]).run().ok().stdout_contains("skipped");
    h.serves(port, "stackpin-test-app v1");
    let status = h.cmd(["--json", "status", &s]).run().ok().json();
    assert_eq!(status[0]["state"], "held", "{status}");
    assert!(
        status[0]["reason"]
            .as_str()
            .unwrap()
            .contains("held until it is fixed"),
        "{status}"
    );
}

/// Broke: a release whose smoke checks file could not be read was smoked
/// with no checks at all (`containers: {}` only), so a heal could pass a
/// release nobody could judge (issue 11). Now that smoke fails, naming the
/// file.
#[test]
fn a_release_without_its_smoke_checks_does_not_pass() {
    let h = TestHost::new();
    let (s, _) = h.deployed();
    let link = h.link_target(&s).unwrap();
    std::fs::remove_file(link.join("stackpin.smoke.json")).unwrap();
    let id = h.containers(&s)[0].id.clone();
    h.docker(["rm", "-f", &id]).run().ok();
    let out = h.cmd(["sync"]).run().code(1);
    assert!(
        out.stdout().contains("heal failed") && out.stdout().contains("stackpin.smoke.json"),
        "{}",
        out.report()
    );
}

/// Broke: `hold` and `resume` (CLI and control socket) took any string as a
/// stack name; `../../x` wrote and deleted files outside the state dir
/// (issue 11). Now every entry point checks the name, and hold/resume
/// refuse a stack neither git nor the host has.
#[test]
fn stack_names_are_checked_at_every_entry_point() {
    let h = TestHost::new();
    let (s, _) = h.deployed();
    let outside = h.tmp().join("x.json");
    for bad in ["../../x", "../x", "A", ""] {
        h.cmd(["hold", bad, "--reason", "r"])
            .run()
            .code(2)
            .stderr_contains("is not a stack name");
        h.cmd(["resume", bad])
            .run()
            .code(2)
            .stderr_contains("is not a stack name");
    }
    for cmd in [
        vec!["sync", "../x"],
        vec!["plan", "../x"],
        vec!["status", "../x"],
        vec!["rollback", "../x", "--list"],
        vec!["verify", "../x"],
        vec!["releases", "../x"],
    ] {
        h.cmd(&cmd)
            .run()
            .code(2)
            .stderr_contains("is not a stack name");
    }
    assert!(!outside.exists());
    let out = h
        .cmd(["hold", "no-such-stack", "--reason", "r"])
        .run()
        .failed();
    assert!(
        out.stderr().contains("no stack `no-such-stack`"),
        "{}",
        out.report()
    );
    assert!(
        out.stderr().contains(&s),
        "the known stacks are listed: {}",
        out.report()
    );
    h.cmd(["hold", &s, "--reason", "investigating"]).run().ok();
    h.cmd(["resume", &s]).run().ok();
    // Broke: hold and resume printed text under --json (issue 19).
    for (args, action) in [
        (vec!["--json", "hold", &s, "--reason", "again"], "hold"),
        (vec!["--json", "resume", &s], "resume"),
    ] {
        let v = h.cmd(&args).run().ok().json();
        assert_eq!(v["schema_version"], 1, "{v}");
        assert_eq!(v["action"], action, "{v}");
        assert_eq!(v["stack"], s.as_str(), "{v}");
        let at = v["at"].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(at).is_ok() && at.ends_with('Z'),
            "{v}"
        );
    }
}

/// Broke: only `hold` and `resume` said which JSON shape they print; the
/// commands that print rows (status, plan, history, sync, validate, …) gave
/// a script no `schema_version` to check (issue 19). Now every object
/// printed by `--json`, each row of an array included, carries it first.
#[test]
fn every_json_object_carries_a_schema_version() {
    let h = TestHost::new();
    let (s, _) = h.deployed();
    let repo = h.repo();
    let repo = repo.to_str().unwrap();
    for args in [
        vec!["--json", "status"],
        vec!["--json", "plan"],
        vec!["--json", "history", &s],
        vec!["--json", "releases", &s],
        vec!["--json", "rollback", &s, "--list"],
        vec!["--json", "sync", &s],
        // Last, with a finding to print: a stack that does not parse.
        vec!["--json", "validate", repo],
    ] {
        if args[1] == "validate" {
            h.write(format!("stacks/{s}-bad/stack.yaml"), "images: [\n");
        }
        let out = h.cmd(&args).run();
        let v: serde_json::Value = serde_json::from_str(&out.stdout())
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {}", out.report()));
        let objects: Vec<&serde_json::Value> = match &v {
            serde_json::Value::Array(rows) => rows.iter().collect(),
            one => vec![one],
        };
        assert!(!objects.is_empty(), "{args:?}: nothing to check: {v}");
        for o in objects {
            let first = o.as_object().and_then(|m| m.keys().next().cloned());
            assert_eq!(first.as_deref(), Some("schema_version"), "{args:?}: {o}");
            assert_eq!(o["schema_version"], 1, "{args:?}: {o}");
        }
    }
}

/// Broke: with `compose: sub/compose.yaml`, compose looked for `.env` next
/// to the compose file, so `${PORT}` and every `env:`/`env_files:` value
/// were empty (issue 11). Now the project directory and the env file are
/// passed explicitly, with v1 and v2 alike.
#[test]
fn a_compose_file_in_a_subdirectory_still_gets_the_env() {
    let h = TestHost::new();
    let f = Fixtures::require();
    for (flavour, compose, docker_config) in [
        ("v1", "docker-compose", None),
        ("v2", "docker compose", Some(&f.compose_v2_config)),
    ] {
        let s = h.stack(&format!("sub-{flavour}"));
        let port = h.free_port();
        h.write(
            format!("stacks/{s}/stack.yaml"),
            format!(
                "version: v1\ncompose: deploy/compose.yaml\nhosts: [{flavour}-host]\nimages:\n  web: {}\nenv:\n  PORT: \"{port}\"\nsmoke:\n  timeout: 15s\n  checks:\n    - http: {{url: \"http://127.0.0.1:{port}/health\", expect_status: 200}}\n",
                f.v1
            ),
        );
        h.write(
            format!("stacks/{s}/deploy/compose.yaml"),
            "services:\n  web:\n    image: stackpin-test/app\n    network_mode: host\n    stop_grace_period: 1s\n    environment:\n      PORT: ${PORT:?PORT comes from the release's .env}\n",
        );
        h.commit(&format!("compose in a subdirectory, {flavour}"));
        let cfg = h.tmp().join(format!("{flavour}.yaml"));
        common::write_config(
            &cfg,
            format!("host: {flavour}-host\ncompose: \"{compose}\"\n"),
        )
        .unwrap();
        let mut c = h.cmd_raw([
            std::ffi::OsString::from("--config"),
            cfg.into(),
            "--root".into(),
            h.root().into(),
            "--repo".into(),
            h.repo().into(),
            "--state-dir".into(),
            h.state_dir().into(),
            "sync".into(),
            s.clone().into(),
        ]);
        if let Some(d) = docker_config {
            c.env("DOCKER_CONFIG", d);
        }
        c.run().ok().stdout_contains("deployed");
        h.serves(port, "stackpin-test-app v1");
    }
}

/// Broke: the daemon ran crash recovery only inside a run, after a
/// successful git fetch; with the remote down, a stack interrupted
/// mid-converge stayed on its half-switched release until the network came
/// back (issue 11). Now the daemon recovers from the local journals at
/// start, before it fetches.
#[test]
fn the_daemon_recovers_before_it_can_fetch() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (s, port) = h.deployed();
    let good = h.link_target(&s).unwrap();
    StackFixture::new(&s, &f.v2, port, "v2").write(&h);
    h.commit("v2");
    let out = h.cmd(["sync"]).env("STACKPIN_FAULT", "after-switch").run();
    assert!(!out.success(), "{}", out.report());
    let switched = h.link_target(&s).unwrap();
    assert_ne!(switched, good, "the crash left the switch done");

    // A remote nothing answers on: the fetch can only fail.
    let closed = h.free_port();
    let cfg = h.tmp().join("daemon.yaml");
    common::write_config(
        &cfg,
        "repo: {branch: main, poll_interval: 60s, watch: false}\n",
    )
    .unwrap();
    let d = h
        .cmd_raw([
            std::ffi::OsString::from("--config"),
            cfg.into(),
            "--root".into(),
            h.root().into(),
            "--state-dir".into(),
            h.state_dir().into(),
            "--host".into(),
            "test-host".into(),
            "--repo".into(),
            format!("git://127.0.0.1:{closed}/desired.git").into(),
            "--control-socket".into(),
            h.tmp().join("control.sock").into(),
            "daemon".into(),
        ])
        .spawn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline && !d.stderr().contains("recovered at start") {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let logs = d.terminate(std::time::Duration::from_secs(10)).stderr();
    let recovered = logs
        .find("recovered at start")
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(
        logs.find("sync run").is_none_or(|run| recovered < run),
        "recovery comes before the first fetch:
{logs}"
    );
    // The journal said the switch was done and v2 being verified: recovery
    // finishes it (it does not revert a release it can still verify).
    assert_eq!(h.link_target(&s).unwrap(), switched, "{logs}");
    h.serves(port, "stackpin-test-app v2");
}

/// Broke: anyone who could push to the desired state could run a
/// privileged container, mount the Docker socket or a writable host path,
/// or read any host file as an env file (issue 11). Now a host refuses
/// those settings unless its own config allows them for that stack (with a
/// reason), and `env_files:` must be under its secret directories; the
/// refused stack keeps what it runs and the others converge.
#[test]
fn host_powers_need_the_hosts_permission() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (plain, plain_port) = h.deployed();
    let s = h.stack("powerful");
    let port = h.free_port();
    StackFixture::new(&s, &f.v1, port, "v1")
        .compose_env("    cap_add: [SYS_ADMIN]\n".trim_start_matches(' '))
        .write(&h);
    // compose_env lands under `environment:`; put cap_add on the service.
    let compose = h.repo().join(format!("stacks/{s}/compose.yaml"));
    let text = std::fs::read_to_string(&compose)
        .unwrap()
        .replace("cap_add: [SYS_ADMIN]\n", "")
        .replace(
            "    stop_grace_period: 1s\n",
            "    stop_grace_period: 1s\n    cap_add: [SYS_ADMIN]\n",
        );
    std::fs::write(&compose, text).unwrap();
    StackFixture::new(&plain, &f.v2, plain_port, "v2").write(&h);
    h.commit("a stack asking for SYS_ADMIN; plain to v2");

    let out = h.cmd(["sync"]).run().code(1);
    let line = out
        .stdout()
        .lines()
        .find(|l| l.contains(&s))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("refused by this host")
            && line.contains(&format!("stacks/{s}/compose.yaml: services.web.cap_add[0]"))
            && line.contains("power `cap_sys_admin`"),
        "{}",
        out.report()
    );
    assert!(h.link_target(&s).is_none(), "nothing of it ran");
    h.serves(plain_port, "stackpin-test-app v2");
    // validate (no host config) warns, naming the field and the way out.
    let v = h
        .cmd_raw([std::ffi::OsString::from("validate"), h.repo().into()])
        .run()
        .ok();
    assert!(
        v.stdout().contains("services.web.cap_add[0]"),
        "{}",
        v.report()
    );

    // The host's operator allows it, with a reason: it deploys.
    let cfg = h.tmp().join("config.yaml");
    common::write_config(
        &cfg,
        format!("  - {{stacks: [{s}], powers: [cap_sys_admin], reason: \"fuse mounts\"}}\n"),
    )
    .unwrap();
    h.cmd([
        std::ffi::OsStr::new("--config"),
        cfg.as_os_str(),
        "sync".as_ref(),
    ])
    .run()
    .ok()
    .stdout_contains("deployed");

    // An env file outside the secret directories is refused by name.
    std::fs::write(h.tmp().join("x.env"), "A=1\n").unwrap();
    StackFixture::new(&plain, &f.v2, plain_port, "v2")
        .extra(&format!(
            "env_files: [{}]\n",
            h.tmp().join("x.env").display()
        ))
        .write(&h);
    h.commit("plain reads an env file from anywhere");
    let out = h.cmd(["plan", &plain]).run();
    assert!(
        out.stdout().contains("env_files[0]")
            && out
                .stdout()
                .contains("outside this host's secret directories"),
        "{}",
        out.report()
    );
}

/// Broke: `stackpin verify STACK VERSION` refused a release that failed
/// smoke only while it was the quarantined one; after another failure
/// replaced the quarantine record, the broken release could be verified by
/// hand and promoted (issue 11). Now history's failed-smoke line refuses it.
#[test]
fn a_release_that_failed_smoke_cannot_be_verified_later() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (s, port) = h.deployed();
    for (img, v) in [(&f.broken, "bad"), (&f.crash, "crash")] {
        StackFixture::new(&s, img, port, v)
            .smoke_timeout("5s")
            .write(&h);
        h.commit(v);
        h.cmd(["sync"]).run().code(1);
    }
    h.serves(port, "stackpin-test-app v1");
    let out = h.cmd(["verify", &s, "bad"]).run().code(1);
    assert!(
        out.stderr().contains("failed smoke on this host"),
        "{}",
        out.report()
    );
    assert!(
        !h.root()
            .join(format!("releases/verified/{s}.yaml"))
            .exists()
            || !h
                .read_root(format!("releases/verified/{s}.yaml"))
                .contains("version: bad"),
        "nothing recorded"
    );
    // The good release still verifies.
    h.cmd(["verify", &s, "v1"]).run().ok();
}

/// Broke: a break-glass deploy went ahead when its history line could not
/// be written, so the one bypass of the gate could leave no audit trail
/// (issue 11). Now the `break-glass` line is written first; no line, no
/// deploy.
#[test]
fn break_glass_does_not_deploy_without_its_audit_line() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let stg = h.stack("stg");
    let prod = h.stack("prod");
    let port = h.free_port();
    StackFixture::new(&stg, &f.v1, h.free_port(), "v1")
        .extra("hosts: [another-host]\n")
        .write(&h);
    StackFixture::new(&prod, &f.v1, port, "v1")
        .extra(&format!("promote_from: {stg}\n"))
        .write(&h);
    h.commit("prod gated on a staging this host never runs");
    let history = h.root().join("deploy-history.log");
    std::fs::create_dir_all(&history).unwrap(); // appends now fail
    let out = h
        .cmd(["sync", &prod, "--break-glass", "INC-7"])
        .run()
        .code(1);
    assert!(
        out.stdout().contains("break-glass needs its audit line"),
        "{}",
        out.report()
    );
    assert!(h.link_target(&prod).is_none(), "nothing was deployed");

    std::fs::remove_dir(&history).unwrap();
    h.cmd(["sync", &prod, "--break-glass", "INC-7"])
        .run()
        .ok()
        .stdout_contains("deployed");
    let log = h.history();
    let audit = log
        .find("| break-glass | v1 | success | BREAK_GLASS: INC-7")
        .unwrap_or_else(|| panic!("{log}"));
    let deploy = log
        .find("| deploy | v1 | success")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(audit < deploy, "{log}");
}

/// Broke: a container Docker had marked `unhealthy` after a few seconds
/// kept serving errors until the whole smoke timeout ran out (`timed out
/// after 20s`) (issue 18). Now `unhealthy` fails the smoke at once and the
/// revert follows.
#[test]
fn an_unhealthy_container_fails_the_smoke_without_waiting_for_the_timeout() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (s, port) = h.deployed();
    StackFixture::new(&s, &f.v2, port, "v2-sick")
        .smoke_timeout("120s")
        .write(&h);
    let compose = h.repo().join(format!("stacks/{s}/compose.yaml"));
    let text = std::fs::read_to_string(&compose).unwrap().replace(
        "    stop_grace_period: 1s\n",
        "    stop_grace_period: 1s\n    healthcheck: {test: [\"CMD\", \"false\"], interval: 1s, timeout: 1s, retries: 1}\n",
    );
    std::fs::write(&compose, text).unwrap();
    h.commit("v2 whose healthcheck always fails");
    let out = h.cmd(["sync"]).run().code(1);
    assert!(out.stdout().contains("rolled-back"), "{}", out.report());
    let hist = h.history();
    let failed = hist
        .lines()
        .find(|l| l.contains("| v2-sick | failed |"))
        .unwrap_or_else(|| panic!("{hist}"));
    assert!(failed.contains("is unhealthy"), "{failed}");
    assert!(!failed.contains("timed out"), "{failed}");
    h.serves(port, "stackpin-test-app v1");
}

/// Broke: when the quarantine of a release that failed smoke could not be
/// written, only a note said "may be retried", and every run deployed the
/// broken release again (issue 11). Now the stack is held instead, with
/// the reason, until a person resumes it.
#[test]
fn a_quarantine_that_cannot_be_written_holds_the_stack() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (s, port) = h.deployed();
    // A directory where the quarantine file goes: writing it fails.
    std::fs::create_dir_all(
        h.root()
            .join(format!("releases/.stackpin/quarantine/{s}.json/x")),
    )
    .unwrap();
    StackFixture::new(&s, &f.broken, port, "bad")
        .smoke_timeout("5s")
        .write(&h);
    h.commit("broken");
    let out = h.cmd(["sync"]).run().code(1);
    assert!(out.stdout().contains("rolled-back"), "{}", out.report());
    h.serves(port, "stackpin-test-app v1");
    let status = h.cmd(["--json", "status", &s]).run().ok().json();
    assert_eq!(status[0]["state"], "held", "{status}");
    assert!(
        status[0]["reason"]
            .as_str()
            .unwrap()
            .contains("quarantine could not be written"),
        "{status}"
    );
    // The next run does not try the broken release again.
    h.cmd(["sync"]).run().ok().stdout_contains("skipped");
    h.serves(port, "stackpin-test-app v1");
}

/// Broke: `stackpin history | head -1` (and any command whose reader went
/// away) panicked in `println!` with exit 101 and a backtrace on stderr
/// (issue 19). Now it ends quietly, killed by SIGPIPE like any Unix filter.
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    let h = TestHost::new();
    std::fs::create_dir_all(h.root()).unwrap();
    // Far more than a pipe holds (64 KiB), so the writer meets the close.
    let lines: String = (0..5000)
        .map(|i| format!("2026-12-03 10:00:00 | s{i} | default | deploy | v1 | success | note\n"))
        .collect();
    std::fs::write(h.root().join("deploy-history.log"), lines).unwrap();
    let mut cmd = std::process::Command::new(common::STACKPIN);
    cmd.args(h.global_args())
        .args(["history", "--limit", "100000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("| deploy |"), "{first}");
    // The reader is gone now (dropped with the BufReader).
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}

/// Broke: a mistyped stack name exited 2 (as if the environment had
/// failed), and each command said it differently or not at all: `status`
/// and `releases` printed nothing and exited 0 (issue 19). Now every command
/// that takes a stack name refuses it as bad input, exit 1, naming the
/// nearest known stack.
#[test]
fn an_unknown_stack_is_bad_input_with_a_suggestion() {
    let h = TestHost::new();
    let s = h.stack("shop");
    let f = Fixtures::require();
    StackFixture::new(&s, &f.v1, h.free_port(), "v1").write(&h);
    h.commit("v1");
    let typo = format!("{}-shp", h.prefix());
    for args in [
        vec!["plan", typo.as_str()],
        vec!["sync", &typo],
        vec!["status", &typo],
        vec!["releases", &typo],
        vec!["rollback", &typo, "--list"],
        vec!["hold", &typo, "--reason", "x"],
        vec!["resume", &typo],
        vec!["verify", &typo],
    ] {
        let out = h.cmd(&args).run().code(1);
        let err = out.stderr();
        assert!(
            err.contains(&format!("no stack `{typo}`"))
                && err.contains(&format!("did you mean `{s}`?")),
            "{args:?}: {err}"
        );
    }
    // Nothing near: the known stacks are listed instead.
    let out = h.cmd(["status", "zzzzzzzz"]).run().code(1);
    assert!(
        out.stderr().contains(&format!("known: {s}")),
        "{}",
        out.report()
    );
}

/// Broke: a config file that could not be read was reported with its cause
/// twice (`… No such file or directory (os error 2): No such file or
/// directory (os error 2)`): the cause was both in the message and its
/// source. Now it is named once.
#[test]
fn an_unreadable_config_names_its_cause_once() {
    let h = TestHost::new();
    let missing = h.tmp().join("nope.yaml");
    let out = h
        .cmd([
            std::ffi::OsStr::new("--config"),
            missing.as_os_str(),
            "status".as_ref(),
        ])
        .run()
        .code(2);
    let err = out.stderr();
    assert!(err.contains("failed to read config"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

/// Broke: `stackpin status` exited 0 whatever it found, so a script or a
/// monitoring check could not tell a rolled-back stack from a converged one
/// (issue 19). Now `status --check` exits 1 for Failed, RolledBack or
/// Blocked; plain `status` still exits 0 (it only shows).
#[test]
fn status_check_fails_for_a_rolled_back_stack() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (s, port) = h.deployed();
    h.cmd(["status", "--check"]).run().ok();
    StackFixture::new(&s, &f.broken, port, "broken").write(&h);
    h.commit("broken");
    h.cmd(["sync"]).run().code(1).stdout_contains("rolled-back");
    h.cmd(["status"]).run().ok();
    let out = h.cmd(["status", "--check", &s]).run().code(1);
    assert!(out.stdout().contains("RolledBack"), "{}", out.report());
}

/// Broke: on a fresh machine the Debian root for the web images was written
/// as a directory, not a tarball (mmdebstrap guesses the format from the
/// output's name, and the temporary name ends in `.tmp`), so `docker
/// import` failed and every fixture run after it reused the directory. Now
/// the format is explicit, and a cache entry that is not a file is rebuilt.
#[test]
fn the_debian_root_of_the_web_images_is_a_tarball() {
    let f = Fixtures::require();
    let meta = std::fs::metadata(&f.web_root_tar).expect("the cached Debian root");
    assert!(meta.is_file(), "{} is not a file", f.web_root_tar.display());
    let out = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&f.web_root_tar)
        .output()
        .expect("tar");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = String::from_utf8_lossy(&out.stdout);
    assert!(
        names
            .lines()
            .any(|l| l.trim_start_matches("./") == "usr/sbin/nginx"),
        "no usr/sbin/nginx in {}",
        f.web_root_tar.display()
    );
}

/// Broke: the tests' `git daemon` outlived its test (`git daemon` runs
/// `git-daemon` as a child, and only the wrapper was killed), so a test
/// that stopped the remote to see a fetch fail still fetched, and every
/// run left daemons listening. Now the helper runs `git-daemon` itself.
#[test]
fn a_stopped_test_git_daemon_stops_listening() {
    let h = TestHost::new();
    h.commit("empty");
    h.bare_remote();
    let mut d = h.git_daemon();
    let port = d.port;
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    d.stop();
    // The connection above may still be served for a moment by the child
    // git-daemon forked for it (it inherits the listening socket and exits
    // with that connection); the bug was a daemon that never stops.
    let stopped = common::wait_for(Duration::from_secs(5), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    });
    assert!(stopped.is_some(), "something still listens on {port}");
}

/// Broke: a failed `compose up` was recorded with compose's last line only,
/// `Encountered errors while bringing up the project.`, in history, status
/// and notifications alike; the line that said why (here: the host port is
/// taken) was lost (issue 16). Now the explaining lines are the reason.
#[test]
fn a_failed_compose_up_is_recorded_with_the_line_that_explains_it() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("taken");
    // Something on this host already listens on the port the stack publishes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    h.write(
        format!("stacks/{s}/stack.yaml"),
        format!(
            "version: v1\nimages:\n  web: {}\nsmoke: {{timeout: 10s}}\n",
            f.v1
        ),
    );
    h.write(
        format!("stacks/{s}/compose.yaml"),
        format!(
            "services:\n  web:\n    image: stackpin-test/app\n    environment: {{PORT: \"8080\"}}\n    ports: [\"127.0.0.1:{port}:8080\"]\n"
        ),
    );
    h.commit("port taken");
    let out = h.cmd(["--json", "sync"]).run().code(1);
    // Short in history and status; complete (masked) in the JSON.
    let json = out.json();
    let up = json[0]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["name"] == "up" && st["ok"] == false)
        .cloned()
        .unwrap_or_else(|| panic!("no failed up stage: {json}"));
    let output = up["output"].as_str().unwrap_or_default();
    assert!(
        output.contains("address already in use") && output.lines().count() > 1,
        "{up}"
    );
    let history = h.history();
    let last = history.lines().last().unwrap_or_default();
    assert!(
        last.contains("| failed |") && last.contains("address already in use"),
        "{last}\n{}",
        out.report()
    );
    assert!(!last.contains("Encountered errors"), "{last}");
    drop(listener);
}

/// Broke: when only stackpin's own process died mid-`compose up` (systemd's
/// KillMode=process, a supervisor that signals the main pid, the OOM
/// killer), its compose child kept working, and the next run's recovery
/// started a second `compose up` on the same project at once: the two
/// raced, an innocent release failed and even the revert did (issue 16).
/// Now compose runs in its own process group and recovery first waits for
/// (or stops) what is left running for the project.
#[test]
fn recovery_waits_for_the_compose_the_crashed_run_left_running() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("orphan");
    let port = h.free_port();
    let write = |image: &str, version: &str| {
        h.write(
            format!("stacks/{s}/stack.yaml"),
            format!(
                "version: {version}\nimages:\n  web: {image}\nenv:\n  PORT: \"{port}\"\nsmoke:\n  timeout: 20s\n  checks:\n    - http: {{url: \"http://127.0.0.1:{port}/health\"}}\n"
            ),
        );
        // The old container ignores SIGTERM (PID 1): recreating it takes
        // the whole grace period, a window to kill stackpin in.
        h.write(
            format!("stacks/{s}/compose.yaml"),
            "services:\n  web:\n    image: stackpin-test/app\n    network_mode: host\n    stop_grace_period: 12s\n    environment:\n      PORT: ${PORT}\n",
        );
    };
    write(&f.v1, "v1");
    h.commit("v1");
    h.cmd(["sync"]).run().ok().stdout_contains("deployed");
    write(&f.v2, "v2");
    h.commit("v2");
    let run = h.cmd(["sync"]).spawn();
    let up = common::wait_for(Duration::from_secs(60), || {
        let procs = stackpin::engine::compose::processes();
        let pids = stackpin::engine::compose::orphans_in(&procs, &s);
        procs
            .iter()
            .any(|(p, argv)| pids.contains(p) && argv.iter().any(|a| a == "up"))
            .then_some(())
    });
    assert!(up.is_some(), "compose up never started");
    std::thread::sleep(Duration::from_millis(500));
    // stackpin alone dies; its compose child goes on.
    run.signal("KILL");
    let _ = run.wait();
    let left = stackpin::engine::compose::orphans_in(&stackpin::engine::compose::processes(), &s);
    assert!(
        !left.is_empty(),
        "the orphan compose should still be running"
    );
    let out = h.cmd(["sync"]).run().ok();
    assert!(
        out.stderr().contains("compose still running for"),
        "recovery did not wait for the orphan: {}",
        out.report()
    );
    h.serves(port, "stackpin-test-app v2");
    assert_eq!(h.current_version(&s), "v2");
    let history = h.history();
    assert!(
        !history.contains("| deploy | v2 | failed"),
        "an innocent release was failed by the crash: {history}"
    );
}

/// Broke: `GET /api/v1/history?limit=N` with N past the machine's integer
/// (schemathesis sent 94569996716343730328567808) was a 400, though the
/// limit is documented as capped at 10,000, not refused (issue 15's
/// OpenAPI test found it). Now any run of digits is capped; text is still
/// a 400 that says why.
#[tokio::test]
async fn a_history_limit_too_large_for_an_integer_is_capped_not_refused() {
    let s = common::api_server::Server::start(None, 1).await;
    let r = s
        .get("/api/v1/history?limit=94569996716343730328567808")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "[]");
    let r = s.get("/api/v1/history?limit=-1").await;
    assert_eq!(r.status(), 400);
    let why = r.text().await.unwrap();
    assert!(
        why.contains("limit must be a non-negative whole number"),
        "{why}"
    );
}

/// Broke: the exclusive test that restarts the Docker daemon took the first
/// pid `pidof dockerd` printed. With the fleet's engines running (each a
/// dockerd in its own network namespace) that was one of them: it was killed
/// and started again in the machine's namespace, where its `--bridge=none`
/// made it delete `docker0`, and every container the machine's engine started
/// afterwards failed ("could not find bridge docker0") until it restarted.
#[test]
fn the_engine_restarted_is_the_machines_not_a_fleet_hosts() {
    let _f = Fixtures::require();
    let pid = common::machine_engine_pid().expect("the machine's dockerd");
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/net")).unwrap();
    assert_eq!(ns(&pid.to_string()), ns("self"));
    let written = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-fleet.env");
    let fleet = std::env::var("STACKPIN_TEST_FLEET").ok().or_else(|| {
        let text = std::fs::read_to_string(written).ok()?;
        common::parse_env_file(&text).remove("STACKPIN_TEST_FLEET")
    });
    if let Some(fleet) = fleet {
        for i in 1..=3 {
            let pidfile = std::path::Path::new(&fleet).join(format!("h{i}/docker.pid"));
            if let Ok(theirs) = std::fs::read_to_string(&pidfile) {
                assert_ne!(theirs.trim(), pid.to_string(), "{}", pidfile.display());
            }
        }
    }
}

/// Broke: a Swarm stack's tasks were judged by image only, so a release
/// that changed a service's environment or configs but not its image
/// passed its smoke (and a depends_on step its wait) on the tasks of the
/// previous spec, still running; it was recorded as good before Swarm had
/// started one task of it. Now a task counts only when it carries the
/// service's current fingerprint label too (issue 14). The window is the
/// moment after `docker stack deploy` returns, before Swarm has stopped or
/// replaced a task, too short to hit reliably on a real swarm; tests/swarm.rs's
/// depends_on test runs such a release (only side's environment changed)
/// end to end.
#[test]
fn a_swarm_task_of_the_same_image_but_an_older_spec_is_not_the_new_release() {
    use bollard::models::{
        Service, ServiceSpec, Task, TaskSpec, TaskSpecContainerSpec, TaskState, TaskStatus,
    };
    use std::collections::HashMap;
    let template = |fp: &str| TaskSpec {
        container_spec: Some(TaskSpecContainerSpec {
            image: Some("reg/app@sha256:1111".into()),
            labels: Some(HashMap::from([(
                stackpin::engine::SERVICE_FINGERPRINT_LABEL.to_string(),
                fp.to_string(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let service = Service {
        id: Some("s1".into()),
        spec: Some(ServiceSpec {
            name: Some("shop_side".into()),
            task_template: Some(template("env-changed")),
            ..Default::default()
        }),
        ..Default::default()
    };
    let old_task = Task {
        id: Some("t1".into()),
        service_id: Some("s1".into()),
        slot: Some(1),
        desired_state: Some(TaskState::RUNNING),
        spec: Some(template("as-before")),
        status: Some(TaskStatus {
            state: Some(TaskState::RUNNING),
            ..Default::default()
        }),
        ..Default::default()
    };
    let seen = stackpin::engine::swarm::tasks_as_containers("shop", &[service], &[old_task]);
    let step = stackpin::engine::swarm::step_state(&["side".into()], &seen);
    assert!(
        matches!(step, stackpin::engine::swarm::StepState::Waiting(_)),
        "the old spec's task counted as the new one: {step:?} {seen:?}"
    );
}

/// Issue 38: a healthy first deploy was judged unhealthy 0.6 s after `up`
/// (Docker needs `retries` failed probes, 3 s at `interval: 1s`, to say
/// so), reverted and left stopped, with nothing but "its Docker
/// healthcheck failed" to go on. What Docker 20.10's inspect says of a
/// container whose status is `unhealthy` but whose failed probes all ran
/// before its current start (`State.StartedAt`) is a state of an earlier
/// run, not a verdict on this one: smoke waits. An unhealthy container
/// with a failed probe of this run is a verdict, and it carries Docker's
/// evidence (the failing streak and the probes' output).
#[test]
fn an_unhealthy_status_without_a_failed_probe_of_this_run_is_no_verdict() {
    let inspect = |started: &str, probes: &[(&str, i64, &str)]| {
        let log: Vec<serde_json::Value> = probes
            .iter()
            .map(|(start, code, out)| {
                serde_json::json!({"Start": start, "End": start, "ExitCode": code, "Output": out})
            })
            .collect();
        let v = serde_json::json!({
            "Id": "c0ffee",
            "Name": "/shop_web_1",
            "Image": "sha256:1111",
            "RestartCount": 0,
            "State": {
                "Status": "running", "Running": true, "StartedAt": started,
                "Health": {"Status": "unhealthy", "FailingStreak": probes.len(), "Log": log}
            },
            "Config": {
                "Image": "reg/app@sha256:2222",
                "Labels": {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"}
            }
        });
        let c: bollard::models::ContainerInspectResponse = serde_json::from_value(v).unwrap();
        stackpin::engine::container_info("c0ffee".into(), c, Vec::new())
    };
    let earlier = [
        (
            "2026-12-07T00:57:55.1Z",
            1,
            "wget: can't connect to remote host",
        ),
        (
            "2026-12-07T00:57:56.2Z",
            1,
            "wget: can't connect to remote host",
        ),
        (
            "2026-12-07T00:57:57.3Z",
            1,
            "wget: can't connect to remote host",
        ),
    ];
    let services = vec!["web".to_string()];
    let base = std::collections::HashMap::new();

    // Started after every failed probe Docker shows: still starting.
    let stale = inspect("2026-12-07T00:58:00.6Z", &earlier);
    assert_eq!(stale.health.as_deref(), Some("unhealthy"));
    assert_eq!(
        stackpin::smoke::crashed(&[stale], &base, &services),
        None,
        "a state of an earlier run was taken as this run's verdict"
    );

    // Failed probes since its start: unhealthy, with Docker's evidence.
    let mut now = earlier.to_vec();
    now.push((
        "2026-12-07T00:58:01.7Z",
        1,
        "wget: server returned error: HTTP/1.0 404 Not Found",
    ));
    let judged = inspect("2026-12-07T00:58:00.6Z", &now);
    let why = stackpin::smoke::crashed(&[judged], &base, &services).expect("a verdict");
    assert!(
        why.contains("service web (container shop_web_1) is unhealthy")
            && why.contains("failing streak 4")
            && why.contains("HTTP/1.0 404 Not Found"),
        "{why}"
    );
}

/// Issue 31 item 11: with the default `repo.watch` and a local repository,
/// a daemon on an empty repository ran 61 no-op syncs in 20 s: the file
/// watcher reports every open and read, and each run reads the
/// repository's HEAD and refs, which triggered the next. Now only writes,
/// creates, renames and removals of refs count, and a watch trigger that
/// did not move the desired commit runs nothing; a real commit still
/// triggers a run at once.
#[test]
fn the_daemon_does_not_sync_itself_in_a_loop() {
    let h = TestHost::new();
    h.commit("empty desired state");
    let port = h.free_port();
    let cfg = h.config(
        "daemon.yaml",
        &format!(
            "http: {{listen: \"127.0.0.1:{port}\"}}\nrepo: {{branch: main, poll_interval: 1h, watch: true}}\n"
        ),
    );
    let run = h
        .daemon_cmd(&cfg, h.repo().as_os_str(), &h.tmp().join("control.sock"))
        .spawn();
    let runs = || -> Option<f64> {
        let body = h.http_get(port, "/metrics")?;
        Some(
            body.lines()
                .filter(|l| l.starts_with("stackpin_sync_runs_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while runs().unwrap_or(0.0) < 1.0 {
        assert!(std::time::Instant::now() < deadline, "no first run");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(6));
    let idle = runs().unwrap();
    assert!(
        idle <= 2.0,
        "{idle} runs in 6 s with nothing committed\n{}",
        run.terminate(Duration::from_secs(5)).report()
    );
    // A commit is a change: it triggers a run without waiting for the poll.
    h.commit("something new");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while runs().unwrap_or(0.0) <= idle {
        assert!(
            std::time::Instant::now() < deadline,
            "the commit triggered no run"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    run.terminate(Duration::from_secs(5));
}

/// Issue 31 item 8: a history line torn by a crash mid-write (no
/// newline) swallowed the next entry, which was appended onto it and
/// parsed as neither. Now the next entry starts on a line of its own: the
/// torn line is reported as a bad line and the new entry reads back.
#[test]
fn a_torn_history_line_does_not_swallow_the_next_entry() {
    use stackpin::history::{self, Action, Entry, Status};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.log");
    let first = Entry::now(
        "shop",
        "production",
        Action::Deploy,
        "v1",
        Status::Success,
        "",
    );
    history::append(&path, &first).unwrap();
    // A crash mid-write: half of the next line, no newline.
    let torn = Entry::now(
        "shop",
        "production",
        Action::Deploy,
        "v2",
        Status::Success,
        "",
    )
    .format();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&torn[..torn.len() / 2]);
    std::fs::write(&path, &text).unwrap();

    let next = Entry::now(
        "shop",
        "production",
        Action::Deploy,
        "v3",
        Status::Success,
        "",
    );
    history::append(&path, &next).unwrap();
    let h = history::read(&path).unwrap();
    let versions: Vec<&str> = h.entries.iter().map(|e| e.version.as_str()).collect();
    assert_eq!(versions, ["v1", "v3"], "{h:#?}");
    assert_eq!(h.bad_lines.len(), 1, "{h:#?}");
    assert_eq!(h.bad_lines[0].1, &torn[..torn.len() / 2]);
}

/// Issue 31 item 12: `prune` removed a stack that an operator held,
/// without a word. A held stack is never removed by prune; `plan` and
/// `prune` say why, and after `resume` prune removes it.
#[test]
fn prune_never_removes_a_held_stack() {
    let h = TestHost::new();
    let (s, port) = h.deployed();
    h.cmd(["hold", &s, "--reason", "incident 42"]).run().ok();
    h.remove(format!("stacks/{s}"));
    h.commit("the stack leaves the desired state");

    let out = h.cmd(["prune"]).run();
    assert!(
        out.stdout().contains("held (incident 42)")
            && out.stdout().contains(&format!("stackpin resume {s}")),
        "{}",
        out.report()
    );
    h.serves(port, "stackpin-test-app v1");
    assert!(h.link_target(&s).is_some(), "the held stack was pruned");

    h.cmd(["resume", &s]).run().ok();
    h.cmd(["prune"]).run().ok();
    assert!(h.link_target(&s).is_none(), "resumed, it is pruned");
}

/// Issue 31 item 5: the same signed webhook delivery was accepted twice,
/// so whoever captured one could make the host sync at will. A delivery id
/// seen in the last hour is answered without acting; a new one acts.
#[tokio::test]
async fn a_replayed_webhook_delivery_is_not_acted_on() {
    use common::api_server::{SECRET, Server, sign};
    let mut s = Server::start(Some(SECRET), 8).await;
    let body = br#"{"ref":"refs/heads/main","after":"1111"}"#;
    let sig = || Some(sign(SECRET, body));
    let first = s.deliver_as("delivery-a", "push", body, sig()).await;
    assert_eq!(first.status(), 202);
    assert_eq!(s.drain().len(), 1);
    let replay = s.deliver_as("delivery-a", "push", body, sig()).await;
    assert_eq!(replay.status(), 200);
    assert!(replay.text().await.unwrap().contains("replay"));
    assert!(s.drain().is_empty(), "the replay queued a sync");
    assert!(
        s.metrics_text()
            .contains("stackpin_webhooks_total{outcome=\"replay\"} 1"),
        "{}",
        s.metrics_text()
    );
    let next = s.deliver_as("delivery-b", "push", body, sig()).await;
    assert_eq!(next.status(), 202);
    assert_eq!(s.drain().len(), 1);
}

/// Issue 31 item 3: a 400 MB file in a commit (1.9 MB packed) took `plan`
/// to 780 MiB: every blob was inflated whole before its size was checked.
/// Now a blob over the file limit is refused from its object header's
/// size, unread: `plan` names it, and the process never holds it.
#[test]
fn a_huge_file_in_a_commit_is_refused_unread() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("big");
    StackFixture::new(&s, &f.v1, h.free_port(), "v1").write(&h);
    const SIZE: usize = 256 << 20;
    let big = h.repo().join(format!("stacks/{s}/config/big.bin"));
    std::fs::write(&big, vec![0u8; SIZE]).unwrap();
    h.commit("a 256 MiB file");

    // `plan`, with its peak memory from the kernel (wait4's rusage).
    let mut cmd = std::process::Command::new(common::STACKPIN);
    cmd.args(h.global_args())
        .arg("plan")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    common::without_developer_env(&mut cmd);
    // Reaped below by wait4, which also gives its peak memory.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let out = {
        use std::io::Read as _;
        let mut text = String::new();
        child.stdout.unwrap().read_to_string(&mut text).unwrap();
        text
    };
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and `pid` is our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    let peak = usage.ru_maxrss as usize * 1024;
    assert!(
        out.contains(&format!("stacks/{s}/config/big.bin is {SIZE} bytes"))
            && out.contains("(not read)"),
        "{out}"
    );
    assert!(
        peak < SIZE / 2,
        "plan peaked at {} MiB for a {} MiB file it refuses",
        peak >> 20,
        SIZE >> 20
    );
}

/// Issue 31 item 13: known_hosts entries in hashed form (`|1|salt|hash`,
/// what `ssh-keyscan -H` writes and Debian's and Ubuntu's ssh keep) were
/// skipped, so a host configured the usual way could not verify its
/// remote. The file is now read by the `ssh-key` crate's parser and a
/// hashed name is matched by its HMAC-SHA1, as OpenSSH does; here on a
/// file hashed by OpenSSH's own `ssh-keygen -H`.
#[test]
fn hashed_known_hosts_entries_verify_the_remote() {
    use stackpin::source::{HostKeyVerdict, KnownHosts};
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("host_key");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let b64 = public.split_whitespace().nth(1).unwrap().to_string();
    let file = dir.path().join("known_hosts");
    std::fs::write(
        &file,
        format!("git.example.org ssh-ed25519 {b64}\n[git.example.org]:2222 ssh-ed25519 {b64}\n"),
    )
    .unwrap();
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-H", "-f"])
        .arg(&file)
        .status()
        .expect("ssh-keygen -H");
    assert!(status.success());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.lines().all(|l| l.starts_with("|1|")),
        "not hashed: {text}"
    );

    let kh = KnownHosts::parse(&text);
    assert!(kh.skipped().is_empty(), "{:?}", kh.skipped());
    use base64::Engine as _;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .unwrap();
    assert_eq!(
        kh.check("git.example.org", 22, &blob),
        HostKeyVerdict::Trusted
    );
    assert_eq!(
        kh.check("git.example.org", 2222, &blob),
        HostKeyVerdict::Trusted
    );
    assert_eq!(
        kh.check("other.example.org", 22, &blob),
        HostKeyVerdict::Unknown
    );
}

/// Issue 31 item 9: a decrypted secret file that is not a dotenv file
/// (an ini or conf file) was masked only line by line, so a message that
/// showed a value without its key (`password = hunter2-long` as
/// `hunter2-long`) leaked it into history. Each `k=v`, `k = v` and `k: v`
/// value is masked on its own now; short settings are left readable.
#[test]
fn the_values_of_a_secret_ini_file_are_masked_on_their_own() {
    let ini = b"[db]\nhost = db.internal\npassword = hunter2-long\ntoken: 'abc-123-xyz'\nport=5432\nssl = on\n";
    let masker = stackpin::engine::Masker::new(stackpin::release::secret_file_masks(ini));
    let text = "connect failed: auth hunter2-long rejected for db.internal with abc-123-xyz on 5432, ssl on";
    let masked = masker.mask(text);
    for leaked in ["hunter2-long", "abc-123-xyz", "db.internal"] {
        assert!(!masked.contains(leaked), "{leaked} shown: {masked}");
    }
    assert!(
        masked.contains("5432") && masked.contains("ssl on"),
        "short settings stay readable: {masked}"
    );
}

/// Issue 31 item 10: `stackpin verify` held the stack's lock while it
/// pushed the marker, so a slow or silent remote stalled every deploy,
/// hold and rollback of the stack meanwhile. The lock is released once the
/// marker is recorded: here a `hold` completes while verify still waits on
/// a remote that accepts connections and never answers.
#[test]
fn verify_does_not_hold_the_stack_lock_while_it_publishes() {
    let h = TestHost::new();
    let (s, _) = h.deployed();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().flatten() {
            held.push(c); // accepted, never answered
        }
    });
    let cfg = h.config(
        "publish.yaml",
        "verified: {publish: true, author: \"stackpin <stackpin@test-host>\"}\n",
    );
    let url = format!("git://127.0.0.1:{port}/desired.git");
    let verify = h
        .cmd_raw([
            std::ffi::OsString::from("--config"),
            cfg.clone().into(),
            "--root".into(),
            h.root().into(),
            "--repo".into(),
            url.into(),
            "--host".into(),
            "test-host".into(),
            "--state-dir".into(),
            h.state_dir().into(),
            "verify".into(),
            s.clone().into(),
        ])
        .spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !h.history().contains("verified by hand") {
        assert!(
            std::time::Instant::now() < deadline,
            "verify recorded nothing"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    h.cmd(["hold", &s, "--reason", "while verify publishes"])
        .run()
        .ok();
    let mut verify = verify;
    assert!(
        verify.is_running(),
        "hold waited for verify's push to end: the lock was held while publishing"
    );
    verify.terminate(Duration::from_secs(5));
}

/// Issue 31 items 6 and 7: a restore removed the volume before extracting
/// its archive, and the engine's extraction skips entries that leave the
/// volume (`..`, absolute names, links out) without a word: an archive
/// that was not a tar left the volume empty, and one with such entries
/// "restored" with data missing. Every archive of the backup is now read
/// entry by entry before any volume is touched; a bad one names the entry
/// and nothing is restored.
#[test]
fn a_volume_archive_that_would_lose_data_is_refused_before_anything_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, entries: &[(&str, tar::EntryType, Option<&str>)]| {
        let path = dir.path().join(name);
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for (p, kind, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(0);
            // Raw names: the builder itself refuses `..` and absolute ones.
            let raw = &mut h.as_gnu_mut().unwrap().name;
            raw[..p.len()].copy_from_slice(p.as_bytes());
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_cksum();
            b.append(&h, std::io::empty()).unwrap();
        }
        b.finish().unwrap();
        path
    };
    use tar::EntryType::{Directory, Link, Regular, Symlink};
    let good = write(
        "good.tar",
        &[
            ("stackpin-volume/", Directory, None),
            ("stackpin-volume/data.db", Regular, None),
            ("stackpin-volume/current", Symlink, Some("data.db")),
            (
                "stackpin-volume/tz",
                Symlink,
                Some("/usr/share/zoneinfo/UTC"),
            ),
            (
                "stackpin-volume/again",
                Link,
                Some("stackpin-volume/data.db"),
            ),
        ],
    );
    stackpin::backup::check_archive(&good).unwrap();

    for (name, entries, bad) in [
        (
            "dotdot.tar",
            vec![("stackpin-volume/../../etc/cron.d/x", Regular, None)],
            "stackpin-volume/../../etc/cron.d/x",
        ),
        (
            "absolute.tar",
            vec![("/etc/passwd", Regular, None)],
            "/etc/passwd",
        ),
        (
            "symlink.tar",
            vec![("stackpin-volume/out", Symlink, Some("../../../etc"))],
            "stackpin-volume/out",
        ),
        (
            "hardlink.tar",
            vec![("stackpin-volume/h", Link, Some("../etc/shadow"))],
            "stackpin-volume/h",
        ),
    ] {
        let path = write(name, &entries);
        let err = stackpin::backup::check_archive(&path).unwrap_err();
        assert!(err.contains(&format!("entry `{bad}`")), "{name}: {err}");
    }
    // A valid checksum over a file that is not a tar at all.
    let not_tar = dir.path().join("not.tar");
    std::fs::write(
        &not_tar,
        b"this is not a tar archive, but its checksum is right",
    )
    .unwrap();
    assert!(stackpin::backup::check_archive(&not_tar).is_err());
}

/// Issue 31 item 2: for a stack whose commits must be signed, an unsigned
/// commit at the tip made the stack `untrusted` even when it did not touch
/// it (a marker publish, which README says may stay unsigned), while an
/// unsigned change to `stackpin.yaml` (every stack's defaults, `prune`)
/// was never checked. Now exactly the commits since the deployed one that
/// change the stack's directory or `stackpin.yaml` are judged.
#[test]
fn signed_history_judges_the_commits_that_change_the_stack_and_nothing_else() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("signed");
    let port = h.free_port();
    let signer = h.ssh_signer("signer", "approver@example.com", "git");
    let cfg = h.config(
        "signed.yaml",
        &format!(
            "signers: {{approvers: {{allowed_signers: {}}}}}\npolicy:\n  - {{stacks: [{s}], signed_by: approvers}}\n",
            signer.allowed.display()
        ),
    );
    let sync = || {
        h.cmd([
            std::ffi::OsStr::new("--config"),
            cfg.as_os_str(),
            "sync".as_ref(),
        ])
        .run()
    };
    StackFixture::new(&s, &f.v1, port, "v1").write(&h);
    h.commit_signed(&signer.key, "v1, signed");
    sync().ok().stdout_contains("deployed");

    // An unsigned commit that changes only verified/ (a marker publish).
    h.write("verified/other.yaml", "[]\n");
    h.commit("publish a marker (unsigned)");
    let out = sync().ok();
    let line = out
        .stdout()
        .lines()
        .find(|l| l.contains(&s))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("unchanged") && !line.contains("untrusted"),
        "{}",
        out.report()
    );

    // An unsigned commit to stackpin.yaml is a change to every stack.
    h.write("stackpin.yaml", "prune: true\n");
    let sha = h.commit("prune everything (unsigned)");
    let out = sync().code(1);
    let line = out
        .stdout()
        .lines()
        .find(|l| l.contains(&s))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("blocked") && line.contains(&format!("untrusted commit {}", &sha[..12])),
        "{}",
        out.report()
    );
    h.serves(port, "stackpin-test-app v1");
}

/// Broke: the preflight's free space divided the available blocks by the
/// file system's total, counting blocks reserved for root as used. On a
/// machine whose disk `df` showed 13% used (statvfs: 66053021 blocks,
/// 63105185 free, 20873636 available) stackpin said 31% free, and 17% once
/// a build had filled a little more: every deploy failed its preflight
/// ("only 17% disk free, 20% required") on a disk that was more than half
/// empty. Now it is `df`'s figure: 100 minus its `Use%`.
#[test]
fn disk_free_is_what_df_shows_not_a_share_of_reserved_blocks() {
    assert_eq!(
        stackpin::fsutil::free_percent(66_053_021, 63_105_185, 20_873_636),
        Some(87)
    );
    // ext4's 5% reserve: 80 used, 15 available of 100 → df says 85% used.
    assert_eq!(stackpin::fsutil::free_percent(100, 20, 15), Some(15));
    assert_eq!(stackpin::fsutil::free_percent(0, 0, 0), None);

    // The real file system agrees with the real df (which may move by a
    // point while the two read it on a busy machine).
    let h = TestHost::new();
    let ours = stackpin::fsutil::disk_free_percent(&h.root()).expect("statvfs");
    let out = std::process::Command::new("df")
        .args(["--output=pcent"])
        .arg(h.root())
        .output()
        .expect("df");
    let text = String::from_utf8_lossy(&out.stdout);
    let used: i32 = text
        .lines()
        .nth(1)
        .and_then(|l| l.trim().trim_end_matches('%').parse().ok())
        .unwrap_or_else(|| panic!("df printed {text:?}"));
    assert!(
        (100 - used - ours as i32).abs() <= 1,
        "df says {used}% used, stackpin says {ours}% free"
    );
}

/// Issue 31 item 1: with production on v2, resetting the branch to the
/// older (signed) v1 commit made `plan` say deploy and `sync` deploy v1: a
/// downgrade by force-push, every commit of it signed. Now a desired commit
/// that does not descend from the stack's deployed one holds a protected
/// stack, naming both commits, until an operator accepts it by name; a
/// stack the host does not protect is deployed and the rewrite said.
#[test]
fn a_reset_to_an_older_signed_commit_waits_for_an_operator() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (s, free) = (h.stack("prod"), h.stack("free"));
    let (port, free_port) = (h.free_port(), h.free_port());
    let signer = h.ssh_signer("signer", "approver@example.com", "git");
    let cfg = h.config(
        "signed.yaml",
        &format!(
            "signers: {{approvers: {{allowed_signers: {}}}}}\npolicy:\n  - {{stacks: [{s}], signed_by: approvers}}\n",
            signer.allowed.display()
        ),
    );
    let sync = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["--config".as_ref(), cfg.as_os_str(), "sync".as_ref()];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        h.cmd(args).run()
    };
    let line = |out: &common::Output, stack: &str| {
        out.stdout()
            .lines()
            .find(|l| l.contains(stack))
            .unwrap_or_default()
            .to_string()
    };
    StackFixture::new(&s, &f.v1, port, "v1").write(&h);
    StackFixture::new(&free, &f.v1, free_port, "v1").write(&h);
    let v1 = h.commit_signed(&signer.key, "v1, signed");
    sync(&[]).ok();
    StackFixture::new(&s, &f.v2, port, "v2").write(&h);
    StackFixture::new(&free, &f.v2, free_port, "v2").write(&h);
    let v2 = h.commit_signed(&signer.key, "v2, signed");
    sync(&[]).ok();
    h.serves(port, "stackpin-test-app v2");

    // The branch goes back to v1 (what a force-push of an old commit does).
    h.git(["reset", "-q", "--hard", &v1]);
    let out = sync(&[]).code(1);
    let held = line(&out, &s);
    assert!(
        held.contains("blocked")
            && held.contains(&format!(
                "the desired commit {} does not descend from {}",
                &v1[..12],
                &v2[..12]
            ))
            && held.contains("--accept-rewrite"),
        "{}",
        out.report()
    );
    h.serves(port, "stackpin-test-app v2");
    // Not protected: deployed, and the rewrite said.
    let moved = line(&out, &free);
    assert!(moved.contains("deployed"), "{}", out.report());
    h.serves(free_port, "stackpin-test-app v1");
    assert!(
        h.history().contains("history rewritten") && h.history().contains("does not protect"),
        "{}",
        h.history()
    );

    // Accepting needs the stack named; then it is deployed, by name.
    let out = sync(&["--accept-rewrite"]).code(1);
    assert!(
        out.stderr().contains("--accept-rewrite needs the stacks"),
        "{}",
        out.report()
    );
    sync(&[&s, "--accept-rewrite"])
        .ok()
        .stdout_contains("deployed");
    h.serves(port, "stackpin-test-app v1");
    let history = h.history();
    let accepted = history
        .lines()
        .rfind(|l| l.contains(&s))
        .unwrap_or_default();
    assert!(
        accepted.contains("history rewritten") && accepted.contains("accepted by "),
        "{history}"
    );
    // From there on the stack's history descends from what it runs.
    sync(&[]).ok();
}

/// Issue 31 item 4: the daemon's two listeners had no limits. Control
/// socket connections never timed out, a request line had no size limit
/// (400 MiB without a newline took the daemon to 436 MB), and the accept
/// loop retried at once on EMFILE (40 idle connections: 48% CPU,
/// `/healthz` timing out); a half-sent HTTP request stayed open for
/// minutes. Each is tried here with a real client against a real daemon.
#[test]
fn the_daemons_listeners_bound_what_a_client_can_hold() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::Instant;
    let h = TestHost::new();
    let port = h.free_port();
    let socket = h.tmp().join("control.sock");
    let secret = h.tmp().join("webhook-secret");
    std::fs::write(&secret, "s3cret-for-the-test").unwrap();
    let cfg = h.config(
        "daemon.yaml",
        &format!(
            "http: {{listen: \"127.0.0.1:{port}\", github_secret_file: {}}}\nrepo: {{branch: main, poll_interval: 1h, watch: false}}\n",
            secret.display()
        ),
    );
    h.write("stackpin.yaml", "{}\n");
    h.commit("empty");
    let daemon = h.daemon_cmd(&cfg, h.repo().as_os_str(), &socket).spawn();
    assert!(
        common::wait_for(Duration::from_secs(60), || common::http_get(
            port, "/healthz"
        ))
        .is_some(),
        "{}",
        daemon.stderr()
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));

    // A control client that sends nothing (answered below).
    let silent = UnixStream::connect(&socket).unwrap();
    // A request body sent a byte and then nothing: cut off with a 408.
    let mut slow_body = std::net::TcpStream::connect(addr).unwrap();
    slow_body
        .write_all(b"POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        .unwrap();
    let slow_started = Instant::now();

    // Forty idle connections and forty half-sent heads: /healthz answers.
    let mut held: Vec<std::net::TcpStream> = (0..80)
        .map(|i| {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            if i % 2 == 0 {
                c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                    .unwrap();
            }
            c
        })
        .collect();
    assert_eq!(
        common::http_get_within(port, "/healthz", Duration::from_secs(5)).map(|(s, _)| s),
        Some(200),
        "{}",
        daemon.stderr()
    );
    // Each is closed by the server once the header timeout has passed.
    let deadline = slow_started + Duration::from_secs(25);
    for (i, c) in held.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        c.set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .unwrap();
        let mut buf = Vec::new();
        assert!(
            c.read_to_end(&mut buf).is_ok(),
            "held connection {i} still open after {:?}",
            slow_started.elapsed()
        );
    }
    slow_body
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut answer = String::new();
    let _ = slow_body.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");

    // The control socket: a request line past the limit is refused, not
    // read to the end.
    let mut big = UnixStream::connect(&socket).unwrap();
    big.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0usize;
    for _ in 0..64 {
        match big.write_all(&chunk) {
            Ok(()) => sent += chunk.len(),
            Err(_) => break,
        }
    }
    assert!(
        sent < 64 << 20,
        "the daemon read {sent} bytes of one request line"
    );
    // A client that sends nothing is answered and closed.
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(&silent).read_line(&mut line).unwrap();
    assert!(line.contains("no request within"), "{line}");

    // Out of file descriptors: the accept loops pause instead of spinning.
    let pid = daemon.id().to_string();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let limit = (fds + 4).to_string();
    h.command({
        let mut c = std::process::Command::new("prlimit");
        c.args(["--pid", &pid, &format!("--nofile={limit}:{limit}")]);
        c
    })
    .run()
    .ok();
    let flood: Vec<UnixStream> = (0..24)
        .filter_map(|_| UnixStream::connect(&socket).ok())
        .collect();
    let flood_http: Vec<std::net::TcpStream> = (0..24)
        .filter_map(|_| std::net::TcpStream::connect(addr).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let log = daemon.stderr();
    let pauses = log.matches("accept failed").count();
    assert!(
        (1..=20).contains(&pauses),
        "{pauses} accept failures logged in 3 s (one per pause expected)\n{log}"
    );
    drop((flood, flood_http));
    let out = daemon.terminate(Duration::from_secs(10));
    assert!(
        out.stderr().contains("control socket listening"),
        "{}",
        out.stderr()
    );
}

/// Issue 31 item 6: a restore removed a volume before extracting its
/// archive, so an archive that failed to extract (here one Docker refuses
/// half-way: a file `a`, then `a/b`) left the volume with part of the
/// backup and none of what was there. Now each volume's content is copied
/// aside first and put back when the restore fails.
#[test]
fn a_restore_that_fails_to_extract_leaves_the_volume_as_it_was() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("vol");
    let port = h.free_port();
    with_backed_up_volume(&s, &f.v1, port, "v1").write(&h);
    h.commit("v1 with a volume");
    h.cmd(["sync"]).run().ok().stdout_contains("deployed");
    let docker = |args: &[&str]| h.docker(args).run().ok().stdout();
    let container = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={s}"),
    ]);
    let container = container.trim();
    docker(&[
        "exec",
        container,
        "sh",
        "-c",
        "echo backed-up > /data/keep.txt",
    ]);
    let out = h.cmd(["backup", &s]).run().ok();
    let dir = std::path::PathBuf::from(out.stdout().trim());
    let id = dir.file_name().unwrap().to_string_lossy().into_owned();
    docker(&[
        "exec",
        container,
        "sh",
        "-c",
        "echo current > /data/keep.txt && echo new > /data/new.txt",
    ]);

    // The backup's archive replaced by one that passes every check (a tar,
    // no entry leaving the volume, the manifest's checksum) and that Docker
    // fails to extract after writing its first file.
    let archive = dir.join("volume-data.tar");
    let mut perms = std::fs::metadata(&dir).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o700);
    std::fs::set_permissions(&dir, perms).unwrap();
    let _ = std::fs::remove_file(&archive);
    {
        let mut b = tar::Builder::new(std::fs::File::create(&archive).unwrap());
        for (name, body) in [
            ("stackpin-volume/a", &b"half\n"[..]),
            ("stackpin-volume/a/b", b"x\n"),
        ] {
            let mut hd = tar::Header::new_gnu();
            hd.set_size(body.len() as u64);
            hd.set_mode(0o644);
            hd.set_cksum();
            b.append_data(&mut hd, name, body).unwrap();
        }
        b.finish().unwrap();
    }
    stackpin::backup::check_archive(&archive).expect("the archive passes the checks");
    let sum = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&archive).unwrap()))
    };
    let manifest_path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["volumes"][0]["sha256"] = sum.into();
    std::fs::write(
        &manifest_path,
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();

    let out = h.cmd(["restore", &s, &id]).run().code(1);
    let text = format!("{}{}", out.stdout(), out.stderr());
    assert!(
        text.contains("volume `data`")
            && text.contains("every volume has its previous content back"),
        "{}",
        out.report()
    );
    let volume = format!("{s}_data");
    let read = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        "-v",
        &format!("{volume}:/v"),
        &f.v1,
        "-c",
        "cat /v/keep.txt /v/new.txt; ls /v",
    ]);
    assert_eq!(
        read, "current\nnew\nkeep.txt\nnew.txt\n",
        "the volume as it was before the restore"
    );
    let safety = h
        .root()
        .join("backups")
        .join(&s)
        .join(format!(".safety-{id}"));
    assert!(
        !safety.exists(),
        "the safety copy is removed once its content is back"
    );
}

/// Broke: the pre-deploy backup mounted each volume with a helper
/// container of the *desired* release's image, which the backup stage runs
/// before pulling: every upgrade of a stack that backs up a volume to an
/// image not yet on the host failed with `No such image` (found when
/// `tests/database.rs` ran on an engine where no other test had pulled the
/// next image first). Now the helper uses the running release's image.
#[test]
fn a_pre_deploy_volume_backup_does_not_need_the_image_it_is_about_to_pull() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("bk");
    let port = h.free_port();
    let docker = |args: &[&str]| h.docker(args).run().ok().stdout();
    // v2 under a repository of its own, in the registry but not on this
    // engine (the shared fixture images may be pulled by other tests).
    let repo = format!("{}/stackpin-test/{}", f.registry, h.stack("next"));
    docker(&["pull", "-q", &f.v2]);
    docker(&["tag", &f.v2, &format!("{repo}:t")]);
    docker(&["push", "-q", &format!("{repo}:t")]);
    let digest = f.v2.rsplit_once('@').unwrap().1;
    let next = format!("{repo}@{digest}");
    docker(&["rmi", &format!("{repo}:t")]);
    let gone = !h.docker(["image", "inspect", &next]).run().success();
    assert!(gone, "{next} must not be on the engine for this test");

    let write = |image: &str, version: &str| {
        with_backed_up_volume(&s, image, port, version).write(&h);
    };
    write(&f.v1, "v1");
    h.commit("v1");
    h.cmd(["sync"]).run().ok().stdout_contains("deployed");
    write(&next, "v2");
    h.commit("v2, an image this host has never pulled");
    let out = h.cmd(["sync"]).run().ok();
    assert!(
        out.stdout().contains("deployed") && out.stderr().contains("backup     ok"),
        "{}",
        out.report()
    );
    h.serves(port, "stackpin-test-app v2");
}

/// Issue 32, its false refusals: compose runs each of these files, and
/// `validate` refused them — a bind of the stack directory itself
/// (`"." is empty`), an optional env file that is absent, compose's
/// default `deploy.mode: replicated`, an optional `depends_on` on a
/// service whose profile is off, the top-level `models:` key. Each is
/// checked against compose v2's own `config` too.
#[test]
fn validate_accepts_what_compose_runs() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let cases = [
        (
            "dot-bind",
            "    volumes: [\".:/code:ro\", {type: bind, source: ./, target: /c2, read_only: true}]\n",
            "",
        ),
        (
            "optional-env-file",
            "    env_file: [{path: absent.env, required: false}]\n",
            "",
        ),
        (
            "replicated",
            "    deploy: {mode: replicated, replicas: 1}\n",
            "",
        ),
        (
            "optional-dependency",
            "    depends_on:\n      side: {condition: service_started, required: false}\n",
            "  side:\n    image: stackpin-test/app\n    profiles: [debug]\n",
        ),
        ("models", "", "models:\n  m: {model: ai/smollm2}\n"),
    ];
    for (name, service, extra) in cases {
        let s = h.stack(name);
        // `extra` after the web service: more services, or a top-level key.
        let (more_services, top) = if extra.starts_with("  ") {
            (extra, "")
        } else {
            ("", extra)
        };
        web_stack(
            &h,
            &f,
            &s,
            &format!(
                "services:\n  web:\n    image: stackpin-test/app\n{service}{more_services}{top}"
            ),
        );
        compose_v2_config(&h, &f, &s).ok();
    }
    h.commit("files compose runs");
    let out = h.cmd(["validate"]).run();
    assert!(
        out.success()
            && out
                .stdout()
                .contains("5 stack(s), 0 with errors; 0 error(s)"),
        "{}",
        out.report()
    );
}

/// Issue 32: a `.env` file in the stack directory passed `validate` (the
/// PR check), and then every host refused the stack at `plan` (stackpin
/// writes `.env` into every release). `validate` refuses it now, naming
/// the file and what to do.
#[test]
fn validate_refuses_a_stack_file_every_host_would_refuse() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("dotenv");
    StackFixture::new(&s, &f.v1, h.free_port(), "v1").write(&h);
    h.write(format!("stacks/{s}/.env"), "DEBUG=1\n");
    h.commit("a .env of its own");
    let out = h.cmd(["validate"]).run().code(1);
    assert!(
        out.stdout().contains(&format!("stacks/{s}/.env"))
            && out
                .stdout()
                .contains("a name stackpin writes into every release")
            && out.stdout().contains("move its values to `env:`"),
        "{}",
        out.report()
    );
}

/// Issue 35: a failed smoke said its check twice (`smoke failed:
/// containers: containers: service web … exited`, `http http://…: http
/// http://…: status 404`): the outcome's error already names the check.
#[test]
fn a_failed_smoke_names_its_check_once() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (s, port) = h.deployed();
    StackFixture::new(&s, &f.broken, port, "broken")
        .http_only()
        .write(&h);
    h.commit("a /health that answers 404");
    let out = h.cmd(["sync"]).run().code(1);
    let line = out
        .stdout()
        .lines()
        .find(|l| l.contains("smoke failed"))
        .unwrap_or_default()
        .to_string();
    let check = format!("http http://127.0.0.1:{port}/health");
    assert!(
        line.contains(&format!("smoke failed: {check}: status 404"))
            && line.matches(&check).count() == 1,
        "{}",
        out.report()
    );
}

/// Under load (a CI run), a failing `exec` check whose attempts are slow was
/// reported as `timed out after 250ms`: the last attempt, started just
/// before the smoke's deadline and cut short by it, replaced the failure
/// the attempt before had seen (the check's status and output), so the
/// history said nothing useful. An attempt the deadline cuts short now
/// keeps the failure seen before it.
#[test]
fn a_check_cut_short_by_the_deadline_keeps_the_failure_seen_before() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (s, port) = h.deployed();
    StackFixture::new(&s, &f.v1, port, "slow-check")
        .http_only()
        .smoke_timeout("5s")
        // Each attempt takes 3 s and fails: the second starts ~4 s in,
        // with ~1 s left, and is cut short.
        .check_first(
            "exec: {service: web, command: [\"sh\", \"-c\", \"echo slow-failure; sleep 3; exit 3\"]}",
        )
        .write(&h);
    h.commit("a slow exec check that fails");
    let out = h.cmd(["sync"]).run().code(1);
    let line = out
        .stdout()
        .lines()
        .find(|l| l.contains("smoke failed"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("slow-failure") && !line.contains("timed out after 1s"),
        "{}",
        out.report()
    );
    assert!(
        h.history().contains("slow-failure"),
        "the history keeps the check's own failure:\n{}",
        h.history()
    );
}

/// Issue 32: a `depends_on` cycle passed `validate` and `plan` (for a
/// compose stack; only Swarm stacks were checked), and compose refuses the
/// file ("dependency cycle detected"). Now every stack is refused by name
/// of the cycle, as compose v2 refuses it here too.
#[test]
fn a_depends_on_cycle_is_refused_as_compose_refuses_it() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("cycle");
    h.write(
        format!("stacks/{s}/stack.yaml"),
        format!(
            "environment: test\nimages:\n  web: {}\n  db: {}\n",
            f.v1, f.v1
        ),
    );
    h.write(
        format!("stacks/{s}/compose.yaml"),
        "services:\n  web:\n    image: stackpin-test/app\n    depends_on: [db]\n  db:\n    image: stackpin-test/app\n    depends_on: [web]\n",
    );
    h.commit("a cycle");
    let out = h.cmd(["validate"]).run().code(1);
    assert!(
        out.stdout()
            .contains("services: depends_on forms a cycle: db -> web -> db"),
        "{}",
        out.report()
    );
    let compose = compose_v2_config(&h, &f, &s);
    assert!(
        !compose.success(),
        "compose v2 accepts it: {}",
        compose.report()
    );
}

/// Issue 32: stackpin resolved `extends` differently from compose, and the
/// release ran its own version: the compose tags `!reset` and `!override`
/// were dropped (a capability the author removed stayed granted, and the
/// host refused the stack for it), a one-string `env_file` over a base's
/// list replaced the list (compose merges them), and a writable relative
/// bind refused the stack though a release's files are only ever read. Now
/// the release runs what compose's own `config` (v2) resolves, the bind
/// read-only with a warning.
#[test]
fn a_release_runs_what_compose_resolves_from_extends_and_tags() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("extends");
    let port = h.free_port();
    StackFixture::new(&s, &f.v1, port, "v1")
        .without_site_conf()
        .write(&h);
    h.write(
        format!("stacks/{s}/common.yaml"),
        "services:\n  app:\n    image: stackpin-test/app\n    network_mode: host\n    stop_grace_period: 1s\n    environment: {PORT: \"${PORT}\", LOG: info}\n    env_file: [a.env]\n    cap_add: [NET_ADMIN]\n    labels: {base: \"1\"}\n",
    );
    h.write(
        format!("stacks/{s}/compose.yaml"),
        "services:\n  web:\n    extends: {file: common.yaml, service: app}\n    environment:\n      LOG: !reset\n      MODE: web\n    env_file: b.env\n    cap_add: !reset []\n    labels: !override {only: web}\n    volumes: [\"./config:/config\"]\n",
    );
    h.write(format!("stacks/{s}/a.env"), "A=1\n");
    h.write(format!("stacks/{s}/b.env"), "B=2\n");
    h.write(format!("stacks/{s}/config/app.conf"), "x\n");
    h.commit("extends with tags");

    // Compose's own reading of the files, the oracle.
    let mut config = std::process::Command::new("docker");
    config
        .args(["compose", "config", "--format", "json"])
        .current_dir(h.repo().join(format!("stacks/{s}")))
        .env("DOCKER_CONFIG", &f.compose_v2_config)
        .env("PORT", port.to_string());
    let oracle = h.command(config).run().ok().json();
    let web = &oracle["services"]["web"];
    assert!(web.get("cap_add").is_none(), "{web}");
    assert_eq!(web["labels"], serde_json::json!({"only": "web"}), "{web}");
    assert_eq!(
        web["environment"],
        serde_json::json!({"A": "1", "B": "2", "MODE": "web", "PORT": port.to_string()}),
        "{web}"
    );

    h.cmd(["plan", &s]).run().ok().stdout_contains(&format!(
        "  warning: stacks/{s}/compose.yaml: services.web.volumes[0]: relative bind mount \"./config\" is writable in the compose file; stackpin mounts it read-only"
    ));
    h.cmd(["sync"]).run().ok().stdout_contains("deployed");
    let c = h.containers(&s);
    assert_eq!(c.len(), 1, "{c:?}");
    let inspect = h
        .docker(["container", "inspect", &c[0].id])
        .run()
        .ok()
        .json();
    let inspect = &inspect[0];
    let caps = inspect["HostConfig"]["CapAdd"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        caps.is_empty(),
        "the reset capability was granted: {caps:?}"
    );
    let labels = &inspect["Config"]["Labels"];
    assert_eq!(labels["only"], "web");
    assert!(labels.get("base").is_none(), "{labels}");
    let env: Vec<&str> = inspect["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    for want in ["A=1", "B=2", "MODE=web"] {
        assert!(env.contains(&want), "{want} missing from {env:?}");
    }
    assert!(!env.iter().any(|e| e.starts_with("LOG=")), "{env:?}");
    let mount = inspect["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Destination"] == "/config")
        .cloned()
        .expect("the config bind");
    assert_eq!(mount["RW"], false, "{mount}");
}

/// Issue 32: an include cycle was reported as "more than 8 deep (a
/// cycle?)", and a finding about a service of an included file named the
/// main compose file. Now the cycle is named file by file, and the finding
/// names the included file and the chain that led to it.
#[test]
fn validate_names_the_included_file_and_the_cycle() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (a, b) = (h.stack("inc"), h.stack("cycle"));
    web_stack(
        &h,
        &f,
        &a,
        "include: [db/compose.yaml]\nservices:\n  web:\n    image: stackpin-test/app\n",
    );
    h.write(
        format!("stacks/{a}/db/compose.yaml"),
        "services:\n  db:\n    image: stackpin-test/app\n    volumes: [\"./absent.conf:/etc/x.conf:ro\"]\n",
    );
    web_stack(
        &h,
        &f,
        &b,
        "include: [one.yaml]\nservices:\n  web:\n    image: stackpin-test/app\n",
    );
    h.write(format!("stacks/{b}/one.yaml"), "include: [two.yaml]\n");
    h.write(format!("stacks/{b}/two.yaml"), "include: [one.yaml]\n");
    h.commit("include mistakes");
    let out = h.cmd(["validate"]).run();
    let text = format!("{}{}", out.stdout(), out.stderr());
    assert!(
        text.contains(&format!("stacks/{a}/db/compose.yaml"))
            && text.contains("(included: compose.yaml -> db/compose.yaml)"),
        "{}",
        out.report()
    );
    assert!(
        text.contains(&format!("stacks/{b}/two.yaml"))
            && text.contains("includes or extends form a cycle: one.yaml -> two.yaml -> one.yaml"),
        "{}",
        out.report()
    );
}

/// Issue 32: a host bind got two warnings with different fixes (one from
/// the compose checks, one from the powers check), and a service with both
/// `image:` and `build:` was told to build in CI and pin, though its pin
/// alone already decides what runs. Now each bind is said once, as the
/// power it needs, and the `build:` fix says to remove it.
#[test]
fn validate_says_a_host_bind_once_and_how_to_drop_build_beside_a_pin() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (binds, both) = (h.stack("binds"), h.stack("both"));
    web_stack(
        &h,
        &f,
        &binds,
        "services:\n  web:\n    image: stackpin-test/app\n    volumes: [\"/srv/data:/data\", \"/srv/ro:/ro:ro\"]\n",
    );
    web_stack(
        &h,
        &f,
        &both,
        "services:\n  web:\n    image: stackpin-test/app\n    build: .\n",
    );
    h.commit("binds and build");
    let out = h.cmd(["validate"]).run();
    let text = out.stdout();
    for (i, power) in [(0, "host_bind_writable"), (1, "host_bind_read")] {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.contains(&format!(
                    "stacks/{binds}/compose.yaml: services.web.volumes[{i}]:"
                ))
            })
            .collect();
        assert!(
            lines.len() == 1 && lines[0].contains(power),
            "volumes[{i}] said {} time(s): {}",
            lines.len(),
            out.report()
        );
    }
    assert!(
        text.contains(&format!(
            "error: stacks/{both}/compose.yaml: services.web.build:"
        )) && text.contains(
            "fix: remove `build:` here (the service runs the image pinned in stack.yaml `images:`)"
        ),
        "{}",
        out.report()
    );
}

/// Issue 32: a mistyped service key (`enviroment:`) was refused as a key
/// "stackpin has not classified", with no hint of the key meant, and a
/// wrong type (`environment: "A=1"`) passed `validate`; compose refuses
/// both, by its schema. Now the compose-spec schema is checked: one error
/// per mistake, with the near key.
#[test]
fn validate_checks_the_compose_schema_with_the_near_key() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (typo, kind) = (h.stack("typo"), h.stack("kind"));
    web_stack(
        &h,
        &f,
        &typo,
        "services:\n  web:\n    image: stackpin-test/app\n    enviroment: {A: \"1\"}\n",
    );
    web_stack(
        &h,
        &f,
        &kind,
        "services:\n  web:\n    image: stackpin-test/app\n    environment: \"A=1\"\n",
    );
    h.commit("schema mistakes");
    for s in [&typo, &kind] {
        assert!(
            !compose_v2_config(&h, &f, s).success(),
            "compose accepts {s}"
        );
    }
    let out = h.cmd(["validate"]).run();
    let text = out.stdout();
    let typo_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!("stacks/{typo}/")))
        .collect();
    assert!(
        typo_lines.len() == 1
            && typo_lines[0].contains("services.web.enviroment: unknown key `enviroment`")
            && text.contains("fix: did you mean `environment`?"),
        "{}",
        out.report()
    );
    assert!(
        text.contains(&format!(
            "error: stacks/{kind}/compose.yaml: services.web.environment: must be a mapping or a list, found a string"
        )),
        "{}",
        out.report()
    );
}

/// Issue 35: `history` on a host with no deploys printed nothing, which
/// reads as a broken command. It says so now, on stderr (stdout stays the
/// list, empty for scripts; `--json` stays `[]`).
#[test]
fn an_empty_history_says_so() {
    let h = TestHost::new();
    h.commit("nothing yet");
    let out = h.cmd(["history"]).run().ok();
    assert!(
        out.stdout().is_empty() && out.stderr().contains("no history yet"),
        "{}",
        out.report()
    );
    let out = h.cmd(["history", "some-stack"]).run().ok();
    assert!(
        out.stderr().contains("no history for some-stack yet"),
        "{}",
        out.report()
    );
    assert_eq!(
        h.cmd(["history", "--json"]).run().ok().stdout().trim(),
        "[]"
    );
}

/// CI failed on `powers::host_powers_under_compose_v1`: the test app of one
/// stack exited 1 because its port, taken from `127.0.0.1:0` and let go,
/// was in use again when busybox httpd bound it (the kernel hands such a
/// port to the next outgoing connection or to another test's `:0`). Test
/// ports now come from below the ephemeral range, claimed across the test
/// processes by a file lock held while the claim lives.
#[test]
fn test_ports_are_claimed_across_hosts_and_below_the_ephemeral_range() {
    let (a, b) = (TestHost::new(), TestHost::new());
    let mine: std::collections::HashSet<u16> = (0..50).map(|_| a.free_port()).collect();
    let theirs: std::collections::HashSet<u16> = (0..50).map(|_| b.free_port()).collect();
    assert_eq!((mine.len(), theirs.len()), (50, 50));
    assert!(mine.is_disjoint(&theirs), "{mine:?} {theirs:?}");
    let ephemeral: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(mine.iter().chain(&theirs).all(|p| *p < ephemeral));
    // A claim is a lock held while its host lives, and let go with it.
    let port = *mine.iter().next().unwrap();
    let lock = std::fs::File::open(
        std::env::temp_dir()
            .join("stackpin-test-ports")
            .join(port.to_string()),
    )
    .unwrap();
    assert!(lock.try_lock().is_err(), "port {port} is not held");
    drop(a);
    assert!(lock.try_lock().is_ok(), "port {port} is still held");
}
