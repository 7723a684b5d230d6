//! The compose-spec JSON schema (`vendor/compose-spec/`), checked on the
//! resolved model as compose checks a file against the copy it embeds:
//! unknown keys and wrong types are refused as compose refuses them, each
//! with its field, what the schema expects and, for a mistyped key, the
//! near key it allows there ("did you mean `environment`?"). Pure; the
//! schema is compiled once.

use super::finding::{Sink, nearest};
use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use serde_json::Value;
use std::sync::LazyLock;

/// The schema as vendored (see `vendor/compose-spec/README.md`).
const SCHEMA_TEXT: &str = include_str!("../../vendor/compose-spec/compose-spec.json");

static SCHEMA: LazyLock<Value> =
    LazyLock::new(|| serde_json::from_str(SCHEMA_TEXT).expect("the vendored schema is JSON"));

static VALIDATOR: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    jsonschema::options()
        .build(&SCHEMA)
        .expect("the vendored schema compiles")
});

/// How many schema findings one file gets (the rest are what fixing these
/// shows next).
pub const MAX_FINDINGS: usize = 20;

/// A JSON type as a person says it.
fn type_word(t: &str) -> &'static str {
    match t {
        "object" => "a mapping",
        "array" => "a list",
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean",
        "null" => "empty",
        _ => "something else",
    }
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::Bool(_) => "boolean",
        Value::Null => "null",
    }
}

/// "a mapping or a list".
fn words(types: &[String]) -> String {
    let mut w: Vec<&str> = types.iter().map(|t| type_word(t)).collect();
    w.dedup();
    match w.split_last() {
        None => "something else".into(),
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// The node a JSON pointer names in the schema (`$ref`s followed).
fn schema_at(pointer: &str) -> Option<&'static Value> {
    let node = SCHEMA.pointer(pointer)?;
    Some(deref(node))
}

fn deref(node: &'static Value) -> &'static Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix('#')
            .and_then(|p| SCHEMA.pointer(p))
            .map(deref)
            .unwrap_or(node),
        None => node,
    }
}

/// The JSON types a schema node allows, through `$ref`, `oneOf` and
/// `anyOf`.
fn types_of(node: &'static Value, depth: usize) -> Vec<String> {
    let node = deref(node);
    let mut out: Vec<String> = match node.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    if depth < 4 {
        for k in ["oneOf", "anyOf"] {
            for alt in node.get(k).and_then(Value::as_array).into_iter().flatten() {
                for t in types_of(alt, depth + 1) {
                    if !out.contains(&t) {
                        out.push(t);
                    }
                }
            }
        }
    }
    out
}

/// The keys the schema allows in the mapping whose `additionalProperties`
/// refused a key (`schema_path` ends in it).
fn allowed_keys(schema_path: &str) -> Vec<String> {
    let parent = schema_path
        .strip_suffix("/additionalProperties")
        .unwrap_or(schema_path);
    schema_at(parent)
        .and_then(|n| n.get("properties"))
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// An instance path as stackpin names fields: `services.web.ports[0]`.
fn field_of<'a>(segments: impl Iterator<Item = LocationSegment<'a>>) -> String {
    let mut out = String::new();
    for s in segments {
        match s {
            LocationSegment::Property(p) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&p);
            }
            LocationSegment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Whether `a` is `b` or lies inside it (or the reverse): one of them is
/// already said.
fn related(a: &str, b: &str) -> bool {
    let inside = |x: &str, y: &str| {
        x == y || (x.starts_with(y) && matches!(x.as_bytes().get(y.len()), Some(b'.' | b'[')))
    };
    inside(a, b) || inside(b, a)
}

/// One finding: field, message, fix.
type Problem = (String, String, String);

/// What the schema refuses in `value`, at most [`MAX_FINDINGS`] (the rest
/// are what fixing these shows next).
pub fn problems(value: &Value) -> Vec<Problem> {
    let mut out: Vec<Problem> = Vec::new();
    for e in VALIDATOR.iter_errors(value) {
        if out.len() >= MAX_FINDINGS {
            break;
        }
        let field = field_of(e.instance_path().segments());
        let schema_path = e.schema_path().as_str().to_string();
        let instance = value
            .pointer(e.instance_path().as_str())
            .unwrap_or(&Value::Null);
        let found = type_word(type_of(instance));
        let problem: Vec<Problem> = match e.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let allowed = allowed_keys(&schema_path);
                unexpected
                    .iter()
                    .map(|k| {
                        let at = if field.is_empty() {
                            k.clone()
                        } else {
                            format!("{field}.{k}")
                        };
                        let what = if field.is_empty() {
                            format!("unknown top-level key `{k}`")
                        } else {
                            format!("unknown key `{k}`")
                        };
                        let fix = match nearest(k, &allowed) {
                            Some(near) => format!("did you mean `{near}`?"),
                            None => format!(
                                "remove it, or name it `x-{k}` to keep it as an extension (compose refuses keys the specification does not define)"
                            ),
                        };
                        (at, what, fix)
                    })
                    .collect()
            }
            ValidationErrorKind::Type { kind } => {
                let types: Vec<String> = match kind {
                    TypeKind::Single(t) => vec![t.to_string()],
                    TypeKind::Multiple(set) => set.iter().map(|t| t.to_string()).collect(),
                };
                vec![(
                    field.clone(),
                    format!("must be {}, found {found}", words(&types)),
                    format!("write `{}` as {}", last_key(&field), words(&types)),
                )]
            }
            ValidationErrorKind::OneOfNotValid { .. } | ValidationErrorKind::AnyOf { .. } => {
                let types = schema_at(&schema_path)
                    .map(|n| {
                        // The failing keyword's alternatives.
                        let mut t = Vec::new();
                        for alt in n.as_array().into_iter().flatten() {
                            for x in types_of(alt, 0) {
                                if !t.contains(&x) {
                                    t.push(x);
                                }
                            }
                        }
                        t
                    })
                    .unwrap_or_default();
                let message = if !types.is_empty()
                    && !types.iter().any(|t| {
                        t == type_of(instance) || (t == "number" && type_of(instance) == "integer")
                    }) {
                    format!("must be {}, found {found}", words(&types))
                } else {
                    "matches none of the forms the compose specification allows".to_string()
                };
                vec![(
                    field.clone(),
                    message,
                    format!(
                        "write `{}` in one of the forms of the compose reference",
                        last_key(&field)
                    ),
                )]
            }
            _ => vec![(
                field.clone(),
                short(&e.to_string()),
                format!(
                    "fix `{}` as the compose reference describes it",
                    last_key(&field)
                ),
            )],
        };
        for p in problem {
            if !out.iter().any(|o| related(&o.0, &p.0)) {
                out.push(p);
            }
        }
    }
    out
}

