//! Per-stack status as operators see it (CLI `status`, the daemon's API and
//! metrics): the state of SPEC §6 with its reason. [`collect`] plans from
//! the one plan-input gathering; [`after_run`] derives the same rows from
//! a sync's own plan and results, so the daemon never plans twice. Reads
//! only.

use crate::desired::DesiredState;
use crate::history::{self, History};
use crate::host::Host;
use crate::observed::{self, StackObservation};
use crate::outcome::{Health, Outcome, Reason, StackResult, State, SyncStatus};
use crate::plan::{Action, Item, Skip};
use crate::reconcile::{PlanInputs, PlanOptions, SyncReport, inputs};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What the reconciler last published for the API and `/readyz`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub stacks: Vec<StackStatus>,
    /// The desired-state commit of the last run.
    pub commit: Option<String>,
    pub last_fetch_ok: Option<DateTime<Utc>>,
    /// The error of the last fetch, when it failed (cleared on success).
    pub last_fetch_error: Option<String>,
    /// The last force-push notice.
    pub forced_push: Option<String>,
    /// Which host this is (a fleet runs one daemon per host).
    pub host: HostInfo,
}

/// Which host a snapshot is of: what every page and `/api/v1/stacks` say
/// first.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct HostInfo {
    /// `host:` (or the machine's name).
    pub name: String,
    /// `labels:`, as `key=value`.
    pub labels: Vec<String>,
    /// stackpin's version.
    pub version: String,
    /// The engine and the compose it runs stacks with, as found at start.
    pub engine: String,
}

/// One stack's row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StackStatus {
    pub stack: String,
    /// The one word of both axes together (kept for scripts and
    /// `status --check`); [`StackStatus::sync`] and [`StackStatus::health`]
    /// say them apart.
    pub state: State,
    /// Does what runs match what git wants here?
    #[serde(default)]
    pub sync: SyncStatus,
    /// Is what runs healthy?
    #[serde(default)]
    pub health: Health,
    pub version: Option<String>,
    pub release: Option<String>,
    /// First 12 hex digits of the first image's digest.
    pub digest: Option<String>,
    pub last_change: Option<String>,
    pub reason: String,
    /// The reason code of the last run or of the plan (`PullFailed`,
    /// `Unverified`, …), when there is one.
    #[serde(default)]
    pub code: Option<Reason>,
    pub held: bool,
    pub quarantined: bool,
}

/// This host's records that decide a state beside the plan.
#[derive(Debug, Clone, Default)]
pub struct Records {
    /// A converge is journaled (under way, or interrupted).
    pub journaled: bool,
    /// Why the journal cannot be read.
    pub journal_error: Option<String>,
    pub hold: Option<String>,
    pub quarantine: Option<String>,
    /// The stack link points at a release.
    pub running: bool,
}

/// The state and its reason. Pure: from the plan item (before a run) or
/// the run's outcome (after it), and this host's records.
pub fn state_of(
    item: Option<&Item>,
    outcome: Option<&StackResult>,
    r: &Records,
) -> (State, String) {
    let running_or_absent = |reason: String| {
        if r.running {
            (State::Converged, reason)
        } else {
            (State::Absent, reason)
        }
    };
    if let Some(e) = &r.journal_error {
        return (State::Failed, e.clone());
    }
    if r.journaled {
        return (
            State::Progressing,
            "a converge is under way or was interrupted".into(),
        );
    }
    if let Some(h) = &r.hold {
        return (State::Held, format!("held: {h}"));
    }
    if let Some(res) = outcome {
        match res.outcome {
            Outcome::Deployed | Outcome::Healed | Outcome::Unchanged | Outcome::Recovered => {
                return (State::Converged, res.message.clone());
            }
            Outcome::RolledBack => return (State::RolledBack, res.message.clone()),
            Outcome::Failed => return (State::Failed, res.message.clone()),
            Outcome::Blocked => return (State::Blocked, res.message.clone()),
            Outcome::Removed => return (State::Absent, res.message.clone()),
            Outcome::Skipped | Outcome::Planned => {}
        }
        if res.reason == Some(Reason::LockFailed) {
            return (State::Progressing, res.message.clone());
        }
    }
    let Some(it) = item else {
        return running_or_absent(if r.running {
            "no desired state given: showing what runs".into()
        } else {
            String::new()
        });
    };
    let reason = it.reason.clone();
    match &it.action {
        Action::Noop => (State::Converged, reason),
        Action::Heal => (State::Drifted, reason),
        Action::Deploy | Action::Remove => (State::Progressing, reason),
        Action::Skip {
            why: Skip::Blocked | Skip::Untrusted,
        } => (State::Blocked, reason),
        Action::Skip {
            why: Skip::Quarantined,
        } => {
            let q = r.quarantine.clone().unwrap_or(reason);
            if r.running {
                (State::RolledBack, q)
            } else {
                (State::Failed, q)
            }
        }
        Action::Skip { why: Skip::Invalid } => (State::Failed, reason),
        Action::Skip { .. } => running_or_absent(reason),
    }
}

