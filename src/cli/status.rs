//! `stackpin status`: one row per stack — state, version, release, digest,
//! last change and why. Reads the host and the engine; changes nothing.

use super::setup::{self, Services};
use super::{Global, Status};
use crate::host::LogReporter;
use crate::status;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Limit to these stacks.
    #[arg(value_parser = crate::desired::parse_stack_name, add = super::completions::stack_names())]
    pub stacks: Vec<String>,
    /// Exit 1 when a stack is Failed, RolledBack or Blocked (for scripts
    /// and monitoring); without it, status exits 0 whatever it shows.
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub fetch: setup::FetchArg,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<Status> {
    let cfg = setup::config(g)?;
    // A running daemon answers from what it fetched and observed; without
    // one, status reads the repository (or the mirror) and the engine here.
    let req = crate::control::Request::Status {
        root: cfg.root.clone(),
        stacks: a.stacks.clone(),
    };
    let (rows, engine) = match crate::control::call(&setup::control_socket(&cfg), &req)? {
        Some(resp) if resp.error.is_some() => return Err(setup::daemon_refused(&resp)),
        Some(resp) => {
            if !g.json && !g.quiet {
                eprintln!("(answered by the running daemon)");
            }
            (resp.status, resp.engine)
        }
        None => collect_here(g, &a, cfg)?,
    };
    if g.json {
        super::output::json(&rows)?;
    } else {
        print_table(&rows);
        // Which compose runs the stacks (v1 and v2 name containers and
        // read files differently): what an operator asks first.
        if let Some(e) = engine {
            println!("compose: {e}");
        }
    }
    use crate::outcome::State;
    let bad = |s: &State| matches!(s, State::Failed | State::RolledBack | State::Blocked);
    Ok(if a.check && rows.iter().any(|r| bad(&r.state)) {
        Status::Failed
    } else {
        Status::Ok
    })
}

/// The rows, and what the engine is (`None`: not known).
fn collect_here(
    g: &Global,
    a: &Args,
    cfg: crate::config::Config,
) -> anyhow::Result<(Vec<status::StackStatus>, Option<String>)> {
    let desired = if cfg.repo.is_some() {
        let d = setup::load(&cfg, a.fetch.mode())?;
        setup::say_what_was_read(g, &d);
        Some(d)
    } else {
        None
    };
    setup::known_stacks(&cfg, desired.as_ref(), &a.stacks)?;
    let rt = setup::runtime()?;
    let rows = rt.block_on(async {
        let services = Services::connect_or_offline(cfg).await?;
        let host = services.host(&LogReporter, setup::actor(&services.cfg));
        let rows = status::collect(&host, desired.as_ref(), &a.stacks).await;
        anyhow::Ok((rows, Some(host.engine.describe())))
    })?;
    Ok(rows)
}

pub fn print_table(rows: &[status::StackStatus]) {
    let mut t = super::output::Table::new(&[
        "STACK",
        "STATE",
        "SYNC",
        "HEALTH",
        "VERSION",
        "DIGEST",
        "LAST CHANGE",
        "REASON",
    ])
    .toned(&[1, 2, 3]);
    for r in rows {
        t.row([
            r.stack.as_str(),
            r.state.as_str(),
            r.sync.as_str(),
            r.health.as_str(),
            r.version.as_deref().unwrap_or("-"),
            r.digest.as_deref().unwrap_or("-"),
            r.last_change.as_deref().unwrap_or("-"),
            r.reason.as_str(),
        ]);
    }
    t.print();
}
