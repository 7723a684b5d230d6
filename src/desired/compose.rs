//! The compose file as authored, parsed into a `serde_json::Value` that the
//! rest of the code inspects (services, images, build, volumes, networks,
//! ports), plus the structural checks `docker compose config` would fail on
//! and the release rules of SPEC §1 that concern the compose file.

use super::finding::{Sink, join};
use super::paths::{PathProblem, normalize_rel};
use serde_json::Value;
use std::collections::BTreeSet;

/// A parsed compose file, its `include`, `extends` and `profiles`
/// resolved (see [`super::resolve`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Compose {
    pub value: Value,
    /// Whether resolving changed the model: the release then runs it as
    /// [`super::resolve::RESOLVED_FILE`].
    pub resolved: bool,
    /// Services their profiles leave out.
    pub inactive: BTreeSet<String>,
}

impl Compose {
    /// Services in file order.
    pub fn services(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.value
            .get("services")
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|m| m.iter().map(|(k, v)| (k.as_str(), v)))
    }

    pub fn service_names(&self) -> Vec<String> {
        self.services().map(|(k, _)| k.to_string()).collect()
    }

    pub fn has_service(&self, name: &str) -> bool {
        self.services().any(|(k, _)| k == name)
    }

    /// The `image:` a service names in the compose file, if any.
    pub fn image(&self, service: &str) -> Option<&str> {
        self.services()
            .find(|(k, _)| *k == service)
            .and_then(|(_, v)| v.get("image"))
            .and_then(Value::as_str)
    }

    /// Networks declared `external: true`, by the name the engine knows them by.
    pub fn external_networks(&self) -> Vec<String> {
        let Some(nets) = self.value.get("networks").and_then(Value::as_object) else {
            return Vec::new();
        };
        nets.iter()
            .filter(|(_, v)| is_external(v))
            .map(|(k, v)| {
                v.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or(k)
                    .to_string()
            })
            .collect()
    }
}

fn is_external(v: &Value) -> bool {
    match v.get("external") {
        Some(Value::Bool(b)) => *b,
        Some(Value::Object(_)) => true,
        _ => false,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The keys of a list-or-mapping field (`depends_on`, `networks` of a service).
fn names_of(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_string)).collect(),
        Value::Object(m) => Some(m.keys().cloned().collect()),
        _ => None,
    }
}

fn declared(top: &Value, key: &str) -> BTreeSet<String> {
    top.get(key)
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Context for checking paths the compose file names.
pub struct PathContext<'a> {
    /// The compose file's directory relative to the stack directory ("" at top).
    pub compose_dir: &'a str,
    /// Every file of the stack directory, relative to it.
    pub files: &'a BTreeSet<String>,
    /// The stack directory relative to the repository, for messages.
    pub stack_dir: &'a str,
    /// The stack runs on Swarm (`engine: swarm`): `deploy:` is honoured
    /// whole, and what Swarm cannot do is `super::swarm`'s to refuse.
    pub swarm: bool,
}

impl PathContext<'_> {
    fn exists(&self, rel: &str) -> bool {
        let prefix = format!("{rel}/");
        self.files.contains(rel) || self.files.iter().any(|f| f.starts_with(&prefix))
    }

    /// Resolves a path the compose file names relative to itself into a path
    /// relative to the stack directory.
    fn resolve(&self, p: &str) -> Result<String, PathProblem> {
        let joined = if self.compose_dir.is_empty() {
            p.to_string()
        } else {
            format!("{}/{}", self.compose_dir, p)
        };
        normalize_rel(&joined)
    }
}

/// Checks the compose file against the release rules, then against the
/// compose-spec schema ([`super::schema`]; what a rule here already said
/// is not said twice). Image rules are checked by the caller, which knows
/// the stack's pins.
pub fn check(value: &Value, ctx: &PathContext<'_>, sink: &mut Sink<'_>) {
    check_rules(value, ctx, sink);
    super::schema::check(value, sink);
}

