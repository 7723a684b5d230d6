//! `engine: swarm` stacks on a Docker engine that is a Swarm manager: `up`
//! is `docker stack deploy` of the release's files, `down` is `docker stack
//! rm`, and a stack's "containers" are its services' tasks on every node,
//! read from the manager ([`tasks_as_containers`], pure), so that the
//! smoke, status and plan read a Swarm stack as they read a compose one.

use super::{CommandLog, ContainerInfo, Docker, Error, Project};
use async_trait::async_trait;
use bollard::models::{Service, Task, TaskState};
use bollard::query_parameters::{ListServicesOptionsBuilder, ListTasksOptionsBuilder};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One step of a Swarm stack's deploy that `depends_on` asks for: `files`
/// (relative to the release) hold only `services`, which are deployed,
/// then waited for, before the services that depend on them. Written into
/// `release.json` by the release that renders the files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub services: Vec<String>,
    pub files: Vec<String>,
    /// How long the step waits for its services' tasks (the stack's smoke
    /// timeout).
    pub wait_secs: u64,
}

/// Where a step's services are, read from the stack's tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepState {
    /// Every service has tasks of its new spec, all running (healthy, with
    /// a healthcheck: Swarm calls a task running only then).
    Ready,
    /// Not yet: what is missing.
    Waiting(String),
    /// A task of the new spec failed, or Swarm paused the update.
    Failed(String),
}

/// How often a step's tasks (or a removed stack's leftovers) are read
/// while waiting.
const STEP_POLL: Duration = Duration::from_secs(1);

/// How long `down` waits for a removed stack's containers and networks to
/// leave this node (Swarm stops each task within its stop grace period).
const STACK_RM_WAIT: Duration = Duration::from_secs(120);

/// Where `services` are, from the stack's tasks as [`tasks_as_containers`]
/// gives them. Pure. A service with no task of its new spec is waiting
/// (Swarm has not scheduled it yet), so a global service counts too.
pub fn step_state(services: &[String], tasks: &[ContainerInfo]) -> StepState {
    let mut waiting = Vec::new();
    for svc in services {
        let mine: Vec<&ContainerInfo> = tasks.iter().filter(|t| &t.service == svc).collect();
        if let Some(bad) = mine
            .iter()
            .find(|t| t.state == "exited" || t.state == "dead")
        {
            return StepState::Failed(match bad.exit_code {
                Some(code) if bad.state == "exited" => {
                    format!("{svc}: task {} failed (exit code {code})", bad.name)
                }
                _ => format!("{svc}: {}", bad.name),
            });
        }
        let running = mine.iter().filter(|t| t.state == "running").count();
        if mine.is_empty() {
            waiting.push(format!("{svc} (no task of its new spec yet)"));
        } else if running < mine.len() {
            waiting.push(format!("{svc} ({running} of {} tasks running)", mine.len()));
        }
    }
    if waiting.is_empty() {
        StepState::Ready
    } else {
        StepState::Waiting(waiting.join(", "))
    }
}

/// The label `docker stack deploy` puts on a stack's services, networks and
/// containers: the stack's name.
pub const STACK_LABEL: &str = "com.docker.stack.namespace";

