//! The test harness itself against the real components: if the engine, the
//! registry, the compose implementation or a test image is broken, these fail
//! first and say which.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{Fixtures, TestHost};

/// `docker run -d` of `image` on the host network, labelled as service `web`
/// of compose project `project`, serving on `port`.
fn run_image(host: &TestHost, project: &str, image: &str, port: u16) {
    host.docker(["run", "-d", "--network", "host"])
        .args(["-e", &format!("PORT={port}")])
        .args(["--label", &format!("com.docker.compose.project={project}")])
        .args(["--label", "com.docker.compose.service=web"])
        .arg(image)
        .run()
        .ok();
}

fn pull(host: &TestHost, image: &str) {
    host.docker(["pull", "-q", image]).run().ok();
}

#[test]
fn fixtures_are_distinct_digest_pins_in_the_loopback_registry() {
    let f = Fixtures::require();
    assert!(f.registry.starts_with("127.0.0.1:"), "{f:?}");
    let all = [&f.v1, &f.v2, &f.v3, &f.broken, &f.crash, &f.missing];
    for image in all {
        let (name, digest) = image.split_once("@sha256:").expect("digest reference");
        assert!(name.starts_with(&format!("{}/", f.registry)), "{image}");
        assert_eq!(digest.len(), 64, "{image}");
        assert!(digest.chars().all(|c| c.is_ascii_hexdigit()), "{image}");
    }
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "digests must differ: {f:?}");
    assert!(
        f.compose == "docker compose" || f.compose == "docker-compose",
        "{f:?}"
    );
}

#[test]
fn v1_pulls_by_digest_and_serves_its_version() {
    let host = TestHost::new();
    let f = host.fixtures();
    let project = host.stack("harness");
    let port = host.free_port();

    pull(&host, &f.v1);
    assert!(host.repo_digests(&f.v1).contains(&f.v1));
    run_image(&host, &project, &f.v1, port);

    let body = host.wait_http(port, "/", Duration::from_secs(20));
    assert_eq!(body.as_deref(), Some("stackpin-test-app v1\n"));
    assert_eq!(host.http_get(port, "/health").as_deref(), Some("ok\n"));
    assert_eq!(host.http_get(port, "/version").as_deref(), Some("v1\n"));

    let containers = host.containers(&project);
    assert_eq!(containers.len(), 1, "{containers:?}");
    let c = &containers[0];
    assert_eq!(c.service, "web");
    assert!(c.is_running(), "{c:?}");
    assert_eq!(c.health, None);
    assert!(c.runs_digest(&f.v1), "{c:?}");
}

#[test]
fn v2_and_v3_serve_their_versions() {
    let host = TestHost::new();
    let f = host.fixtures();
    for (image, version) in [(&f.v2, "v2"), (&f.v3, "v3")] {
        let project = host.stack(version);
        let port = host.free_port();
        pull(&host, image);
        run_image(&host, &project, image, port);
        let body = host.wait_http(port, "/", Duration::from_secs(20));
        assert_eq!(body, Some(format!("stackpin-test-app {version}\n")));
        assert_eq!(host.http_get(port, "/health").as_deref(), Some("ok\n"));
    }
}

#[test]
fn broken_serves_root_but_not_health() {
    let host = TestHost::new();
    let f = host.fixtures();
    let project = host.stack("broken");
    let port = host.free_port();
    pull(&host, &f.broken);
    run_image(&host, &project, &f.broken, port);

    assert!(host.wait_http(port, "/", Duration::from_secs(20)).is_some());
    assert_eq!(host.http_get(port, "/health"), None);
    let (status, _) = host
        .http_get_status(port, "/health")
        .expect("httpd answers");
    assert_eq!(status, 404);
}

#[test]
fn crash_exits_non_zero_within_ten_seconds() {
    let host = TestHost::new();
    let f = host.fixtures();
    let project = host.stack("crash");
    pull(&host, &f.crash);
    run_image(&host, &project, &f.crash, host.free_port());

    let exited = common::wait_for(Duration::from_secs(10), || {
        host.containers(&project)
            .into_iter()
            .find(|c| c.state == "exited")
    });
    let c = exited.unwrap_or_else(|| panic!("still running: {:?}", host.containers(&project)));
    assert_eq!(c.exit_code, 1, "{c:?}");
}

#[test]
fn missing_digest_fails_to_pull() {
    let host = TestHost::new();
    let f = host.fixtures();
    // The registry answers, and says the manifest is not there.
    let reg = f.registry.rsplit_once(':').unwrap().1.parse().unwrap();
    assert!(common::http_get(reg, "/v2/").is_some_and(|(status, _)| status == 200));
    let out = host.docker(["pull", &f.missing]).run().failed();
    assert!(
        out.stderr().contains("manifest unknown") || out.stderr().contains("not found"),
        "{out:?}"
    );
    assert!(!host.image_exists(&f.missing));
}