fn check_rules(value: &Value, ctx: &PathContext<'_>, sink: &mut Sink<'_>) {
    let Some(top) = value.as_object() else {
        sink.error(
            "",
            format!("the compose file is {}, not a mapping", type_name(value)),
            "start the file with `services:` and one entry per service",
        );
        return;
    };
    // Unknown keys, here and in every service: the schema's check.
    if top.contains_key("models") {
        sink.warn(
            "models",
            "`models` are pulled by Docker Model Runner (compose v2.38 and later): stackpin does not pin or pull them, and compose v1 refuses the file",
            "run the stack where compose v2 and Model Runner are installed, or serve the model from a pinned image",
        );
    }
    for key in ["networks", "volumes", "configs", "secrets"] {
        if let Some(v) = top.get(key)
            && !v.is_object()
            && !v.is_null()
        {
            sink.error(
                key,
                format!("must be a mapping, found {}", type_name(v)),
                format!("write `{key}:` as `name: {{...}}` entries"),
            );
        }
    }
    let services = match top.get("services") {
        Some(Value::Object(m)) if !m.is_empty() => m,
        Some(Value::Object(_)) | Some(Value::Null) | None => {
            sink.error(
                "services",
                "the compose file defines no services",
                "add at least one service under `services:`",
            );
            return;
        }
        Some(other) => {
            sink.error(
                "services",
                format!("must be a mapping, found {}", type_name(other)),
                "write `services:` as `name: {image: ...}` entries",
            );
            return;
        }
    };
    let known = Known {
        services: services.keys().cloned().collect(),
        networks: declared(value, "networks"),
        volumes: declared(value, "volumes"),
    };
    for (name, svc) in services {
        check_service(name, svc, &known, ctx, sink);
    }
    for key in ["configs", "secrets"] {
        if let Some(m) = top.get(key).and_then(Value::as_object) {
            for (name, v) in m {
                if let Some(f) = v.get("file").and_then(Value::as_str) {
                    check_file_ref(f, &format!("{key}.{name}.file"), ctx, sink);
                }
            }
        }
    }
}

/// Names the compose file declares, for references between its parts.
struct Known {
    services: BTreeSet<String>,
    networks: BTreeSet<String>,
    volumes: BTreeSet<String>,
}

/// One service: its keys against the release rules and its references.
fn check_service(
    name: &str,
    svc: &Value,
    known: &Known,
    ctx: &PathContext<'_>,
    sink: &mut Sink<'_>,
) {
    let path = format!("services.{name}");
    let Some(svc) = svc.as_object() else {
        sink.error(
            path,
            format!("service `{name}` is {}, not a mapping", type_name(svc)),
            "give the service at least an `image:`",
        );
        return;
    };
    if svc.contains_key("build") {
        sink.error(
            join(&path, "build"),
            "`build:` is not allowed: a host must run exactly the image that was tested",
            if svc.contains_key("image") {
                "remove `build:` here (the service runs the image pinned in stack.yaml `images:`); keep the build in CI's own compose file"
            } else {
                "build and push the image in CI, then pin it by digest in stack.yaml `images:`"
            },
        );
    }
    if let Some(img) = svc.get("image")
        && !img.is_string()
    {
        sink.error(
            join(&path, "image"),
            format!("must be a string, found {}", type_name(img)),
            "write the image as `repository@sha256:<64 hex>`",
        );
    }
    check_references(&path, svc, known, sink);
    if let Some(deploy) = svc.get("deploy") {
        check_deploy(&join(&path, "deploy"), deploy, ctx.swarm, sink);
    }
    if let Some(vols) = svc.get("volumes") {
        match vols.as_array() {
            None => sink.error(
                join(&path, "volumes"),
                format!("must be a list, found {}", type_name(vols)),
                "write `volumes: [\"./config/app.conf:/etc/app.conf:ro\"]`",
            ),
            Some(list) => {
                for (i, v) in list.iter().enumerate() {
                    check_volume(
                        v,
                        &format!("{path}.volumes[{i}]"),
                        &known.volumes,
                        ctx,
                        sink,
                    );
                }
            }
        }
    }
    if let Some(ef) = svc.get("env_file") {
        // (path, required): the long form's `required: false` lets the
        // file be absent (compose then reads nothing).
        let files: Vec<(&str, bool)> = match ef {
            Value::String(s) => vec![(s.as_str(), true)],
            Value::Array(a) => a
                .iter()
                .filter_map(|x| match x {
                    Value::String(s) => Some((s.as_str(), true)),
                    _ => Some((
                        x.get("path").and_then(Value::as_str)?,
                        x.get("required").and_then(Value::as_bool) != Some(false),
                    )),
                })
                .collect(),
            _ => Vec::new(),
        };
        for (f, required) in files {
            let optional_and_absent =
                !required && ctx.resolve(f).is_ok_and(|rel| !ctx.exists(&rel));
            if !optional_and_absent {
                check_file_ref(f, &join(&path, "env_file"), ctx, sink);
            }
        }
    }
    if let Some(ports) = svc.get("ports")
        && !ports.is_array()
    {
        sink.error(
            join(&path, "ports"),
            format!("must be a list, found {}", type_name(ports)),
            "write `ports: [\"127.0.0.1:8069:8069\"]`",
        );
    }
}

