//! What the commands print, in one place: tables for people (columns sized
//! to their content by comfy-table, a header of capitals, two spaces between
//! columns, no borders, so `grep` and `awk` still work), JSON for scripts
//! (`--json`, each object carrying `schema_version`), and the rows that several
//! commands show alike (a stack's releases). Colours, on a terminal only,
//! mark the words of the vocabulary (synced, degraded, failed, …) and
//! nothing else, so a line means the same with or without them.

use crate::rollback::ReleaseRow;
use anstyle::{AnsiColor, Style};
use comfy_table::{ContentArrangement, Table as Comfy, presets::NOTHING};
use std::sync::atomic::{AtomicBool, Ordering};

static COLOR_OUT: AtomicBool = AtomicBool::new(false);
static COLOR_ERR: AtomicBool = AtomicBool::new(false);

/// Decides once, before anything is printed, whether stdout and stderr get
/// colours: `--color always` or `never` says so; `auto` (the default) colours
/// a terminal unless `NO_COLOR` is set (anstream's rules, which also honour
/// `CLICOLOR_FORCE`, `CLICOLOR=0` and `TERM=dumb`). Returns stderr's, for
/// the log lines.
pub fn init_color(when: clap::ColorChoice) -> bool {
    let choice = match when {
        clap::ColorChoice::Always => anstream::ColorChoice::AlwaysAnsi,
        clap::ColorChoice::Never => anstream::ColorChoice::Never,
        clap::ColorChoice::Auto => anstream::ColorChoice::Auto,
    };
    choice.write_global();
    let on = |c| c != anstream::ColorChoice::Never;
    let out = on(anstream::AutoStream::choice(&std::io::stdout()));
    let err = on(anstream::AutoStream::choice(&std::io::stderr()));
    COLOR_OUT.store(out, Ordering::Relaxed);
    COLOR_ERR.store(err, Ordering::Relaxed);
    err
}

/// How a word of the vocabulary reads: good, under way, needs a look, bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Good,
    Busy,
    Look,
    Bad,
    Quiet,
}

/// The tone of a state, sync status, health or outcome as the commands print
/// them (`Synced`, `Degraded`, `success`, …); `None` for any other text.
pub fn tone_of(word: &str) -> Option<Tone> {
    Some(match word {
        "Converged" | "Synced" | "Healthy" | "success" | "ok" | "deploy" | "heal" => Tone::Good,
        "Progressing" | "OutOfSync" | "remove" => Tone::Busy,
        "Held" | "Blocked" | "Drifted" | "Missing" | "refused" | "warning" | "skipped" => {
            Tone::Look
        }
        "Failed" | "RolledBack" | "Degraded" | "Quarantined" | "fail" | "failed" | "FAILED"
        | "error" => Tone::Bad,
        "NotForThisHost" | "Absent" | "Unknown" | "no change" => Tone::Quiet,
        _ => return None,
    })
}

fn style(tone: Tone) -> Style {
    let fg = |c: AnsiColor| Style::new().fg_color(Some(c.into()));
    match tone {
        Tone::Good => fg(AnsiColor::Green),
        Tone::Busy => fg(AnsiColor::Cyan),
        Tone::Look => fg(AnsiColor::Yellow),
        Tone::Bad => fg(AnsiColor::Red).bold(),
        Tone::Quiet => Style::new().dimmed(),
    }
}

/// `text` in `tone`'s colour when `on`.
pub fn paint_if(on: bool, text: &str, tone: Option<Tone>) -> String {
    match tone {
        Some(t) if on && !text.is_empty() => {
            let s = style(t);
            format!("{s}{text}{s:#}")
        }
        _ => text.to_string(),
    }
}

/// `text` in `tone`'s colour when stdout is coloured.
pub fn paint(text: &str, tone: Tone) -> String {
    paint_if(color_out(), text, Some(tone))
}

/// Whether stdout is coloured.
pub fn color_out() -> bool {
    COLOR_OUT.load(Ordering::Relaxed)
}

/// A line whose first word is a severity (`error: …`, `warning: …`) with
/// that word coloured, for stdout (`err` false) or stderr.
pub fn lead(line: &str, err: bool) -> String {
    lead_if(
        if err { &COLOR_ERR } else { &COLOR_OUT }.load(Ordering::Relaxed),
        line,
    )
}

fn lead_if(on: bool, line: &str) -> String {
    match line.split_once(':') {
        Some((word, rest)) if matches!(word, "error" | "warning") => {
            format!("{}:{rest}", paint_if(on, word, tone_of(word)))
        }
        _ => line.to_string(),
    }
}

/// A table for people.
pub struct Table {
    comfy: Comfy,
    /// Columns whose cells are words of the vocabulary, coloured by tone.
    toned: Vec<usize>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        let mut t = Comfy::new();
        t.load_style(NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(header.to_vec());
        for c in t.column_iter_mut() {
            c.set_padding((0, 2));
        }
        Table {
            comfy: t,
            toned: Vec::new(),
        }
    }

    /// Colour these columns' cells by their word's tone (on a terminal).
    pub fn toned(mut self, columns: &[usize]) -> Table {
        self.toned = columns.to_vec();
        self
    }

    pub fn row<I, S>(&mut self, cells: I) -> &mut Table
    where
        I: IntoIterator<Item = S>,
        S: ToString,
    {
        self.comfy
            .add_row(cells.into_iter().map(|c| c.to_string()).collect::<Vec<_>>());
        self
    }

