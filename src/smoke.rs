//! Smoke tests after `compose up` (SPEC §1 `smoke:`, §3 step 7): every
//! configured check must pass within one overall budget. Checks that have
//! not passed yet are retried about every [`RETRY_INTERVAL`]; a check that
//! passed stays passed. With no checks configured the stack gets
//! `containers: {}`.
//!
//! Independently of the checks, every attempt looks at the project's
//! containers and fails fast — without waiting for the budget — when one has
//! exited, died, or restarted since the first look: a crash loop does not get
//! better by waiting. Between attempts it also listens to the engine's
//! event stream for the project ([`Engine::watch`]): a container that dies,
//! restarts or turns healthy is looked at again at once, not at the next
//! retry. And a run never passes before every running container
//! has run for [`MIN_STABLE`] (capped at half the budget), so an image that
//! dies a second after start is not declared good. That watch counts from
//! each container's own start (`State.StartedAt`), so the time spent in
//! `compose up` after the start counts too; a container whose Docker
//! healthcheck says healthy and that never restarted needs no watch.

use crate::desired::Stack;
use crate::desired::spec::{Check, ContainersCheck, ExecCheck, HttpCheck, TcpCheck};
use crate::engine::runtime::{Gate, Runtime};
use crate::engine::{ContainerInfo, Engine};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
// The tokio clock, so that a paused test clock and the sleeps agree.
use tokio::time::Instant;

/// The file inside every release that holds its [`Spec`].
pub const SPEC_FILE: &str = "stackpin.smoke.json";

/// What the smoke of a release needs, stored inside the release so that a
/// revert or a recovery smokes a release with its own checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub timeout_secs: u64,
    /// The compose services the release runs.
    pub services: Vec<String>,
    pub checks: Vec<Check>,
    /// Services replaced start-first (`update:`; see [`crate::rollout`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub start_first: Vec<String>,
    /// How long old and new containers of a start-first service serve
    /// together before the old one stops.
    #[serde(default = "default_drain_ms")]
    pub drain_ms: u64,
    /// `update.reload`: commands run in a routing service's container once
    /// containers it routes to were replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reload: Vec<ExecCheck>,
}

fn default_drain_ms() -> u64 {
    crate::desired::update::DEFAULT_DRAIN.as_millis() as u64
}

/// A release's [`Spec`] could not be read: it cannot be judged, so it is
/// never passed.
#[derive(Debug, thiserror::Error)]
#[error("failed to read the smoke checks {}: {why}", path.display())]
pub struct SpecError {
    pub path: std::path::PathBuf,
    pub why: String,
}

