//! The audit log `<root>/deploy-history.log` (SPEC §2), in the format of the
//! seed runbooks so their `grep "| odoo18-prod |"` recipes keep working:
//!
//! ```text
//! 2026-01-30 10:00:00 | odoo18-prod | production | deploy | sha-19b9b98 | success | notes
//! ```
//!
//! Times are UTC. In every field `\` is written `\\`, `|` `\|`, newline `\n`,
//! CR `\r`, tab `\t`, and a space at the start or end of a field `\s` (the
//! parser trims the padding around `|`, so such a space would otherwise be
//! lost): [`Entry::parse`] is the exact inverse of [`Entry::format`]. A line
//! with empty notes ends in `| success |`, like the seed. Parsing accepts any
//! action or status word, since old logs say `prod` and `fail`.
//!
//! Appends are one `write(2)` on an `O_APPEND` descriptor, so concurrent
//! writers (daemon and CLI) never interleave inside a line.

use chrono::{NaiveDateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// A UTC time without a zone in the log, with one in JSON: written as RFC
/// 3339 (`…Z`), read with or without the `Z` (files written before).
mod utc_json {
    use chrono::NaiveDateTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(
            &t.and_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDateTime, D::Error> {
        let text = String::deserialize(d)?;
        chrono::DateTime::parse_from_rfc3339(&text)
            .map(|t| t.naive_utc())
            .or_else(|_| text.parse::<NaiveDateTime>())
            .map_err(serde::de::Error::custom)
    }
}

/// The current time as RFC 3339 UTC, whole seconds (the records' format).
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// What happened (the fourth field).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    Deploy,
    Rollback,
    ManualRollback,
    Verify,
    Blocked,
    Hold,
    Resume,
    Prune,
    Backup,
    /// The audit line written before a deploy that skips the gate: the
    /// deploy does not go ahead without it.
    BreakGlass,
    /// `stackpin restore`: a backup's data and release put back.
    Restore,
    /// A word stackpin does not write (older, hand-written logs), kept as is.
    Other(String),
}

impl Action {
    pub const ALL: [Action; 11] = [
        Action::Deploy,
        Action::Rollback,
        Action::ManualRollback,
        Action::Verify,
        Action::Blocked,
        Action::Hold,
        Action::Resume,
        Action::Prune,
        Action::Backup,
        Action::BreakGlass,
        Action::Restore,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            Action::Deploy => "deploy",
            Action::Rollback => "rollback",
            Action::ManualRollback => "manual-rollback",
            Action::Verify => "verify",
            Action::Blocked => "blocked",
            Action::Hold => "hold",
            Action::Resume => "resume",
            Action::Prune => "prune",
            Action::Backup => "backup",
            Action::BreakGlass => "break-glass",
            Action::Restore => "restore",
            Action::Other(w) => w,
        }
    }

    /// The action a word names; an unknown word is [`Action::Other`].
    pub fn from_word(s: &str) -> Action {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .unwrap_or_else(|| Action::Other(s.to_string()))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How it ended (the sixth field).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Status {
    Success,
    Failed,
    Refused,
    /// A word stackpin does not write (`fail` in old logs), kept as is.
    Other(String),
}

impl Status {
    pub const ALL: [Status; 3] = [Status::Success, Status::Failed, Status::Refused];

    pub fn as_str(&self) -> &str {
        match self {
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Refused => "refused",
            Status::Other(w) => w,
        }
    }

    /// The status a word names; an unknown word is [`Status::Other`].
    pub fn from_word(s: &str) -> Status {
        Status::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .unwrap_or_else(|| Status::Other(s.to_string()))
    }

    /// `success` or `failed`.
    pub fn of(ok: bool) -> Status {
        if ok { Status::Success } else { Status::Failed }
    }
}

macro_rules! serde_as_word {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(<$t>::from_word(&String::deserialize(d)?))
            }
        }
    };
}
serde_as_word!(Action);
serde_as_word!(Status);

impl From<&str> for Action {
    fn from(s: &str) -> Action {
        Action::from_word(s)
    }
}

