//! `stackpin sync [STACK…] [--force] [--dry-run]`: one converge run.

use super::setup::{self, CliReporter};
use super::{Global, Status};
use crate::outcome::{Reason, StackResult};
use crate::reconcile::{self, SyncOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stacks to converge (default: every stack for this host).
    #[arg(value_parser = crate::desired::parse_stack_name, add = super::completions::stack_names())]
    pub stacks: Vec<String>,
    /// Retry a quarantined release and redeploy even when nothing changed.
    #[arg(long)]
    pub force: bool,
    /// Show what would happen without touching the host.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run, exit as `plan --detailed-exitcode`: 0 nothing to do,
    /// 2 a sync would change something, 1 a stack cannot converge.
    #[arg(long, requires = "dry_run")]
    pub detailed_exitcode: bool,
    /// Skip the promotion gate for this run, with the reason recorded in history.
    #[arg(long, value_name = "REASON")]
    pub break_glass: Option<String>,
    /// Deploy the named stacks although the desired commit rewrites the
    /// history they last deployed from (a reset or force-push); recorded in
    /// history with your name.
    #[arg(long)]
    pub accept_rewrite: bool,
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Show what would be removed without touching the host.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub fetch: setup::FetchArg,
}

/// `stackpin prune`: stops and unlinks the stacks that run on this host but
/// left the desired state (whatever `prune:` in stackpin.yaml says).
pub fn prune(g: &Global, a: PruneArgs) -> anyhow::Result<Status> {
    let cfg = setup::config(g)?;
    let desired = setup::load(&cfg, a.fetch.mode())?;
    setup::say_what_was_read(g, &desired);
    let layout = crate::layout::Layout {
        root: cfg.root.clone(),
    };
    let orphans: Vec<String> = crate::observed::stacks_on_host(&layout)
        .into_iter()
        .filter(|s| !desired.stacks.contains_key(s) && !desired.invalid.contains(s))
        // Only what still runs: a pruned stack keeps its releases, not its link.
        .filter(|s| std::fs::symlink_metadata(layout.stack_link(s)).is_ok())
        .collect();
    if orphans.is_empty() {
        if !g.json {
            println!("nothing to prune: every stack on this host is in the desired state");
        } else {
            println!("[]");
        }
        return Ok(Status::Ok);
    }
    let rt = setup::runtime()?;
    rt.block_on(async {
        let services = setup::connect(cfg).await?;
        let reporter = CliReporter::new(g.json || g.quiet);
        let host = services.host(&reporter, setup::actor(&services.cfg));
        let opts = SyncOptions {
            dry_run: a.dry_run,
            only: orphans,
            prune: Some(true),
            concurrency: 1,
            ..Default::default()
        };
        let results = reconcile::sync(&host, &desired, &opts).await.results;
        print_results(g, &results)?;
        Ok(if results.iter().any(|r| r.outcome.is_failure()) {
            Status::Failed
        } else {
            Status::Ok
        })
    })
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<Status> {
    let cfg = setup::config(g)?;
    if let Some(r) = &a.break_glass
        && r.trim().is_empty()
    {
        return Err(setup::BadInput("--break-glass needs a reason".into()).into());
    }
    if a.accept_rewrite && a.stacks.is_empty() {
        return Err(setup::BadInput(
            "--accept-rewrite needs the stacks it accepts the rewrite for: stackpin sync STACK… --accept-rewrite".into(),
        )
        .into());
    }
    let me = crate::control::current_user();
    // A running daemon executes it, so that one executor acts on the host:
    // asked before anything is read here, since the daemon fetches and
    // checks the stack names itself. Run here, the break-glass names this
    // process's user; sent to the daemon, the daemon names the socket peer
    // (SO_PEERCRED) itself.
    let req = crate::control::Request::Sync {
        root: cfg.root.clone(),
        stacks: a.stacks.clone(),
        force: a.force,
        dry_run: a.dry_run,
        break_glass: a.break_glass.clone(),
        accept_rewrite: a.accept_rewrite.then(|| me.clone()),
    };
    // `--detailed-exitcode` needs the plan items: computed here, as `plan`
    // computes them (a dry run changes nothing and takes no lock).
    let daemon = if a.detailed_exitcode {
        None
    } else {
        crate::control::call(&setup::control_socket(&cfg), &req)?
    };
    if let Some(resp) = daemon {
        if resp.error.is_some() {
            return Err(setup::daemon_refused(&resp));
        }
        if !g.json {
            eprintln!("(executed by the running daemon)");
        }
        print_results(g, &resp.results)?;
        let cannot_converge = |r: &StackResult| {
            a.dry_run
                && matches!(
                    r.reason,
                    Some(
                        Reason::InvalidSpec
                            | Reason::Unverified
                            | Reason::Untrusted
                            | Reason::PreflightFailed
                    )
                )
        };
        return Ok(
            if resp
                .results
                .iter()
                .any(|r| r.outcome.is_failure() || cannot_converge(r))
            {
                Status::Failed
            } else {
                Status::Ok
            },
        );
    }
    // Without a daemon, a remote repository is fetched first, as the daemon
    // does for an operator's sync.
    let desired = setup::load(&cfg, setup::Fetch::OrLast)?;
    setup::say_what_was_read(g, &desired);
    for f in desired.errors() {
        eprintln!("{f}");
    }
    setup::known_stacks(&cfg, Some(&desired), &a.stacks)?;
    let rt = setup::runtime()?;
    rt.block_on(async {
        let services = setup::connect(cfg).await?;
        let reporter = CliReporter::new(g.json || g.quiet);
        let host = services.host(&reporter, setup::actor(&services.cfg));
        let opts = SyncOptions {
            force: a.force,
            dry_run: a.dry_run,
            break_glass: a
                .break_glass
                .as_deref()
                .map(|r| crate::control::attribute(r, &me)),
            accept_rewrite: a.accept_rewrite.then(|| me.clone()),
            only: a.stacks.clone(),
            prune: None,
            concurrency: services.cfg.file.concurrency.unwrap_or(2),
        };
        let report = reconcile::sync(&host, &desired, &opts).await;
        let results = report.results;
        print_results(g, &results)?;
        if !a.dry_run {
            services
                .post_commit_statuses(desired.commit.as_deref(), &results)
                .await;
        }
        services.flush_events().await;
        if a.dry_run {
            // One rule with `plan`: a stack that cannot converge fails the
            // dry run; --detailed-exitcode also says whether it would change
            // something.
            return Ok(
                match super::plan::exit_status(
                    report.items.values(),
                    results
                        .iter()
                        .any(|r| r.reason == Some(Reason::PreflightFailed)),
                ) {
                    Status::Changes if !a.detailed_exitcode => Status::Ok,
                    s => s,
                },
            );
        }
        let failed =
            results.iter().any(|r| r.outcome.is_failure()) || desired.errors().next().is_some();
        Ok(if failed { Status::Failed } else { Status::Ok })
    })
}

fn print_results(g: &Global, results: &[StackResult]) -> anyhow::Result<()> {
    if g.json {
        super::output::json(results)?;
    } else {
        for r in results {
            let word = r.outcome.word();
            println!(
                "{:<24} {:<12} {:<20} {}",
                r.stack,
                word,
                r.version.as_deref().unwrap_or("-"),
                r.message
            );
        }
    }
    Ok(())
}
