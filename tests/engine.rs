//! `engine` and `smoke` against the real components: the Docker engine, the
//! compose CLI and the loopback registry with the test images from
//! `scripts/fixtures.sh`. Each test owns a [`TestHost`], whose drop removes
//! the containers of every project it named, even when the test panics.

use crate::common;

use common::{Fixtures, TestHost};
use stackpin::desired::image::ImageRef;
use stackpin::desired::spec::{Check, ContainersCheck, ExecCheck, HttpCheck, TcpCheck};
use stackpin::engine::runtime::ComposeRuntime;
use stackpin::engine::{ComposeCmd, Docker, Engine, Error};
use stackpin::smoke;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

async fn engine() -> Docker {
    Fixtures::require();
    Docker::connect("auto")
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()))
}

fn image(reference: &str) -> ImageRef {
    ImageRef::parse(reference).unwrap()
}

/// `docker image inspect` RepoDigests, straight from the CLI.
fn cli_repo_digests(reference: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            reference,
        ])
        .output()
        .expect("failed to run docker");
    assert!(
        out.status.success(),
        "docker image inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A compose project in its own directory: one service `app` running
/// `image` on the host network, listening on `port`.
struct Project {
    name: String,
    dir: PathBuf,
    files: Vec<String>,
    port: u16,
}

impl Project {
    fn p(&self) -> stackpin::engine::Project<'_> {
        stackpin::engine::Project {
            name: &self.name,
            dir: &self.dir,
            files: &self.files,
            steps: &[],
        }
    }
}

fn project(host: &TestHost, stack: &str, image: &str) -> Project {
    let name = host.stack(stack);
    let port = host.free_port();
    let dir = host.tmp().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        format!(
            "services:\n  app:\n    image: {image}\n    network_mode: host\n    environment:\n      PORT: \"{port}\"\n"
        ),
    )
    .unwrap();
    Project {
        name,
        dir,
        files: vec!["compose.yaml".into()],
        port,
    }
}

