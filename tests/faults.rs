//! Fault injection beyond the per-stage kills of tests/converge.rs: the
//! registry gone before the pull, a disk below the free-space threshold,
//! corrupted files under the root, and the Docker daemon restarted in the
//! middle of a converge. Each is handled with a clear report and no data lost.

use crate::common;

use common::{Fixtures, StackFixture, TestHost};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn write_stack(h: &TestHost, stack: &str, image: &str, port: u16, version: &str) {
    StackFixture::new(stack, image, port, version)
        .http_only()
        .without_site_conf()
        .write(h);
}

fn body(h: &TestHost, port: u16) -> Option<String> {
    h.http_get(port, "/").map(|b| b.trim().to_string())
}

fn wait_body(h: &TestHost, port: u16, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if body(h, port).as_deref() == Some(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "port {port} should serve {want:?}, got {:?}\n{}",
        body(h, port),
        h.root_listing()
    );
}

#[test]
fn registry_stopped_before_pull_leaves_the_host_untouched() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("app");
    let port = h.free_port();
    write_stack(&h, &s, &f.v1, port, "v1");
    h.commit("v1");
    h.cmd(["sync"]).run().ok();

    // A second registry of our own, holding v2, that we then stop.
    let reg_port = h.free_port();
    let dir = h.tmp().join("registry2");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.yml"), format!("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{reg_port}\n", dir.join("data").display())).unwrap();
    let mut reg = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", reg_port)).is_err() {
        assert!(Instant::now() < deadline, "second registry did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let tag = format!("127.0.0.1:{reg_port}/stackpin-fault/app:v2");
    h.docker(["pull", &f.v2]).run().ok();
    h.docker(["tag", &f.v2, &tag]).run().ok();
    h.docker(["push", &tag]).run().ok();
    let pinned = h
        .repo_digests(&tag)
        .into_iter()
        .find(|d| d.starts_with(&format!("127.0.0.1:{reg_port}/")))
        .expect("digest in the second registry");
    // No local copy may short-cut the pull.
    h.docker(["rmi", "-f", &tag, &pinned]).run();
    reg.kill().unwrap();
    reg.wait().unwrap();

    let before = h.link_target(&s);
    let ids: Vec<String> = h.containers(&s).into_iter().map(|c| c.id).collect();
    write_stack(&h, &s, &pinned, port, "v2");
    h.commit("v2 from a registry that is down");
    let out = h.cmd(["sync"]).run().code(1);
    assert!(out.stdout().contains("pull failed"), "{}", out.report());
    assert_eq!(h.link_target(&s), before, "the link must not move");
    assert_eq!(
        h.containers(&s)
            .into_iter()
            .map(|c| c.id)
            .collect::<Vec<_>>(),
        ids,
        "containers untouched"
    );
    assert!(
        h.history()
            .contains("| deploy | v2 | failed | pull failed:"),
        "{}",
        h.history()
    );
    wait_body(&h, port, "stackpin-test-app v1");
}

#[test]
fn disk_below_the_free_space_threshold_fails_preflight() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("app");
    let port = h.free_port();
    write_stack(&h, &s, &f.v1, port, "v1");
    h.commit("v1");
    // No filesystem here is 100% free: the threshold stands for a full disk.
    let cfg = h.tmp().join("config.yaml");
    common::write_config(&cfg, "min_disk_free_percent: 100\n").unwrap();
    let out = h
        .cmd(["--config".as_ref(), cfg.as_os_str(), "sync".as_ref()])
        .run()
        .code(1);
    assert!(
        out.stdout().contains("preflight failed: only") && out.stdout().contains("100% required"),
        "{}",
        out.report()
    );
    assert!(h.link_target(&s).is_none(), "nothing may be switched");
    assert!(h.containers(&s).is_empty());
    assert!(
        h.history()
            .contains("| deploy | v1 | failed | preflight failed: only"),
        "{}",
        h.history()
    );
}

