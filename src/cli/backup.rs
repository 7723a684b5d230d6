//! `stackpin backup STACK…` and `stackpin backup --all`: take a backup now
//! (see `crate::backup`). Runs in this process under each stack's lock, the
//! same lock a converge holds, so it never overlaps a deploy of the stack,
//! also while a daemon runs. Prints each backup directory on stdout.

use super::setup;
use super::{Global, Status};
use crate::desired::Stack;
use crate::host::LogReporter;
use crate::layout::Layout;
use crate::release;
use anyhow::Context as _;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stacks to back up (each must have `backup:` in its stack.yaml).
    #[arg(required_unless_present = "all", conflicts_with = "all", value_parser = crate::desired::parse_stack_name, add = super::completions::stack_names())]
    pub stacks: Vec<String>,
    /// Every stack of this host that has `backup:` and a deployed release
    /// (what `stackpin-backup.timer` runs).
    #[arg(long)]
    pub all: bool,
    /// Recorded in the manifest and history.
    #[arg(long, value_enum, default_value_t = Why::Manual)]
    pub reason: Why,
    #[command(flatten)]
    pub fetch: setup::FetchArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Why {
    Manual,
    Scheduled,
}

impl Why {
    fn as_str(self) -> &'static str {
        match self {
            Why::Manual => "manual",
            Why::Scheduled => "scheduled",
        }
    }
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<Status> {
    let cfg = setup::config(g)?;
    let desired = setup::load(&cfg, a.fetch.mode())?;
    setup::say_what_was_read(g, &desired);
    let layout = Layout {
        root: cfg.root.clone(),
    };
    let mut refused = false;
    let mut chosen: Vec<&Stack> = Vec::new();
    if a.all {
        chosen.extend(desired.stacks.values().filter(|s| {
            s.spec.backup.is_some()
                && s.runs_on(&cfg.host, &cfg.labels())
                && release::current(&layout, &s.name).ok().flatten().is_some()
        }));
        if chosen.is_empty() && !g.json {
            eprintln!("no stack on this host has `backup:` and a deployed release; nothing to do");
        }
    } else {
        for name in &a.stacks {
            match desired.stacks.get(name) {
                Some(s) if s.spec.backup.is_some() => chosen.push(s),
                Some(_) => {
                    eprintln!(
                        "error: stack `{name}` has no `backup:` in stacks/{name}/stack.yaml; add one (e.g. `backup: {{postgres: [{{container: db, user: app, databases: [app]}}]}}`)"
                    );
                    refused = true;
                }
                None if desired.invalid.contains(name) => {
                    eprintln!(
                        "error: stack `{name}` is invalid in the desired state; run `stackpin validate`"
                    );
                    refused = true;
                }
                None => {
                    let why = setup::known_stacks(&cfg, Some(&desired), std::slice::from_ref(name))
                        .err()
                        .map_or_else(
                            || format!("stack `{name}` is not in the desired state"),
                            |e| e.0,
                        );
                    eprintln!("error: {why}");
                    refused = true;
                }
            }
        }
    }
    let rt = setup::runtime()?;
    let (results, failed) = rt.block_on(async {
        let services = setup::connect(cfg).await?;
        let host = services.host(&LogReporter, setup::actor(&services.cfg));
        // Values of env files are masked in whatever the engine returns.
        for s in &chosen {
            if let Ok(r) = crate::reconcile::render(s, None, host.secrets) {
                host.engine.add_secrets(&r.secret_values);
            }
        }
        let mut results = Vec::new();
        let mut failed = false;
        for s in chosen {
            let _lock = host
                .store
                .lock(&s.name)
                .with_context(|| format!("failed to take the lock of {}", s.name))?;
            match crate::backup::run(&host, s, a.reason.as_str()).await {
                Ok(r) => {
                    if !g.json {
                        println!("{}", r.dir.display());
                    }
                    results.push(serde_json::json!({"stack": s.name, "ok": true, "backup": r}));
                }
                Err(e) => {
                    eprintln!("error: backup of {} failed: {e}", s.name);
                    results.push(
                        serde_json::json!({"stack": s.name, "ok": false, "error": e.to_string()}),
                    );
                    failed = true;
                }
            }
        }
        anyhow::Ok((results, failed))
    })?;
    if g.json {
        super::output::json(&results)?;
    }
    Ok(if failed || refused {
        Status::Failed
    } else {
        Status::Ok
    })
}