impl From<&str> for Status {
    fn from(s: &str) -> Status {
        Status::from_word(s)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// UTC, whole seconds; in JSON RFC 3339 with its `Z`
    /// (`2026-01-30T10:00:00Z`), as every time stackpin prints.
    #[serde(with = "utc_json")]
    pub time: NaiveDateTime,
    pub stack: String,
    pub env: String,
    pub action: Action,
    pub version: String,
    pub status: Status,
    pub notes: String,
}

/// Why a line is not a history entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("has {0} `|`-separated fields, a history line needs 7")]
    Fields(usize),
    #[error("has \"{0}\" where the time `yyyy-mm-dd hh:mm:ss` belongs")]
    Time(String),
    #[error("has an empty {0} field")]
    Empty(&'static str),
}

impl Entry {
    /// An entry stamped now (UTC, truncated to the second so that it reads
    /// back equal).
    pub fn now(
        stack: &str,
        env: &str,
        action: Action,
        version: &str,
        status: Status,
        notes: impl Into<String>,
    ) -> Entry {
        let time = Utc::now().naive_utc();
        Entry {
            time: time.with_nanosecond(0).unwrap_or(time),
            stack: stack.to_string(),
            env: env.to_string(),
            action,
            version: version.to_string(),
            status,
            notes: notes.into(),
        }
    }

    pub fn is(&self, action: Action, status: Status) -> bool {
        self.action == action && self.status == status
    }

    /// The line, without the trailing newline. Sub-second precision of
    /// `time` is not written.
    pub fn format(&self) -> String {
        let mut out = self.time.format(TIME_FORMAT).to_string();
        for f in [
            self.stack.as_str(),
            &self.env,
            self.action.as_str(),
            &self.version,
            self.status.as_str(),
        ] {
            out.push_str(" | ");
            out.push_str(&escape(f));
        }
        out.push_str(" |");
        if !self.notes.is_empty() {
            out.push(' ');
            out.push_str(&escape(&self.notes));
        }
        out
    }

    /// Parses one line; the inverse of [`Entry::format`]. Whitespace around
    /// the line and around each field is ignored. Never panics.
    pub fn parse(line: &str) -> Result<Entry, ParseError> {
        let line = line.trim_matches(|c| c == '\n' || c == '\r');
        let (fields, rest) = split_fields(line, 6);
        let notes = match (fields.len(), rest) {
            (6, Some(rest)) => unescape(trim_pad(rest)),
            // `... | success` without the trailing separator: empty notes.
            (6, None) => String::new(),
            (n, _) => return Err(ParseError::Fields(n)),
        };
        let time_raw = trim_pad(fields[0]);
        let time = NaiveDateTime::parse_from_str(time_raw, TIME_FORMAT)
            .map_err(|_| ParseError::Time(time_raw.chars().take(40).collect()))?;
        let field = |i: usize, name: &'static str, required: bool| {
            let v = unescape(trim_pad(fields[i]));
            if required && v.is_empty() {
                Err(ParseError::Empty(name))
            } else {
                Ok(v)
            }
        };
        Ok(Entry {
            time,
            stack: field(1, "stack", true)?,
            env: field(2, "environment", false)?,
            action: Action::from_word(&field(3, "action", true)?),
            version: field(4, "version", false)?,
            status: Status::from_word(&field(5, "status", true)?),
            notes,
        })
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format())
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' ' if i == 0 || i == last => out.push_str("\\s"),
            c => out.push(c),
        }
    }
    out
}

/// Undoes [`escape`]. An unknown escape or a lone trailing `\` (hand-written
/// or old lines) is kept as written; so is a bare `|` in notes.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('|') => out.push('|'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('s') => out.push(' '),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Only the padding the writer adds; other white space is content.
fn trim_pad(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// Splits at the first `n` unescaped `|`: the fields before them, and the
/// raw rest after the n-th (None when there are fewer than `n` separators,
/// then every piece is in the fields).
fn split_fields(line: &str, n: usize) -> (Vec<&str>, Option<&str>) {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '|' => {
                fields.push(&line[start..i]);
                start = i + 1;
                if fields.len() == n {
                    return (fields, Some(&line[start..]));
                }
            }
            _ => {}
        }
    }
    fields.push(&line[start..]);
    (fields, None)
}