/// The sync axis: does what runs match what git wants here? Pure: from the
/// plan item (before a run) or the run's outcome (after it), and this
/// host's records.
pub fn sync_of(item: Option<&Item>, outcome: Option<&StackResult>, r: &Records) -> SyncStatus {
    if r.hold.is_some() {
        return SyncStatus::Held;
    }
    if let Some(res) = outcome {
        match res.outcome {
            Outcome::Deployed
            | Outcome::Healed
            | Outcome::Unchanged
            | Outcome::Recovered
            | Outcome::Removed => return SyncStatus::Synced,
            Outcome::Blocked => return SyncStatus::Blocked,
            Outcome::RolledBack | Outcome::Failed if r.quarantine.is_some() => {
                return SyncStatus::Quarantined;
            }
            Outcome::RolledBack | Outcome::Failed => return SyncStatus::OutOfSync,
            Outcome::Skipped | Outcome::Planned => {}
        }
    }
    let Some(it) = item else {
        return SyncStatus::Unknown;
    };
    match &it.action {
        Action::Noop => SyncStatus::Synced,
        Action::Heal | Action::Deploy | Action::Remove => SyncStatus::OutOfSync,
        Action::Skip { why } => match why {
            Skip::Blocked | Skip::Untrusted | Skip::Invalid => SyncStatus::Blocked,
            Skip::Quarantined => SyncStatus::Quarantined,
            Skip::Held => SyncStatus::Held,
            Skip::NotForThisHost => SyncStatus::NotForThisHost,
            Skip::Orphaned => SyncStatus::OutOfSync,
        },
    }
}

/// The health axis: is what runs healthy, whatever git wants? Pure: a
/// converge under way is `Progressing` and nothing running is `Missing`;
/// then the run's own verdict (a smoke that passed just now on what runs,
/// or a deploy that failed once it touched the containers); then `seen`,
/// the members as read before the run ([`crate::observed::StackObservation::members_health`]);
/// then what the plan saw (`Noop`: every service runs its release; `Heal`:
/// some do not). `Unknown` otherwise.
pub fn health_of(
    item: Option<&Item>,
    outcome: Option<&StackResult>,
    seen: Option<Health>,
    r: &Records,
) -> Health {
    if r.journaled {
        return Health::Progressing;
    }
    if !r.running {
        return Health::Missing;
    }
    if let Some(res) = outcome {
        match (res.outcome, res.reason) {
            (Outcome::Deployed | Outcome::Healed | Outcome::Recovered | Outcome::RolledBack, _) => {
                return Health::Healthy;
            }
            (
                Outcome::Failed,
                Some(Reason::UpFailed | Reason::SmokeFailed | Reason::RevertFailed),
            ) => return Health::Degraded,
            _ => {}
        }
    }
    if let Some(h) = seen {
        return h;
    }
    match item.map(|i| &i.action) {
        Some(Action::Noop) => Health::Healthy,
        Some(Action::Heal) => Health::Degraded,
        _ => Health::Unknown,
    }
}

/// Everything a row says about a stack beyond its records: the state and
/// its reason, the reason code, and the two axes.
struct Judged {
    state: State,
    reason: String,
    code: Option<Reason>,
    sync: SyncStatus,
    health: Health,
}

fn judge(
    item: Option<&Item>,
    outcome: Option<&StackResult>,
    seen: Option<Health>,
    r: &Records,
) -> Judged {
    let (state, reason) = state_of(item, outcome, r);
    Judged {
        state,
        reason,
        code: code_of(item, outcome),
        sync: sync_of(item, outcome, r),
        health: health_of(item, outcome, seen, r),
    }
}

