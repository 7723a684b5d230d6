//! The release store of SPEC §2: immutable release directories under
//! `<root>/releases/stacks/<stack>/<version>__<yyyymmddThhmmssZ>/`, the
//! `<root>/stacks/<stack>` symlink switched with `rename(2)`, retention, and
//! the small state files (`current/<stack>.json`, `verified/<stack>.txt`).
//!
//! [`render`] is pure: it turns a [`Stack`] and the bytes of its host-local
//! env files into the files of a release and a fingerprint. Everything else
//! here does I/O, and each function states what a crash can leave behind.
//! The invariants: a `<id>` directory is only ever created by renaming a
//! complete, fsynced temporary directory, and the stack symlink only ever
//! points at such a directory.

use crate::desired::Stack;
use crate::desired::image::ImageRef;
use crate::fsutil;
use crate::layout::Layout;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeDelta, Timelike, Utc};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Why a value cannot be written into `.env`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EnvValueError(pub String);

impl From<String> for EnvValueError {
    fn from(s: String) -> EnvValueError {
        EnvValueError(s)
    }
}

impl From<&str> for EnvValueError {
    fn from(s: &str) -> EnvValueError {
        EnvValueError(s.to_string())
    }
}

/// The compose override that makes the pinned digests win.
pub const OVERRIDE_FILE: &str = "stackpin.override.yaml";
pub const ENV_FILE: &str = ".env";
/// Written last: its presence (parsable) marks a complete release.
pub const META_FILE: &str = "release.json";
/// Mode of release files while written (made read-only afterwards).
pub const FILE_MODE: u32 = 0o644;
/// Mode of `.env` (SPEC §2).
pub const ENV_MODE: u32 = fsutil::ENV_FILE_MODE;
const TMP_PREFIX: &str = ".tmp-";
const ID_TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";
/// Names stackpin writes into a release itself; a stack may not hold them.
/// `.env` keys stackpin sets; `env:` and env files may not set them.
const RESERVED_KEYS: &[&str] = &["COMPOSE_PROJECT_NAME", "COMPOSE_FILE"];

/// Failures of the release store. Messages never contain secret values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to parse {} as JSON", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "failed to render stack {stack}: its file `{file}` has a name stackpin writes into every release; {fix}"
    )]
    ReservedFile {
        stack: String,
        file: String,
        fix: &'static str,
    },
    #[error(
        "failed to render stack {stack}: `{file}` is not a plain relative path inside the stack directory"
    )]
    BadPath { stack: String, file: String },
    #[error(
        "failed to render stack {stack}: the resolved compose model cannot be written as YAML: {reason}"
    )]
    Resolved { stack: String, reason: String },
    #[error("failed to render stack {stack}: the deploy steps its depends_on asks for: {reason}")]
    SwarmSteps { stack: String, reason: String },
    #[error("failed to read env file {path} (line {line}): {reason}")]
    EnvFile {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("failed to render stack {stack}: {key} {reason}")]
    EnvValue {
        stack: String,
        key: String,
        reason: String,
    },
    #[error(
        "failed to use release id `{id}`: it is not `<version>__<yyyymmddThhmmssZ>` with a version of letters, digits, `.`, `_` and `-`"
    )]
    BadId { id: String },
    #[error("failed to create release {}: it already exists", dir.display())]
    Exists { dir: PathBuf },
    #[error(
        "failed to switch {stack}: release {} is incomplete ({META_FILE} missing or unreadable)",
        dir.display()
    )]
    Incomplete { stack: String, dir: PathBuf },
    #[error(
        "failed to switch {stack}: {} is a real directory or file, not the symlink stackpin manages (the layout before stackpin); stop its containers, move it aside (`mv {0} {0}.legacy`) and sync again",
        path.display()
    )]
    LegacyDir { stack: String, path: PathBuf },
    #[error(
        "failed to read the current release of {stack}: {} points at {}, which does not exist",
        link.display(),
        target.display()
    )]
    Dangling {
        stack: String,
        link: PathBuf,
        target: PathBuf,
    },
    #[error(
        "failed to read the current release of {stack}: {} points at {}, which is not a release under {}",
        link.display(),
        target.display(),
        releases.display()
    )]
    ForeignLink {
        stack: String,
        link: PathBuf,
        target: PathBuf,
        releases: PathBuf,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// `release.json`, written last into every release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseMeta {
    pub stack: String,
    pub release_id: String,
    pub version: String,
    pub environment: String,
    pub fingerprint: String,
    pub commit: Option<String>,
    /// service -> pinned reference, as fields (older releases hold
    /// `repo@sha256:…` strings, which read the same).
    pub images: BTreeMap<String, ImageRef>,
    pub compose_files: Vec<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The stack's `marks_verified` when the release was made: recording
    /// it (also after a crash) marks it verified.
    #[serde(default)]
    pub marks_verified: bool,
    /// The stack's `keep_releases` when the release was made (retention).
    #[serde(default)]
    pub keep_releases: Option<u32>,
    /// The release's files decrypted from `secrets:` (never shown in a
    /// diff).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_files: Vec<String>,
    /// What runs the release: compose (absent) or `docker stack deploy`.
    #[serde(
        default,
        skip_serializing_if = "crate::desired::spec::StackEngine::is_compose"
    )]
    pub engine: crate::desired::spec::StackEngine,
    /// `engine: swarm` with `depends_on`: the steps deployed before the
    /// whole stack ([`crate::engine::swarm::Step`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub swarm_steps: Vec<crate::engine::swarm::Step>,
}

impl ReleaseMeta {
    /// The compose project (= stack) this release runs as, in `dir`.
    pub fn project<'a>(&'a self, dir: &'a Path) -> crate::engine::Project<'a> {
        crate::engine::Project {
            name: &self.stack,
            dir,
            files: &self.compose_files,
            swarm: self.engine.is_swarm(),
            steps: &self.swarm_steps,
        }
    }

    pub fn new(
        stack: &Stack,
        rendered: &Rendered,
        release_id: &str,
        created_at: DateTime<Utc>,
    ) -> ReleaseMeta {
        ReleaseMeta {
            stack: stack.name.clone(),
            release_id: release_id.to_string(),
            version: stack.version.clone(),
            environment: stack.environment().to_string(),
            fingerprint: rendered.fingerprint.clone(),
            commit: rendered.commit.clone(),
            images: stack
                .pins
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            compose_files: rendered.compose_files.clone(),
            created_at: created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            marks_verified: stack.spec.marks_verified,
            keep_releases: Some(stack.keep_releases),
            secret_files: rendered.secret_files.iter().cloned().collect(),
            engine: stack.spec.engine,
            swarm_steps: rendered.swarm_steps.clone(),
        }
    }
}

/// What a release directory will hold, computed without I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// relative path -> bytes: every stack file as authored, plus
    /// [`OVERRIDE_FILE`]. Not `.env` nor `release.json`.
    pub files: BTreeMap<String, Vec<u8>>,
    /// The content of `.env` (holds secrets: never log it).
    pub env_file: String,
    /// Values that came from env files and decrypted secrets, longest
    /// first, for masking.
    pub secret_values: Vec<String>,
    /// The files of [`Rendered::files`] decrypted from `secrets:`: written
    /// owner-only, never shown in a diff.
    pub secret_files: BTreeSet<String>,
    /// Hex sha256 identifying what runs; see [`render`].
    pub fingerprint: String,
    /// `[<compose file>, stackpin.override.yaml]`, in `COMPOSE_FILE` order.
    pub compose_files: Vec<String>,
    /// The desired commit, carried to `release.json`; not fingerprinted.
    pub commit: Option<String>,
    /// service -> its fingerprint (the override's
    /// [`SERVICE_FINGERPRINT_LABEL`]).
    pub services: BTreeMap<String, String>,
    /// The deploy steps of a Swarm stack with `depends_on` (see
    /// [`swarm_steps`]); their files are in [`Rendered::files`].
    pub swarm_steps: Vec<crate::engine::swarm::Step>,
}

/// What a release is rendered with besides the stack, read on this host by
/// the caller (see `reconcile::render`).
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// The stack's `env_files`: (path, bytes), in order.
    pub env_files: Vec<(String, Vec<u8>)>,
    /// The stack's decrypted `secrets:`: (path in the release, plaintext),
    /// in order.
    pub decrypted: Vec<(String, Vec<u8>)>,
}

/// The shortest line of a decrypted file (not a dotenv one) that is masked
/// in output: shorter lines are syntax (`[main]`, `}`), not secrets.
const MASKED_LINE_MIN: usize = 8;

/// The shortest value of a `k = v` line of such a file that is masked on
/// its own: shorter ones (`1`, `on`, `true`) are settings, not secrets,
/// and masking them would garble every message.
const MASKED_VALUE_MIN: usize = 6;

/// What output must never show of a decrypted secret file that is not a
/// dotenv file: each line long enough to be more than syntax, and the
/// value of each `k=v`, `k = v` or `k: v` line (an ini, conf or YAML
/// secret), which a message may show without its key.
pub fn secret_file_masks(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .flat_map(|l| {
            let l = l.trim();
            let value = assigned_value(l)
                .filter(|v| v.len() >= MASKED_VALUE_MIN)
                .map(str::to_string);
            let line = (l.len() >= MASKED_LINE_MIN).then(|| l.to_string());
            [line, value]
        })
        .flatten()
        .collect()
}

/// The value of a `k=v`, `k = v` or `k: v` line, unquoted; `None` for a
/// line that is not one (a section, a comment, a bare word).
fn assigned_value(line: &str) -> Option<&str> {
    if line.starts_with('#') || line.starts_with(';') || line.starts_with('[') {
        return None;
    }
    let at = line.find(['=', ':'])?;
    let (key, value) = (line[..at].trim(), line[at + 1..].trim());
    let key_like = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' '));
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(value);
    (key_like && !value.is_empty()).then_some(value)
}

