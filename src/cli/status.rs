//! `stackpin status`: one row per stack — state, version, release, digest,
//! last change and why. Reads the host and the engine; changes nothing.

use super::setup::{self, Host};
use super::{Global, Status};
use crate::history;
use crate::observed;
use crate::plan::{self, Action, Skip};
use crate::reconcile::{self, LogReporter};
use crate::release::Layout;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Limit to these stacks.
    pub stacks: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub stack: String,
    pub state: &'static str,
    pub version: Option<String>,
    pub release: Option<String>,
    pub digest: Option<String>,
    pub last_change: Option<String>,
    pub reason: String,
    pub held: bool,
    pub quarantined: bool,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<Status> {
    let cfg = setup::config(g)?;
    let desired = if cfg.repo.is_some() {
        Some(setup::load_desired(&cfg)?)
    } else {
        None
    };
    let layout = Layout {
        root: cfg.root.clone(),
    };
    let hist = history::read(&layout.history()).unwrap_or_default();
    let rt = setup::runtime()?;
    let rows = rt.block_on(async {
        let host = Host::connect(cfg).await?;
        let ctx = host.context(&LogReporter);
        let mut names: BTreeSet<String> = observed::stacks_on_host(&layout);
        if let Some(d) = &desired {
            names.extend(d.stacks.keys().cloned());
            names.extend(d.invalid.iter().cloned());
        }
        names.retain(|n| a.stacks.is_empty() || a.stacks.contains(n));
        let mut rows = Vec::new();
        for name in names {
            let obs = observed::observe(&layout, &host.engine, &name).await;
            let hold = ctx.store.hold(&name).ok().flatten();
            let q = ctx.store.quarantine(&name).ok().flatten();
            let journal = ctx.store.journal(&name);
            let item = desired.as_ref().and_then(|d| {
                let mut fps = BTreeMap::new();
                if let Some(s) = d.stacks.get(&name)
                    && let Ok(r) = reconcile::render(s, d.commit.as_deref())
                {
                    fps.insert(name.clone(), r.fingerprint);
                }
                let local: BTreeMap<String, plan::LocalRecord> = [name.clone()]
                    .into_iter()
                    .chain(
                        d.stacks
                            .get(&name)
                            .and_then(|s| s.spec.promote_from.clone()),
                    )
                    .map(|n| {
                        let rec = plan::LocalRecord {
                            quarantined: ctx
                                .store
                                .quarantine(&n)
                                .ok()
                                .flatten()
                                .map(|q| q.fingerprint),
                            held: ctx.store.hold(&n).ok().flatten().map(|h| h.reason),
                            verified: ctx.verified_store(&n),
                        };
                        (n, rec)
                    })
                    .collect();
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
                ("Held", format!("held: {}", h.reason))
            } else if let Some(it) = &item {
                match &it.action {
                    Action::Noop => ("Converged", it.reason.clone()),
                    Action::Heal => ("Drifted", it.reason.clone()),
                    Action::Deploy => ("Progressing", it.reason.clone()),
                    Action::Remove => ("Progressing", it.reason.clone()),
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
                    Action::Skip { why } => (
                        if obs.release.is_some() {
                            "Converged"
                        } else {
                            "Absent"
                        },
                        format!("{why:?}: {}", it.reason),
                    ),
                }
            } else if obs.release.is_some() {
                (
                    "Converged",
                    "no desired state given (--repo): showing what runs".into(),
                )
            } else {
                ("Absent", String::new())
            };
            let meta = obs.meta.as_ref();
            rows.push(Row {
                stack: name.clone(),
                state,
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
        anyhow::Ok(rows)
    })?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let w = rows.iter().map(|r| r.stack.len()).max().unwrap_or(5).max(5);
        println!(
            "{:<w$}  {:<11}  {:<20}  {:<12}  {:<40}  REASON",
            "STACK", "STATE", "VERSION", "DIGEST", "LAST CHANGE"
        );
        for r in &rows {
            println!(
                "{:<w$}  {:<11}  {:<20}  {:<12}  {:<40}  {}",
                r.stack,
                r.state,
                r.version.as_deref().unwrap_or("-"),
                r.digest.as_deref().unwrap_or("-"),
                r.last_change.as_deref().unwrap_or("-"),
                r.reason
            );
        }
    }
    Ok(Status::Ok)
}
