//! The container engine behind one small trait, [`Engine`]: pull, up, down,
//! inspect containers, exec. [`Docker`] implements it with bollard for what
//! the Docker API answers well (pulls, inspection, exec, networks) and the
//! compose CLI for what only compose knows (`up`, `down`, `config`);
//! [`memory::MemoryEngine`] implements it in memory so that the pipeline and
//! recovery are unit-tested without Docker; [`Offline`] answers every call
//! with "unavailable", for the commands that work without an engine.
//! Everything the rest of stackpin learns about running containers comes
//! through the trait, and everything an engine logs or returns is masked
//! with the secrets it was given.
//!
//! Containers are always found by their compose labels, never by name:
//! compose v1 and v2 name containers differently (`_` vs `-`).

pub mod auth;
pub mod compose;
mod mask;
pub mod memory;
pub mod registry;
pub mod runtime;
pub mod swarm;

pub use compose::ComposeCmd;
pub use mask::{MASK, Masker};

use crate::desired::image::ImageRef;
use async_trait::async_trait;
use bollard::Docker as Bollard;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{CreateImageOptionsBuilder, ListContainersOptionsBuilder};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::Duration;

/// The most of a container's log [`Engine::logs`] returns (its tail).
pub const LOGS_CAP: usize = 8 * 1024;

/// The compose label that names a container's project (= stack).
pub const PROJECT_LABEL: &str = "com.docker.compose.project";
/// The compose label that names a container's service.
pub const SERVICE_LABEL: &str = "com.docker.compose.service";

/// The compose label that names a volume's key in the compose file.
pub const VOLUME_LABEL: &str = "com.docker.compose.volume";
/// Marks the short-lived containers volume backups and restores create.
pub const HELPER_LABEL: &str = "io.stackpin.volume-helper";
/// Where a volume helper container mounts the volume.
pub const VOLUME_MOUNT: &str = "/stackpin-volume";

/// How much output [`Engine::exec`] keeps.
pub const EXEC_OUTPUT_CAP: usize = 64 * 1024;

/// How much stderr [`Engine::exec_to_file`] keeps (the tail).
pub const EXEC_STDERR_TAIL: usize = 8 * 1024;

/// What went wrong talking to the engine or running compose.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "failed to connect to the docker engine (is it running, and may this user use its socket?)"
    )]
    Connect(#[source] DockerError),
    /// The engine refused or failed the pull; `message` is its reason
    /// (`manifest unknown`, a network error, …).
    #[error("failed to pull {image}: {message}")]
    Pull { image: String, message: String },
    /// The pulled image does not carry the pinned digest.
    #[error(
        "failed to verify {image}: the image's RepoDigests do not contain the pin (found: {})",
        if found.is_empty() { "none".to_string() } else { found.join(", ") }
    )]
    DigestMismatch { image: String, found: Vec<String> },
    #[error("failed to inspect {what}")]
    Inspect {
        what: String,
        #[source]
        source: DockerError,
    },
    #[error("failed to exec in container {container}")]
    Exec {
        container: String,
        #[source]
        source: DockerError,
    },
    /// The output of an exec could not be written to its file.
    #[error("failed to write the output of an exec in container {container} to {}", path.display())]
    ExecOutput {
        container: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A compose command ran and failed. `command` and `output` (its tail)
    /// are masked. The message carries the lines that say why
    /// ([`explain`]), not only compose's closing summary.
    #[error(
        "failed to run `{command}` ({}){}",
        match code { Some(c) => format!("exit code {c}"), None => "killed by a signal".to_string() },
        explain(output).map(|l| format!(": {l}")).unwrap_or_default()
    )]
    Compose {
        command: String,
        code: Option<i32>,
        output: String,
    },
    /// A compose command could not be started at all.
    #[error("failed to start `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "failed to find a compose implementation for the setting \"{setting}\": {detail}; \
         install the docker compose plugin or docker-compose, or set compose to \
         \"docker compose\" or \"docker-compose\""
    )]
    ComposeNotFound { setting: String, detail: String },
    /// No engine is connected ([`Offline`]), or it stopped answering.
    #[error("failed to reach the docker engine: {0}")]
    Unavailable(String),
    /// A named volume could not be archived or restored: the message says
    /// which and why.
    #[error("{0}")]
    Volume(String),
    /// The named volume does not exist (nothing to archive).
    #[error("{0}")]
    NoVolume(String),
    /// A release file a command needs does not parse (the message names
    /// the file and line, never a value).
    #[error("{0}")]
    ReleaseFile(String),
    /// A Swarm stack did not get where a command waits for it to: a
    /// depends_on step's services running (the services that depend on
    /// them were not deployed), or a removed stack gone from this node.
    #[error("{0}")]
    SwarmWait(String),
    /// A file could not be streamed to or from the engine.
    #[error("failed to {what} {}", path.display())]
    Archive {
        what: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The message with every cause appended (`a: b: c`), for status lines,
    /// history notes and logs that show one string.
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cur = e.source();
        }
        out
    }

    /// Worth retrying as is (the engine was unreachable or busy), as opposed
    /// to a failure that needs a change in the desired state or on the host.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Connect(_) | Error::Inspect { .. } | Error::Exec { .. } | Error::Unavailable(_)
        )
    }
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|l| !l.is_empty())
}

/// How many explaining lines a compose failure's message keeps, and how
/// long each may be.
const EXPLAIN_LINES: usize = 3;
const EXPLAIN_CHARS: usize = 300;

/// The lines of a failed compose command's output that say what went wrong
/// (a name conflict, a port in use, a missing image), joined with `; `:
/// those that speak of an error, a failure or a conflict, without compose's
/// closing summary (`Encountered errors while bringing up the project.`,
/// which says nothing) and without repeats, at most [`EXPLAIN_LINES`]. The
/// last line when none does. Pure.
pub fn explain(output: &str) -> Option<String> {
    const SAYS: [&str; 7] = [
        "error",
        "failed",
        "conflict",
        "denied",
        "not found",
        "no such",
        "already",
    ];
    let summary = |l: &str| l.contains("Encountered errors while bringing up the project");
    let mut picked: Vec<String> = Vec::new();
    for l in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let lower = l.to_ascii_lowercase();
        if summary(l) || !SAYS.iter().any(|w| lower.contains(w)) {
            continue;
        }
        // v1 says the same for the container and the service.
        let core = l
            .split_once("Cannot start service")
            .map_or(l, |(_, rest)| rest)
            .to_string();
        if picked.iter().any(|p| p.contains(core.trim())) {
            continue;
        }
        let short: String = l.chars().take(EXPLAIN_CHARS).collect();
        picked.push(if short.len() < l.len() {
            format!("{short}…")
        } else {
            short
        });
        if picked.len() == EXPLAIN_LINES {
            break;
        }
    }
    if picked.is_empty() {
        last_line(output).map(str::to_string)
    } else {
        Some(picked.join("; "))
    }
}

