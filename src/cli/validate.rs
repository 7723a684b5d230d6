//! `stackpin validate [DIR]`: every rule of SPEC §1 plus the promotion gate
//! against the repository's own verified markers. Reads files only.

use super::{Global, Status};
use crate::desired::{self, DirTree, Finding, Severity, Sink};
use crate::gate::{self, Verdict};
use anyhow::{Context, bail};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The desired-state repository directory (default: --repo, else ".").
    pub dir: Option<PathBuf>,
}

/// The gate verdict of every gated stack, as findings: a refusal is an error
/// (a PR that pins unverified production digests must fail), break-glass a
/// warning.
pub fn gate_findings(state: &desired::DesiredState) -> Vec<Finding> {
    let mut out = Vec::new();
    for (name, s) in &state.stacks {
        let promote = s.spec.promote_from.as_ref();
        let entries = promote
            .and_then(|p| state.verified.get(&p.stack))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let verdict = gate::promotion(promote, &s.pins, entries, s.break_glass_reason());
        let mut sink = Sink::new(Some(name), format!("stacks/{name}/stack.yaml"), &mut out);
        match verdict {
            Verdict::Refused { source, missing } => sink.error(
                "images",
                format!("not verified in `{source}`: {} (no single verified entry of {source} holds every pin)", missing.join(", ")),
                format!("deploy these digests to {source} first so verified/{source}.yaml lists them, or set `break_glass: {{reason: ...}}`"),
            ),
            Verdict::BreakGlass { reason, missing, .. } => sink.warn("break_glass", format!("break-glass skips the gate for {}: {reason}", missing.join(", ")), "remove break_glass once staging has verified these digests"),
            Verdict::NotGated | Verdict::Pass { .. } => {}
        }
    }
    out
}

/// The host powers each stack asks for, as warnings: whether a host runs
/// them is that host's decision (its `allow:` list), which a repository
/// check cannot know.
pub fn power_findings(state: &desired::DesiredState) -> Vec<Finding> {
    let mut out = Vec::new();
    for (name, s) in &state.stacks {
        let file = format!("stacks/{name}/{}", s.compose_file);
        let mut sink = Sink::new(Some(name), file, &mut out);
        for p in desired::powers::of(&s.compose) {
            sink.warn(
                p.field,
                format!("{} (power `{}`): hosts refuse it unless their config allows it for this stack", p.what, p.kind),
                format!("drop it, or have the host's operator add `allow: [{{stacks: [{name}], powers: [{}], reason: \"…\"}}]`", p.kind),
            );
        }
    }
    out
}

/// What `validate` read, when `dir` is in a git work tree: the files as
/// they are, which `plan` and `sync` (reading the committed tree) see only
/// once committed. `None` outside git.
fn what_was_read(dir: &std::path::Path) -> Option<String> {
    let repo = git2::Repository::discover(dir).ok()?;
    let head = repo
        .head()
        .ok()
        .and_then(|h| h.target())
        .map(|id| desired::short_id(&id.to_string()).to_string())
        .unwrap_or_else(|| "no commit yet".into());
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true).recurse_untracked_dirs(true);
    // Only what is under `dir` (a desired state may sit in a larger repo).
    let rel = repo
        .workdir()
        .and_then(|w| {
            dir.strip_prefix(w.canonicalize().ok()?)
                .ok()
                .map(|p| p.to_path_buf())
        })
        .filter(|p| !p.as_os_str().is_empty());
    if let Some(rel) = &rel {
        opts.pathspec(rel);
    }
    let changed = repo
        .statuses(Some(&mut opts))
        .map(|s| {
            s.iter()
                .filter(|e| !e.status().is_ignored() && e.status() != git2::Status::CURRENT)
                .count()
        })
        .unwrap_or(0);
    Some(if changed == 0 {
        format!(
            "desired state: the work tree of {}, the same as HEAD at {head}",
            dir.display()
        )
    } else {
        format!(
            "desired state: the work tree of {} — {changed} uncommitted change(s) on top of HEAD at {head}, which `plan` and `sync` do not see until committed",
            dir.display()
        )
    })
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<Status> {
    let dir = a
        .dir
        .or_else(|| g.repo.as_ref().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    if !dir.is_dir() {
        bail!(
            "{} is not a directory: pass the desired-state repository's path",
            dir.display()
        );
    }
    let dir = dir
        .canonicalize()
        .with_context(|| format!("failed to resolve {}", dir.display()))?;
    let state = desired::load(&DirTree::new(&dir));
    let mut findings = state.findings.clone();
    findings.extend(gate_findings(&state));
    findings.extend(power_findings(&state));
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    if g.json {
        super::print_json(&findings)?;
    } else {
        for f in &findings {
            println!("{f}");
        }
        let bad: std::collections::BTreeSet<&str> = findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .filter_map(|f| f.stack.as_deref())
            .collect();
        let total = state.stacks.len() + state.invalid.len();
        println!(
            "{}: {} stack(s), {} with errors; {} error(s), {} warning(s)",
            dir.display(),
            total,
            bad.len(),
            errors,
            findings.len() - errors
        );
        if let Some(said) = what_was_read(&dir) {
            eprintln!("{said}");
        }
    }
    Ok(if errors == 0 {
        Status::Ok
    } else {
        Status::Failed
    })
}