    /// The table as lines, without trailing blanks.
    #[cfg(test)]
    pub fn render(&self) -> String {
        self.render_with(false)
    }

    /// The table, its toned columns coloured when `color`: comfy-table
    /// lays out the plain text (colour escapes would count as width), and
    /// each toned cell is coloured where that layout put it.
    fn render_with(&self, color: bool) -> String {
        let plain: Vec<String> = self
            .comfy
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect();
        if !color || self.toned.is_empty() {
            return plain.join("\n");
        }
        let widths: Vec<usize> = self
            .comfy
            .column_max_content_widths()
            .iter()
            .map(|w| usize::from(*w) + 2)
            .collect();
        let mut out = vec![plain[0].clone()];
        for (line, row) in plain.iter().skip(1).zip(self.comfy.row_iter()) {
            let mut colored = String::new();
            let mut rest = line.as_str();
            for (i, cell) in row.cell_iter().map(|c| c.content()).enumerate() {
                let take = widths.get(i).copied().unwrap_or(usize::MAX);
                let (this, after) = split_at_width(rest, take);
                rest = after;
                match this.strip_prefix(cell.as_str()) {
                    Some(pad) if self.toned.contains(&i) => {
                        colored.push_str(&paint_if(true, &cell, tone_of(&cell)));
                        colored.push_str(pad);
                    }
                    _ => colored.push_str(this),
                }
            }
            out.push(colored);
        }
        out.join("\n")
    }

    pub fn print(&self) {
        println!("{}", self.render_with(COLOR_OUT.load(Ordering::Relaxed)));
    }
}

/// `s` cut after `width` terminal columns (a wide character counts two).
fn split_at_width(s: &str, width: usize) -> (&str, &str) {
    let mut used = 0;
    for (i, c) in s.char_indices() {
        let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w > width {
            return s.split_at(i);
        }
        used += w;
    }
    (s, "")
}

/// Print `value` as `--json` output: each object (the value itself, or each
/// element of an array of rows) carries `schema_version` as its first key,
/// so a script can check the shape it reads without the arrays that most
/// commands print changing into envelopes.
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut v = serde_json::to_value(value)?;
    match &mut v {
        serde_json::Value::Array(rows) => rows.iter_mut().for_each(versioned),
        other => versioned(other),
    }
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

fn versioned(v: &mut serde_json::Value) {
    if let serde_json::Value::Object(map) = v {
        map.shift_remove("schema_version");
        map.shift_insert(
            0,
            "schema_version".into(),
            super::JSON_SCHEMA_VERSION.into(),
        );
    }
}

/// A stack's releases as `releases` and `rollback --list` both show them:
/// oldest first, with what each one is (current, previous, verified,
/// quarantined, INCOMPLETE).
pub fn releases(stack: &str, rows: &[ReleaseRow]) {
    if rows.is_empty() {
        println!("{stack} has no releases on this host");
        return;
    }
    let mut t =
        Table::new(&["RELEASE", "VERSION", "CREATED (UTC)", "OUTCOME", "MARKS"]).toned(&[3]);
    for r in rows {
        t.row([
            r.id.as_str(),
            r.version.as_str(),
            r.created.as_deref().unwrap_or("?"),
            r.outcome.as_str(),
            &marks(r),
        ]);
    }
    t.print();
}

fn marks(r: &ReleaseRow) -> String {
    let mut m = Vec::new();
    if r.current {
        m.push("current");
    }
    if r.previous {
        m.push("previous");
    }
    if r.verified {
        m.push("verified");
    }
    if r.quarantined {
        m.push("quarantined");
    }
    if !r.complete {
        m.push("INCOMPLETE");
    }
    m.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_widest_cell_and_lines_end_without_blanks() {
        let mut t = Table::new(&["STACK", "STATE"]);
        t.row(["a-long-stack-name", "Synced"]).row(["b", ""]);
        assert_eq!(
            t.render(),
            "STACK              STATE\na-long-stack-name  Synced\nb"
        );
    }

    /// Colour changes nothing but the toned words: stripped of its escapes
    /// the coloured table is the plain one, wide characters included.
    #[test]
    fn a_coloured_table_is_the_plain_one_with_its_words_painted() {
        let mut t = Table::new(&["STACK", "SYNC", "NOTE"]).toned(&[1]);
        t.row(["wide-名前", "Synced", "x"])
            .row(["b", "Degraded", ""])
            .row(["c", "not a word", "y"]);
        let colored = t.render_with(true);
        assert_ne!(colored, t.render());
        let stripped = anstream::adapter::strip_str(&colored).to_string();
        assert_eq!(stripped, t.render());
        assert!(colored.contains("\u{1b}[32mSynced\u{1b}[0m"), "{colored}");
        assert!(
            colored.contains("\u{1b}[1m\u{1b}[31mDegraded\u{1b}[0m"),
            "{colored}"
        );
        assert!(colored.contains("not a word"));
    }

    #[test]
    fn only_a_leading_severity_is_painted() {
        let line = "error: stacks/a/stack.yaml: version: not allowed";
        let painted = lead_if(true, line);
        assert!(painted.starts_with("\u{1b}["), "{painted}");
        assert_eq!(anstream::adapter::strip_str(&painted).to_string(), line);
        assert_eq!(lead_if(true, "note: error: x"), "note: error: x");
        assert_eq!(lead_if(false, line), line);
    }
}
