//! The desired state: what the repository says each host should run. Loading
//! reads a [`Tree`] (a directory or a git commit), parses every file, and
//! applies the rules of SPEC §1. A stack with errors is set aside with its
//! findings; the other stacks load normally — one bad stack never blocks the
//! others.

pub mod compose;
pub mod edit;
pub mod finding;
pub mod image;
pub mod paths;
pub mod powers;
pub mod resolve;
pub mod schema;
pub mod spec;
pub mod swarm;
pub mod tags;
pub mod tree;
pub mod update;

use compose::{Compose, PathContext};
pub use finding::{Finding, Severity, Sink};
use image::ImageRef;
use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use spec::{
    Check, Keep, KeepPolicy, QuarantinedEntry, QuarantinedFile, RepoConfig, StackSpec,
    VerifiedEntry, VerifiedFile,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
pub use tree::{DirTree, GitTree, Kind, MemTree, Tree};

/// Largest YAML file read (stack.yaml, compose, verified): larger is refused.
pub const MAX_YAML_BYTES: usize = 1 << 20;
/// Largest single file copied into a release.
pub const MAX_FILE_BYTES: usize = 8 << 20;
/// Most files one stack directory may hold.
pub const MAX_FILES: usize = 2000;
/// Most services one compose file may define.
pub const MAX_SERVICES: usize = 256;
pub const DEFAULT_KEEP_RELEASES: u32 = 10;
pub const DEFAULT_SMOKE_TIMEOUT: Duration = Duration::from_secs(120);

/// One valid stack, ready to be rendered into a release.
#[derive(Debug, Clone)]
pub struct Stack {
    pub name: String,
    pub spec: StackSpec,
    /// The compose file's path relative to the stack directory.
    pub compose_file: String,
    pub compose: Compose,
    /// Every file of the stack directory but `stack.yaml`, relative to it.
    pub files: BTreeMap<String, Vec<u8>>,
    /// service -> effective pinned image, for every service of the compose file.
    pub pins: IndexMap<String, ImageRef>,
    /// The version label (given, or the first pin's short digest).
    pub version: String,
    pub keep_releases: u32,
    pub smoke_timeout: Duration,
    /// `update:`, checked: the services replaced start-first.
    pub rollout: update::Rollout,
    /// What identifies everything the stack was read from (its directory
    /// and `stackpin.yaml`, by git object ids), when the tree has ids: the
    /// same key, the same stack. `None` for a work tree.
    pub key: Option<String>,
}

impl Stack {
    pub fn environment(&self) -> &str {
        self.spec.environment.as_deref().unwrap_or("default")
    }

    pub fn checks(&self) -> &[Check] {
        self.spec
            .smoke
            .as_ref()
            .map(|s| s.checks.as_slice())
            .unwrap_or(&[])
    }

    /// Whether this host runs the stack (`hosts:` empty means every host).
    /// Whether this host runs the stack: `hosts:` is empty, names the
    /// host, or holds a `key=value` selector that one of the host's
    /// `labels` (from its config) matches.
    pub fn runs_on(&self, host: &str, labels: &[(String, String)]) -> bool {
        self.spec.hosts.is_empty()
            || self.spec.hosts.iter().any(|h| match h.split_once('=') {
                Some((k, v)) => labels.iter().any(|(lk, lv)| lk == k && lv == v),
                None => h == host,
            })
    }

    /// Stacks that must converge before this one: `depends_on` and `promote_from`.
    pub fn predecessors(&self) -> impl Iterator<Item = &str> {
        self.spec
            .depends_on
            .iter()
            .map(String::as_str)
            .chain(self.promote_source())
    }

    /// The stack `promote_from` names, if any.
    pub fn promote_source(&self) -> Option<&str> {
        self.spec.promote_from.as_ref().map(|p| p.stack.as_str())
    }

    pub fn break_glass_reason(&self) -> Option<&str> {
        self.spec
            .break_glass
            .as_ref()
            .and_then(|b| b.reason.as_deref())
    }
}

/// Everything loaded from one tree.
#[derive(Debug, Clone, Default)]
pub struct DesiredState {
    /// Where it was read from, for messages.
    pub source: String,
    /// The desired commit, when read from git.
    pub commit: Option<String>,
    /// The first line of its message (the history names the pull request
    /// a release came from by it).
    pub subject: Option<String>,
    /// The git repository the commit is in (for signature checks).
    pub repo_path: Option<std::path::PathBuf>,
    /// Where the desired state sits inside that repository (`repo.path`;
    /// empty: the root), for the signed-history check.
    pub base: String,
    pub repo: RepoConfig,
    pub stacks: BTreeMap<String, Stack>,
    /// Stacks set aside because of errors, with the reason in `findings`.
    pub invalid: BTreeSet<String>,
    /// `verified/<stack>.yaml` entries, by stack.
    pub verified: BTreeMap<String, Vec<VerifiedEntry>>,
    /// `quarantined/<stack>.yaml` entries, by stack: releases that failed on
    /// the host that published them.
    pub quarantined: BTreeMap<String, Vec<QuarantinedEntry>>,
    /// Every error and warning, in the order found.
    pub findings: Vec<Finding>,
}

impl DesiredState {
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }

    /// Valid stacks in converge order: every stack after its `depends_on` and
    /// `promote_from` sources, ties broken by name. Edges to stacks that are
    /// not valid are ignored (those stacks are not converged at all).
    pub fn order(&self) -> Vec<String> {
        let mut done: BTreeSet<String> = BTreeSet::new();
        let mut out = Vec::new();
        while out.len() < self.stacks.len() {
            let before = out.len();
            for (name, s) in &self.stacks {
                if done.contains(name) {
                    continue;
                }
                if s.predecessors()
                    .all(|p| done.contains(p) || !self.stacks.contains_key(p))
                {
                    out.push(name.clone());
                }
            }
            for n in &out[before..] {
                done.insert(n.clone());
            }
            if out.len() == before {
                // Cycles are invalid and removed at load; never loop forever.
                out.extend(self.stacks.keys().filter(|k| !done.contains(*k)).cloned());
                break;
            }
        }
        out
    }
}

/// Parse failure of a YAML file, already reported to the sink.
#[derive(Debug)]
pub struct Reported;

