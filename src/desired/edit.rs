//! Line-level edits of a `stack.yaml` (`stackpin pin`): one scalar is
//! replaced, or one entry added, where the parser's events say it is; every
//! other byte of the file (comments, order, quoting, flow or block style,
//! anchors) stays as written. Pure.

use granit_parser::{Event, Parser, ScalarStyle, Span};

/// Why a file cannot be edited safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("the file is not YAML stackpin can edit: {0}")]
    Parse(String),
    #[error(
        "`{path}` is written through an alias (`*{anchor}`): edit the anchor's value by hand, or write the value in place"
    )]
    Alias { path: String, anchor: String },
    #[error("`{0}` is not a mapping: cannot add an entry to it")]
    NotMapping(String),
    #[error("`{path}` is not a plain value (a {found}): cannot replace it")]
    NotScalar { path: String, found: &'static str },
}

/// Where a top-level key's value is, and the entries of it when it is a
/// mapping.
#[derive(Debug, Default)]
struct Found {
    /// The value's scalar: its span and style.
    scalar: Option<(Span, ScalarStyle)>,
    alias: Option<String>,
    /// The value is a mapping: flow (`{…}`) or block, its end, the column
    /// of its keys, and the end of its last entry's value.
    mapping: Option<MapInfo>,
    collection: Option<&'static str>,
}

#[derive(Debug, Default)]
struct MapInfo {
    flow: bool,
    end: Option<Span>,
    key_col: Option<usize>,
    last_value_end: Option<usize>,
    /// The entry asked for, when the mapping has it.
    entry: Option<Box<Found>>,
}

struct Frame {
    map: bool,
    want_key: bool,
    key: Option<String>,
}

/// Finds top-level `key` and, when `sub` is given and `key` is a mapping,
/// its entry `sub`.
fn find(text: &str, key: &str, sub: Option<&str>) -> Result<Option<Found>, EditError> {
    let mut frames: Vec<Frame> = Vec::new();
    let mut found: Option<Found> = None;
    // Inside the mapping that is `key`'s value (its frame is frames[1]).
    let mut in_target = false;
    let is_top_value = |frames: &[Frame]| {
        frames.len() == 1 && !frames[0].want_key && frames[0].key.as_deref() == Some(key)
    };
    let is_entry_value = |frames: &[Frame], in_target: bool| {
        in_target && frames.len() == 2 && frames[1].map && !frames[1].want_key
    };
    for ev in Parser::new_from_str(text) {
        let (ev, span) = ev.map_err(|e| EditError::Parse(e.to_string()))?;
        match ev {
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let map = matches!(ev, Event::MappingStart(..));
                if is_top_value(&frames) {
                    let mut f = Found::default();
                    if map {
                        f.mapping = Some(MapInfo {
                            flow: text_at(text, &span).starts_with('{'),
                            ..Default::default()
                        });
                        in_target = true;
                    } else {
                        f.collection = Some("sequence");
                    }
                    found = Some(f);
                } else if is_entry_value(&frames, in_target)
                    && sub.is_some()
                    && frames[1].key.as_deref() == sub
                    && let Some(m) = found.as_mut().and_then(|f| f.mapping.as_mut())
                {
                    m.entry = Some(Box::new(Found {
                        collection: Some(if map { "mapping" } else { "sequence" }),
                        ..Default::default()
                    }));
                }
                frames.push(Frame {
                    map,
                    want_key: map,
                    key: None,
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                frames.pop();
                if in_target && frames.len() == 1 {
                    if let Some(m) = found.as_mut().and_then(|f| f.mapping.as_mut()) {
                        m.end = Some(span);
                    }
                    in_target = false;
                } else if in_target
                    && frames.len() == 2
                    && let Some(m) = found.as_mut().and_then(|f| f.mapping.as_mut())
                {
                    m.last_value_end = Some(span.end.index());
                }
                if let Some(top) = frames.last_mut()
                    && top.map
                {
                    top.want_key = true;
                }
            }
            Event::Scalar(..) | Event::Alias(_) => {
                let Some(top) = frames.last_mut() else {
                    continue;
                };
                if top.map && top.want_key {
                    top.want_key = false;
                    top.key = match &ev {
                        Event::Scalar(v, ..) => Some(v.to_string()),
                        _ => None,
                    };
                    if in_target
                        && frames.len() == 2
                        && let Some(m) = found.as_mut().and_then(|f| f.mapping.as_mut())
                        && m.key_col.is_none()
                    {
                        m.key_col = Some(span.start.col());
                    }
                    continue;
                }
                let node = match &ev {
                    Event::Scalar(_, style, ..) => Found {
                        scalar: Some((span, *style)),
                        ..Default::default()
                    },
                    _ => Found {
                        alias: Some(anchor_name(text, &span).unwrap_or_default()),
                        ..Default::default()
                    },
                };
                if is_top_value(&frames) {
                    found = Some(node);
                } else if is_entry_value(&frames, in_target)
                    && let Some(m) = found.as_mut().and_then(|f| f.mapping.as_mut())
                {
                    m.last_value_end = Some(span.end.index());
                    if sub.is_some() && frames[1].key.as_deref() == sub {
                        m.entry = Some(Box::new(node));
                    }
                }
                if let Some(top) = frames.last_mut()
                    && top.map
                {
                    top.want_key = true;
                }
            }
            Event::DocumentEnd => break,
            _ => {}
        }
    }
    Ok(found)
}

/// The text a span covers (char offsets).
fn text_at<'a>(text: &'a str, span: &Span) -> &'a str {
    let (a, b) = (byte(text, span.start.index()), byte(text, span.end.index()));
    &text[a..b.max(a)]
}

