//! Manual rollback (SPEC §6 `stackpin rollback`): put a stack back on one of
//! its kept releases and hold it there, so that the next sync does not undo
//! it; `stackpin resume` lets git win again.
//!
//! [`releases`] reads what the host keeps (release directories, the history,
//! the quarantine and the verified marker) into [`ReleaseRow`]s; [`select`]
//! is the pure choice of the target among them; [`rollback`] executes it
//! through the one converge pipeline (`Op::Rollback`: pull → journal →
//! switch → up → smoke → record and hold, or revert to the release it came
//! from).

use crate::history::{self, Action, Entry, Status};
use crate::host::Host;
use crate::layout::Layout;
use crate::outcome::StackResult;
use crate::reconcile::{self, Op, Switch};
use crate::release::{self, ReleaseInfo};
use crate::state::LocalStore;
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

/// Which release to go back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Target {
    /// The Nth complete release before the current one, in time order (N ≥ 1).
    Steps(u32),
    /// A release id, or the newest release of a version.
    To(String),
    /// The newest release other than the current one that is known good.
    LastGood,
}

impl Target {
    pub fn describe(&self) -> String {
        match self {
            Target::Steps(n) => format!("--steps {n}"),
            Target::To(x) => format!("--to {x}"),
            Target::LastGood => "--last-good".into(),
        }
    }
}

/// What the history says about a release (the last deploy, rollback or
/// manual-rollback line of its version since it was created).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HistoryOutcome {
    Deployed,
    Failed,
    /// An automatic rollback (a later release failed smoke) landed here.
    #[serde(rename = "rolled-back-to")]
    RolledBackTo,
    RollbackFailed,
    ManualRollback,
    ManualRollbackFailed,
    /// No history line for it (history rotated, or made by hand).
    Unknown,
}

impl HistoryOutcome {
    /// The word `--list` shows; the same as in `--json`.
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryOutcome::Deployed => "deployed",
            HistoryOutcome::Failed => "failed",
            HistoryOutcome::RolledBackTo => "rolled-back-to",
            HistoryOutcome::RollbackFailed => "rollback-failed",
            HistoryOutcome::ManualRollback => "manual-rollback",
            HistoryOutcome::ManualRollbackFailed => "manual-rollback-failed",
            HistoryOutcome::Unknown => "unknown",
        }
    }
}

/// One kept release of a stack, as `rollback --list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRow {
    pub id: String,
    /// From `release.json`; the id's version part when it is unreadable.
    pub version: String,
    /// UTC time in the id, `yyyy-mm-dd hh:mm:ss`.
    pub created: Option<String>,
    pub fingerprint: Option<String>,
    /// `release.json` present and parsable: only these can be switched to.
    pub complete: bool,
    pub outcome: HistoryOutcome,
    /// A deploy, rollback or manual-rollback of it succeeded.
    pub succeeded: bool,
    pub current: bool,
    /// What `--steps 1` picks.
    pub previous: bool,
    /// Its version is the one in `releases/verified/<stack>.txt`.
    pub verified: bool,
    /// Its fingerprint is the stack's quarantined one.
    pub quarantined: bool,
}

impl ReleaseRow {
    /// It ran and passed: a successful deploy, rollback or manual rollback
    /// in the history, or — when the history says nothing of it (rotated,
    /// or made before stackpin) — its version is the verified one.
    pub fn known_good(&self) -> bool {
        self.succeeded || (self.verified && self.outcome == HistoryOutcome::Unknown)
    }
}