fn pinned_images(stack: &Stack) -> Vec<(String, String)> {
    stack
        .pins
        .iter()
        .map(|(svc, r)| (svc.clone(), r.pinned().unwrap_or_else(|| r.to_string())))
        .collect()
}

/// Renders a stack into the content of a release. Pure.
///
/// - the stack's files are copied as authored;
/// - [`OVERRIDE_FILE`] sets `services.<svc>.image` to the pinned reference of
///   every pin, so the digests win over the compose file's `image:`;
/// - `.env` sets `COMPOSE_PROJECT_NAME=<stack>` and
///   `COMPOSE_FILE=<compose>:stackpin.override.yaml` (so `docker compose ps`
///   works by hand in `<root>/stacks/<stack>`), then the `env:` values in
///   order, then the variables of the decrypted `*.env` secrets, then those
///   of the stack's `env_files` (read by the caller, in order; a later file
///   wins, and an env file wins over `env:`);
/// - each decrypted secret is a file of the release under its name without
///   `.age` (mode 0600, listed in [`Rendered::secret_files`]); the encrypted
///   file is not copied, so re-encrypting the same plaintext changes nothing.
///
/// `.env` values are written unquoted when they hold nothing special, which
/// every compose reads the same (docker-compose v1 before 1.26 does not
/// unquote at all). Others are single-quoted (literal in compose v2 and in
/// v1's python-dotenv: no escapes, no `$` interpolation) unless they hold a
/// `'`, `\` or newline; then double-quoted with `\\`, `\"`, `\n`, `\r`, which
/// both read back the same, and a `$` in such a value is refused because the
/// two interpolate it differently.
///
/// The fingerprint is sha256 over length-prefixed records of: every file
/// path and bytes (sorted, decrypted secrets included), the non-secret part
/// of `.env`, the pins, and for each env file its path and the sha256 of its
/// bytes: rotating a secret changes it. The commit is not
/// part of it: a commit that changes nothing else does not redeploy.
///
/// # Errors
/// A stack file named like a file stackpin writes, a path that is not plain
/// relative, an env file line that does not parse, a reserved or invalid
/// key, or a value that cannot be written safely. Errors name the file, line
/// and key, never the value.
pub fn render(stack: &Stack, host: &Secrets, commit: Option<&str>) -> Result<Rendered, Error> {
    let mut files = BTreeMap::new();
    let mut secret_paths = BTreeSet::new();
    // The encrypted files are not copied: their plaintext is.
    let plain = stack
        .files
        .iter()
        .filter(|(p, _)| !stack.spec.secrets.contains(p));
    let decrypted = host.decrypted.iter().map(|(p, b)| (p, b, true));
    for (path, bytes, secret) in plain.map(|(p, b)| (p, b, false)).chain(decrypted) {
        check_rel_path(&stack.name, path)?;
        if secret && (files.contains_key(path) || !secret_paths.insert(path.clone())) {
            return Err(Error::ReservedFile {
                stack: stack.name.clone(),
                file: path.clone(),
                fix: "a secret decrypts to a file that exists already: rename one of them",
            });
        }
        // The smoke spec is the one reserved file the caller adds itself
        // (a stack file of that name is refused when the stack loads).
        if let Some((_, fix)) = crate::desired::RESERVED_FILES
            .iter()
            .find(|(name, _)| *name == path.as_str() && *name != crate::smoke::SPEC_FILE)
        {
            return Err(Error::ReservedFile {
                stack: stack.name.clone(),
                file: path.clone(),
                fix,
            });
        }
        files.insert(path.clone(), bytes.clone());
    }
    let pins = pinned_images(stack);
    let env_values: BTreeMap<String, String> = stack
        .spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Dotenv sources of secret variables: the decrypted `*.env` secrets,
    // then the host's env files (a later one wins).
    let secret_files: Vec<(String, Vec<u8>)> = host
        .decrypted
        .iter()
        .filter(|(p, _)| crate::desired::secret_is_dotenv(p))
        .map(|(p, b)| {
            (
                format!("stacks/{}/{p}{}", stack.name, crate::desired::AGE_SUFFIX),
                b.clone(),
            )
        })
        .chain(host.env_files.iter().cloned())
        .collect();
    let secret_files = secret_files.as_slice();
    let services = service_fingerprints(stack, &pins, &files, &env_values, secret_files);
    files.insert(
        OVERRIDE_FILE.to_string(),
        override_yaml(stack, &pins, &services, None).into_bytes(),
    );
    let compose_file = if stack.compose.resolved {
        // `include`, `extends` or `profiles` were resolved: the release runs
        // the resolved model, the one validation checked and plan shows.
        let rel = match stack.compose_file.rsplit_once('/') {
            Some((d, _)) => format!("{d}/{}", crate::desired::resolve::RESOLVED_FILE),
            None => crate::desired::resolve::RESOLVED_FILE.to_string(),
        };
        if files.contains_key(&rel) {
            return Err(Error::ReservedFile {
                stack: stack.name.clone(),
                file: rel,
                fix: "stackpin writes the resolved compose model there: rename the file",
            });
        }
        let yaml = serde_saphyr::to_string(&stack.compose.value).map_err(|e| Error::Resolved {
            stack: stack.name.clone(),
            reason: e.to_string(),
        })?;
        files.insert(
            rel.clone(),
            format!(
                "# Written by stackpin: {} with include, extends and profiles resolved.\n# This is what runs; the release keeps the files it was made from.\n{yaml}",
                stack.compose_file
            )
            .into_bytes(),
        );
        rel
    } else {
        stack.compose_file.clone()
    };
    let swarm_steps = swarm_steps(stack, &pins, &services, &mut files)?;
    let compose_files = vec![compose_file, OVERRIDE_FILE.to_string()];

    // Secret variables, merged: later files win, first position kept.
    let mut secrets: IndexMap<String, String> = IndexMap::new();
    for (path, bytes) in secret_files {
        for (key, value) in parse_env_file(path, bytes)? {
            if RESERVED_KEYS.contains(&key.as_str()) {
                return Err(Error::EnvValue {
                    stack: stack.name.clone(),
                    key,
                    reason: format!("in {path} is set by stackpin itself; remove it"),
                });
            }
            secrets.insert(key, value);
        }
    }

    let env_line = |key: &str, value: &str| -> Result<String, Error> {
        encode_env_value(value)
            .map(|v| format!("{key}={v}\n"))
            .map_err(|reason| Error::EnvValue {
                stack: stack.name.clone(),
                key: key.to_string(),
                reason: reason.0,
            })
    };
    let mut public =
        String::from("# Written by stackpin; do not edit: the release is immutable.\n");
    public.push_str(&env_line("COMPOSE_PROJECT_NAME", &stack.name)?);
    public.push_str(&env_line("COMPOSE_FILE", &compose_files.join(":"))?);
    let mut env_file = public.clone();
    for (key, value) in &stack.spec.env {
        if RESERVED_KEYS.contains(&key.as_str()) {
            return Err(Error::EnvValue {
                stack: stack.name.clone(),
                key: format!("env.{key}"),
                reason: "is set by stackpin itself; remove it from stack.yaml".into(),
            });
        }
        let line = env_line(key, value)?;
        public.push_str(&line);
        if !secrets.contains_key(key) {
            env_file.push_str(&line);
        }
    }
    for (key, value) in &secrets {
        env_file.push_str(&env_line(key, value)?);
    }

    let file_lines = host
        .decrypted
        .iter()
        .filter(|(p, _)| !crate::desired::secret_is_dotenv(p))
        .flat_map(|(_, b)| secret_file_masks(b));
    let mut secret_values: Vec<String> = secrets
        .into_values()
        .chain(file_lines)
        .filter(|v| !v.is_empty())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    secret_values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));

    let fingerprint = fingerprint(&files, &public, &pins, secret_files);
    Ok(Rendered {
        files,
        env_file,
        secret_values,
        secret_files: secret_paths,
        fingerprint,
        compose_files,
        commit: commit.map(str::to_string),
        services,
        swarm_steps,
    })
}

/// The prefix of the step files of a Swarm stack's release.
pub const SWARM_STEP_PREFIX: &str = "stackpin.swarm-step-";

