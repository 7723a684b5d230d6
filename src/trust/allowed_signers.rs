//! The OpenSSH "allowed signers" file (ssh-keygen(1), ALLOWED SIGNERS), the
//! same file git's `gpg.ssh.allowedSignersFile` names, so an operator can
//! point stackpin and `git verify-commit` at one file.
//!
//! Each line is `principals [options] keytype base64-key [comment]`; blank
//! lines and lines starting with `#` are ignored. Supported options
//! (keywords are case-insensitive, values may be double-quoted):
//! `namespaces="git,file"` (a pattern-list), `valid-after=TIME`,
//! `valid-before=TIME` and `cert-authority`.
//!
//! Two deliberate differences from ssh-keygen:
//! - TIME without a trailing `Z` is local time for ssh-keygen; here it is
//!   always UTC, so a verdict never depends on the host's time zone.
//! - `cert-authority` lines are parsed but never match: stackpin verifies
//!   signatures made by plain keys only, not by OpenSSH certificates.

use super::Error;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use std::fmt;
use std::path::Path;

/// What is wrong with one allowed_signers line or field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LineError(pub String);

impl From<String> for LineError {
    fn from(s: String) -> LineError {
        LineError(s)
    }
}

impl From<&str> for LineError {
    fn from(s: &str) -> LineError {
        LineError(s.to_string())
    }
}

/// A parsed allowed-signers file.
#[derive(Debug, Clone, Default)]
pub struct AllowedSigners {
    entries: Vec<SignerEntry>,
}

/// One line of an allowed-signers file.
#[derive(Debug, Clone, PartialEq)]
pub struct SignerEntry {
    /// Identity patterns (`*` and `?` wildcards, `!` negation), as listed.
    pub principals: Vec<String>,
    /// Namespace patterns the key may sign for; `None` allows every namespace.
    pub namespaces: Option<Vec<String>>,
    /// The key is valid at or after this instant.
    pub valid_after: Option<DateTime<Utc>>,
    /// The key is valid at or before this instant.
    pub valid_before: Option<DateTime<Utc>>,
    /// A CA key for certificates; such entries never match (not supported).
    pub cert_authority: bool,
    pub key: ssh_key::PublicKey,
    /// 1-based line number in the file.
    pub line: usize,
}

/// A line of an allowed-signers file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    pub reason: String,
}

impl AllowedSigners {
    /// Parses the whole file; the first bad line is an error, so a typo never
    /// silently drops a signer.
    pub fn parse(text: &str) -> Result<AllowedSigners, ParseError> {
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let entry = parse_line(trimmed, line).map_err(|reason| ParseError {
                line,
                reason: reason.0,
            })?;
            entries.push(entry);
        }
        Ok(AllowedSigners { entries })
    }

    /// Reads and parses `path`.
    ///
    /// # Errors
    /// Both the read error and the parse error name the file.
    pub fn load(path: &Path) -> Result<AllowedSigners, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        AllowedSigners::parse(&text).map_err(|source| Error::AllowedSigners {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn entries(&self) -> &[SignerEntry] {
        &self.entries
    }

    /// Entries that may vouch for a signature made by `key` (never
    /// `cert-authority` entries), in file order.
    pub fn entries_for_key<'a>(
        &'a self,
        key: &'a ssh_key::public::KeyData,
    ) -> impl Iterator<Item = &'a SignerEntry> + 'a {
        self.entries
            .iter()
            .filter(move |e| !e.cert_authority && e.key.key_data() == key)
    }
}

/// Whether an entry is usable at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Valid,
    /// `valid-after` is still in the future.
    NotYetValid(DateTime<Utc>),
    /// `valid-before` has passed.
    Expired(DateTime<Utc>),
}

impl SignerEntry {
    /// The principals as written in the file, comma-separated.
    pub fn principal(&self) -> String {
        self.principals.join(",")
    }

    /// Whether `identity` matches the principals pattern-list.
    pub fn allows_principal(&self, identity: &str) -> bool {
        match_pattern_list(identity, &self.principals)
    }

    /// Whether signatures in `namespace` are accepted for this key.
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        match &self.namespaces {
            None => true,
            Some(list) => match_pattern_list(namespace, list),
        }
    }

    /// Checks `valid-after` / `valid-before` at `now` (both inclusive, as in
    /// ssh-keygen).
    pub fn validity_at(&self, now: DateTime<Utc>) -> Validity {
        if let Some(after) = self.valid_after
            && now < after
        {
            return Validity::NotYetValid(after);
        }
        if let Some(before) = self.valid_before
            && now > before
        {
            return Validity::Expired(before);
        }
        Validity::Valid
    }
}

