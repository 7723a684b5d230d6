//! Compose as users write it (issue 15 part 4): `include:`, `extends:` and
//! service `profiles:` resolved into one self-contained model, the one the
//! release runs (`compose.resolved.yaml`) and the one every rule checks.
//! YAML anchors and merge keys are expanded by the parser before this.
//!
//! Follows the Compose specification (`include.md`, `extends.md`,
//! `merge.md`, `profiles.md`):
//! - `include:` entries (a path, or `{path: PATH | [PATH…]}`) name files of
//!   the stack directory, relative to the including file; their services,
//!   networks, volumes, configs and secrets join the model, and a name
//!   defined twice is an error. Their relative paths (bind sources,
//!   `env_file`, `configs`/`secrets` files) are rewritten relative to the
//!   main compose file, as compose resolves them against the included
//!   file's directory.
//! - `extends: NAME` or `{service, file}` merges the base service under the
//!   extending one: mappings key by key, `environment`/`labels`/
//!   `extra_hosts`/`sysctls` by variable, `volumes`/`devices` by target,
//!   `command`/`entrypoint`/`healthcheck.test` replaced, other lists
//!   appended without duplicates (`env_file`, `dns`, `dns_search`, `tmpfs`
//!   and `label_file` as lists when written as one string). A value tagged
//!   `!reset` removes its key, one tagged `!override` replaces the base's
//!   ([`super::tags`]); in a file without `extends` the tags apply as
//!   compose applies them within one file. A base service that depends on others
//!   (`depends_on`, `links`, `volumes_from`) is refused, as the spec says.
//! - A service with `profiles:` runs only when one of them is in stack.yaml
//!   `profiles:`; the others leave the model, and a running service may not
//!   depend on one of them.
//!
//! Pure: the files come from the stack's file map, parse errors are
//! reported by the caller's `parse`.

use super::paths::PathProblem;
use super::tags;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// The resolved model's file in the release, beside the compose file.
pub const RESOLVED_FILE: &str = "compose.resolved.yaml";

/// How deep includes and extends may nest (a cycle stops here too).
const MAX_DEPTH: usize = 8;

/// What cannot be resolved: the file (relative to the stack directory) and
/// field it is about, why, and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub field: String,
    pub message: String,
    pub fix: String,
}

/// The model after resolution.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub value: Value,
    /// Whether `include`, `extends` or `profiles` were used: then the release
    /// runs [`RESOLVED_FILE`] instead of the compose file as written.
    pub changed: bool,
    /// Services their profiles leave out on this stack.
    pub inactive: BTreeSet<String>,
    /// Relative binds the compose file left writable, now read-only: the
    /// field (`services.web.volumes[0]`) and the source as written.
    pub made_read_only: Vec<(String, String)>,
    /// Services defined in an included file: that file (relative to the
    /// stack directory) and the chain of includes that led to it
    /// (`compose.yaml -> db/compose.yaml`).
    pub origin: BTreeMap<String, (String, String)>,
}

/// A parser of stack files: `None` when the file is not valid YAML (the
/// parser has reported why).
pub type Parse<'a> = dyn FnMut(&str, &[u8]) -> Option<Value> + 'a;

/// Resolves the compose file `main_rel` (its parsed `main` value) of a
/// stack whose files are `files`, with the stack's active `profiles`.
///
/// # Errors
/// The first [`Problem`]; `Ok(None)` when an included or extended file did
/// not parse (`parse` reported it).
pub fn resolve(
    main: Value,
    main_rel: &str,
    files: &BTreeMap<String, Vec<u8>>,
    profiles: &[String],
    parse: &mut Parse<'_>,
) -> Result<Option<Resolved>, Problem> {
    let mut r = Resolver {
        files,
        parse,
        changed: false,
        chain: vec![main_rel.to_string()],
        origin: BTreeMap::new(),
    };
    let Some(mut value) = r.file(main, main_rel, 0)? else {
        return Ok(None);
    };
    if tags::any(&value) {
        // Applied here as compose applies them; the file as written would
        // carry tags docker-compose v1 cannot read.
        tags::strip(&mut value);
        r.changed = true;
    }
    let inactive = apply_profiles(&mut value, main_rel, profiles, &mut r.changed)?;
    let made_read_only = read_only_binds(&mut value);
    r.changed |= !made_read_only.is_empty();
    if r.changed
        && let Some(top) = value.as_object_mut()
    {
        // Extension fields only carry anchors; the resolved file runs
        // without them.
        top.retain(|k, _| !k.starts_with("x-"));
    }
    Ok(Some(Resolved {
        value,
        changed: r.changed,
        inactive,
        made_read_only,
        origin: r.origin,
    }))
}