/// The reason code a row shows: the run's, else what the plan waits on.
pub fn code_of(item: Option<&Item>, outcome: Option<&StackResult>) -> Option<Reason> {
    if let Some(r) = outcome.and_then(|o| o.reason) {
        return Some(r);
    }
    match &item?.action {
        Action::Skip { why } => match why {
            Skip::Blocked => Some(Reason::Unverified),
            Skip::Untrusted => Some(Reason::Untrusted),
            Skip::Quarantined => Some(Reason::Quarantined),
            Skip::Held => Some(Reason::Held),
            Skip::Invalid => Some(Reason::InvalidSpec),
            Skip::NotForThisHost | Skip::Orphaned => None,
        },
        _ => None,
    }
}

fn records(host: &Host<'_>, name: &str, obs: &StackObservation) -> Records {
    let journal = host.store.journal(name);
    Records {
        journaled: matches!(journal, Ok(Some(_))),
        journal_error: journal.err().map(|e| e.to_string()),
        hold: match host.store.hold(name) {
            Ok(h) => h.map(|h| h.reason),
            Err(e) => Some(format!("{e}; held until it is fixed")),
        },
        quarantine: host.store.quarantine(name).ok().flatten().map(|q| q.reason),
        running: obs.release.is_some(),
    }
}

fn row(
    host: &Host<'_>,
    name: &str,
    obs: &StackObservation,
    hist: &History,
    desired: Option<&DesiredState>,
    j: Judged,
    rec: &Records,
) -> StackStatus {
    let Judged {
        state,
        reason,
        code,
        sync,
        health,
    } = j;
    let meta = obs.meta.as_ref();
    let reason = match (state, host.store.hold(name).ok().flatten()) {
        (State::Held, Some(h)) => held_reason(host, &h, desired, name, meta),
        _ => reason,
    };
    let last = hist.entries.iter().rev().find(|e| e.stack == name);
    StackStatus {
        stack: name.to_string(),
        state,
        sync,
        health,
        version: meta.map(|m| m.version.clone()),
        release: obs.release.clone(),
        digest: meta
            .and_then(|m| m.images.values().next())
            .and_then(|r| r.digest_hex())
            .map(|h| h[..12.min(h.len())].to_string()),
        last_change: last.map(|e| {
            format!(
                "{} {} {} {}",
                e.time.format(history::TIME_FORMAT),
                e.action,
                e.version,
                e.status
            )
        }),
        reason,
        code,
        held: rec.hold.is_some(),
        quarantined: rec.quarantine.is_some(),
    }
}

/// Collects the status of every stack on the host and in `desired` (or of
/// `only`), planning with the one plan-input gathering.
pub async fn collect(
    host: &Host<'_>,
    desired: Option<&DesiredState>,
    only: &[String],
) -> Vec<StackStatus> {
    let hist = history::read(&host.layout.history()).unwrap_or_default();
    let mut rows = Vec::new();
    match desired {
        Some(d) => {
            let names: Vec<String> = inputs::all_names(host, d)
                .into_iter()
                .filter(|n| only.is_empty() || only.contains(n))
                .collect();
            if names.is_empty() {
                return rows;
            }
            let inputs = PlanInputs::gather(host, d, &names).await;
            let plan = inputs.plan(host, d, &PlanOptions::default());
            for name in &inputs.names {
                let obs = &inputs.observed[name];
                let item = plan.items.iter().find(|i| &i.stack == name);
                let rec = records(host, name, obs);
                let j = judge(item, None, obs.members_health(), &rec);
                rows.push(row(host, name, obs, &hist, desired, j, &rec));
            }
        }
        None => {
            for name in observed::stacks_on_host(&host.layout) {
                if !only.is_empty() && !only.contains(&name) {
                    continue;
                }
                let obs = observed::observe(&host.layout, host.engine, &name).await;
                let rec = records(host, &name, &obs);
                let j = judge(None, None, obs.members_health(), &rec);
                rows.push(row(host, &name, &obs, &hist, None, j, &rec));
            }
        }
    }
    rows.sort_by(|a, b| a.stack.cmp(&b.stack));
    rows
}

/// The rows of a sync run, from its own plan items and results: no second
/// plan, no engine call.
pub fn after_run(host: &Host<'_>, desired: &DesiredState, report: &SyncReport) -> Vec<StackStatus> {
    let hist = history::read(&host.layout.history()).unwrap_or_default();
    let mut rows: Vec<StackStatus> = Vec::new();
    for res in &report.results {
        if rows.iter().any(|r| r.stack == res.stack) {
            rows.retain(|r| r.stack != res.stack);
        }
        let obs = observed::observe_files(&host.layout, &res.stack);
        let rec = records(host, &res.stack, &obs);
        let item = report.items.get(&res.stack);
        let seen = report.seen.get(&res.stack).copied();
        let j = judge(item, Some(res), seen, &rec);
        rows.push(row(host, &res.stack, &obs, &hist, Some(desired), j, &rec));
    }
    rows.sort_by(|a, b| a.stack.cmp(&b.stack));
    rows
}