/// One container of a compose project, as the engine reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    /// The `com.docker.compose.service` label.
    pub service: String,
    /// The image as configured (`Config.Image`), e.g. `repo@sha256:…`.
    pub image: String,
    /// The local image id (`sha256:…`).
    pub image_id: String,
    /// The RepoDigests of that image (empty if the image is gone).
    pub repo_digests: Vec<String>,
    /// created, running, paused, restarting, removing, exited or dead.
    pub state: String,
    /// healthy, unhealthy or starting; `None` without a healthcheck.
    pub health: Option<String>,
    /// What Docker's healthcheck said (`State.Health`): the failing streak
    /// and its last probes, the evidence of a `health` verdict.
    pub health_log: Option<HealthLog>,
    pub restart_count: i64,
    /// When its current run started (`State.StartedAt`, reset by every
    /// restart); `None` before the first start or when the engine does not
    /// say (the in-memory engine).
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Set once the container has stopped.
    pub exit_code: Option<i64>,
    pub labels: HashMap<String, String>,
    /// The networks it is attached to, with its aliases on each.
    pub networks: Vec<Endpoint>,
}

/// Docker's record of a container's healthcheck (`State.Health`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthLog {
    /// Consecutive failed probes (`FailingStreak`).
    pub failing_streak: i64,
    /// The last probes Docker kept (five at most), oldest first.
    pub probes: Vec<Probe>,
}

/// One healthcheck probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub start: Option<chrono::DateTime<chrono::Utc>>,
    pub exit_code: i64,
    /// What the probe printed (Docker keeps its first 4 KiB).
    pub output: String,
}

impl HealthLog {
    /// The failed probes since `started_at` (the container's current run)
    /// at the end of the log: Docker's evidence that this run is unhealthy.
    /// Without a start time every trailing failure counts.
    pub fn failures_since(&self, started_at: Option<chrono::DateTime<chrono::Utc>>) -> usize {
        self.probes
            .iter()
            .rev()
            .take_while(|p| p.exit_code != 0)
            .filter(|p| match (p.start, started_at) {
                (Some(t), Some(s)) => t >= s,
                _ => true,
            })
            .count()
    }

    /// `failing streak 3; last probes: exit 1: wget: server returned error:
    /// HTTP/1.0 404 Not Found; …` (each output on one line, cut to 200
    /// characters; the newest three probes).
    pub fn describe(&self) -> String {
        let probes: Vec<String> = self
            .probes
            .iter()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|p| {
                let out: String = p.output.split_whitespace().collect::<Vec<_>>().join(" ");
                let out = if out.chars().count() > 200 {
                    format!("{}…", out.chars().take(200).collect::<String>())
                } else {
                    out
                };
                if out.is_empty() {
                    format!("exit {}", p.exit_code)
                } else {
                    format!("exit {}: {out}", p.exit_code)
                }
            })
            .collect();
        if probes.is_empty() {
            format!("failing streak {}; no probe logged", self.failing_streak)
        } else {
            format!(
                "failing streak {}; last probes: {}",
                self.failing_streak,
                probes.join("; ")
            )
        }
    }
}

/// A container's attachment to one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub network: String,
    /// The names other containers reach it by (the service name, user
    /// aliases, its own name or short id).
    pub aliases: Vec<String>,
    /// Its IPv4 address there, once it runs.
    pub ip: Option<String>,
}

impl ContainerInfo {
    /// Where the host reaches the container: its first network address, or
    /// loopback for a container without networks of its own
    /// (`network_mode: host`); `None` while it has none.
    pub fn address(&self) -> Option<String> {
        if self.networks.is_empty() {
            return Some("127.0.0.1".into());
        }
        self.networks.iter().find_map(|n| n.ip.clone())
    }
}

/// One compose command as it ran, masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLog {
    pub command: String,
    pub code: Option<i32>,
    /// stdout and stderr interleaved by line (tail, at most 64 KB).
    pub output: String,
    pub duration: Duration,
}

/// The label the release's override gives each service: its fingerprint
/// (`release::service_fingerprints`), which changes with what the service
/// runs. A container or Swarm task carrying another value runs another
/// release's spec of the service.
pub const SERVICE_FINGERPRINT_LABEL: &str = "io.stackpin.service-fingerprint";

/// One compose project as a command runs it: the project name (always the
/// stack name), the directory compose runs in and its compose files
/// (relative to `dir`).
#[derive(Debug, Clone, Copy)]
pub struct Project<'a> {
    pub name: &'a str,
    pub dir: &'a std::path::Path,
    pub files: &'a [String],
    /// `engine: swarm` with `depends_on`: what the Swarm runtime deploys,
    /// and waits for, before the whole stack (empty otherwise: the
    /// release's extra files, `release::swarm_steps`).
    pub steps: &'a [swarm::Step],
}

/// Progress lines of a pull, for a person watching.
pub type Progress<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// What stackpin needs of a container engine. Every method is read-only or
/// idempotent as its documentation says; every text an implementation
/// returns is masked with the secrets of [`Engine::add_secrets`].
#[async_trait]
pub trait Engine: Send + Sync {
    /// What this engine is, for status and logs (`docker compose`, …).
    fn describe(&self) -> String;

    /// Adds values to replace with `***` in every command line, output and
    /// error from now on (values given before stay masked: an old secret
    /// must not leak after a rotation). Values shorter than 4 characters are
    /// ignored.
    fn add_secrets(&self, secrets: &[String]);

    /// Masks `text` with the secrets given.
    fn mask(&self, text: &str) -> String;

    /// Whether the engine answers.
    async fn ping(&self) -> Result<(), Error>;