#[test]
fn compose_runs_a_pinned_service_found_by_labels() {
    let host = TestHost::new();
    let f = host.fixtures();
    let project = host.stack("compose");
    let port = host.free_port();
    let dir = host.tmp().join("compose");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("docker-compose.yml"),
        format!(
            "version: \"2.4\"\nservices:\n  web:\n    image: {}\n    network_mode: host\n    \
             environment:\n      PORT: \"{port}\"\n    healthcheck:\n      \
             test: [\"CMD\", \"wget\", \"-q\", \"-O\", \"-\", \"http://127.0.0.1:{port}/health\"]\n      \
             interval: 1s\n      retries: 30\n",
            f.v1
        ),
    )
    .unwrap();

    host.compose(&dir, &project, ["up", "-d"]).run().ok();

    let healthy = common::wait_for(Duration::from_secs(30), || {
        host.containers(&project)
            .into_iter()
            .find(|c| c.health.as_deref() == Some("healthy"))
    });
    let c = healthy.unwrap_or_else(|| panic!("not healthy: {:?}", host.containers(&project)));
    assert_eq!(c.service, "web");
    assert!(c.runs_digest(&f.v1), "{c:?}");
    assert_eq!(
        host.http_get(port, "/").as_deref(),
        Some("stackpin-test-app v1\n")
    );
}

#[test]
fn drop_removes_the_containers_of_every_stack_it_named() {
    let f = Fixtures::require();
    let host = TestHost::new();
    let project = host.stack("dropped");
    pull(&host, &f.v1);
    run_image(&host, &project, &f.v1, host.free_port());
    assert_eq!(host.containers(&project).len(), 1);
    drop(host);

    let after = TestHost::new();
    assert!(
        after.containers(&project).is_empty(),
        "containers of {project} survived drop"
    );
}

#[test]
fn repo_builder_commits_and_returns_the_sha() {
    let host = TestHost::new();
    host.write("stacks/web/stack.yaml", "environment: staging\n")
        .write("stacks/web/compose.yaml", "services: {}\n");
    let first = host.commit("add web");
    assert_eq!(first.len(), 40, "{first}");
    assert!(first.chars().all(|c| c.is_ascii_hexdigit()), "{first}");

    host.remove("stacks/web/compose.yaml");
    let second = host.commit("remove compose");
    assert_ne!(first, second);
    assert_eq!(
        host.git(["rev-parse", "--abbrev-ref", "HEAD"]).trim(),
        "main"
    );
    let files = host.git(["ls-tree", "-r", "--name-only", "HEAD"]);
    assert_eq!(files.trim(), "stacks/web/stack.yaml");

    // Nothing changed: still a new commit (--allow-empty).
    assert_ne!(host.commit("empty"), second);
}

#[test]
fn names_and_ports_are_unique() {
    let a = TestHost::new();
    let b = TestHost::new();
    assert_ne!(a.prefix(), b.prefix());
    let prefix = a.prefix();
    assert!(prefix.len() == 8 && prefix.starts_with("sp"), "{prefix}");
    assert_eq!(a.stack("web"), format!("{prefix}-web"));
    let ports: std::collections::HashSet<u16> = (0..50).map(|_| a.free_port()).collect();
    assert_eq!(ports.len(), 50);
}

#[test]
fn a_failed_assertion_reports_command_output_and_root() {
    let host = TestHost::new();
    std::fs::create_dir_all(host.root().join("releases/stacks/web/v1")).unwrap();
    std::os::unix::fs::symlink(
        host.root().join("releases/stacks/web/v1"),
        host.root().join("web-current"),
    )
    .unwrap();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo to-stdout; echo to-stderr >&2; exit 3"]);

    let out = host.command(cmd).run().code(3).failed();
    assert_eq!(out.stdout(), "to-stdout\n");
    assert_eq!(out.stderr(), "to-stderr\n");

    let panic = std::panic::catch_unwind(|| out.clone().ok()).expect_err("ok() must panic");
    let msg = panic.downcast_ref::<String>().expect("formatted panic");
    for needle in [
        "echo to-stdout",
        "exit status: 3",
        "to-stderr",
        "releases/stacks/web/v1/",
        "web-current -> ",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
    }
}

#[test]
fn read_only_release_dirs_do_not_stop_cleanup() {
    use std::os::unix::fs::PermissionsExt;
    let host = TestHost::new();
    let release = host.root().join("releases/stacks/web/v1");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::write(release.join("compose.yaml"), "services: {}\n").unwrap();
    std::fs::set_permissions(&release, std::fs::Permissions::from_mode(0o555)).unwrap();
    let tmp = host.tmp().to_path_buf();
    drop(host);
    assert!(!tmp.exists() || std::env::var_os("STACKPIN_KEEP_TMP").is_some());
}

#[test]
fn the_binary_runs() {
    let host = TestHost::new();
    host.cmd_raw(["--help"]).run().ok();
}

#[test]
fn env_file_lines_parse() {
    let vars = common::parse_env_file(
        "# comment\nexport A=1\nexport STACKPIN_TEST_COMPOSE='docker compose'\nB=\"x y\"\n",
    );
    assert_eq!(vars["A"], "1");
    assert_eq!(vars["STACKPIN_TEST_COMPOSE"], "docker compose");
    assert_eq!(vars["B"], "x y");
}
