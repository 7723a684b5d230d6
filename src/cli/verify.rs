//! `stackpin verify STACK [VERSION]`: records by hand that a release this
//! host has is verified (the runbooks' `echo sha-… > verified/<stack>.txt`),
//! with the release's own pins from its `release.json`. The entry goes to the
//! host's verified store, `verified/<stack>.txt` names it, history records
//! `verify`, and, when `verified.publish` is on, it is published to git.
//!
//! It runs in-process under the stack's lock (the daemon's converges take
//! the same lock) and never needs the Docker engine.

use super::setup;
use super::{Global, Status};
use crate::history::{self, Action, Entry};
use crate::layout::Layout;
use crate::publish::{Publisher, Settings};
use crate::release;
use crate::state::LocalStore;
use anyhow::Context as _;
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The stack whose release is verified.
    #[arg(value_parser = crate::desired::parse_stack_name, add = super::completions::stack_names())]
    pub stack: String,
    /// The version to verify: the newest kept release with this version
    /// (default: the current release).
    #[arg(value_name = "VERSION")]
    pub release_version: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    stack: String,
    version: String,
    release: String,
    /// False when the store already had this version with these images.
    added: bool,
    entry: crate::desired::spec::VerifiedEntry,
    /// What publishing did, when `verified.publish` is on.
    published: Option<crate::publish::Published>,
    /// Why publishing failed (the marker stays pending for the next run).
    publish_error: Option<String>,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<Status> {
    let cfg = setup::config(g)?;
    setup::known_stacks(
        &cfg,
        setup::load_desired(&cfg).ok().as_ref(),
        std::slice::from_ref(&a.stack),
    )?;
    let layout = Layout {
        root: cfg.root.clone(),
    };
    let store = LocalStore::new(&cfg.root);
    let lock = store
        .lock(&a.stack)
        .with_context(|| format!("failed to take the lock of {}", a.stack))?;
    let releases = release::list(&layout, &a.stack)?;
    let current = release::current(&layout, &a.stack)?;
    let chosen = match &a.release_version {
        None => releases.iter().find(|r| Some(&r.id) == current.as_ref()),
        Some(v) => releases
            .iter()
            .rev()
            .filter(|r| r.complete)
            .find(|r| r.meta.as_ref().is_some_and(|m| &m.version == v)),
    };
    let Some(rel) = chosen else {
        let what = match &a.release_version {
            None => format!("{} has no current release on this host", a.stack),
            Some(v) => format!(
                "{} has no kept release with version {v} on this host (see `stackpin releases {}`)",
                a.stack, a.stack
            ),
        };
        eprintln!("error: {what}");
        return Ok(Status::Failed);
    };
    let Some(meta) = rel.meta.clone() else {
        eprintln!(
            "error: release {} of {} has no readable release.json, so its pins are unknown",
            rel.id, a.stack
        );
        return Ok(Status::Failed);
    };
    if let Some(why) = failed_smoke(&store, &layout, &a.stack, &rel.id, &meta)? {
        eprintln!(
            "error: release {} of {} failed smoke on this host ({why}); it cannot be verified",
            rel.id, a.stack
        );
        return Ok(Status::Failed);
    }
    let policy = crate::policy::HostPolicy::load(&cfg.file)?;
    let (entry, added) = crate::verified::record(
        &layout,
        &cfg.host,
        &a.stack,
        &meta.version,
        &meta.images,
        meta.commit.as_deref(),
        policy.signing_key.as_ref(),
    )?;
    let notes = if added {
        format!("verified by hand: release {}", rel.id)
    } else {
        format!("verified by hand: release {} (already verified)", rel.id)
    };
    history::append(
        &layout.history(),
        &Entry::now(
            &a.stack,
            &meta.environment,
            Action::Verify,
            &meta.version,
            history::Status::Success,
            notes,
        ),
    )
    .with_context(|| format!("failed to append to {}", layout.history().display()))?;
    // The marker is recorded: the stack's lock is not held while pushing
    // (a slow remote would stall every deploy of the stack meanwhile).
    drop(lock);
    // Publishing is best effort here too: the marker is recorded on the host
    // either way, and a running daemon publishes what is still pending.
    let (published, publish_error) = match Settings::from_config(&cfg)? {
        None => (None, None),
        Some(s) => match Publisher::new(s).publish_stack(&layout, &a.stack) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e.to_string())),
        },
    };
    let report = Report {
        stack: a.stack.clone(),
        version: meta.version.clone(),
        release: rel.id.clone(),
        added,
        entry,
        published,
        publish_error,
    };
    if g.json {
        super::output::json(&report)?;
    } else {
        println!(
            "{} {} is verified on {} (release {}){}",
            report.stack,
            report.version,
            cfg.host,
            report.release,
            if added { "" } else { "; it already was" }
        );
        if let Some(p) = &report.published {
            match &p.commit {
                Some(c) => println!("published to git: commit {c}"),
                None => println!("published to git: already there"),
            }
        }
        if let Some(e) = &report.publish_error {
            eprintln!(
                "warning: {e}; the marker is recorded on this host and is published at the next run"
            );
        }
    }
    Ok(Status::Ok)
}

/// Why this release must not be verified by hand: it is (or has the same
/// fingerprint as) the quarantined release, or history records that a
/// deploy of its version failed smoke after the release was created (a
/// release once reverted stays failed even after another failure replaced
/// the quarantine record; an older release of the same version that failed
/// does not count against this one).
///
/// # Errors
/// The quarantine or history cannot be read: unknown is not "never failed".
fn failed_smoke(
    store: &LocalStore,
    layout: &Layout,
    stack: &str,
    release_id: &str,
    meta: &crate::release::ReleaseMeta,
) -> anyhow::Result<Option<String>> {
    let q = store
        .quarantine(stack)
        .with_context(|| format!("failed to read the quarantine record of {stack}"))?;
    if let Some(q) = q
        && (q.release_id == release_id || q.fingerprint == meta.fingerprint)
    {
        return Ok(Some(q.reason));
    }
    let history = crate::history::read(&layout.history())
        .with_context(|| format!("failed to read {}", layout.history().display()))?;
    let created = release_id
        .rsplit_once("__")
        .and_then(|(_, t)| chrono::NaiveDateTime::parse_from_str(t, "%Y%m%dT%H%M%SZ").ok());
    let failed = history.for_stack(stack).rev().find(|e| {
        e.version == meta.version
            && e.is(
                crate::history::Action::Deploy,
                crate::history::Status::Failed,
            )
            && e.notes.contains("smoke failed")
            && created.is_none_or(|c| e.time >= c)
    });
    Ok(failed.map(|e| format!("{}: {}", e.time, e.notes)))
}