    /// Pulls `image` by its digest and checks that the local image carries
    /// the pin. Idempotent: an image already present is verified, not pulled
    /// again. Never pulls by tag.
    async fn pull(&self, image: &ImageRef, progress: Progress<'_>) -> Result<(), Error>;

    /// Every container of compose project `project`, stopped ones included,
    /// sorted by service and name. Read-only. (A stack's members, whatever
    /// runs it, are [`runtime::Runtime::members`].)
    async fn containers(&self, project: &str) -> Result<Vec<ContainerInfo>, Error>;

    /// Runs `cmd` in a running container; its exit code and output (capped).
    async fn exec(&self, container: &str, cmd: &[String]) -> Result<(i64, String), Error>;

    /// The last `lines` lines a container printed (stdout and stderr, in
    /// order, masked, at most [`LOGS_CAP`] bytes), stopped containers
    /// included. Read-only.
    async fn logs(&self, container: &str, lines: usize) -> Result<String, Error>;

    /// Runs `cmd` in a running container and streams its stdout into the new
    /// file `out` (mode 0600, fsynced); the exit code, bytes written and the
    /// tail of stderr.
    async fn exec_to_file(
        &self,
        container: &str,
        cmd: &[String],
        env: &[String],
        user: Option<&str>,
        out: &std::path::Path,
    ) -> Result<(i64, u64, String), Error>;

    /// Whether a network of that name (or id) exists. Read-only.
    async fn network_exists(&self, name: &str) -> Result<bool, Error>;

    /// What happens to the containers of `project` from now on, as the
    /// engine's event stream says it: each [`is_lifecycle_event`] (a
    /// container died, was killed or OOM-killed, restarted, started,
    /// changed health) arrives as its action (`die`, `health_status:
    /// healthy`) for as long as the receiver is held; events a full
    /// receiver cannot take are dropped (a waker, not a log). `None` when
    /// the engine has no such stream: callers poll. Must be called inside a
    /// tokio runtime.
    fn watch(&self, _project: &str) -> Option<tokio::sync::mpsc::Receiver<String>> {
        None
    }

    /// Compose commands for `project` left running by a stackpin that died
    /// (see [`compose::orphans_in`]): waited for up to `wait`, then their
    /// process groups get SIGTERM and, 5 s later, SIGKILL. Call it holding
    /// the stack's lock, before touching the project: an orphan `up` racing
    /// a new one fails both. Returns what was found and done, in words.
    async fn settle_orphans(&self, _project: &str, _wait: Duration) -> Vec<String> {
        Vec::new()
    }

    /// Compose's `up -d --remove-orphans`: creates or recreates what
    /// changed, removes containers of services that are gone. Idempotent.
    /// (Deploying a stack is [`runtime::Runtime::deploy`].)
    async fn up(&self, project: Project<'_>) -> Result<CommandLog, Error>;

    /// Compose's `down --remove-orphans`: stops and removes the project's
    /// containers and networks. Never removes volumes. Idempotent.
    async fn down(&self, project: Project<'_>) -> Result<CommandLog, Error>;

    /// `config`: validates the compose files (and `.env`) without touching
    /// the engine's state, and returns the model compose will run
    /// (interpolated, `extends` merged, paths absolute): what the host
    /// powers are judged on.
    async fn config_model(
        &self,
        project: Project<'_>,
    ) -> Result<(CommandLog, serde_json::Value), Error>;

    /// The start-first operations, when this engine has them (`None`: a
    /// start-first service is refused as unsupported).
    fn replace(&self) -> Option<&dyn Replace> {
        None
    }

    /// The backup and restore operations, when this engine has them
    /// (`None`: a backup is refused as unsupported).
    fn backups(&self) -> Option<&dyn Backups> {
        None
    }

    /// `docker stack` on a Swarm manager, when this engine has it (`None`:
    /// an `engine: swarm` stack is refused as unsupported).
    fn swarm(&self) -> Option<&dyn swarm::Swarm> {
        None
    }
}

/// What a start-first rollout does beyond the core ([`Engine::replace`]):
/// containers created next to running ones, their aliases moved, started
/// and removed one at a time.
#[async_trait]
pub trait Replace: Send + Sync {
    /// `up --no-start --no-deps --no-recreate --scale <service>=<count>
    /// <service>`: creates (does not start) containers of `service` from
    /// the project's files next to the ones it has, which keep running.
    async fn create_more(
        &self,
        project: Project<'_>,
        service: &str,
        count: usize,
    ) -> Result<CommandLog, Error>;

    /// Attaches `container` to `network` anew with exactly `aliases` (the
    /// engine adds the container's own short id): disconnect, connect.
    async fn reconnect(
        &self,
        container: &str,
        network: &str,
        aliases: &[String],
    ) -> Result<(), Error>;

    /// Starts a created container.
    async fn start(&self, container: &str) -> Result<(), Error>;

    /// Stops `container` (SIGTERM, then SIGKILL after `grace`, or after the
    /// container's own stop timeout, compose's `stop_grace_period`) and
    /// removes it. Idempotent: a container already gone is not an error.
    async fn remove(&self, container: &str, grace: Option<Duration>) -> Result<(), Error>;
}

/// What a backup and a restore do beyond the core ([`Engine::backups`]).
#[async_trait]
pub trait Backups: Send + Sync {
    /// Streams the content of the named volume `volume` of compose project
    /// `project` (found by compose's labels, else by its `name`: an
    /// external volume has no labels) as a tar archive into the new
    /// file `out` (0600, fsynced), through a container of `image` that is
    /// created with the volume mounted and never started. Returns the
    /// engine's name of the volume and the bytes written. Read-only for the
    /// volume.
    async fn volume_export(
        &self,
        project: &str,
        volume: &str,
        name: &str,
        image: &str,
        out: &std::path::Path,
    ) -> Result<(String, u64), Error>;

    /// Replaces the content of the named volume `volume` of `project` with
    /// the archive [`Backups::volume_export`] wrote: the volume is removed
    /// and created again with its driver, options and labels (`name` when
    /// none exists), then the archive is extracted into it. No container
    /// may use the volume. Returns the volume's name.
    async fn volume_import(
        &self,
        project: &str,
        volume: &str,
        name: &str,
        image: &str,
        archive: &std::path::Path,
    ) -> Result<String, Error>;

    /// Copies the host file `file` into the running `container` as
    /// `<dir>/<name>`, streamed (a dump of any size).
    async fn copy_into(
        &self,
        container: &str,
        file: &std::path::Path,
        dir: &str,
        name: &str,
    ) -> Result<(), Error>;

    /// `up -d --no-deps <services>`: starts only these services of the
    /// project (a restore brings its databases up before the rest).
    async fn up_services(
        &self,
        project: Project<'_>,
        services: &[String],
    ) -> Result<CommandLog, Error>;
}

/// The capability `what` of `engine`, or the error saying the engine has
/// none (`unsupported`).
pub fn require<'a, T: ?Sized>(
    engine: &dyn Engine,
    cap: Option<&'a T>,
    what: &str,
) -> Result<&'a T, Error> {
    cap.ok_or_else(|| unsupported(engine.describe(), what))
}

/// A new file, owner-only (a dump or an archive holds every row of a
/// database): never replaces one.
async fn create_private(path: &std::path::Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
}

/// What an engine without the rollout operations answers to them.
fn unsupported(engine: String, what: &str) -> Error {
    Error::Unavailable(format!("{engine} cannot {what}"))
}

/// Whether an engine event's action changes what a watcher of a container
/// would conclude: it died, was killed or OOM-killed, restarted, started,
/// changed health, was removed. Not `exec_*`: smoke's own `exec` checks
/// cause those, and waking on them would spin.
pub fn is_lifecycle_event(action: &str) -> bool {
    let name = action.split(':').next().unwrap_or_default();
    matches!(
        name,
        "die" | "oom" | "kill" | "restart" | "start" | "stop" | "destroy" | "health_status"
    )
}

/// A connection to the Docker engine plus the compose CLI to use with it.
#[derive(Debug)]
pub struct Docker {
    docker: Bollard,
    pub compose: ComposeCmd,
    /// What the compose CLI said of its version at connect.
    compose_version: String,
    masker: std::sync::RwLock<Masker>,
    /// The host config's `registry_auth_file` ([`auth`]); `None`: the
    /// Docker CLI's own config file.
    registry_auth: Option<std::path::PathBuf>,
}

impl Docker {
    /// Connects to the engine named by `DOCKER_HOST` (default: the local
    /// socket), negotiates the API version, and finds the compose CLI
    /// (`compose_setting`: `auto`, `docker compose` or `docker-compose`).
    ///
    /// # Errors
    /// [`Error::Connect`] when the engine does not answer,
    /// [`Error::ComposeNotFound`] when no compose implementation works.
    pub async fn connect(compose_setting: &str) -> Result<Docker, Error> {
        let docker = Bollard::connect_with_defaults()
            .map_err(Error::Connect)?
            .negotiate_version()
            .await
            .map_err(Error::Connect)?;
        let setting = compose_setting.to_string();
        let (compose, compose_version) =
            tokio::task::spawn_blocking(move || ComposeCmd::detect_version(&setting))
                .await
                .map_err(|e| Error::ComposeNotFound {
                    setting: compose_setting.to_string(),
                    detail: e.to_string(),
                })??;
        tracing::debug!(
            compose = compose.display(),
            "connected to the docker engine"
        );
        Ok(Docker {
            docker,
            compose,
            compose_version,
            masker: std::sync::RwLock::new(Masker::default()),
            registry_auth: None,
        })
    }