/// `deploy:` is Swarm's section. compose outside Swarm honours some of it
/// and silently ignores the rest; nothing is accepted and then ignored
/// here: each key is honoured, warned about, or refused by name.
fn check_deploy(path: &str, deploy: &Value, swarm: bool, sink: &mut Sink<'_>) {
    let Some(m) = deploy.as_object() else {
        sink.error(
            path,
            format!("must be a mapping, found {}", type_name(deploy)),
            "remove it, or write `deploy: {resources: {limits: {memory: 512m}}}`",
        );
        return;
    };
    for key in m.keys() {
        let field = join(path, key);
        match key.as_str() {
            // Swarm's own; `rollback_config` is refused by `swarm`.
            "update_config" | "rollback_config" | "placement" | "endpoint_mode" | "mode"
            | "labels"
                if swarm => {}
            // Honoured by compose v2 outside Swarm (docker-compose v1 reads
            // them only with --compatibility: docs/converge.md, "Updates").
            "resources" | "replicas" | "restart_policy" => {}
            "update_config" | "rollback_config" => sink.error(
                field,
                format!("`deploy.{key}` is Swarm's: compose outside Swarm ignores it (`order: start-first` would still recreate the service stop-first), and stackpin does not honour it"),
                "remove it and set the order in stack.yaml: `update: {services: {SERVICE: {order: start-first}}}`",
            ),
            // Compose's default: says nothing compose does not do.
            "mode" if m.get("mode").and_then(Value::as_str) == Some("replicated") => {}
            "placement" | "endpoint_mode" | "mode" => sink.error(
                field,
                format!("`deploy.{key}` applies to Swarm services only; compose ignores it"),
                "remove it (choose hosts with `hosts:` in stack.yaml)",
            ),
            "labels" => sink.warn(
                field,
                "`deploy.labels` are Swarm service labels; compose ignores them",
                "put container labels under the service's `labels:`",
            ),
            // Unknown keys: the schema's check.
            _ => {}
        }
    }
}

/// `depends_on` and `networks` of one service name what the file declares.
fn check_references(
    path: &str,
    svc: &serde_json::Map<String, Value>,
    known: &Known,
    sink: &mut Sink<'_>,
) {
    if let Some(dep) = svc.get("depends_on") {
        match names_of(dep) {
            None => sink.error(
                join(path, "depends_on"),
                "must be a list of service names or a mapping",
                "write `depends_on: [other-service]`",
            ),
            Some(deps) => {
                // `required: false`: compose starts the service without it
                // (a dependency whose profile is off, say).
                let optional = |d: &str| {
                    dep.get(d)
                        .and_then(|v| v.get("required"))
                        .and_then(Value::as_bool)
                        == Some(false)
                };
                for d in deps {
                    if !known.services.contains(&d) && !optional(&d) {
                        sink.error(
                            join(path, "depends_on"),
                            format!("depends on undefined service `{d}`"),
                            format!("define service `{d}` or remove it from depends_on"),
                        );
                    }
                }
            }
        }
    }
    if let Some(nets) = svc.get("networks") {
        if svc.contains_key("network_mode") {
            sink.error(
                join(path, "network_mode"),
                "`network_mode` and `networks` cannot be combined",
                "keep one of them",
            );
        }
        match names_of(nets) {
            None => sink.error(
                join(path, "networks"),
                "must be a list of network names or a mapping",
                "write `networks: [edge]`",
            ),
            Some(list) => {
                for n in list {
                    if n != "default" && !known.networks.contains(&n) {
                        sink.error(join(path, "networks"), format!("refers to undefined network `{n}`"), format!("declare it under top-level `networks:` (`{n}: {{external: true}}` for a shared one)"));
                    }
                }
            }
        }
    }
}

