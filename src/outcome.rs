//! The one vocabulary of what happened to a stack, shared by the pipeline,
//! `sync`'s output, `status`, the history, the metrics and the
//! notifications: the [`Stage`]s of a converge, the [`Reason`] a stage gives
//! when it fails (one each), how a stack's run ended ([`Outcome`]) and the
//! state an operator reads ([`State`]). Plain data: nothing here does I/O.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One step of the converge pipeline (SPEC §3). Each maps to exactly one
/// [`Reason`] when it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Render the release, disk space, external networks.
    Preflight,
    /// The pre-deploy backup.
    Backup,
    /// Write the release directory and check it with `compose config`.
    Release,
    /// Pull every pinned image by digest.
    Pull,
    /// Write the journal that makes a crash recoverable.
    Journal,
    /// Point the stack link at the target release.
    Switch,
    /// `compose up`.
    Up,
    /// The `update.reload` hooks (e.g. `nginx -s reload` in the router)
    /// after `up` replaced containers they route to.
    Reload,
    /// The smoke checks.
    Smoke,
    /// current.json, history, verified marker, retention.
    Record,
    /// Switch back to the previous release (the start of an auto-revert).
    Revert,
    /// Stop the running release's containers (a restore, before its data
    /// is replaced).
    Stop,
    /// Put a backup's volumes and databases back (a restore).
    Restore,
}

impl Stage {
    pub const ALL: [Stage; 13] = [
        Stage::Preflight,
        Stage::Backup,
        Stage::Release,
        Stage::Pull,
        Stage::Journal,
        Stage::Switch,
        Stage::Up,
        Stage::Reload,
        Stage::Smoke,
        Stage::Record,
        Stage::Revert,
        Stage::Stop,
        Stage::Restore,
    ];

    /// The reason a failure of this stage reports.
    pub fn reason(self) -> Reason {
        match self {
            Stage::Preflight => Reason::PreflightFailed,
            Stage::Backup => Reason::BackupFailed,
            Stage::Release => Reason::ReleaseFailed,
            Stage::Pull => Reason::PullFailed,
            Stage::Journal => Reason::JournalFailed,
            Stage::Switch => Reason::SwitchFailed,
            Stage::Up => Reason::UpFailed,
            Stage::Reload => Reason::ReloadFailed,
            Stage::Smoke => Reason::SmokeFailed,
            Stage::Record => Reason::RecordFailed,
            Stage::Revert => Reason::RevertFailed,
            Stage::Stop => Reason::StopFailed,
            Stage::Restore => Reason::RestoreFailed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Preflight => "preflight",
            Stage::Backup => "backup",
            Stage::Release => "release",
            Stage::Pull => "pull",
            Stage::Journal => "journal",
            Stage::Switch => "switch",
            Stage::Up => "up",
            Stage::Reload => "reload",
            Stage::Smoke => "smoke",
            Stage::Record => "record",
            Stage::Revert => "revert",
            Stage::Stop => "stop",
            Stage::Restore => "restore",
        }
    }