    /// Pull credentials from this Docker config file instead of the CLI's
    /// own (`$DOCKER_CONFIG/config.json`, `~/.docker/config.json`).
    pub fn with_registry_auth(mut self, file: Option<std::path::PathBuf>) -> Docker {
        self.registry_auth = file;
        self
    }

    /// Pulls `image` by its digest and checks that the local image's
    /// RepoDigests contain the pin. Human progress lines go to `progress`.
    ///
    /// # Guarantees
    /// Idempotent: an image already present with the pinned digest is not
    /// pulled again, but is still verified. Never pulls by tag.
    ///
    /// # Errors
    /// [`Error::Pull`] when the reference has no digest or the engine fails
    /// the pull; [`Error::DigestMismatch`] when the image does not carry the
    /// pin afterwards.
    async fn pull_image(&self, image: &ImageRef, progress: Progress<'_>) -> Result<(), Error> {
        let pinned = image.pinned().ok_or_else(|| Error::Pull {
            image: image.to_string(),
            message: "the reference has no digest; stackpin pulls only pinned images".into(),
        })?;
        if let Some(digests) = self.image_repo_digests(&pinned).await?
            && image.is_in(&digests)
        {
            progress(&format!("{pinned}: already present"));
            tracing::debug!(image = %pinned, "image already present");
            return Ok(());
        }

        tracing::info!(image = %pinned, "pulling");
        let options = CreateImageOptionsBuilder::default()
            .from_image(&pinned)
            .build();
        let registry = image.registry();
        let explicit = self.registry_auth.as_deref();
        let file = auth::config_path(explicit);
        let creds = auth::credentials(file.as_deref(), explicit.is_some(), registry).map_err(
            |message| Error::Pull {
                image: pinned.clone(),
                message,
            },
        )?;
        if let Some(c) = &creds {
            self.add_secrets(&c.secrets());
            tracing::debug!(registry, file = ?file, "pulling with credentials");
        }
        // What a refusal means, for the message: whose credentials, where.
        let hint = match (&creds, &file) {
            (Some(_), Some(f)) => format!(
                "the registry {registry} refused the credentials from {}",
                f.display()
            ),
            (None, Some(f)) => format!(
                "no credentials for {registry} in {} (log in with `docker login {registry}` under that DOCKER_CONFIG, or name a config.json in registry_auth_file)",
                f.display()
            ),
            (_, None) => format!(
                "no credentials for {registry}: no Docker config file (set registry_auth_file)"
            ),
        };
        let docker_creds = creds.map(|c| bollard::auth::DockerCredentials {
            username: c.username,
            password: c.password,
            identitytoken: c.identity_token,
            serveraddress: Some(c.server),
            ..Default::default()
        });
        let mut stream = self.docker.create_image(Some(options), None, docker_creds);
        let mut last: HashMap<String, String> = HashMap::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| {
                let said = docker_message(&e);
                let refused = [
                    "unauthorized",
                    "authentication required",
                    "no basic auth credentials",
                    "denied",
                ]
                .iter()
                .any(|w| said.to_lowercase().contains(w));
                Error::Pull {
                    image: pinned.clone(),
                    message: self.mask(&if refused {
                        format!("{said} ({hint})")
                    } else {
                        said
                    }),
                }
            })?;
            let Some(status) = info.status.filter(|s| !s.is_empty()) else {
                continue;
            };
            let id = info.id.unwrap_or_default();
            // The engine repeats "Downloading"/"Extracting" for every chunk;
            // one line per layer and phase is enough for a human.
            if last.get(&id) == Some(&status) {
                continue;
            }
            let line = if id.is_empty() {
                status.clone()
            } else {
                format!("{id}: {status}")
            };
            last.insert(id, status);
            progress(&line);
        }

