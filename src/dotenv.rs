//! Dotenv files as compose reads them (`.env`, `env_files:`, decrypted
//! `*.env` secrets): one parser for what stackpin renders into a release
//! and for what it reads back from one (`docker stack deploy` does not read
//! `.env`, so a Swarm stack's variables are passed in its environment).

use std::path::Path;

/// A line that does not parse (`line` 0: the whole file). The reason never
/// holds the value: it may be a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub line: usize,
    pub reason: String,
}

/// The variables of the dotenv file `path` (holds secrets: never log them).
///
/// # Errors
/// The file cannot be read (line 0, the I/O error) or a line does not parse.
pub fn read(path: &Path) -> Result<Vec<(String, String)>, Invalid> {
    let bytes = std::fs::read(path).map_err(|e| Invalid {
        line: 0,
        reason: format!("cannot be read: {e}"),
    })?;
    parse(&bytes)
}

/// Parses a dotenv file as compose does: blank lines and `#` comments
/// skipped, optional `export `, `KEY=VALUE` with the value unquoted
/// (trimmed, ` #…` comment removed), `'single'` (literal) or `"double"`
/// (`\\`, `\"`, `\n`, `\r`, `\t` escapes). Multi-line values are refused.
pub fn parse(bytes: &[u8]) -> Result<Vec<(String, String)>, Invalid> {
    let err = |line: usize, reason: &str| Invalid {
        line,
        reason: reason.to_string(),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| err(0, "is not valid UTF-8"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let n = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line).trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let Some((key, raw)) = line.split_once('=') else {
            return Err(err(n, "has no `=`; write KEY=VALUE"));
        };
        let key = key.trim();
        if !valid_key(key) {
            return Err(err(
                n,
                "has an invalid variable name (letters, digits, `_`, `.`, `-`; not starting with a digit)",
            ));
        }
        let value = parse_value(raw.trim_start()).map_err(|r| err(n, &format!("{key} {r}")))?;
        if value.contains('\0') {
            return Err(err(n, &format!("{key} contains a NUL byte")));
        }
        out.push((key.to_string(), value));
    }
    Ok(out)
}

pub fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

pub fn parse_value(raw: &str) -> Result<String, &'static str> {
    let (value, rest) = if let Some(body) = raw.strip_prefix('\'') {
        let end = body
            .find('\'')
            .ok_or("has an unterminated quote (multi-line values are not supported)")?;
        (body[..end].to_string(), &body[end + 1..])
    } else if let Some(body) = raw.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = body.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(i);
                    break;
                }
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    Some('t') => value.push('\t'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    Some(c) => {
                        value.push('\\');
                        value.push(c);
                    }
                    None => value.push('\\'),
                },
                c => value.push(c),
            }
        }
        let end = end.ok_or("has an unterminated quote (multi-line values are not supported)")?;
        (value, &body[end + 1..])
    } else {
        // Unquoted: a `#` after white space starts a comment.
        let cut = raw
            .char_indices()
            .find(|&(i, c)| c == '#' && i > 0 && raw[..i].ends_with([' ', '\t']))
            .map(|(i, _)| i)
            .unwrap_or(raw.len());
        return Ok(raw[..cut].trim_end().to_string());
    };
    let rest = rest.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(value)
    } else {
        Err("has text after the closing quote")
    }
}