    /// Whether the stack link has moved once this stage has run: failures
    /// from here on leave the host on a release other than the one it ran.
    pub fn is_after_switch(self) -> bool {
        matches!(
            self,
            Stage::Up
                | Stage::Reload
                | Stage::Smoke
                | Stage::Record
                | Stage::Revert
                | Stage::Restore
        )
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a stack did not end converged. Every failing [`Stage`] gives its own
/// (see [`Stage::reason`]); the others come from the plan or the host.
/// In JSON snake_case like every enum value stackpin prints
/// (`preflight_failed`); text and metrics labels show [`Reason::as_str`]
/// (`PreflightFailed`). The old JSON spelling is still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The desired state of the stack has validation errors.
    #[serde(alias = "InvalidSpec")]
    InvalidSpec,
    #[serde(alias = "PreflightFailed")]
    PreflightFailed,
    /// The pre-deploy backup failed (and `backup.required` is not `false`).
    #[serde(alias = "BackupFailed")]
    BackupFailed,
    #[serde(alias = "ReleaseFailed")]
    ReleaseFailed,
    #[serde(alias = "PullFailed")]
    PullFailed,
    #[serde(alias = "JournalFailed")]
    JournalFailed,
    #[serde(alias = "SwitchFailed")]
    SwitchFailed,
    #[serde(alias = "UpFailed")]
    UpFailed,
    /// An `update.reload` hook failed after `up`.
    #[serde(alias = "ReloadFailed")]
    ReloadFailed,
    #[serde(alias = "SmokeFailed")]
    SmokeFailed,
    #[serde(alias = "RecordFailed")]
    RecordFailed,
    /// The new release failed; the previous one runs again.
    #[serde(alias = "RolledBack")]
    RolledBack,
    /// The previous release could not be brought back either.
    #[serde(alias = "RevertFailed")]
    RevertFailed,
    /// The promotion gate refused the pins.
    #[serde(alias = "Unverified")]
    Unverified,
    /// The desired commit does not satisfy the host's signature policy.
    #[serde(alias = "Untrusted")]
    Untrusted,
    #[serde(alias = "Quarantined")]
    Quarantined,
    #[serde(alias = "Held")]
    Held,
    /// A converge was interrupted (crash) and is being finished or reverted.
    #[serde(alias = "Interrupted")]
    Interrupted,
    /// The Docker engine stopped answering; the converge is finished later.
    #[serde(alias = "EngineUnavailable")]
    EngineUnavailable,
    /// The stack's lock could not be taken.
    #[serde(alias = "LockFailed")]
    LockFailed,
    /// A restore could not stop the release that ran.
    #[serde(alias = "StopFailed")]
    StopFailed,
    /// A restore could not put a backup's volumes or databases back.
    #[serde(alias = "RestoreFailed")]
    RestoreFailed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidSpec => "InvalidSpec",
            Reason::PreflightFailed => "PreflightFailed",
            Reason::BackupFailed => "BackupFailed",
            Reason::ReleaseFailed => "ReleaseFailed",
            Reason::PullFailed => "PullFailed",
            Reason::JournalFailed => "JournalFailed",
            Reason::SwitchFailed => "SwitchFailed",
            Reason::UpFailed => "UpFailed",
            Reason::ReloadFailed => "ReloadFailed",
            Reason::SmokeFailed => "SmokeFailed",
            Reason::RecordFailed => "RecordFailed",
            Reason::RolledBack => "RolledBack",
            Reason::RevertFailed => "RevertFailed",
            Reason::Unverified => "Unverified",
            Reason::Untrusted => "Untrusted",
            Reason::Quarantined => "Quarantined",
            Reason::Held => "Held",
            Reason::Interrupted => "Interrupted",
            Reason::EngineUnavailable => "EngineUnavailable",
            Reason::LockFailed => "LockFailed",
            Reason::StopFailed => "StopFailed",
            Reason::RestoreFailed => "RestoreFailed",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one stack's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing to do: the release is current and healthy.
    Unchanged,
    Deployed,
    Healed,
    /// The new release failed; the previous one runs again.
    RolledBack,
    Failed,
    Skipped,
    Blocked,
    /// Interrupted converge recovered.
    Recovered,
    /// `--dry-run`: what would happen, nothing done.
    Planned,
    /// Pruned: stopped and unlinked because it left the desired state.
    Removed,
}

impl Outcome {
    /// Whether the command should exit non-zero because of this stack.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::RolledBack | Outcome::Failed | Outcome::Blocked
        )
    }

    /// The word `sync` prints.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Unchanged => "unchanged",
            Outcome::Deployed => "deployed",
            Outcome::Healed => "healed",
            Outcome::RolledBack => "rolled-back",
            Outcome::Failed => "FAILED",
            Outcome::Skipped => "skipped",
            Outcome::Blocked => "blocked",
            Outcome::Recovered => "recovered",
            Outcome::Planned => "plan",
            Outcome::Removed => "removed",
        }
    }
}

/// A stack's state as operators see it (SPEC §6), plus `Absent` for a stack
/// that is neither running nor wanted here. In JSON snake_case
/// (`rolled_back`), in text and metrics labels [`State::as_str`]
/// (`RolledBack`); the old JSON spelling is still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    #[serde(alias = "Converged")]
    Converged,
    #[serde(alias = "Progressing")]
    Progressing,
    #[serde(alias = "Failed")]
    Failed,
    #[serde(alias = "RolledBack")]
    RolledBack,
    #[serde(alias = "Blocked")]
    Blocked,
    #[serde(alias = "Held")]
    Held,
    #[serde(alias = "Drifted")]
    Drifted,
    #[serde(alias = "Absent")]
    Absent,
}

impl State {
    /// The JSON spelling (`rolled_back`), for what machines read elsewhere
    /// (the status page's `data-state`).
    pub fn key(self) -> &'static str {
        match self {
            State::Converged => "converged",
            State::Progressing => "progressing",
            State::Failed => "failed",
            State::RolledBack => "rolled_back",
            State::Blocked => "blocked",
            State::Held => "held",
            State::Drifted => "drifted",
            State::Absent => "absent",
        }
    }

    pub const ALL: [State; 8] = [
        State::Converged,
        State::Progressing,
        State::Failed,
        State::RolledBack,
        State::Blocked,
        State::Held,
        State::Drifted,
        State::Absent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Converged => "Converged",
            State::Progressing => "Progressing",
            State::Failed => "Failed",
            State::RolledBack => "RolledBack",
            State::Blocked => "Blocked",
            State::Held => "Held",
            State::Drifted => "Drifted",
            State::Absent => "Absent",
        }
    }
}

/// A word that names no [`State`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a state (one of Converged, Progressing, Failed, RolledBack, Blocked, Held, Drifted, Absent)"
)]
pub struct UnknownState(pub String);