        let digests = self
            .image_repo_digests(&pinned)
            .await?
            .ok_or_else(|| Error::Pull {
                image: pinned.clone(),
                message: "the engine reported success but the image is not there".into(),
            })?;
        if !image.is_in(&digests) {
            return Err(Error::DigestMismatch {
                image: pinned,
                found: digests,
            });
        }
        progress(&format!("{pinned}: pulled"));
        Ok(())
    }

    /// RepoDigests of a local image, `None` if there is no such image.
    async fn image_repo_digests(&self, name: &str) -> Result<Option<Vec<String>>, Error> {
        match self.docker.inspect_image(name).await {
            Ok(i) => Ok(Some(i.repo_digests.unwrap_or_default())),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(source) => Err(Error::Inspect {
                what: format!("image {name}"),
                source,
            }),
        }
    }

    async fn list_containers(&self, project: &str) -> Result<Vec<ContainerInfo>, Error> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{PROJECT_LABEL}={project}")],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|source| Error::Inspect {
                what: format!("the containers of project {project}"),
                source,
            })?;

        let mut digests_by_image: HashMap<String, Vec<String>> = HashMap::new();
        let mut out = Vec::with_capacity(summaries.len());
        for summary in summaries {
            let Some(id) = summary.id else { continue };
            let c = match self.docker.inspect_container(&id, None).await {
                Ok(c) => c,
                // Removed between list and inspect: it is not part of the
                // project any more.
                Err(e) if is_not_found(&e) => continue,
                Err(source) => {
                    return Err(Error::Inspect {
                        what: format!("container {id}"),
                        source,
                    });
                }
            };
            let image_id = c.image.clone().unwrap_or_default();
            let repo_digests = match digests_by_image.get(&image_id) {
                Some(d) => d.clone(),
                None => {
                    let d = if image_id.is_empty() {
                        Vec::new()
                    } else {
                        self.image_repo_digests(&image_id)
                            .await?
                            .unwrap_or_default()
                    };
                    digests_by_image.insert(image_id.clone(), d.clone());
                    d
                }
            };
            out.push(container_info(id, c, repo_digests));
        }
        out.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
        Ok(out)
    }

    /// Runs `cmd` in a running container and returns its exit code and its
    /// stdout and stderr combined (the first 64 KB). No timeout of its own:
    /// wrap the call when the command might hang.
    async fn exec_capture(
        &self,
        container_id: &str,
        cmd: &[String],
    ) -> Result<(i64, String), Error> {
        let err = |source| Error::Exec {
            container: container_id.to_string(),
            source,
        };
        let created = self
            .docker
            .create_exec(
                container_id,
                CreateExecOptions {
                    cmd: Some(cmd.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(err)?;
        let started = self
            .docker
            .start_exec(&created.id, None::<StartExecOptions>)
            .await
            .map_err(err)?;
        let mut output: Vec<u8> = Vec::new();
        if let StartExecResults::Attached { output: mut s, .. } = started {
            while let Some(chunk) = s.next().await {
                let bytes = chunk.map_err(err)?.into_bytes();
                // Keep draining past the cap so the command is not blocked
                // on a full pipe.
                let room = EXEC_OUTPUT_CAP.saturating_sub(output.len());
                output.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
        }
        // The stream ends when the process closes its output; the exit code
        // may follow a moment later.
        let mut code = None;
        for _ in 0..50 {
            let inspect = self.docker.inspect_exec(&created.id).await.map_err(err)?;
            if inspect.running != Some(true) {
                code = inspect.exit_code;
                if code.is_some() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let text = self.mask(&String::from_utf8_lossy(&output));
        Ok((code.unwrap_or(-1), text))
    }

    /// Runs `cmd` in a running container (by id or name) and streams its
    /// stdout into a new file `out` (mode 0600), chunk by chunk: a database
    /// dump of any size never sits in memory. `env` holds `KEY=value`
    /// entries for the process, `user` the user to run it as (default: the
    /// container's). Returns the exit code (-1 when the engine never reported
    /// one), the bytes written and the last 8 KB of stderr, masked. No timeout
    /// of its own.
    ///
    /// # Guarantees
    /// `out` is created (never replaced: an existing file is an error),
    /// written in order and fsynced before this returns `Ok`.
    ///
    /// # Errors
    /// [`Error::Exec`] when the engine fails the exec, [`Error::ExecOutput`]
    /// when `out` cannot be created or written.
    async fn exec_streaming(
        &self,
        container: &str,
        cmd: &[String],
        env: &[String],
        user: Option<&str>,
        out: &std::path::Path,
    ) -> Result<(i64, u64, String), Error> {
        use tokio::io::AsyncWriteExt;
        let err = |source| Error::Exec {
            container: container.to_string(),
            source,
        };
        let io_err = |source| Error::ExecOutput {
            container: container.to_string(),
            path: out.to_path_buf(),
            source,
        };
        let mut file = create_private(out).await.map_err(io_err)?;
        let created = self
            .docker
            .create_exec(
                container,
                CreateExecOptions {
                    cmd: Some(cmd.to_vec()),
                    env: (!env.is_empty()).then(|| env.to_vec()),
                    user: user.map(str::to_string),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(false),
                    ..Default::default()
                },
            )
            .await
            .map_err(err)?;
        let started = self
            .docker
            .start_exec(&created.id, None::<StartExecOptions>)
            .await
            .map_err(err)?;
        let mut bytes: u64 = 0;
        let mut stderr: Vec<u8> = Vec::new();
        if let StartExecResults::Attached { output: mut s, .. } = started {
            // Pull-based: the next chunk is read from the engine only after
            // this one is written, so a slow disk slows the dump instead of
            // filling memory.
            while let Some(chunk) = s.next().await {
                match chunk.map_err(err)? {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        file.write_all(&message).await.map_err(io_err)?;
                        bytes += message.len() as u64;
                    }
                    LogOutput::StdErr { message } => {
                        stderr.extend_from_slice(&message);
                        if stderr.len() > EXEC_STDERR_TAIL {
                            stderr.drain(..stderr.len() - EXEC_STDERR_TAIL);
                        }
                    }
                    LogOutput::StdIn { .. } => {}
                }
            }
        }
        file.flush().await.map_err(io_err)?;
        file.sync_all().await.map_err(io_err)?;
        drop(file);
        let code = self.exec_exit_code(&created.id).await.map_err(err)?;
        let tail = self.mask(&String::from_utf8_lossy(&stderr));
        Ok((code, bytes, tail))
    }

    /// The exit code of a finished exec. The output stream ends when the
    /// process closes it; the code may follow a moment later (up to 5s).
    async fn exec_exit_code(&self, exec_id: &str) -> Result<i64, DockerError> {
        for _ in 0..50 {
            let inspect = self.docker.inspect_exec(exec_id).await?;
            if inspect.running != Some(true)
                && let Some(code) = inspect.exit_code
            {
                return Ok(code);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(-1)
    }

    /// Named volume `volume` of compose project `project`: found by
    /// compose's labels, else by `name` (an external volume, or one made
    /// without compose, has no labels). `None`: no such volume.
    async fn find_volume(
        &self,
        project: &str,
        volume: &str,
        name: &str,
    ) -> Result<Option<bollard::models::Volume>, Error> {
        use bollard::query_parameters::ListVolumesOptions;
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{PROJECT_LABEL}={project}"),
                format!("{VOLUME_LABEL}={volume}"),
            ],
        )]);
        let list = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|source| Error::Inspect {
                what: format!("the volumes of {project}"),
                source,
            })?;
        let mut found = list.volumes.unwrap_or_default();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(v) = found.into_iter().next() {
            return Ok(Some(v));
        }
        match self.docker.inspect_volume(name).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(source) => Err(Error::Inspect {
                what: format!("volume {name}"),
                source,
            }),
        }
    }

    /// A container of `image` with volume `name` mounted at
    /// [`VOLUME_MOUNT`], created and never started (the engine mounts a
    /// stopped container's volumes for archive requests): no process runs,
    /// so any image of the stack will do. No network.
    async fn volume_helper(&self, name: &str, image: &str) -> Result<String, Error> {
        use bollard::models::{ContainerCreateBody, HostConfig};
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(vec!["stackpin-volume-helper".to_string()]),
            labels: Some(HashMap::from([(
                HELPER_LABEL.to_string(),
                name.to_string(),
            )])),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                binds: Some(vec![format!("{name}:{VOLUME_MOUNT}")]),
                network_mode: Some("none".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.docker
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                body,
            )
            .await
            .map(|r| r.id)
            .map_err(|source| Error::Inspect {
                what: format!("a helper container of {image} for volume {name}"),
                source,
            })
    }

    async fn inspect_network(&self, name: &str) -> Result<bool, Error> {
        match self.docker.inspect_network(name, None).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(source) => Err(Error::Inspect {
                what: format!("network {name}"),
                source,
            }),
        }
    }
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The engine's own words, without bollard's wrapping.
fn docker_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerStreamError { error } => error.clone(),
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