impl fmt::Display for SignerEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (line {})", self.principal(), self.line)
    }
}

const KEY_TYPE_PREFIXES: &[&str] = &["ssh-", "ecdsa-", "sk-"];

fn parse_line(line: &str, number: usize) -> Result<SignerEntry, LineError> {
    let (principals_field, rest) = next_field(line)?;
    // A quoted field groups the whole list; commas still separate principals.
    let principals: Vec<String> = dequote(&principals_field)?
        .split(',')
        .map(|p| p.trim().to_string())
        .collect();
    if principals.iter().any(|p| p.is_empty()) {
        return Err(LineError::from(format!(
            "empty principal in {principals_field:?}"
        )));
    }
    let rest = rest.trim_start();
    if rest.is_empty() {
        return Err("missing key after the principals".into());
    }

    let mut options = Options::default();
    let key_text = if KEY_TYPE_PREFIXES.iter().any(|p| rest.starts_with(p)) {
        rest
    } else {
        let (field, after) = next_field(rest)?;
        options = parse_options(&field)?;
        after.trim_start()
    };
    if key_text.is_empty() {
        return Err("missing key after the options".into());
    }
    let key_type = key_text.split_whitespace().next().unwrap_or_default();
    if key_type.ends_with("-cert-v01@openssh.com") {
        return Err(LineError::from(format!(
            "{key_type} is a certificate; list the CA key with cert-authority instead"
        )));
    }
    let key = ssh_key::PublicKey::from_openssh(key_text)
        .map_err(|e| format!("invalid public key {key_type:?}: {e}"))?;
    Ok(SignerEntry {
        principals,
        namespaces: options.namespaces,
        valid_after: options.valid_after,
        valid_before: options.valid_before,
        cert_authority: options.cert_authority,
        key,
        line: number,
    })
}

/// Splits off the first whitespace-delimited field; double quotes group
/// (with `\"` as an escaped quote) and are kept in the returned field.
fn next_field(s: &str) -> Result<(String, &str), LineError> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            c if c.is_whitespace() && !in_quotes => return Ok((s[..i].to_string(), &s[i..])),
            _ => {}
        }
    }
    if in_quotes {
        return Err(LineError::from(format!("unterminated quote in {s:?}")));
    }
    Ok((s.to_string(), ""))
}

/// Splits `a,b,"c,d"` into options, keeping quotes, so that a quoted value
/// may itself contain commas.
fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            escaped = false;
            current.push(c);
            continue;
        }
        match c {
            '\\' if in_quotes => {
                escaped = true;
                current.push(c);
            }
            '"' => {
                in_quotes = !in_quotes;
                current.push(c);
            }
            ',' if !in_quotes => out.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    out.push(current);
    out
}

/// Removes surrounding quotes and `\"` escapes from an option value.
fn dequote(value: &str) -> Result<String, LineError> {
    let Some(inner) = value.strip_prefix('"') else {
        if value.contains('"') {
            return Err(LineError::from(format!("stray quote in {value:?}")));
        }
        return Ok(value.to_string());
    };
    let Some(inner) = inner.strip_suffix('"') else {
        return Err(LineError::from(format!("unterminated quote in {value:?}")));
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => out.push(next),
                None => return Err(LineError::from(format!("dangling backslash in {value:?}"))),
            },
            '"' => return Err(LineError::from(format!("unescaped quote inside {value:?}"))),
            c => out.push(c),
        }
    }
    Ok(out)
}

#[derive(Default)]
struct Options {
    namespaces: Option<Vec<String>>,
    valid_after: Option<DateTime<Utc>>,
    valid_before: Option<DateTime<Utc>>,
    cert_authority: bool,
}

