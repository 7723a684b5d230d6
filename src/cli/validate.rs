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
    /// Print the report as Markdown (a PR check's summary): each gated
    /// stack's verdict, then the findings. With an explicit --config, the
    /// gate is the host policy's and verified markers count only when
    /// signed by its `verifiers:`.
    #[arg(long)]
    pub gate: bool,
}

/// One gated stack's verdict, for the `--gate` report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GateRow {
    pub stack: String,
    pub source: String,
    pub verdict: Verdict,
    /// Verified entries left out: unsigned, or not by the host's verifiers.
    pub ignored: Vec<String>,
    /// Whether marker signatures were checked (a host config was given).
    pub signatures_checked: bool,
}

pub use crate::promote::gate_input;

/// Each gated stack's verdict (see [`gate_input`]).
pub fn gate_rows(
    state: &desired::DesiredState,
    policy: Option<&crate::policy::HostPolicy>,
) -> Vec<GateRow> {
    let mut out = Vec::new();
    for (name, s) in &state.stacks {
        let Some((promote, entries, ignored)) = gate_input(state, policy, name) else {
            continue;
        };
        out.push(GateRow {
            stack: name.clone(),
            source: promote.stack.clone(),
            verdict: gate::promotion(Some(&promote), &s.pins, &entries, s.break_glass_reason()),
            ignored,
            signatures_checked: policy.is_some(),
        });
    }
    out
}

/// The `--gate` report: a Markdown table of the gated stacks, then the
/// findings.
pub fn gate_report(rows: &[GateRow], findings: &[Finding]) -> String {
    let mut out = String::from("## stackpin: the production gate\n\n");
    if rows.is_empty() {
        out.push_str("No stack is gated (`promote_from`).\n");
    } else {
        out.push_str("| Stack | Promoted from | Verdict |\n|---|---|---|\n");
        for r in rows {
            let verdict = match &r.verdict {
                Verdict::Pass { version, .. } => {
                    format!("✅ every pin verified in `{}` entry `{version}`", r.source)
                }
                Verdict::Refused { missing, .. } => {
                    format!("❌ not verified: {}", missing.join(", "))
                }
                Verdict::BreakGlass { reason, .. } => format!("⚠️ break-glass: {reason}"),
                v @ Verdict::Soaking { .. } => format!("⏳ {}", v.describe()),
                Verdict::NotGated => "not gated".into(),
            };
            let sig = if r.signatures_checked {
                format!("; {} marker(s) ignored", r.ignored.len())
            } else {
                "; marker signatures not checked (no --config)".into()
            };
            out.push_str(&format!(
                "| `{}` | `{}` | {verdict}{sig} |\n",
                r.stack, r.source
            ));
        }
        for r in rows.iter().filter(|r| !r.ignored.is_empty()) {
            for why in &r.ignored {
                out.push_str(&format!("\n- `{}`: ignored {why}", r.stack));
            }
            out.push('\n');
        }
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    out.push_str(&format!(
        "\n### Findings: {errors} error(s), {} warning(s)\n\n",
        findings.len() - errors
    ));
    for f in findings {
        out.push_str(&format!("- {f}\n"));
    }
    out
}

/// The gate verdicts as findings: a refusal is an error (a PR that pins
/// unverified production digests must fail), break-glass a warning.
pub fn gate_findings(rows: &[GateRow]) -> Vec<Finding> {
    let mut out = Vec::new();
    for r in rows {
        let (name, verdict) = (&r.stack, r.verdict.clone());
        let mut sink = Sink::new(Some(name), format!("stacks/{name}/stack.yaml"), &mut out);
        match verdict {
            Verdict::Refused { source, missing } => sink.error(
                "images",
                format!("not verified in `{source}`: {} (no single verified entry of {source} holds every pin)", missing.join(", ")),
                format!("deploy these digests to {source} first so verified/{source}.yaml lists them, or set `break_glass: {{reason: ...}}`"),
            ),
            v @ Verdict::Soaking { .. } => sink.error(
                "images",
                v.describe(),
                "wait until the soak is over and the source host has published its soaked entry, then run the check again",
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
        let j = desired::powers::of_raw(&s.compose.value);
        for field in j.unknown {
            sink.error(
                field,
                "stackpin has not classified this service key, so every host refuses it (it cannot tell what the key gives the container on the host)",
                "remove it, or ask for it to be classified",
            );
        }
        for p in j.powers {
            sink.warn(
                p.field,
                format!("{} (power `{}`): hosts refuse it unless their config allows it for this stack", p.what, p.kind),
                format!("drop it, or have the host's operator add `allow: [{{stacks: [{name}], powers: [{}], reason: \"…\"}}]`", p.kind),
            );
        }
        for field in j.interpolated {
            sink.warn(
                field,
                "this security-relevant value is interpolated: each host judges its powers on the model compose resolves there, with that host's variables",
                "write the value out, so that a review sees what the container gets",
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
    // The host policy, only when a config was named: a PR runner has none.
    let policy = if super::setup::config_is_explicit() {
        let file = crate::config::load_file(&g.config, true)?;
        Some(crate::policy::HostPolicy::load(&file)?)
    } else {
        None
    };
    let rows = gate_rows(&state, policy.as_ref());
    let mut findings = state.findings.clone();
    findings.extend(gate_findings(&rows));
    findings.extend(power_findings(&state));
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    if a.gate {
        print!("{}", gate_report(&rows, &findings));
    } else if g.json {
        super::output::json(&findings)?;
    } else {
        for f in &findings {
            println!("{}", super::output::lead(&f.to_string(), false));
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