/// Reads and parses one YAML file into `T`, reporting every problem with the
/// file and field. `Ok(None)` when the file does not exist.
fn read_yaml<T: DeserializeOwned>(
    tree: &dyn Tree,
    path: &str,
    sink: &mut Sink<'_>,
) -> Result<Option<T>, Reported> {
    let bytes = match tree.read(path) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(None),
        Err(e) => {
            sink.error(
                "",
                format!("cannot be read: {e}"),
                "make it a regular file inside the repository",
            );
            return Err(Reported);
        }
    };
    parse_typed(&bytes, sink).map(Some)
}

/// How many unknown keys of one file are reported before the rest wait
/// for the next run.
const MAX_UNKNOWN_KEYS: usize = 20;

/// Parses YAML bytes into `T`, reporting problems with the field path.
/// Every unknown key of the file is reported at once, each with the near
/// known key when there is one ("did you mean `keep_releases`?"), and the
/// file is read on without it, so a wrong value after a typo is reported
/// in the same run.
pub fn parse_typed<T: DeserializeOwned>(bytes: &[u8], sink: &mut Sink<'_>) -> Result<T, Reported> {
    let mut value = parse_yaml_value(bytes, sink)?;
    let mut unknown = 0;
    loop {
        let mut track = serde_path_to_error::Track::new();
        let de = serde_path_to_error::Deserializer::new(&value, &mut track);
        let e = match T::deserialize(de) {
            Ok(v) if unknown == 0 => return Ok(v),
            Ok(_) => return Err(Reported),
            Err(e) => e,
        };
        let tracked = track.path();
        let path = tracked.to_string();
        let path = if path == "." { String::new() } else { path };
        let msg = e.to_string();
        // The tracked path already ends at the unknown key itself.
        let Some(rest) = msg.strip_prefix("unknown field `") else {
            sink.error(
                path,
                msg,
                "correct the value as the format reference (docs/format.md) describes",
            );
            return Err(Reported);
        };
        let key = rest.split('`').next().unwrap_or_default().to_string();
        // serde says "expected one of `a`, `b`", "expected `a` or `b`" or
        // "expected `a`".
        let expected: Vec<String> = rest
            .split_once("expected one of ")
            .or_else(|| rest.split_once("expected "))
            .map(|(_, list)| {
                list.replace(" or ", ", ")
                    .split(", ")
                    .map(|k| k.trim().trim_matches('`').to_string())
                    .collect()
            })
            .unwrap_or_default();
        let fix = match finding::nearest(&key, &expected) {
            Some(k) => format!("did you mean `{k}`?"),
            None => format!("remove `{key}` or correct its spelling"),
        };
        sink.error(path, msg, fix);
        unknown += 1;
        if unknown >= MAX_UNKNOWN_KEYS || !remove_at(&mut value, &tracked) {
            return Err(Reported);
        }
    }
}