/// The last key of a field (`ports` of `services.web.ports`).
fn last_key(field: &str) -> &str {
    let key = field.rsplit('.').next().unwrap_or(field);
    if key.is_empty() { "the file" } else { key }
}

/// A message cut to one readable line.
fn short(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() > 200 {
        format!("{}…", line.chars().take(200).collect::<String>())
    } else {
        line.to_string()
    }
}

/// Reports [`problems`] into `sink`, leaving out a field the sink already
/// holds an error for (or one inside it, or around it): stackpin's own
/// check said it, with its fix.
pub fn check(value: &Value, sink: &mut Sink<'_>) {
    for (field, message, fix) in problems(value) {
        let said = sink.out.iter().any(|f| {
            f.file == sink.file && f.severity == super::Severity::Error && related(&f.field, &field)
        });
        if !said {
            sink.error(field, message, fix);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> Vec<(String, String, String)> {
        problems(&v)
    }

    #[test]
    fn a_valid_model_has_no_problems() {
        let v = json!({
            "name": "shop",
            "services": {"web": {
                "image": "a", "environment": ["A=1"], "ports": ["8080:80", {"target": 80}],
                "volumes": ["./c:/c:ro", {"type": "bind", "source": "./d", "target": "/d", "read_only": true}],
                "deploy": {"resources": {"limits": {"memory": "1g", "cpus": "0.5"}}},
                "healthcheck": {"test": ["CMD", "true"], "interval": "5s"},
                "depends_on": {"db": {"condition": "service_healthy", "required": false}},
                "x-anything": {"a": 1}
            }, "db": {"image": "b", "profiles": ["debug"], "cpus": "${CPUS}"}},
            "x-common": {"b": 2},
            "volumes": {"data": {}}
        });
        assert_eq!(fields(v), Vec::<Problem>::new());
    }

    #[test]
    fn unknown_keys_get_the_near_key() {
        let p = fields(
            json!({"services": {"web": {"image": "a", "enviroment": {"A": "1"}}}, "volume": {}}),
        );
        assert_eq!(
            p,
            vec![
                (
                    "services.web.enviroment".to_string(),
                    "unknown key `enviroment`".to_string(),
                    "did you mean `environment`?".to_string()
                ),
                (
                    "volume".to_string(),
                    "unknown top-level key `volume`".to_string(),
                    "did you mean `volumes`?".to_string()
                ),
            ]
        );
        let p = fields(json!({"services": {"web": {"image": "a", "zzz": 1}}}));
        assert!(p[0].2.contains("x-zzz"), "{p:?}");
    }

    #[test]
    fn wrong_types_say_what_is_expected() {
        let p = fields(
            json!({"services": {"web": {"image": "a", "ports": "8080:80", "privileged": [true]}}}),
        );
        let by: std::collections::BTreeMap<_, _> =
            p.iter().map(|(f, m, _)| (f.as_str(), m.as_str())).collect();
        assert_eq!(by["services.web.ports"], "must be a list, found a string");
        assert_eq!(
            by["services.web.privileged"],
            "must be a boolean or a string, found a list"
        );
        let p = fields(json!({"services": {"web": {"image": "a", "environment": "A=1"}}}));
        assert_eq!(p[0].0, "services.web.environment");
        assert!(
            p[0].1
                .contains("must be a mapping or a list, found a string"),
            "{p:?}"
        );
    }

    #[test]
    fn related_fields_are_said_once() {
        assert!(related("services.web", "services.web.ports[0]"));
        assert!(related("services.web.ports", "services.web.ports"));
        assert!(!related("services.web", "services.webapp"));
    }
}
