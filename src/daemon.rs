//! The GitOps loop (SPEC §5, §6): fetch the desired state, converge, repeat.
//!
//! Triggers — the poll tick (which also catches drift), a GitHub webhook, a
//! change under a local repository path, an operator request — all feed one
//! executor. The trigger channel holds one entry: while a run is in flight at
//! most one follow-up is queued, so a storm of 1,000 webhooks yields at most
//! two runs. Within a run stacks converge in `depends_on` order with the
//! configured parallelism, each under its own lock.
//!
//! Errors are sorted as Flux does: a failed fetch is transient (retried with
//! capped exponential backoff, the host left as it is); a blocked, held or
//! quarantined stack is waiting (skipped until its inputs change); an invalid
//! stack is stalled (not retried until the desired state changes). The last
//! two need no timer: the plan skips them on every run until the desired
//! fingerprint changes.

use crate::config::Config;
use crate::control::{self, Request, Response};
use crate::desired::{self, DesiredState, DirTree};
use crate::host::{Host, LogReporter, Reporter};
use crate::layout::Layout;
use crate::metrics::Metrics;
use crate::outcome::{Outcome, StackResult, Stage, StageRecord};
use crate::reconcile::{self, SyncOptions, SyncReport};
use crate::server::{self, AppState, Snapshot, Trigger};
use crate::source::Backoff;
use crate::source::{self, GitSource, SourceConfig};
use crate::startup::Services;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Startup(#[from] crate::startup::Error),
    #[error("no desired-state repository: set repo.url in the config file or pass --repo")]
    NoRepository,
    #[error(transparent)]
    Source(#[from] source::Error),
    #[error(transparent)]
    Publish(#[from] crate::publish::Error),
    #[error(transparent)]
    Propose(#[from] crate::propose::Error),
    #[error("failed to {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Control(#[from] control::Error),
    #[error("failed to install the signal handler: {0}")]
    Signal(#[source] std::io::Error),
}

/// Daemon settings beyond [`Config`].
#[derive(Debug, Clone)]
pub struct Options {
    pub poll_interval: Duration,
    pub listen: Option<String>,
    pub webhook_secret: Option<Vec<u8>>,
    pub control_socket: PathBuf,
    pub control_socket_group: Option<String>,
    pub concurrency: usize,
    pub fetch_timeout: Duration,
}

/// The desired commit's first 12 hex digits, for status lines.
fn short_commit(d: &DesiredState) -> &str {
    d.commit.as_deref().map_or("a directory", desired::short_id)
}

/// One thing the daemon needs at start, checked without starting anything.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StartCheck {
    pub what: &'static str,
    pub ok: bool,
    /// What was found, or why the daemon would refuse to start (or could
    /// not do its work).
    pub detail: String,
}

/// What [`run`] needs before its loop, checked the way it uses it, changing
/// nothing: the engine and compose (`Docker::connect`), the host policy,
/// signing key and notification secret files (`Services` strictly, as the
/// daemon builds them), the repository and the credential files its
/// transport reads, the publishing settings, the control socket's group,
/// and the HTTP listen address (a port already in use is noted, not
/// failed: it may be this host's running daemon). `daemon --check-config`
/// runs it, so a config the daemon refuses never passes there.
pub async fn start_checks(cfg: &Config, opts: &Options) -> Vec<StartCheck> {
    let mut out = Vec::new();
    let mut push = |what, r: Result<String, String>| {
        let ok = r.is_ok();
        let detail = r.unwrap_or_else(|why| why);
        out.push(StartCheck { what, ok, detail });
    };
    let engine = crate::engine::Docker::connect(&cfg.compose).await;
    push(
        "docker engine and compose",
        match &engine {
            Ok(d) => Ok(crate::engine::Engine::describe(d)),
            Err(e) => Err(e.report()),
        },
    );
    push(
        "host policy, signing key and notifications",
        Services::with_engine(
            cfg.clone(),
            Box::new(crate::engine::Offline::new("check")),
            true,
        )
        .map(|s| {
            if s.notifier.is_some() {
                "loaded; notifications enabled".to_string()
            } else {
                "loaded".to_string()
            }
        })
        .map_err(|e| e.to_string()),
    );
    push(
        "desired-state repository",
        match SourceConfig::from_config(cfg, opts.fetch_timeout) {
            None => Err(Error::NoRepository.to_string()),
            Some(sc) => {
                let transport = source::credentials::Transport::of(&sc.url);
                source::credentials::Creds::read(&transport, &sc.auth)
                    .map(|_| {
                        format!(
                            "{} at {} (credential files readable)",
                            source::strip_credentials(&sc.url),
                            sc.branch
                        )
                    })
                    .map_err(|e| e.0)
            }
        },
    );
    push(
        "publishing verified markers",
        crate::publish::Settings::from_config(cfg)
            .map(|s| match s {
                Some(s) => format!("to {} as {} <{}>", s.branch, s.author_name, s.author_email),
                None => "off".to_string(),
            })
            .map_err(|e| e.to_string()),
    );
    push(
        "promotion proposals",
        match crate::propose::Proposer::from_config(cfg, None) {
            Ok(None) => Ok("off".to_string()),
            Ok(Some(p)) => p
                .check_tokens()
                .map(|()| format!("{} (token files readable)", p.describe())),
            Err(e) => Err(e.to_string()),
        },
    );
    push(
        "registry credentials",
        crate::engine::auth::check_file(cfg.file.registry_auth_file.as_deref()),
    );
    push(
        "commit statuses",
        match &cfg.file.github_status {
            None => Ok("off".to_string()),
            Some(c) => crate::commit_status::Poster::new(c)
                .and_then(|p| p.token().map(|_| p))
                .map(|_| format!("to {} (token file readable)", c.repo))
                .map_err(|e| e.to_string()),
        },
    );
    push(
        "age identity (secrets)",
        match cfg.file.age_identity_file.as_deref() {
            None => Ok("none: stacks with `secrets:` cannot be rendered".to_string()),
            Some(p) => crate::secrets::recipients(p)
                .map(|r| format!("{} (recipient {})", p.display(), r.join(", ")))
                .map_err(|e| e.to_string()),
        },
    );
    push(
        "control socket group",
        match &opts.control_socket_group {
            None => Ok("none (the socket is 0660, root's group)".to_string()),
            Some(g) => control::group_id(g)
                .map(|gid| format!("{g} (gid {gid})"))
                .map_err(|e| e.to_string()),
        },
    );
    push(
        "HTTP listen address",
        match &opts.listen {
            None => Ok("off".to_string()),
            Some(addr) => match std::net::TcpListener::bind(addr.as_str()) {
                Ok(_) => Ok(format!("{addr} (free)")),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Ok(format!(
                    "{addr} is in use now (by this host's running daemon?); the daemon cannot start while it is"
                )),
                Err(e) => Err(format!("cannot listen on {addr}: {e}")),
            },
        },
    );
    out
}

/// Where desired state comes from.
enum Source {
    Git(Arc<GitSource>),
    /// A plain directory (not a git repository): read as it is, watched.
    Dir(PathBuf),
}

impl Source {
    fn watch_path(&self, cfg: &Config) -> Option<PathBuf> {
        let repo = cfg.repo.as_deref()?;
        let p = Path::new(repo.strip_prefix("file://").unwrap_or(repo));
        match self {
            Source::Dir(d) => Some(d.clone()),
            Source::Git(_) if p.is_dir() => Some(p.to_path_buf()),
            Source::Git(_) => None,
        }
    }
}

fn open_source(cfg: &Config, fetch_timeout: Duration) -> Result<Source, Error> {
    let Some(url) = cfg.repo.clone() else {
        return Err(Error::NoRepository);
    };
    let local = Path::new(url.strip_prefix("file://").unwrap_or(&url));
    if !source::is_remote(&url) && local.is_dir() && git2::Repository::open(local).is_err() {
        let dir = if cfg.repo_path == "." {
            local.to_path_buf()
        } else {
            local.join(&cfg.repo_path)
        };
        return Ok(Source::Dir(dir));
    }
    let sc = SourceConfig::from_config(cfg, fetch_timeout).ok_or(Error::NoRepository)?;
    std::fs::create_dir_all(&cfg.state_dir).map_err(|source| Error::Io {
        what: "create the state dir",
        path: cfg.state_dir.clone(),
        source,
    })?;
    Ok(Source::Git(Arc::new(GitSource::new(sc, &cfg.state_dir)?)))
}

/// A reporter that logs stages and feeds the duration metrics.
struct MetricsReporter {
    metrics: Arc<Metrics>,
}

impl Reporter for MetricsReporter {
    fn stage(&self, stack: &str, s: &StageRecord) {
        LogReporter.stage(stack, s);
        if s.name == Stage::Smoke {
            self.metrics.observe_smoke(stack, s.millis as f64 / 1000.0);
        }
    }
}

struct Daemon {
    cfg: Config,
    opts: Options,
    services: Services,
    source: Source,
    snapshot: Arc<RwLock<Snapshot>>,
    metrics: Arc<Metrics>,
    reporter: MetricsReporter,
    backoff: Backoff,
    /// The last desired state fetched successfully (used by operator runs
    /// while the remote is unreachable), shared: a run on the same commit
    /// reuses it instead of reading and validating the tree again.
    last: Option<Arc<DesiredState>>,
    /// What loading each stack of `last` gave, for the next commit.
    stack_cache: Option<Arc<desired::StackCache>>,
    ready_sent: bool,
    /// Publishes verified markers to git after each run (`verified.publish`).
    publisher: Option<crate::publish::Worker>,
}

type OpMsg = (Request, oneshot::Sender<Response>);

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(cfg: Config, opts: Options) -> Result<(), Error> {
    // A bad notify section fails the start, not the first failure.
    let services = Services::connect(cfg.clone(), true).await?;
    if services.notifier.is_some() {
        tracing::info!("notifications enabled");
    }
    let source = open_source(&cfg, opts.fetch_timeout)?;
    let metrics = Arc::new(Metrics::new());
    let snapshot = Arc::new(RwLock::new(Snapshot {
        host: crate::status::HostInfo {
            name: cfg.host.clone(),
            labels: cfg
                .labels()
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            engine: services.engine.describe(),
        },
        ..Snapshot::default()
    }));
    let (trig_tx, mut trig_rx) = mpsc::channel::<Trigger>(1);
    let (op_tx, mut op_rx) = mpsc::channel::<OpMsg>(16);

    if let Some(listen) = &opts.listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| Error::Listen {
                addr: listen.clone(),
                source,
            })?;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "HTTP server listening");
        }
        let state = AppState {
            trigger: trig_tx.clone(),
            webhook_secret: opts.webhook_secret.clone().map(Arc::new),
            branch: cfg.branch.clone().unwrap_or_else(|| "main".into()),
            snapshot: snapshot.clone(),
            metrics: metrics.clone(),
            history_path: Layout {
                root: cfg.root.clone(),
            }
            .history(),
            ready_max_age: (opts.poll_interval * 3).max(Duration::from_secs(180)),
            deliveries: Default::default(),
        };
        tokio::spawn(async move {
            if let Err(e) = server::serve(listener, state, std::future::pending()).await {
                tracing::error!("HTTP server stopped: {e}");
            }
        });
    }
    spawn_control_socket(&opts, op_tx)?;
    let watch = cfg.file.repo.as_ref().and_then(|r| r.watch).unwrap_or(true);
    let _watcher = source
        .watch_path(&cfg)
        .filter(|_| watch)
        .and_then(|p| spawn_watcher(&p, trig_tx.clone()));
    let heartbeat = Heartbeat::new();
    spawn_watchdog(heartbeat.clone());

    let proposer = crate::propose::Proposer::from_config(&cfg, services.policy.soak)?;
    if let Some(p) = &proposer {
        tracing::info!("proposing promotions: {}", p.describe());
    }
    let publisher = crate::publish::Settings::from_config(&cfg)?.map(|s| {
        tracing::info!(branch = %s.branch, author = %format!("{} <{}>", s.author_name, s.author_email), "publishing verified markers to the desired-state repository");
        crate::publish::Worker::spawn(
            crate::publish::Publisher::new(s),
            Layout {
                root: cfg.root.clone(),
            },
            proposer.map(crate::propose::after_publish),
        )
    });
    let mut d = Daemon {
        reporter: MetricsReporter {
            metrics: metrics.clone(),
        },
        backoff: Backoff::new(
            Duration::from_secs(2),
            opts.poll_interval.max(Duration::from_secs(4)),
        ),
        cfg,
        opts,
        services,
        source,
        snapshot,
        metrics,
        last: None,
        stack_cache: None,
        ready_sent: false,
        publisher,
    };
    let mut poll = tokio::time::interval(d.opts.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(Error::Signal)?;
    tracing::info!(host = %d.cfg.host, root = %d.cfg.root.display(), poll = ?d.opts.poll_interval, "stackpin daemon started");
    d.recover_at_start().await;
    loop {
        let retry = async {
            match retry_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let trigger = tokio::select! {
            _ = heartbeat.idle_tick() => None,
            _ = poll.tick() => Some(Trigger::Poll),
            Some(t) = trig_rx.recv() => Some(t),
            _ = retry => Some(Trigger::Poll),
            Some((req, reply)) = op_rx.recv() => {
                let resp = heartbeat.while_polled(d.operator(req)).await;
                let _ = reply.send(resp);
                None
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        };
        heartbeat.beat();
        if let Some(t) = trigger {
            retry_at = heartbeat
                .while_polled(d.run(t, SyncOptions::default()))
                .await
                .map(|delay| tokio::time::Instant::now() + delay);
        }
    }
    tracing::info!("stackpin daemon stopping");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = std::fs::remove_file(&d.opts.control_socket);
    Ok(())
}

impl Daemon {
    /// Finishes or reverts what a crash interrupted, from the local
    /// journals, before the first fetch: a host whose remote is down (or
    /// slow) must not wait for the network to get every stack back onto a
    /// complete release. Also removes leftover temporary release dirs.
    async fn recover_at_start(&self) {
        let host = self.host();
        for stack in crate::observed::stacks_on_host(&host.layout) {
            if let Err(e) = crate::release::sweep_temp(&host.layout, &stack) {
                tracing::warn!(
                    stack,
                    "failed to remove leftover temporary release dirs: {e}"
                );
            }
        }
        for r in reconcile::recover(&host).await {
            tracing::info!(stack = %r.stack, outcome = ?r.outcome, "recovered at start: {}", r.message);
        }
    }

    fn host(&self) -> Host<'_> {
        self.services
            .host(&self.reporter, format!("stackpin-daemon@{}", self.cfg.host))
    }

    /// Fetches and loads the desired state. On failure the host is left as
    /// it is and the error recorded; returns the retry delay. A fetch that
    /// lands on the commit already loaded reuses that state: loading is a
    /// function of the commit's tree alone, and is most of a no-op run.
    async fn fetch(&mut self) -> Result<Arc<DesiredState>, Duration> {
        let mut new_cache = None;
        let loaded = match &self.source {
            Source::Dir(dir) => Ok(Arc::new(desired::load(&DirTree::new(dir)))),
            Source::Git(g) => {
                let g = g.clone();
                let last = self.last.clone();
                let cache = self.stack_cache.clone();
                // The source logs a force-push itself; the snapshot shows it.
                type Loaded = (
                    Arc<DesiredState>,
                    Option<Arc<desired::StackCache>>,
                    Option<String>,
                );
                let r = tokio::task::spawn_blocking(
                    move || -> Result<Loaded, (String, bool)> {
                        let f = g.fetch().map_err(|e| (e.to_string(), e.is_transient()))?;
                        let forced = f.forced.then(|| {
                            format!(
                                "force-push: {} → {}",
                                f.previous.clone().unwrap_or_default(),
                                f.commit
                            )
                        });
                        if let Some(last) = last.filter(|l| l.commit.as_deref() == Some(&f.commit)) {
                            tracing::debug!(commit = %f.commit, "desired state unchanged: not read again");
                            return Ok((last, None, forced));
                        }
                        let (d, cache) = g
                            .load_reusing(&f.commit, cache.as_deref())
                            .map_err(|e| (e.to_string(), e.is_transient()))?;
                        tracing::debug!(commit = %f.commit, read = cache.read, reused = cache.reused, "desired state loaded: stacks read, and reused from the previous commit");
                        Ok((Arc::new(d), Some(Arc::new(cache)), forced))
                    },
                )
                .await
                .unwrap_or_else(|e| Err((e.to_string(), true)));
                r.map(|(d, cache, forced)| {
                    if let Some(n) = forced {
                        self.snapshot.write().unwrap().forced_push = Some(n);
                    }
                    if cache.is_some() {
                        new_cache = cache;
                    }
                    d
                })
            }
        };
        if new_cache.is_some() {
            self.stack_cache = new_cache;
        }
        match loaded {
            Ok(d) => {
                self.backoff.succeed();
                let now = chrono::Utc::now();
                self.metrics.set_last_fetch(now.timestamp());
                {
                    let mut s = self.snapshot.write().unwrap();
                    s.last_fetch_ok = Some(now);
                    s.last_fetch_error = None;
                    s.commit = d.commit.clone();
                }
                self.ready(&format!(
                    "desired state at {}, fetched {}",
                    short_commit(&d),
                    now.format("%H:%M:%SZ")
                ));
                // Said once per loaded commit, not on every poll of it.
                let reused = self.last.as_ref().is_some_and(|l| Arc::ptr_eq(l, &d));
                if !reused {
                    for f in d.errors() {
                        tracing::warn!(stack = ?f.stack, file = %f.file, field = %f.field, "{}", f.message);
                    }
                }
                self.last = Some(Arc::clone(&d));
                Ok(d)
            }
            Err((e, transient)) => {
                // Transient (network, timeout, corrupt fetch): capped
                // exponential backoff. Stalled (bad credentials, missing
                // branch): a person must act; retry only at the poll interval.
                let delay = if transient {
                    self.backoff.fail()
                } else {
                    self.opts.poll_interval
                };
                let class = if transient { "transient" } else { "stalled" };
                tracing::error!(retry_in = ?delay, class, "FetchFailed: {e}; the host keeps what it runs");
                // Ready all the same: an unreachable remote at boot must not
                // hold `systemctl start` (and the status it serves is the
                // last fetched state, which the status line says).
                self.ready(&format!(
                    "degraded: fetch failed ({class}, retry in {}s); keeping what runs, serving the last fetched state",
                    delay.as_secs()
                ));
                self.metrics.fetch_error();
                self.snapshot.write().unwrap().last_fetch_error = Some(e);
                Err(delay)
            }
        }
    }

    /// Tells systemd the daemon is ready (once) and what it is doing now
    /// (`STATUS=`, shown by `systemctl status`). Without systemd, nothing.
    fn ready(&mut self, status: &str) {
        let mut states = vec![sd_notify::NotifyState::Status(status)];
        if !self.ready_sent {
            states.push(sd_notify::NotifyState::Ready);
            self.ready_sent = true;
        }
        let _ = sd_notify::notify(false, &states);
    }

    /// One run: fetch, converge every stack, publish status. Returns a retry
    /// delay when the fetch failed.
    async fn run(&mut self, trigger: Trigger, opts: SyncOptions) -> Option<Duration> {
        let before = self.last.clone();
        let desired = match self.fetch().await {
            Ok(d) => d,
            Err(delay) => {
                tracing::info!(?trigger, "sync run");
                self.metrics.record_run("fetch_failed");
                return Some(delay);
            }
        };
        // A change on disk that did not move the desired commit is no reason
        // to converge (the poll still catches drift).
        if trigger == Trigger::Watch
            && matches!(self.source, Source::Git(_))
            && before.as_ref().is_some_and(|b| Arc::ptr_eq(b, &desired))
        {
            tracing::debug!(?trigger, "the desired commit is unchanged: no run");
            return None;
        }
        tracing::info!(?trigger, "sync run");
        let report = self.converge(&desired, opts).await;
        let result = if report.any_failure() {
            "failed"
        } else if report
            .results
            .iter()
            .all(|r| r.outcome == Outcome::Unchanged || r.outcome == Outcome::Skipped)
        {
            "noop"
        } else {
            "success"
        };
        self.metrics.record_run(result);
        let failed = report
            .results
            .iter()
            .filter(|r| r.outcome.is_failure())
            .count();
        self.ready(&format!(
            "desired state at {}: {} stack(s), {failed} failed or blocked; last run {}",
            short_commit(&desired),
            report.results.len(),
            chrono::Utc::now().format("%H:%M:%SZ")
        ));
        None
    }

    async fn converge(&self, desired: &DesiredState, mut opts: SyncOptions) -> SyncReport {
        opts.concurrency = self.opts.concurrency;
        let host = self.host();
        let report = reconcile::sync(&host, desired, &opts).await;
        // Off the converge path: the worker publishes on its own thread, and
        // whatever fails stays pending for the next run.
        if let Some(p) = &self.publisher
            && !opts.dry_run
        {
            p.kick();
        }
        if !opts.dry_run {
            self.services
                .post_commit_statuses(desired.commit.as_deref(), &report.results)
                .await;
        }
        for r in &report.results {
            if r.outcome != Outcome::Unchanged {
                self.metrics.record_result(&r.stack, r.outcome, r.reason);
            }
            let secs: f64 = r.stages.iter().map(|s| s.millis as f64 / 1000.0).sum();
            if !r.stages.is_empty() {
                self.metrics.observe_converge(&r.stack, secs);
            }
            if matches!(
                r.outcome,
                Outcome::Deployed | Outcome::Healed | Outcome::Unchanged | Outcome::Recovered
            ) {
                self.metrics
                    .set_last_success(&r.stack, chrono::Utc::now().timestamp());
            }
            if r.outcome != Outcome::Unchanged && r.outcome != Outcome::Skipped {
                tracing::info!(stack = %r.stack, outcome = ?r.outcome, reason = ?r.reason, version = ?r.version, "{}", r.message);
            }
        }
        if !opts.dry_run {
            self.publish(desired, &report);
        }
        report
    }

    /// Publishes the run's own plan and results as status and metrics (no
    /// second plan). A run limited to some stacks updates only their rows.
    fn publish(&self, desired: &DesiredState, report: &SyncReport) {
        let host = self.host();
        let fresh = crate::status::after_run(&host, desired, report);
        let mut snap = self.snapshot.write().unwrap();
        let mut rows: Vec<crate::status::StackStatus> = snap
            .stacks
            .iter()
            .filter(|r| !fresh.iter().any(|f| f.stack == r.stack))
            .cloned()
            .collect();
        rows.extend(fresh);
        rows.sort_by(|a, b| a.stack.cmp(&b.stack));
        let (mut q, mut h, mut b) = (0, 0, 0);
        for r in &rows {
            self.metrics.set_stack_state(&r.stack, r.state);
            self.metrics.set_stack_axes(&r.stack, r.sync, r.health);
            let newest = crate::backup::list(&host.layout.backups_dir(&r.stack))
                .ok()
                .and_then(|ids| ids.last().and_then(|id| crate::backup::id_time(id)));
            if let Some(t) = newest {
                self.metrics.set_last_backup(&r.stack, t.timestamp());
            }
            q += r.quarantined as i64;
            h += r.held as i64;
            b += (r.state == crate::outcome::State::Blocked) as i64;
        }
        self.metrics.set_counts(q, h, b);
        snap.stacks = rows;
    }

    /// An operator request from the control socket, run in this executor.
    async fn operator(&mut self, req: Request) -> Response {
        if let Err(e) = req.check() {
            tracing::warn!("operator request refused: {e}");
            return Response {
                error: Some(e),
                ..Default::default()
            };
        }
        tracing::info!(request = %req.describe(), "operator request via control socket");
        if req.root() != self.cfg.root {
            return Response {
                wrong_root: true,
                error: Some(format!("this daemon manages {}", self.cfg.root.display())),
                ..Default::default()
            };
        }
        match req {
            Request::Sync {
                stacks,
                force,
                dry_run,
                break_glass,
                accept_rewrite,
                ..
            } => {
                let desired = match self.fetch().await {
                    Ok(d) => d,
                    Err(_) => match self.last.clone() {
                        Some(d) => d,
                        None => {
                            return Response {
                                error: Some("the desired state could not be fetched yet".into()),
                                ..Default::default()
                            };
                        }
                    },
                };
                if let Err(e) = self.host().check_known(Some(&desired), &stacks) {
                    return Response::refusal(&e.into());
                }
                let report = self
                    .converge(
                        &desired,
                        SyncOptions {
                            force,
                            dry_run,
                            break_glass,
                            accept_rewrite,
                            only: stacks,
                            ..Default::default()
                        },
                    )
                    .await;
                Response {
                    ok: true,
                    results: report.results,
                    ..Default::default()
                }
            }
            Request::Status { stacks, .. } => {
                let host = self.host();
                if let Err(e) = host.check_known(self.last.as_deref(), &stacks) {
                    return Response::refusal(&e.into());
                }
                let status = crate::status::collect(&host, self.last.as_deref(), &stacks).await;
                Response {
                    ok: true,
                    status,
                    engine: Some(host.engine.describe()),
                    ..Default::default()
                }
            }
            Request::Hold { stack, reason, .. } => {
                let host = self.host();
                let known = host
                    .check_known(self.last.as_deref(), std::slice::from_ref(&stack))
                    .map_err(std::io::Error::from);
                let locked = match known {
                    Ok(()) => host.lock_within(&stack, OPERATOR_LOCK_WAIT).await,
                    Err(e) => Err(e),
                };
                match locked.and_then(|_l| host.hold_locked(&stack, &reason, None)) {
                    Ok(m) => Response {
                        ok: true,
                        message: Some(m),
                        ..Default::default()
                    },
                    Err(e) => Response::refusal(&e),
                }
            }
            Request::Resume { stack, .. } => {
                let host = self.host();
                let known = host
                    .check_known(self.last.as_deref(), std::slice::from_ref(&stack))
                    .map_err(std::io::Error::from);
                let locked = match known {
                    Ok(()) => host.lock_within(&stack, OPERATOR_LOCK_WAIT).await,
                    Err(e) => Err(e),
                };
                match locked.and_then(|_l| host.resume_locked(&stack)) {
                    Ok(m) => Response {
                        ok: true,
                        message: Some(m),
                        ..Default::default()
                    },
                    Err(e) => Response::refusal(&e),
                }
            }
            Request::Restore { stack, backup, .. } => {
                let host = self.host();
                stack_response(crate::rollback::restore(&host, &stack, &backup).await)
            }
            Request::Rollback { stack, target, .. } => {
                let host = self.host();
                let done = crate::rollback::rollback(&host, &stack, &target).await;
                if let Ok(r) = &done {
                    self.metrics.record_rollback(&r.stack, r.outcome);
                }
                stack_response(done)
            }
        }
    }
}

/// The answer to an operator's rollback or restore: its result, or why
/// nothing was done.
fn stack_response<E: std::error::Error>(done: Result<StackResult, E>) -> Response {
    match done {
        Ok(r) => Response {
            ok: !r.outcome.is_failure(),
            message: Some(r.message.clone()),
            results: vec![r],
            ..Default::default()
        },
        Err(e) => Response {
            error: Some(crate::reconcile::error::report(&e)),
            ..Default::default()
        },
    }
}

fn spawn_control_socket(opts: &Options, op_tx: mpsc::Sender<OpMsg>) -> Result<(), Error> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let path = opts.control_socket.clone();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            what: "create",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    // A socket left by a previous daemon: remove it only if nobody answers.
    if path.exists() && std::os::unix::net::UnixStream::connect(&path).is_err() {
        let _ = std::fs::remove_file(&path);
    }
    let listener = tokio::net::UnixListener::bind(&path).map_err(|source| Error::Io {
        what: "bind the control socket (is another daemon running?)",
        path: path.clone(),
        source,
    })?;
    control::secure_socket(&path, opts.control_socket_group.as_deref())?;
    tracing::info!(socket = %path.display(), "control socket listening");
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(control::MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            // At most MAX_CONNECTIONS at once: the others wait in the
            // socket's backlog.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors (EMFILE) and the like:
                    // retrying at once would spin.
                    tracing::warn!("control socket: accept failed: {e}; pausing");
                    tokio::time::sleep(control::ACCEPT_PAUSE).await;
                    continue;
                }
            };
            let op_tx = op_tx.clone();
            // Who is asking: the peer's uid, from the kernel (SO_PEERCRED).
            let user = match stream.peer_cred() {
                Ok(c) => control::user_name(c.uid()),
                Err(_) => "an unknown user".to_string(),
            };
            tokio::spawn(async move {
                let _slot = slot;
                let (r, mut w) = stream.into_split();
                let mut line = String::new();
                // One line, of bounded size, in bounded time.
                let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(
                    r,
                    control::MAX_REQUEST_BYTES + 1,
                ));
                let read =
                    tokio::time::timeout(control::REQUEST_TIMEOUT, reader.read_line(&mut line));
                let refused = match read.await {
                    Err(_) => Some(format!(
                        "no request within {}s",
                        control::REQUEST_TIMEOUT.as_secs()
                    )),
                    Ok(Err(_)) => return,
                    Ok(Ok(_)) if line.len() as u64 > control::MAX_REQUEST_BYTES => Some(format!(
                        "request larger than {} bytes",
                        control::MAX_REQUEST_BYTES
                    )),
                    Ok(Ok(_)) => None,
                };
                let parsed = match refused {
                    Some(why) => {
                        tracing::warn!(%user, "control socket: {why}: closed");
                        Err(why)
                    }
                    None => serde_json::from_str::<Request>(&line).map_err(|e| e.to_string()),
                };
                let resp = match parsed {
                    Err(e) => Response {
                        error: Some(format!("bad request: {e}")),
                        ..Default::default()
                    },
                    Ok(req) => {
                        let req = req.attributed(&user);
                        let (tx, rx) = oneshot::channel();
                        if op_tx.send((req, tx)).await.is_err() {
                            return;
                        }
                        rx.await.unwrap_or_else(|_| Response {
                            error: Some("the daemon is stopping".into()),
                            ..Default::default()
                        })
                    }
                };
                let mut out = serde_json::to_string(&resp).unwrap_or_else(|_| "{}".into());
                out.push('\n');
                let _ = tokio::time::timeout(control::REQUEST_TIMEOUT, w.write_all(out.as_bytes()))
                    .await;
            });
        }
    });
    Ok(())
}