/// Appends one entry as one line.
///
/// # Guarantees
/// Opens with `O_APPEND|O_CREAT` (mode 0644), writes the whole line and its
/// newline with one `write_all` and `sync_data`s: lines from concurrent
/// processes never interleave, and a returned `Ok` survives power loss.
pub fn append(path: &Path, e: &Entry) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::fsutil::create_dir_all_synced(dir)?;
    }
    let mut line = e.format();
    line.push('\n');
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)?;
    // A line torn by a crash mid-write has no newline: this entry starts
    // on a line of its own instead of being glued onto it (the torn line
    // is then reported as a bad line, and this one still parses).
    let len = f.metadata()?.len();
    if len > 0 {
        use std::os::unix::fs::FileExt;
        let mut last = [0u8; 1];
        f.read_exact_at(&mut last, len - 1)?;
        if last[0] != b'\n' {
            line.insert(0, '\n');
        }
    }
    f.write_all(line.as_bytes())?;
    f.sync_data()
}

/// The parsed log: entries in file order, and lines that are not entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct History {
    pub entries: Vec<Entry>,
    /// (1-based line number, the line) for every line that did not parse.
    pub bad_lines: Vec<(usize, String)>,
}

impl History {
    pub fn parse(text: &str) -> History {
        let mut h = History::default();
        for (i, line) in text.split('\n').enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match Entry::parse(line) {
                Ok(e) => h.entries.push(e),
                Err(_) => h.bad_lines.push((i + 1, line.to_string())),
            }
        }
        h
    }

    /// Entries of one stack, oldest first.
    pub fn for_stack<'a>(&'a self, stack: &'a str) -> impl DoubleEndedIterator<Item = &'a Entry> {
        self.entries.iter().filter(move |e| e.stack == stack)
    }

    /// The newest `action` of `stack` that ended in success.
    pub fn last_success(&self, stack: &str, action: Action) -> Option<&Entry> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.stack == stack && e.is(action.clone(), Status::Success))
    }
}