#[async_trait]
impl Engine for Docker {
    fn describe(&self) -> String {
        self.compose.describe(&self.compose_version)
    }

    fn add_secrets(&self, secrets: &[String]) {
        let mut m = self
            .masker
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if secrets.iter().any(|s| !m.contains(s)) {
            *m = m.with(secrets);
        }
    }

    fn mask(&self, text: &str) -> String {
        self.masker
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .mask(text)
    }

    async fn ping(&self) -> Result<(), Error> {
        self.docker.ping().await.map_err(Error::Connect)?;
        Ok(())
    }

    async fn pull(&self, image: &ImageRef, progress: Progress<'_>) -> Result<(), Error> {
        self.pull_image(image, progress).await
    }

    async fn containers(&self, project: &str) -> Result<Vec<ContainerInfo>, Error> {
        self.list_containers(project).await
    }

    async fn exec(&self, container: &str, cmd: &[String]) -> Result<(i64, String), Error> {
        self.exec_capture(container, cmd).await
    }

    async fn logs(&self, container: &str, lines: usize) -> Result<String, Error> {
        let options = bollard::query_parameters::LogsOptions {
            stdout: true,
            stderr: true,
            tail: lines.to_string(),
            ..Default::default()
        };
        let mut stream = self.docker.logs(container, Some(options));
        let mut out: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            let bytes = chunk
                .map_err(|source| Error::Inspect {
                    what: format!("the logs of container {container}"),
                    source,
                })?
                .into_bytes();
            out.extend_from_slice(&bytes);
        }
        let text = String::from_utf8_lossy(&out);
        // The tail of what was read: `lines` long lines can be large.
        let mut start = text.len().saturating_sub(LOGS_CAP);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        Ok(self.mask(&text[start..]))
    }

    async fn exec_to_file(
        &self,
        container: &str,
        cmd: &[String],
        env: &[String],
        user: Option<&str>,
        out: &std::path::Path,
    ) -> Result<(i64, u64, String), Error> {
        self.exec_streaming(container, cmd, env, user, out).await
    }

    async fn network_exists(&self, name: &str) -> Result<bool, Error> {
        self.inspect_network(name).await
    }

    fn watch(&self, project: &str) -> Option<tokio::sync::mpsc::Receiver<String>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let docker = self.docker.clone();
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![format!("{PROJECT_LABEL}={project}")],
            ),
        ]);
        let project = project.to_string();
        tokio::spawn(async move {
            let options = bollard::query_parameters::EventsOptions {
                since: None,
                until: None,
                filters: Some(filters),
            };
            let mut events = docker.events(Some(options));
            loop {
                tokio::select! {
                    _ = tx.closed() => break,
                    next = events.next() => match next {
                        Some(Ok(m)) => {
                            let action = m.action.unwrap_or_default();
                            if is_lifecycle_event(&action) {
                                let _ = tx.try_send(action);
                            }
                        }
                        Some(Err(e)) => {
                            tracing::debug!(project, "engine event stream ended: {e}");
                            break;
                        }
                        None => break,
                    },
                }
            }
        });
        Some(rx)
    }

    async fn settle_orphans(&self, project: &str, wait: Duration) -> Vec<String> {
        let found = compose::orphans_in(&compose::processes(), project);
        if found.is_empty() {
            return Vec::new();
        }
        let mut said = vec![format!(
            "compose still running for {project} from an earlier run (pid {}): waiting up to {} for it",
            found
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            humantime::format_duration(wait)
        )];
        let alive = |pids: &[u32]| -> Vec<u32> {
            let now = compose::orphans_in(&compose::processes(), project);
            pids.iter().copied().filter(|p| now.contains(p)).collect()
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut left = found.clone();
        while !left.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            left = alive(&left);
        }
        if left.is_empty() {
            said.push("it finished".into());
            return said;
        }
        for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGKILL, "SIGKILL")] {
            for pid in &left {
                // SAFETY: kill(2) on a process group id or a pid we read
                // from /proc; no memory is involved.
                unsafe {
                    let pgid = libc::getpgid(*pid as libc::pid_t);
                    if pgid > 1 {
                        libc::kill(-pgid, sig);
                    } else {
                        libc::kill(*pid as libc::pid_t, sig);
                    }
                }
            }
            said.push(format!("still running: {name}"));
            tokio::time::sleep(Duration::from_secs(5)).await;
            left = alive(&left);
            if left.is_empty() {
                break;
            }
        }
        said
    }

    async fn up(&self, p: Project<'_>) -> Result<CommandLog, Error> {
        self.compose(p, &["up", "-d", "--remove-orphans"]).await
    }

    async fn down(&self, p: Project<'_>) -> Result<CommandLog, Error> {
        self.compose(p, &["down", "--remove-orphans"]).await
    }

    async fn config_model(&self, p: Project<'_>) -> Result<(CommandLog, serde_json::Value), Error> {
        Docker::config_model(self, p).await
    }

    fn replace(&self) -> Option<&dyn Replace> {
        Some(self)
    }

    fn backups(&self) -> Option<&dyn Backups> {
        Some(self)
    }

    fn swarm(&self) -> Option<&dyn swarm::Swarm> {
        Some(self)
    }
}

#[async_trait]
impl Replace for Docker {
    async fn create_more(
        &self,
        p: Project<'_>,
        service: &str,
        count: usize,
    ) -> Result<CommandLog, Error> {
        let scale = format!("{service}={count}");
        self.compose(
            p,
            &[
                "up",
                "--no-start",
                "--no-deps",
                "--no-recreate",
                "--scale",
                &scale,
                service,
            ],
        )
        .await
    }

    async fn reconnect(
        &self,
        container: &str,
        network: &str,
        aliases: &[String],
    ) -> Result<(), Error> {
        use bollard::models::{EndpointSettings, NetworkConnectRequest, NetworkDisconnectRequest};
        let what = || format!("network {network} of container {container}");
        self.docker
            .disconnect_network(
                network,
                NetworkDisconnectRequest {
                    container: container.to_string(),
                    force: Some(true),
                },
            )
            .await
            .map_err(|source| Error::Inspect {
                what: what(),
                source,
            })?;
        self.docker
            .connect_network(
                network,
                NetworkConnectRequest {
                    container: container.to_string(),
                    endpoint_config: Some(EndpointSettings {
                        aliases: Some(aliases.to_vec()),
                        ..Default::default()
                    }),
                },
            )
            .await
            .map_err(|source| Error::Inspect {
                what: what(),
                source,
            })
    }