fn check_file_ref(p: &str, field: &str, ctx: &PathContext<'_>, sink: &mut Sink<'_>) {
    if p.contains("${") {
        return;
    }
    if p.starts_with('/') {
        sink.warn(
            field,
            format!("\"{p}\" is a host path outside the release"),
            "keep secrets in stack.yaml `env_files`; keep other files in the stack directory",
        );
        return;
    }
    match ctx.resolve(p) {
        Err(e) => path_error(sink, field, p, e, ctx),
        Ok(rel) if !ctx.exists(&rel) => sink.error(
            field,
            format!("\"{p}\" does not exist in {}/", ctx.stack_dir),
            format!(
                "add {}/{rel} to the repository or fix the path",
                ctx.stack_dir
            ),
        ),
        Ok(_) => {}
    }
}

fn path_error(sink: &mut Sink<'_>, field: &str, p: &str, e: PathProblem, ctx: &PathContext<'_>) {
    sink.error(
        field,
        format!("\"{p}\" {e}"),
        format!(
            "keep the file inside {}/ and name it by a relative path without `..`",
            ctx.stack_dir
        ),
    );
}

/// One entry of a service's `volumes:`, short or long syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeParts {
    /// `bind`, `volume`, `tmpfs`, … (short syntax: `bind` for a path,
    /// `volume` for a name).
    pub kind: String,
    /// The host path or volume name (empty for an anonymous volume).
    pub source: String,
    pub read_only: bool,
    pub has_target: bool,
}

/// Reads one `volumes:` entry; `None` for an anonymous volume written as a
/// bare container path, or for a value that is neither string nor mapping.
pub fn volume_parts(v: &Value) -> Option<VolumeParts> {
    match v {
        Value::String(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            if parts.len() < 2 {
                return None;
            }
            let src = parts[0];
            let kind = if src.starts_with('.') || src.starts_with('/') || src.starts_with('~') {
                "bind"
            } else {
                "volume"
            };
            Some(VolumeParts {
                kind: kind.to_string(),
                source: src.to_string(),
                read_only: parts
                    .get(2)
                    .is_some_and(|m| m.split(',').any(|o| o == "ro")),
                has_target: true,
            })
        }
        Value::Object(m) => Some(VolumeParts {
            kind: m
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("volume")
                .to_string(),
            source: m
                .get("source")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            read_only: m.get("read_only").and_then(Value::as_bool).unwrap_or(false),
            has_target: m.get("target").is_some(),
        }),
        _ => None,
    }
}

fn check_volume(
    v: &Value,
    field: &str,
    declared: &BTreeSet<String>,
    ctx: &PathContext<'_>,
    sink: &mut Sink<'_>,
) {
    let Some(VolumeParts {
        kind,
        source,
        read_only: _,
        has_target,
    }) = volume_parts(v)
    else {
        if !v.is_string() {
            sink.error(
                field,
                format!("must be a string or a mapping, found {}", type_name(v)),
                "write `- ./config/x.conf:/etc/x.conf:ro`",
            );
        }
        return; // a string without `:` is an anonymous volume
    };
    if !has_target {
        sink.error(
            field,
            "a volume needs a `target`",
            "add `target: /path/in/container`",
        );
    }
    if source.contains("${") {
        sink.warn(
            field,
            format!("\"{source}\" uses interpolation, so stackpin cannot check it"),
            "write the path literally",
        );
        return;
    }
    match kind.as_str() {
        "volume" if !source.is_empty() && !declared.contains(&source) => {
            sink.error(
                field,
                format!("refers to undefined volume `{source}`"),
                format!("declare it under top-level `volumes:` (`{source}: {{}}`)"),
            );
        }
        "bind" => {
            if source.starts_with('/') || source.starts_with('~') {
                // A host path: the powers check reports it once, as the
                // power it needs (`host_bind_read`, `host_bind_writable`).
                return;
            }
            // `.` (or `./`): the stack directory itself, which the release
            // holds.
            let resolved = match ctx.resolve(&source) {
                Err(PathProblem::Empty) => Ok(String::new()),
                other => other,
            };
            match resolved {
                Err(e) => path_error(sink, field, &source, e, ctx),
                // Writable relative binds were made read-only when the model
                // was resolved (`resolve::read_only_binds`, with its warning).
                Ok(rel) if rel.is_empty() => {}
                Ok(rel) => {
                    if !ctx.exists(&rel) {
                        sink.error(
                            field,
                            format!("\"{source}\" does not exist in {}/", ctx.stack_dir),
                            format!(
                                "add {}/{rel} to the repository or fix the path",
                                ctx.stack_dir
                            ),
                        );
                    }
                }
            }
        }
        _ => {}
    }
}
