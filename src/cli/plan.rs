//! `stackpin plan [STACK…]` (alias `diff`): per stack the action and why,
//! the gate verdict, a unified diff of every changed file between the
//! current release and the desired one (secrets in `.env` masked) and the
//! image changes. It changes nothing: it reads the host's files and, when the
//! engine answers, lists containers to see drift.

use super::setup::{self, Services};
use super::{Global, Status};
use crate::desired::DesiredState;
use crate::desired::image::ImageRef;
use crate::diff::{self, FileDiff};
use crate::host::LogReporter;
use crate::layout::Layout;
use crate::plan::{Action, Item};
use crate::reconcile::{PlanInputs, PlanOptions};
use crate::release;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Limit to these stacks.
    #[arg(value_parser = crate::desired::parse_stack_name, add = super::completions::stack_names())]
    pub stacks: Vec<String>,
    /// A break-glass reason, to see the gate verdict it would give.
    #[arg(long, value_name = "REASON")]
    pub break_glass: Option<String>,
    /// Exit 0 when there is nothing to do, 2 when a sync would change
    /// something (deploy, heal, remove), 1 on an error or when a stack is
    /// invalid, blocked by the gate or untrusted (as terraform's).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Also show the images and file differences of stacks not for this
    /// host (by default one line each).
    #[arg(long)]
    pub all_hosts: bool,
    /// Show digests and fingerprints whole (by default 12 hex digits).
    #[arg(long)]
    pub long: bool,
    #[command(flatten)]
    pub fetch: setup::FetchArg,
}

#[derive(Debug, Serialize)]
pub struct StackPlan {
    #[serde(flatten)]
    pub item: Item,
    pub current_release: Option<String>,
    pub current_version: Option<String>,
    pub desired_version: Option<String>,
    pub images: Vec<String>,
    pub files: Vec<FileDiff>,
    /// Set when drift could not be checked (no engine).
    pub note: Option<String>,
    /// Host-local files (env_files) this machine lacks: the diff was made
    /// as if they were empty, and a sync here would stop until they exist.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_here: Vec<String>,
    /// What the desired state's checks warn about this stack (a writable
    /// relative bind stackpin mounts read-only, …): the release runs with
    /// it as said.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<crate::desired::Finding>,
}

/// What `plan` shows of one item: the action, and the file and image
/// differences between the running release and the desired one.
fn stack_plan(
    layout: &Layout,
    desired: &DesiredState,
    inputs: &PlanInputs,
    item: Item,
) -> StackPlan {
    let name = item.stack.clone();
    let obs = &inputs.observed[&name];
    let note = obs
        .problems
        .iter()
        .find(|p| p.contains("cannot be listed"))
        .map(|_| "the Docker engine did not answer: drift was not checked".to_string());
    let cur_dir = obs.release.as_ref().map(|id| layout.release_dir(&name, id));
    let mut old = cur_dir
        .as_deref()
        .map(crate::release::read_tree)
        .unwrap_or_default();
    let mut files = Vec::new();
    let mut images = Vec::new();
    if let (Some(Ok(r)), Some(s)) = (inputs.rendered.get(&name), desired.stacks.get(&name)) {
        let public: BTreeSet<String> = s.spec.env.keys().cloned().collect();
        let mut new = r.files.clone();
        new.insert(
            release::ENV_FILE.into(),
            diff::mask_env(&r.env_file, &public).into_bytes(),
        );
        if let Some(env) = old.get_mut(release::ENV_FILE) {
            *env = diff::mask_env(&String::from_utf8_lossy(env), &public).into_bytes();
        }
        if !matches!(item.action, Action::Noop) {
            let secret: BTreeSet<String> = obs
                .meta
                .iter()
                .flat_map(|m| m.secret_files.iter())
                .chain(r.secret_files.iter())
                .cloned()
                .collect();
            files = diff::diff_trees(&old, &new, &secret);
        }
        let old_images = obs
            .meta
            .as_ref()
            .map(|m| m.images.clone())
            .unwrap_or_default();
        let new_images: BTreeMap<String, ImageRef> =
            s.pins.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        images = diff::image_changes(&old_images, &new_images)
            .iter()
            .map(|c| c.describe(obs.meta.as_ref().map(|m| m.version.as_str()), &s.version))
            .collect();
    }
    let here = !item.action.not_for_this_host();
    StackPlan {
        missing_here: match here {
            false => Vec::new(),
            true => inputs.missing_here.get(&name).cloned().unwrap_or_default(),
        },
        warnings: match here {
            false => Vec::new(),
            true => desired
                .findings
                .iter()
                .filter(|f| {
                    f.severity == crate::desired::Severity::Warning
                        && f.stack.as_deref() == Some(name.as_str())
                })
                .cloned()
                .collect(),
        },
        current_version: obs.meta.as_ref().map(|m| m.version.clone()),
        current_release: obs.release.clone(),
        desired_version: desired.stacks.get(&name).map(|s| s.version.clone()),
        item,
        images,
        files,
        note,
    }
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<Status> {
    if !a.detailed_exitcode {
        return plan(g, a).map(|_| Status::Ok);
    }
    match plan(g, a) {
        Ok(out) => Ok(detailed_status(&out)),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(Status::Failed)
        }
    }
}