    async fn start(&self, container: &str) -> Result<(), Error> {
        self.docker
            .start_container(
                container,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|source| Error::Inspect {
                what: format!("container {container} (start)"),
                source,
            })
    }

    async fn remove(&self, container: &str, grace: Option<Duration>) -> Result<(), Error> {
        use bollard::query_parameters::{
            RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
        };
        let stop = grace.map(|g| {
            StopContainerOptionsBuilder::default()
                .t(g.as_secs().max(1) as i32)
                .build()
        });
        match self.docker.stop_container(container, stop).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            // 304: already stopped.
            Err(DockerError::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(source) => {
                return Err(Error::Inspect {
                    what: format!("container {container} (stop)"),
                    source,
                });
            }
        }
        let rm = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(container, Some(rm)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(Error::Inspect {
                what: format!("container {container} (remove)"),
                source,
            }),
        }
    }
}

#[async_trait]
impl Backups for Docker {
    async fn volume_export(
        &self,
        project: &str,
        volume: &str,
        name: &str,
        image: &str,
        out: &std::path::Path,
    ) -> Result<(String, u64), Error> {
        use bollard::query_parameters::DownloadFromContainerOptions;
        use tokio::io::AsyncWriteExt;
        let name = match self.find_volume(project, volume, name).await? {
            Some(v) => v.name,
            None => {
                return Err(Error::NoVolume(format!(
                    "volume `{volume}` of {project} ({name}) does not exist on this engine (has the stack run with it?)"
                )));
            }
        };
        let io_err = |what: &str| {
            let what = what.to_string();
            move |source| Error::Archive {
                what,
                path: out.to_path_buf(),
                source,
            }
        };
        let mut file = create_private(out).await.map_err(io_err("create"))?;
        let helper = self.volume_helper(&name, image).await?;
        let mut bytes = 0u64;
        let result: Result<(), Error> = async {
            let mut s = self.docker.download_from_container(
                &helper,
                Some(DownloadFromContainerOptions {
                    path: VOLUME_MOUNT.to_string(),
                }),
            );
            while let Some(chunk) = s.next().await {
                let chunk = chunk.map_err(|source| Error::Inspect {
                    what: format!("the content of volume {name}"),
                    source,
                })?;
                file.write_all(&chunk).await.map_err(io_err("write"))?;
                bytes += chunk.len() as u64;
            }
            file.flush().await.map_err(io_err("write"))?;
            file.sync_all().await.map_err(io_err("fsync"))
        }
        .await;
        let _ = self.remove(&helper, None).await;
        result.map(|()| (name, bytes))
    }

    async fn volume_import(
        &self,
        project: &str,
        volume: &str,
        name: &str,
        image: &str,
        archive: &std::path::Path,
    ) -> Result<String, Error> {
        use bollard::models::VolumeCreateRequest;
        use bollard::query_parameters::UploadToContainerOptions;
        let create = match self.find_volume(project, volume, name).await? {
            Some(v) => {
                let n = &v.name;
                self.docker
                    .remove_volume(n, None::<bollard::query_parameters::RemoveVolumeOptions>)
                    .await
                    .map_err(|e| {
                        Error::Volume(format!(
                            "volume {n} cannot be emptied for the restore: {} (stop the containers that use it)",
                            docker_message(&e)
                        ))
                    })?;
                VolumeCreateRequest {
                    name: Some(v.name.clone()),
                    driver: Some(v.driver),
                    driver_opts: Some(v.options),
                    labels: Some(v.labels),
                    ..Default::default()
                }
            }
            None => VolumeCreateRequest {
                name: Some(name.to_string()),
                labels: Some(HashMap::from([
                    (PROJECT_LABEL.to_string(), project.to_string()),
                    (VOLUME_LABEL.to_string(), volume.to_string()),
                ])),
                ..Default::default()
            },
        };
        let created = self
            .docker
            .create_volume(create)
            .await
            .map_err(|source| Error::Inspect {
                what: format!("volume {name} (create)"),
                source,
            })?;
        let helper = self.volume_helper(&created.name, image).await?;
        let result = async {
            let f = tokio::fs::File::open(archive)
                .await
                .map_err(|source| Error::Archive {
                    what: "read".into(),
                    path: archive.to_path_buf(),
                    source,
                })?;
            self.docker
                .upload_to_container(
                    &helper,
                    Some(UploadToContainerOptions {
                        path: "/".to_string(),
                        ..Default::default()
                    }),
                    bollard::body_try_stream(tokio_util::io::ReaderStream::new(f)),
                )
                .await
                .map_err(|source| Error::Inspect {
                    what: format!("volume {} (extract the archive)", created.name),
                    source,
                })
        }
        .await;
        let _ = self.remove(&helper, None).await;
        result.map(|()| created.name)
    }

    async fn copy_into(
        &self,
        container: &str,
        file: &std::path::Path,
        dir: &str,
        name: &str,
    ) -> Result<(), Error> {
        use bollard::query_parameters::UploadToContainerOptions;
        let err = |source| Error::Archive {
            what: "read".into(),
            path: file.to_path_buf(),
            source,
        };
        let len = tokio::fs::metadata(file).await.map_err(err)?.len();
        // One tar entry, streamed: header, the file, padding, end blocks.
        let mut header = tar::Header::new_ustar();
        header.set_path(name).map_err(err)?;
        header.set_size(len);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let pad = (512 - (len % 512) as usize) % 512;
        let head = bytes::Bytes::copy_from_slice(header.as_bytes());
        let tail = bytes::Bytes::from(vec![0u8; pad + 1024]);
        let f = tokio::fs::File::open(file).await.map_err(err)?;
        let body = futures_util::stream::once(async move { Ok(head) })
            .chain(tokio_util::io::ReaderStream::new(f))
            .chain(futures_util::stream::once(async move { Ok(tail) }));
        self.docker
            .upload_to_container(
                container,
                Some(UploadToContainerOptions {
                    path: dir.to_string(),
                    ..Default::default()
                }),
                bollard::body_try_stream(body),
            )
            .await
            .map_err(|source| Error::Inspect {
                what: format!("container {container} (copy {name} into {dir})"),
                source,
            })
    }

    async fn up_services(&self, p: Project<'_>, services: &[String]) -> Result<CommandLog, Error> {
        let mut args = vec!["up", "-d", "--no-deps"];
        args.extend(services.iter().map(String::as_str));
        self.compose(p, &args).await
    }
}

/// The engine of a command that runs without one (`plan`, `status`, `hold`
/// where Docker is not at hand): every call fails with
/// [`Error::Unavailable`] naming why, so callers report "not checked"
/// instead of guessing.
#[derive(Debug, Clone)]
pub struct Offline {
    why: String,
}

impl Offline {
    pub fn new(why: impl Into<String>) -> Offline {
        Offline { why: why.into() }
    }

    fn err<T>(&self) -> Result<T, Error> {
        Err(Error::Unavailable(self.why.clone()))
    }
}