impl Spec {
    /// The spec of a stack's desired release.
    pub fn of(stack: &Stack) -> Spec {
        Spec {
            timeout_secs: stack.smoke_timeout.as_secs(),
            services: stack.compose.service_names(),
            checks: stack.checks().to_vec(),
            start_first: stack.rollout.start_first.clone(),
            drain_ms: stack.rollout.drain.as_millis() as u64,
            reload: stack.rollout.reload.clone(),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// Reads `<release>/stackpin.smoke.json`.
    ///
    /// # Errors
    /// The file is missing, unreadable or not a spec.
    pub fn read(release_dir: &Path) -> Result<Spec, SpecError> {
        let path = release_dir.join(SPEC_FILE);
        let bytes = std::fs::read(&path).map_err(|e| SpecError {
            path: path.clone(),
            why: e.to_string(),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| SpecError {
            path,
            why: e.to_string(),
        })
    }
}

/// Why one check attempt did not pass, in words for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Failure(pub String);

impl From<String> for Failure {
    fn from(s: String) -> Failure {
        Failure(s)
    }
}

impl From<&str> for Failure {
    fn from(s: &str) -> Failure {
        Failure(s.to_string())
    }
}

/// Pause between two attempts of the checks that have not passed yet.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(750);
/// How long the containers are watched before a run may pass.
pub const MIN_STABLE: Duration = Duration::from_secs(3);
/// Per-request timeout of an `http` check.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Connect timeout of a `tcp` check.
pub const TCP_TIMEOUT: Duration = Duration::from_secs(3);
/// Timeout of one `exec` check attempt.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);
/// The name under which container failures are reported.
pub const CONTAINERS: &str = "containers";

/// The verdict of one smoke run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub passed: bool,
    /// [`Check::label`] of the check that failed, or `containers` when a
    /// container exited, died or restarted.
    pub failed_check: Option<String>,
    /// `<check label>: <its last error>`.
    pub error: Option<String>,
    pub duration: Duration,
    /// How many rounds of checks ran.
    pub attempts: u32,
    /// Each check's label and, when it passed, how long after the start
    /// it first did: the evidence a promotion carries.
    pub checks: Vec<(String, Option<Duration>)>,
}

impl Outcome {
    /// Each check that passed and when: `http http://…/health in 1.2s,
    /// containers in 5s`.
    pub fn passed_checks(&self) -> String {
        self.checks
            .iter()
            .filter_map(|(label, after)| {
                let after = (*after)?;
                Some(format!(
                    "{label} in {}",
                    humantime::format_duration(Duration::from_millis(after.as_millis() as u64))
                ))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One line for status and logs.
    pub fn summary(&self) -> String {
        let took =
            humantime::format_duration(Duration::from_millis(self.duration.as_millis() as u64));
        match (&self.passed, &self.error) {
            (true, _) => format!("smoke passed in {took} ({} attempts)", self.attempts),
            (false, Some(e)) => format!("smoke failed after {took}: {e}"),
            (false, None) => format!("smoke failed after {took}"),
        }
    }
}

#[derive(Debug, Default)]
struct CheckState {
    passed: bool,
    /// When it first passed, after the start.
    passed_after: Option<Duration>,
    last_error: Option<String>,
}

/// Runs `checks` (or `containers: {}` when there are none) against stack
/// `project`, whose members `runtime` lists and whose expected services are
/// `services`, within `timeout`, gated as the runtime says ([`Gate`]).
/// Read-only: it never starts, stops or restarts anything.
///
/// # Guarantees
/// Returns by `timeout` plus at most one check attempt's own timeout. Returns
/// early, failed with `failed_check = "containers"`, as soon as a container
/// of the project has exited (with a non-zero code, or at all when its
/// service is one of `services`), is dead or restarting, or has restarted
/// since the first observation.
pub async fn run(
    engine: &dyn Engine,
    runtime: &dyn Runtime,
    project: &str,
    services: &[String],
    checks: &[Check],
    timeout: Duration,
) -> Outcome {
    match runtime.gate() {
        Gate::Containers => {
            run_checks(engine, runtime, project, services, checks, timeout, false).await
        }
        // The members are replaced after `deploy` returned (Swarm rolls
        // its tasks): the `containers` check (added when the stack has
        // none) runs first and the others only once it has passed, i.e.
        // once every member runs the new spec: before that, an `http`
        // check could pass against a member of the old release and, a
        // passed check staying passed, never look again.
        Gate::Rollout => {
            let mut ordered: Vec<Check> = vec![Check::Containers(ContainersCheck {})];
            ordered.extend(
                checks
                    .iter()
                    .filter(|c| !matches!(c, Check::Containers(_)))
                    .cloned(),
            );
            run_checks(engine, runtime, project, services, &ordered, timeout, true).await
        }
    }
}

async fn run_checks(
    engine: &dyn Engine,
    runtime: &dyn Runtime,
    project: &str,
    services: &[String],
    checks: &[Check],
    timeout: Duration,
    first_gates: bool,
) -> Outcome {
    let started = Instant::now();
    let deadline = started + timeout;
    let stable = MIN_STABLE.min(timeout / 2);
    // Without a list of containers, the old rule: watched from here.
    let stable_at = started + stable;
    let mut first_seen: HashMap<String, Instant> = HashMap::new();
    let default = [Check::Containers(ContainersCheck {})];
    let checks: &[Check] = if checks.is_empty() { &default } else { checks };
    let labels: Vec<String> = checks.iter().map(Check::label).collect();
    let mut states: Vec<CheckState> = checks.iter().map(|_| CheckState::default()).collect();
    let client = http_client();
    let mut baseline: HashMap<String, i64> = HashMap::new();
    let mut attempts = 0u32;
    let mut watch = engine.watch(project);

    let finish = |attempts: u32, failed: Option<(String, String)>, states: &[CheckState]| {
        let outcome = Outcome {
            checks: labels
                .iter()
                .zip(states)
                .map(|(l, s)| (l.clone(), s.passed_after))
                .collect(),
            passed: failed.is_none(),
            error: failed.as_ref().map(|(l, e)| format!("{l}: {e}")),
            failed_check: failed.map(|(l, _)| l),
            duration: started.elapsed(),
            attempts,
        };
        if outcome.passed {
            tracing::info!(project, attempts, "{}", outcome.summary());
        } else {
            tracing::info!(project, attempts, failed_check = ?outcome.failed_check, "{}", outcome.summary());
        }
        outcome
    };

    loop {
        attempts += 1;
        let observed = runtime
            .members(engine, project)
            .await
            .map_err(|e| Failure(e.report()));
        match &observed {
            Ok(containers) => {
                for c in containers {
                    baseline.entry(c.id.clone()).or_insert(c.restart_count);
                    first_seen.entry(c.id.clone()).or_insert(started);
                }
                if let Some(why) = crashed(containers, &baseline, services) {
                    return finish(attempts, Some((CONTAINERS.to_string(), why)), &states);
                }
            }
            Err(e) => {
                tracing::debug!(project, attempt = attempts, error = %e, "failed to list containers")
            }
        }

        let mut gate_open = true;
        for ((check, label), state) in checks.iter().zip(&labels).zip(&mut states) {
            if state.passed {
                continue;
            }
            if !gate_open {
                state.last_error = Some("waiting for every task of the new spec to run".into());
                continue;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = match check {
                Check::Containers(_) => observed
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|cs| containers_ready(cs, services))
                    .map_err(Cut::Not),
                Check::Http(h) => match (&client, http_url(h, &observed)) {
                    (Ok(client), Ok(url)) => bounded(remaining, http_check(client, h, &url)).await,
                    (Err(e), _) => Err(Cut::Not(e.clone())),
                    (_, Err(e)) => Err(Cut::Not(e)),
                },
                Check::Tcp(t) => bounded(remaining, tcp_check(t)).await,
                Check::Exec(x) => match &observed {
                    Ok(cs) => bounded(remaining, exec_check(engine, cs, x)).await,
                    Err(e) => Err(Cut::Not(e.clone())),
                },
            };
            tracing::debug!(project, attempt = attempts, check = %label, result = ?result, "smoke check");
            match result {
                Ok(()) => {
                    state.passed = true;
                    state.passed_after = Some(started.elapsed());
                }
                Err(e) => state.last_error = Some(e.keep(state.last_error.take())),
            }
            if first_gates {
                gate_open = state.passed;
            }
        }

        let now = Instant::now();
        let all_passed = states.iter().all(|s| s.passed);
        let settling = observed
            .as_ref()
            .ok()
            .and_then(|cs| settling(cs, &first_seen, now, chrono::Utc::now(), stable))
            .unwrap_or_else(|| stable_at.saturating_duration_since(now));
        if all_passed && settling.is_zero() {
            return finish(attempts, None, &states);
        }
        if now >= deadline {
            let (label, state) = labels
                .iter()
                .zip(&states)
                .find(|(_, s)| !s.passed)
                .map(|(l, s)| (l.clone(), s.last_error.clone()))
                .unwrap_or_else(|| {
                    (
                        CONTAINERS.to_string(),
                        Some("the containers were not stable for long enough".into()),
                    )
                });
            let why = state.unwrap_or_else(|| "not attempted".into());
            return finish(
                attempts,
                Some((
                    label,
                    format!(
                        "{why} (timed out after {})",
                        humantime::format_duration(timeout)
                    ),
                )),
                &states,
            );
        }
        let next = if all_passed {
            now + settling.min(RETRY_INTERVAL)
        } else {
            (now + RETRY_INTERVAL).min(deadline)
        };
        wait_or_event(next, &mut watch, project).await;
    }
}

/// Sleeps until `until`, or until the engine reports something of the
/// project (then takes what else has arrived too), whichever comes first.
/// Without a stream ([`Engine::watch`]), or once it ends, it only sleeps.
pub async fn wait_or_event(
    until: Instant,
    watch: &mut Option<tokio::sync::mpsc::Receiver<String>>,
    project: &str,
) {
    let Some(rx) = watch.as_mut() else {
        return tokio::time::sleep_until(until).await;
    };
    let ended = tokio::select! {
        _ = tokio::time::sleep_until(until) => false,
        event = rx.recv() => match event {
            Some(action) => {
                tracing::debug!(project, action, "engine event: looking again");
                while rx.try_recv().is_ok() {}
                false
            }
            None => true,
        },
    };
    if ended {
        *watch = None;
    }
}

/// One attempt, cut off at the remaining budget (but given at least a
/// moment, so a check made right at the end can still succeed).
async fn bounded(
    remaining: Duration,
    fut: impl std::future::Future<Output = Result<(), Failure>>,
) -> Result<(), Cut> {
    let limit = remaining.max(Duration::from_millis(250));
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(Cut::Not),
        Err(_) => Err(Cut::ByDeadline(format!(
            "timed out after {}",
            humantime::format_duration(Duration::from_millis(limit.as_millis() as u64))
        ))),
    }
}

/// A failed attempt of a check: its own failure, or cut short by the
/// smoke's deadline before it could say anything.
#[derive(Debug)]
enum Cut {
    Not(Failure),
    ByDeadline(String),
}

impl Cut {
    /// The error the check reports after this attempt: an attempt the
    /// deadline cut short says less than the failure seen before it (the
    /// check's output, its status), which is kept. Pure.
    fn keep(self, previous: Option<String>) -> String {
        match (self, previous) {
            (Cut::ByDeadline(_), Some(p)) => p,
            (Cut::ByDeadline(t), None) => t,
            (Cut::Not(f), _) => f.0,
        }
    }
}

/// How long a running container has run: from its `State.StartedAt` by
/// the wall clock, or, when the engine does not say, since `seen` (when
/// smoke began to watch it). The engine is this host's, so both clocks are
/// one; an engine elsewhere whose clock ran behind would shorten the watch.
pub fn run_age(
    c: &ContainerInfo,
    seen: Instant,
    now: Instant,
    wall_now: chrono::DateTime<chrono::Utc>,
) -> Duration {
    match c.started_at {
        // A start "in the future" (clock steps) counts as just started.
        Some(t) => (wall_now - t).to_std().unwrap_or(Duration::ZERO),
        None => now.saturating_duration_since(seen),
    }
}

/// How much longer the watch must last before the running containers count
/// as stable: zero when each has run for `stable` since its start, or is
/// healthy by its Docker healthcheck without a restart. Containers that are
/// not running are judged by [`crashed`], not here. `None` when no
/// container runs: the caller falls back to watching from its own start.
pub fn settling(
    containers: &[ContainerInfo],
    first_seen: &HashMap<String, Instant>,
    now: Instant,
    wall_now: chrono::DateTime<chrono::Utc>,
    stable: Duration,
) -> Option<Duration> {
    let running: Vec<&ContainerInfo> = containers.iter().filter(|c| c.state == "running").collect();
    if running.is_empty() {
        return None;
    }
    running
        .into_iter()
        .filter(|c| !(c.health.as_deref() == Some("healthy") && c.restart_count == 0))
        .map(|c| {
            let seen = first_seen.get(&c.id).copied().unwrap_or(now);
            stable.saturating_sub(run_age(c, seen, now, wall_now))
        })
        .max()
        .or(Some(Duration::ZERO))
}

/// Why the project counts as crashed, if it does. `baseline` holds the
/// restart count of every container at its first observation.
pub fn crashed(
    containers: &[ContainerInfo],
    baseline: &HashMap<String, i64>,
    services: &[String],
) -> Option<String> {
    let mut problems = Vec::new();
    for c in containers {
        let expected = services.is_empty() || services.contains(&c.service);
        let code = c
            .exit_code
            .map(|x| format!(" (exit code {x})"))
            .unwrap_or_default();
        let who = format!("service {} (container {})", c.service, c.name);
        match c.state.as_str() {
            "dead" => problems.push(format!("{who} is dead{code}")),
            "restarting" => problems.push(format!(
                "{who} is restarting{code}, restart count {}",
                c.restart_count
            )),
            // A one-shot job outside `services` may finish cleanly.
            "exited" if expected || c.exit_code != Some(0) => {
                problems.push(format!("{who} exited{code}"))
            }
            // Docker has judged it: waiting for the timeout would only
            // serve users errors for longer. Only on Docker's own evidence
            // for this run of the container: a failed probe since it
            // started (a state carried over from before its start, or a
            // status without a probe behind it, is not a verdict).
            _ if expected && unhealthy_now(c) => problems.push(format!(
                "{who} is unhealthy: its Docker healthcheck failed ({})",
                c.health_log
                    .as_ref()
                    .map(crate::engine::HealthLog::describe)
                    .unwrap_or_else(|| "no probe log".into())
            )),
            _ => {
                let first = baseline.get(&c.id).copied().unwrap_or(c.restart_count);
                if c.restart_count > first {
                    problems.push(format!(
                        "{who} restarted (restart count {first} -> {}), state {}",
                        c.restart_count, c.state
                    ));
                }
            }
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Whether Docker says `c` is unhealthy, with a failed probe of its
/// current run behind it. A container whose status is `unhealthy` without
/// such a probe is still starting as far as stackpin can prove (logged).
/// Without a log (an engine that keeps none) the status alone counts.
pub fn unhealthy_now(c: &ContainerInfo) -> bool {
    if c.health.as_deref() != Some("unhealthy") {
        return false;
    }
    let Some(log) = &c.health_log else {
        return true;
    };
    if log.failures_since(c.started_at) > 0 {
        return true;
    }
    tracing::warn!(
        container = %c.name,
        started_at = ?c.started_at,
        evidence = %log.describe(),
        "Docker reports the container unhealthy without a failed probe since it started: not taken as a verdict"
    );
    false
}

/// The `containers` check: every service has at least one container, all
/// running, and healthy where a healthcheck is defined. With no `services`,
/// every container of the project counts, and there must be one.
pub fn containers_ready(containers: &[ContainerInfo], services: &[String]) -> Result<(), Failure> {
    let mut problems = Vec::new();
    let wanted: Vec<&ContainerInfo> = if services.is_empty() {
        if containers.is_empty() {
            return Err("the project has no containers".into());
        }
        containers.iter().collect()
    } else {
        for s in services {
            if !containers.iter().any(|c| &c.service == s) {
                problems.push(format!("service {s} has no container"));
            }
        }
        containers
            .iter()
            .filter(|c| services.contains(&c.service))
            .collect()
    };
    for c in wanted {
        let who = format!("service {} (container {})", c.service, c.name);
        if c.state != "running" {
            problems.push(format!("{who} is {}", c.state));
        } else if let Some(h) = c.health.as_deref().filter(|h| *h != "healthy") {
            problems.push(format!("{who} is {h}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure(problems.join("; ")))
    }
}

/// How many of its last lines a failed smoke keeps of each container.
pub const FAILURE_LOG_LINES: usize = 20;
/// Of at most this many containers.
const FAILURE_LOG_CONTAINERS: usize = 4;

/// The containers whose logs explain a failed smoke: of `services` (all
/// when empty), those not running, not healthy or restarted since they
/// were created; when all of them look well (an http check failed), all of
/// them. At most [`FAILURE_LOG_CONTAINERS`], in the engine's order.
pub fn evidence_containers<'a>(
    containers: &'a [ContainerInfo],
    services: &[String],
) -> Vec<&'a ContainerInfo> {
    let ours: Vec<&ContainerInfo> = containers
        .iter()
        .filter(|c| services.is_empty() || services.contains(&c.service))
        .collect();
    let unwell: Vec<&ContainerInfo> = ours
        .iter()
        .copied()
        .filter(|c| {
            c.state != "running"
                || c.restart_count > 0
                || c.health.as_deref().is_some_and(|h| h != "healthy")
        })
        .collect();
    let chosen = if unwell.is_empty() { ours } else { unwell };
    chosen.into_iter().take(FAILURE_LOG_CONTAINERS).collect()
}

/// The last [`FAILURE_LOG_LINES`] lines of each of the
/// [`evidence_containers`] of `project`, each under a line naming its
/// service and container (masked by the engine); `None` when there is no
/// container to read. Read before the revert replaces them.
pub async fn failure_logs(
    engine: &dyn Engine,
    runtime: &dyn Runtime,
    project: &str,
    services: &[String],
) -> Option<String> {
    let containers = runtime.members(engine, project).await.ok()?;
    let mut out = String::new();
    for c in evidence_containers(&containers, services) {
        let body = match engine.logs(&c.id, FAILURE_LOG_LINES).await {
            Ok(text) if text.trim().is_empty() => "(it printed nothing)\n".to_string(),
            Ok(text) => text,
            Err(e) => format!("(its logs could not be read: {})\n", e.report()),
        };
        out.push_str(&format!(
            "--- service {} (container {}, {}), its last lines:\n",
            c.service, c.name, c.state
        ));
        out.push_str(&body);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    (!out.is_empty()).then_some(out)
}

pub fn http_client() -> Result<reqwest::Client, Failure> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(HTTP_TIMEOUT)
        .build()
        .map_err(|e| {
            Failure(format!(
                "failed to build an HTTP client: {}",
                error_chain(&e)
            ))
        })
}

/// The URL of an `http` check: its `url`, or the address of the first
/// running container of its `service`.
fn http_url(
    check: &HttpCheck,
    observed: &Result<Vec<ContainerInfo>, Failure>,
) -> Result<String, Failure> {
    let Some(service) = &check.service else {
        return check
            .url_for(None)
            .ok_or_else(|| Failure::from("the check has no url"));
    };
    let containers = observed.as_ref().map_err(Clone::clone)?;
    let ip = containers
        .iter()
        .filter(|c| &c.service == service && c.state == "running")
        .find_map(ContainerInfo::address)
        .ok_or_else(|| {
            Failure(format!(
                "service {service} has no running container with an address"
            ))
        })?;
    check
        .url_for(Some(&ip))
        .ok_or_else(|| Failure::from("the check has no port"))
}

/// One attempt of an `http` check.
pub async fn http_check(
    client: &reqwest::Client,
    check: &HttpCheck,
    url: &str,
) -> Result<(), Failure> {
    let mut req = client.get(url);
    if let Some(host) = &check.host {
        req = req.header(reqwest::header::HOST, host);
    }
    let resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            format!(
                "no answer within {}",
                humantime::format_duration(HTTP_TIMEOUT)
            )
        } else {
            innermost(&e)
        }
    })?;
    let status = resp.status().as_u16();
    if status != check.expect_status {
        return Err(Failure(format!(
            "status {status}, expected {}",
            check.expect_status
        )));
    }
    if let Some(needle) = &check.contains {
        let body = resp
            .text()
            .await
            .map_err(|e| format!("failed to read the body: {}", innermost(&e)))?;
        if !body.contains(needle.as_str()) {
            return Err(Failure(format!(
                "the body does not contain {needle:?} (body: {:?})",
                excerpt(&body, 200)
            )));
        }
    }
    Ok(())
}

/// One attempt of a `tcp` check.
pub async fn tcp_check(check: &TcpCheck) -> Result<(), Failure> {
    match tokio::time::timeout(TCP_TIMEOUT, tokio::net::TcpStream::connect(&check.address)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Failure(format!("failed to connect: {e}"))),
        Err(_) => Err(Failure(format!(
            "no connection within {}",
            humantime::format_duration(TCP_TIMEOUT)
        ))),
    }
}

/// One attempt of an `exec` check, in the first running container of the
/// service.
async fn exec_check(
    engine: &dyn Engine,
    containers: &[ContainerInfo],
    check: &ExecCheck,
) -> Result<(), Failure> {
    let Some(c) = containers
        .iter()
        .find(|c| c.service == check.service && c.state == "running")
    else {
        return Err(Failure(format!(
            "service {} has no running container",
            check.service
        )));
    };
    exec_in(engine, &c.id, check).await
}

/// One attempt of an `exec` check in the container `id`.
pub async fn exec_in(engine: &dyn Engine, id: &str, check: &ExecCheck) -> Result<(), Failure> {
    let run = engine.exec(id, &check.command);
    let (code, output) = tokio::time::timeout(EXEC_TIMEOUT, run)
        .await
        .map_err(|_| {
            format!(
                "no exit within {}",
                humantime::format_duration(EXEC_TIMEOUT)
            )
        })?
        .map_err(|e| e.report())?;
    if code == 0 {
        return Ok(());
    }
    let out = output.trim();
    if out.is_empty() {
        Err(Failure(format!("exit code {code}")))
    } else {
        Err(Failure(format!(
            "exit code {code}: {}",
            tail_chars(out, 500)
        )))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// The most specific cause (`Connection refused (os error 111)`): reqwest's
/// outer layers only repeat the URL, which the check label already shows.
fn innermost(e: &dyn std::error::Error) -> String {
    let mut last = e;
    while let Some(s) = last.source() {
        last = s;
    }
    last.to_string()
}

fn excerpt(s: &str, max_chars: usize) -> String {
    let mut out: String = s.chars().take(max_chars).collect();
    if s.chars().count() > max_chars {
        out.push('…');
    }
    out
}

fn tail_chars(s: &str, max_chars: usize) -> String {
    let n = s.chars().count();
    if n <= max_chars {
        return s.to_string();
    }
    let mut out = String::from("…");
    out.extend(s.chars().skip(n - max_chars));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// A one-thread HTTP server that answers every request with `response`
    /// and keeps the requests it saw.
    fn serve(response: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                seen2
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf).into_owned());
                let _ = stream.write_all(response.as_bytes());
            }
        });
        (format!("http://{addr}"), seen)
    }

    fn http(url: String, status: u16, host: Option<&str>, contains: Option<&str>) -> HttpCheck {
        HttpCheck {
            url: Some(url),
            service: None,
            port: None,
            path: None,
            expect_status: status,
            host: host.map(String::from),
            contains: contains.map(String::from),
        }
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nall ok\n";
    const NOT_FOUND: &str =
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    const REDIRECT: &str = "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

    /// A runtime whose members an orchestrator replaces (as Swarm's), over
    /// the in-memory engine's containers.
    struct Orchestrated;

    #[async_trait::async_trait]
    impl Runtime for Orchestrated {
        fn kind(&self) -> crate::desired::spec::StackEngine {
            crate::desired::spec::StackEngine::Swarm
        }
        async fn deploy(
            &self,
            engine: &dyn Engine,
            p: crate::engine::Project<'_>,
        ) -> Result<crate::engine::CommandLog, crate::engine::Error> {
            engine.up(p).await
        }
        async fn remove(
            &self,
            engine: &dyn Engine,
            p: crate::engine::Project<'_>,
        ) -> Result<crate::engine::CommandLog, crate::engine::Error> {
            engine.down(p).await
        }
        async fn members(
            &self,
            engine: &dyn Engine,
            stack: &str,
        ) -> Result<Vec<ContainerInfo>, crate::engine::Error> {
            engine.containers(stack).await
        }
        fn gate(&self) -> Gate {
            Gate::Rollout
        }
        fn local(&self) -> bool {
            false
        }
        fn deployed_note(&self, _: &[crate::engine::swarm::Step]) -> Option<String> {
            None
        }
    }

    /// A Swarm rollout: until every task of the new spec runs, an http
    /// check would answer for the old release, so it is not even asked.
    #[tokio::test]
    async fn after_a_rollout_the_http_checks_wait_for_the_tasks() {
        let (base, seen) = serve(OK);
        let engine = crate::engine::memory::MemoryEngine::new();
        let checks = [Check::Http(http(format!("{base}/health"), 200, None, None))];
        let services = ["web".to_string()];
        let (rollout, t) = (Orchestrated, Duration::from_millis(600));
        let o = run(&engine, &rollout, "s", &services, &checks, t).await;
        assert!(!o.passed);
        assert_eq!(o.failed_check.as_deref(), Some(CONTAINERS), "{o:?}");
        assert!(seen.lock().unwrap().is_empty(), "the http check was asked");
        // Without the gate, the same check answers at once.
        let compose = crate::engine::runtime::ComposeRuntime;
        let o = run(&engine, &compose, "s", &services, &checks, t).await;
        assert!(o.passed, "{o:?}");
        assert!(!seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn http_passes_on_expected_status_and_body() {
        let (base, _) = serve(OK);
        let client = http_client().unwrap();
        let c = http(format!("{base}/health"), 200, None, Some("ok"));
        assert_eq!(
            http_check(&client, &c, c.url.as_deref().unwrap()).await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn http_reports_status_mismatch() {
        let (base, _) = serve(NOT_FOUND);
        let client = http_client().unwrap();
        let c = http(format!("{base}/health"), 200, None, None);
        assert_eq!(
            http_check(&client, &c, c.url.as_deref().unwrap()).await,
            Err(Failure("status 404, expected 200".to_string()))
        );
    }

    #[tokio::test]
    async fn http_reports_missing_substring() {
        let (base, _) = serve(OK);
        let client = http_client().unwrap();
        let c = http(format!("{base}/"), 200, None, Some("pass"));
        let err = http_check(&client, &c, c.url.as_deref().unwrap())
            .await
            .unwrap_err();
        assert!(err.0.contains("does not contain \"pass\""), "{err}");
        assert!(err.0.contains("all ok"), "{err}");
    }

    #[tokio::test]
    async fn http_sends_the_host_override() {
        let (base, seen) = serve(OK);
        let client = http_client().unwrap();
        let c = http(
            format!("{base}/web/health"),
            200,
            Some("staging.odoo.example"),
            None,
        );
        http_check(&client, &c, c.url.as_deref().unwrap())
            .await
            .unwrap();
        let req = seen.lock().unwrap()[0].to_lowercase();
        assert!(req.starts_with("get /web/health http/1.1\r\n"), "{req}");
        assert!(req.contains("\r\nhost: staging.odoo.example\r\n"), "{req}");
        assert_eq!(req.matches("\r\nhost:").count(), 1, "{req}");
    }

    #[tokio::test]
    async fn http_does_not_follow_redirects() {
        let (base, seen) = serve(REDIRECT);
        let client = http_client().unwrap();
        let c = http(format!("{base}/"), 200, None, None);
        assert_eq!(
            http_check(&client, &c, c.url.as_deref().unwrap()).await,
            Err(Failure("status 302, expected 200".to_string()))
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
        let c = http(format!("{base}/"), 302, None, None);
        assert_eq!(
            http_check(&client, &c, c.url.as_deref().unwrap()).await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn http_reports_connection_refused() {
        let port = closed_port();
        let client = http_client().unwrap();
        let c = http(format!("http://127.0.0.1:{port}/"), 200, None, None);
        let err = http_check(&client, &c, c.url.as_deref().unwrap())
            .await
            .unwrap_err();
        assert!(err.0.to_lowercase().contains("refused"), "{err}");
    }

    fn closed_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn a_failed_smoke_reads_the_logs_of_the_unwell_containers_or_else_of_all() {
        let names =
            |v: Vec<&ContainerInfo>| v.iter().map(|c| c.service.clone()).collect::<Vec<_>>();
        let mut sick = container("db", "running");
        sick.health = Some("unhealthy".into());
        let mut restarted = container("cache", "running");
        restarted.restart_count = 2;
        let all = vec![
            container("web", "running"),
            sick,
            container("job", "exited"),
            restarted,
        ];
        assert_eq!(
            names(evidence_containers(&all, &[])),
            ["db", "job", "cache"]
        );
        // Only the services smoke watches.
        assert_eq!(
            names(evidence_containers(&all, &["web".into(), "db".into()])),
            ["db"]
        );
        // All well (an http check failed): all of them, at most four.
        let well: Vec<ContainerInfo> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|s| container(s, "running"))
            .collect();
        assert_eq!(names(evidence_containers(&well, &[])), ["a", "b", "c", "d"]);
    }

    #[tokio::test]
    async fn tcp_open_and_closed_ports() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = TcpCheck {
            address: listener.local_addr().unwrap().to_string(),
        };
        assert_eq!(tcp_check(&open).await, Ok(()));
        let closed = TcpCheck {
            address: format!("127.0.0.1:{}", closed_port()),
        };
        let err = tcp_check(&closed).await.unwrap_err();
        assert!(err.0.starts_with("failed to connect"), "{err}");
    }

    fn container(service: &str, state: &str) -> ContainerInfo {
        ContainerInfo {
            id: format!("id-{service}"),
            name: format!("p-{service}-1"),
            service: service.into(),
            image: "app@sha256:00".into(),
            image_id: "sha256:00".into(),
            repo_digests: vec![],
            state: state.into(),
            health: None,
            health_log: None,
            restart_count: 0,
            started_at: None,
            exit_code: (state == "exited").then_some(1),
            labels: HashMap::new(),
            networks: vec![],
        }
    }

    #[test]
    fn an_http_check_on_a_service_goes_to_its_running_container() {
        let check = HttpCheck {
            url: None,
            service: Some("app".into()),
            port: Some(8000),
            path: Some("/web/health".into()),
            expect_status: 200,
            host: None,
            contains: None,
        };
        let mut old = container("app", "exited");
        old.networks = vec![crate::engine::Endpoint {
            network: "p_default".into(),
            aliases: vec![],
            ip: Some("172.18.0.9".into()),
        }];
        let mut new = container("app", "running");
        new.networks = vec![crate::engine::Endpoint {
            network: "p_default".into(),
            aliases: vec![],
            ip: Some("172.18.0.4".into()),
        }];
        assert_eq!(
            http_url(&check, &Ok(vec![old.clone(), new])).unwrap(),
            "http://172.18.0.4:8000/web/health"
        );
        // Host networking: the host's loopback.
        let host = container("app", "running");
        assert_eq!(
            http_url(&check, &Ok(vec![host])).unwrap(),
            "http://127.0.0.1:8000/web/health"
        );
        let err = http_url(&check, &Ok(vec![old])).unwrap_err();
        assert!(err.0.contains("no running container"), "{err}");
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn containers_check_needs_every_service_running_and_healthy() {
        let web = container("web", "running");
        let db = container("db", "running");
        assert_eq!(
            containers_ready(&[web.clone(), db.clone()], &names(&["web", "db"])),
            Ok(())
        );
        let err = containers_ready(std::slice::from_ref(&web), &names(&["web", "db"])).unwrap_err();
        assert_eq!(err.0, "service db has no container");

        let mut starting = db.clone();
        starting.health = Some("starting".into());
        let err = containers_ready(&[web.clone(), starting], &names(&["web", "db"])).unwrap_err();
        assert_eq!(err.0, "service db (container p-db-1) is starting");

        let mut healthy = db.clone();
        healthy.health = Some("healthy".into());
        assert_eq!(
            containers_ready(&[web.clone(), healthy], &names(&["web", "db"])),
            Ok(())
        );

        let created = container("db", "created");
        let err = containers_ready(&[web, created], &names(&["web", "db"])).unwrap_err();
        assert_eq!(err.0, "service db (container p-db-1) is created");
    }

    #[test]
    fn containers_check_without_services_uses_the_whole_project() {
        assert!(containers_ready(&[], &[]).is_err());
        assert_eq!(containers_ready(&[container("x", "running")], &[]), Ok(()));
    }

    #[test]
    fn the_stability_watch_counts_from_each_containers_own_start() {
        let stable = Duration::from_secs(3);
        let now = Instant::now();
        let wall = chrono::Utc::now();
        let seen = HashMap::new();
        let ago = |ms: i64| Some(wall - chrono::Duration::milliseconds(ms));
        let mut web = container("web", "running");
        // Started 2 s ago (inside `compose up`): 1 s of watch is left.
        web.started_at = ago(2000);
        assert_eq!(
            settling(std::slice::from_ref(&web), &seen, now, wall, stable),
            Some(Duration::from_secs(1))
        );
        // The youngest container decides.
        let mut db = container("db", "running");
        db.started_at = ago(500);
        assert_eq!(
            settling(&[web.clone(), db.clone()], &seen, now, wall, stable),
            Some(Duration::from_millis(2500))
        );
        // Healthy by its own healthcheck and never restarted: no watch.
        db.health = Some("healthy".into());
        assert_eq!(
            settling(&[web.clone(), db.clone()], &seen, now, wall, stable),
            Some(Duration::from_secs(1))
        );
        // Healthy after a restart: watched again from the restart.
        db.restart_count = 1;
        assert_eq!(
            settling(std::slice::from_ref(&db), &seen, now, wall, stable),
            Some(Duration::from_millis(2500))
        );
        // Running for long (a service `up` kept): nothing left.
        web.started_at = ago(60_000);
        assert_eq!(
            settling(std::slice::from_ref(&web), &seen, now, wall, stable),
            Some(Duration::ZERO)
        );
        // A start the clock puts in the future counts as just now.
        web.started_at = Some(wall + chrono::Duration::seconds(5));
        assert_eq!(
            settling(std::slice::from_ref(&web), &seen, now, wall, stable),
            Some(stable)
        );
        // No start time from the engine: from when smoke first saw it.
        web.started_at = None;
        let first = HashMap::from([(web.id.clone(), now - Duration::from_secs(2))]);
        assert_eq!(
            settling(std::slice::from_ref(&web), &first, now, wall, stable),
            Some(Duration::from_secs(1))
        );
        // Exited ones are for `crashed`; with nothing running the caller
        // falls back to its own watch.
        assert_eq!(
            settling(&[container("web", "exited")], &seen, now, wall, stable),
            None
        );
    }

    #[test]
    fn crash_detection() {
        let services = names(&["web"]);
        let base = HashMap::new();
        assert_eq!(
            crashed(&[container("web", "running")], &base, &services),
            None
        );

        let why = crashed(&[container("web", "exited")], &base, &services).unwrap();
        assert_eq!(why, "service web (container p-web-1) exited (exit code 1)");

        // A one-shot job outside `services` may exit 0, not 1.
        let mut job = container("migrate", "exited");
        job.exit_code = Some(0);
        assert_eq!(crashed(&[job.clone()], &base, &services), None);
        job.exit_code = Some(2);
        assert!(crashed(&[job], &base, &services).is_some());

        let dead = container("web", "dead");
        assert!(crashed(&[dead], &base, &services).unwrap().contains("dead"));
        let mut unhealthy = container("web", "running");
        unhealthy.health = Some("unhealthy".into());
        assert_eq!(
            crashed(&[unhealthy.clone()], &base, &services).as_deref(),
            Some(
                "service web (container p-web-1) is unhealthy: its Docker healthcheck failed (no probe log)"
            )
        );
        // With Docker's log: the verdict carries its evidence.
        let at = |s: i64| Some(chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap());
        let probe = |s: i64, code: i64, out: &str| crate::engine::Probe {
            start: at(s),
            exit_code: code,
            output: out.into(),
        };
        unhealthy.started_at = at(0);
        unhealthy.health_log = Some(crate::engine::HealthLog {
            failing_streak: 3,
            probes: vec![
                probe(1, 1, "wget: can't connect"),
                probe(
                    2,
                    1,
                    "wget: server returned error:\nHTTP/1.0 404 Not Found\n",
                ),
                probe(3, 1, "wget: server returned error: HTTP/1.0 404 Not Found"),
            ],
        });
        assert_eq!(
            crashed(&[unhealthy.clone()], &base, &services).as_deref(),
            Some(
                "service web (container p-web-1) is unhealthy: its Docker healthcheck failed (failing streak 3; last probes: exit 1: wget: can't connect; exit 1: wget: server returned error: HTTP/1.0 404 Not Found; exit 1: wget: server returned error: HTTP/1.0 404 Not Found)"
            )
        );
        // Unhealthy by probes of an earlier run (before its start): no
        // verdict, it is still starting.
        unhealthy.started_at = at(10);
        assert_eq!(crashed(&[unhealthy], &base, &services), None);
        let restarting = container("web", "restarting");
        assert!(
            crashed(&[restarting], &base, &services)
                .unwrap()
                .contains("restarting")
        );

        let mut again = container("web", "running");
        again.restart_count = 2;
        let base = HashMap::from([(again.id.clone(), 1)]);
        let why = crashed(&[again.clone()], &base, &services).unwrap();
        assert!(why.contains("restart count 1 -> 2"), "{why}");
        let base = HashMap::from([(again.id.clone(), 2)]);
        assert_eq!(crashed(&[again], &base, &services), None);
    }

    #[test]
    fn an_attempt_the_deadline_cuts_short_keeps_the_failure_seen_before() {
        let real = "exit 3: token=***".to_string();
        let cut = || Cut::ByDeadline("timed out after 250ms".into());
        assert_eq!(cut().keep(Some(real.clone())), real);
        assert_eq!(cut().keep(None), "timed out after 250ms");
        assert_eq!(
            Cut::Not(Failure("status 404".into())).keep(Some(real)),
            "status 404",
            "a check's own failure is the newest word"
        );
    }

    #[test]
    fn summary_names_the_failed_check() {
        let o = Outcome {
            passed: false,
            failed_check: Some("http http://127.0.0.1:1/health".into()),
            error: Some("http http://127.0.0.1:1/health: status 404, expected 200".into()),
            duration: Duration::from_millis(1500),
            attempts: 3,
            checks: vec![
                ("containers".into(), Some(Duration::from_millis(1200))),
                ("http http://127.0.0.1:1/health".into(), None),
            ],
        };
        assert_eq!(
            o.summary(),
            "smoke failed after 1s 500ms: http http://127.0.0.1:1/health: status 404, expected 200"
        );
        assert_eq!(o.passed_checks(), "containers in 1s 200ms");
    }
}