/// Removes the mapping key `path` ends at; `false` when it cannot be found.
fn remove_at(value: &mut serde_json::Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((Segment::Map { key }, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = value;
    for s in parents {
        let next = match s {
            Segment::Map { key } => node.get_mut(key.as_str()),
            Segment::Seq { index } => node.get_mut(*index),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    node.as_object_mut()
        .is_some_and(|m| m.remove(key.as_str()).is_some())
}

/// Parses YAML bytes into a JSON value with serde-saphyr's budget limits
/// (alias bombs, depth, size) and duplicate keys refused.
pub fn parse_yaml_value(bytes: &[u8], sink: &mut Sink<'_>) -> Result<serde_json::Value, Reported> {
    if bytes.len() > MAX_YAML_BYTES {
        sink.error(
            "",
            format!(
                "is {} bytes, larger than the {} byte limit",
                bytes.len(),
                MAX_YAML_BYTES
            ),
            "split the file or remove what it does not need",
        );
        return Err(Reported);
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        sink.error("", "is not valid UTF-8", "save the file as UTF-8");
        return Err(Reported);
    };
    if text.trim().is_empty()
        || text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        sink.error("", "is empty", "write the file's content or delete it");
        return Err(Reported);
    }
    let mut opts = serde_saphyr::Options::default();
    opts.with_snippet = false;
    match serde_saphyr::from_str_with_options::<serde_json::Value>(text, opts) {
        Ok(v) => Ok(v),
        Err(e) => {
            let at = e
                .location()
                .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
                .unwrap_or_default();
            let first = e.to_string();
            let first = first.lines().next().unwrap_or("").to_string();
            sink.error(
                "",
                format!("is not valid YAML{at}: {first}"),
                "fix the YAML syntax (a YAML linter shows the exact spot)",
            );
            Err(Reported)
        }
    }
}

/// A compose file as [`parse_yaml_value`] reads it, its `!reset` and
/// `!override` values marked ([`tags`]) for the resolution to apply.
fn parse_compose_value(bytes: &[u8], sink: &mut Sink<'_>) -> Result<serde_json::Value, Reported> {
    let mut value = parse_yaml_value(bytes, sink)?;
    if let Ok(text) = std::str::from_utf8(bytes) {
        tags::mark(&mut value, text);
    }
    Ok(value)
}

/// A commit or container id cut to its first 12 characters, as git and
/// docker show them (shorter ids stay whole).
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Checks a stack name given by a person or a request (CLI, control
/// socket): the same rule as a stack directory's name, so a name can never
/// reach outside the host's directories (`../../x`).
///
/// # Errors
/// What is wrong and the rule, for the operator.
pub fn check_stack_name(name: &str) -> Result<(), String> {
    if valid_stack_name(name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a stack name: 1-63 of a-z, 0-9 and -, starting with a letter or digit"
        ))
    }
}

/// [`check_stack_name`] as a clap value parser.
pub fn parse_stack_name(name: &str) -> Result<String, String> {
    check_stack_name(name).map(|()| name.to_string())
}

fn valid_stack_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// The version label when `version:` is not given: with one pin, its
/// digest's first 7 hex digits; with several, the first 7 hex digits of a
/// sha256 over every `service@digest` (sorted), so two releases with
/// different pins never share a label (a router's digest no longer names
/// every app release).
pub fn default_version(pins: &IndexMap<String, ImageRef>) -> String {
    use sha2::{Digest, Sha256};
    let digests: Vec<(&String, String)> = pins
        .iter()
        .filter_map(|(s, p)| Some((s, p.digest_hex()?.to_string())))
        .collect();
    match digests.as_slice() {
        [] => "unversioned".into(),
        [(_, d)] => d[..7].to_string(),
        many => {
            let mut sorted: Vec<String> = many.iter().map(|(s, d)| format!("{s}@{d}\n")).collect();
            sorted.sort();
            let h = Sha256::digest(sorted.concat().as_bytes());
            h.iter()
                .take(4)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()[..7]
                .to_string()
        }
    }
}

fn valid_version(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
        && !v.contains("__")
}

fn valid_env_key(k: &str) -> bool {
    let b = k.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Loads and validates everything in `tree`. Never fails: problems become
/// findings, and only the stacks they concern are set aside.
pub fn load(tree: &dyn Tree) -> DesiredState {
    load_reusing(tree, None).0
}

/// What loading each stack gave, by the content ids ([`Tree::id`]) of its
/// directory and of `stackpin.yaml` (its defaults): the daemon keeps it from
/// one commit to the next, and a stack whose ids did not change is taken
/// from it instead of being read, parsed and validated again. The checks
/// across stacks and of `verified/` always run on the whole state.
#[derive(Debug, Clone, Default)]
pub struct StackCache {
    entries: HashMap<String, CachedStack>,
    /// Stacks taken from the previous cache by the load that made this one.
    pub reused: usize,
    /// Stacks read by that load.
    pub read: usize,
}

#[derive(Debug, Clone)]
struct CachedStack {
    key: String,
    stack: Option<Stack>,
    findings: Vec<Finding>,
}

/// [`load`], reusing from `previous` every stack whose content ids are
/// unchanged; also returns the cache for the next load. The state is the
/// one [`load`] gives for the same tree.
pub fn load_reusing(tree: &dyn Tree, previous: Option<&StackCache>) -> (DesiredState, StackCache) {
    let mut cache = StackCache::default();
    let defaults_id = tree.id("stackpin.yaml");
    let mut st = DesiredState {
        source: tree.describe(),
        ..Default::default()
    };
    let mut findings = Vec::new();
    {
        let mut sink = Sink::new(None, "stackpin.yaml", &mut findings);
        if let Ok(Some(cfg)) = read_yaml::<RepoConfig>(tree, "stackpin.yaml", &mut sink) {
            if let Some(t) = &cfg.defaults.smoke_timeout
                && humantime::parse_duration(t).is_err()
            {
                sink.error(
                    "defaults.smoke_timeout",
                    format!("\"{t}\" is not a duration"),
                    "write a duration such as `120s` or `5m`",
                );
            }
            st.repo = cfg;
        }
    }

    let entries = match tree.list("stacks") {
        Ok(Some(e)) => e,
        Ok(None) => {
            Sink::new(None, "stacks/", &mut findings).error(
                "",
                "the repository has no stacks/ directory",
                "create stacks/<stack>/stack.yaml for each stack",
            );
            Vec::new()
        }
        Err(e) => {
            Sink::new(None, "stacks/", &mut findings).error(
                "",
                format!("cannot be read: {e}"),
                "check the repository",
            );
            Vec::new()
        }
    };
    for e in entries {
        let file = format!("stacks/{}", e.name);
        if !e.utf8 || !valid_stack_name(&e.name) {
            Sink::new(None, file, &mut findings).error(
                "",
                format!("\"{}\" is not a valid stack name (lowercase letters, digits and `-`, starting with a letter or digit, at most 63 characters)", e.name.escape_debug()),
                "rename the directory, e.g. `odoo18-staging`",
            );
            st.invalid.insert(e.name.clone());
            continue;
        }
        if e.kind != Kind::Dir {
            Sink::new(Some(&e.name), file, &mut findings).error(
                "",
                "is not a directory",
                "make stacks/<stack>/ a directory holding stack.yaml",
            );
            st.invalid.insert(e.name.clone());
            continue;
        }
        let key = defaults_id
            .as_ref()
            .zip(tree.id(&file))
            .map(|(d, s)| format!("{s} {d}"));
        let cached = previous
            .and_then(|p| p.entries.get(&e.name))
            .filter(|c| key.as_ref() == Some(&c.key));
        let (stack, own) = match cached {
            Some(c) => {
                cache.reused += 1;
                (c.stack.clone(), c.findings.clone())
            }
            None => {
                cache.read += 1;
                let mut own = Vec::new();
                let stack = load_stack(tree, &e.name, &st.repo, &mut own).map(|mut s| {
                    s.key = key.clone();
                    s
                });
                (stack, own)
            }
        };
        if let Some(key) = key {
            cache.entries.insert(
                e.name.clone(),
                CachedStack {
                    key,
                    stack: stack.clone(),
                    findings: own.clone(),
                },
            );
        }
        let failed = own.iter().any(|f| f.severity == Severity::Error);
        findings.extend(own);
        match stack {
            Some(s) if !failed => {
                st.stacks.insert(e.name.clone(), s);
            }
            _ => {
                st.invalid.insert(e.name.clone());
            }
        }
    }

    load_verified(tree, &mut st, &mut findings);

    cross_stack_checks(&mut st, &mut findings);
    st.findings = findings;
    (st, cache)
}

/// `verified/<stack>.yaml` files into `st.verified`, `quarantined/<stack>.yaml`
/// into `st.quarantined`.
fn load_verified(tree: &dyn Tree, st: &mut DesiredState, findings: &mut Vec<Finding>) {
    for (stack, file, vf) in marker_files::<VerifiedFile>(tree, "verified", findings) {
        let mut sink = Sink::new(None, file, findings);
        for (i, entry) in vf.verified.iter().enumerate() {
            check_marker_pins(&mut sink, &format!("verified[{i}]"), &entry.images);
        }
        st.verified.insert(stack, vf.verified);
    }
    for (stack, file, qf) in marker_files::<QuarantinedFile>(tree, "quarantined", findings) {
        let mut sink = Sink::new(None, file, findings);
        for (i, entry) in qf.quarantined.iter().enumerate() {
            check_marker_pins(&mut sink, &format!("quarantined[{i}]"), &entry.images);
        }
        st.quarantined.insert(stack, qf.quarantined);
    }
}

/// The `<dir>/<stack>.yaml` files of the tree, parsed: (stack, file, it).
fn marker_files<F: serde::de::DeserializeOwned>(
    tree: &dyn Tree,
    dir: &str,
    findings: &mut Vec<Finding>,
) -> Vec<(String, String, F)> {
    let mut out = Vec::new();
    let Ok(Some(list)) = tree.list(dir) else {
        return out;
    };
    for e in list {
        let file = format!("{dir}/{}", e.name);
        let mut sink = Sink::new(None, file.clone(), findings);
        let Some(stack) = e
            .name
            .strip_suffix(".yaml")
            .or_else(|| e.name.strip_suffix(".yml"))
        else {
            sink.warn(
                "",
                "is not a .yaml file and is ignored",
                format!("name these files {dir}/<stack>.yaml"),
            );
            continue;
        };
        if e.kind != Kind::File {
            sink.error("", "is not a regular file", "make it a regular YAML file");
            continue;
        }
        if let Ok(Some(f)) = read_yaml::<F>(tree, &file, &mut sink) {
            out.push((stack.to_string(), file, f));
        }
    }
    out
}

/// Each image of a marker entry is a pinned reference.
fn check_marker_pins(sink: &mut Sink<'_>, entry: &str, images: &BTreeMap<String, String>) {
    for (svc, r) in images {
        let fix = "record the pinned reference `repo@sha256:<64 hex>`";
        match ImageRef::parse(r) {
            Ok(ir) if ir.digest.is_some() => {}
            Ok(_) => sink.error(
                format!("{entry}.images.{svc}"),
                format!("\"{r}\" has no digest"),
                fix,
            ),
            Err(m) => sink.error(format!("{entry}.images.{svc}"), m.0, fix),
        }
    }
}

fn cross_stack_checks(st: &mut DesiredState, findings: &mut Vec<Finding>) {
    let known: BTreeSet<String> = st.stacks.keys().chain(st.invalid.iter()).cloned().collect();
    let mut bad = BTreeSet::new();
    for (name, s) in &st.stacks {
        let mut sink = Sink::new(Some(name), format!("stacks/{name}/stack.yaml"), findings);
        for (i, d) in s.spec.depends_on.iter().enumerate() {
            if d == name {
                sink.error(
                    format!("depends_on[{i}]"),
                    "a stack cannot depend on itself",
                    "remove it",
                );
                bad.insert(name.clone());
            } else if !known.contains(d) {
                sink.error(
                    format!("depends_on[{i}]"),
                    format!("names stack `{d}`, which does not exist"),
                    format!("add stacks/{d}/ or remove it from depends_on"),
                );
                bad.insert(name.clone());
            }
        }
        if let Some(p) = &s.spec.promote_from {
            let src = &p.stack;
            for ours in p.services.keys() {
                if !s.pins.contains_key(ours) {
                    sink.error(
                        format!("promote_from.services.{ours}"),
                        format!("`{ours}` is not a service of this stack's compose file"),
                        "map each of this stack's services to the source service whose verified digest it runs",
                    );
                    bad.insert(name.clone());
                }
            }
            if src == name {
                sink.error(
                    "promote_from",
                    "a stack cannot promote from itself",
                    "name the staging stack whose verified digests this stack may run",
                );
                bad.insert(name.clone());
            } else if !known.contains(src) {
                sink.error(
                    "promote_from",
                    format!("names stack `{src}`, which does not exist"),
                    format!("add stacks/{src}/ or correct the name"),
                );
                bad.insert(name.clone());
            }
        }
    }
    // Cycles through depends_on and promote_from.
    for cycle in find_cycles(&st.stacks) {
        let path = cycle.join(" → ");
        for name in &cycle[..cycle.len() - 1] {
            if bad.insert(name.clone()) {
                Sink::new(Some(name), format!("stacks/{name}/stack.yaml"), findings).error(
                    "depends_on",
                    format!("depends_on/promote_from form a cycle: {path}"),
                    "remove one of the edges so the stacks have an order",
                );
            }
        }
    }
    for name in bad {
        st.stacks.remove(&name);
        st.invalid.insert(name);
    }
}

/// Every cycle, each as a path that starts and ends at the same stack.
fn find_cycles(stacks: &BTreeMap<String, Stack>) -> Vec<Vec<String>> {
    fn visit(
        n: &str,
        stacks: &BTreeMap<String, Stack>,
        stack: &mut Vec<String>,
        state: &mut BTreeMap<String, u8>,
        out: &mut Vec<Vec<String>>,
    ) {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        if let Some(s) = stacks.get(n) {
            for p in s.predecessors() {
                match state.get(p).copied().unwrap_or(0) {
                    0 if stacks.contains_key(p) => visit(p, stacks, stack, state, out),
                    1 => {
                        let start = stack.iter().position(|x| x == p).unwrap_or(0);
                        let mut c: Vec<String> = stack[start..].to_vec();
                        c.push(p.to_string());
                        out.push(c);
                    }
                    _ => {}
                }
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
    }
    let mut state = BTreeMap::new();
    let mut out = Vec::new();
    for n in stacks.keys() {
        if state.get(n).copied().unwrap_or(0) == 0 {
            visit(n, stacks, &mut Vec::new(), &mut state, &mut out);
        }
    }
    out
}

/// Collects the stack directory's files (relative to it), following only
/// symlinks that stay inside it.
/// The path whose bytes a stack file has: itself, or the target of a link
/// that stays inside the stack; `None` (reported) otherwise.
fn content_path(
    tree: &dyn Tree,
    stack_dir: &str,
    rel_dir: &str,
    rel: &str,
    kind: &Kind,
    sink: &mut Sink<'_>,
) -> Option<String> {
    match kind {
        Kind::File => Some(rel.to_string()),
        Kind::Symlink(target) => match paths::resolve_link(rel_dir, target) {
            Some(t) if matches!(tree.kind(&format!("{stack_dir}/{t}")), Ok(Some(Kind::File))) => {
                Some(t)
            }
            Some(_) => {
                sink.error("", format!("{stack_dir}/{rel} is a symlink to \"{target}\", which is not a regular file in the stack"), "replace the link by the file itself");
                None
            }
            None => {
                sink.error("", format!("{stack_dir}/{rel} is a symlink to \"{target}\", outside the stack directory"), "copy the file into the stack directory instead of linking to it");
                None
            }
        },
        Kind::Dir | Kind::Other => {
            sink.error(
                "",
                format!("{stack_dir}/{rel} is not a regular file"),
                "remove it",
            );
            None
        }
    }
}

fn collect_files(
    tree: &dyn Tree,
    stack_dir: &str,
    sink: &mut Sink<'_>,
) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![String::new()];
    let mut total = 0usize;
    while let Some(rel_dir) = dirs.pop() {
        let full = if rel_dir.is_empty() {
            stack_dir.to_string()
        } else {
            format!("{stack_dir}/{rel_dir}")
        };
        let list = match tree.list(&full) {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(e) => {
                sink.error(
                    "",
                    format!("{full} cannot be read: {e}"),
                    "check the repository",
                );
                continue;
            }
        };
        for e in list {
            let rel = if rel_dir.is_empty() {
                e.name.clone()
            } else {
                format!("{rel_dir}/{}", e.name)
            };
            if !e.utf8 {
                sink.error(
                    "",
                    format!("{stack_dir}/{rel} has a name that is not valid UTF-8"),
                    "rename the file",
                );
                continue;
            }
            if rel == "stack.yaml" {
                continue;
            }
            if files.len() >= MAX_FILES {
                sink.error(
                    "",
                    format!("{stack_dir}/ holds more than {MAX_FILES} files"),
                    "keep only what the compose file needs in the stack directory",
                );
                return files;
            }
            let content_path = match &e.kind {
                Kind::Dir => {
                    if rel.split('/').count() > 16 {
                        sink.error(
                            "",
                            format!("{stack_dir}/{rel} is nested too deep"),
                            "flatten the directory",
                        );
                    } else {
                        dirs.push(rel);
                    }
                    continue;
                }
                kind => match content_path(tree, stack_dir, &rel_dir, &rel, kind, sink) {
                    Some(p) => p,
                    None => continue,
                },
            };
            match tree.read(&format!("{stack_dir}/{content_path}")) {
                Ok(Some(b)) => {
                    if b.len() > MAX_FILE_BYTES {
                        sink.error("", format!("{stack_dir}/{rel} is {} bytes, over the {MAX_FILE_BYTES} byte limit", b.len()), "keep large data out of the desired-state repository");
                        continue;
                    }
                    total += b.len();
                    files.insert(rel, b);
                }
                Ok(None) => {}
                Err(e) if e.kind() == std::io::ErrorKind::FileTooLarge => sink.error(
                    "",
                    e.to_string(),
                    "keep large data out of the desired-state repository",
                ),
                Err(e) => sink.error(
                    "",
                    format!("{stack_dir}/{rel} cannot be read: {e}"),
                    "check the repository",
                ),
            }
        }
    }
    if total > 4 * MAX_FILE_BYTES {
        sink.error(
            "",
            format!("{stack_dir}/ holds {total} bytes"),
            "keep large data out of the desired-state repository",
        );
    }
    files
}

/// Files stackpin writes into every release at the stack directory's
/// root, with what to do instead: a stack file of that name cannot be
/// released, so `validate` refuses it as every host would.
pub const RESERVED_FILES: &[(&str, &str)] = &[
    (
        ".env",
        "move its values to `env:` in stack.yaml (non-secret) or to an `env_files:` host file (secret)",
    ),
    ("release.json", "rename it"),
    ("stackpin.override.yaml", "rename it"),
    ("stackpin.smoke.json", "rename it"),
];

fn load_stack(
    tree: &dyn Tree,
    name: &str,
    repo: &RepoConfig,
    findings: &mut Vec<Finding>,
) -> Option<Stack> {
    let dir = format!("stacks/{name}");
    let spec_file = format!("{dir}/stack.yaml");
    let spec = read_spec(tree, name, &spec_file, findings)?;
    let (compose_rel, smoke_timeout) = {
        let mut sink = Sink::new(Some(name), spec_file.clone(), findings);
        let compose_rel = compose_path(&spec, &mut sink)?;
        check_spec_fields(&spec, &mut sink);
        let smoke_timeout = check_smoke(&spec, repo, &mut sink);
        check_backup(&spec, &mut sink);
        (compose_rel, smoke_timeout)
    };
    let mut spec = spec;
    let files = {
        let mut sink = Sink::new(Some(name), format!("{dir}/"), findings);
        collect_files(tree, &dir, &mut sink)
    };
    for (reserved, fix) in RESERVED_FILES {
        if files.contains_key(*reserved) {
            Sink::new(Some(name), format!("{dir}/{reserved}"), findings).error(
                "",
                format!("`{reserved}` is a name stackpin writes into every release: the host would refuse the stack"),
                *fix,
            );
        }
    }
    spec.secrets = {
        let mut sink = Sink::new(Some(name), spec_file.clone(), findings);
        check_secrets(&spec, &dir, &files, &mut sink)
    };
    let compose = load_compose(name, &dir, &compose_rel, &files, &spec, findings)?;
    let pins = effective_pins(name, &spec, &spec_file, &compose, &compose_rel, findings);
    let version = spec
        .version
        .clone()
        .unwrap_or_else(|| default_version(&pins));
    // Compose refuses a depends_on cycle ("dependency cycle detected"), and
    // a Swarm stack's steps follow the same order.
    if let Err(cycle) = swarm::levels(&compose) {
        Sink::new(Some(name), format!("{dir}/{compose_rel}"), findings).error(
            "services",
            format!("depends_on forms a cycle: {cycle}"),
            "remove one of these depends_on entries",
        );
    }
    if spec.engine.is_swarm() {
        // Swarm orders the tasks itself (`update_config`, written by the
        // release); stackpin's start-first replacement is for compose.
        swarm::check_compose(
            &compose,
            &mut Sink::new(Some(name), format!("{dir}/{compose_rel}"), findings),
        );
        swarm::check_spec(
            &spec,
            &mut Sink::new(Some(name), spec_file.clone(), findings),
        );
    }
    let mut exec_sink = Sink::new(Some(name), spec_file, findings);
    let rollout = if spec.engine.is_swarm() {
        update::Rollout {
            start_first: Vec::new(),
            drain: update::DEFAULT_DRAIN,
            reload: Vec::new(),
        }
    } else {
        update::check(&spec, &compose, &compose_rel, &mut exec_sink)
    };
    for (i, c) in spec.smoke.iter().flat_map(|s| s.checks.iter()).enumerate() {
        let (kind, service) = match c {
            Check::Exec(e) => ("exec", Some(&e.service)),
            Check::Http(h) => ("http", h.service.as_ref()),
            _ => continue,
        };
        if let Some(service) = service
            && !compose.has_service(service)
        {
            exec_sink.error(
                format!("smoke.checks[{i}].{kind}.service"),
                format!("no service `{service}` in {compose_rel}"),
                format!("name one of: {}", compose.service_names().join(", ")),
            );
        }
    }
    if let Some(b) = &spec.backup {
        let declared: Vec<String> = compose
            .value
            .get("volumes")
            .and_then(serde_json::Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for (i, v) in b.volumes.iter().enumerate() {
            if !declared.contains(v) {
                exec_sink.error(
                    format!("backup.volumes[{i}]"),
                    format!("`{v}` is not a named volume of {compose_rel}"),
                    if declared.is_empty() {
                        format!("declare it under the top-level `volumes:` of {compose_rel}")
                    } else {
                        format!("name one of: {}", declared.join(", "))
                    },
                );
            }
        }
    }
    update::check_routers(name, &dir, &files, &compose, &rollout, findings);
    Some(Stack {
        name: name.to_string(),
        keep_releases: spec
            .keep_releases
            .or(repo.defaults.keep_releases)
            .unwrap_or(DEFAULT_KEEP_RELEASES),
        spec,
        compose_file: compose_rel,
        compose,
        files,
        pins,
        version,
        smoke_timeout,
        rollout,
        key: None,
    })
}

/// `stacks/<name>/stack.yaml`, parsed.
fn read_spec(
    tree: &dyn Tree,
    name: &str,
    spec_file: &str,
    findings: &mut Vec<Finding>,
) -> Option<StackSpec> {
    let mut sink = Sink::new(Some(name), spec_file.to_string(), findings);
    match tree.kind(spec_file) {
        Ok(Some(Kind::File)) => {}
        Ok(None) => {
            sink.error("", "is missing", format!("create {spec_file} (an `environment:` line is enough when the compose file pins digests)"));
            return None;
        }
        _ => {
            sink.error(
                "",
                "is not a regular file",
                "make stack.yaml a regular file, not a link",
            );
            return None;
        }
    }
    read_yaml(tree, spec_file, &mut sink).ok().flatten()
}

/// The compose file's path inside the stack directory.
fn compose_path(spec: &StackSpec, sink: &mut Sink<'_>) -> Option<String> {
    let compose_rel = spec
        .compose
        .clone()
        .unwrap_or_else(|| "compose.yaml".to_string());
    match paths::normalize_rel(&compose_rel) {
        Ok(p) => Some(p),
        Err(e) => {
            sink.error(
                "compose",
                format!("\"{compose_rel}\" {e}"),
                "name the compose file by a path inside the stack directory, e.g. `compose.yaml`",
            );
            None
        }
    }
}

/// version, env, env_files, break_glass, hosts, depends_on, keep_releases.
fn check_spec_fields(spec: &StackSpec, sink: &mut Sink<'_>) {
    if let Some(v) = &spec.version
        && !valid_version(v)
    {
        sink.error("version", format!("\"{v}\" is not a usable version label (letters, digits, `.`, `_`, `-`; no `__`; at most 128)"), "use a label like `sha-724f892` or `1.4.2`");
    }
    for (k, v) in &spec.env {
        if !valid_env_key(k) {
            sink.error(
                format!("env.{k}"),
                "is not a valid environment variable name",
                "use letters, digits and `_`, not starting with a digit",
            );
        }
        if v.contains('\n') || v.contains('\0') {
            sink.error(
                format!("env.{k}"),
                "contains a newline",
                "write the value on one line",
            );
        }
    }
    for (i, f) in spec.env_files.iter().enumerate() {
        if !f.starts_with('/') {
            sink.error(format!("env_files[{i}]"), format!("\"{f}\" is not an absolute host path"), "env_files name host-local secret files such as /etc/stackpin/secrets/<stack>.env; never commit secrets");
        }
    }
    if let Some(bg) = &spec.break_glass
        && bg.reason.as_deref().is_none_or(|r| r.trim().is_empty())
    {
        sink.error(
            "break_glass.reason",
            "break_glass has no reason",
            "write why the gate is skipped: `break_glass: {reason: \"CVE-2026-1234 hotfix\"}`",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, h) in spec.hosts.iter().enumerate() {
        if !seen.insert(h) {
            sink.error(
                format!("hosts[{i}]"),
                format!("host `{h}` is listed twice"),
                "list each host once",
            );
        }
        if h.trim().is_empty() {
            sink.error(format!("hosts[{i}]"), "is empty", "write the host name");
        } else if let Some((k, v)) = h.split_once('=')
            && (k.trim().is_empty() || v.trim().is_empty() || v.contains('='))
        {
            sink.error(
                format!("hosts[{i}]"),
                format!("`{h}` is not a label selector"),
                "write a host name, or `key=value` to select the hosts whose config has `labels: {key: value}`",
            );
        }
    }
    let mut seen = BTreeSet::new();
    for (i, d) in spec.depends_on.iter().enumerate() {
        if !seen.insert(d) {
            sink.error(
                format!("depends_on[{i}]"),
                format!("stack `{d}` is listed twice"),
                "list each stack once",
            );
        }
    }
    if spec.keep_releases == Some(0) || spec.keep_releases == Some(1) {
        sink.error(
            "keep_releases",
            "must be at least 2, so the previous release stays for a rollback",
            "set keep_releases: 2 or more",
        );
    }
}

/// The smoke section's checks; returns the smoke timeout.
fn check_smoke(spec: &StackSpec, repo: &RepoConfig, sink: &mut Sink<'_>) -> Duration {
    let mut smoke_timeout = repo
        .defaults
        .smoke_timeout
        .as_deref()
        .and_then(|t| humantime::parse_duration(t).ok())
        .unwrap_or(DEFAULT_SMOKE_TIMEOUT);
    let Some(smoke) = &spec.smoke else {
        return smoke_timeout;
    };
    if let Some(t) = &smoke.timeout {
        match humantime::parse_duration(t) {
            Ok(d) if d.as_secs() >= 1 => smoke_timeout = d,
            _ => sink.error(
                "smoke.timeout",
                format!("\"{t}\" is not a duration of at least 1s"),
                "write a duration such as `90s` or `5m`",
            ),
        }
    }
    for (i, c) in smoke.checks.iter().enumerate() {
        check_smoke_check(&format!("smoke.checks[{i}]"), c, sink);
    }
    smoke_timeout
}

fn check_smoke_check(field: &str, c: &Check, sink: &mut Sink<'_>) {
    match c {
        Check::Containers(_) => {}
        Check::Http(h) => {
            match (&h.url, &h.service) {
                (Some(url), None) => match reqwest::Url::parse(url) {
                    Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                    _ => sink.error(
                        format!("{field}.http.url"),
                        format!("\"{url}\" is not an http(s) URL"),
                        "write e.g. `http://127.0.0.1:8069/web/health`",
                    ),
                },
                (None, Some(_)) => {
                    if h.port.is_none() {
                        sink.error(
                            format!("{field}.http.port"),
                            "a check on a service needs the port its container listens on",
                            "add e.g. `port: 8069`",
                        );
                    }
                }
                (Some(_), Some(_)) => sink.error(
                    format!("{field}.http"),
                    "has both `url` and `service`",
                    "keep one: `url` for an address on the host, `service` + `port` for the service's container directly",
                ),
                (None, None) => sink.error(
                    format!("{field}.http.url"),
                    "is missing",
                    "add `url: http://127.0.0.1:8069/web/health`, or `service:` + `port:` to check the container directly",
                ),
            }
            if h.url.is_some() && h.service.is_none() && (h.port.is_some() || h.path.is_some()) {
                sink.error(
                    format!("{field}.http"),
                    "`port` and `path` go with `service`, not with `url`",
                    "put the port and path into the url",
                );
            }
            if let Some(p) = &h.path
                && !p.starts_with('/')
            {
                sink.error(
                    format!("{field}.http.path"),
                    format!("\"{p}\" does not start with `/`"),
                    "write e.g. `path: /web/health`",
                );
            }
            if !(100..=599).contains(&h.expect_status) {
                sink.error(
                    format!("{field}.http.expect_status"),
                    format!("{} is not an HTTP status", h.expect_status),
                    "use a status such as 200",
                );
            }
        }
        Check::Tcp(t) => {
            if t.address.parse::<std::net::SocketAddr>().is_err() {
                sink.error(
                    format!("{field}.tcp.address"),
                    format!("\"{}\" is not an address with a port", t.address),
                    "write `127.0.0.1:8072`",
                );
            }
        }
        Check::Exec(e) => {
            if e.command.is_empty() {
                sink.error(
                    format!("{field}.exec.command"),
                    "is empty",
                    "write the command as a list, e.g. [\"odoo\", \"--version\"]",
                );
            }
        }
    }
}

fn check_backup(spec: &StackSpec, sink: &mut Sink<'_>) {
    let Some(b) = &spec.backup else {
        return;
    };
    for (i, p) in b.postgres.iter().enumerate() {
        match (&p.container, &p.url_file) {
            (Some(_), Some(_)) | (None, None) => sink.error(
                format!("backup.postgres[{i}]"),
                "needs exactly one of `container` (pg_dump inside a container) or `url_file` (the host's pg_dump against a server)",
                "write `{container: seisei-db, user: odoo, databases: [...]}` or `{url_file: /etc/stackpin/secrets/db.url, databases: [...]}`",
            ),
            (Some(_), None) if p.user.is_none() => sink.error(
                format!("backup.postgres[{i}].user"),
                "is required with `container`",
                "name the database user pg_dump runs as, e.g. `user: odoo`",
            ),
            (None, Some(f)) if !f.starts_with('/') => sink.error(
                format!("backup.postgres[{i}].url_file"),
                format!("\"{f}\" is not an absolute host path"),
                "keep the connection URL (it holds a password) in a host-local file such as /etc/stackpin/secrets/<stack>-db.url",
            ),
            _ => {}
        }
        if p.databases.is_empty() {
            sink.error(
                format!("backup.postgres[{i}].databases"),
                "is empty",
                "list the databases to dump",
            );
        }
    }
    match b.keep {
        Some(Keep::Count(0)) => {
            sink.error("backup.keep", "must be at least 1", "set keep: 1 or more");
        }
        Some(Keep::Policy(p)) if p == KeepPolicy::default() => sink.error(
            "backup.keep",
            "keeps no backup (every count is 0)",
            "set at least one of last, daily, weekly, monthly, e.g. `keep: {daily: 7, weekly: 4}`",
        ),
        _ => {}
    }
    let mut seen = BTreeSet::new();
    for (i, v) in b.volumes.iter().enumerate() {
        if !seen.insert(v) {
            sink.error(
                format!("backup.volumes[{i}]"),
                format!("`{v}` is listed twice"),
                "list each volume once",
            );
        }
    }
}

/// The suffix of a file encrypted with age.
pub const AGE_SUFFIX: &str = ".age";

/// Where `secrets:` entry `encrypted` (`app.env.age`) is decrypted to in
/// the release (`app.env`).
pub fn secret_target(encrypted: &str) -> &str {
    encrypted.strip_suffix(AGE_SUFFIX).unwrap_or(encrypted)
}

/// Whether a decrypted secret (its path in the release) is a dotenv file,
/// whose variables also go into the release's `.env`.
pub fn secret_is_dotenv(target: &str) -> bool {
    target.ends_with(".env")
}

/// `secrets:`: each entry a `.age` file of the stack directory whose
/// decrypted name is not also a file there. Returns the entries normalized
/// (`./a.env.age` -> `a.env.age`). An `.age` file not listed is copied as
/// it is, encrypted: a warning, since it is likely a forgotten entry.
fn check_secrets(
    spec: &StackSpec,
    dir: &str,
    files: &BTreeMap<String, Vec<u8>>,
    sink: &mut Sink<'_>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, entry) in spec.secrets.iter().enumerate() {
        let field = format!("secrets[{i}]");
        let rel = match paths::normalize_rel(entry) {
            Ok(p) => p,
            Err(e) => {
                sink.error(
                    field,
                    format!("\"{entry}\" {e}"),
                    "name an age-encrypted file inside the stack directory, e.g. `app.env.age`",
                );
                continue;
            }
        };
        if !rel.ends_with(AGE_SUFFIX) || secret_target(&rel).rsplit('/').next() == Some("") {
            sink.error(
                field,
                format!("\"{entry}\" does not end in `{AGE_SUFFIX}`"),
                format!("encrypt the file with `age -r <host recipient> -o {rel}{AGE_SUFFIX} {rel}` and list the `.age` file"),
            );
            continue;
        }
        if !files.contains_key(&rel) {
            sink.error(
                field,
                format!("{dir}/{rel} does not exist"),
                format!("commit {dir}/{rel} or remove the entry"),
            );
            continue;
        }
        let target = secret_target(&rel);
        if files.contains_key(target) {
            sink.error(
                field,
                format!("{dir}/{target} is committed next to {rel}, in clear"),
                format!("remove {dir}/{target} from git (and rotate what it held): {rel} is decrypted to that name"),
            );
            continue;
        }
        if out.contains(&rel) {
            sink.error(
                field,
                format!("{rel} is listed twice"),
                "list each file once",
            );
            continue;
        }
        out.push(rel);
    }
    for path in files.keys() {
        if path.ends_with(AGE_SUFFIX) && !out.contains(path) && !spec.secrets.contains(path) {
            sink.warn(
                "secrets",
                format!("{dir}/{path} is not listed, so it is copied into the release encrypted"),
                format!("add `{path}` to `secrets:` to have it decrypted on the host"),
            );
        }
    }
    out
}

/// The compose file, parsed and checked statically. `secrets` are the
/// stack's `.age` files: their decrypted names count as files of the stack.
fn load_compose(
    name: &str,
    dir: &str,
    compose_rel: &str,
    files: &BTreeMap<String, Vec<u8>>,
    spec: &StackSpec,
    findings: &mut Vec<Finding>,
) -> Option<Compose> {
    let (secrets, profiles, swarm) = (&spec.secrets, &spec.profiles, spec.engine.is_swarm());
    let compose_file = format!("{dir}/{compose_rel}");
    let Some(bytes) = files.get(compose_rel) else {
        Sink::new(Some(name), format!("{dir}/stack.yaml"), findings).error(
            "compose",
            format!("{compose_file} does not exist"),
            format!("add {compose_file} or set `compose:` to the compose file's name"),
        );
        return None;
    };
    let value = {
        let mut sink = Sink::new(Some(name), compose_file.clone(), findings);
        parse_compose_value(bytes, &mut sink).ok()?
    };
    let resolved = {
        let mut parse = |rel: &str, b: &[u8]| {
            let mut sink = Sink::new(Some(name), format!("{dir}/{rel}"), findings);
            parse_compose_value(b, &mut sink).ok()
        };
        resolve::resolve(value, compose_rel, files, profiles, &mut parse)
    };
    let resolved = match resolved {
        Ok(Some(r)) => r,
        Ok(None) => return None,
        Err(p) => {
            Sink::new(Some(name), format!("{dir}/{}", p.file), findings)
                .error(p.field, p.message, p.fix);
            return None;
        }
    };
    let value = resolved.value;
    let checked_from = findings.len();
    let mut sink = Sink::new(Some(name), compose_file.clone(), findings);
    for (field, source) in &resolved.made_read_only {
        sink.warn(
            field.as_str(),
            format!(
                "relative bind mount \"{source}\" is writable in the compose file; stackpin mounts it read-only, since a release's files never change"
            ),
            "append `:ro` to say so; keep data the service writes in a named volume",
        );
    }
    let file_set: BTreeSet<String> = files
        .keys()
        .cloned()
        .chain(secrets.iter().map(|s| secret_target(s).to_string()))
        .collect();
    let compose_dir = compose_rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    compose::check(
        &value,
        &PathContext {
            compose_dir,
            files: &file_set,
            stack_dir: dir,
            swarm,
        },
        &mut sink,
    );
    // A finding about a service of an included file names that file.
    for f in &mut findings[checked_from..] {
        let Some(rest) = f.field.strip_prefix("services.") else {
            continue;
        };
        // Service names may hold dots: match whole names.
        let from = resolved.origin.iter().find(|(svc, _)| {
            rest.strip_prefix(svc.as_str())
                .is_some_and(|tail| tail.is_empty() || tail.starts_with(['.', '[']))
        });
        if let Some((_, (file, chain))) = from {
            f.file = format!("{dir}/{file}");
            f.message = format!("{} (included: {chain})", f.message);
        }
    }
    let mut sink = Sink::new(Some(name), compose_file, findings);
    let compose = Compose {
        value,
        resolved: resolved.changed,
        inactive: resolved.inactive,
    };
    let n = compose.services().count();
    if n == 0 {
        return None; // already reported by compose::check
    }
    if n > MAX_SERVICES {
        sink.error(
            "services",
            format!("defines {n} services, more than the {MAX_SERVICES} one stack may hold"),
            "split the stack",
        );
        return None;
    }
    Some(compose)
}

/// Effective images: the stack.yaml pin, else the compose image.
fn effective_pins(
    name: &str,
    spec: &StackSpec,
    spec_file: &str,
    compose: &Compose,
    compose_rel: &str,
    findings: &mut Vec<Finding>,
) -> IndexMap<String, ImageRef> {
    let mut pins = IndexMap::new();
    let mut spec_sink = Sink::new(Some(name), spec_file.to_string(), findings);
    for (svc, r) in &spec.images {
        let field = format!("images.{svc}");
        if compose.inactive.contains(svc) {
            continue; // its profiles leave it out on this stack
        }
        if !compose.has_service(svc) {
            spec_sink.error(
                &field,
                format!("no service `{svc}` in {compose_rel}"),
                format!(
                    "pin one of the services: {}",
                    compose.service_names().join(", ")
                ),
            );
            continue;
        }
        match ImageRef::parse(r) {
            Err(m) => spec_sink.error(&field, m.0, "pin it as `repository@sha256:<64 hex>`"),
            Ok(ir) if ir.digest.is_none() => spec_sink.error(&field, tag_message(r, &ir), "pin it as `repository@sha256:<64 hex>` (`docker buildx imagetools inspect` or the registry shows the digest)"),
            Ok(ir) => {
                pins.insert(svc.clone(), ir);
            }
        }
    }
    let dir = spec_file.trim_end_matches("/stack.yaml");
    let mut compose_sink = Sink::new(Some(name), format!("{dir}/{compose_rel}"), spec_sink.out);
    for svc in compose.service_names() {
        if pins.contains_key(&svc) || spec.images.contains_key(&svc) {
            continue;
        }
        let field = format!("services.{svc}.image");
        let fix = format!(
            "pin it in {spec_file}: `images: {{{svc}: repository@sha256:<64 hex>}}`, or write the digest in `image:`"
        );
        match compose.image(&svc) {
            None => compose_sink.error(
                &field,
                format!("service `{svc}` has no image and no pin"),
                fix,
            ),
            Some(img) if img.contains("${") => compose_sink.error(
                &field,
                format!("\"{img}\" uses interpolation, so the digest is not known before deploy"),
                fix,
            ),
            Some(img) => match ImageRef::parse(img) {
                Err(m) => compose_sink.error(&field, m.0, fix),
                Ok(ir) if ir.digest.is_none() => {
                    compose_sink.error(&field, tag_message(img, &ir), fix)
                }
                Ok(ir) => {
                    pins.insert(svc.clone(), ir);
                }
            },
        }
    }
    pins
}

fn tag_message(raw: &str, ir: &ImageRef) -> String {
    match ir.tag.as_deref() {
        Some("latest") => {
            format!("\"{raw}\" uses the `:latest` tag, which names a different image over time")
        }
        Some(_) => format!("\"{raw}\" is pinned by tag only; tags can be moved"),
        None => format!("\"{raw}\" has no digest (it means `:latest`)"),
    }
}

#[cfg(test)]
mod tests;