/// How long an operator's hold or resume waits for a stack's lock.
const OPERATOR_LOCK_WAIT: Duration = Duration::from_secs(60);

/// Watches a local repository path and triggers a run on change, once
/// the changes have been quiet for half a second. In a git repository only
/// ref updates count (a commit or a push); and only events that can change
/// what a run reads count at all (a write, create, rename or removal): the
/// watcher also reports every open and read, and a run reads the
/// repository's `HEAD` and refs, so counting those made the daemon sync
/// itself in a loop (issue 31).
fn spawn_watcher(path: &Path, trig: mpsc::Sender<Trigger>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let git_dir = git2::Repository::open(path)
        .ok()
        .map(|r| r.path().to_path_buf());
    let watched = git_dir.clone().unwrap_or_else(|| path.to_path_buf());
    let relevant = move |p: &Path| match &git_dir {
        None => !p.components().any(|c| c.as_os_str() == ".git"),
        Some(g) => p.strip_prefix(g).is_ok_and(|rel| {
            let first = rel
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default();
            (first == "refs" || first == "packed-refs" || first == "HEAD")
                && !p.to_string_lossy().ends_with(".lock")
        }),
    };
    let (changed, quiet) = std::sync::mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(e) = res
            && changes(&e.kind)
            && e.paths.iter().any(|p| relevant(p))
        {
            let _ = changed.send(());
        }
    })
    .map_err(|e| tracing::warn!("file watch unavailable: {e}"))
    .ok()?;
    watcher
        .watch(&watched, notify::RecursiveMode::Recursive)
        .map_err(|e| tracing::warn!(path = %watched.display(), "cannot watch: {e}"))
        .ok()?;
    // Ends when the watcher (and with it the sender) is dropped.
    std::thread::spawn(move || {
        while quiet.recv().is_ok() {
            while quiet.recv_timeout(Duration::from_millis(500)).is_ok() {}
            let _ = trig.try_send(Trigger::Watch);
        }
    });
    tracing::info!(path = %watched.display(), "watching the local repository for changes");
    Some(watcher)
}

