//! `stackpin history [STACK] [--limit N]`: the audit log, newest last.

use super::setup;
use super::{Global, Status};
use crate::history;
use crate::layout::Layout;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub stack: Option<String>,
    /// Show at most this many lines (the newest).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<Status> {
    let cfg = setup::config(g)?;
    let layout = Layout { root: cfg.root };
    let h = history::read(&layout.history())?;
    for (n, line) in &h.bad_lines {
        eprintln!(
            "warning: {}:{n}: not a history line, skipped: {line}",
            layout.history().display()
        );
    }
    let list: Vec<&history::Entry> = h
        .entries
        .iter()
        .filter(|e| a.stack.as_ref().is_none_or(|s| &e.stack == s))
        .collect();
    let list = &list[list.len().saturating_sub(a.limit)..];
    if g.json {
        super::output::json(list)?;
    } else if list.is_empty() {
        // Said on stderr: stdout stays the (empty) list for scripts.
        match &a.stack {
            Some(s) => eprintln!(
                "no history for {s} yet: nothing has been deployed or changed for it on this host"
            ),
            None => eprintln!(
                "no history yet: nothing has been deployed on this host ({})",
                layout.history().display()
            ),
        }
    } else {
        for e in list {
            println!("{}", e.format());
        }
    }
    Ok(Status::Ok)
}