fn http(url: String, contains: Option<&str>) -> Check {
    Check::Http(HttpCheck {
        url: Some(url),
        service: None,
        port: None,
        path: None,
        expect_status: 200,
        host: None,
        contains: contains.map(String::from),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn detects_a_working_compose() {
    let f = Fixtures::require();
    let detected = ComposeCmd::detect("auto").unwrap();
    assert_eq!(detected.display(), f.compose);
    assert_eq!(ComposeCmd::detect(&f.compose).unwrap(), detected);
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_by_digest_and_verifies_repo_digests() {
    let f = Fixtures::require();
    let engine = engine().await;
    engine.ping().await.unwrap();
    let v1 = image(&f.v1);
    // Remove it first (ignoring failure: a running container may use it) so
    // the network path is exercised when possible.
    let _ = Command::new("docker").args(["image", "rm", &f.v1]).output();

    let lines = Mutex::new(Vec::new());
    engine
        .pull(&v1, &|l: &str| lines.lock().unwrap().push(l.to_string()))
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    let lines = lines.into_inner().unwrap();
    assert!(!lines.is_empty());
    assert!(cli_repo_digests(&f.v1).contains(&f.v1), "{lines:?}");

    // Already there: no pull, still verified.
    let lines = Mutex::new(Vec::new());
    engine
        .pull(&v1, &|l: &str| lines.lock().unwrap().push(l.to_string()))
        .await
        .unwrap();
    let lines = lines.into_inner().unwrap();
    assert_eq!(lines, [format!("{}: already present", f.v1)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_of_a_missing_digest_fails() {
    let f = Fixtures::require();
    let engine = engine().await;
    let err = engine
        .pull(&image(&f.missing), &|_: &str| {})
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Pull { .. }), "{err:?}");
    assert!(err.to_string().starts_with("failed to pull "), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_without_a_digest_is_refused() {
    let f = Fixtures::require();
    let engine = engine().await;
    let tagged = image(&format!("{}/stackpin-test/app:latest", f.registry));
    let err = engine.pull(&tagged, &|_: &str| {}).await.unwrap_err();
    assert!(matches!(err, Error::Pull { .. }), "{err:?}");
    assert!(err.to_string().contains("no digest"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn networks() {
    let host = TestHost::new();
    let engine = engine().await;
    assert!(engine.network_exists("bridge").await.unwrap());
    let missing = format!("{}-no-such-network", host.prefix());
    assert!(!engine.network_exists(&missing).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn up_smoke_and_down() {
    let host = TestHost::new();
    let f = host.fixtures();
    let engine = engine().await;
    let p = project(&host, "web", &f.v1);

    let (_, model) = engine.config_model(p.p()).await.unwrap();
    assert_eq!(
        model
            .pointer("/services/app/image")
            .and_then(|v| v.as_str()),
        Some(f.v1.as_str()),
        "compose's own model of the project: {model}"
    );
    let log = engine
        .up(p.p())
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    assert!(
        log.command
            .contains(&format!("-p {} --project-directory ", p.name))
            && log
                .command
                .contains(" -f compose.yaml up -d --remove-orphans"),
        "{}",
        log.command
    );
    assert_eq!(log.code, Some(0));

    let containers = engine.containers(&p.name).await.unwrap();
    assert_eq!(containers.len(), 1, "{containers:#?}");
    let c = &containers[0];
    assert_eq!(c.service, "app");
    assert_eq!(c.state, "running");
    assert_eq!(c.image, f.v1);
    assert!(c.repo_digests.contains(&f.v1), "{c:#?}");
    assert_eq!(c.labels["com.docker.compose.project"], p.name);
    assert_eq!(c.exit_code, None);
    assert_eq!(c.health, None);

    let base = format!("http://127.0.0.1:{}", p.port);
    let checks = vec![
        Check::Containers(ContainersCheck {}),
        http(format!("{base}/health"), Some("ok")),
        http(format!("{base}/"), Some("stackpin-test-app v1")),
        Check::Tcp(TcpCheck {
            address: format!("127.0.0.1:{}", p.port),
        }),
        Check::Exec(ExecCheck {
            service: "app".into(),
            command: vec!["cat".into(), "/www/version".into()],
        }),
    ];
    let services = vec!["app".to_string()];
    let outcome = smoke::run(
        &engine,
        &ComposeRuntime,
        &p.name,
        &services,
        &checks,
        Duration::from_secs(60),
    )
    .await;
    assert!(outcome.passed, "{outcome:#?}");
    assert_eq!(outcome.failed_check, None);
    assert!(outcome.attempts >= 1);

    let (code, out) = engine
        .exec(&c.id, &["cat".into(), "/www/version".into()])
        .await
        .unwrap();
    assert_eq!((code, out.trim()), (0, "v1"));
    let (code, _) = engine
        .exec(&c.id, &["cat".into(), "/no/such/file".into()])
        .await
        .unwrap();
    assert_ne!(code, 0);

    // A failing exec check names the check and carries the output.
    let failing = [Check::Exec(ExecCheck {
        service: "app".into(),
        command: vec!["cat".into(), "/no/such/file".into()],
    })];
    let outcome = smoke::run(
        &engine,
        &ComposeRuntime,
        &p.name,
        &services,
        &failing,
        Duration::from_secs(3),
    )
    .await;
    assert!(!outcome.passed);
    assert_eq!(
        outcome.failed_check.as_deref(),
        Some("exec app: cat /no/such/file")
    );
    let error = outcome.error.unwrap();
    assert!(error.contains("exit code 1"), "{error}");
    assert!(error.contains("/no/such/file"), "{error}");

    engine.down(p.p()).await.unwrap();
    assert!(engine.containers(&p.name).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_health_fails_naming_the_check() {
    let host = TestHost::new();
    let f = host.fixtures();
    let engine = engine().await;
    let p = project(&host, "broken", &f.broken);
    engine.up(p.p()).await.unwrap();

    let url = format!("http://127.0.0.1:{}/health", p.port);
    let checks = vec![
        Check::Containers(ContainersCheck {}),
        http(url.clone(), None),
    ];
    let timeout = Duration::from_secs(5);
    let outcome = smoke::run(
        &engine,
        &ComposeRuntime,
        &p.name,
        &["app".into()],
        &checks,
        timeout,
    )
    .await;
    assert!(!outcome.passed, "{outcome:#?}");
    assert_eq!(
        outcome.failed_check.as_deref(),
        Some(&*format!("http {url}"))
    );
    let error = outcome.error.unwrap();
    assert!(
        error.starts_with(&format!("http {url}: status 404, expected 200")),
        "{error}"
    );
    assert!(outcome.duration >= timeout);
    assert!(outcome.attempts > 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_fails_fast() {
    let host = TestHost::new();
    let f = host.fixtures();
    let engine = engine().await;
    let p = project(&host, "crash", &f.crash);
    engine.up(p.p()).await.unwrap();

    let timeout = Duration::from_secs(60);
    let checks = vec![http(format!("http://127.0.0.1:{}/health", p.port), None)];
    let outcome = smoke::run(
        &engine,
        &ComposeRuntime,
        &p.name,
        &["app".into()],
        &checks,
        timeout,
    )
    .await;
    assert!(!outcome.passed, "{outcome:#?}");
    assert_eq!(outcome.failed_check.as_deref(), Some("containers"));
    assert!(outcome.duration < timeout / 2, "{outcome:#?}");
    let error = outcome.error.unwrap();
    assert!(error.contains("service app"), "{error}");
    assert!(error.contains("exited (exit code 1)"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_fails_fast_without_checks() {
    // No checks means `containers: {}`; a container that is running at first
    // but dies a second later must not pass.
    let host = TestHost::new();
    let f = host.fixtures();
    let engine = engine().await;
    let p = project(&host, "crash0", &f.crash);
    engine.up(p.p()).await.unwrap();

    let timeout = Duration::from_secs(60);
    let outcome = smoke::run(
        &engine,
        &ComposeRuntime,
        &p.name,
        &["app".into()],
        &[],
        timeout,
    )
    .await;
    assert!(!outcome.passed, "{outcome:#?}");
    assert_eq!(outcome.failed_check.as_deref(), Some("containers"));
    assert!(outcome.duration < timeout / 2, "{outcome:#?}");
}

/// The stability watch counts from each container's own start, so time
/// spent after the start (the rest of `compose up`, here a pause as long as
/// a slow `up`) is part of it. The guarantee stays: an image that dies a
/// second after its start is still caught, also when smoke begins almost a
/// second late, and a healthy image is never passed before
/// [`smoke::MIN_STABLE`] has run since its start.
#[tokio::test(flavor = "multi_thread")]
async fn the_overlapping_stability_watch_still_catches_a_crash_a_second_after_start() {
    let host = TestHost::new();
    let f = host.fixtures();
    let engine = engine().await;
    let timeout = Duration::from_secs(60);

    let p = project(&host, "crash-late", &f.crash);
    engine.up(p.p()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let outcome = smoke::run(
        &engine,
        &ComposeRuntime,
        &p.name,
        &["app".into()],
        &[],
        timeout,
    )
    .await;
    assert!(!outcome.passed, "{outcome:#?}");
    assert_eq!(outcome.failed_check.as_deref(), Some("containers"));
    assert!(
        outcome
            .error
            .as_deref()
            .unwrap_or("")
            .contains("exited (exit code 1)"),
        "{outcome:#?}"
    );

    // A good image: smoke started 1.5 s after the start passes about
    // MIN_STABLE after the start, not MIN_STABLE after smoke began.
    let p = project(&host, "good-late", &f.v1);
    engine.up(p.p()).await.unwrap();
    let started_at = engine.containers(&p.name).await.unwrap()[0]
        .started_at
        .expect("the engine reports State.StartedAt");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let outcome = smoke::run(
        &engine,
        &ComposeRuntime,
        &p.name,
        &["app".into()],
        &[],
        timeout,
    )
    .await;
    assert!(outcome.passed, "{outcome:#?}");
    let age = (chrono::Utc::now() - started_at).to_std().unwrap();
    assert!(age >= smoke::MIN_STABLE, "passed {age:?} after the start");
    assert!(
        outcome.duration < smoke::MIN_STABLE,
        "the watch did not count the time since the start: {outcome:#?}"
    );
}

/// The engine's event stream, as smoke listens to it: the project's
/// container starting and dying arrive.
#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_reports_a_projects_container_dying() {
    let host = TestHost::new();
    let f = host.fixtures();
    let engine = engine().await;
    let p = project(&host, "events", &f.crash);
    let mut rx = engine
        .watch(&p.name)
        .expect("the Docker engine streams events");
    // The subscription is made by a task: give it a moment to be in place.
    tokio::time::sleep(Duration::from_millis(300)).await;
    engine.up(p.p()).await.unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !seen.iter().any(|a: &String| a == "die") {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(a)) => seen.push(a),
            other => panic!("no `die` event (saw {seen:?}): {other:?}"),
        }
    }
    assert!(seen.iter().any(|a| a == "start"), "{seen:?}");
}

/// With a Docker healthcheck, "healthy" and no restart is the stability
/// proof: smoke passes as soon as Docker says so, before MIN_STABLE.
#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_container_needs_no_stability_watch() {
    let host = TestHost::new();
    let f = host.fixtures();
    let engine = engine().await;
    let p = project(&host, "healthy", &f.v1);
    let compose = p.dir.join("compose.yaml");
    let mut text = std::fs::read_to_string(&compose).unwrap();
    text.push_str(&format!(
        "    healthcheck:\n      test: [\"CMD\", \"wget\", \"-q\", \"-O-\", \"http://127.0.0.1:{}/health\"]\n      interval: 1s\n      timeout: 1s\n      retries: 3\n",
        p.port
    ));
    std::fs::write(&compose, text).unwrap();
    engine.up(p.p()).await.unwrap();
    let outcome = smoke::run(
        &engine,
        &ComposeRuntime,
        &p.name,
        &["app".into()],
        &[Check::Containers(ContainersCheck {})],
        Duration::from_secs(30),
    )
    .await;
    assert!(outcome.passed, "{outcome:#?}");
    let c = &engine.containers(&p.name).await.unwrap()[0];
    assert_eq!(c.health.as_deref(), Some("healthy"));
    let age = (chrono::Utc::now() - c.started_at.unwrap())
        .to_std()
        .unwrap();
    assert!(
        age < smoke::MIN_STABLE,
        "a healthy container still waited the whole watch: passed {age:?} after its start"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn compose_failures_are_masked() {
    let host = TestHost::new();
    let f = host.fixtures();
    let engine = engine().await;
    let secret = "s3cr3t-value-42";
    engine.add_secrets(&[secret.into(), "ab".into()]);
    let p = project(&host, "masked", &f.v1);
    // An unknown key makes compose print the key, secret included.
    std::fs::write(
        p.dir.join("compose.yaml"),
        format!(
            "services:\n  app:\n    image: {}\n    bogus_{secret}: 1\n",
            f.v1
        ),
    )
    .unwrap();
    let files = vec!["compose.yaml".to_string(), format!("{secret}.yaml")];
    std::fs::write(
        p.dir.join(format!("{secret}.yaml")),
        "services:\n  app:\n    environment:\n      X: y\n",
    )
    .unwrap();

    let err = engine
        .config_model(stackpin::engine::Project {
            name: &p.name,
            dir: &p.dir,
            files: &files,
            steps: &[],
        })
        .await
        .unwrap_err();
    let Error::Compose {
        command,
        code,
        output,
    } = &err
    else {
        panic!("expected a compose error, got {err:?}");
    };
    assert_ne!(*code, Some(0));
    assert!(command.contains("-f ***.yaml config"), "{command}");
    assert!(output.contains("bogus_***"), "{output}");
    let all = format!("{err:?} {err}");
    assert!(!all.contains(secret), "{all}");
}

/// `auto` prefers compose v2, and `--version` and `status` say which one
/// runs: v2 where the plugin is installed (the fixtures' DOCKER_CONFIG),
/// Debian's v1 where it is not.
#[test]
fn version_and_status_say_which_compose_runs() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let v1 = h.cmd_raw(["--version"]).run().ok().stdout();
    assert!(v1.contains("compose (auto"), "{v1}");
    // Without the plugin (as the fixtures found this machine), v1.
    if f.compose == "docker-compose" {
        assert!(
            v1.contains("docker-compose (docker-compose version 1."),
            "{v1}"
        );
    }
    let v2 = h
        .cmd_raw(["--version"])
        .env("DOCKER_CONFIG", &f.compose_v2_config)
        .run()
        .ok()
        .stdout();
    assert!(
        v2.contains("docker compose (Docker Compose version v2."),
        "{v2}"
    );
    let status = h
        .cmd(["status"])
        .env("DOCKER_CONFIG", &f.compose_v2_config)
        .run()
        .ok()
        .stdout();
    assert!(
        status.contains("compose: docker compose (Docker Compose version v2."),
        "{status}"
    );
}