/// Why no target could be chosen; each names what exists instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error(
        "{stack} has no current release on this host, so there is nothing to roll back from (kept: {known})"
    )]
    NoCurrent { stack: String, known: String },
    #[error("--steps must be at least 1")]
    StepsZero,
    #[error(
        "--steps {steps} goes past the oldest kept release: {available} complete release(s) are older than the current one (kept: {known})"
    )]
    NotEnough {
        steps: u32,
        available: usize,
        known: String,
    },
    #[error("no kept release has the id or version `{wanted}` (kept: {known})")]
    NoMatch { wanted: String, known: String },
    #[error(
        "`{wanted}` is what runs now (release {id}); to go to an older release of the same version pass its id (kept: {known})"
    )]
    IsCurrent {
        wanted: String,
        id: String,
        known: String,
    },
    #[error(
        "release {id} is incomplete (no readable release.json) and cannot be switched to (kept: {known})"
    )]
    Incomplete { id: String, known: String },
    #[error(
        "no release other than the current one is known good (a successful deploy or rollback in the history, or the verified version, and not quarantined); kept: {known}"
    )]
    NoGood { known: String },
}

/// Failures of a rollback before it touched the host.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Select(#[from] SelectError),
    #[error("failed to read the releases of {stack}")]
    Release {
        stack: String,
        #[source]
        source: release::Error,
    },
    #[error("failed to take the lock of {stack}")]
    Lock {
        stack: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{stack} has an interrupted converge that could not be recovered: {why}; check the stack, then remove its journal"
    )]
    Journal { stack: String, why: String },
    /// The backup cannot be restored (none of that id, damaged, no release).
    #[error("{0}")]
    Backup(#[from] crate::backup::Error),
    #[error("failed to hold {stack} for the restore")]
    Hold {
        stack: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A refusal (exit 1) rather than an unexpected failure (exit 2).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Error::Select(_) | Error::Journal { .. } | Error::Backup(_)
        )
    }
}