impl std::str::FromStr for State {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<State, UnknownState> {
        State::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Does what runs match what git wants here? The first of a stack's two
/// axes (as Argo CD's sync status), apart from whether it is healthy
/// ([`Health`]). In JSON snake_case, in text [`SyncStatus::as_str`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    /// What runs is what git wants.
    Synced,
    /// Git wants something else here (a deploy, a heal, a removal is due,
    /// or the last one failed).
    OutOfSync,
    /// An operator holds the stack where it is.
    Held,
    /// The gate refuses git's version (unverified, unsigned, invalid).
    Blocked,
    /// Git's version failed here and is not retried until it changes.
    Quarantined,
    /// `hosts:` leaves this stack to other hosts.
    NotForThisHost,
    /// No desired state to compare with.
    #[default]
    Unknown,
}

impl SyncStatus {
    pub const ALL: [SyncStatus; 7] = [
        SyncStatus::Synced,
        SyncStatus::OutOfSync,
        SyncStatus::Held,
        SyncStatus::Blocked,
        SyncStatus::Quarantined,
        SyncStatus::NotForThisHost,
        SyncStatus::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Synced => "Synced",
            SyncStatus::OutOfSync => "OutOfSync",
            SyncStatus::Held => "Held",
            SyncStatus::Blocked => "Blocked",
            SyncStatus::Quarantined => "Quarantined",
            SyncStatus::NotForThisHost => "NotForThisHost",
            SyncStatus::Unknown => "Unknown",
        }
    }
}

/// Is what runs healthy? The second axis: from the containers (or Swarm
/// tasks) and the last smoke, whatever git wants. In JSON snake_case, in
/// text [`Health::as_str`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Every service of the running release runs (and passes its
    /// healthcheck), or its smoke passed in the last run.
    Healthy,
    /// Something of the running release does not run, restarts or is
    /// unhealthy, or its last smoke failed.
    Degraded,
    /// A converge is under way, or a container is still starting.
    Progressing,
    /// Nothing of the stack runs here (never deployed, or removed).
    Missing,
    /// Not known now (the engine could not be asked).
    #[default]
    Unknown,
}

impl Health {
    pub const ALL: [Health; 5] = [
        Health::Healthy,
        Health::Degraded,
        Health::Progressing,
        Health::Missing,
        Health::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "Healthy",
            Health::Degraded => "Degraded",
            Health::Progressing => "Progressing",
            Health::Missing => "Missing",
            Health::Unknown => "Unknown",
        }
    }
}

/// One stage as it ran: for the stage lines on stderr, `sync --json` and the
/// duration metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRecord {
    pub name: Stage,
    pub ok: bool,
    pub millis: u128,
    /// One line: what the stage did, or why it failed (kept short: history
    /// and notifications show it).
    pub detail: String,
    /// For a stage that failed in a command (compose): everything it
    /// printed, masked (its last 4 KiB); for a failed smoke, the last log
    /// lines of the containers that failed it. For `--json`, the API and
    /// (its last lines) the terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// How one stack's run ended, with the stages it went through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackResult {
    pub stack: String,
    pub outcome: Outcome,
    pub reason: Option<Reason>,
    pub message: String,
    pub version: Option<String>,
    pub release: Option<String>,
    pub stages: Vec<StageRecord>,
}

impl StackResult {
    /// A result with no stages run.
    pub fn new(stack: &str, outcome: Outcome, reason: Option<Reason>, message: String) -> Self {
        StackResult {
            stack: stack.to_string(),
            outcome,
            reason,
            message,
            version: None,
            release: None,
            stages: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_stage_has_its_own_reason() {
        let reasons: HashSet<Reason> = Stage::ALL.iter().map(|s| s.reason()).collect();
        assert_eq!(reasons.len(), Stage::ALL.len());
        for s in Stage::ALL {
            assert!(
                s.reason().as_str().ends_with("Failed"),
                "{s}: {}",
                s.reason()
            );
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                s.as_str(),
                "JSON and text agree"
            );
        }
    }

    /// One casing for every enum value in JSON (issue 19: `rolled_back`,
    /// `PreflightFailed` and `Converged` were mixed): snake_case, while
    /// text keeps the names operators read; the old spellings still read.
    #[test]
    fn every_enum_value_is_snake_case_in_json() {
        let snake = |v: serde_json::Value| {
            let t = v.as_str().unwrap().to_string();
            assert!(t.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{t}");
            t
        };
        assert_eq!(
            snake(serde_json::to_value(Reason::PullFailed).unwrap()),
            "pull_failed"
        );
        assert_eq!(
            snake(serde_json::to_value(State::RolledBack).unwrap()),
            "rolled_back"
        );
        assert_eq!(
            snake(serde_json::to_value(Outcome::RolledBack).unwrap()),
            "rolled_back"
        );
        for s in State::ALL {
            let v = serde_json::to_value(s).unwrap();
            assert_eq!(snake(v.clone()), s.key());
            assert_eq!(serde_json::from_value::<State>(v).unwrap(), s);
            assert_eq!(
                serde_json::from_value::<State>(s.as_str().into()).unwrap(),
                s
            );
        }
        for s in Stage::ALL {
            snake(serde_json::to_value(s).unwrap());
            let r = s.reason();
            snake(serde_json::to_value(r).unwrap());
            assert_eq!(
                serde_json::from_value::<Reason>(r.as_str().into()).unwrap(),
                r
            );
        }
    }
}
