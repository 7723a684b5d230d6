//! `stackpin rollback STACK (--steps N | --to VERSION|RELEASE-ID | --last-good)`
//! and `stackpin rollback STACK --list`: go back to a kept release and hold
//! the stack there; `stackpin resume STACK` lets git win again.

use super::setup::{self, CliReporter};
use super::{Global, Status};
use crate::control::{self, Request};
use crate::layout::Layout;
use crate::outcome::StackResult;
use crate::rollback::{self, Target};
use crate::state::LocalStore;

#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("what")
        .required(true)
        .args(["steps", "to", "target", "last_good", "list"])
))]
pub struct Args {
    /// The stack to roll back.
    #[arg(value_parser = crate::desired::parse_stack_name, add = super::completions::stack_names())]
    pub stack: String,
    /// Same as --to (the runbook's `rollback.sh STACK VERSION`).
    #[arg(value_name = "VERSION|RELEASE-ID")]
    pub target: Option<String>,
    /// Go back N complete releases before the current one, in time order.
    #[arg(long, value_name = "N")]
    pub steps: Option<u32>,
    /// A release id, or a version (its newest release).
    #[arg(long, value_name = "VERSION|RELEASE-ID")]
    pub to: Option<String>,
    /// The newest other release that deployed or rolled back successfully
    /// and is not quarantined.
    #[arg(long)]
    pub last_good: bool,
    /// List the kept releases, their outcome, and which is current,
    /// previous and verified.
    #[arg(long)]
    pub list: bool,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<Status> {
    let cfg = setup::config(g)?;
    setup::known_stacks(
        &cfg,
        setup::load_desired(&cfg).ok().as_ref(),
        std::slice::from_ref(&a.stack),
    )?;
    let target = match (&a.steps, a.to.as_ref().or(a.target.as_ref()), a.last_good) {
        _ if a.list => return list(g, cfg, &a.stack),
        (Some(n), _, _) => Target::Steps(*n),
        (_, Some(x), _) => Target::To(x.clone()),
        _ => Target::LastGood,
    };
    let req = Request::Rollback {
        root: cfg.root.clone(),
        stack: a.stack.clone(),
        target: target.clone(),
    };
    if let Some(status) = via_daemon(g, &cfg, &req)? {
        return Ok(status);
    }
    let rt = setup::runtime()?;
    rt.block_on(async {
        let services = setup::connect(cfg).await?;
        let reporter = CliReporter::new(g.json || g.quiet);
        let host = services.host(&reporter, setup::actor(&services.cfg));
        match rollback::rollback(&host, &a.stack, &target).await {
            Ok(r) => print_result(g, &r),
            Err(e) if e.is_refusal() => {
                eprintln!("error: {e}");
                Ok(Status::Failed)
            }
            Err(e) => Err(e.into()),
        }
    })
}

/// A running daemon executes an operator's rollback or restore, so that
/// one executor acts on the host: `Some` with the exit status when it did,
/// `None` when no daemon of this root answers (run it in this process).
pub(super) fn via_daemon(
    g: &Global,
    cfg: &crate::config::Config,
    req: &Request,
) -> anyhow::Result<Option<Status>> {
    let Some(resp) = control::call(&setup::control_socket(cfg), req)? else {
        return Ok(None);
    };
    if let Some(e) = resp.error {
        eprintln!("error: {e}");
        return Ok(Some(Status::Failed));
    }
    if !g.json {
        eprintln!("(executed by the running daemon)");
    }
    match resp.results.first() {
        Some(r) => print_result(g, r).map(Some),
        None => anyhow::bail!("the daemon answered without a result"),
    }
}

/// One stack's result, as a line or `--json`; exit 1 when it failed.
pub(super) fn print_result(g: &Global, r: &StackResult) -> anyhow::Result<Status> {
    if g.json {
        super::output::json(r)?;
    } else {
        println!("{}: {}", r.stack, r.message);
    }
    Ok(if r.outcome.is_failure() {
        Status::Failed
    } else {
        Status::Ok
    })
}

fn list(g: &Global, cfg: crate::config::Config, stack: &str) -> anyhow::Result<Status> {
    // Reads the host's files only: no engine needed.
    let layout = Layout { root: cfg.root };
    let store = LocalStore::new(&layout.root);
    let rows = rollback::releases(&layout, &store, stack)?;
    let hold = store.hold(stack).ok().flatten();
    if g.json {
        super::output::json(&rows)?;
        return Ok(Status::Ok);
    }
    super::output::releases(stack, &rows);
    if let Some(h) = hold {
        println!(
            "{stack} is held: {} (`stackpin resume {stack}` lets git win again)",
            h.reason
        );
    }
    Ok(Status::Ok)
}