/// `held: <reason>` and how far git is ahead of what the stack is held on:
/// "held: manual rollback to v1; git wants v3 (2 commits ahead)".
fn held_reason(
    host: &Host<'_>,
    h: &crate::state::Hold,
    desired: Option<&DesiredState>,
    name: &str,
    running: Option<&crate::release::ReleaseMeta>,
) -> String {
    let base = format!("held: {}", h.reason);
    let Some((d, s)) = desired.and_then(|d| Some((d, d.stacks.get(name)?))) else {
        return base;
    };
    let Ok(r) = inputs::render(s, d.commit.as_deref(), host.secrets) else {
        return format!("{base}; git wants {} (not renderable here)", s.version);
    };
    if running.is_some_and(|m| m.fingerprint == r.fingerprint) {
        return format!("{base}; git agrees ({})", s.version);
    }
    let same_version = running.is_some_and(|m| m.version == s.version);
    let ahead = match (
        &d.repo_path,
        &d.commit,
        running.and_then(|m| m.commit.as_ref()),
    ) {
        (Some(repo), Some(want), Some(have)) => commits_ahead(repo, have, want),
        _ => None,
    };
    format!(
        "{base}; git wants {}{}{}",
        s.version,
        if same_version {
            " with other files or images"
        } else {
            ""
        },
        match ahead {
            Some(1) => " (1 commit ahead)".to_string(),
            Some(n) if n > 1 => format!(" ({n} commits ahead)"),
            _ => String::new(),
        }
    )
}