/// `version (id)` of each row, oldest first, for error messages.
fn known(rows: &[ReleaseRow]) -> String {
    if rows.is_empty() {
        return "none".into();
    }
    rows.iter()
        .map(|r| {
            let mut marks = Vec::new();
            if r.current {
                marks.push("current");
            }
            if !r.complete {
                marks.push("incomplete");
            }
            if r.quarantined {
                marks.push("quarantined");
            }
            if marks.is_empty() {
                format!("{} ({})", r.version, r.id)
            } else {
                format!("{} ({}, {})", r.version, r.id, marks.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Chooses the release a rollback goes to. Pure: `rows` are the stack's
/// releases oldest first, as [`releases`] reads them.
///
/// # Errors
/// [`SelectError`] naming what is kept when nothing matches, when the match
/// is the current release or is incomplete.
pub fn select<'a>(
    stack: &str,
    rows: &'a [ReleaseRow],
    target: &Target,
) -> Result<&'a ReleaseRow, SelectError> {
    let known = || known(rows);
    let Some(cur) = rows.iter().position(|r| r.current) else {
        return Err(SelectError::NoCurrent {
            stack: stack.into(),
            known: known(),
        });
    };
    match target {
        Target::Steps(0) => Err(SelectError::StepsZero),
        Target::Steps(n) => {
            let older: Vec<&ReleaseRow> = rows[..cur].iter().filter(|r| r.complete).collect();
            older
                .len()
                .checked_sub(*n as usize)
                .map(|i| older[i])
                .ok_or(SelectError::NotEnough {
                    steps: *n,
                    available: older.len(),
                    known: known(),
                })
        }
        Target::To(wanted) => {
            let found = rows
                .iter()
                .find(|r| &r.id == wanted)
                .or_else(|| rows.iter().rev().find(|r| &r.version == wanted))
                .ok_or_else(|| SelectError::NoMatch {
                    wanted: wanted.clone(),
                    known: known(),
                })?;
            if found.current {
                Err(SelectError::IsCurrent {
                    wanted: wanted.clone(),
                    id: found.id.clone(),
                    known: known(),
                })
            } else if !found.complete {
                Err(SelectError::Incomplete {
                    id: found.id.clone(),
                    known: known(),
                })
            } else {
                Ok(found)
            }
        }
        Target::LastGood => rows
            .iter()
            .rev()
            .find(|r| r.complete && !r.current && !r.quarantined && r.known_good())
            .ok_or_else(|| SelectError::NoGood { known: known() }),
    }
}

/// The outcome of a release from the history lines of its version written
/// at or after its creation and before the next release of the same
/// version. Pure.
fn history_outcome<'a>(
    entries: impl Iterator<Item = &'a Entry>,
    created: Option<NaiveDateTime>,
    until: Option<NaiveDateTime>,
) -> (HistoryOutcome, bool) {
    let mut outcome = HistoryOutcome::Unknown;
    let mut succeeded = false;
    for e in entries {
        if created.is_some_and(|c| e.time < c) || until.is_some_and(|u| e.time >= u) {
            continue;
        }
        let ok = e.status == Status::Success;
        let o = match (&e.action, ok) {
            (Action::Deploy, true) => HistoryOutcome::Deployed,
            (Action::Deploy, false) => HistoryOutcome::Failed,
            (Action::Rollback, true) => HistoryOutcome::RolledBackTo,
            (Action::Rollback, false) => HistoryOutcome::RollbackFailed,
            (Action::ManualRollback, true) => HistoryOutcome::ManualRollback,
            (Action::ManualRollback, false) => HistoryOutcome::ManualRollbackFailed,
            _ => continue,
        };
        succeeded |= ok;
        outcome = o;
    }
    (outcome, succeeded)
}

/// Builds the rows from what the host keeps. Pure.
pub fn rows(
    list: &[ReleaseInfo],
    history: &[Entry],
    stack: &str,
    current: Option<&str>,
    verified: Option<&str>,
    quarantined: Option<&str>,
) -> Vec<ReleaseRow> {
    let version_of = |r: &ReleaseInfo| {
        r.meta
            .as_ref()
            .map(|m| m.version.clone())
            .or_else(|| release::parse_release_id(&r.id).map(|(v, _)| v))
            .unwrap_or_else(|| r.id.clone())
    };
    let mut out: Vec<ReleaseRow> = list
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let version = version_of(r);
            let created = r.created().map(|t| t.naive_utc());
            let until = list[i + 1..]
                .iter()
                .find(|n| version_of(n) == version)
                .and_then(|n| n.created())
                .map(|t| t.naive_utc());
            let (outcome, succeeded) = history_outcome(
                history
                    .iter()
                    .filter(|e| e.stack == stack && e.version == version),
                created,
                until,
            );
            let fingerprint = r.meta.as_ref().map(|m| m.fingerprint.clone());
            ReleaseRow {
                id: r.id.clone(),
                created: created.map(|t| t.format(history::TIME_FORMAT).to_string()),
                complete: r.complete,
                outcome,
                succeeded,
                current: current == Some(r.id.as_str()),
                previous: false,
                verified: verified == Some(version.as_str()),
                quarantined: fingerprint.is_some() && fingerprint.as_deref() == quarantined,
                fingerprint,
                version,
            }
        })
        .collect();
    if let Ok(prev) = select(stack, &out, &Target::Steps(1)).map(|r| r.id.clone())
        && let Some(r) = out.iter_mut().find(|r| r.id == prev)
    {
        r.previous = true;
    }
    out
}

/// The stack's kept releases, oldest first, with their history outcome and
/// which is current, previous, verified and quarantined. Reads only.
pub fn releases(
    layout: &Layout,
    store: &LocalStore,
    stack: &str,
) -> Result<Vec<ReleaseRow>, Error> {
    let err = |source| Error::Release {
        stack: stack.into(),
        source,
    };
    let list = release::list(layout, stack).map_err(err)?;
    let current = release::current(layout, stack).map_err(err)?;
    let verified = release::read_verified_txt(layout, stack).unwrap_or(None);
    let quarantined = store
        .quarantine(stack)
        .ok()
        .flatten()
        .map(|q| q.fingerprint);
    let hist = history::read(&layout.history()).unwrap_or_default();
    Ok(rows(
        &list,
        &hist.entries,
        stack,
        current.as_deref(),
        verified.as_deref(),
        quarantined.as_deref(),
    ))
}