#[async_trait]
impl Engine for Offline {
    fn describe(&self) -> String {
        format!("no engine ({})", self.why)
    }
    fn add_secrets(&self, _secrets: &[String]) {}
    fn mask(&self, text: &str) -> String {
        text.to_string()
    }
    async fn ping(&self) -> Result<(), Error> {
        self.err()
    }
    async fn pull(&self, _image: &ImageRef, _progress: Progress<'_>) -> Result<(), Error> {
        self.err()
    }
    async fn containers(&self, _project: &str) -> Result<Vec<ContainerInfo>, Error> {
        self.err()
    }
    async fn exec(&self, _container: &str, _cmd: &[String]) -> Result<(i64, String), Error> {
        self.err()
    }
    async fn logs(&self, _container: &str, _lines: usize) -> Result<String, Error> {
        self.err()
    }
    async fn exec_to_file(
        &self,
        _container: &str,
        _cmd: &[String],
        _env: &[String],
        _user: Option<&str>,
        _out: &std::path::Path,
    ) -> Result<(i64, u64, String), Error> {
        self.err()
    }
    async fn network_exists(&self, _name: &str) -> Result<bool, Error> {
        self.err()
    }
    async fn up(&self, _p: Project<'_>) -> Result<CommandLog, Error> {
        self.err()
    }
    async fn down(&self, _p: Project<'_>) -> Result<CommandLog, Error> {
        self.err()
    }
    async fn config_model(
        &self,
        _p: Project<'_>,
    ) -> Result<(CommandLog, serde_json::Value), Error> {
        self.err()
    }
}

/// A time as Docker's inspect prints it (RFC 3339, nanoseconds).
pub(crate) fn docker_time(t: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// A container as Docker's inspect describes it (`repo_digests`: its
/// image's, looked up by the caller). Pure: what [`Docker::containers`]
/// reads, and what tests feed it as Docker printed it.
pub fn container_info(
    id: String,
    c: bollard::models::ContainerInspectResponse,
    repo_digests: Vec<String>,
) -> ContainerInfo {
    let image_id = c.image.clone().unwrap_or_default();
    let mut networks: Vec<Endpoint> = c
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .filter(|(network, _)| network != "host" && network != "none")
        .map(|(network, e)| Endpoint {
            network,
            aliases: e.aliases.unwrap_or_default(),
            ip: e.ip_address.filter(|ip| !ip.is_empty()),
        })
        .collect();
    networks.sort_by(|a, b| a.network.cmp(&b.network));
    let config = c.config.unwrap_or_default();
    let labels = config.labels.unwrap_or_default();
    let state = c.state.unwrap_or_default();
    let status = state.status.map(|s| s.to_string()).unwrap_or_default();
    let (health, health_log) = match state.health {
        Some(h) => {
            let log = HealthLog {
                failing_streak: h.failing_streak.unwrap_or(0),
                probes: h
                    .log
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| Probe {
                        start: r.start.as_deref().and_then(docker_time),
                        exit_code: r.exit_code.unwrap_or(-1),
                        output: r.output.unwrap_or_default(),
                    })
                    .collect(),
            };
            let status = h
                .status
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty() && s != "none");
            let log = status.as_ref().map(|_| log);
            (status, log)
        }
        None => (None, None),
    };
    // Docker says `0001-01-01T00:00:00Z` for "never started".
    let started_at = state
        .started_at
        .as_deref()
        .and_then(docker_time)
        .filter(|t| t.timestamp() > 0);
    let exit_code = if status == "running" || status == "created" {
        None
    } else {
        state.exit_code
    };
    ContainerInfo {
        id: c.id.unwrap_or(id),
        name: c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        service: labels.get(SERVICE_LABEL).cloned().unwrap_or_default(),
        image: config.image.unwrap_or_default(),
        image_id,
        repo_digests,
        state: status,
        health,
        health_log,
        restart_count: c.restart_count.unwrap_or(0),
        started_at,
        exit_code,
        labels,
        networks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_wakes_on_lifecycle_events_not_on_its_own_execs() {
        for a in [
            "die",
            "oom",
            "kill",
            "restart",
            "start",
            "destroy",
            "health_status: healthy",
            "health_status: unhealthy",
        ] {
            assert!(is_lifecycle_event(a), "{a}");
        }
        for a in [
            "exec_create: cat /x",
            "exec_start: cat /x",
            "exec_die",
            "attach",
            "create",
            "rename",
            "",
        ] {
            assert!(!is_lifecycle_event(a), "{a}");
        }
    }

    #[test]
    fn compose_error_names_command_code_and_last_line() {
        let e = Error::Compose {
            command: "docker-compose -p web up -d".into(),
            code: Some(1),
            output: "Creating web_app_1 ...\nERROR: manifest unknown\n\n".into(),
        };
        assert_eq!(
            e.to_string(),
            "failed to run `docker-compose -p web up -d` (exit code 1): ERROR: manifest unknown"
        );
    }

    /// What compose v1 and v2 print when a port is taken or a name is in
    /// use: the line that says so is in the message, the summary is not
    /// (issue 16: only "Encountered errors …" reached history and status).
    #[test]
    fn compose_errors_keep_the_lines_that_explain_them() {
        let v1 = "Creating network \"shop_default\" with the default driver\n\
                  Creating shop_app_1 ... error\n\n\
                  ERROR: for shop_app_1  Cannot start service app: driver failed programming external connectivity on endpoint shop_app_1: Bind for 127.0.0.1:8080 failed: port is already allocated\n\n\
                  ERROR: for app  Cannot start service app: driver failed programming external connectivity on endpoint shop_app_1: Bind for 127.0.0.1:8080 failed: port is already allocated\n\
                  ERROR: Encountered errors while bringing up the project.\n";
        let got = explain(v1).unwrap();
        assert!(got.contains("port is already allocated"), "{got}");
        assert!(!got.contains("Encountered errors"), "{got}");
        assert_eq!(got.matches("port is already allocated").count(), 1, "{got}");
        let v2 = " Container shop-app-1  Creating\n\
                  Error response from daemon: Conflict. The container name \"/shop-app-1\" is already in use by container \"4f2a\". You have to remove (or rename) that container to be able to reuse that name.\n";
        let got = explain(v2).unwrap();
        assert!(
            got.starts_with("Error response from daemon: Conflict."),
            "{got}"
        );
        assert_eq!(
            explain("all went well\nbut exit 1\n").as_deref(),
            Some("but exit 1")
        );
        assert_eq!(explain(""), None);
        let long = format!("ERROR: {}\n", "x".repeat(1000));
        assert!(explain(&long).unwrap().chars().count() <= EXPLAIN_CHARS + 1);
    }

    #[test]
    fn report_appends_causes() {
        let e = Error::Spawn {
            command: "docker-compose version".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        };
        assert_eq!(
            e.report(),
            "failed to start `docker-compose version`: no such file"
        );
    }
}