/// `--detailed-exitcode`: a stack that cannot converge is an error (1),
/// a host-local file missing here included, else any change is 2, else 0.
fn detailed_status(out: &[StackPlan]) -> Status {
    let missing_here = out.iter().any(|p| !p.missing_here.is_empty());
    exit_status(out.iter().map(|p| &p.item), missing_here)
}

/// The exit status of a plan or a dry run (`--detailed-exitcode`, as
/// terraform's): 1 when a stack cannot converge (invalid, blocked by the
/// gate, untrusted; or a host-local file is missing here), else 2 when a
/// sync would change something, else 0. One rule for `plan` and `sync
/// --dry-run`.
pub fn exit_status<'a>(
    items: impl Iterator<Item = &'a Item> + Clone,
    missing_here: bool,
) -> Status {
    use crate::plan::Skip;
    let actions = || items.clone().map(|i| &i.action);
    if missing_here
        || actions().any(|a| {
            matches!(
                a,
                Action::Skip {
                    why: Skip::Invalid | Skip::Blocked | Skip::Untrusted
                }
            )
        })
    {
        Status::Failed
    } else if actions().any(|a| matches!(a, Action::Deploy | Action::Heal | Action::Remove)) {
        Status::Changes
    } else {
        Status::Ok
    }
}

fn plan(g: &Global, a: Args) -> anyhow::Result<Vec<StackPlan>> {
    let cfg = setup::config(g)?;
    let desired = setup::load(&cfg, a.fetch.mode())?;
    setup::known_stacks(&cfg, Some(&desired), &a.stacks)?;
    let layout = Layout::new(cfg.root.clone());
    let rt = setup::runtime()?;
    let out = rt.block_on(async {
        let services = Services::connect_or_offline(cfg).await?;
        let host = services.host(&LogReporter, setup::actor(&services.cfg));
        let inputs = PlanInputs::gather_preview(&host, &desired, &a.stacks).await;
        let opts = PlanOptions {
            break_glass: a.break_glass.clone(),
            ..Default::default()
        };
        let plan = inputs.plan(&host, &desired, &opts);
        anyhow::Ok(
            plan.items
                .into_iter()
                .map(|item| stack_plan(&layout, &desired, &inputs, item))
                .collect::<Vec<_>>(),
        )
    })?;
    if g.json {
        super::output::json(&out)?;
    } else {
        println!("desired state: {}", desired.source);
        for f in desired.errors() {
            println!("{}", super::output::lead(&f.to_string(), false));
        }
        for p in &out {
            use super::output::{Tone, paint};
            let word = match &p.item.action {
                Action::Noop => paint("no change", Tone::Quiet),
                Action::Deploy => paint("deploy", Tone::Good),
                Action::Heal => paint("heal", Tone::Good),
                Action::Remove => paint("remove", Tone::Busy),
                Action::Skip { why } if p.item.action.not_for_this_host() => {
                    paint(&format!("skip ({})", skip_name(why)), Tone::Quiet)
                }
                Action::Skip { why } => paint(&format!("skip ({})", skip_name(why)), Tone::Look),
            };
            println!("{}: {word} — {}", p.item.stack, p.item.reason);
            if !a.all_hosts && p.item.action.not_for_this_host() {
                continue;
            }
            for m in &p.missing_here {
                println!("  {}", crate::reconcile::inputs::missing_here_line(m));
            }
            for w in &p.warnings {
                println!("  warning: {}: {}: {}", w.file, w.field, w.message);
            }
            if let Some(v) = &p.item.verdict {
                println!("  gate: {}", v.describe());
            }
            let kept: Vec<&str> = p
                .item
                .services
                .iter()
                .filter(|c| c.change == "keep")
                .map(|c| c.service.as_str())
                .collect();
            for c in p.item.services.iter().filter(|c| c.change != "keep") {
                println!("  {} {}: {}", c.change, c.service, c.why.join("; "));
            }
            if !kept.is_empty() {
                println!("  keep running: {}", kept.join(", "));
            }
            if let Some(n) = &p.note {
                println!("  note: {n}");
            }
            for i in &p.images {
                println!("  image {i}");
            }
            for f in &p.files {
                for line in f.unified.lines() {
                    if a.long {
                        println!("  {line}");
                    } else {
                        println!("  {}", shorten_hex(line));
                    }
                }
            }
        }
        println!("{}", summary(&out));
    }
    Ok(out)
}