struct Resolver<'a, 'p> {
    files: &'a BTreeMap<String, Vec<u8>>,
    parse: &'a mut Parse<'p>,
    changed: bool,
    /// The files being resolved, the main one first: a file that appears
    /// twice closes a cycle.
    chain: Vec<String>,
    /// See [`Resolved::origin`].
    origin: BTreeMap<String, (String, String)>,
}

fn problem(
    file: &str,
    field: impl Into<String>,
    message: impl Into<String>,
    fix: impl Into<String>,
) -> Problem {
    Problem {
        file: file.to_string(),
        field: field.into(),
        message: message.into(),
        fix: fix.into(),
    }
}

/// The directory part of a stack-relative path ("" at the top).
fn dir_of(rel: &str) -> &str {
    rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

/// `dir/p` with `.` and `..` resolved; `Err` when it leaves the stack
/// directory or is absolute.
pub fn join_clean(dir: &str, p: &str) -> Result<String, PathProblem> {
    if p.starts_with('/') {
        return Err(PathProblem::Absolute);
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(PathProblem::ParentDir);
                }
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(PathProblem::Empty);
    }
    Ok(parts.join("/"))
}

/// `target` (stack-relative) as a path relative to `base` (a directory,
/// stack-relative), starting with `./` or `../` as compose wants a
/// relative bind source to.
fn relative_to(target: &str, base: &str) -> String {
    let t: Vec<&str> = target.split('/').filter(|c| !c.is_empty()).collect();
    let b: Vec<&str> = base.split('/').filter(|c| !c.is_empty()).collect();
    let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out: Vec<&str> = vec![".."; b.len() - common];
    out.extend(&t[common..]);
    let joined = out.join("/");
    if joined.starts_with("..") {
        joined
    } else {
        format!("./{joined}")
    }
}

impl Resolver<'_, '_> {
    /// A compose file with its includes and extends resolved; its relative
    /// paths still relative to its own directory.
    fn file(
        &mut self,
        mut value: Value,
        rel: &str,
        depth: usize,
    ) -> Result<Option<Value>, Problem> {
        if !value.is_object() {
            return Ok(Some(value)); // compose::check reports it
        }
        if !self.includes(&mut value, rel, depth)? {
            return Ok(None);
        }
        if !self.extends(&mut value, rel, depth)? {
            return Ok(None);
        }
        Ok(Some(value))
    }

    /// Reads and resolves another file of the stack.
    fn load(
        &mut self,
        from: &str,
        field: &str,
        target: &str,
        depth: usize,
    ) -> Result<Option<Value>, Problem> {
        if let Some(at) = self.chain.iter().position(|f| f == target) {
            let mut cycle = self.chain[at..].to_vec();
            cycle.push(target.to_string());
            return Err(problem(
                from,
                field,
                format!("includes or extends form a cycle: {}", cycle.join(" -> ")),
                format!("remove the reference to {target} from {from}, or the one that leads back"),
            ));
        }
        if depth >= MAX_DEPTH {
            return Err(problem(
                from,
                field,
                format!("`{target}` nests includes or extends more than {MAX_DEPTH} deep"),
                format!("flatten the chain {} -> {target}", self.chain.join(" -> ")),
            ));
        }
        let Some(bytes) = self.files.get(target) else {
            return Err(problem(
                from,
                field,
                format!("`{target}` does not exist in the stack directory"),
                "name a compose file of the stack directory, relative to the file that names it",
            ));
        };
        let Some(v) = (self.parse)(target, bytes) else {
            return Ok(None);
        };
        self.chain.push(target.to_string());
        let out = self.file(v, target, depth + 1);
        self.chain.pop();
        out
    }