/// The stack's lock, once an interrupted converge of it is recovered: an
/// operator's rollback or restore starts from a settled stack.
///
/// # Errors
/// The lock cannot be taken, or a journal is still there after recovery.
async fn lock_unjournaled(host: &Host<'_>, stack: &str) -> Result<crate::state::StackLock, Error> {
    if !matches!(host.store.journal(stack), Ok(None)) {
        reconcile::recover(host).await;
    }
    let lock = host.lock(stack).await.map_err(|source| Error::Lock {
        stack: stack.into(),
        source,
    })?;
    match host.store.journal(stack) {
        Ok(None) => Ok(lock),
        Ok(Some(j)) => Err(Error::Journal {
            stack: stack.into(),
            why: format!("{} to {} is still journaled", j.op, j.to),
        }),
        Err(why) => Err(Error::Journal {
            stack: stack.into(),
            why: why.to_string(),
        }),
    }
}

/// Rolls `stack` back to the release `target` selects and holds it there.
///
/// # Guarantees
/// Runs under the stack's lock. A refused selection or a failed pull leaves
/// the host untouched. A journal (op `rollback`, from the current release)
/// is written before the switch and cleared at the end, so a crash is
/// finished or reverted by [`reconcile::recover`]. On success
/// `current/<stack>.json` describes the target, the history gets
/// `manual-rollback | <version> | success | from <old version>` and the stack
/// is held (`manual rollback to <version>`). When the target fails its own
/// smoke, the release it came from is switched back, brought up and smoked,
/// the history gets `manual-rollback … | failed` and the stack is not held.
///
/// # Errors
/// [`Error`] when nothing was done: no such release, lock or read failures.
/// A rollback that ran and failed is an `Ok` result whose outcome is a
/// failure.
pub async fn rollback(host: &Host<'_>, stack: &str, target: &Target) -> Result<StackResult, Error> {
    let _lock = lock_unjournaled(host, stack).await?;
    let rows = releases(&host.layout, &host.store, stack)?;
    let to = select(stack, &rows, target)?.clone();
    let from = rows
        .iter()
        .find(|r| r.current)
        .cloned()
        .ok_or_else(|| SelectError::NoCurrent {
            stack: stack.into(),
            known: known(&rows),
        })?;
    let meta = release::read_meta(&host.layout.release_dir(stack, &to.id)).map_err(|source| {
        Error::Release {
            stack: stack.into(),
            source,
        }
    })?;
    tracing::info!(stack, from = %from.id, to = %to.id, "manual rollback");
    let sw = Switch {
        op: Op::Rollback,
        stack: stack.to_string(),
        environment: meta.environment.clone(),
        from: Some(from.id.clone()),
        target: reconcile::Target::Kept {
            id: to.id.clone(),
            meta: Box::new(meta),
        },
        notes: Vec::new(),
        resume_at: None,
        recovering: false,
        journal: None,
        restore: None,
    };
    Ok(reconcile::pipeline::converge(host, sw).await)
}

