//! `stackpin releases STACK`: the kept releases, oldest first, with which is
//! current, previous and verified.

use super::setup;
use super::{Global, Status};
use crate::layout::Layout;
use crate::release;
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(value_parser = crate::desired::parse_stack_name, add = super::completions::stack_names())]
    pub stack: String,
}

#[derive(Debug, Serialize)]
struct Row {
    id: String,
    version: Option<String>,
    created_at: Option<String>,
    complete: bool,
    current: bool,
    verified: bool,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<Status> {
    let cfg = setup::config(g)?;
    setup::known_stacks(
        &cfg,
        setup::load_desired(&cfg).ok().as_ref(),
        std::slice::from_ref(&a.stack),
    )?;
    let layout = Layout { root: cfg.root };
    if !g.json {
        // The same rows as `rollback --list`, by the same printer.
        let store = crate::state::LocalStore::new(&layout.root);
        super::output::releases(
            &a.stack,
            &crate::rollback::releases(&layout, &store, &a.stack)?,
        );
        return Ok(Status::Ok);
    }
    let current = release::current(&layout, &a.stack)?;
    let verified = std::fs::read_to_string(layout.verified_txt(&a.stack))
        .ok()
        .map(|s| s.trim().to_string());
    let rows: Vec<Row> = release::list(&layout, &a.stack)?
        .into_iter()
        .map(|r| Row {
            current: current.as_deref() == Some(r.id.as_str()),
            version: r.meta.as_ref().map(|m| m.version.clone()),
            created_at: r.meta.as_ref().map(|m| m.created_at.clone()),
            verified: r
                .meta
                .as_ref()
                .is_some_and(|m| Some(&m.version) == verified.as_ref()),
            complete: r.complete,
            id: r.id,
        })
        .collect();
    super::output::json(&rows)?;
    Ok(Status::Ok)
}