/// What a Swarm manager does for an `engine: swarm` stack
/// ([`super::Engine::swarm`]; [`super::runtime::SwarmRuntime`] uses it).
#[async_trait]
pub trait Swarm: Send + Sync {
    /// `docker stack deploy` of a release, step by step
    /// ([`Project::steps`]), then the whole stack with `--prune`.
    async fn deploy(&self, p: Project<'_>) -> Result<CommandLog, Error>;

    /// `docker stack rm`, waited for until this node has none of the
    /// stack's containers and networks left.
    async fn rm(&self, p: Project<'_>) -> Result<CommandLog, Error>;

    /// The stack's tasks as containers ([`tasks_as_containers`]); none when
    /// the engine is not a Swarm manager. Read-only.
    async fn tasks(&self, stack: &str) -> Result<Vec<ContainerInfo>, Error>;
}

#[async_trait]
impl Swarm for Docker {
    async fn deploy(&self, p: Project<'_>) -> Result<CommandLog, Error> {
        self.stack_deploy(p).await
    }

    async fn rm(&self, p: Project<'_>) -> Result<CommandLog, Error> {
        self.stack_rm(p).await
    }

    async fn tasks(&self, stack: &str) -> Result<Vec<ContainerInfo>, Error> {
        self.stack_tasks(stack).await
    }
}

impl Docker {
    /// `docker stack <args…> -c <file>… <stack>` (the files only for
    /// `deploy`), in the project's directory, with the release's `.env`
    /// variables in its environment: `docker stack deploy` interpolates
    /// `${VAR}` from its environment and never reads `.env`.
    pub(super) async fn stack(&self, p: Project<'_>, args: &[&str]) -> Result<CommandLog, Error> {
        let mut argv: Vec<String> = vec!["stack".into()];
        argv.extend(args.iter().map(|a| a.to_string()));
        if args.first() == Some(&"deploy") {
            for f in p.files {
                argv.extend(["-c".to_string(), f.clone()]);
            }
        }
        argv.push(p.name.to_string());
        let mut env: Vec<(String, String)> = match crate::dotenv::read(&p.dir.join(".env")) {
            Ok(vars) => vars
                .into_iter()
                .filter(|(k, _)| !k.starts_with("COMPOSE_"))
                .collect(),
            Err(e) if e.line == 0 => Vec::new(),
            Err(e) => {
                return Err(Error::ReleaseFile(format!(
                    "failed to read {}/.env: line {}: {}",
                    p.dir.display(),
                    e.line,
                    e.reason
                )));
            }
        };
        if let Some(auth) = &self.registry_auth {
            // `--with-registry-auth` sends the CLI's credentials to the
            // nodes: the same file the pulls use, which the CLI reads only
            // as `$DOCKER_CONFIG/config.json`.
            match auth.parent() {
                Some(dir) if auth.file_name() == Some(std::ffi::OsStr::new("config.json")) => {
                    env.push(("DOCKER_CONFIG".into(), dir.display().to_string()));
                }
                _ => tracing::warn!(
                    stack = p.name,
                    file = %auth.display(),
                    "registry_auth_file is not named config.json: docker stack deploy sends the Docker CLI's own credentials to the nodes"
                ),
            }
        }
        self.run_cli("docker", &argv, p.dir, &env).await
    }

    /// `docker stack deploy` of a release: first each of its
    /// [`Step`]s (only their services, without `--prune`, so the services
    /// of later steps keep running as they are), each waited for until its
    /// tasks run; then the whole stack with `--prune` (services the release
    /// no longer has go, as compose's `--remove-orphans`). Images are
    /// pinned by digest: nothing to resolve.
    async fn stack_deploy(&self, p: Project<'_>) -> Result<CommandLog, Error> {
        const DEPLOY: [&str; 4] = ["deploy", "--with-registry-auth", "--resolve-image", "never"];
        let started = Instant::now();
        let mut output = String::new();
        for (i, step) in p.steps.iter().enumerate() {
            let log = self
                .stack(
                    Project {
                        files: &step.files,
                        ..p
                    },
                    &DEPLOY,
                )
                .await?;
            output.push_str(&log.output);
            self.wait_for_step(p.name, step)
                .await
                .map_err(|reason| {
                    Error::SwarmWait(format!(
                        "stopped the deploy of stack {} at step {} of {} (depends_on: {} first): {reason}",
                        p.name,
                        i + 1,
                        p.steps.len() + 1,
                        step.services.join(", ")
                    ))
                })?;
        }
        let mut args = DEPLOY.to_vec();
        args.insert(1, "--prune");
        let mut log = self.stack(p, &args).await?;
        output.push_str(&log.output);
        log.output = output;
        log.duration = started.elapsed();
        Ok(log)
    }

    /// `docker stack rm`, then waits until this node has none of the
    /// stack's containers and networks left: Swarm removes them after the
    /// command returns, and a compose project of the same name (a stack
    /// moving off Swarm) would collide with them (its ports, its
    /// `<stack>_default` network). A network still in use when the command
    /// ran is removed by running it again once the containers are gone.
    async fn stack_rm(&self, p: Project<'_>) -> Result<CommandLog, Error> {
        let started = Instant::now();
        let mut log = self.stack(p, &["rm"]).await?;
        let label = HashMap::from([(
            "label".to_string(),
            vec![format!("{STACK_LABEL}={}", p.name)],
        )]);
        let inspect = |what: &str, source| Error::Inspect {
            what: format!("the {what} of stack {}", p.name),
            source,
        };
        let deadline = Instant::now() + STACK_RM_WAIT;
        loop {
            let containers = self
                .docker
                .list_containers(Some(
                    bollard::query_parameters::ListContainersOptionsBuilder::default()
                        .all(true)
                        .filters(&label)
                        .build(),
                ))
                .await
                .map_err(|e| inspect("containers", e))?;
            let networks = self
                .docker
                .list_networks(Some(
                    bollard::query_parameters::ListNetworksOptionsBuilder::default()
                        .filters(&label)
                        .build(),
                ))
                .await
                .map_err(|e| inspect("networks", e))?;
            if containers.is_empty() && networks.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::SwarmWait(format!(
                    "stack {} still has {} container(s) and {} network(s) on this node {}s after `docker stack rm`",
                    p.name,
                    containers.len(),
                    networks.len(),
                    STACK_RM_WAIT.as_secs()
                )));
            }
            if containers.is_empty() {
                log.output.push_str(&self.stack(p, &["rm"]).await?.output);
            }
            tokio::time::sleep(STEP_POLL).await;
        }
        log.duration = started.elapsed();
        Ok(log)
    }