/// Restores backup `id` of `stack` (the runbooks' level-2 recovery): the
/// backup's release is put back if retention removed it, the stack is held,
/// then the one pipeline runs `Op::Restore`: pull → journal → stop the
/// release that runs → switch to the backup's release → put back its
/// volumes and databases → up → smoke → record (`restore` in the history)
/// and hold.
///
/// # Guarantees
/// A backup that cannot be restored (no such id, a checksum mismatch, no
/// release, a `url_file` database) is refused before anything changes. Once
/// the stack is stopped, a failure does not switch back: the release that
/// ran before may not fit the restored data. The stack stays held (the
/// hold is written before the stop) and the result says what to do; a
/// crash is reported the same way by the next run's recovery.
///
/// # Errors
/// [`Error`] when nothing was done. A restore that ran and failed is an
/// `Ok` result whose outcome is a failure.
pub async fn restore(host: &Host<'_>, stack: &str, id: &str) -> Result<StackResult, Error> {
    let _lock = lock_unjournaled(host, stack).await?;
    let opened = crate::backup::open(&host.layout.backups_dir(stack), stack, id)?;
    let releases = host.layout.releases_dir(stack);
    crate::fsutil::create_dir_all_synced(&releases)
        .map_err(|e| crate::backup::Error(format!("cannot create {}: {e}", releases.display())))?;
    let dir = crate::backup::reinstate_release(&releases, &opened)?;
    let to = opened.release_id().to_string();
    let meta = release::read_meta(&dir).map_err(|source| Error::Release {
        stack: stack.into(),
        source,
    })?;
    let from = release::current(&host.layout, stack).ok().flatten();
    host.hold_locked(stack, &format!("restoring backup {id}"), Some(to.clone()))
        .map_err(|source| Error::Hold {
            stack: stack.into(),
            source,
        })?;
    tracing::info!(stack, backup = id, from = ?from, to = %to, "restore");
    let sw = Switch {
        op: Op::Restore,
        stack: stack.to_string(),
        environment: meta.environment.clone(),
        from,
        target: reconcile::Target::Kept {
            id: to,
            meta: Box::new(meta),
        },
        notes: Vec::new(),
        resume_at: None,
        recovering: false,
        journal: None,
        restore: Some(Box::new(opened)),
    };
    Ok(reconcile::pipeline::converge(host, sw).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, succeeded: bool) -> ReleaseRow {
        ReleaseRow {
            id: id.into(),
            version: id.split("__").next().unwrap().into(),
            created: None,
            fingerprint: Some(format!("fp-{id}")),
            complete: true,
            outcome: if succeeded {
                HistoryOutcome::Deployed
            } else {
                HistoryOutcome::Failed
            },
            succeeded,
            current: false,
            previous: false,
            verified: false,
            quarantined: false,
        }
    }

    /// v1, v2, bad (failed, quarantined), v3 (current), as after a failed
    /// deploy of `bad` was reverted and v3 deployed on top.
    fn kept() -> Vec<ReleaseRow> {
        let mut rows = vec![
            row("v1__20260101T000000Z", true),
            row("v2__20260102T000000Z", true),
            row("bad__20260103T000000Z", false),
            row("v3__20260104T000000Z", true),
        ];
        rows[2].quarantined = true;
        rows[3].current = true;
        rows
    }

    fn pick(rows: &[ReleaseRow], t: Target) -> Result<String, SelectError> {
        select("app", rows, &t).map(|r| r.id.clone())
    }

    /// (what, rows, target, the id chosen or a part of the error).
    type Case<'a> = (&'a str, &'a [ReleaseRow], Target, Result<&'a str, &'a str>);

    /// The kept releases and variants of them the selection cases use.
    struct Variants {
        rows: Vec<ReleaseRow>,
        v2_again: Vec<ReleaseRow>,
        incomplete: Vec<ReleaseRow>,
        only_verified: Vec<ReleaseRow>,
        verified_but_failed: Vec<ReleaseRow>,
    }

    fn variants() -> Variants {
        let rows = kept();
        let mut v2_again = kept();
        v2_again.insert(2, row("v2__20260102T120000Z", true));
        let mut incomplete = kept();
        incomplete[1].complete = false;
        let mut only_verified = kept();
        for r in &mut only_verified {
            r.succeeded = r.current;
            r.outcome = HistoryOutcome::Unknown;
        }
        only_verified[0].verified = true;
        let mut verified_but_failed = only_verified.clone();
        verified_but_failed[0].outcome = HistoryOutcome::Failed;
        Variants {
            rows,
            v2_again,
            incomplete,
            only_verified,
            verified_but_failed,
        }
    }

    fn check(cases: Vec<Case>) {
        for (name, rows, target, want) in cases {
            let got = pick(rows, target);
            match (want, got) {
                (Ok(w), Ok(g)) => assert_eq!(g, w, "{name}"),
                (Err(w), Err(e)) => assert!(e.to_string().contains(w), "{name}: {e}"),
                (w, g) => panic!("{name}: wanted {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn target_selection_by_steps_and_name() {
        let Variants {
            rows,
            v2_again,
            incomplete,
            ..
        } = variants();
        let cases: Vec<Case> = vec![
            (
                "steps 1 is the release before",
                &rows,
                Target::Steps(1),
                Ok("bad__20260103T000000Z"),
            ),
            (
                "steps 2",
                &rows,
                Target::Steps(2),
                Ok("v2__20260102T000000Z"),
            ),
            (
                "steps 3",
                &rows,
                Target::Steps(3),
                Ok("v1__20260101T000000Z"),
            ),
            (
                "steps past the oldest",
                &rows,
                Target::Steps(4),
                Err("--steps 4 goes past the oldest kept release: 3 complete"),
            ),
            ("steps 0", &rows, Target::Steps(0), Err("at least 1")),
            (
                "steps skip incomplete",
                &incomplete,
                Target::Steps(2),
                Ok("v1__20260101T000000Z"),
            ),
            (
                "to by version",
                &rows,
                Target::To("v1".into()),
                Ok("v1__20260101T000000Z"),
            ),
            (
                "to by version: the newest of it",
                &v2_again,
                Target::To("v2".into()),
                Ok("v2__20260102T120000Z"),
            ),
            (
                "to by id",
                &v2_again,
                Target::To("v2__20260102T000000Z".into()),
                Ok("v2__20260102T000000Z"),
            ),
            (
                "to a quarantined one is the operator's call",
                &rows,
                Target::To("bad".into()),
                Ok("bad__20260103T000000Z"),
            ),
            (
                "to the current",
                &rows,
                Target::To("v3".into()),
                Err("`v3` is what runs now (release v3__20260104T000000Z)"),
            ),
            (
                "to unknown names what exists",
                &rows,
                Target::To("v9".into()),
                Err(
                    "no kept release has the id or version `v9` (kept: v1 (v1__20260101T000000Z), v2 (v2__20260102T000000Z), bad (bad__20260103T000000Z, quarantined), v3 (v3__20260104T000000Z, current))",
                ),
            ),
            (
                "to incomplete",
                &incomplete,
                Target::To("v2".into()),
                Err("release v2__20260102T000000Z is incomplete"),
            ),
        ];
        check(cases);
    }

    #[test]
    fn target_selection_of_the_last_good() {
        let Variants {
            rows,
            incomplete,
            only_verified,
            verified_but_failed,
            ..
        } = variants();
        let cases: Vec<Case> = vec![
            (
                "last good skips failed and quarantined",
                &rows,
                Target::LastGood,
                Ok("v2__20260102T000000Z"),
            ),
            (
                "last good skips incomplete",
                &incomplete,
                Target::LastGood,
                Ok("v1__20260101T000000Z"),
            ),
            (
                "last good by the verified version",
                &only_verified,
                Target::LastGood,
                Ok("v1__20260101T000000Z"),
            ),
            (
                "a verified version that failed here is not good",
                &verified_but_failed,
                Target::LastGood,
                Err("no release other than the current one is known good"),
            ),
            (
                "no last good",
                &rows[2..],
                Target::LastGood,
                Err("no release other than the current one is known good"),
            ),
            (
                "no current",
                &rows[..3],
                Target::Steps(1),
                Err("app has no current release on this host"),
            ),
        ];
        check(cases);
    }

    fn entry(time: &str, version: &str, action: &str, status: &str) -> Entry {
        Entry {
            time: NaiveDateTime::parse_from_str(time, history::TIME_FORMAT).unwrap(),
            stack: "app".into(),
            env: "test".into(),
            action: Action::from_word(action),
            version: version.into(),
            status: Status::from_word(status),
            notes: String::new(),
        }
    }

    fn info(id: &str, version: &str) -> ReleaseInfo {
        ReleaseInfo {
            id: id.into(),
            dir: std::path::PathBuf::from("/nonexistent").join(id),
            meta: Some(release::ReleaseMeta {
                marks_verified: false,
                keep_releases: None,
                secret_files: Vec::new(),
                engine: Default::default(),
                swarm_steps: Vec::new(),
                stack: "app".into(),
                release_id: id.into(),
                version: version.into(),
                environment: "test".into(),
                fingerprint: format!("fp-{id}"),
                commit: None,
                images: Default::default(),
                compose_files: vec![],
                created_at: String::new(),
            }),
            complete: true,
        }
    }

    #[test]
    fn rows_take_outcomes_from_the_history_window_of_each_release() {
        let list = vec![
            info("v1__20260101T000000Z", "v1"),
            info("v2__20260102T000000Z", "v2"),
            info("bad__20260103T000000Z", "bad"),
            // v1 again, with other files: its window starts here.
            info("v1__20260104T000000Z", "v1"),
        ];
        let hist = vec![
            entry("2026-01-01 00:00:05", "v1", "deploy", "success"),
            entry("2026-01-02 00:00:05", "v2", "deploy", "success"),
            entry("2026-01-03 00:00:20", "bad", "deploy", "failed"),
            entry("2026-01-03 00:00:30", "v2", "rollback", "success"),
            entry("2026-01-03 00:00:31", "v2", "hold", "success"),
            entry("2026-01-04 00:00:10", "v1", "deploy", "failed"),
            entry("2026-01-04 00:00:20", "v2", "manual-rollback", "success"),
        ];
        let mut other_stack = entry("2026-01-03 00:00:40", "bad", "deploy", "success");
        other_stack.stack = "other".into();
        let hist: Vec<Entry> = hist.into_iter().chain([other_stack]).collect();
        let rows = rows(
            &list,
            &hist,
            "app",
            Some("v2__20260102T000000Z"),
            Some("v1"),
            Some("fp-bad__20260103T000000Z"),
        );
        let got: Vec<(&str, HistoryOutcome, bool, bool, bool, bool, bool)> = rows
            .iter()
            .map(|r| {
                (
                    r.id.as_str(),
                    r.outcome,
                    r.succeeded,
                    r.current,
                    r.previous,
                    r.verified,
                    r.quarantined,
                )
            })
            .collect();
        use HistoryOutcome::*;
        assert_eq!(
            got,
            vec![
                (
                    "v1__20260101T000000Z",
                    Deployed,
                    true,
                    false,
                    true,
                    true,
                    false
                ),
                (
                    "v2__20260102T000000Z",
                    ManualRollback,
                    true,
                    true,
                    false,
                    false,
                    false
                ),
                (
                    "bad__20260103T000000Z",
                    Failed,
                    false,
                    false,
                    false,
                    false,
                    true
                ),
                (
                    "v1__20260104T000000Z",
                    Failed,
                    false,
                    false,
                    false,
                    true,
                    false
                ),
            ]
        );
        assert_eq!(rows[0].created.as_deref(), Some("2026-01-01 00:00:00"));
        for o in [
            Deployed,
            Failed,
            RolledBackTo,
            RollbackFailed,
            ManualRollback,
            ManualRollbackFailed,
            Unknown,
        ] {
            assert_eq!(
                serde_json::to_value(o).unwrap(),
                o.as_str(),
                "--json and text agree"
            );
        }
        // --last-good from v2: the newer v1 failed although its version is
        // the verified one, and `bad` is quarantined: the first v1.
        assert_eq!(
            select("app", &rows, &Target::LastGood).unwrap().id,
            "v1__20260101T000000Z"
        );
    }
}