    fn includes(&mut self, value: &mut Value, rel: &str, depth: usize) -> Result<bool, Problem> {
        let Some(include) = value.as_object_mut().and_then(|m| m.remove("include")) else {
            return Ok(true);
        };
        self.changed = true;
        let entries = match include {
            Value::Array(a) => a,
            Value::Null => Vec::new(),
            other => vec![other],
        };
        let dir = dir_of(rel).to_string();
        for (i, e) in entries.iter().enumerate() {
            let field = format!("include[{i}]");
            let paths: Vec<&str> = match e {
                Value::String(s) => vec![s.as_str()],
                Value::Object(m) => {
                    if let Some(k) = m.keys().find(|k| k.as_str() != "path") {
                        return Err(problem(
                            rel,
                            format!("{field}.{k}"),
                            format!(
                                "`{k}` is not supported: an included file resolves against its own directory and the stack's .env"
                            ),
                            "remove it; keep the included file's paths relative to that file",
                        ));
                    }
                    match m.get("path") {
                        Some(Value::String(s)) => vec![s.as_str()],
                        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                        _ => Vec::new(),
                    }
                }
                _ => Vec::new(),
            };
            if paths.is_empty() {
                return Err(problem(
                    rel,
                    field,
                    "names no file",
                    "write `include: [other.yaml]` or `include: [{path: other.yaml}]`",
                ));
            }
            for p in paths {
                let target = join_clean(&dir, p).map_err(|e| {
                    problem(
                        rel,
                        &field,
                        format!("\"{p}\" {e}"),
                        "include only files of the stack directory",
                    )
                })?;
                let Some(mut inc) = self.load(rel, &field, &target, depth)? else {
                    return Ok(false);
                };
                rebase_file(&mut inc, dir_of(&target), &dir);
                let top = value.as_object_mut().expect("checked above");
                for key in ["services", "networks", "volumes", "configs", "secrets"] {
                    let Some(Value::Object(add)) = inc.get_mut(key).map(std::mem::take) else {
                        continue;
                    };
                    let into = top.entry(key).or_insert_with(|| Value::Object(Map::new()));
                    if into.is_null() {
                        *into = Value::Object(Map::new());
                    }
                    let Some(into) = into.as_object_mut() else {
                        continue; // compose::check reports the type
                    };
                    for (name, v) in add {
                        if into.contains_key(&name) {
                            return Err(problem(
                                rel,
                                format!("{key}.{name}"),
                                format!(
                                    "`{name}` is defined both here and in the included {target}"
                                ),
                                "define it in one file only (an included file's resources cannot be overridden)",
                            ));
                        }
                        if key == "services" {
                            // The deepest include that defined it.
                            let chain = format!("{} -> {target}", self.chain.join(" -> "));
                            self.origin
                                .entry(name.clone())
                                .or_insert((target.clone(), chain));
                        }
                        into.insert(name, v);
                    }
                }
            }
        }
        Ok(true)
    }

    fn extends(&mut self, value: &mut Value, rel: &str, depth: usize) -> Result<bool, Problem> {
        let Some(services) = value.get("services").and_then(Value::as_object).cloned() else {
            return Ok(true);
        };
        let mut done: Map<String, Value> = Map::new();
        for name in services.keys() {
            let mut stack = Vec::new();
            let Some(v) = self.service(name, &services, rel, depth, &mut stack)? else {
                return Ok(false);
            };
            done.insert(name.clone(), v);
        }
        if let Some(s) = value.get_mut("services") {
            *s = Value::Object(done);
        }
        Ok(true)
    }

