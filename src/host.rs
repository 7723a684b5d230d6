//! The host a command acts on: where its files are ([`Layout`], the local
//! store), the engine, who acts, where progress and events go and which
//! signature policies it enforces. The pipeline, backups, rollback and
//! status all take a [`Host`]; the daemon and the CLI each build one.
//!
//! Also the small records every stage writes through it: the history line
//! ([`Host::record`]), events ([`Host::emit`]) and the stage timings
//! ([`Stages`]).

mod stacks;
pub use stacks::{UnknownStack, check_known_all};

use crate::engine::Engine;
use crate::events::{Event, EventSink};
pub use crate::history::now_rfc3339;
use crate::history::{self, Action, Entry, Status};
use crate::layout::Layout;
use crate::outcome::{Stage, StageRecord};
use crate::state::LocalStore;
use std::time::Instant;

/// Receives progress as it happens (the CLI prints it; the daemon logs it).
pub trait Reporter: Send + Sync {
    fn stage(&self, stack: &str, stage: &StageRecord);
    fn pull_progress(&self, _stack: &str, _line: &str) {}
}

/// A reporter that only logs through tracing.
pub struct LogReporter;

impl Reporter for LogReporter {
    fn stage(&self, stack: &str, s: &StageRecord) {
        tracing::info!(stack, stage = %s.name, ok = s.ok, millis = s.millis as u64, detail = %s.detail, "stage");
    }
}

/// See the module documentation.
pub struct Host<'a> {
    pub layout: Layout,
    pub store: LocalStore,
    pub engine: &'a dyn Engine,
    /// This host's name, matched against `hosts:`.
    pub name: String,
    /// Its `labels` (config), matched by `key=value` entries of `hosts:`.
    pub labels: Vec<(String, String)>,
    /// Who acts: recorded in current.json.
    pub actor: String,
    pub min_disk_free_percent: u8,
    pub reporter: &'a dyn Reporter,
    /// Where notifications go (see `events`).
    pub events: &'a dyn EventSink,
    /// What this host enforces (SPEC §5): signer sets, rules, verifiers,
    /// its marker-signing key.
    pub policy: &'a crate::policy::HostPolicy,
    /// What decrypts the stacks' `secrets:` here (built from the config).
    pub secrets: &'a dyn crate::secrets::Decryptor,
    /// The stacks' renders kept between runs (see `release::cache`).
    pub renders: &'a crate::release::cache::Cache,
}

impl Host<'_> {
    /// Appends one history line.
    ///
    /// # Errors
    /// The append failed: the caller decides whether the step it audits may
    /// go on without its line (a deploy may not).
    pub fn record(
        &self,
        stack: &str,
        env: &str,
        action: Action,
        version: &str,
        status: Status,
        notes: &str,
    ) -> std::io::Result<()> {
        let e = Entry::now(stack, env, action, version, status, self.engine.mask(notes));
        history::append(&self.layout.history(), &e).inspect_err(|err| {
            tracing::error!(stack, "failed to append to history: {err}");
        })
    }

    /// Sends an event to the notifier (never blocks).
    pub fn emit(&self, e: Event) {
        self.events.emit(e);
    }
}

/// Times and reports the stages of one stack's run.
pub struct Stages<'r> {
    stack: String,
    list: Vec<StageRecord>,
    reporter: &'r dyn Reporter,
}

impl Stages<'_> {
    pub fn new<'r>(stack: &str, reporter: &'r dyn Reporter) -> Stages<'r> {
        Stages {
            stack: stack.to_string(),
            list: Vec::new(),
            reporter,
        }
    }

    pub fn into_list(self) -> Vec<StageRecord> {
        self.list
    }

    pub fn list(&self) -> &[StageRecord] {
        &self.list
    }

    /// Records that `stage`, started at `started`, ended `ok` with `detail`.
    pub fn record(&mut self, stage: Stage, started: Instant, ok: bool, detail: impl Into<String>) {
        self.record_with_output(stage, started, ok, detail, None);
    }

    /// [`Stages::record`] with the complete output of the command that
    /// failed the stage.
    pub fn record_with_output(
        &mut self,
        stage: Stage,
        started: Instant,
        ok: bool,
        detail: impl Into<String>,
        output: Option<String>,
    ) {
        let s = StageRecord {
            name: stage,
            ok,
            millis: started.elapsed().as_millis(),
            detail: detail.into(),
            output,
        };
        self.reporter.stage(&self.stack, &s);
        self.list.push(s);
    }
}