fn anchor_name(text: &str, span: &Span) -> Option<String> {
    let t = text_at(text, span);
    t.strip_prefix('*').map(|n| n.trim().to_string())
}

/// The byte offset of char offset `i`.
fn byte(text: &str, i: usize) -> usize {
    text.char_indices().nth(i).map_or(text.len(), |(b, _)| b)
}

/// `value` written as the replaced scalar was: plain stays plain, quoted
/// keeps its quote.
fn render(value: &str, style: ScalarStyle) -> String {
    match style {
        ScalarStyle::SingleQuoted => format!("'{}'", value.replace('\'', "''")),
        ScalarStyle::Plain => value.to_string(),
        _ => format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\"")),
    }
}

/// The value of the scalar at `span` as written, without its quotes.
fn written(text: &str, span: &Span, style: ScalarStyle) -> String {
    let t = text_at(text, span).trim();
    match style {
        ScalarStyle::Plain => t.to_string(),
        _ => t.trim_matches(['"', '\'']).to_string(),
    }
}

/// `text` with `lines` after its last line.
fn append(text: &str, lines: &str) -> String {
    let sep = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    format!("{text}{sep}{lines}")
}

fn replace(text: &str, span: &Span, with: &str) -> String {
    let (a, b) = (byte(text, span.start.index()), byte(text, span.end.index()));
    format!("{}{with}{}", &text[..a], &text[b..])
}

/// The value of top-level `key`'s entry `sub` set to `value`, and what it
/// was (`None`: added). A block mapping gets a new line at its keys'
/// column after its last entry; a flow mapping `, sub: "value"` before
/// its `}`; a file without `key` gets `key:` with the entry at its end.
///
/// # Errors
/// The file does not parse, the entry (or `key`) is an alias or a
/// collection.
pub fn set_entry(
    text: &str,
    key: &str,
    sub: &str,
    value: &str,
) -> Result<(String, Option<String>), EditError> {
    let path = format!("{key}.{sub}");
    let found = find(text, key, Some(sub))?;
    let Some(found) = found else {
        return Ok((append(text, &format!("{key}:\n  {sub}: {value}\n")), None));
    };
    if let Some(anchor) = found.alias {
        return Err(EditError::Alias {
            path: key.into(),
            anchor,
        });
    }
    let Some(m) = found.mapping else {
        return Err(EditError::NotMapping(key.into()));
    };
    if let Some(e) = m.entry {
        if let Some(anchor) = e.alias {
            return Err(EditError::Alias { path, anchor });
        }
        if let Some(kind) = e.collection {
            return Err(EditError::NotScalar { path, found: kind });
        }
        let (span, style) = e
            .scalar
            .expect("an entry is a scalar, an alias or a collection");
        let old = written(text, &span, style);
        return Ok((replace(text, &span, &render(value, style)), Some(old)));
    }
    if m.flow {
        let end = m.end.ok_or_else(|| EditError::NotMapping(key.into()))?;
        let at = byte(text, end.start.index());
        let sep = if m.last_value_end.is_some() { ", " } else { "" };
        let entry = format!("{sep}{sub}: {}", render(value, ScalarStyle::DoubleQuoted));
        return Ok((format!("{}{entry}{}", &text[..at], &text[at..]), None));
    }
    // Block: after the line of the last entry's value.
    let col = m.key_col.unwrap_or(2);
    let after = m.last_value_end.map_or(text.len(), |i| byte(text, i));
    let line_end = text[after..].find('\n').map_or(text.len(), |n| after + n);
    let line = format!("\n{}{sub}: {value}", " ".repeat(col));
    let mut out = format!("{}{line}{}", &text[..line_end], &text[line_end..]);
    if line_end == text.len() {
        out.push('\n');
    }
    Ok((out, None))
}