/// Reads the log; a missing file is an empty history. Lines that are not
/// valid UTF-8 are read lossily (and then usually land in `bad_lines`).
pub fn read(path: &Path) -> io::Result<History> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(History::parse(&String::from_utf8_lossy(&bytes))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(History::default()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn t(h: u32, m: u32, s: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 1, 30)
            .unwrap()
            .and_hms_opt(h, m, s)
            .unwrap()
    }

    fn entry(notes: &str) -> Entry {
        Entry {
            time: t(10, 0, 0),
            stack: "odoo18-prod".into(),
            env: "production".into(),
            action: Action::Deploy,
            version: "sha-19b9b98".into(),
            status: Status::Success,
            notes: notes.into(),
        }
    }

    #[test]
    fn json_times_carry_their_zone_and_older_ones_still_read() {
        let v = serde_json::to_value(entry("x")).unwrap();
        assert_eq!(v["time"], "2026-01-30T10:00:00Z");
        assert_eq!(
            serde_json::from_value::<Entry>(v.clone()).unwrap(),
            entry("x")
        );
        let mut old = v;
        old["time"] = "2026-01-30T10:00:00".into();
        assert_eq!(serde_json::from_value::<Entry>(old).unwrap(), entry("x"));
    }

    #[test]
    fn formats_the_seed_shape() {
        assert_eq!(
            entry("notes").format(),
            "2026-01-30 10:00:00 | odoo18-prod | production | deploy | sha-19b9b98 | success | notes"
        );
        assert_eq!(
            entry("").format(),
            "2026-01-30 10:00:00 | odoo18-prod | production | deploy | sha-19b9b98 | success |"
        );
        assert_eq!(
            entry("smoke failed: http | 502\nretry \\ later").format(),
            "2026-01-30 10:00:00 | odoo18-prod | production | deploy | sha-19b9b98 | success | smoke failed: http \\| 502\\nretry \\\\ later"
        );
    }

    #[test]
    fn parses_seed_lines() {
        let seed = "2026-01-30 10:00:00 | odoo18-prod | prod | deploy | sha-19b9b98 | success |\n\
                    2026-01-30 10:15:00 | odoo18-prod | prod | rollback | sha-4b1ce21 | success | smoke failed\n\
                    2026-01-31 10:23:45 | odoo18-prod | prod | deploy | sha-hotfix | success | BREAK_GLASS: Critical security patch for CVE-2024-XXXX\n";
        let h = History::parse(seed);
        assert!(h.bad_lines.is_empty(), "{:?}", h.bad_lines);
        assert_eq!(h.entries.len(), 3);
        assert_eq!(h.entries[0].notes, "");
        assert_eq!(h.entries[0].env, "prod");
        assert_eq!(h.entries[1].action, Action::Rollback);
        assert_eq!(h.entries[1].version, "sha-4b1ce21");
        assert_eq!(h.entries[1].notes, "smoke failed");
        assert_eq!(
            h.entries[2].notes,
            "BREAK_GLASS: Critical security patch for CVE-2024-XXXX"
        );
        // Without the trailing separator, and with extra padding.
        let e = Entry::parse("  2026-01-30 10:00:00|a|b|deploy|v|fail  \r\n").unwrap();
        assert_eq!((e.stack.as_str(), e.status.as_str()), ("a", "fail"));
        assert_eq!(e.notes, "");
        // A bare `|` in notes of an old hand-written line stays in the notes.
        let e = Entry::parse("2026-01-30 10:00:00 | a | b | deploy | v | failed | x | y").unwrap();
        assert_eq!(e.notes, "x | y");
    }

    #[test]
    fn garbage_lines_are_errors() {
        for line in [
            "",
            "hello",
            "2026-01-30 | a | b | c | d | e | f",
            "2026-13-30 10:00:00 | a | b | c | d | e | f",
            "2026-01-30 10:00:00 | a | b | c",
            "2026-01-30 10:00:00 |  | b | deploy | v | success | n",
            "2026-01-30 10:00:00 | a | b | deploy | v |  | n",
            "\\|\\|\\|\\|\\|\\|",
            "||||||",
            "é|€|\\",
        ] {
            assert!(Entry::parse(line).is_err(), "{line:?} parsed");
        }
        let h = History::parse(
            "garbage\n\n2026-01-30 10:00:00 | a | b | deploy | v | success | n\n|||\n",
        );
        assert_eq!(h.entries.len(), 1);
        assert_eq!(
            h.bad_lines,
            vec![(1, "garbage".to_string()), (4, "|||".to_string())]
        );
    }

    #[test]
    fn round_trips_tricky_fields() {
        let alphabet = [
            "|", "\\", "\n", "\r", "\t", " ", "  ", "a", "é", "\\n", "\\|", "\\s", "|\\", "#",
            "\u{a0}", "x y", "\\\\|",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        for _ in 0..3000 {
            let mut gen_field = |min: usize| {
                let n = min + next() % 6;
                (0..n)
                    .map(|_| alphabet[next() % alphabet.len()])
                    .collect::<String>()
            };
            let e = Entry {
                time: t(23, 59, 59),
                stack: format!("s{}", gen_field(0)),
                env: gen_field(0),
                action: Action::from_word(&format!("{}x", gen_field(0))),
                version: gen_field(0),
                status: Status::from_word(&(gen_field(1).replace(' ', "_") + "!")),
                notes: gen_field(0),
            };
            let line = e.format();
            assert!(!line.contains('\n') && !line.contains('\r'), "{line:?}");
            assert_eq!(Entry::parse(&line).as_ref(), Ok(&e), "line {line:?}");
            assert_eq!(Entry::parse(&format!("  {line}  \n")).as_ref(), Ok(&e));
        }
    }

    #[test]
    fn append_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("srv/deploy-history.log");
        assert_eq!(read(&p).unwrap(), History::default());
        let mut a = entry("first | one");
        append(&p, &a).unwrap();
        a.time = t(11, 0, 0);
        a.action = Action::Rollback;
        a.version = "sha-old".into();
        append(&p, &a).unwrap();
        let mut other = entry("x\ny");
        other.stack = "other".into();
        append(&p, &other).unwrap();
        let now = Entry::now(
            "odoo18-prod",
            "production",
            Action::Verify,
            "v2",
            Status::Failed,
            "",
        );
        append(&p, &now).unwrap();

        let h = read(&p).unwrap();
        assert!(h.bad_lines.is_empty());
        assert_eq!(h.entries.len(), 4);
        assert_eq!(h.entries[3], now);
        assert_eq!(h.for_stack("odoo18-prod").count(), 3);
        assert_eq!(
            h.last_success("odoo18-prod", Action::Rollback)
                .map(|e| e.version.as_str()),
            Some("sha-old")
        );
        assert_eq!(
            h.last_success("odoo18-prod", Action::Deploy)
                .map(|e| e.notes.as_str()),
            Some("first | one")
        );
        assert!(h.last_success("odoo18-prod", Action::Verify).is_none());
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 4);
    }
}