#[test]
fn corrupted_files_are_reported_and_nothing_is_lost() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("app");
    let port = h.free_port();
    write_stack(&h, &s, &f.v1, port, "v1");
    h.commit("v1");
    h.cmd(["sync"]).run().ok();
    let release = h.link_target(&s).unwrap();

    // 1. A history line of garbage: reported, the other lines still read.
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(h.root().join("deploy-history.log"))
        .unwrap();
    std::io::Write::write_all(&mut log, b"this is not a history line\n").unwrap();
    let out = h.cmd(["history"]).run().ok();
    assert!(
        out.stderr().contains("not a history line")
            && out.stdout().contains("| deploy | v1 | success |"),
        "{}",
        out.report()
    );

    // 2. A journal of an unknown format: the stack is left alone and the
    //    journal kept for a person.
    let journal = h
        .root()
        .join("releases/.stackpin/journal")
        .join(format!("{s}.json"));
    std::fs::create_dir_all(journal.parent().unwrap()).unwrap();
    let odd = r#"{"format": 99, "stack": "x", "op": "deploy", "from": null, "to": "y", "fingerprint": "f", "phase": "verifying", "started_at": "t"}"#;
    std::fs::write(&journal, odd).unwrap();
    write_stack(&h, &s, &f.v2, port, "v2");
    h.commit("v2 while the journal is unreadable");
    let out = h.cmd(["sync"]).run().code(1);
    assert!(
        out.stdout().contains("unknown format 99") || out.stderr().contains("unknown format 99"),
        "{}",
        out.report()
    );
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap(),
        odd,
        "the journal must be kept as it was"
    );
    assert_eq!(
        h.link_target(&s).unwrap(),
        release,
        "the stack must be left as it is"
    );
    wait_body(&h, port, "stackpin-test-app v1");
    std::fs::remove_file(&journal).unwrap();

    // 3. The current release.json truncated: reported, and the next converge
    //    deploys a complete release; the damaged directory is not deleted.
    use std::os::unix::fs::PermissionsExt;
    let meta = release.join("release.json");
    std::fs::set_permissions(&release, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&meta, std::fs::Permissions::from_mode(0o644)).unwrap();
    let full = std::fs::read(&meta).unwrap();
    std::fs::write(&meta, &full[..full.len() / 2]).unwrap();
    let out = h.cmd(["status"]).run().ok();
    assert!(out.stdout().contains(&s), "{}", out.report());
    h.cmd(["sync"]).run().ok().stdout_contains("deployed");
    let now = h.link_target(&s).unwrap();
    assert_ne!(now, release);
    assert!(now.join("release.json").is_file());
    assert!(
        release.exists(),
        "the damaged release is kept for inspection"
    );
    wait_body(&h, port, "stackpin-test-app v2");
}

/// Restarts the engine under every other test, so scripts/test.sh runs it
/// alone (`STACKPIN_TEST_EXCLUSIVE=1`) after the parallel suite.
#[test]
fn docker_daemon_restarted_mid_converge() {
    if std::env::var_os("STACKPIN_TEST_EXCLUSIVE").is_none() {
        eprintln!(
            "runs in scripts/test.sh's exclusive step (STACKPIN_TEST_EXCLUSIVE=1): it restarts the Docker daemon"
        );
        return;
    }
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("app");
    let port = h.free_port();
    write_stack(&h, &s, &f.v1, port, "v1");
    h.commit("v1");
    h.cmd(["sync"]).run().ok();
    write_stack(&h, &s, &f.v2, port, "v2");
    h.commit("v2");
    let run = h.cmd(["sync"]).spawn();
    // Restart the engine once the new release is being brought up.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !h
        .root()
        .join("releases/.stackpin/journal")
        .join(format!("{s}.json"))
        .exists()
    {
        assert!(
            Instant::now() < deadline,
            "the converge never reached the switch"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    common::restart_machine_engine();
    let first = run.wait();
    // Whatever the first run concluded, the next runs converge to a healthy release.
    let mut last = None;
    for _ in 0..3 {
        let out = h.cmd(["sync"]).run();
        let healthy = h
            .wait_http(port, "/health", Duration::from_secs(10))
            .is_some();
        last = Some(out);
        if healthy && last.as_ref().unwrap().success() {
            break;
        }
    }
    let last = last.unwrap();
    let target = h.link_target(&s).unwrap_or_else(|| {
        panic!(
            "no link\nfirst run:\n{}\nlast:\n{}",
            first.report(),
            last.report()
        )
    });
    assert!(
        target.join("release.json").is_file(),
        "link to an incomplete release"
    );
    assert!(
        !h.root()
            .join("releases/.stackpin/journal")
            .join(format!("{s}.json"))
            .exists(),
        "journal left behind"
    );
    assert!(
        h.wait_http(port, "/health", Duration::from_secs(15))
            .is_some(),
        "no healthy release after the restart\nfirst:\n{}\nlast:\n{}",
        first.report(),
        last.report()
    );
}
