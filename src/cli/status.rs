//! `stackpin status`: one row per stack — state, version, release, digest,
//! last change and why. Reads the host and the engine; changes nothing.

use super::setup::{self, Services};
use super::{Global, Status};
use crate::host::LogReporter;
use crate::status;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Limit to these stacks.
    #[arg(value_parser = crate::desired::parse_stack_name)]
    pub stacks: Vec<String>,
    /// Exit 1 when a stack is Failed, RolledBack or Blocked (for scripts
    /// and monitoring); without it, status exits 0 whatever it shows.
    #[arg(long)]
    pub check: bool,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<Status> {
    let cfg = setup::config(g)?;
    let desired = if cfg.repo.is_some() {
        Some(setup::load_desired(&cfg)?)
    } else {
        None
    };
    setup::known_stacks(&cfg, desired.as_ref(), &a.stacks)?;
    let rt = setup::runtime()?;
    let rows = rt.block_on(async {
        let services = Services::connect_or_offline(cfg).await?;
        let host = services.host(&LogReporter, setup::actor(&services.cfg));
        anyhow::Ok(status::collect(&host, desired.as_ref(), &a.stacks).await)
    })?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&rows);
    }
    use crate::outcome::State;
    let bad = |s: &State| matches!(s, State::Failed | State::RolledBack | State::Blocked);
    Ok(if a.check && rows.iter().any(|r| bad(&r.state)) {
        Status::Failed
    } else {
        Status::Ok
    })
}

pub fn print_table(rows: &[status::StackStatus]) {
    let w = rows.iter().map(|r| r.stack.len()).max().unwrap_or(5).max(5);
    let vw = rows
        .iter()
        .filter_map(|r| r.version.as_ref().map(String::len))
        .max()
        .unwrap_or(7)
        .max(7);
    println!(
        "{:<w$}  {:<11}  {:<vw$}  {:<12}  {:<40}  REASON",
        "STACK", "STATE", "VERSION", "DIGEST", "LAST CHANGE"
    );
    for r in rows {
        println!(
            "{:<w$}  {:<11}  {:<vw$}  {:<12}  {:<40}  {}",
            r.stack,
            r.state.as_str(),
            r.version.as_deref().unwrap_or("-"),
            r.digest.as_deref().unwrap_or("-"),
            r.last_change.as_deref().unwrap_or("-"),
            r.reason
        );
    }
}