/// A skip's reason as `--json` names it (`not_for_this_host`).
fn skip_name(why: &crate::plan::Skip) -> String {
    serde_json::to_value(why)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The plan's last line: how many stacks take each action, what a sync
/// would change first (`plan: 3 to deploy (2 start-first), 1 blocked, 4 not
/// for this host, 1 unchanged`).
fn summary(out: &[StackPlan]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    let mut add = |what: String| match counts.iter_mut().find(|(w, _)| *w == what) {
        Some((_, n)) => *n += 1,
        None => counts.push((what, 1)),
    };
    let mut start_first = 0;
    for p in out {
        add(match &p.item.action {
            Action::Deploy => {
                if p.item.services.iter().any(|c| c.change == "start-first") {
                    start_first += 1;
                }
                "to deploy".into()
            }
            Action::Heal => "to heal".into(),
            Action::Remove => "to remove".into(),
            Action::Noop => "unchanged".into(),
            Action::Skip { why } => skip_name(why).replace('_', " "),
        });
    }
    let order = |w: &str| match w {
        "to deploy" => 0,
        "to heal" => 1,
        "to remove" => 2,
        "unchanged" => 9,
        "not for this host" => 8,
        _ => 5,
    };
    counts.sort_by_key(|(w, _)| order(w));
    if counts.is_empty() {
        return "plan: no stacks".into();
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(w, n)| match w.as_str() {
            "to deploy" if start_first > 0 => format!("{n} {w} ({start_first} start-first)"),
            _ => format!("{n} {w}"),
        })
        .collect();
    format!("plan: {}", parts.join(", "))
}

/// `line` with each run of exactly 64 lowercase hex digits (a sha256
/// digest or fingerprint) cut to its first 12 and `…`, for people: the
/// whole is in `--long` and `--json`.
fn shorten_hex(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let b = line.as_bytes();
    let hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    let mut i = 0;
    while i < b.len() {
        if hex(b[i]) && (i == 0 || !hex(b[i - 1])) {
            let end = (i..b.len()).find(|&j| !hex(b[j])).unwrap_or(b.len());
            if end - i == 64 {
                out.push_str(&line[i..i + 12]);
                out.push('…');
                i = end;
                continue;
            }
            out.push_str(&line[i..end]);
            i = end;
            continue;
        }
        let ch = line[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
mod shorten_tests {
    use super::shorten_hex;

    #[test]
    fn only_whole_64_hex_runs_are_cut() {
        let d = "8c889d307e8997fbccf027f7c2f3af17c6bfc963b0e76ece9c1910d20b9679e3";
        assert_eq!(
            shorten_hex(&format!("-    image: \"r/app@sha256:{d}\" → é")),
            "-    image: \"r/app@sha256:8c889d307e89…\" → é"
        );
        assert_eq!(shorten_hex(&format!("{d}0")), format!("{d}0"));
        assert_eq!(shorten_hex("commit 4f2a9c1"), "commit 4f2a9c1");
    }
}
