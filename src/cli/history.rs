//! `stackpin history [STACK] [--limit N]`: the audit log, newest last.

use super::setup;
use super::{Global, Status};
use crate::history;
use crate::layout::Layout;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(add = super::completions::stack_names())]
    pub stack: Option<String>,
    /// Show at most this many lines (the newest).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

/// A history line with its outcome (the sixth field) coloured on a terminal.
fn painted(on: bool, line: &str, status: &str) -> String {
    let Some((at, _)) = line.match_indices(" | ").nth(4) else {
        return line.to_string();
    };
    let (head, tail) = line.split_at(at + 3);
    match (tail.strip_prefix(status), super::output::tone_of(status)) {
        (Some(rest), tone @ Some(_)) => {
            format!("{head}{}{rest}", super::output::paint_if(on, status, tone))
        }
        _ => line.to_string(),
    }
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
        let on = super::output::color_out();
        for e in list {
            println!("{}", painted(on, &e.format(), e.status.as_str()));
        }
    }
    Ok(Status::Ok)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_outcome_field_is_painted() {
        // A stack named like an outcome stays plain; the sixth field is painted.
        let line = "2026-01-01T00:00:00Z | success | staging | deploy | v1 | success | ok";
        assert_eq!(
            super::painted(true, line, "success"),
            "2026-01-01T00:00:00Z | success | staging | deploy | v1 | \u{1b}[32msuccess\u{1b}[0m | ok"
        );
        assert_eq!(super::painted(false, line, "success"), line);
        assert_eq!(super::painted(true, "a | b", "success"), "a | b");
    }
}