/// For a Swarm stack whose services `depends_on` others, one
/// [`crate::engine::swarm::Step`] per level of
/// [`crate::desired::swarm::levels`] but the last (the whole stack is
/// deployed after them): two files beside the compose file,
/// `stackpin.swarm-step-<n>.yaml` (the compose model with only the level's
/// services, without their `depends_on`: the services they name are not in
/// the file) and `stackpin.swarm-step-<n>.override.yaml` (their pins, as in
/// [`OVERRIDE_FILE`]). `docker stack deploy` resolves relative paths from
/// the first file's directory, so `configs: {file: ./x}` reads the same
/// file as the whole stack's deploy. None for other stacks. Pure.
fn swarm_steps(
    stack: &Stack,
    pins: &[(String, String)],
    services: &BTreeMap<String, String>,
    files: &mut BTreeMap<String, Vec<u8>>,
) -> Result<Vec<crate::engine::swarm::Step>, Error> {
    if !stack.spec.engine.is_swarm() {
        return Ok(Vec::new());
    }
    let err = |reason: String| Error::SwarmSteps {
        stack: stack.name.clone(),
        reason,
    };
    let levels = crate::desired::swarm::levels(&stack.compose)
        .map_err(|cycle| err(format!("depends_on forms a cycle: {cycle}")))?;
    let dir = match stack.compose_file.rsplit_once('/') {
        Some((d, _)) => format!("{d}/"),
        None => String::new(),
    };
    let mut steps = Vec::new();
    for (i, level) in levels
        .iter()
        .take(levels.len().saturating_sub(1))
        .enumerate()
    {
        let compose = format!("{dir}{SWARM_STEP_PREFIX}{}.yaml", i + 1);
        let pinned = format!("{dir}{SWARM_STEP_PREFIX}{}.override.yaml", i + 1);
        for f in [&compose, &pinned] {
            if files.contains_key(f) {
                return Err(Error::ReservedFile {
                    stack: stack.name.clone(),
                    file: f.clone(),
                    fix: "stackpin writes the deploy steps of depends_on there: rename the file",
                });
            }
        }
        let mut model = stack.compose.value.clone();
        if let Some(svcs) = model
            .get_mut("services")
            .and_then(serde_json::Value::as_object_mut)
        {
            svcs.retain(|name, _| level.contains(name));
            for def in svcs.values_mut() {
                if let Some(d) = def.as_object_mut() {
                    d.remove("depends_on");
                }
            }
        }
        let yaml = serde_saphyr::to_string(&model).map_err(|e| err(e.to_string()))?;
        files.insert(
            compose.clone(),
            format!(
                "# Written by stackpin: step {} of the deploy of {}, the services the next steps depend on.\n{yaml}",
                i + 1,
                stack.compose_file
            )
            .into_bytes(),
        );
        files.insert(
            pinned.clone(),
            override_yaml(stack, pins, services, Some(level)).into_bytes(),
        );
        steps.push(crate::engine::swarm::Step {
            services: level.clone(),
            files: vec![compose, pinned],
            wait_secs: stack.smoke_timeout.as_secs(),
        });
    }
    Ok(steps)
}

fn check_rel_path(stack: &str, path: &str) -> Result<(), Error> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && !path.contains('\0')
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(Error::BadPath {
            stack: stack.to_string(),
            file: path.to_string(),
        })
    }
}

/// The label holding a service's fingerprint (see [`service_fingerprints`]).
pub use crate::engine::SERVICE_FINGERPRINT_LABEL;

/// Each service's fingerprint: sha256 over what it runs from the release —
/// its compose definition as authored, its pinned image, the bytes of every
/// stack file or directory it bind-mounts (relative sources), of its relative
/// `env_file`s and `configs:`/`secrets:` files, and the values of the
/// variables its definition interpolates (a secret's as its sha256). Set as
/// a label by the override, it is part of compose's own config hash, so with
/// the stable project directory compose recreates a service exactly when
/// its fingerprint changes: a digest bump of one service recreates that
/// service only; a change to the router's config file, the router only.
pub fn service_fingerprints(
    stack: &Stack,
    pins: &[(String, String)],
    files: &BTreeMap<String, Vec<u8>>,
    env: &BTreeMap<String, String>,
    secret_files: &[(String, Vec<u8>)],
) -> BTreeMap<String, String> {
    let mut secrets: BTreeMap<String, String> = BTreeMap::new();
    for (path, bytes) in secret_files {
        if let Ok(vars) = parse_env_file(path, bytes) {
            for (k, v) in vars {
                secrets.insert(k, format!("sha256:{:x}", Sha256::digest(v.as_bytes())));
            }
        }
    }
    let all_sources = service_sources(stack);
    let mut out = BTreeMap::new();
    for (name, def) in stack.compose.services() {
        let mut h = Sha256::new();
        let mut put = |tag: &[u8], bytes: &[u8]| {
            h.update(tag);
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        put(b"service", name.as_bytes());
        put(b"definition", &serde_json::to_vec(def).unwrap_or_default());
        if let Some((_, pin)) = pins.iter().find(|(s, _)| s == name) {
            put(b"image", pin.as_bytes());
        }
        let sources = all_sources.get(name).cloned().unwrap_or_default();
        for (path, bytes) in files_under(files, &sources) {
            put(b"file", path.as_bytes());
            put(b"bytes", bytes);
        }
        let text = serde_json::to_string(def).unwrap_or_default();
        for (k, v) in env.iter().chain(secrets.iter()) {
            if text.contains(&format!("${{{k}")) || text.contains(&format!("${k}")) {
                put(b"var", k.as_bytes());
                put(b"value", secrets.get(k).unwrap_or(v).as_bytes());
            }
        }
        out.insert(name.to_string(), format!("{:x}", h.finalize()));
    }
    out
}

/// The stack files and directories each service reads from the release
/// (relative to the stack directory): its relative bind sources, relative
/// `env_file`s and `configs:`/`secrets:` files.
pub fn service_sources(stack: &Stack) -> BTreeMap<String, BTreeSet<String>> {
    use serde_json::Value;
    let compose_dir = Path::new(&stack.compose_file)
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let resolve = |src: &str| -> Option<String> {
        let joined = if compose_dir.is_empty() {
            src.to_string()
        } else {
            format!("{compose_dir}/{src}")
        };
        crate::desired::paths::normalize_rel(&joined).ok()
    };
    let top = &stack.compose.value;
    let mut out = BTreeMap::new();
    for (name, def) in stack.compose.services() {
        let mut sources: BTreeSet<String> = BTreeSet::new();
        for v in def
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let src = match v {
                Value::String(s) => s.split(':').next().unwrap_or_default().to_string(),
                Value::Object(m) => m
                    .get("source")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                _ => continue,
            };
            if src.starts_with('.') {
                sources.extend(resolve(&src));
            }
        }
        match def.get("env_file") {
            Some(Value::String(f)) => sources.extend(resolve(f)),
            Some(Value::Array(list)) => {
                for f in list {
                    if let Some(f) = f.as_str().or_else(|| f.get("path").and_then(Value::as_str)) {
                        sources.extend(resolve(f));
                    }
                }
            }
            _ => {}
        }
        for key in ["configs", "secrets"] {
            for r in def.get(key).and_then(Value::as_array).into_iter().flatten() {
                let Some(n) = r
                    .as_str()
                    .or_else(|| r.get("source").and_then(Value::as_str))
                else {
                    continue;
                };
                if let Some(f) = top
                    .pointer(&format!("/{key}/{n}/file"))
                    .and_then(Value::as_str)
                {
                    sources.extend(resolve(f));
                }
            }
        }
        out.insert(name.to_string(), sources);
    }
    out
}

/// The files of `files` that are one of `sources` or inside one of them.
pub fn files_under<'a>(
    files: &'a BTreeMap<String, Vec<u8>>,
    sources: &'a BTreeSet<String>,
) -> impl Iterator<Item = (&'a String, &'a Vec<u8>)> + 'a {
    files.iter().filter(move |(path, _)| {
        sources
            .iter()
            .any(|src| *path == src || path.starts_with(&format!("{src}/")))
    })
}

/// The fingerprint label of each service, as a release's override file
/// sets it (see [`service_fingerprints`]); empty for a release made before
/// the label existed.
///
/// # Errors
/// The override file exists but cannot be read or parsed.
pub fn read_service_fingerprints(dir: &Path) -> Result<BTreeMap<String, String>, String> {
    let path = dir.join(OVERRIDE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("failed to read {}: {e}", path.display())),
    };
    let v: serde_json::Value = serde_saphyr::from_str(&text)
        .map_err(|e| format!("failed to parse {}: {e}", path.display()))?;
    Ok(v.get("services")
        .and_then(serde_json::Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(svc, def)| {
            let fp = def
                .get("labels")?
                .get(SERVICE_FINGERPRINT_LABEL)?
                .as_str()?;
            Some((svc.clone(), fp.to_string()))
        })
        .collect())
}

/// The override, as YAML built by hand: keys and values are JSON strings,
/// which are valid double-quoted YAML scalars for every YAML parser compose
/// has used. A top-level `version:` of the compose file is repeated, since
/// docker-compose v1 refuses files of mixed versions. Each service (each of
/// `only`, when given) gets its pinned image and its
/// [`SERVICE_FINGERPRINT_LABEL`].
fn override_yaml(
    stack: &Stack,
    pins: &[(String, String)],
    services: &BTreeMap<String, String>,
    only: Option<&[String]>,
) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut out = String::from(
        "# Written by stackpin: every service runs the image digest pinned in stack.yaml.\n",
    );
    match stack.compose.value.get("version") {
        Some(serde_json::Value::String(v)) => out.push_str(&format!("version: {}\n", q(v))),
        Some(serde_json::Value::Number(n)) => {
            out.push_str(&format!("version: {}\n", q(&n.to_string())))
        }
        _ => {}
    }
    if pins.is_empty() && services.is_empty() {
        out.push_str("services: {}\n");
        return out;
    }
    out.push_str("services:\n");
    let listed = |svc: &str| only.is_none_or(|o| o.iter().any(|x| x == svc));
    for (svc, _) in stack.compose.services().filter(|(s, _)| listed(s)) {
        out.push_str(&format!("  {}:\n", q(svc)));
        if let Some((_, pinned)) = pins.iter().find(|(s, _)| s == svc) {
            out.push_str(&format!("    image: {}\n", q(pinned)));
        }
        if let Some(fp) = services.get(svc) {
            out.push_str(&format!(
                "    labels:\n      {}: {}\n",
                q(SERVICE_FINGERPRINT_LABEL),
                q(fp)
            ));
        }
        if stack.spec.engine.is_swarm() {
            // JSON is YAML (flow style).
            out.push_str(&format!(
                "    deploy:\n      update_config: {}\n",
                crate::desired::swarm::update_config(&stack.spec, svc)
            ));
        }
    }
    out
}

