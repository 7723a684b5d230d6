//! The section-5 man pages of the two file formats, `stackpin-stack.yaml(5)`
//! and `stackpin-config.yaml(5)`, made from the reference they summarise
//! (docs/format.md's field table, docs/operations.md's annotated
//! configuration), so a page cannot say other than the docs. Pure.

const FORMAT: &str = include_str!("../../docs/format.md");
const OPERATIONS: &str = include_str!("../../docs/operations.md");

/// `(file name, roff)` of each page.
pub fn pages() -> [(&'static str, String); 2] {
    [
        ("stackpin-stack.yaml.5", stack_page()),
        ("stackpin-config.yaml.5", config_page()),
    ]
}

fn header(name: &str, what: &str) -> String {
    format!(
        ".TH {name} 5 \"\" \"stackpin {}\" \"File formats\"\n.SH NAME\n{name} \\- {}\n",
        env!("CARGO_PKG_VERSION"),
        roff(what)
    )
}

/// The text of `doc` from the heading line `heading` to the next heading of
/// the same or a higher level.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let Some(start) = doc.find(&format!("\n{heading}\n")) else {
        return "";
    };
    let body = &doc[start + heading.len() + 2..];
    let level = heading.split(' ').next().unwrap_or("#");
    let end = body
        .match_indices("\n#")
        .find(|(i, _)| {
            let line = body[i + 1..].lines().next().unwrap_or("");
            let hashes = line.split(' ').next().unwrap_or("");
            hashes.chars().all(|c| c == '#') && hashes.len() <= level.len()
        })
        .map_or(body.len(), |(i, _)| i);
    &body[..end]
}

/// The fenced code blocks of `text`, in order.
fn code_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        match (&mut current, line.starts_with("```")) {
            (None, true) => current = Some(Vec::new()),
            (Some(lines), true) => {
                out.push(lines.join("\n"));
                current = None;
            }
            (Some(lines), false) => lines.push(line),
            (None, false) => {}
        }
    }
    out
}

/// The paragraph of prose right before the first table or code block of
/// `text`.
fn lead_paragraph(text: &str) -> String {
    let before = text
        .split("\n|")
        .next()
        .unwrap_or("")
        .split("```")
        .next()
        .unwrap_or("");
    before
        .trim()
        .rsplit("\n\n")
        .next()
        .unwrap_or("")
        .replace('\n', " ")
}

fn literal(block: &str) -> String {
    let mut out = String::from(".nf\n");
    for line in block.lines() {
        out.push_str(&escape_line(&escape(line)));
        out.push('\n');
    }
    out.push_str(".fi\n");
    out
}

fn stack_page() -> String {
    let format = section(FORMAT, "## Desired-state repository format");
    let blocks = code_blocks(format);
    let mut out = header(
        "stackpin-stack.yaml",
        "a stack's spec in a stackpin desired-state repository",
    );
    out.push_str(".SH SYNOPSIS\n");
    out.push_str(&literal(blocks.first().map_or("", String::as_str)));
    out.push_str(".SH DESCRIPTION\n");
    let table_intro = format
        .split("\n| Field")
        .next()
        .unwrap_or("")
        .rsplit("\n\n")
        .next()
        .unwrap_or("");
    out.push_str(&escape_line(&roff(&table_intro.replace('\n', " "))));
    out.push('\n');
    out.push_str(".SH FIELDS\n");
    for line in format.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').splitn(2, " | ").collect();
        let [field, meaning] = cells[..] else {
            continue;
        };
        out.push_str(&format!(
            ".TP\n{}\n{}\n",
            roff(field.trim()),
            escape_line(&roff(meaning.trim().trim_end_matches('|').trim()))
        ));
    }
    if let Some(markers) = blocks.get(1) {
        out.push_str(".SH \"VERIFIED MARKERS\"\nverified/<stack>.yaml, written by the hosts whose stacks mark releases verified:\n");
        out.push_str(&literal(markers));
    }
    out.push_str(".SH \"SEE ALSO\"\n\\fBstackpin\\fR(1), \\fBstackpin\\-validate\\fR(1), \\fBstackpin\\-config.yaml\\fR(5); the format reference, docs/format.md (/usr/share/doc/stackpin/format.md)\n");
    out
}

fn config_page() -> String {
    let text = section(OPERATIONS, "## Configuration file");
    let example = code_blocks(text).into_iter().next().unwrap_or_default();
    let mut out = header(
        "stackpin-config.yaml",
        "the configuration of a host that runs stackpin",
    );
    out.push_str(".SH SYNOPSIS\n/etc/stackpin/config.yaml\n.SH DESCRIPTION\n");
    out.push_str(&escape_line(&roff(&lead_paragraph(text))));
    out.push_str("\nWhat a host enforces (signers, verifiers, allowed powers, gates) comes from this file, never from the commit being judged. Each command\\-line option overrides its key.\n");
    out.push_str(".SH KEYS\n");
    for line in example.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        if key.starts_with([' ', '#']) || key.is_empty() {
            continue;
        }
        let (value, comment) = match rest.split_once(" # ") {
            Some((v, c)) => (v.trim(), c.trim()),
            None => (rest.trim(), ""),
        };
        out.push_str(&format!(".TP\n\\fB{}\\fR", escape(key)));
        if !value.is_empty() {
            out.push_str(&format!(" (e.g. {})", escape(value)));
        }
        out.push('\n');
        out.push_str(&escape_line(&roff(comment)));
        out.push('\n');
    }
    // Accepted by the parser only to be refused with the way out.
    out.push_str(".TP\n\\fBtrust\\fR\nRemoved, and refused: it chose the signature policy by the \\fBenvironment:\\fR of the very commit being checked. Name key sets under \\fBsigners:\\fR and the stacks that need them under \\fBpolicy:\\fR.\n");
    out.push_str(".SH EXAMPLE\n");
    out.push_str(&literal(&example));
    out.push_str(".SH \"SEE ALSO\"\n\\fBstackpin\\fR(1), \\fBstackpin\\-daemon\\fR(1) (\\fB\\-\\-check\\-config\\fR), \\fBstackpin\\-stack.yaml\\fR(5); docs/operations.md and docs/trust.md (/usr/share/doc/stackpin/)\n");
    out
}