    /// Waits until [`step_state`] says the step's services are ready; the
    /// reason when they fail or are not ready within its `wait_secs`.
    async fn wait_for_step(&self, project: &str, step: &Step) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(step.wait_secs);
        loop {
            let state = match self.stack_tasks(project).await {
                Ok(tasks) => step_state(&step.services, &tasks),
                Err(e) => StepState::Waiting(e.report()),
            };
            match state {
                StepState::Ready => return Ok(()),
                StepState::Failed(why) => return Err(why),
                StepState::Waiting(what) if Instant::now() >= deadline => {
                    return Err(format!("not running after {}s: {what}", step.wait_secs));
                }
                StepState::Waiting(_) => tokio::time::sleep(STEP_POLL).await,
            }
        }
    }

    /// The tasks of stack `project` as containers (see
    /// [`tasks_as_containers`]); none when the engine is not a Swarm
    /// manager.
    async fn stack_tasks(&self, project: &str) -> Result<Vec<ContainerInfo>, Error> {
        let label = HashMap::from([("label", vec![format!("{STACK_LABEL}={project}")])]);
        let services = match self
            .docker
            .list_services(Some(
                ListServicesOptionsBuilder::default()
                    .filters(&label)
                    .build(),
            ))
            .await
        {
            Ok(s) => s,
            // "This node is not a swarm manager": it has no stacks.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 503, ..
            }) => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Inspect {
                    what: format!("the services of stack {project}"),
                    source,
                });
            }
        };
        if services.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = services.iter().filter_map(|s| s.id.clone()).collect();
        let filter = HashMap::from([("service", ids)]);
        let tasks = self
            .docker
            .list_tasks(Some(
                ListTasksOptionsBuilder::default().filters(&filter).build(),
            ))
            .await
            .map_err(|source| Error::Inspect {
                what: format!("the tasks of stack {project}"),
                source,
            })?;
        Ok(tasks_as_containers(project, &services, &tasks))
    }
}

/// The image and the [`super::SERVICE_FINGERPRINT_LABEL`] of a task spec
/// (a service's template, or the spec a task was made from): together they
/// say which release's spec of the service it is.
fn spec_of(t: Option<&bollard::models::TaskSpec>) -> (Option<&str>, Option<&str>) {
    let c = t.and_then(|t| t.container_spec.as_ref());
    (
        c.and_then(|c| c.image.as_deref()),
        c.and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(super::SERVICE_FINGERPRINT_LABEL))
            .map(String::as_str),
    )
}

fn date(s: Option<&String>) -> Option<chrono::DateTime<chrono::Utc>> {
    s.and_then(|t| super::docker_time(t))
        .filter(|t| t.timestamp() > 0)
}