/// Whether a file event can change what a run reads: data written, a file
/// created, renamed or removed. Opening, reading and closing a file after
/// reading it cannot, nor can a change of its metadata alone.
pub fn changes(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

/// Pings the systemd watchdog from the runtime at half its interval.
/// When the daemon's loop last made progress: beaten by the loop itself,
/// so a loop stuck on a blocking call (or a future that never wakes) stops
/// beating, and the watchdog stops pinging systemd, which restarts it.
#[derive(Clone)]
struct Heartbeat {
    /// tokio's clock, so tests with paused time see it advance.
    start: tokio::time::Instant,
    last_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Heartbeat {
    const EVERY: Duration = Duration::from_secs(5);

    fn new() -> Heartbeat {
        Heartbeat {
            start: tokio::time::Instant::now(),
            last_ms: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    fn beat(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn age(&self) -> Duration {
        let last = self.last_ms.load(std::sync::atomic::Ordering::Relaxed);
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }

    /// Wakes the idle loop every [`Heartbeat::EVERY`] so it beats.
    async fn idle_tick(&self) {
        tokio::time::sleep(Self::EVERY).await;
        self.beat();
    }

    /// Runs `f` on the loop's own task, beating while it is being polled:
    /// a long converge that awaits keeps beating; one whose thread is
    /// blocked does not.
    async fn while_polled<F: std::future::Future>(&self, f: F) -> F::Output {
        let mut tick = tokio::time::interval(Self::EVERY);
        tokio::pin!(f);
        loop {
            tokio::select! {
                out = &mut f => {
                    self.beat();
                    return out;
                }
                _ = tick.tick() => self.beat(),
            }
        }
    }
}

/// Pings systemd's watchdog (when `WatchdogSec` is set) only while the loop's
/// heartbeat is fresh.
fn spawn_watchdog(heartbeat: Heartbeat) {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let budget = Duration::from_micros(usec);
    let every = budget / 2;
    heartbeat.beat();
    tokio::spawn(async move {
        let mut t = tokio::time::interval(every);
        let mut warned = false;
        loop {
            t.tick().await;
            let age = heartbeat.age();
            if age < budget {
                warned = false;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            } else if !warned {
                warned = true;
                tracing::error!(
                    stuck_for = ?age,
                    "the daemon's loop has made no progress: no longer pinging the watchdog, so systemd restarts it"
                );
            }
        }
    });
}

#[cfg(test)]
mod heartbeat_tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_long_awaiting_run_keeps_beating() {
        let hb = Heartbeat::new();
        hb.beat();
        let watcher = hb.clone();
        // While a 60 s run awaits, the heartbeat never gets older than a tick.
        let probe = tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                worst = worst.max(watcher.age());
            }
            worst
        });
        hb.while_polled(tokio::time::sleep(Duration::from_secs(60)))
            .await;
        let worst = probe.await.unwrap();
        assert!(
            worst <= Heartbeat::EVERY + Duration::from_secs(1),
            "{worst:?}"
        );
    }

    #[test]
    fn without_beats_the_heartbeat_ages() {
        let hb = Heartbeat::new();
        hb.beat();
        std::thread::sleep(Duration::from_millis(60));
        assert!(hb.age() >= Duration::from_millis(50), "{:?}", hb.age());
    }
}
