//! What the commands print, in one place: tables for people (columns sized
//! to their content by comfy-table, a header of capitals, two spaces between
//! columns, no borders, so `grep` and `awk` still work), JSON for scripts
//! (`--json`, each object carrying `schema_version`), and the rows that several
//! commands show alike (a stack's releases).

use crate::rollback::ReleaseRow;
use comfy_table::{ContentArrangement, Table as Comfy, presets::NOTHING};

/// A table for people.
pub struct Table(Comfy);

impl Table {
    pub fn new(header: &[&str]) -> Table {
        let mut t = Comfy::new();
        t.load_style(NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(header.to_vec());
        for c in t.column_iter_mut() {
            c.set_padding((0, 2));
        }
        Table(t)
    }

    pub fn row<I, S>(&mut self, cells: I) -> &mut Table
    where
        I: IntoIterator<Item = S>,
        S: ToString,
    {
        self.0
            .add_row(cells.into_iter().map(|c| c.to_string()).collect::<Vec<_>>());
        self
    }

    /// The table as lines, without trailing blanks.
    pub fn render(&self) -> String {
        self.0
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn print(&self) {
        println!("{}", self.render());
    }
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
    let mut t = Table::new(&["RELEASE", "VERSION", "CREATED (UTC)", "OUTCOME", "MARKS"]);
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
}
