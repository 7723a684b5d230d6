//! What the daemon and the one-shot commands both build at start from the
//! effective config: the engine, the signature policies and the notifier —
//! [`Services`] — and from them a [`Host`] to act on.

use crate::config::Config;
use crate::engine::{self, Docker, Engine, Offline};
use crate::events::{EventSink, NoEvents};
use crate::host::{Host, Reporter};
use crate::layout::Layout;
use crate::state::LocalStore;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to connect to the Docker engine: {}", .0.report())]
    Engine(#[source] engine::Error),
    #[error("failed to load the host's policy: {0}")]
    Policy(#[from] crate::policy::Error),
    #[error("failed to set up notifications: {0}")]
    Notify(#[from] crate::notify::Error),
    #[error("failed to set up commit statuses: {0}")]
    CommitStatus(#[from] crate::commit_status::Error),
}

/// The engine, policies and notifier of one process.
pub struct Services {
    pub cfg: Config,
    pub engine: Box<dyn Engine>,
    pub events: Box<dyn EventSink>,
    /// The configured notifier (also behind `events`), for [`Services::flush_events`].
    pub notifier: Option<crate::notify::Notifier>,
    pub policy: crate::policy::HostPolicy,
    /// What decrypts the stacks' `secrets:` (`age_identity_file:`).
    pub secrets: Box<dyn crate::secrets::Decryptor>,
    /// The stacks' renders, kept for the next run (a daemon's).
    pub renders: crate::release::cache::Cache,
    /// `github_status:`: statuses on the converged commits.
    pub commit_status: Option<crate::commit_status::Poster>,
}

/// The Docker engine as the config sets it up: its compose and the registry
/// credentials pulls read.
async fn engine(cfg: &Config) -> Result<Docker, crate::engine::Error> {
    Ok(Docker::connect(&cfg.compose)
        .await?
        .with_registry_auth(cfg.file.registry_auth_file.clone()))
}

impl Services {
    /// Connects to the Docker engine. `strict`: a notify section that does
    /// not load fails (the daemon); otherwise it is reported and the command
    /// goes on without notifications.
    ///
    /// # Errors
    /// The engine does not answer, a policy or (when `strict`) the notify
    /// section does not load.
    pub async fn connect(cfg: Config, strict: bool) -> Result<Services, Error> {
        let engine = engine(&cfg).await.map_err(Error::Engine)?;
        Services::with_engine(cfg, Box::new(engine), strict)
    }

    /// Without an engine: every engine call answers "unavailable: `why`"
    /// (commands that only read or write files: `plan`, `status`, `hold`).
    pub fn offline(cfg: Config, why: &str) -> Result<Services, Error> {
        Services::with_engine(cfg, Box::new(Offline::new(why)), false)
    }

    /// Connects when the engine answers, else [`Services::offline`] with
    /// the reason.
    pub async fn connect_or_offline(cfg: Config) -> Result<Services, Error> {
        match engine(&cfg).await {
            Ok(e) => Services::with_engine(cfg, Box::new(e), false),
            Err(e) => {
                let why = e.report();
                Services::offline(cfg, &why)
            }
        }
    }

    pub fn with_engine(
        cfg: Config,
        engine: Box<dyn Engine>,
        strict: bool,
    ) -> Result<Services, Error> {
        let mut policy = crate::policy::HostPolicy::load(&cfg.file)?;
        policy.protected = crate::policy::protected_paths(&cfg);
        let notifier = match crate::notify::Notifier::from_config(&cfg, &cfg.host, &cfg.root) {
            Ok(n) => n,
            Err(e) if !strict => {
                tracing::warn!("notifications disabled: {e}");
                None
            }
            Err(e) => return Err(e.into()),
        };
        let events: Box<dyn EventSink> = match &notifier {
            Some(n) => Box::new(n.clone()),
            None => Box::new(NoEvents),
        };
        let commit_status = cfg
            .file
            .github_status
            .as_ref()
            .map(crate::commit_status::Poster::new)
            .transpose()?;
        let secrets = Box::new(crate::secrets::Age::new(cfg.file.age_identity_file.clone()));
        Ok(Services {
            cfg,
            engine,
            events,
            notifier,
            policy,
            secrets,
            renders: Default::default(),
            commit_status,
        })
    }

    /// Posts the commit statuses of a run (`github_status:`), when set.
    pub async fn post_commit_statuses(
        &self,
        commit: Option<&str>,
        results: &[crate::outcome::StackResult],
    ) {
        if let Some(p) = &self.commit_status {
            let mask = |s: &str| self.engine.mask(s);
            p.post_run(&self.cfg.host, commit, results, &mask).await;
        }
    }

    /// Lets queued notifications go out before a one-shot command exits
    /// (at most 15 s; what is left then is dropped with a warning).
    pub async fn flush_events(&self) {
        if let Some(n) = &self.notifier {
            n.flush(std::time::Duration::from_secs(15)).await;
        }
    }

    /// The host these services act on, reporting to `reporter`, acting as
    /// `actor` (recorded in current.json).
    pub fn host<'a>(&'a self, reporter: &'a dyn Reporter, actor: String) -> Host<'a> {
        Host {
            layout: Layout::new(self.cfg.root.clone()),
            store: LocalStore::new(&self.cfg.root),
            engine: self.engine.as_ref(),
            name: self.cfg.host.clone(),
            labels: self.cfg.labels(),
            actor,
            min_disk_free_percent: self.cfg.min_disk_free_percent,
            reporter,
            events: self.events.as_ref(),
            policy: &self.policy,
            secrets: self.secrets.as_ref(),
            renders: &self.renders,
        }
    }
}