fn parse_options(options: &str) -> Result<Options, LineError> {
    let mut entry = Options::default();
    for option in split_options(options) {
        if option.is_empty() {
            return Err(LineError::from(format!("empty option in {options:?}")));
        }
        let (name, value) = match option.split_once('=') {
            Some((name, value)) => (name.to_ascii_lowercase(), Some(dequote(value)?)),
            None => (option.to_ascii_lowercase(), None),
        };
        let duplicate = || format!("option {name} given twice");
        match (name.as_str(), value) {
            ("cert-authority", None) => {
                if entry.cert_authority {
                    return Err(LineError::from(duplicate()));
                }
                entry.cert_authority = true;
            }
            ("namespaces", Some(value)) => {
                if entry.namespaces.is_some() {
                    return Err(LineError::from(duplicate()));
                }
                let list: Vec<String> = value.split(',').map(|s| s.trim().to_string()).collect();
                if list.iter().any(|n| n.is_empty()) {
                    return Err(LineError::from(format!(
                        "empty namespace in namespaces={value:?}"
                    )));
                }
                entry.namespaces = Some(list);
            }
            ("valid-after", Some(value)) => {
                if entry.valid_after.is_some() {
                    return Err(LineError::from(duplicate()));
                }
                entry.valid_after = Some(parse_time(&value)?);
            }
            ("valid-before", Some(value)) => {
                if entry.valid_before.is_some() {
                    return Err(LineError::from(duplicate()));
                }
                entry.valid_before = Some(parse_time(&value)?);
            }
            ("cert-authority", Some(_)) => return Err("cert-authority takes no value".into()),
            ("namespaces" | "valid-after" | "valid-before", None) => {
                return Err(LineError::from(format!(
                    "option {name} needs a value ({name}=\"…\")"
                )));
            }
            _ => {
                return Err(LineError::from(format!(
                    "unsupported option {name:?} (expected namespaces, valid-after, valid-before or cert-authority)"
                )));
            }
        }
    }
    Ok(entry)
}

/// Parses `YYYYMMDD[Z]` or `YYYYMMDDHHMM[SS][Z]` as UTC (see the module doc
/// for why a missing `Z` is UTC too). A bare date means its midnight.
pub fn parse_time(value: &str) -> Result<DateTime<Utc>, LineError> {
    let digits = value.strip_suffix(['Z', 'z']).unwrap_or(value);
    let bad = || format!("invalid time {value:?} (expected YYYYMMDD[Z] or YYYYMMDDHHMM[SS][Z])");
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LineError::from(bad()));
    }
    let naive = match digits.len() {
        8 => NaiveDate::parse_from_str(digits, "%Y%m%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0)),
        12 => NaiveDateTime::parse_from_str(digits, "%Y%m%d%H%M").ok(),
        14 => NaiveDateTime::parse_from_str(digits, "%Y%m%d%H%M%S").ok(),
        _ => None,
    }
    .ok_or_else(bad)?;
    Ok(Utc.from_utc_datetime(&naive))
}

/// OpenSSH `match_pattern_list`: a negated pattern (`!p`) that matches
/// rejects; otherwise any matching positive pattern accepts.
pub fn match_pattern_list(s: &str, patterns: &[String]) -> bool {
    let mut matched = false;
    for pattern in patterns {
        if let Some(negated) = pattern.strip_prefix('!') {
            if match_pattern(s, negated) {
                return false;
            }
        } else if match_pattern(s, pattern) {
            matched = true;
        }
    }
    matched
}

