//! The release store of SPEC §2: immutable release directories under
//! `<root>/releases/stacks/<stack>/<version>__<yyyymmddThhmmssZ>/`, the
//! `<root>/stacks/<stack>` symlink switched with `rename(2)`, retention, and
//! the small state files (`current/<stack>.json`, `verified/<stack>.txt`).
//!
//! Three parts: this file holds the records ([`ReleaseMeta`], [`Rendered`])
//! and the error; `render.rs` is pure ([`render`] turns a [`Stack`] and the
//! bytes of its host-local env files into the files of a release and a
//! fingerprint); `store.rs` does the I/O, and each of its functions states
//! what a crash can leave behind. The host's paths are [`Layout`]'s. The
//! invariants: a `<id>` directory is only ever created by renaming a
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
    /// What runs this release (`engine:` in its stack.yaml).
    pub fn runtime(&self) -> &'static dyn crate::engine::runtime::Runtime {
        crate::engine::runtime::of(self.engine)
    }

    pub fn project<'a>(&'a self, dir: &'a Path) -> crate::engine::Project<'a> {
        crate::engine::Project {
            name: &self.stack,
            dir,
            files: &self.compose_files,
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

pub mod cache;
mod render;
mod store;
#[cfg(test)]
mod tests;

pub use render::*;
pub use store::*;
