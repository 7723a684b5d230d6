//! The compose tags `!reset` and `!override` (compose-spec `merge.md`):
//! `key: !reset …` removes the key from the merged model, `key: !override
//! …` replaces what it would otherwise merge with. The YAML parser reads
//! values without their tags, so the tags are found in a second pass over
//! the parser's events and marked in the value, as a one-entry mapping
//! ([`RESET`] or [`OVERRIDE`] → the value), for the `extends` merge to
//! honour; [`strip`] then applies what is left, as compose does within one
//! file, so the resolved model never carries a mark. The same pass gives
//! profile names back as written: the parser reads `profiles: [off]` as
//! YAML 1.1 does (a boolean), compose as YAML 1.2 does (the string `off`).
//! Pure.

use granit_parser::{Event, Parser, ScalarStyle};
use serde_json::{Map, Value};

/// The mark of a value tagged `!reset` (a key no YAML file can hold).
pub const RESET: &str = "\u{0}!reset";
/// The mark of a value tagged `!override`.
pub const OVERRIDE: &str = "\u{0}!override";

/// One step of a path into a YAML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Whether `text` may hold one of the tags (a cheap test before the event
/// pass).
pub fn mentions(text: &str) -> bool {
    text.contains("!reset") || text.contains("!override")
}

struct Frame {
    seq: bool,
    /// The current key of a mapping (`None`: a key that is not a plain
    /// scalar, whose value no path can name).
    key: Option<String>,
    index: usize,
    want_key: bool,
    /// This collection is itself a mapping key.
    is_key: bool,
}

fn path(frames: &[Frame]) -> Option<Vec<Seg>> {
    frames
        .iter()
        .map(|f| {
            if f.is_key {
                None
            } else if f.seq {
                Some(Seg::Index(f.index))
            } else {
                f.key.clone().map(Seg::Key)
            }
        })
        .collect()
}

fn after_value(frames: &mut [Frame]) {
    if let Some(top) = frames.last_mut() {
        if top.seq {
            top.index += 1;
        } else {
            top.want_key = true;
        }
    }
}

/// What the YAML parser's value loses, found in `text`'s first document.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Nodes tagged `!reset` or `!override`, with the mark each gets.
    pub marks: Vec<(Vec<Seg>, &'static str)>,
    /// Profile names the parser reads as YAML 1.1 booleans (`off`, `yes`):
    /// compose reads YAML 1.2, where they are the strings written.
    pub words: Vec<(Vec<Seg>, String)>,
}

/// A plain scalar YAML 1.1 reads as a boolean and YAML 1.2 as a string.
fn yaml11_bool(s: &str) -> bool {
    matches!(
        s,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "on"
            | "On"
            | "ON"
            | "off"
            | "Off"
            | "OFF"
    )
}

/// Scans `text` (see [`Scan`]). Nodes reached only through a merge key
/// (`<<`) or an alias are not found. A document the parser refuses gives
/// what was found before the error (the value's own parse reports it).
pub fn scan(text: &str) -> Scan {
    let mut out = Scan::default();
    let mut frames: Vec<Frame> = Vec::new();
    for event in Parser::new_from_str(text) {
        let Ok((event, _)) = event else { break };
        let (scalar, start, tag) = match event {
            Event::Scalar(v, style, _, tag) => {
                if style == ScalarStyle::Plain
                    && tag.is_none()
                    && yaml11_bool(&v)
                    && let Some(p) = path(&frames)
                    && matches!(p.as_slice(), [.., Seg::Key(k), Seg::Index(_)] if k == "profiles")
                {
                    out.words.push((p, v.to_string()));
                }
                (Some(v.into_owned()), None, tag)
            }
            Event::SequenceStart(_, _, tag) => (None, Some(true), tag),
            Event::MappingStart(_, _, tag) => (None, Some(false), tag),
            Event::Alias(_) => (None, None, None),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(done) = frames.pop()
                    && !done.is_key
                {
                    after_value(&mut frames);
                }
                continue;
            }
            Event::DocumentEnd => break,
            _ => continue,
        };
        if let Some(top) = frames.last_mut()
            && !top.seq
            && top.want_key
        {
            top.want_key = false;
            top.key = scalar;
            if let Some(seq) = start {
                frames.push(Frame {
                    seq,
                    key: None,
                    index: 0,
                    want_key: !seq,
                    is_key: true,
                });
            }
            continue;
        }
        let mark = tag.as_deref().and_then(|t| match (t.handle(), t.suffix()) {
            ("!", "reset") => Some(RESET),
            ("!", "override") => Some(OVERRIDE),
            _ => None,
        });
        if let Some(mark) = mark
            && let Some(p) = path(&frames)
        {
            out.marks.push((p, mark));
        }
        match start {
            Some(seq) => frames.push(Frame {
                seq,
                key: None,
                index: 0,
                want_key: !seq,
                is_key: false,
            }),
            None => after_value(&mut frames),
        }
    }
    out
}