/// Top-level `key` set to the scalar `value` (replaced in place, or a line
/// added at the end), and what it was.
///
/// # Errors
/// The file does not parse, or `key` is an alias or a collection.
pub fn set_top(text: &str, key: &str, value: &str) -> Result<(String, Option<String>), EditError> {
    let found = find(text, key, None)?;
    let Some(found) = found else {
        return Ok((append(text, &format!("{key}: {value}\n")), None));
    };
    if let Some(anchor) = found.alias {
        return Err(EditError::Alias {
            path: key.into(),
            anchor,
        });
    }
    let Some((span, style)) = found.scalar else {
        return Err(EditError::NotScalar {
            path: key.into(),
            found: if found.mapping.is_some() {
                "mapping"
            } else {
                "sequence"
            },
        });
    };
    let old = written(text, &span, style);
    Ok((replace(text, &span, &render(value, style)), Some(old)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn pin(d: &str) -> String {
        format!("reg.example/app@{d}")
    }

    /// Every byte but the value stays: comments, order, quoting, styles.
    #[test]
    fn a_pin_is_replaced_in_place_in_block_and_flow_files() {
        let block = format!(
            "# the shop\nversion: \"1.2\"   # shown in history\nimages:\n  # the app\n  web: {}  # bumped by CI\n  db: \"{}\"\nsmoke: {{timeout: 60s}}\n",
            pin(A),
            pin(A)
        );
        let (out, old) = set_entry(&block, "images", "web", &pin(B)).unwrap();
        assert_eq!(old.as_deref(), Some(pin(A).as_str()));
        assert_eq!(
            out,
            block.replacen(&format!("web: {}", pin(A)), &format!("web: {}", pin(B)), 1)
        );
        let (out, old) = set_entry(&block, "images", "db", &pin(B)).unwrap();
        assert_eq!(old.as_deref(), Some(pin(A).as_str()));
        assert_eq!(
            out,
            block.replacen(
                &format!("db: \"{}\"", pin(A)),
                &format!("db: \"{}\"", pin(B)),
                1
            )
        );

        let flow = format!(
            "images: {{web: \"{}\", db: '{}'}}  # both\n",
            pin(A),
            pin(A)
        );
        let (out, _) = set_entry(&flow, "images", "db", &pin(B)).unwrap();
        assert_eq!(
            out,
            format!(
                "images: {{web: \"{}\", db: '{}'}}  # both\n",
                pin(A),
                pin(B)
            )
        );
    }

    #[test]
    fn a_new_service_is_added_where_its_neighbours_are() {
        let block = format!("images:\n    web: {}   # note\nenv: {{A: b}}\n", pin(A));
        let (out, old) = set_entry(&block, "images", "worker", &pin(B)).unwrap();
        assert_eq!(old, None);
        assert_eq!(
            out,
            format!(
                "images:\n    web: {}   # note\n    worker: {}\nenv: {{A: b}}\n",
                pin(A),
                pin(B)
            )
        );
        let flow = format!("images: {{web: {}}}\n", pin(A));
        let (out, _) = set_entry(&flow, "images", "worker", &pin(B)).unwrap();
        assert_eq!(
            out,
            format!("images: {{web: {}, worker: \"{}\"}}\n", pin(A), pin(B))
        );
        let (out, _) = set_entry("environment: staging", "images", "web", &pin(B)).unwrap();
        assert_eq!(
            out,
            format!("environment: staging\nimages:\n  web: {}\n", pin(B))
        );
    }

    #[test]
    fn anchors_stay_and_an_alias_is_refused_by_name() {
        let text = format!(
            "x-app: &app {}\nimages:\n  web: *app\n  db: {}\n",
            pin(A),
            pin(A)
        );
        let e = set_entry(&text, "images", "web", &pin(B)).unwrap_err();
        assert_eq!(
            e,
            EditError::Alias {
                path: "images.web".into(),
                anchor: "app".into()
            }
        );
        let (out, _) = set_entry(&text, "images", "db", &pin(B)).unwrap();
        assert_eq!(
            out,
            format!(
                "x-app: &app {}\nimages:\n  web: *app\n  db: {}\n",
                pin(A),
                pin(B)
            )
        );
    }

    #[test]
    fn the_version_is_set_in_place_or_added() {
        let (out, old) = set_top("version: '1.2' # label\nimages: {}\n", "version", "1.3").unwrap();
        assert_eq!(
            (out.as_str(), old.as_deref()),
            ("version: '1.3' # label\nimages: {}\n", Some("1.2"))
        );
        let (out, old) = set_top("images: {}\n", "version", "1.3").unwrap();
        assert_eq!((out.as_str(), old), ("images: {}\nversion: 1.3\n", None));
        assert!(matches!(
            set_top("version: [1]\n", "version", "2"),
            Err(EditError::NotScalar { .. })
        ));
    }
}