/// Commits reachable from `want` but not from `have`.
fn commits_ahead(repo: &std::path::Path, have: &str, want: &str) -> Option<usize> {
    let r = git2::Repository::open(repo).ok()?;
    let mut walk = r.revwalk().ok()?;
    walk.push(git2::Oid::from_str(want).ok()?).ok()?;
    walk.hide(git2::Oid::from_str(have).ok()?).ok()?;
    Some(walk.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(action: Action) -> Item {
        Item {
            stack: "s".into(),
            action,
            reason: "why".into(),
            fingerprint: None,
            verdict: None,
            services: Vec::new(),
            rewrite: None,
        }
    }

    #[test]
    fn state_table() {
        let running = Records {
            running: true,
            ..Default::default()
        };
        let absent = Records::default();
        let held = Records {
            hold: Some("manual".into()),
            ..running.clone()
        };
        let journaled = Records {
            journaled: true,
            ..running.clone()
        };
        let q = Records {
            quarantine: Some("smoke failed".into()),
            ..running.clone()
        };
        let res = |o: Outcome| StackResult::new("s", o, None, "msg".into());
        let cases: Vec<(Option<Item>, Option<StackResult>, &Records, State)> = vec![
            (Some(item(Action::Noop)), None, &running, State::Converged),
            (Some(item(Action::Heal)), None, &running, State::Drifted),
            (
                Some(item(Action::Deploy)),
                None,
                &running,
                State::Progressing,
            ),
            (
                Some(item(Action::Skip { why: Skip::Blocked })),
                None,
                &running,
                State::Blocked,
            ),
            (
                Some(item(Action::Skip {
                    why: Skip::Untrusted,
                })),
                None,
                &running,
                State::Blocked,
            ),
            (
                Some(item(Action::Skip {
                    why: Skip::Quarantined,
                })),
                None,
                &q,
                State::RolledBack,
            ),
            (
                Some(item(Action::Skip { why: Skip::Invalid })),
                None,
                &running,
                State::Failed,
            ),
            (
                Some(item(Action::Skip {
                    why: Skip::NotForThisHost,
                })),
                None,
                &absent,
                State::Absent,
            ),
            (Some(item(Action::Noop)), None, &held, State::Held),
            (
                Some(item(Action::Noop)),
                None,
                &journaled,
                State::Progressing,
            ),
            (None, None, &running, State::Converged),
            // After a run, the outcome wins over the item it acted on.
            (
                Some(item(Action::Deploy)),
                Some(res(Outcome::Deployed)),
                &running,
                State::Converged,
            ),
            (
                Some(item(Action::Deploy)),
                Some(res(Outcome::RolledBack)),
                &q,
                State::RolledBack,
            ),
            (
                Some(item(Action::Deploy)),
                Some(res(Outcome::Failed)),
                &absent,
                State::Failed,
            ),
            (
                Some(item(Action::Heal)),
                Some(res(Outcome::Healed)),
                &running,
                State::Converged,
            ),
            (
                Some(item(Action::Remove)),
                Some(res(Outcome::Removed)),
                &absent,
                State::Absent,
            ),
        ];
        for (i, o, r, want) in cases {
            assert_eq!(
                state_of(i.as_ref(), o.as_ref(), r).0,
                want,
                "{i:?} {o:?} {r:?}"
            );
        }
    }

    /// The two axes apart (issue 35): a stack reverted to its previous
    /// release runs healthily but is not what git wants; a stack never
    /// deployed is missing, not failed; drift is out of sync and degraded.
    #[test]
    fn sync_and_health_are_two_axes() {
        let running = Records {
            running: true,
            ..Default::default()
        };
        let q = Records {
            quarantine: Some("smoke failed".into()),
            ..running.clone()
        };
        let never = Records {
            quarantine: Some("smoke failed".into()),
            ..Default::default()
        };
        let absent = Records::default();
        let held = Records {
            hold: Some("manual".into()),
            ..running.clone()
        };
        let journaled = Records {
            journaled: true,
            ..running.clone()
        };
        let res = |o: Outcome, r: Option<Reason>| StackResult::new("s", o, r, "msg".into());
        let skip = |why: Skip| item(Action::Skip { why });
        use Health as H;
        use SyncStatus as S;
        type Case<'a> = (
            Option<Item>,
            Option<StackResult>,
            Option<Health>,
            &'a Records,
            S,
            H,
        );
        let cases: Vec<Case> = vec![
            (
                Some(item(Action::Deploy)),
                Some(res(Outcome::RolledBack, Some(Reason::RolledBack))),
                None,
                &q,
                S::Quarantined,
                H::Healthy,
            ),
            (
                Some(skip(Skip::Quarantined)),
                None,
                Some(H::Healthy),
                &q,
                S::Quarantined,
                H::Healthy,
            ),
            (
                Some(skip(Skip::Quarantined)),
                None,
                None,
                &never,
                S::Quarantined,
                H::Missing,
            ),
            (
                Some(item(Action::Heal)),
                None,
                None,
                &running,
                S::OutOfSync,
                H::Degraded,
            ),
            (
                Some(item(Action::Noop)),
                None,
                None,
                &running,
                S::Synced,
                H::Healthy,
            ),
            // What the members say wins over what the plan assumed.
            (
                Some(item(Action::Noop)),
                None,
                Some(H::Progressing),
                &running,
                S::Synced,
                H::Progressing,
            ),
            (
                Some(skip(Skip::Held)),
                None,
                Some(H::Healthy),
                &held,
                S::Held,
                H::Healthy,
            ),
            (
                Some(skip(Skip::Blocked)),
                None,
                None,
                &running,
                S::Blocked,
                H::Unknown,
            ),
            (
                Some(skip(Skip::NotForThisHost)),
                None,
                None,
                &absent,
                S::NotForThisHost,
                H::Missing,
            ),
            (
                Some(item(Action::Deploy)),
                None,
                None,
                &journaled,
                S::OutOfSync,
                H::Progressing,
            ),
            // A failed pull left the old release as it was: its health is
            // what was seen; a failed smoke left it degraded.
            (
                Some(item(Action::Deploy)),
                Some(res(Outcome::Failed, Some(Reason::PullFailed))),
                Some(H::Healthy),
                &running,
                S::OutOfSync,
                H::Healthy,
            ),
            (
                Some(item(Action::Deploy)),
                Some(res(Outcome::Failed, Some(Reason::SmokeFailed))),
                Some(H::Healthy),
                &running,
                S::OutOfSync,
                H::Degraded,
            ),
            (
                Some(item(Action::Deploy)),
                Some(res(Outcome::Deployed, None)),
                Some(H::Missing),
                &running,
                S::Synced,
                H::Healthy,
            ),
            (None, None, None, &running, S::Unknown, H::Unknown),
        ];
        for (i, o, seen, r, sync, health) in cases {
            assert_eq!(
                (
                    sync_of(i.as_ref(), o.as_ref(), r),
                    health_of(i.as_ref(), o.as_ref(), seen, r)
                ),
                (sync, health),
                "{i:?} {o:?} {seen:?} {r:?}"
            );
        }
    }
}
