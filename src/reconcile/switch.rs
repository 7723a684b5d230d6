//! A switch and the records of its run: what the [`super::pipeline`] runs
//! ([`Switch`]: an [`Op`] to a [`Target`]), the state its stages share
//! ([`Run`]) and how it ends ([`Landed`], [`Failed`]). Below the pipeline
//! and the stages, so that neither imports the other for them.

use super::error::Error;
use crate::desired::Stack;
use crate::history::Action;
use crate::host::{Host, Stages};
use crate::outcome::{Stage, StageRecord};
use crate::release::{self, ReleaseMeta, Rendered};
use crate::state::Journal;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What a [`Switch`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A new release from the desired state.
    Deploy,
    /// `up` and smoke the release that runs, after drift.
    Heal,
    /// A manual rollback to a kept release (then held).
    Rollback,
    /// Back to the previous release after a failure.
    Revert,
    /// `stackpin restore`: a backup's release and data (then held).
    Restore,
}

impl Op {
    /// The stages of this op, in order.
    pub fn stages(self) -> &'static [Stage] {
        use Stage::*;
        match self {
            Op::Deploy => &[
                Preflight, Backup, Release, Pull, Journal, Switch, Up, Reload, Smoke, Record,
            ],
            Op::Heal => &[Up, Reload, Smoke, Record],
            Op::Rollback => &[Pull, Journal, Switch, Up, Reload, Smoke, Record],
            Op::Revert => &[Revert, Up, Reload, Smoke, Record],
            Op::Restore => &[
                Pull, Journal, Stop, Switch, Restore, Up, Reload, Smoke, Record,
            ],
        }
    }

    /// The history action this op writes.
    pub fn action(self) -> Action {
        match self {
            Op::Deploy | Op::Heal => Action::Deploy,
            Op::Rollback => Action::ManualRollback,
            Op::Revert => Action::Rollback,
            Op::Restore => Action::Restore,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Deploy => "deploy",
            Op::Heal => "heal",
            Op::Rollback => "rollback",
            Op::Revert => "revert",
            Op::Restore => "restore",
        }
    }

    /// The name of the fault-injection point after `stage` (see
    /// [`crate::fault`]), when there is one.
    pub fn fault_point(self, stage: Stage) -> Option<&'static str> {
        Some(match (self, stage) {
            (Op::Deploy, Stage::Release) => "after-create",
            (Op::Deploy, Stage::Pull) => "after-pull",
            (Op::Deploy, Stage::Journal) => "after-journal",
            (Op::Deploy, Stage::Switch) => "after-switch",
            (Op::Deploy, Stage::Up) => "after-up",
            (Op::Deploy, Stage::Smoke) => "after-smoke",
            (Op::Deploy, Stage::Record) => "after-record",
            (Op::Revert, Stage::Revert) => "revert-after-switch",
            (Op::Revert, Stage::Up) => "revert-after-up",
            (Op::Rollback, Stage::Switch) => "rollback-after-switch",
            (Op::Rollback, Stage::Record) => "rollback-after-hold",
            (Op::Restore, Stage::Restore) => "restore-after-data",
            _ => return None,
        })
    }
}

/// The release a [`Switch`] lands.
#[derive(Debug, Clone)]
pub enum Target {
    /// A release to create from the desired state (deploy).
    New {
        stack: Box<Stack>,
        rendered: Box<Rendered>,
        commit: Option<String>,
    },
    /// A release this host keeps (heal, rollback, revert, recovery).
    Kept { id: String, meta: Box<ReleaseMeta> },
}

/// One change of what a stack runs.
#[derive(Debug, Clone)]
pub struct Switch {
    pub op: Op,
    pub stack: String,
    pub environment: String,
    /// The release the link points at before (`None`: a first deploy). For
    /// a revert, the release that failed.
    pub from: Option<String>,
    pub target: Target,
    /// Why, for the history line: the gate verdict or BREAK_GLASS of a
    /// deploy, the drift of a heal, the failure a revert undoes.
    pub notes: Vec<String>,
    /// Resume at this stage (crash recovery: the stages before it ran).
    pub resume_at: Option<Stage>,
    /// An interrupted converge being finished: the success is reported as
    /// a recovery.
    pub recovering: bool,
    /// The journal of the converge, when one was written before this switch
    /// started (a revert or a recovery continues it).
    pub journal: Option<Journal>,
    /// The backup a restore puts back (`Op::Restore` only).
    pub restore: Option<Box<crate::backup::Opened>>,
}

impl Switch {
    /// The version of the target, for messages.
    pub fn version(&self) -> String {
        match &self.target {
            Target::New { stack, .. } => stack.version.clone(),
            Target::Kept { meta, .. } => meta.version.clone(),
        }
    }

    pub fn stages(&self) -> impl Iterator<Item = Stage> + '_ {
        let all = self.op.stages();
        let start = self
            .resume_at
            .and_then(|s| all.iter().position(|x| *x == s))
            .unwrap_or(0);
        all[start..].iter().copied()
    }
}

/// The mutable state of one run of the stages.
pub struct Run<'s, 'r> {
    pub sw: &'s Switch,
    /// The target release, once it exists.
    pub id: Option<String>,
    pub meta: Option<ReleaseMeta>,
    pub dir: Option<PathBuf>,
    /// Whether this run created the release (removed again when a stage
    /// before the switch fails).
    pub created: bool,
    pub journal: Option<Journal>,
    /// Notes the stages add (a backup that failed but was not required).
    pub notes: Vec<String>,
    pub stages: Stages<'r>,
    /// The services this run's `up` gave a new container (`None`: `up` did
    /// not run in this run, or could not tell); the reload stage reads it.
    pub recreated: Option<std::collections::BTreeSet<String>>,
}

/// A switch that landed: the target runs and passed smoke.
#[derive(Debug)]
pub struct Landed {
    pub release: String,
    pub meta: ReleaseMeta,
    pub stages: Vec<StageRecord>,
    pub notes: Vec<String>,
    pub journal: Option<Journal>,
}

/// A switch that stopped at a stage.
#[derive(Debug)]
pub struct Failed {
    pub stage: Stage,
    pub error: Error,
    /// The target release, when it exists.
    pub release: Option<String>,
    pub meta: Option<ReleaseMeta>,
    pub created: bool,
    pub stages: Vec<StageRecord>,
    pub notes: Vec<String>,
    pub journal: Option<Journal>,
}

/// The version of a kept release, for messages (its id when unreadable).
pub fn version_of(host: &Host<'_>, stack: &str, id: Option<&str>) -> String {
    let Some(id) = id else {
        return "-".into();
    };
    release::read_meta(&host.layout.release_dir(stack, id))
        .map(|m| m.version)
        .unwrap_or_else(|_| id.to_string())
}
