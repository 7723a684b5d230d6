//! Per-stack status as operators see it (CLI `status`, the daemon's API and
//! metrics): the state of SPEC §6 with its reason, derived from the host's
//! files, the engine, this host's records and — when given — the desired
//! state. Reads only.

use crate::desired::DesiredState;
use crate::history;
use crate::observed;
use crate::plan::{self, Action, Skip};
use crate::reconcile::{self, Context};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One stack's row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StackStatus {
    pub stack: String,
    /// Converged, Progressing, Failed, RolledBack, Blocked, Held, Drifted, Absent.
    pub state: String,
    pub version: Option<String>,
    pub release: Option<String>,
    /// First 12 hex digits of the first image's digest.
    pub digest: Option<String>,
    pub last_change: Option<String>,
    pub reason: String,
    pub held: bool,
    pub quarantined: bool,
}

pub const STATES: &[&str] = &[
    "Converged",
    "Progressing",
    "Failed",
    "RolledBack",
    "Blocked",
    "Held",
    "Drifted",
    "Absent",
];

/// Collects the status of every stack on the host and in `desired`.
pub async fn collect(
    ctx: &Context<'_>,
    desired: Option<&DesiredState>,
    only: &[String],
) -> Vec<StackStatus> {
    let hist = history::read(&ctx.layout.history()).unwrap_or_default();
    let mut names: BTreeSet<String> = observed::stacks_on_host(&ctx.layout);
    if let Some(d) = desired {
        names.extend(d.stacks.keys().cloned());
        names.extend(d.invalid.iter().cloned());
    }
    names.retain(|n| only.is_empty() || only.contains(n));
    let untrusted = desired
        .map(|d| reconcile::trust_verdicts(ctx, d))
        .unwrap_or_default();
    let mut rows = Vec::new();
    for name in names {
        let obs = observed::observe(&ctx.layout, ctx.engine, &name).await;
        let hold = ctx.store.hold(&name).ok().flatten();
        let q = ctx.store.quarantine(&name).ok().flatten();
        let journal = ctx.store.journal(&name);
        let item = desired.and_then(|d| {
            let mut fps = BTreeMap::new();
            if let Some(s) = d.stacks.get(&name)
                && let Ok(r) = reconcile::render(s, d.commit.as_deref())
            {
                fps.insert(name.clone(), r.fingerprint);
            }
            let local = reconcile::local_records_for(&ctx.layout, d, &name);
            let only = vec![name.clone()];
            let observed: BTreeMap<String, plan::ObservedStack> =
                [(name.clone(), obs.for_plan())].into();
            plan::plan(
                d,
                &fps,
                &observed,
                &local,
                &plan::Options {
                    host: &ctx.host,
                    only: &only,
                    untrusted: Some(&untrusted),
                    ..Default::default()
                },
            )
            .items
            .into_iter()
            .next()
        });
        let last = hist.entries.iter().rev().find(|e| e.stack == name);
        let (state, reason): (&'static str, String) = if let Err(e) = &journal {
            ("Failed", e.clone())
        } else if matches!(journal, Ok(Some(_))) {
            (
                "Progressing",
                "a converge is under way or was interrupted".into(),
            )
        } else if let Some(h) = &hold {
            ("Held", held_reason(h, desired, &name, obs.meta.as_ref()))
        } else if let Some(it) = &item {
            match &it.action {
                Action::Noop => ("Converged", it.reason.clone()),
                Action::Heal => ("Drifted", it.reason.clone()),
                Action::Deploy | Action::Remove => ("Progressing", it.reason.clone()),
                Action::Skip { why: Skip::Blocked } => ("Blocked", it.reason.clone()),
                Action::Skip {
                    why: Skip::Quarantined,
                } => {
                    let r = q.as_ref().map(|q| q.reason.clone()).unwrap_or_default();
                    if obs.release.is_some() {
                        ("RolledBack", r)
                    } else {
                        ("Failed", r)
                    }
                }
                Action::Skip { why: Skip::Invalid } => ("Failed", it.reason.clone()),
                Action::Skip { .. } => (
                    if obs.release.is_some() {
                        "Converged"
                    } else {
                        "Absent"
                    },
                    it.reason.clone(),
                ),
            }
        } else if obs.release.is_some() {
            (
                "Converged",
                "no desired state given: showing what runs".into(),
            )
        } else {
            ("Absent", String::new())
        };
        let meta = obs.meta.as_ref();
        rows.push(StackStatus {
            stack: name.clone(),
            state: state.to_string(),
            version: meta.map(|m| m.version.clone()),
            release: obs.release.clone(),
            digest: meta
                .and_then(|m| m.images.values().next())
                .and_then(|r| r.split_once("@sha256:"))
                .map(|(_, h)| h[..12.min(h.len())].to_string()),
            last_change: last.map(|e| {
                format!(
                    "{} {} {} {}",
                    e.time.format("%Y-%m-%d %H:%M:%S"),
                    e.action,
                    e.version,
                    e.status
                )
            }),
            reason,
            held: hold.is_some(),
            quarantined: q.is_some(),
        });
    }
    rows
}

/// `held: <reason>` and how far git is ahead of what the stack is held on:
/// "held: manual rollback to v1; git wants v3 (2 commits ahead)".
fn held_reason(
    h: &crate::state::Hold,
    desired: Option<&DesiredState>,
    name: &str,
    running: Option<&crate::release::ReleaseMeta>,
) -> String {
    let base = format!("held: {}", h.reason);
    let Some((d, s)) = desired.and_then(|d| Some((d, d.stacks.get(name)?))) else {
        return base;
    };
    let Ok(r) = reconcile::render(s, d.commit.as_deref()) else {
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