fn fingerprint(
    files: &BTreeMap<String, Vec<u8>>,
    public_env: &str,
    pins: &[(String, String)],
    secret_files: &[(String, Vec<u8>)],
) -> String {
    let mut h = Sha256::new();
    let mut put = |tag: &[u8], bytes: &[u8]| {
        h.update(tag);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    put(b"stackpin-release", b"1");
    for (path, bytes) in files {
        put(b"path", path.as_bytes());
        put(b"data", bytes);
    }
    put(b"env", public_env.as_bytes());
    let sorted: BTreeMap<&str, &str> = pins.iter().map(|(s, p)| (s.as_str(), p.as_str())).collect();
    for (svc, pinned) in sorted {
        put(b"service", svc.as_bytes());
        put(b"pin", pinned.as_bytes());
    }
    for (path, bytes) in secret_files {
        put(b"secret-file", path.as_bytes());
        put(b"secret-sha256", &Sha256::digest(bytes));
    }
    hex::encode(h.finalize())
}

/// [`crate::dotenv::parse`], its error naming the file.
fn parse_env_file(path: &str, bytes: &[u8]) -> Result<Vec<(String, String)>, Error> {
    crate::dotenv::parse(bytes).map_err(|e| Error::EnvFile {
        path: path.to_string(),
        line: e.line,
        reason: e.reason,
    })
}

/// Writes a value so compose v1 and v2 read back exactly `value`.
fn encode_env_value(value: &str) -> Result<String, EnvValueError> {
    if value.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    let plain = |c: char| !c.is_whitespace() && !c.is_control() && !"#'\"\\$`".contains(c);
    if value.chars().all(plain) {
        return Ok(value.to_string());
    }
    if !value.contains(['\'', '\\', '\n', '\r']) {
        return Ok(format!("'{value}'"));
    }
    if value.contains('$') {
        return Err("contains `$` together with a quote, backslash or newline, which docker compose v1 and v2 read differently in .env; change the value".into());
    }
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

/// A new release id `<version>__<yyyymmddThhmmssZ>` at `now` (UTC, whole
/// seconds). When `exists` says the id is taken, the time is bumped one
/// second at a time until it is free, so the format stays the same.
pub fn new_release_id(version: &str, now: DateTime<Utc>, exists: impl Fn(&str) -> bool) -> String {
    let mut t = now.with_nanosecond(0).unwrap_or(now);
    let mut id = String::new();
    // Bounded so a broken `exists` cannot loop forever (~11 days of seconds).
    for _ in 0..1_000_000 {
        id = format!("{version}__{}", t.format(ID_TIME_FORMAT));
        if !exists(&id) {
            break;
        }
        t += TimeDelta::seconds(1);
    }
    id
}

/// Splits a release id at its last `__` into the version and the time.
/// `None` unless the time is exactly `yyyymmddThhmmssZ` and the version a
/// usable label.
pub fn parse_release_id(id: &str) -> Option<(String, DateTime<Utc>)> {
    let (version, ts) = id.rsplit_once("__")?;
    let vb = version.as_bytes();
    if vb.is_empty()
        || !vb[0].is_ascii_alphanumeric()
        || !vb
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
    {
        return None;
    }
    let t = NaiveDateTime::parse_from_str(ts, ID_TIME_FORMAT).ok()?;
    // chrono accepts a few variants (e.g. more year digits); keep only ours.
    if t.format(ID_TIME_FORMAT).to_string() != ts {
        return None;
    }
    Some((version.to_string(), t.and_utc()))
}

/// Reads `<dir>/release.json`.
pub fn read_meta(dir: &Path) -> Result<ReleaseMeta, Error> {
    let path = dir.join(META_FILE);
    let bytes = fs::read(&path).map_err(io_err("read", &path))?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Json { path, source })
}

/// Whether `dir` is a complete release: `release.json` present and parsable.
pub fn is_complete(dir: &Path) -> bool {
    read_meta(dir).is_ok()
}

/// Writes a release directory.
///
/// # Guarantees
/// Writes every file (0644), `.env` (0600) and `release.json` last into
/// `<releases>/.tmp-<id>`, makes the tree read-only, fsyncs every file and
/// directory once (data and the read-only modes together), renames it to
/// `<id>` and fsyncs the parent. A crash leaves at
/// most a `.tmp-*` directory (removed by [`sweep_temp`]), never a partial
/// `<id>`. A leftover `.tmp-<id>` from an earlier crash is replaced.
///
/// # Errors
/// `Exists` when `<id>` already exists (ids are never reused), `BadId`,
/// `BadPath`/`ReservedFile` for unusable file names, and I/O errors.
pub fn create(
    layout: &Layout,
    stack: &str,
    rendered: &Rendered,
    meta: &ReleaseMeta,
) -> Result<PathBuf, Error> {
    let id = meta.release_id.as_str();
    if parse_release_id(id).is_none() {
        return Err(Error::BadId { id: id.to_string() });
    }
    let parent = layout.releases_dir(stack);
    let dir = parent.join(id);
    if fs::symlink_metadata(&dir).is_ok() {
        return Err(Error::Exists { dir });
    }
    for path in rendered.files.keys() {
        check_rel_path(stack, path)?;
        if path == ENV_FILE || path == META_FILE {
            return Err(Error::ReservedFile {
                stack: stack.to_string(),
                file: path.clone(),
                fix: "rename it",
            });
        }
    }
    fsutil::create_dir_all_synced(&parent).map_err(io_err("create directory", &parent))?;
    let tmp = parent.join(format!("{TMP_PREFIX}{id}"));
    fsutil::remove_tree(&tmp).map_err(io_err("remove leftover", &tmp))?;
    fs::create_dir(&tmp).map_err(io_err("create directory", &tmp))?;

    let result = (|| {
        for (rel, bytes) in &rendered.files {
            let mode = if rendered.secret_files.contains(rel) {
                ENV_MODE
            } else {
                FILE_MODE
            };
            write_new(&tmp.join(rel), bytes, mode)?;
        }
        write_new(&tmp.join(ENV_FILE), rendered.env_file.as_bytes(), ENV_MODE)?;
        let mut json = serde_json::to_vec_pretty(meta).map_err(|source| Error::Json {
            path: tmp.join(META_FILE),
            source,
        })?;
        json.push(b'\n');
        write_new(&tmp.join(META_FILE), &json, FILE_MODE)?;
        fsutil::set_tree_readonly(&tmp).map_err(io_err("make read-only", &tmp))?;
        // One fsync per file and directory, after the modes changed, covers
        // data and metadata, before the rename makes the release visible.
        sync_tree(&tmp)?;
        fs::rename(&tmp, &dir).map_err(io_err("rename into place", &tmp))?;
        fsutil::fsync_dir(&parent).map_err(io_err("fsync", &parent))
    })();
    if result.is_err() {
        let _ = fsutil::remove_tree(&tmp);
    }
    result.map(|()| dir)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err("create", path))?;
    f.write_all(bytes).map_err(io_err("write", path))?;
    // Independent of the umask. Not synced here: `create` syncs the whole
    // tree once, after it is made read-only.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err("set the mode of", path))
}

fn sync_tree(dir: &Path) -> Result<(), Error> {
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(io_err("stat", &path))?;
        if ft.is_dir() {
            sync_tree(&path)?;
        } else if ft.is_file() {
            fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io_err("fsync", &path))?;
        }
    }
    fsutil::fsync_dir(dir).map_err(io_err("fsync", dir))
}

/// Points `<root>/stacks/<stack>` at release `id`.
///
/// # Guarantees
/// Refuses a release that is not complete. Creates a temporary symlink
/// `<root>/stacks/.<stack>.tmp-link-<pid>` to the release's absolute path,
/// `rename(2)`s it over the stack link and fsyncs `<root>/stacks`: any
/// reader sees the old or the new release, never a missing link. Idempotent.
///
/// # Errors
/// `Incomplete`; `LegacyDir` when `<root>/stacks/<stack>` is a real
/// directory (it is left alone); I/O errors.
pub fn switch(layout: &Layout, stack: &str, id: &str) -> Result<(), Error> {
    let dir = layout.release_dir(stack, id);
    if id.starts_with('.') || !is_complete(&dir) {
        return Err(Error::Incomplete {
            stack: stack.to_string(),
            dir,
        });
    }
    let link = layout.stack_link(stack);
    match fs::symlink_metadata(&link) {
        Ok(m) if !m.file_type().is_symlink() => {
            return Err(Error::LegacyDir {
                stack: stack.to_string(),
                path: link,
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("stat", &link)(e)),
    }
    let stacks = layout.stacks_dir();
    fsutil::create_dir_all_synced(&stacks).map_err(io_err("create directory", &stacks))?;
    let target = std::path::absolute(&dir).map_err(io_err("resolve", &dir))?;
    let tmp = stacks.join(format!(".{stack}.tmp-link-{}", std::process::id()));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io_err("remove leftover", &tmp)(e));
        }
        _ => {}
    }
    std::os::unix::fs::symlink(&target, &tmp).map_err(io_err("create symlink", &tmp))?;
    if let Err(e) = fs::rename(&tmp, &link) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("rename symlink over", &link)(e));
    }
    fsutil::fsync_dir(&stacks).map_err(io_err("fsync", &stacks))
}