/// roff's special characters escaped; a character beyond ASCII as its
/// Unicode escape (`\[u2014]`), which groff reads without a preprocessor.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            c if c.is_ascii() => out.push(c),
            c => out.push_str(&format!("\\[u{:04X}]", u32::from(c))),
        }
    }
    out
}

/// A line that would start with a control character made plain.
fn escape_line(s: &str) -> String {
    if s.starts_with(['.', '\'']) {
        format!("\\&{s}")
    } else {
        s.to_string()
    }
}

/// Markdown's inline marks as roff: `code` and **strong** in bold, links
/// as their text with the address after it.
fn roff(md: &str) -> String {
    let mut out = String::new();
    let mut rest = md;
    while let Some(i) = rest.find(['`', '*', '[']) {
        out.push_str(&escape(&rest[..i]));
        let tail = &rest[i..];
        let (mark, close) = if tail.starts_with("**") {
            ("**", "**")
        } else if tail.starts_with('`') {
            ("`", "`")
        } else if tail.starts_with('[') {
            ("[", "](")
        } else {
            ("*", "*")
        };
        let inner = &tail[mark.len()..];
        match inner.find(close) {
            Some(end) if mark == "[" => {
                let text = &inner[..end];
                let after = &inner[end + 2..];
                let url_end = after.find(')').unwrap_or(after.len());
                out.push_str(&format!("{} ({})", escape(text), escape(&after[..url_end])));
                rest = after.get(url_end + 1..).unwrap_or("");
            }
            Some(end) if mark != "*" => {
                out.push_str(&format!("\\fB{}\\fR", escape(&inner[..end])));
                rest = &inner[end + close.len()..];
            }
            _ => {
                out.push_str(&escape(mark));
                rest = inner;
            }
        }
    }
    out.push_str(&escape(rest));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The top-level keys a serde struct accepts: the `fields` serde hands
    /// to `deserialize_struct`, caught by a deserializer that answers
    /// nothing else.
    fn fields_of<T: serde::de::DeserializeOwned>() -> Vec<&'static str> {
        use serde::de::{Deserializer, Visitor, value::Error};
        struct Catch<'a>(&'a mut Vec<&'static str>);
        impl<'de> Deserializer<'de> for Catch<'_> {
            type Error = Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
                Err(serde::de::Error::custom("not a struct"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Error> {
                self.0.extend_from_slice(fields);
                Err(serde::de::Error::custom("caught"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
                bytes byte_buf option unit unit_struct newtype_struct seq tuple
                tuple_struct map enum identifier ignored_any
            }
        }
        let mut out = Vec::new();
        let _ = T::deserialize(Catch(&mut out));
        assert!(!out.is_empty(), "not a struct");
        out
    }

    /// Every key `config.yaml` and `stack.yaml` accept has an entry (with a
    /// description) in its page; a key the page names is one they accept.
    #[test]
    fn each_page_describes_every_key_its_file_accepts() {
        for (page, keys) in [
            (stack_page(), fields_of::<crate::desired::spec::StackSpec>()),
            (config_page(), fields_of::<crate::config::FileConfig>()),
        ] {
            let entries: Vec<(String, String)> = page
                .split(".TP\n")
                .skip(1)
                .filter_map(|e| {
                    let (term, desc) = e.split_once('\n')?;
                    let key = term.strip_prefix("\\fB")?.split("\\fR").next()?;
                    let key = key.split([':', ' ']).next()?.replace("\\-", "-");
                    Some((key, desc.split("\n.").next()?.trim().to_string()))
                })
                .collect();
            for k in &keys {
                let entry = entries.iter().find(|(e, _)| e == k);
                assert!(
                    entry.is_some_and(|(_, d)| !d.is_empty()),
                    "{k}: no entry with a description in\n{page}"
                );
            }
            for (e, _) in &entries {
                assert!(keys.contains(&e.as_str()), "{e} is not a key: {keys:?}");
            }
        }
    }

    #[test]
    fn markdown_marks_become_roff() {
        assert_eq!(
            roff("a `b-c` and **d** [age](https://age-encryption.org)."),
            "a \\fBb\\-c\\fR and \\fBd\\fR age (https://age\\-encryption.org)."
        );
        assert_eq!(roff("x * y"), "x * y");
        assert_eq!(roff("a — b…"), "a \\[u2014] b\\[u2026]");
        assert_eq!(escape_line(".hidden"), "\\&.hidden");
    }
}
