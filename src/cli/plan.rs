//! `stackpin plan [STACK…]` (alias `diff`): per stack the action and why,
//! the gate verdict, a unified diff of every changed file between the
//! current release and the desired one (secrets in `.env` masked) and the
//! image changes. It changes nothing: it reads the host's files and, when the
//! engine answers, lists containers to see drift.

use super::setup;
use super::{Global, Status};
use crate::diff::{self, FileDiff};
use crate::engine::Engine;
use crate::observed;
use crate::plan::{self, Action, Item};
use crate::reconcile;
use crate::release::{self, Layout};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Limit to these stacks.
    pub stacks: Vec<String>,
    /// A break-glass reason, to see the gate verdict it would give.
    #[arg(long, value_name = "REASON")]
    pub break_glass: Option<String>,
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
}

/// Reads every file of a release directory (relative paths).
fn read_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let (Ok(b), Ok(rel)) = (std::fs::read(&p), p.strip_prefix(dir)) {
                out.insert(rel.to_string_lossy().into_owned(), b);
            }
        }
    }
    out
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<Status> {
    let cfg = setup::config(g)?;
    let desired = setup::load_desired(&cfg)?;
    let layout = Layout {
        root: cfg.root.clone(),
    };
    let trust = setup::trust_policies(&cfg)?;
    let untrusted = reconcile::untrusted_environments(&trust, &desired);
    let rt = setup::runtime()?;
    let engine = rt.block_on(Engine::connect(&cfg.compose)).ok();
    let mut out = Vec::new();
    let names: BTreeSet<String> = desired
        .stacks
        .keys()
        .chain(desired.invalid.iter())
        .chain(observed::stacks_on_host(&layout).iter())
        .filter(|n| a.stacks.is_empty() || a.stacks.contains(n))
        .cloned()
        .collect();
    for name in &a.stacks {
        if !names.contains(name) {
            anyhow::bail!("stack `{name}` is neither in the desired state nor on this host");
        }
    }
    for name in desired
        .order()
        .into_iter()
        .chain(names.iter().cloned())
        .collect::<Vec<_>>()
    {
        if !names.contains(&name) || out.iter().any(|p: &StackPlan| p.item.stack == name) {
            continue;
        }
        let obs_files = observed::observe_files(&layout, &name);
        let (obs, note) = match &engine {
            Some(e) => (rt.block_on(observed::observe(&layout, e, &name)), None),
            None => (
                obs_files,
                Some("the Docker engine did not answer: drift was not checked".to_string()),
            ),
        };
        let rendered = desired
            .stacks
            .get(&name)
            .map(|s| reconcile::render(s, desired.commit.as_deref()));
        let mut fps = BTreeMap::new();
        if let Some(Ok(r)) = &rendered {
            fps.insert(name.clone(), r.fingerprint.clone());
        }
        let local = reconcile::local_records_for(&layout, &desired, &name);
        let observed_map: BTreeMap<String, plan::ObservedStack> =
            [(name.clone(), obs.for_plan())].into();
        let only = vec![name.clone()];
        let opts = plan::Options {
            host: &cfg.host,
            untrusted: Some(&untrusted),
            break_glass: a.break_glass.as_deref(),
            only: &only,
            prune: desired.repo.prune,
            ..Default::default()
        };
        let Some(mut item) = plan::plan(&desired, &fps, &observed_map, &local, &opts)
            .items
            .into_iter()
            .next()
        else {
            continue;
        };
        if let Some(Err(e)) = &rendered {
            item.reason = format!("{}; {e}", item.reason);
        }
        let cur_dir = obs.release.as_ref().map(|id| layout.release_dir(&name, id));
        let mut old = cur_dir.as_deref().map(read_tree).unwrap_or_default();
        let mut files = Vec::new();
        let mut images = Vec::new();
        if let (Some(Ok(r)), Some(s)) = (&rendered, desired.stacks.get(&name)) {
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
                files = diff::diff_trees(&old, &new);
            }
            let old_images = obs
                .meta
                .as_ref()
                .map(|m| m.images.clone())
                .unwrap_or_default();
            let new_images: BTreeMap<String, String> = s
                .pins
                .iter()
                .map(|(k, v)| (k.clone(), v.pinned().unwrap_or_default()))
                .collect();
            images = diff::image_changes(&old_images, &new_images)
                .iter()
                .map(|c| c.describe(obs.meta.as_ref().map(|m| m.version.as_str()), &s.version))
                .collect();
        }
        out.push(StackPlan {
            current_version: obs.meta.as_ref().map(|m| m.version.clone()),
            current_release: obs.release.clone(),
            desired_version: desired.stacks.get(&name).map(|s| s.version.clone()),
            item,
            images,
            files,
            note,
        });
    }
    if g.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for f in desired.errors() {
            println!("{f}");
        }
        for p in &out {
            let word = match &p.item.action {
                Action::Noop => "no change".to_string(),
                Action::Deploy => "deploy".into(),
                Action::Heal => "heal".into(),
                Action::Remove => "remove".into(),
                Action::Skip { why } => format!(
                    "skip ({})",
                    serde_json::to_value(why)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                ),
            };
            println!("{}: {word} — {}", p.item.stack, p.item.reason);
            if let Some(v) = &p.item.verdict {
                println!("  gate: {}", v.describe());
            }
            if let Some(n) = &p.note {
                println!("  note: {n}");
            }
            for i in &p.images {
                println!("  image {i}");
            }
            for f in &p.files {
                for line in f.unified.lines() {
                    println!("  {line}");
                }
            }
        }
    }
    Ok(Status::Ok)
}