/// A stack's tasks, as the smoke and the plan read containers. Pure. For
/// each service (`<stack>_<name>`, reported as `<name>`), only tasks of the
/// spec it has now count, by image and by the fingerprint label the
/// release's override gives each service (which changes with its
/// environment, configs, …, not only its image); during an update the old
/// ones are on their way out:
///
/// - a task Swarm wants running is `running` once it runs, else `pending`
///   (it is being scheduled, pulled, or started; with a healthcheck, Swarm
///   calls it running only once healthy);
/// - a task of that image that failed or was rejected since the service was
///   last updated is `exited` with its exit code: the new spec crashed;
/// - a replicated service with fewer such tasks than its replicas gets a
///   `pending` entry per missing replica (a node lost, no room to place);
/// - an update that Swarm paused or rolled back is a `dead` entry that says
///   so: the update failed, whatever still runs.
pub fn tasks_as_containers(
    project: &str,
    services: &[Service],
    tasks: &[Task],
) -> Vec<ContainerInfo> {
    let mut out = Vec::new();
    for s in services {
        let Some(spec) = &s.spec else { continue };
        let full = spec.name.clone().unwrap_or_default();
        let name = full
            .strip_prefix(&format!("{project}_"))
            .unwrap_or(&full)
            .to_string();
        let (image, fingerprint) = spec_of(spec.task_template.as_ref());
        let image = image.unwrap_or_default().to_string();
        let replicas = spec
            .mode
            .as_ref()
            .and_then(|m| m.replicated.as_ref())
            .and_then(|r| r.replicas);
        let updated = date(s.updated_at.as_ref());
        let entry = |id: String, task_name: String, state: &str| ContainerInfo {
            id,
            name: task_name,
            service: name.clone(),
            image: image.clone(),
            image_id: String::new(),
            repo_digests: Vec::new(),
            state: state.to_string(),
            health: None,
            health_log: None,
            restart_count: 0,
            started_at: None,
            exit_code: None,
            labels: HashMap::new(),
            networks: Vec::new(),
        };
        let mut wanted = 0i64;
        for t in tasks.iter().filter(|t| t.service_id == s.id) {
            if spec_of(t.spec.as_ref()) != (Some(image.as_str()), fingerprint) {
                continue;
            }
            let status = t.status.clone().unwrap_or_default();
            let state = status.state.unwrap_or(TaskState::NEW);
            let container = status.container_status.clone().unwrap_or_default();
            let task_name = match t.slot {
                Some(slot) => format!("{full}.{slot}"),
                None => format!("{full}.{}", t.node_id.clone().unwrap_or_default()),
            };
            let id = container
                .container_id
                .clone()
                .filter(|c| !c.is_empty())
                .or_else(|| t.id.clone())
                .unwrap_or_default();
            if t.desired_state == Some(TaskState::RUNNING) {
                wanted += 1;
                let mut c = entry(
                    id,
                    task_name,
                    match state {
                        TaskState::RUNNING => "running",
                        TaskState::FAILED | TaskState::REJECTED | TaskState::COMPLETE => "exited",
                        _ => "pending",
                    },
                );
                if c.state == "running" {
                    c.started_at = date(status.timestamp.as_ref());
                } else if c.state == "exited" {
                    c.exit_code = container.exit_code;
                }
                c.labels = t
                    .spec
                    .as_ref()
                    .and_then(|sp| sp.container_spec.as_ref())
                    .and_then(|cs| cs.labels.clone())
                    .unwrap_or_default();
                out.push(c);
            } else if matches!(state, TaskState::FAILED | TaskState::REJECTED)
                && updated.is_some_and(|u| date(t.created_at.as_ref()).is_some_and(|c| c >= u))
            {
                let mut c = entry(id, task_name, "exited");
                c.exit_code = container.exit_code.or(Some(-1));
                out.push(c);
            }
        }
        if let Some(r) = replicas {
            for k in wanted..r {
                out.push(entry(
                    format!("{full}-missing-{k}"),
                    format!("{full}: {} of {r} replicas placed", k),
                    "pending",
                ));
            }
        }
        if let Some(u) = &s.update_status {
            use bollard::models::ServiceUpdateStatusStateEnum as U;
            let said = match u.state {
                Some(U::PAUSED) => Some("paused"),
                Some(U::ROLLBACK_STARTED | U::ROLLBACK_PAUSED | U::ROLLBACK_COMPLETED) => {
                    Some("rolled back by Swarm")
                }
                _ => None,
            };
            if let Some(said) = said {
                out.push(entry(
                    format!("{full}-update"),
                    format!(
                        "{full}: update {said}: {}",
                        u.message.clone().unwrap_or_default()
                    ),
                    "dead",
                ));
            }
        }
    }
    out.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        ContainerStatus, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
        ServiceUpdateStatus, ServiceUpdateStatusStateEnum, TaskSpec, TaskSpecContainerSpec,
        TaskStatus,
    };

    fn info(service: &str, name: &str, state: &str, exit_code: Option<i64>) -> ContainerInfo {
        ContainerInfo {
            id: name.into(),
            name: name.into(),
            service: service.into(),
            image: String::new(),
            image_id: String::new(),
            repo_digests: Vec::new(),
            state: state.into(),
            health: None,
            health_log: None,
            restart_count: 0,
            started_at: None,
            exit_code,
            labels: HashMap::new(),
            networks: Vec::new(),
        }
    }

    #[test]
    fn a_step_is_ready_when_each_of_its_services_runs_all_its_tasks() {
        let step = ["db".to_string(), "cache".to_string()];
        let db = info("db", "shop_db.1", "running", None);
        let cache = info("cache", "shop_cache.1", "running", None);
        // Other services' tasks do not count, either way.
        let web = info("web", "shop_web.1", "exited", Some(1));
        assert_eq!(
            step_state(&step, &[db.clone(), cache.clone(), web.clone()]),
            StepState::Ready
        );
        // A service with no task of its new spec yet is waited for.
        assert_eq!(
            step_state(&step, std::slice::from_ref(&db)),
            StepState::Waiting("cache (no task of its new spec yet)".into())
        );
        let pending = info(
            "cache",
            "shop_cache: 1 of 2 replicas placed",
            "pending",
            None,
        );
        assert_eq!(
            step_state(&step, &[db.clone(), cache.clone(), pending]),
            StepState::Waiting("cache (1 of 2 tasks running)".into())
        );
        // A task of the new spec that failed, or an update Swarm paused,
        // ends the wait at once.
        let failed = info("db", "shop_db.2", "exited", Some(3));
        assert_eq!(
            step_state(&step, &[db.clone(), failed, cache.clone()]),
            StepState::Failed("db: task shop_db.2 failed (exit code 3)".into())
        );
        let paused = info(
            "cache",
            "shop_cache: update paused: task failed",
            "dead",
            None,
        );
        assert_eq!(
            step_state(&step, &[db, cache, paused]),
            StepState::Failed("cache: shop_cache: update paused: task failed".into())
        );
    }

    const IMG_NEW: &str = "reg/app@sha256:2222";
    const IMG_OLD: &str = "reg/app@sha256:1111";

    fn service(replicas: i64, image: &str) -> Service {
        Service {
            id: Some("svc1".into()),
            updated_at: Some("2026-12-05T10:00:00Z".into()),
            spec: Some(ServiceSpec {
                name: Some("shop_web".into()),
                task_template: Some(TaskSpec {
                    container_spec: Some(TaskSpecContainerSpec {
                        image: Some(image.into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                mode: Some(ServiceSpecMode {
                    replicated: Some(ServiceSpecModeReplicated {
                        replicas: Some(replicas),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn task(slot: i64, image: &str, desired: TaskState, state: TaskState, created: &str) -> Task {
        Task {
            id: Some(format!("t{slot}{state}")),
            service_id: Some("svc1".into()),
            slot: Some(slot),
            created_at: Some(created.into()),
            desired_state: Some(desired),
            spec: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(image.into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(TaskStatus {
                state: Some(state),
                timestamp: Some("2026-12-05T10:00:05Z".into()),
                container_status: Some(ContainerStatus {
                    container_id: Some(format!("c{slot}")),
                    exit_code: Some(if state == TaskState::FAILED { 3 } else { 0 }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const LATER: &str = "2026-12-05T10:00:01Z";
    const EARLIER: &str = "2026-12-05T09:00:00Z";

    #[test]
    fn only_the_current_image_counts_and_missing_replicas_are_pending() {
        use TaskState::*;
        let tasks = [
            task(1, IMG_NEW, RUNNING, RUNNING, LATER),
            task(2, IMG_OLD, RUNNING, RUNNING, EARLIER),
            task(3, IMG_NEW, RUNNING, PREPARING, LATER),
        ];
        let cs = tasks_as_containers("shop", &[service(3, IMG_NEW)], &tasks);
        let states: Vec<(&str, &str)> = cs
            .iter()
            .map(|c| (c.name.as_str(), c.state.as_str()))
            .collect();
        assert_eq!(
            states,
            [
                ("shop_web.1", "running"),
                ("shop_web.3", "pending"),
                ("shop_web: 2 of 3 replicas placed", "pending"),
            ]
        );
        assert!(cs.iter().all(|c| c.service == "web" && c.image == IMG_NEW));
        assert!(cs[0].started_at.is_some());
        assert_eq!(cs[0].id, "c1");
        assert!(crate::smoke::containers_ready(&cs, &["web".into()]).is_err());
        let all = [
            task(1, IMG_NEW, RUNNING, RUNNING, LATER),
            task(2, IMG_NEW, RUNNING, RUNNING, LATER),
            task(3, IMG_NEW, RUNNING, RUNNING, LATER),
        ];
        let cs = tasks_as_containers("shop", &[service(3, IMG_NEW)], &all);
        assert!(crate::smoke::containers_ready(&cs, &["web".into()]).is_ok());
    }

    /// Sets the fingerprint label of a service's template or of a task.
    fn labelled(spec: &mut Option<TaskSpec>, fp: &str) {
        let c = spec.as_mut().unwrap().container_spec.as_mut().unwrap();
        c.labels = Some(HashMap::from([(
            crate::engine::SERVICE_FINGERPRINT_LABEL.to_string(),
            fp.to_string(),
        )]));
    }

    #[test]
    fn a_task_of_the_same_image_but_another_fingerprint_is_the_old_spec() {
        use TaskState::*;
        let mut svc = service(2, IMG_NEW);
        labelled(&mut svc.spec.as_mut().unwrap().task_template, "fp-new");
        let mut old = task(1, IMG_NEW, RUNNING, RUNNING, EARLIER);
        labelled(&mut old.spec, "fp-old");
        let mut new = task(2, IMG_NEW, RUNNING, RUNNING, LATER);
        labelled(&mut new.spec, "fp-new");
        let cs = tasks_as_containers("shop", std::slice::from_ref(&svc), &[old, new]);
        let states: Vec<(&str, &str)> = cs
            .iter()
            .map(|c| (c.name.as_str(), c.state.as_str()))
            .collect();
        assert_eq!(
            states,
            [
                ("shop_web.2", "running"),
                ("shop_web: 1 of 2 replicas placed", "pending"),
            ]
        );
    }

    #[test]
    fn a_task_of_the_new_spec_that_failed_is_a_crash_an_older_one_is_not() {
        use TaskState::*;
        let tasks = [
            task(1, IMG_NEW, SHUTDOWN, FAILED, LATER),
            task(2, IMG_NEW, SHUTDOWN, FAILED, EARLIER),
            task(1, IMG_NEW, RUNNING, STARTING, LATER),
        ];
        let cs = tasks_as_containers("shop", &[service(1, IMG_NEW)], &tasks);
        let crashed = crate::smoke::crashed(&cs, &HashMap::new(), &["web".into()]);
        let why = crashed.expect("the failed task is a crash");
        assert!(why.contains("exited (exit code 3)"), "{why}");
        assert_eq!(why.matches("exited").count(), 1, "{why}");
    }

    #[test]
    fn a_paused_update_is_a_failure_whatever_still_runs() {
        use TaskState::*;
        let mut s = service(1, IMG_NEW);
        s.update_status = Some(ServiceUpdateStatus {
            state: Some(ServiceUpdateStatusStateEnum::PAUSED),
            message: Some("update paused due to failure or early termination of task x".into()),
            ..Default::default()
        });
        let cs = tasks_as_containers("shop", &[s], &[task(1, IMG_NEW, RUNNING, RUNNING, LATER)]);
        let why = crate::smoke::crashed(&cs, &HashMap::new(), &["web".into()]).unwrap();
        assert!(why.contains("update paused"), "{why}");
    }
}