    /// Service `name` of the file `rel` (its `services`), its `extends`
    /// merged in.
    fn service(
        &mut self,
        name: &str,
        services: &Map<String, Value>,
        rel: &str,
        depth: usize,
        visiting: &mut Vec<String>,
    ) -> Result<Option<Value>, Problem> {
        let field = format!("services.{name}.extends");
        // Callers pass a service of `services`: the service that extends
        // checks that its base exists, so that the error names its field.
        let svc = services
            .get(name)
            .expect("a service of the file being resolved");
        let Some(ext) = svc.get("extends").cloned() else {
            return Ok(Some(svc.clone()));
        };
        self.changed = true;
        if visiting.iter().any(|v| v == name) || visiting.len() >= MAX_DEPTH {
            return Err(problem(
                rel,
                field,
                format!("`{name}` extends itself through {}", visiting.join(" -> ")),
                "break the cycle",
            ));
        }
        visiting.push(name.to_string());
        let (base_name, file) = match &ext {
            Value::String(s) => (s.clone(), None),
            Value::Object(m) => match m.get("service").and_then(Value::as_str) {
                Some(s) => (
                    s.to_string(),
                    m.get("file").and_then(Value::as_str).map(str::to_string),
                ),
                None => {
                    return Err(problem(
                        rel,
                        field,
                        "has no `service`",
                        "write `extends: {service: base, file: common.yaml}`",
                    ));
                }
            },
            _ => {
                return Err(problem(
                    rel,
                    field,
                    "must be a service name or a mapping",
                    "write `extends: {service: base, file: common.yaml}`",
                ));
            }
        };
        let base = match &file {
            None if !services.contains_key(&base_name) => {
                return Err(problem(
                    rel,
                    field,
                    format!("extends service `{base_name}`, which {rel} does not define"),
                    format!(
                        "name one of: {}, or add `file:`",
                        services.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            None => match self.service(&base_name, services, rel, depth, visiting)? {
                Some(b) => b,
                None => return Ok(None),
            },
            Some(f) => {
                let target = join_clean(dir_of(rel), f).map_err(|e| {
                    problem(
                        rel,
                        format!("{field}.file"),
                        format!("\"{f}\" {e}"),
                        "extend only files of the stack directory",
                    )
                })?;
                let Some(other) = self.load(rel, &format!("{field}.file"), &target, depth)? else {
                    return Ok(None);
                };
                let Some(b) = other
                    .get("services")
                    .and_then(|s| s.get(&base_name))
                    .cloned()
                else {
                    return Err(problem(
                        rel,
                        format!("{field}.service"),
                        format!("{target} defines no service `{base_name}`"),
                        format!("name a service of {target}"),
                    ));
                };
                let mut b = b;
                rebase_service(&mut b, dir_of(&target), dir_of(rel));
                b
            }
        };
        visiting.pop();
        for k in ["depends_on", "links", "volumes_from"] {
            if base.get(k).is_some() {
                return Err(problem(
                    rel,
                    field.clone(),
                    format!(
                        "base service `{base_name}` has `{k}`: a service that depends on others cannot be extended"
                    ),
                    format!("move `{k}` from `{base_name}` to the services that extend it"),
                ));
            }
        }
        let mut local = svc.clone();
        if let Some(m) = local.as_object_mut() {
            m.remove("extends");
        }
        Ok(Some(merge_service(base, local)))
    }
}

/// Whether a bind source names a path of the stack directory (`.`, `./x`,
/// `../x`): the release's own files.
fn relative_source(source: &str) -> bool {
    source == "." || source == ".." || source.starts_with("./") || source.starts_with("../")
}

/// The read-only step: a release's files never change (a later release is
/// a new directory, an old one is deleted), so a relative bind the compose
/// file leaves writable (compose's default) is mounted read-only; most such
/// mounts (`./nginx.conf:/etc/nginx/nginx.conf`) are only read. Returns the
/// binds changed. A source that does not start with `.` as written (`${D}/x`
/// included) is left to the powers check, which judges the model compose
/// resolves, after interpolation.
fn read_only_binds(value: &mut Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(services) = value.get_mut("services").and_then(Value::as_object_mut) else {
        return out;
    };
    for (name, svc) in services.iter_mut() {
        let Some(volumes) = svc.get_mut("volumes").and_then(Value::as_array_mut) else {
            continue;
        };
        for (i, v) in volumes.iter_mut().enumerate() {
            let source = match v {
                Value::String(s) => {
                    let mut parts: Vec<String> = s.split(':').map(str::to_string).collect();
                    if parts.len() < 2 || !relative_source(&parts[0]) {
                        continue;
                    }
                    let source = parts[0].clone();
                    match parts.get_mut(2) {
                        None => parts.push("ro".into()),
                        Some(opts) => {
                            let mut o: Vec<&str> =
                                opts.split(',').filter(|o| !o.is_empty()).collect();
                            if o.contains(&"ro") {
                                continue;
                            }
                            o.retain(|o| *o != "rw");
                            o.insert(0, "ro");
                            *opts = o.join(",");
                        }
                    }
                    *s = parts.join(":");
                    source
                }
                Value::Object(m) => {
                    let bind = m.get("type").and_then(Value::as_str) == Some("bind");
                    let source = m.get("source").and_then(Value::as_str).unwrap_or("");
                    if !bind
                        || !relative_source(source)
                        || m.get("read_only") == Some(&Value::Bool(true))
                    {
                        continue;
                    }
                    let source = source.to_string();
                    m.insert("read_only".into(), Value::Bool(true));
                    source
                }
                _ => continue,
            };
            out.push((format!("services.{name}.volumes[{i}]"), source));
        }
    }
    out
}

/// The profiles step: services whose `profiles` are all inactive leave the
/// model; the others lose the key (they run unconditionally from the
/// resolved file). Returns the services left out.
fn apply_profiles(
    value: &mut Value,
    rel: &str,
    active: &[String],
    changed: &mut bool,
) -> Result<BTreeSet<String>, Problem> {
    let mut inactive = BTreeSet::new();
    let Some(services) = value.get_mut("services").and_then(Value::as_object_mut) else {
        return Ok(inactive);
    };
    let mut left_out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, svc) in services.iter_mut() {
        let Some(m) = svc.as_object_mut() else {
            continue;
        };
        let Some(p) = m.remove("profiles") else {
            continue;
        };
        *changed = true;
        let names: Vec<String> = p
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if !names.iter().any(|n| active.contains(n)) {
            left_out.insert(name.clone(), names);
        }
    }
    for name in left_out.keys() {
        services.remove(name);
        inactive.insert(name.clone());
    }
    for (name, svc) in services.iter() {
        // A dependency marked `required: false` may be absent: compose
        // starts the service without it.
        let deps: Vec<String> = match svc.get("depends_on") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(Value::Object(m)) => m
                .iter()
                .filter(|(_, v)| v.get("required").and_then(Value::as_bool) != Some(false))
                .map(|(k, _)| k.clone())
                .collect(),
            _ => Vec::new(),
        };
        if let Some(d) = deps.iter().find(|d| left_out.contains_key(*d)) {
            return Err(problem(
                rel,
                format!("services.{name}.depends_on"),
                format!(
                    "`{d}` runs only with profile {} and stack.yaml `profiles:` activates none of them",
                    left_out[d].join(", ")
                ),
                "add one of them to stack.yaml `profiles:`, or drop the dependency",
            ));
        }
    }
    Ok(inactive)
}

/// Rewrites the relative paths of a whole compose file from `from` to `to`
/// (both directories relative to the stack directory).
fn rebase_file(v: &mut Value, from: &str, to: &str) {
    if from == to {
        return;
    }
    if let Some(services) = v.get_mut("services").and_then(Value::as_object_mut) {
        for svc in services.values_mut() {
            rebase_service(svc, from, to);
        }
    }
    for key in ["configs", "secrets"] {
        if let Some(m) = v.get_mut(key).and_then(Value::as_object_mut) {
            for e in m.values_mut() {
                if let Some(Value::String(f)) = e.get_mut("file") {
                    rebase_path(f, from, to);
                }
            }
        }
    }
}

fn rebase_path(p: &mut String, from: &str, to: &str) {
    if p.starts_with('/') || p.starts_with('~') {
        return;
    }
    if let Ok(full) = join_clean(from, p) {
        *p = relative_to(&full, to);
    }
}

/// Rewrites a service's relative bind sources and `env_file`s.
fn rebase_service(svc: &mut Value, from: &str, to: &str) {
    if from == to {
        return;
    }
    if let Some(vols) = svc.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in vols {
            match v {
                Value::String(s) if s.starts_with('.') => {
                    if let Some((src, rest)) = s.split_once(':') {
                        let mut src = src.to_string();
                        rebase_path(&mut src, from, to);
                        *s = format!("{src}:{rest}");
                    }
                }
                Value::Object(m) if m.get("type").and_then(Value::as_str) == Some("bind") => {
                    if let Some(Value::String(src)) = m.get_mut("source") {
                        rebase_path(src, from, to);
                    }
                }
                _ => {}
            }
        }
    }
    match svc.get_mut("env_file") {
        Some(Value::String(s)) => rebase_path(s, from, to),
        Some(Value::Array(a)) => {
            for e in a {
                match e {
                    Value::String(s) => rebase_path(s, from, to),
                    Value::Object(m) => {
                        if let Some(Value::String(s)) = m.get_mut("path") {
                            rebase_path(s, from, to);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// Keys merged variable by variable (a list `K=V` reads as a mapping).
const BY_KEY: &[&str] = &[
    "environment",
    "labels",
    "extra_hosts",
    "sysctls",
    "annotations",
];
/// Keys whose local value replaces the base's.
const REPLACED: &[&str] = &["command", "entrypoint"];
/// Lists merged by their entries' target.
const BY_TARGET: &[&str] = &["volumes", "devices"];
/// Lists or mappings of names, merged as mappings.
const NAMED: &[&str] = &["networks", "depends_on"];

/// `local` merged over `base` as compose merges an extended service. Pure.
pub fn merge_service(base: Value, local: Value) -> Value {
    let (Value::Object(mut out), Value::Object(local)) = (base, local.clone()) else {
        return local;
    };
    for (k, v) in local {
        if take_marked(&mut out, &k, &v) {
            continue;
        }
        let (b, v) = (out.remove(&k), as_list(&k, v));
        let merged = match b.map(|b| as_list(&k, b)) {
            None => v,
            Some(b) if BY_KEY.contains(&k.as_str()) => merge_by_key(b, v),
            Some(_) if REPLACED.contains(&k.as_str()) => v,
            Some(b) if BY_TARGET.contains(&k.as_str()) => merge_by_target(b, v),
            Some(b) if NAMED.contains(&k.as_str()) => merge_named(b, v),
            Some(b) if k == "healthcheck" => merge_healthcheck(b, v),
            Some(b) => merge_value(b, v),
        };
        out.insert(k, merged);
    }
    Value::Object(out)
}

/// A `!reset` or `!override` value of `local`'s key `k` applied to `out`
/// (the key removed, or its value replaced); `false` when `v` is neither.
fn take_marked(out: &mut Map<String, Value>, k: &str, v: &Value) -> bool {
    match tags::marked(v) {
        Some((tags::RESET, _)) => {
            out.remove(k);
            true
        }
        Some((_, inner)) => {
            out.insert(k.to_string(), inner.clone());
            true
        }
        None => false,
    }
}

/// Attributes compose accepts as one string or a list, and merges as lists
/// (`env_file: b.env` over `env_file: [a.env]` is both files).
const ONE_OR_LIST: &[&str] = &["env_file", "dns", "dns_search", "tmpfs", "label_file"];

/// `v` as a one-item list when `k` is one of [`ONE_OR_LIST`] and `v` a
/// string.
fn as_list(k: &str, v: Value) -> Value {
    match v {
        Value::String(_) if ONE_OR_LIST.contains(&k) => Value::Array(vec![v]),
        v => v,
    }
}

fn merge_value(base: Value, local: Value) -> Value {
    match (base, local) {
        (Value::Object(mut b), Value::Object(l)) => {
            for (k, v) in l {
                if take_marked(&mut b, &k, &v) {
                    continue;
                }
                let m = match b.remove(&k) {
                    Some(bv) => merge_value(bv, v),
                    None => v,
                };
                b.insert(k, m);
            }
            Value::Object(b)
        }
        (Value::Array(mut b), Value::Array(l)) => {
            for v in l {
                if !b.contains(&v) {
                    b.push(v);
                }
            }
            Value::Array(b)
        }
        (_, l) => l,
    }
}

fn merge_healthcheck(base: Value, local: Value) -> Value {
    match (base, local) {
        (Value::Object(mut b), Value::Object(l)) => {
            for (k, v) in l {
                b.insert(k, v); // `test` replaced, like every scalar
            }
            Value::Object(b)
        }
        (_, l) => l,
    }
}

/// A `K=V` list or a mapping, as a mapping.
fn as_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        Value::Array(a) => a
            .into_iter()
            .filter_map(|e| match e {
                Value::String(s) => Some(match s.split_once('=') {
                    Some((k, v)) => (k.to_string(), Value::String(v.to_string())),
                    None => (s, Value::Null),
                }),
                _ => None,
            })
            .collect(),
        _ => Map::new(),
    }
}

fn merge_by_key(base: Value, local: Value) -> Value {
    let mut b = as_map(base);
    for (k, v) in as_map(local) {
        if !take_marked(&mut b, &k, &v) {
            b.insert(k, v);
        }
    }
    Value::Object(b)
}

fn merge_named(base: Value, local: Value) -> Value {
    let names = |v: Value| -> Map<String, Value> {
        match v {
            Value::Array(a) => a
                .into_iter()
                .filter_map(|e| e.as_str().map(|s| (s.to_string(), Value::Null)))
                .collect(),
            Value::Object(m) => m,
            _ => Map::new(),
        }
    };
    let (base_list, local_list) = (base.is_array(), local.is_array());
    let mut b = names(base);
    for (k, v) in names(local) {
        let merged = match (b.remove(&k), v) {
            (Some(bv), Value::Null) => bv,
            (Some(bv), lv) => merge_value(bv, lv),
            (None, lv) => lv,
        };
        b.insert(k, merged);
    }
    if base_list && local_list {
        Value::Array(b.into_iter().map(|(k, _)| Value::String(k)).collect())
    } else {
        Value::Object(b)
    }
}

/// A volume's or device's container path.
fn target_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            Some(match parts.len() {
                1 => parts[0].to_string(),
                _ => parts[1].to_string(),
            })
        }
        Value::Object(m) => m.get("target").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn merge_by_target(base: Value, local: Value) -> Value {
    let (Value::Array(b), Value::Array(l)) = (base, local.clone()) else {
        return local;
    };
    let local_targets: BTreeSet<String> = l.iter().filter_map(target_of).collect();
    let mut out: Vec<Value> = b
        .into_iter()
        .filter(|v| target_of(v).is_none_or(|t| !local_targets.contains(&t)))
        .collect();
    out.extend(l);
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn yaml(s: &str) -> Value {
        let mut v = serde_saphyr::from_str(s).unwrap();
        tags::mark(&mut v, s);
        v
    }

    fn files(list: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        list.iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect()
    }

    fn run(main: &str, others: &[(&str, &str)], profiles: &[&str]) -> Result<Resolved, Problem> {
        let f = files(others);
        let mut parse = |_: &str, b: &[u8]| Some(yaml(std::str::from_utf8(b).ok()?));
        let profiles: Vec<String> = profiles.iter().map(|s| s.to_string()).collect();
        resolve(yaml(main), "compose.yaml", &f, &profiles, &mut parse).map(|r| r.unwrap())
    }

    #[test]
    fn a_plain_file_is_left_as_written() {
        let r = run(
            "services:\n  web: {image: a}\nx-common: &c {a: 1}\n",
            &[],
            &[],
        )
        .unwrap();
        assert!(!r.changed);
        assert_eq!(
            r.value["x-common"],
            json!({"a": 1}),
            "kept when nothing is resolved"
        );
    }

    #[test]
    fn include_adds_resources_and_rebases_their_paths() {
        let r = run(
            "include: [db/compose.yaml]\nservices:\n  web: {image: a, depends_on: [db]}\n",
            &[(
                "db/compose.yaml",
                "services:\n  db:\n    image: pg\n    env_file: db.env\n    volumes: [\"./init:/docker-entrypoint-initdb.d:ro\", \"data:/var/lib/pg\"]\nvolumes:\n  data: {}\n",
            )],
            &[],
        )
        .unwrap();
        assert!(r.changed);
        assert!(r.value.get("include").is_none());
        let db = &r.value["services"]["db"];
        assert_eq!(db["env_file"], "./db/db.env");
        assert_eq!(
            db["volumes"],
            json!([
                "./db/init:/docker-entrypoint-initdb.d:ro",
                "data:/var/lib/pg"
            ])
        );
        assert_eq!(r.value["volumes"], json!({"data": {}}));
    }

    #[test]
    fn include_refuses_conflicts_escapes_cycles_and_missing_files() {
        let e = run(
            "include: [b.yaml]\nservices:\n  web: {image: a}\n",
            &[("b.yaml", "services:\n  web: {image: b}\n")],
            &[],
        )
        .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.file.as_str()),
            ("services.web", "compose.yaml")
        );
        assert!(e.message.contains("defined both"), "{e:?}");
        let e = run("include: [../other/compose.yaml]\nservices: {}\n", &[], &[]).unwrap_err();
        assert!(e.message.contains("escapes the stack directory"), "{e:?}");
        let e = run("include: [nope.yaml]\nservices: {}\n", &[], &[]).unwrap_err();
        assert!(e.message.contains("does not exist"), "{e:?}");
        let e = run(
            "include: [a.yaml]\nservices: {}\n",
            &[
                ("a.yaml", "include: [sub/b.yaml]\nservices: {}\n"),
                ("sub/b.yaml", "include: [../a.yaml]\nservices: {}\n"),
            ],
            &[],
        )
        .unwrap_err();
        assert_eq!(
            (e.file.as_str(), e.message.as_str()),
            (
                "sub/b.yaml",
                "includes or extends form a cycle: a.yaml -> sub/b.yaml -> a.yaml"
            ),
            "named where it closes, with the chain"
        );
        let e = run(
            "include: [{path: a.yaml, project_directory: x}]\nservices: {}\n",
            &[],
            &[],
        )
        .unwrap_err();
        assert_eq!(e.field, "include[0].project_directory");
    }

    #[test]
    fn extends_merges_as_compose_does() {
        let r = run(
            r#"
services:
  web:
    extends: {file: common/base.yaml, service: app}
    environment: {MODE: web, EXTRA: "1"}
    command: [serve]
    volumes: ["./web.conf:/etc/app.conf:ro"]
    ports: ["8080:80"]
    healthcheck: {test: ["CMD", "true"]}
  worker:
    extends: web
    command: [work]
"#,
            &[(
                "common/base.yaml",
                r#"
services:
  app:
    image: app@sha256:1
    environment: [MODE=base, LOG=info]
    command: [base]
    volumes: ["./base.conf:/etc/app.conf:ro", "./shared:/shared:ro"]
    ports: ["9090:90"]
    healthcheck: {test: ["CMD", "false"], interval: 5s}
"#,
            )],
            &[],
        )
        .unwrap();
        let web = &r.value["services"]["web"];
        assert_eq!(web["image"], "app@sha256:1");
        assert_eq!(
            web["environment"],
            json!({"MODE": "web", "LOG": "info", "EXTRA": "1"})
        );
        assert_eq!(web["command"], json!(["serve"]));
        assert_eq!(
            web["volumes"],
            json!(["./common/shared:/shared:ro", "./web.conf:/etc/app.conf:ro"]),
            "by target; the base's paths rebased"
        );
        assert_eq!(web["ports"], json!(["9090:90", "8080:80"]));
        assert_eq!(
            web["healthcheck"],
            json!({"test": ["CMD", "true"], "interval": "5s"})
        );
        assert!(web.get("extends").is_none());
        let worker = &r.value["services"]["worker"];
        assert_eq!(worker["command"], json!(["work"]));
        assert_eq!(
            worker["environment"]["MODE"], "web",
            "extends a resolved service"
        );
    }

    #[test]
    fn extends_honours_reset_override_and_one_item_lists() {
        let base = r#"
services:
  app:
    image: app@sha256:1
    ports: ["9090:90"]
    environment: {MODE: base, LOG: info}
    cap_add: [NET_ADMIN]
    env_file: [a.env]
    dns: 1.1.1.1
    deploy: {resources: {limits: {memory: 1g}}}
"#;
        let r = run(
            r#"
services:
  web:
    extends: {file: base.yaml, service: app}
    ports: !reset []
    environment:
      LOG: !reset
      EXTRA: "1"
    cap_add: !override [CHOWN]
    env_file: b.env
    dns: [8.8.8.8]
    deploy: {resources: !reset {}}
"#,
            &[("base.yaml", base)],
            &[],
        )
        .unwrap();
        let web = &r.value["services"]["web"];
        assert!(web.get("ports").is_none(), "{web}");
        assert_eq!(web["environment"], json!({"MODE": "base", "EXTRA": "1"}));
        assert_eq!(web["cap_add"], json!(["CHOWN"]));
        assert_eq!(web["env_file"], json!(["a.env", "b.env"]));
        assert_eq!(web["dns"], json!(["1.1.1.1", "8.8.8.8"]));
        assert_eq!(web["deploy"], json!({}));
        assert!(r.changed && !tags::any(&r.value));

        // Without extends the tags apply within the file, and the release
        // runs the resolved model (v1 cannot read the tags).
        let r = run(
            "services:\n  web:\n    image: a\n    ports: !reset [\"80:80\"]\n    command: !override [b]\n",
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(
            r.value,
            json!({"services": {"web": {"image": "a", "command": ["b"]}}})
        );
        assert!(r.changed);
    }

    #[test]
    fn extends_refuses_cycles_unknown_bases_and_dependent_bases() {
        let e = run(
            "services:\n  a: {extends: b}\n  b: {extends: a}\n",
            &[],
            &[],
        )
        .unwrap_err();
        assert!(e.message.contains("extends itself"), "{e:?}");
        let e = run("services:\n  a: {extends: nope}\n", &[], &[]).unwrap_err();
        assert!(e.message.contains("does not define"), "{e:?}");
        let e = run(
            "services:\n  db: {image: pg}\n  a: {image: x, depends_on: [db]}\n  b: {extends: a}\n",
            &[],
            &[],
        )
        .unwrap_err();
        assert!(e.message.contains("cannot be extended"), "{e:?}");
    }

    #[test]
    fn profiles_leave_inactive_services_out() {
        let main = "services:\n  web: {image: a}\n  debug: {image: b, profiles: [debug]}\n  extra: {image: c, profiles: [extra, more]}\n";
        let r = run(main, &[], &["extra"]).unwrap();
        assert!(r.changed);
        let names: Vec<&String> = r.value["services"].as_object().unwrap().keys().collect();
        assert_eq!(names, ["web", "extra"]);
        assert!(r.value["services"]["extra"].get("profiles").is_none());
        assert_eq!(r.inactive, BTreeSet::from(["debug".to_string()]));
        let e = run(
            "services:\n  web: {image: a, depends_on: [debug]}\n  debug: {image: b, profiles: [debug]}\n",
            &[],
            &[],
        )
        .unwrap_err();
        assert_eq!(e.field, "services.web.depends_on");
        assert!(e.fix.contains("profiles:"), "{e:?}");
    }

    #[test]
    fn anchors_and_merge_keys_are_expanded_by_the_parser() {
        let r = run(
            "x-env: &env {A: \"1\"}\nx-svc: &svc\n  image: a\n  environment: *env\nservices:\n  web:\n    <<: *svc\n    ports: [\"80:80\"]\n",
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(r.value["services"]["web"]["image"], "a");
        assert_eq!(r.value["services"]["web"]["environment"], json!({"A": "1"}));
    }

    #[test]
    fn paths_join_and_relate() {
        assert_eq!(join_clean("a/b", "../c").unwrap(), "a/c");
        assert!(join_clean("a", "../../c").is_err());
        assert_eq!(relative_to("db/init", ""), "./db/init");
        assert_eq!(relative_to("common/x", "web"), "../common/x");
        assert_eq!(relative_to("web/x", "web"), "./x");
    }
}