/// Removes the stack link `<root>/stacks/<stack>` (a first deploy that
/// failed leaves no link rather than one to a release that did not pass).
/// Idempotent: a missing link is fine; fsyncs `<root>/stacks`.
///
/// # Errors
/// `LegacyDir` when the path is a real directory or file (left alone).
pub fn unlink(layout: &Layout, stack: &str) -> Result<(), Error> {
    let link = layout.stack_link(stack);
    match fs::symlink_metadata(&link) {
        Ok(m) if !m.file_type().is_symlink() => Err(Error::LegacyDir {
            stack: stack.to_string(),
            path: link,
        }),
        Ok(_) => {
            fs::remove_file(&link).map_err(io_err("remove symlink", &link))?;
            let stacks = layout.stacks_dir();
            fsutil::fsync_dir(&stacks).map_err(io_err("fsync", &stacks))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("stat", &link)(e)),
    }
}

/// The release the stack link points at; `None` when there is no link.
///
/// # Errors
/// `LegacyDir` when the path is not a symlink, `Dangling` when the target
/// does not exist, `ForeignLink` when it is not a directory directly under
/// this stack's releases directory. Completeness is not checked here.
pub fn current(layout: &Layout, stack: &str) -> Result<Option<String>, Error> {
    let link = layout.stack_link(stack);
    let target = match fs::read_link(&link) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            return Err(Error::LegacyDir {
                stack: stack.to_string(),
                path: link,
            });
        }
        Err(e) => return Err(io_err("read symlink", &link)(e)),
    };
    let resolved = if target.is_absolute() {
        target.clone()
    } else {
        layout.stacks_dir().join(&target)
    };
    let foreign = || Error::ForeignLink {
        stack: stack.to_string(),
        link: link.clone(),
        target: target.clone(),
        releases: layout.releases_dir(stack),
    };
    let real = match fs::canonicalize(&resolved) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::Dangling {
                stack: stack.to_string(),
                link,
                target,
            });
        }
        Err(e) => return Err(io_err("resolve", &resolved)(e)),
    };
    let releases = fs::canonicalize(layout.releases_dir(stack)).map_err(|_| foreign())?;
    let id = match (real.parent(), real.file_name()) {
        (Some(p), Some(name)) if p == releases && real.is_dir() => {
            name.to_string_lossy().into_owned()
        }
        _ => return Err(foreign()),
    };
    if id.starts_with('.') {
        return Err(foreign());
    }
    Ok(Some(id))
}

/// One release directory of a stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseInfo {
    pub id: String,
    pub dir: PathBuf,
    /// `release.json`, when present and parsable.
    pub meta: Option<ReleaseMeta>,
    pub complete: bool,
}

impl ReleaseInfo {
    pub fn created(&self) -> Option<DateTime<Utc>> {
        parse_release_id(&self.id).map(|(_, t)| t)
    }
}

/// The stack's release directories, oldest first by the time in the id.
/// Temporary (`.*`) entries and names that are not release ids are left out.
pub fn list(layout: &Layout, stack: &str) -> Result<Vec<ReleaseInfo>, Error> {
    let parent = layout.releases_dir(stack);
    let rd = match fs::read_dir(&parent) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", &parent)(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(io_err("list", &parent))?;
        let id = entry.file_name().to_string_lossy().into_owned();
        if id.starts_with('.') || parse_release_id(&id).is_none() {
            continue;
        }
        let dir = entry.path();
        if !entry.file_type().map_err(io_err("stat", &dir))?.is_dir() {
            continue;
        }
        let meta = read_meta(&dir).ok();
        out.push(ReleaseInfo {
            id,
            dir,
            complete: meta.is_some(),
            meta,
        });
    }
    out.sort_by(|a, b| a.created().cmp(&b.created()).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// Removes what a crash can leave: `.tmp-*` release directories and the
/// stack's temporary links. Returns what it removed. Idempotent; run it
/// under the stack lock (it would remove a concurrent `create`'s work).
pub fn sweep_temp(layout: &Layout, stack: &str) -> Result<Vec<PathBuf>, Error> {
    let mut removed = Vec::new();
    let parent = layout.releases_dir(stack);
    for path in entries_with_prefix(&parent, TMP_PREFIX)? {
        fsutil::remove_tree(&path).map_err(io_err("remove", &path))?;
        removed.push(path);
    }
    if !removed.is_empty() {
        fsutil::fsync_dir(&parent).map_err(io_err("fsync", &parent))?;
    }
    let stacks = layout.stacks_dir();
    let links = entries_with_prefix(&stacks, &format!(".{stack}.tmp-link-"))?;
    for path in &links {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("remove", path)(e));
            }
            _ => {}
        }
    }
    if !links.is_empty() {
        fsutil::fsync_dir(&stacks).map_err(io_err("fsync", &stacks))?;
    }
    removed.extend(links);
    Ok(removed)
}

fn entries_with_prefix(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>, Error> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(io_err("list", dir))?;
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Applies retention: keeps the newest `keep` complete releases, every id in
/// `protect` (the caller passes current, previous successful and newest
/// verified) and the current link target in any case; removes the other
/// complete releases and incomplete directories older than the newest
/// complete one. Returns the removed ids, oldest first. Idempotent.
///
/// # Errors
/// When the current release cannot be determined (dangling or foreign link,
/// legacy directory) nothing is removed.
pub fn retain(
    layout: &Layout,
    stack: &str,
    keep: usize,
    protect: &[&str],
) -> Result<Vec<String>, Error> {
    let current = current(layout, stack)?;
    let all = list(layout, stack)?;
    let newest_complete = all.iter().rposition(|r| r.complete);
    let mut kept: BTreeSet<&str> = all
        .iter()
        .rev()
        .filter(|r| r.complete)
        .take(keep)
        .map(|r| r.id.as_str())
        .collect();
    kept.extend(protect.iter().copied());
    kept.extend(current.as_deref());
    let mut removed = Vec::new();
    for (i, r) in all.iter().enumerate() {
        if kept.contains(r.id.as_str()) {
            continue;
        }
        let remove = r.complete || newest_complete.is_some_and(|n| i < n);
        if remove {
            fsutil::remove_tree(&r.dir).map_err(io_err("remove release", &r.dir))?;
            removed.push(r.id.clone());
        }
    }
    if !removed.is_empty() {
        let parent = layout.releases_dir(stack);
        fsutil::fsync_dir(&parent).map_err(io_err("fsync", &parent))?;
    }
    Ok(removed)
}

/// One image of [`CurrentRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `repo@sha256:…` as pinned.
    pub pinned: String,
    /// `sha256:…`.
    pub digest: String,
}

impl From<&ImageRef> for ImageRecord {
    fn from(r: &ImageRef) -> ImageRecord {
        ImageRecord {
            pinned: r.pinned().unwrap_or_else(|| r.to_string()),
            digest: r.digest.clone().unwrap_or_default(),
        }
    }
}

impl CurrentRecord {
    /// What runs once `meta`'s release is up, deployed now by `actor`.
    pub fn of(meta: &ReleaseMeta, actor: &str) -> CurrentRecord {
        CurrentRecord {
            stack: meta.stack.clone(),
            release_id: meta.release_id.clone(),
            version: meta.version.clone(),
            environment: meta.environment.clone(),
            commit: meta.commit.clone(),
            images: meta
                .images
                .iter()
                .map(|(k, v)| (k.clone(), ImageRecord::from(v)))
                .collect(),
            fingerprint: meta.fingerprint.clone(),
            deployed_at: crate::history::now_rfc3339(),
            actor: actor.to_string(),
        }
    }
}

/// `<root>/releases/current/<stack>.json`: what runs, for people and tools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentRecord {
    pub stack: String,
    pub release_id: String,
    pub version: String,
    pub environment: String,
    pub commit: Option<String>,
    pub images: BTreeMap<String, ImageRecord>,
    pub fingerprint: String,
    /// RFC 3339, UTC.
    pub deployed_at: String,
    pub actor: String,
}

/// Writes `current/<stack>.json` atomically (pretty JSON, 0644). Idempotent.
pub fn write_current(layout: &Layout, stack: &str, rec: &CurrentRecord) -> Result<(), Error> {
    let path = layout.current_json(stack);
    let mut json = serde_json::to_vec_pretty(rec).map_err(|source| Error::Json {
        path: path.clone(),
        source,
    })?;
    json.push(b'\n');
    fsutil::write_atomic(&path, &json, 0o644).map_err(io_err("write", &path))
}

/// Reads `current/<stack>.json`; `None` when missing.
pub fn read_current(layout: &Layout, stack: &str) -> Result<Option<CurrentRecord>, Error> {
    let path = layout.current_json(stack);
    match fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| Error::Json { path, source }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", &path)(e)),
    }
}

/// Writes `verified/<stack>.txt`: the version and a newline, atomically.
pub fn write_verified_txt(layout: &Layout, stack: &str, version: &str) -> Result<(), Error> {
    let path = layout.verified_txt(stack);
    fsutil::write_atomic(&path, format!("{version}\n").as_bytes(), 0o644)
        .map_err(io_err("write", &path))
}

/// Reads `verified/<stack>.txt` (trimmed); `None` when missing or empty.
pub fn read_verified_txt(layout: &Layout, stack: &str) -> Result<Option<String>, Error> {
    let path = layout.verified_txt(stack);
    match fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", &path)(e)),
    }
}