/// Glob match with `*` (any run) and `?` (one character).
pub fn match_pattern(s: &str, pattern: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            si += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((star_pi, star_si)) = star {
            pi = star_pi + 1;
            si = star_si + 1;
            star = Some((star_pi, star_si + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti";

    fn one(text: &str) -> SignerEntry {
        let signers = AllowedSigners::parse(text).expect("parses");
        assert_eq!(signers.entries().len(), 1, "{text}");
        signers.entries()[0].clone()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn plain_line_without_options() {
        let e = one(&format!("alice@example.com {ED} a comment"));
        assert_eq!(e.principals, vec!["alice@example.com"]);
        assert_eq!(e.namespaces, None);
        assert!(!e.cert_authority);
        assert_eq!(e.line, 1);
        assert_eq!(e.key.algorithm(), ssh_key::Algorithm::Ed25519);
        assert!(e.allows_namespace("git"));
    }

    #[test]
    fn comments_and_blank_lines_are_skipped_and_lines_counted() {
        let text = format!("# signers\n\n   \n  # indented comment\nbob {ED}\n");
        let e = one(&text);
        assert_eq!(e.line, 5);
    }

    #[test]
    fn options_are_parsed() {
        let e = one(&format!(
            "a@x,b@y namespaces=\"git,file\",valid-after=\"20260101\",VALID-BEFORE=20270102123456Z {ED}"
        ));
        assert_eq!(e.principals, vec!["a@x", "b@y"]);
        assert_eq!(e.principal(), "a@x,b@y");
        assert_eq!(
            e.namespaces,
            Some(vec!["git".to_string(), "file".to_string()])
        );
        assert_eq!(e.valid_after, Some(utc("2026-01-01T00:00:00Z")));
        assert_eq!(e.valid_before, Some(utc("2027-01-02T12:34:56Z")));
        assert!(e.allows_namespace("git"));
        assert!(!e.allows_namespace("ssh"));
    }

    #[test]
    fn cert_authority_flag_and_quoted_principals() {
        let e = one(&format!("\"*@example.com,ops@x\" cert-authority {ED}"));
        assert!(e.cert_authority);
        assert_eq!(e.principals, vec!["*@example.com", "ops@x"]);
        let signers = AllowedSigners::parse(&format!("p cert-authority {ED}")).unwrap();
        let key = signers.entries()[0].key.key_data().clone();
        assert_eq!(signers.entries_for_key(&key).count(), 0);
    }

    #[test]
    fn quoted_value_with_escaped_quote() {
        let e = one(&format!(r#"p namespaces="g\"it" {ED}"#));
        assert_eq!(e.namespaces, Some(vec!["g\"it".to_string()]));
    }

    #[test]
    fn wildcards_match_principals_and_namespaces() {
        let e = one(&format!(
            "*@example.com,!evil@example.com,dev?@corp namespaces=\"g*\" {ED}"
        ));
        assert!(e.allows_principal("alice@example.com"));
        assert!(!e.allows_principal("evil@example.com"));
        assert!(e.allows_principal("dev1@corp"));
        assert!(!e.allows_principal("dev10@corp"));
        assert!(!e.allows_principal("alice@example.org"));
        assert!(e.allows_namespace("git"));
        assert!(!e.allows_namespace("file"));
        assert!(match_pattern("", "*"));
        assert!(match_pattern("abc", "a*c"));
        assert!(match_pattern("abbbc", "a*b*c"));
        assert!(!match_pattern("abcd", "a*c"));
    }

    #[test]
    fn time_formats() {
        assert_eq!(parse_time("20260101").unwrap(), utc("2026-01-01T00:00:00Z"));
        assert_eq!(
            parse_time("20260101Z").unwrap(),
            utc("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            parse_time("202601011230").unwrap(),
            utc("2026-01-01T12:30:00Z")
        );
        assert_eq!(
            parse_time("20260101123045Z").unwrap(),
            utc("2026-01-01T12:30:45Z")
        );
        for bad in [
            "2026",
            "2026010",
            "20261301",
            "20260101T1230",
            "202601011260",
            "x",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validity_window_is_inclusive() {
        let e = one(&format!(
            "p valid-after=20260101,valid-before=20260201 {ED}"
        ));
        assert_eq!(
            e.validity_at(utc("2025-12-31T23:59:59Z")),
            Validity::NotYetValid(utc("2026-01-01T00:00:00Z"))
        );
        assert_eq!(e.validity_at(utc("2026-01-01T00:00:00Z")), Validity::Valid);
        assert_eq!(e.validity_at(utc("2026-02-01T00:00:00Z")), Validity::Valid);
        assert_eq!(
            e.validity_at(utc("2026-02-01T00:00:01Z")),
            Validity::Expired(utc("2026-02-01T00:00:00Z"))
        );
    }

    #[test]
    fn bad_lines_report_their_line_number() {
        let cases = [
            ("ok {ED}\nbroken\n", 2, "missing key"),
            (
                "# c\n\np namespaces=git,bogus=1 {ED}",
                3,
                "unsupported option \"bogus\"",
            ),
            ("p valid-after=2026 {ED}", 1, "invalid time \"2026\""),
            ("p \"unterminated {ED}", 1, "unterminated quote"),
            ("p namespaces {ED}", 1, "needs a value"),
            ("p cert-authority,cert-authority {ED}", 1, "given twice"),
            ("p ssh-ed25519 notbase64!", 1, "invalid public key"),
            ("p namespaces=git", 1, "missing key after the options"),
            (",p {ED}", 1, "empty principal"),
            (
                "p ssh-ed25519-cert-v01@openssh.com AAAA",
                1,
                "is a certificate",
            ),
        ];
        for (text, line, reason) in cases {
            let text = text.replace("{ED}", ED);
            let err = AllowedSigners::parse(&text).expect_err(&text);
            assert_eq!(err.line, line, "{text}: {err}");
            assert!(err.reason.contains(reason), "{text}: {err}");
            assert!(err.to_string().starts_with(&format!("line {line}: ")));
        }
    }

    #[test]
    fn several_entries_keep_their_order() {
        let text = format!("a {ED}\nb namespaces=\"file\" {ED}\n");
        let signers = AllowedSigners::parse(&text).unwrap();
        let key = signers.entries()[0].key.key_data().clone();
        let lines: Vec<usize> = signers.entries_for_key(&key).map(|e| e.line).collect();
        assert_eq!(lines, vec![1, 2]);
    }
}