fn node_at<'v>(value: &'v mut Value, path: &[Seg]) -> Option<&'v mut Value> {
    path.iter().try_fold(value, |v, seg| match seg {
        Seg::Key(k) => v.as_object_mut()?.get_mut(k),
        Seg::Index(i) => v.as_array_mut()?.get_mut(*i),
    })
}

/// Gives `value` (parsed from `text`) back what the parser lost: each node
/// `text` tags `!reset` or `!override` marked, each profile name read as
/// a boolean the string written.
pub fn mark(value: &mut Value, text: &str) {
    if !mentions(text) && !text.contains("profiles") {
        return;
    }
    let Scan { mut marks, words } = scan(text);
    for (p, word) in words {
        if let Some(node) = node_at(value, &p)
            && node.is_boolean()
        {
            *node = Value::String(word);
        }
    }
    // The deepest first: marking a node wraps it, and a path into it would
    // no longer lead anywhere.
    marks.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    for (p, m) in marks {
        if let Some(node) = node_at(value, &p) {
            let inner = std::mem::take(node);
            *node = Value::Object(Map::from_iter([(m.to_string(), inner)]));
        }
    }
}

/// The mark of `v` and the value it wraps, when `v` is marked.
pub fn marked(v: &Value) -> Option<(&'static str, &Value)> {
    let m = v.as_object().filter(|m| m.len() == 1)?;
    [RESET, OVERRIDE]
        .into_iter()
        .find_map(|mark| m.get(mark).map(|inner| (mark, inner)))
}

/// `v` without its mark (a marked value's content; others unchanged).
pub fn unmark(v: Value) -> Value {
    match v {
        Value::Object(m) if m.len() == 1 && (m.contains_key(RESET) || m.contains_key(OVERRIDE)) => {
            m.into_iter()
                .next()
                .map(|(_, inner)| inner)
                .unwrap_or_default()
        }
        v => v,
    }
}

/// Whether any node of `v` is marked.
pub fn any(v: &Value) -> bool {
    match v {
        Value::Object(m) => marked(v).is_some() || m.values().any(any),
        Value::Array(a) => a.iter().any(any),
        _ => false,
    }
}

/// Applies the marks left after merging, as compose does within one file:
/// a `!reset` entry leaves its mapping or sequence, an `!override` value
/// is its content.
pub fn strip(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let old = std::mem::take(m);
            for (k, e) in old {
                if matches!(marked(&e), Some((RESET, _))) {
                    continue;
                }
                let mut e = unmark(e);
                strip(&mut e);
                m.insert(k, e);
            }
        }
        Value::Array(a) => {
            let old = std::mem::take(a);
            for e in old {
                if matches!(marked(&e), Some((RESET, _))) {
                    continue;
                }
                let mut e = unmark(e);
                strip(&mut e);
                a.push(e);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(text: &str) -> Value {
        let mut v: Value = serde_saphyr::from_str(text).unwrap();
        mark(&mut v, text);
        v
    }

    #[test]
    fn tags_are_found_where_they_are_written() {
        let text = "services:\n  web:\n    ports: !reset []\n    environment: !override\n      A: b\n    volumes:\n      - x:/x\n      - !reset y:/y\n    ? [complex, key]\n    : !reset z\n    labels: {a: !custom b, c: !override d}\n";
        let found = scan(text).marks;
        let k = |s: &str| Seg::Key(s.to_string());
        assert_eq!(
            found,
            vec![
                (vec![k("services"), k("web"), k("ports")], RESET),
                (vec![k("services"), k("web"), k("environment")], OVERRIDE),
                (
                    vec![k("services"), k("web"), k("volumes"), Seg::Index(1)],
                    RESET
                ),
                (vec![k("services"), k("web"), k("labels"), k("c")], OVERRIDE),
            ]
        );
        assert_eq!(scan("a: !reset\n").marks.len(), 1);
        // A document the parser refuses: what came before the error, no panic.
        assert_eq!(scan("a: !reset x\nb: [c\n").marks.len(), 1);
    }

    #[test]
    fn marks_wrap_values_and_strip_applies_them() {
        let mut v = parsed(
            "services:\n  web:\n    image: a\n    ports: !reset [\"80:80\"]\n    command: !override [b]\n    dns: [1.1.1.1, !reset 8.8.8.8]\n",
        );
        assert_eq!(v["services"]["web"]["ports"], json!({RESET: ["80:80"]}));
        assert!(any(&v));
        strip(&mut v);
        assert_eq!(
            v,
            json!({"services": {"web": {"image": "a", "command": ["b"], "dns": ["1.1.1.1"]}}})
        );
        assert!(!any(&v));
        // A file without the tags is left as parsed.
        assert_eq!(parsed("a: [b]\n"), json!({"a": ["b"]}));
    }

    #[test]
    fn profile_names_are_the_strings_written() {
        let v = parsed(
            "services:\n  web:\n    profiles: [off, Yes, 'no', debug]\n    privileged: yes\n    x: [off]\n",
        );
        assert_eq!(
            v["services"]["web"],
            json!({"profiles": ["off", "Yes", "no", "debug"], "privileged": true, "x": [false]}),
            "only profile names: compose reads `privileged: yes` as true"
        );
    }
}