/// Reads every file of a release directory: relative path -> bytes
/// (entries that cannot be read are skipped: callers only compare and show).
pub fn read_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let (Ok(b), Ok(rel)) = (std::fs::read(&p), p.strip_prefix(dir)) {
                out.insert(rel.to_string_lossy().into_owned(), b);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn every_file_a_release_writes_is_reserved_for_validate() {
        for f in [ENV_FILE, META_FILE, OVERRIDE_FILE, crate::smoke::SPEC_FILE] {
            assert!(
                crate::desired::RESERVED_FILES.iter().any(|(n, _)| *n == f),
                "{f}"
            );
        }
    }

    use super::*;
    use crate::desired::compose::Compose;
    use crate::desired::image::ImageRef;
    use crate::desired::spec::StackSpec;
    use chrono::TimeZone;
    use std::time::Duration;

    const D1: &str = "sha256:1db6436ca7e084705cffcf3e760b6659cce449bd636edf94917b28de2df3fbe5";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn stack() -> Stack {
        let compose =
            "services:\n  web:\n    image: ghcr.io/acme/odoo18\n  db:\n    image: postgres\n";
        let mut spec = StackSpec {
            environment: Some("staging".into()),
            env_files: vec!["/etc/stackpin/secrets/s.env".into()],
            ..StackSpec::default()
        };
        spec.env.insert("DB_HOST".into(), "seisei-db".into());
        spec.env
            .insert("GREETING".into(), "hello world # not a comment".into());
        let mut pins = IndexMap::new();
        pins.insert(
            "web".to_string(),
            ImageRef::parse(&format!("ghcr.io/acme/odoo18@{D1}")).unwrap(),
        );
        pins.insert(
            "db".to_string(),
            ImageRef::parse(&format!("postgres:16@{D1}")).unwrap(),
        );
        let mut files = BTreeMap::new();
        files.insert("compose.yaml".to_string(), compose.as_bytes().to_vec());
        files.insert("config/odoo.conf".to_string(), b"[options]\n".to_vec());
        Stack {
            name: "odoo18-staging".into(),
            spec,
            compose_file: "compose.yaml".into(),
            compose: Compose {
                value: serde_json::json!({"services": {"web": {"image": "ghcr.io/acme/odoo18"}, "db": {"image": "postgres"}}}),
                ..Default::default()
            },
            files,
            pins,
            version: "sha-724f892".into(),
            keep_releases: 10,
            smoke_timeout: Duration::from_secs(120),
            rollout: crate::desired::update::Rollout {
                start_first: Vec::new(),
                drain: crate::desired::update::DEFAULT_DRAIN,
                reload: Vec::new(),
            },
        }
    }

    /// [`stack`] as `engine: swarm`, `web` depending on `db`.
    fn swarm_stack() -> Stack {
        let mut s = stack();
        s.spec.engine = crate::desired::spec::StackEngine::Swarm;
        s.spec.env_files.clear();
        s.compose.value = serde_json::json!({
            "version": "3.8",
            "services": {
                "web": {"image": "ghcr.io/acme/odoo18", "depends_on": ["db"], "configs": [{"source": "conf", "target": "/etc/odoo.conf"}]},
                "db": {"image": "postgres", "environment": {"PGDATA": "${PGDATA:-/var/lib/pg}"}},
            },
            "configs": {"conf": {"file": "./config/odoo.conf"}},
        });
        s
    }

    #[test]
    fn a_swarm_stack_with_depends_on_gets_a_deploy_step_per_level_but_the_last() {
        let s = swarm_stack();
        let r = render(&s, &Secrets::default(), None).unwrap();
        assert_eq!(r.swarm_steps.len(), 1, "{:?}", r.swarm_steps);
        let step = &r.swarm_steps[0];
        assert_eq!(step.services, ["db"]);
        assert_eq!(
            step.files,
            [
                "stackpin.swarm-step-1.yaml",
                "stackpin.swarm-step-1.override.yaml"
            ]
        );
        assert_eq!(step.wait_secs, 120);
        let read = |f: &str| -> serde_json::Value {
            serde_saphyr::from_str(std::str::from_utf8(&r.files[f]).unwrap()).unwrap()
        };
        // Only db, as written (interpolation is left to stack deploy), and
        // the top-level configs the whole stack declares.
        let step1 = read("stackpin.swarm-step-1.yaml");
        assert_eq!(step1["version"], "3.8");
        assert_eq!(
            step1["services"],
            serde_json::json!({"db": {"image": "postgres", "environment": {"PGDATA": "${PGDATA:-/var/lib/pg}"}}})
        );
        assert_eq!(step1["configs"]["conf"]["file"], "./config/odoo.conf");
        let pinned = read("stackpin.swarm-step-1.override.yaml");
        let svcs = pinned["services"].as_object().unwrap();
        assert_eq!(svcs.keys().collect::<Vec<_>>(), ["db"]);
        assert_eq!(svcs["db"]["image"], format!("postgres@{D1}"));
        assert_eq!(
            svcs["db"]["deploy"]["update_config"]["failure_action"],
            "pause"
        );
        // The whole stack's files are unchanged.
        let whole = read(OVERRIDE_FILE);
        assert_eq!(whole["services"].as_object().unwrap().len(), 2);
        assert_eq!(r.compose_files, ["compose.yaml", OVERRIDE_FILE]);
        // release.json carries the steps; older releases read as none.
        let meta = ReleaseMeta::new(&s, &r, "v1__20261205T000000Z", Utc::now());
        let back: ReleaseMeta =
            serde_json::from_str(&serde_json::to_string(&meta).unwrap()).unwrap();
        assert_eq!(back.swarm_steps, r.swarm_steps);
        assert_eq!(
            back.project(Path::new("/x")).steps,
            r.swarm_steps.as_slice()
        );
        let mut old = serde_json::to_value(&meta).unwrap();
        old.as_object_mut().unwrap().remove("swarm_steps");
        let old: ReleaseMeta = serde_json::from_value(old).unwrap();
        assert!(old.swarm_steps.is_empty());
        // No steps without depends_on, nor for a compose stack.
        let mut flat = swarm_stack();
        flat.compose.value["services"]["web"]
            .as_object_mut()
            .unwrap()
            .remove("depends_on");
        assert!(
            render(&flat, &Secrets::default(), None)
                .unwrap()
                .swarm_steps
                .is_empty()
        );
        let mut compose = swarm_stack();
        compose.spec.engine = crate::desired::spec::StackEngine::Compose;
        let r = render(&compose, &Secrets::default(), None).unwrap();
        assert!(r.swarm_steps.is_empty());
        assert!(!r.files.keys().any(|f| f.starts_with(SWARM_STEP_PREFIX)));
    }

    #[test]
    fn a_stack_file_named_like_a_step_file_is_refused() {
        let mut s = swarm_stack();
        s.files
            .insert("stackpin.swarm-step-1.yaml".into(), b"x".to_vec());
        let e = render(&s, &Secrets::default(), None).unwrap_err();
        assert!(
            matches!(&e, Error::ReservedFile { file, .. } if file == "stackpin.swarm-step-1.yaml"),
            "{e}"
        );
    }

    fn secrets() -> Secrets {
        Secrets {
            env_files: vec![(
                "/etc/stackpin/secrets/s.env".to_string(),
                b"# secrets\n\nexport DB_PASSWORD=s3cr3t-pw\nAPI_KEY='a b#c'\nDB_HOST=override-db\n"
                    .to_vec(),
            )],
            decrypted: Vec::new(),
        }
    }

    /// A temporary root removed on drop even when it holds read-only
    /// releases (tempfile alone cannot when the tests run unprivileged).
    struct Root(tempfile::TempDir);

    impl Root {
        fn new() -> Root {
            Root(tempfile::tempdir().unwrap())
        }
        fn layout(&self) -> Layout {
            Layout::new(self.0.path())
        }
    }

    impl Drop for Root {
        fn drop(&mut self) {
            let _ = fsutil::remove_tree(self.0.path());
        }
    }

    fn time(s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 30, 10, 0, s).unwrap()
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    /// Creates a release of `stack()` with version `v` at second `s`.
    fn make(layout: &Layout, v: &str, s: u32) -> String {
        let st = stack();
        let r = render(&st, &secrets(), Some("abc123")).unwrap();
        let id = new_release_id(v, time(s), |id| layout.release_dir(&st.name, id).exists());
        let meta = ReleaseMeta::new(&st, &r, &id, time(s));
        create(layout, &st.name, &r, &meta).unwrap();
        id
    }

    #[test]
    fn render_is_deterministic_and_pins_digests() {
        let st = stack();
        let a = render(&st, &secrets(), Some("c1")).unwrap();
        let b = render(&st, &secrets(), Some("c1")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.compose_files, vec!["compose.yaml", OVERRIDE_FILE]);
        assert_eq!(a.files["compose.yaml"], st.files["compose.yaml"]);
        let ov = String::from_utf8(a.files[OVERRIDE_FILE].clone()).unwrap();
        assert!(
            ov.contains(&format!(
                "  \"web\":\n    image: \"ghcr.io/acme/odoo18@{D1}\"\n"
            )),
            "{ov}"
        );
        assert!(ov.contains(&format!("image: \"postgres@{D1}\"")), "{ov}");
        // The override is YAML a YAML parser reads back as the pins.
        let v: serde_json::Value = serde_saphyr::from_str(&ov).unwrap();
        assert_eq!(
            v["services"]["web"]["image"],
            format!("ghcr.io/acme/odoo18@{D1}")
        );
        assert_eq!(a.fingerprint.len(), 64);
    }

    #[test]
    fn env_file_content_and_secret_values() {
        let r = render(&stack(), &secrets(), None).unwrap();
        let lines: Vec<&str> = r.env_file.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            vec![
                "COMPOSE_PROJECT_NAME=odoo18-staging",
                "COMPOSE_FILE=compose.yaml:stackpin.override.yaml",
                "GREETING='hello world # not a comment'",
                "DB_PASSWORD=s3cr3t-pw",
                "API_KEY='a b#c'",
                "DB_HOST=override-db",
            ]
        );
        assert_eq!(r.secret_values, vec!["override-db", "s3cr3t-pw", "a b#c"]);
    }

    #[test]
    fn env_values_are_encoded_for_both_compose_versions() {
        assert_eq!(encode_env_value("plain-1.2:/x").unwrap(), "plain-1.2:/x");
        assert_eq!(encode_env_value("").unwrap(), "");
        assert_eq!(encode_env_value("a b").unwrap(), "'a b'");
        assert_eq!(encode_env_value("$HOME").unwrap(), "'$HOME'");
        assert_eq!(
            encode_env_value("it's \"x\"\n\\").unwrap(),
            "\"it's \\\"x\\\"\\n\\\\\""
        );
        assert!(encode_env_value("it's $5").is_err());
        // Values read back through our own parser as written.
        for v in [
            "a b",
            "#x",
            "x #y",
            "it's",
            "q\"q",
            "back\\slash",
            "l1\nl2",
            "tab\there",
            " pad ",
        ] {
            let enc = encode_env_value(v).unwrap();
            assert_eq!(crate::dotenv::parse_value(&enc).unwrap(), v, "{enc}");
        }
    }

    #[test]
    fn env_file_errors_name_file_and_line_not_value() {
        let st = stack();
        let bad = |text: &str| {
            render(
                &st,
                &Secrets {
                    env_files: vec![("/s.env".to_string(), text.as_bytes().to_vec())],
                    decrypted: Vec::new(),
                },
                None,
            )
            .unwrap_err()
            .to_string()
        };
        let e = bad("OK=1\nNOEQUALS_topsecret\n");
        assert!(
            e.contains("/s.env (line 2)") && !e.contains("topsecret"),
            "{e}"
        );
        let e = bad("K='unterminated topsecret\n");
        assert!(e.contains("line 1") && !e.contains("topsecret"), "{e}");
        let e = bad("COMPOSE_PROJECT_NAME=other\n");
        assert!(e.contains("COMPOSE_PROJECT_NAME"), "{e}");
        let e = bad("1BAD=x\n");
        assert!(e.contains("invalid variable name"), "{e}");

        let mut st2 = stack();
        st2.files.insert(".env".into(), b"X=1".to_vec());
        assert!(matches!(
            render(&st2, &Secrets::default(), None),
            Err(Error::ReservedFile { .. })
        ));
        let mut st3 = stack();
        st3.files.insert("../escape".into(), b"X".to_vec());
        assert!(matches!(
            render(&st3, &Secrets::default(), None),
            Err(Error::BadPath { .. })
        ));
    }

    #[test]
    fn fingerprint_tracks_content_not_commit() {
        let base = render(&stack(), &secrets(), Some("c1"))
            .unwrap()
            .fingerprint;
        let fp = |st: &Stack, sec: &Secrets| render(st, sec, Some("c2")).unwrap().fingerprint;
        assert_eq!(
            fp(&stack(), &secrets()),
            base,
            "commit alone must not change it"
        );

        let mut st = stack();
        st.files.insert(
            "config/odoo.conf".into(),
            b"[options]\nworkers = 4\n".to_vec(),
        );
        assert_ne!(fp(&st, &secrets()), base, "config file");

        let mut st = stack();
        st.pins.insert(
            "web".into(),
            ImageRef::parse(&format!("ghcr.io/acme/odoo18@{D2}")).unwrap(),
        );
        assert_ne!(fp(&st, &secrets()), base, "pin");

        let mut st = stack();
        st.spec.env.insert("DB_HOST".into(), "other".into());
        assert_ne!(fp(&st, &secrets()), base, "env");

        let mut sec = secrets();
        sec.env_files[0].1 = b"DB_PASSWORD=rotated\n".to_vec();
        assert_ne!(fp(&stack(), &sec), base, "secret file");
    }

    #[test]
    fn release_ids() {
        let id = new_release_id("sha-724f892", time(5), |_| false);
        assert_eq!(id, "sha-724f892__20260130T100005Z");
        assert_eq!(
            parse_release_id(&id),
            Some(("sha-724f892".to_string(), time(5)))
        );
        let taken = ["v1__20260130T100005Z", "v1__20260130T100006Z"];
        let id = new_release_id("v1", time(5), |id| taken.contains(&id));
        assert_eq!(id, "v1__20260130T100007Z");
        // Split at the last `__`, so an old version label holding `__` still parses.
        assert_eq!(
            parse_release_id("a__b__20260130T100005Z").map(|(v, _)| v),
            Some("a__b".to_string())
        );
        for bad in [
            "v1",
            "v1__2026",
            "__20260130T100005Z",
            "v1__20260130T100005",
            ".tmp-v__20260130T100005Z",
            "a/b__20260130T100005Z",
        ] {
            assert!(parse_release_id(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn create_writes_complete_read_only_release() {
        let t = Root::new();
        let layout = t.layout();
        let id = make(&layout, "sha-724f892", 0);
        let dir = layout.release_dir("odoo18-staging", &id);
        assert!(is_complete(&dir));
        let meta = read_meta(&dir).unwrap();
        assert_eq!(meta.release_id, id);
        assert_eq!(meta.commit.as_deref(), Some("abc123"));
        assert_eq!(meta.environment, "staging");
        assert_eq!(
            meta.images["web"].pinned().unwrap(),
            format!("ghcr.io/acme/odoo18@{D1}")
        );
        assert_eq!(meta.created_at, "2026-01-30T10:00:00Z");
        let env = fs::read_to_string(dir.join(".env")).unwrap();
        assert!(env.contains("COMPOSE_PROJECT_NAME=odoo18-staging\n"));
        assert!(env.contains("DB_PASSWORD=s3cr3t-pw\n"));
        assert_eq!(mode(&dir.join(".env")), 0o600);
        assert_eq!(mode(&dir.join("compose.yaml")), 0o444);
        assert_eq!(mode(&dir.join("config/odoo.conf")), 0o444);
        assert_eq!(mode(&dir.join(META_FILE)), 0o444);
        assert_eq!(mode(&dir), 0o555);
        assert_eq!(mode(&dir.join("config")), 0o555);
        assert!(dir.join(OVERRIDE_FILE).is_file());
        let names: Vec<String> = fs::read_dir(layout.releases_dir("odoo18-staging"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![id.clone()], "no .tmp- left");
        // The same id is never written twice.
        let st = stack();
        let r = render(&st, &secrets(), None).unwrap();
        let meta = ReleaseMeta::new(&st, &r, &id, time(0));
        assert!(matches!(
            create(&layout, &st.name, &r, &meta),
            Err(Error::Exists { .. })
        ));
        // A unique id within the same second.
        let id2 = make(&layout, "sha-724f892", 0);
        assert_eq!(id2, "sha-724f892__20260130T100001Z");
    }

    #[test]
    fn decrypted_secrets_are_owner_only_files_and_their_env_variables_are_masked() {
        let t = Root::new();
        let layout = t.layout();
        let mut st = stack();
        st.spec.secrets = vec!["app.env.age".into(), "config/db.ini.age".into()];
        st.files
            .insert("app.env.age".into(), b"age-ciphertext-1".to_vec());
        st.files
            .insert("config/db.ini.age".into(), b"age-ciphertext-2".to_vec());
        let mut host = secrets();
        host.decrypted = vec![
            (
                "app.env".into(),
                b"APP_TOKEN=tok-from-git\nDB_PASSWORD=from-git\n".to_vec(),
            ),
            (
                "config/db.ini".into(),
                b"[db]\npassword = hunter2-long\n".to_vec(),
            ),
        ];
        let r = render(&st, &host, None).unwrap();
        assert!(
            !r.files.contains_key("app.env.age"),
            "ciphertext is not copied"
        );
        assert_eq!(r.files["config/db.ini"], host.decrypted[1].1);
        assert_eq!(
            r.secret_files.iter().collect::<Vec<_>>(),
            vec!["app.env", "config/db.ini"]
        );
        assert!(
            r.env_file.contains("APP_TOKEN=tok-from-git\n"),
            "{}",
            r.env_file
        );
        assert!(
            r.env_file.contains("DB_PASSWORD=s3cr3t-pw\n")
                && !r.env_file.contains("DB_PASSWORD=from-git"),
            "the host's env file wins: {}",
            r.env_file
        );
        for v in ["tok-from-git", "password = hunter2-long", "hunter2-long"] {
            assert!(r.secret_values.iter().any(|s| s == v), "{v} masked");
        }
        assert!(
            !r.secret_values.iter().any(|s| s == "[db]"),
            "short lines are syntax"
        );

        // Re-encrypting the same plaintext changes nothing; a new plaintext does.
        let mut again = st.clone();
        again
            .files
            .insert("app.env.age".into(), b"age-ciphertext-3".to_vec());
        assert_eq!(
            render(&again, &host, None).unwrap().fingerprint,
            r.fingerprint
        );
        let mut rotated = host.clone();
        rotated.decrypted[1].1 = b"[db]\npassword = rotated-long\n".to_vec();
        assert_ne!(
            render(&st, &rotated, None).unwrap().fingerprint,
            r.fingerprint
        );

        let id = new_release_id("v1", time(0), |_| false);
        let meta = ReleaseMeta::new(&st, &r, &id, time(0));
        assert_eq!(meta.secret_files, vec!["app.env", "config/db.ini"]);
        let dir = create(&layout, &st.name, &r, &meta).unwrap();
        assert_eq!(mode(&dir.join("config/db.ini")), ENV_MODE);
        assert_eq!(mode(&dir.join("app.env")), ENV_MODE);
        assert_eq!(mode(&dir.join("compose.yaml")), 0o444);

        // A secret may not land on a file of the stack.
        let mut clash = host.clone();
        clash.decrypted[0].0 = "compose.yaml".into();
        assert!(matches!(
            render(&st, &clash, None),
            Err(Error::ReservedFile { .. })
        ));
    }

    #[test]
    fn crash_leftovers_are_not_releases_and_are_swept() {
        let t = Root::new();
        let layout = t.layout();
        let id = make(&layout, "v1", 0);
        let rel = layout.releases_dir("odoo18-staging");
        fs::create_dir_all(rel.join(".tmp-v2__20260130T100009Z/config")).unwrap();
        fs::write(rel.join(".tmp-v2__20260130T100009Z/compose.yaml"), "x").unwrap();
        fsutil::set_tree_readonly(&rel.join(".tmp-v2__20260130T100009Z")).unwrap();
        fs::create_dir_all(layout.stacks_dir()).unwrap();
        let tmp_link = layout.stacks_dir().join(".odoo18-staging.tmp-link-999");
        std::os::unix::fs::symlink("/nonexistent", &tmp_link).unwrap();
        let other_link = layout.stacks_dir().join(".other.tmp-link-999");
        std::os::unix::fs::symlink("/nonexistent", &other_link).unwrap();

        let ids: Vec<String> = list(&layout, "odoo18-staging")
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, vec![id.clone()]);
        let removed = sweep_temp(&layout, "odoo18-staging").unwrap();
        assert_eq!(removed.len(), 2);
        assert!(!rel.join(".tmp-v2__20260130T100009Z").exists());
        assert!(fs::symlink_metadata(&tmp_link).is_err());
        assert!(
            fs::symlink_metadata(&other_link).is_ok(),
            "other stacks' links untouched"
        );
        assert!(sweep_temp(&layout, "odoo18-staging").unwrap().is_empty());
    }

    #[test]
    fn switch_is_atomic_and_refuses_incomplete() {
        let t = Root::new();
        let layout = t.layout();
        let stack = "odoo18-staging";
        assert_eq!(current(&layout, stack).unwrap(), None);
        let a = make(&layout, "v1", 0);
        let b = make(&layout, "v2", 1);
        switch(&layout, stack, &a).unwrap();
        assert_eq!(
            current(&layout, stack).unwrap().as_deref(),
            Some(a.as_str())
        );
        switch(&layout, stack, &b).unwrap();
        let link = layout.stack_link(stack);
        assert_eq!(
            fs::read_link(&link).unwrap(),
            std::path::absolute(layout.release_dir(stack, &b)).unwrap()
        );
        assert_eq!(
            current(&layout, stack).unwrap().as_deref(),
            Some(b.as_str())
        );
        switch(&layout, stack, &b).unwrap();
        let names: Vec<String> = fs::read_dir(layout.stacks_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![stack.to_string()], "no temp link remains");
        assert!(
            fs::read_to_string(link.join(".env"))
                .unwrap()
                .contains("COMPOSE_PROJECT_NAME")
        );

        // Incomplete: a directory without release.json, and a missing id.
        let half = layout.release_dir(stack, "v3__20260130T100002Z");
        fs::create_dir_all(&half).unwrap();
        fs::write(half.join("compose.yaml"), "x").unwrap();
        assert!(matches!(
            switch(&layout, stack, "v3__20260130T100002Z"),
            Err(Error::Incomplete { .. })
        ));
        assert!(matches!(
            switch(&layout, stack, "nope__20260130T100002Z"),
            Err(Error::Incomplete { .. })
        ));
        assert_eq!(
            current(&layout, stack).unwrap().as_deref(),
            Some(b.as_str())
        );
        let info = list(&layout, stack).unwrap();
        assert_eq!(
            info.iter().map(|r| r.complete).collect::<Vec<_>>(),
            vec![true, true, false]
        );
        unlink(&layout, stack).unwrap();
        assert!(fs::symlink_metadata(&link).is_err());
        assert_eq!(current(&layout, stack).unwrap(), None);
        unlink(&layout, stack).unwrap();
        assert!(layout.release_dir(stack, &b).is_dir(), "the release stays");
    }

    #[test]
    fn legacy_and_foreign_links_are_errors() {
        let t = Root::new();
        let layout = t.layout();
        let stack = "odoo18-staging";
        let a = make(&layout, "v1", 0);
        fs::create_dir_all(layout.stack_link(stack)).unwrap();
        fs::write(layout.stack_link(stack).join("docker-compose.yml"), "x").unwrap();
        let e = switch(&layout, stack, &a).unwrap_err();
        assert!(matches!(e, Error::LegacyDir { .. }), "{e}");
        assert!(
            layout.stack_link(stack).join("docker-compose.yml").exists(),
            "left alone"
        );
        assert!(matches!(
            current(&layout, stack),
            Err(Error::LegacyDir { .. })
        ));
        fs::remove_dir_all(layout.stack_link(stack)).unwrap();

        std::os::unix::fs::symlink(t.0.path(), layout.stack_link(stack)).unwrap();
        assert!(matches!(
            current(&layout, stack),
            Err(Error::ForeignLink { .. })
        ));
        fs::remove_file(layout.stack_link(stack)).unwrap();
        std::os::unix::fs::symlink(
            layout.release_dir(stack, "gone__20260130T100000Z"),
            layout.stack_link(stack),
        )
        .unwrap();
        assert!(matches!(
            current(&layout, stack),
            Err(Error::Dangling { .. })
        ));
        // A relative link made by hand is understood.
        fs::remove_file(layout.stack_link(stack)).unwrap();
        std::os::unix::fs::symlink(
            format!("../releases/stacks/{stack}/{a}"),
            layout.stack_link(stack),
        )
        .unwrap();
        assert_eq!(
            current(&layout, stack).unwrap().as_deref(),
            Some(a.as_str())
        );
    }

    #[test]
    fn retain_keeps_newest_protected_and_current() {
        let t = Root::new();
        let layout = t.layout();
        let stack = "odoo18-staging";
        let ids: Vec<String> = (0..6).map(|i| make(&layout, &format!("v{i}"), i)).collect();
        // An incomplete leftover older than the newest, and one newer.
        let old_half = layout.release_dir(stack, "old__20260130T095959Z");
        fs::create_dir_all(&old_half).unwrap();
        let new_half = layout.release_dir(stack, "new__20260130T110000Z");
        fs::create_dir_all(&new_half).unwrap();
        switch(&layout, stack, &ids[1]).unwrap();

        let removed = retain(&layout, stack, 2, &[ids[0].as_str()]).unwrap();
        assert_eq!(
            removed,
            vec![
                "old__20260130T095959Z".to_string(),
                ids[2].clone(),
                ids[3].clone()
            ]
        );
        let left: Vec<String> = list(&layout, stack)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(
            left,
            vec![
                ids[0].clone(),
                ids[1].clone(),
                ids[4].clone(),
                ids[5].clone(),
                "new__20260130T110000Z".to_string()
            ]
        );
        assert!(
            retain(&layout, stack, 2, &[ids[0].as_str()])
                .unwrap()
                .is_empty(),
            "idempotent"
        );
        // keep 0 still keeps the current release.
        let removed = retain(&layout, stack, 0, &[]).unwrap();
        assert_eq!(
            removed,
            vec![ids[0].clone(), ids[4].clone(), ids[5].clone()]
        );
        assert_eq!(
            current(&layout, stack).unwrap().as_deref(),
            Some(ids[1].as_str())
        );
    }

    #[test]
    fn current_and_verified_records() {
        let t = Root::new();
        let layout = t.layout();
        assert_eq!(read_current(&layout, "s").unwrap(), None);
        assert_eq!(read_verified_txt(&layout, "s").unwrap(), None);
        let mut images = BTreeMap::new();
        images.insert(
            "web".to_string(),
            ImageRecord {
                pinned: format!("ghcr.io/acme/odoo18@{D1}"),
                digest: D1.to_string(),
            },
        );
        let rec = CurrentRecord {
            stack: "s".into(),
            release_id: "v1__20260130T100000Z".into(),
            version: "v1".into(),
            environment: "staging".into(),
            commit: Some("abc".into()),
            images,
            fingerprint: "f".repeat(64),
            deployed_at: "2026-01-30T10:00:00Z".into(),
            actor: "stackpin@web-1".into(),
        };
        write_current(&layout, "s", &rec).unwrap();
        assert_eq!(read_current(&layout, "s").unwrap(), Some(rec));
        assert!(
            layout
                .current_json("s")
                .ends_with("releases/current/s.json")
        );
        write_verified_txt(&layout, "s", "sha-724f892").unwrap();
        assert_eq!(
            fs::read_to_string(layout.verified_txt("s")).unwrap(),
            "sha-724f892\n"
        );
        assert_eq!(
            read_verified_txt(&layout, "s").unwrap().as_deref(),
            Some("sha-724f892")
        );
        fs::write(layout.current_json("s"), "{not json").unwrap();
        let e = read_current(&layout, "s").unwrap_err().to_string();
        assert!(
            e.starts_with("failed to parse") && e.contains("current/s.json"),
            "{e}"
        );
    }

    #[test]
    fn layout_paths() {
        let l = Layout::new("/srv");
        assert_eq!(l.stack_link("a"), Path::new("/srv/stacks/a"));
        assert_eq!(l.releases_dir("a"), Path::new("/srv/releases/stacks/a"));
        assert_eq!(
            l.release_dir("a", "v__x"),
            Path::new("/srv/releases/stacks/a/v__x")
        );
        assert_eq!(
            l.verified_txt("a"),
            Path::new("/srv/releases/verified/a.txt")
        );
        assert_eq!(
            l.verified_store("a"),
            Path::new("/srv/releases/verified/a.yaml")
        );
        assert_eq!(l.history(), Path::new("/srv/deploy-history.log"));
        assert_eq!(l.state_dir(), Path::new("/srv/releases/.stackpin"));
    }
}
