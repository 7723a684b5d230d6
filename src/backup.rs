//! Backups of a stack's databases and of the release that runs (SPEC §1
//! `backup:`, §2 `/srv/backups/<stack>/<timestamp>/`, §3 step 2): before a
//! deploy replaces a release, by hand (`stackpin backup STACK`) and on a
//! timer (`stackpin backup --all`, `systemd/stackpin-backup.timer`).
//!
//! One backup is one directory, owner-only because it holds every row of the
//! databases and the release's `.env` (the values of `env_files`):
//! ```text
//! <root>/backups/<stack>/<yyyymmddThhmmssZ>/     0700
//!     <db>.dump           pg_dump -Fc (custom format; restore with pg_restore)
//!     <db>.dump.sha256    "<hex>  <db>.dump": `sha256sum -c <db>.dump.sha256`
//!     volume-<key>.tar    a `backup.volumes` volume, from the engine's archive API
//!     volume-<key>.tar.sha256
//!     release/            the release that ran: compose files, config,
//!                         release.json, and .env (0600) so that a restore
//!                         brings back exactly what ran with the data
//!     manifest.json       written last: stack, reason, release, time, sizes, sha256
//! ```
//!
//! A database comes from `pg_dump` run INSIDE a container through the
//! engine's exec API (`container` + `user`), or from the host's `pg_dump`
//! against the connection URL held in a host-local file (`url_file`). Either
//! way the dump is streamed to its file, never held in memory. The URL is a
//! secret: it is never logged, its password reaches `pg_dump` through
//! `PGPASSWORD` (not the command line, which every local user can read in
//! `ps`), and everything `pg_dump` prints is masked.
//!
//! # Guarantees
//! - A backup is written into `.tmp-<id>/` and renamed to `<id>/` only once
//!   every dump, checksum, the release copy and `manifest.json` are on disk
//!   and fsynced: a crash leaves a `.tmp-*` directory (swept by the next
//!   backup), never a half backup that looks complete.
//! - Retention keeps what `backup.keep` says (default: the 10 newest
//!   complete backups; or a `{last, daily, weekly, monthly}` policy, see
//!   [`expired`]) and touches nothing else in the directory.
//! - [`open`], [`reinstate_release`] and [`restore_data`] serve
//!   `stackpin restore` (`crate::rollback::restore`), which runs them
//!   through the one pipeline.
//! - Every run appends one history line: `backup | <version> | success|failed`.
//!
//! The caller holds the stack's lock ([`crate::state::LocalStore::lock`]):
//! the pre-deploy backup runs inside the converge, `stackpin backup` takes it.

use crate::desired::Stack;
use crate::desired::spec::{Backup, Keep, KeepPolicy};
use crate::engine::Masker;
use crate::fsutil;
use crate::history::{Action, Status};
use crate::host::Host;
use crate::release;
use chrono::{DateTime, Datelike, NaiveDateTime, TimeDelta, Timelike, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Why a backup failed: one line naming the database, its source and
/// `pg_dump`'s stderr tail, or the file that could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub String);

impl From<String> for Error {
    fn from(s: String) -> Error {
        Error(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Error {
        Error(s.to_string())
    }
}

/// Backups kept per stack when `backup.keep` is not set.
pub const DEFAULT_KEEP: u32 = 10;
/// Written last into every backup; a directory without it is not a backup.
pub const MANIFEST: &str = "manifest.json";
/// The copy of the release that ran, inside a backup.
pub const RELEASE_DIR: &str = "release";
/// `manifest.json` format version.
pub const MANIFEST_FORMAT: u32 = 1;
/// Overrides the host's `pg_dump` used for `url_file` sources (default: the
/// `pg_dump` on `PATH`). Its major version must be at least the server's.
pub const PG_DUMP_ENV: &str = "STACKPIN_PG_DUMP";

const TMP_PREFIX: &str = ".tmp-";
const ID_TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";
/// How much of `pg_dump`'s stderr is kept for messages.
const STDERR_TAIL: usize = 8 * 1024;
/// Backups hold every row of the databases: owner only.
const DIR_MODE: u32 = 0o700;
const DUMP_MODE: u32 = 0o600;

/// Where one database comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `pg_dump -Fc -U <user> <db>` inside `container`: a service of the
    /// stack (its running container, found by compose labels) or any
    /// container by name or id.
    Container { container: String, user: String },
    /// The host's `pg_dump` against the URL held in `url_file`.
    Url { url_file: String },
}

impl Source {
    /// For messages and the manifest; never contains the URL.
    pub fn describe(&self) -> String {
        match self {
            Source::Container { container, .. } => format!("container {container}"),
            Source::Url { url_file } => format!("url_file {url_file}"),
        }
    }
}

/// One database to dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    pub database: String,
    pub source: Source,
}

impl Dump {
    pub fn file_name(&self) -> String {
        format!("{}.dump", self.database)
    }
}

/// The dumps a `backup:` section asks for, in order. Pure.
///
/// # Errors
/// A database name that cannot be a file name or an argument (empty, `/`,
/// leading `.` or `-`), or the same database twice (the dumps would share a
/// file), or an entry with neither or both of `container` and `url_file`.
pub fn dumps(spec: &Backup) -> Result<Vec<Dump>, Error> {
    let mut out: Vec<Dump> = Vec::new();
    for (i, p) in spec.postgres.iter().enumerate() {
        let source = match (&p.container, &p.url_file) {
            (Some(c), None) => Source::Container {
                container: c.clone(),
                user: p.user.clone().unwrap_or_else(|| "postgres".into()),
            },
            (None, Some(f)) => Source::Url {
                url_file: f.clone(),
            },
            _ => {
                return Err(Error(format!(
                    "backup.postgres[{i}] needs exactly one of `container` or `url_file`"
                )));
            }
        };
        for db in &p.databases {
            if db.is_empty()
                || db.starts_with('.')
                || db.starts_with('-')
                || db.contains(['/', '\0', '\n'])
            {
                return Err(Error(format!(
                    "backup.postgres[{i}]: database name {db:?} cannot be backed up (it names the dump file: no `/`, no leading `.` or `-`)"
                )));
            }
            if out.iter().any(|d| &d.database == db) {
                return Err(Error(format!(
                    "backup.postgres[{i}]: database `{db}` is listed twice; its dumps would share {db}.dump"
                )));
            }
            out.push(Dump {
                database: db.clone(),
                source: source.clone(),
            });
        }
    }
    Ok(out)
}

/// A new backup id `yyyymmddThhmmssZ` at `now` (UTC, whole seconds), bumped
/// one second at a time while `exists` says it is taken. Pure.
pub fn new_id(now: DateTime<Utc>, exists: impl Fn(&str) -> bool) -> String {
    let mut t = now.with_nanosecond(0).unwrap_or(now);
    let mut id = t.format(ID_TIME_FORMAT).to_string();
    for _ in 0..100_000 {
        if !exists(&id) {
            break;
        }
        t += TimeDelta::seconds(1);
        id = t.format(ID_TIME_FORMAT).to_string();
    }
    id
}

/// When the backup `id` was taken (`None`: not a backup id).
pub fn id_time(id: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(id, ID_TIME_FORMAT)
        .ok()
        .map(|t| t.and_utc())
}

/// Whether `name` has the exact form of a backup id.
pub fn is_id(name: &str) -> bool {
    NaiveDateTime::parse_from_str(name, ID_TIME_FORMAT)
        .is_ok_and(|t| t.format(ID_TIME_FORMAT).to_string() == name)
}

/// Of the complete backups `ids`, those retention removes. Pure.
///
/// `Keep::Count(n)` keeps the `n` newest. A policy keeps the union of: the
/// `last` newest; the newest backup of each of the `daily` most recent UTC
/// days that have one; likewise per ISO week (`weekly`) and per calendar
/// month (`monthly`) — restic's `--keep-*` rules. The newest backup is
/// always kept.
pub fn expired(ids: &[String], keep: &Keep) -> Vec<String> {
    let mut newest_first: Vec<(&String, DateTime<Utc>)> = ids
        .iter()
        .filter(|i| is_id(i))
        .filter_map(|i| id_time(i).map(|t| (i, t)))
        .collect();
    newest_first.sort_by(|a, b| b.0.cmp(a.0));
    let policy = match *keep {
        Keep::Count(n) => KeepPolicy {
            last: n,
            ..KeepPolicy::default()
        },
        Keep::Policy(p) => p,
    };
    let mut kept: std::collections::BTreeSet<&String> = newest_first
        .iter()
        .take(policy.last.max(1) as usize)
        .map(|(id, _)| *id)
        .collect();
    let mut bucketed = |n: u32, bucket: &dyn Fn(&DateTime<Utc>) -> (i32, u32)| {
        let mut seen = Vec::new();
        for (id, t) in &newest_first {
            if seen.len() >= n as usize {
                break;
            }
            let b = bucket(t);
            if !seen.contains(&b) {
                seen.push(b);
                kept.insert(*id);
            }
        }
    };
    bucketed(policy.daily, &|t| (t.year(), t.ordinal()));
    bucketed(policy.weekly, &|t| {
        let w = t.iso_week();
        (w.year(), w.week())
    });
    bucketed(policy.monthly, &|t| (t.year(), t.month()));
    let mut out: Vec<String> = newest_first
        .iter()
        .filter(|(id, _)| !kept.contains(id))
        .map(|(id, _)| (*id).clone())
        .collect();
    out.sort();
    out
}

/// A connection URL for one database, split so that the password never
/// appears on a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbUrl {
    /// `postgresql://user@host:port/<db>?params`: no password.
    pub url: String,
    /// The percent-decoded password, for `PGPASSWORD`.
    pub password: Option<String>,
}

/// `url` (`postgres[ql]://[user[:password]@]host[:port][/db][?params]`) with
/// its database replaced by `db` and its password taken out. Pure. Errors
/// never quote the URL (it is a secret).
pub fn url_for_db(url: &str, db: &str) -> Result<DbUrl, Error> {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("is not a URL (expected postgresql://user:password@host:port)".into());
    };
    if scheme != "postgresql" && scheme != "postgres" {
        return Err(Error(format!(
            "has scheme `{scheme}`, expected postgresql:// (or postgres://)"
        )));
    }
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let authority = before_query.split('/').next().unwrap_or("");
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((name, pw)) => (Some(name), Some(percent_decode(pw)?)),
            None => (Some(u), None),
        },
        None => (None, None),
    };
    let mut out = format!("{scheme}://");
    if let Some(u) = user {
        out.push_str(u);
        out.push('@');
    }
    out.push_str(hosts);
    out.push('/');
    out.push_str(&percent_encode(db));
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(DbUrl {
        url: out,
        password: password.filter(|p| !p.is_empty()),
    })
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Result<String, Error> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("has a malformed %-escape in its password")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "has a password that is not UTF-8 once decoded".into())
}

/// One dumped database, as `manifest.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpRecord {
    pub database: String,
    /// `container <name>` or `url_file <path>`; never the URL.
    pub source: String,
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    pub millis: u64,
    /// For a restore: the container (service) and user `pg_dump` ran as
    /// (absent in backups older than restores; read from `source`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// One named volume, archived as tar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Its key under the compose file's `volumes:`.
    pub volume: String,
    /// The engine's name of it (`<project>_<key>` unless `name:` says).
    pub name: String,
    /// `volume-<key>.tar`.
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    pub millis: u64,
}

/// One file of the release copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Relative to `release/`.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// `manifest.json`: what a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub stack: String,
    pub environment: String,
    /// `pre-deploy`, `manual` or `scheduled`.
    pub reason: String,
    pub host: String,
    /// The backup id (`yyyymmddThhmmssZ`).
    pub id: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The release that ran when the backup was taken (none before a first
    /// deploy, or when `<root>/stacks/<stack>` is not a stackpin release).
    pub release_id: Option<String>,
    pub version: Option<String>,
    pub databases: Vec<DumpRecord>,
    /// The `backup.volumes` archives (none in older backups).
    #[serde(default)]
    pub volumes: Vec<VolumeRecord>,
    pub release_files: Vec<FileRecord>,
    /// Sum of the dumps' and volume archives' sizes.
    pub bytes: u64,
    pub millis: u64,
}

/// What [`run`] did.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// The complete backup directory.
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Older backups retention removed (ids).
    pub removed: Vec<String>,
}

impl BackupReport {
    /// One line for stage details and history notes.
    pub fn summary(&self) -> String {
        let m = &self.manifest;
        let volumes = if m.volumes.is_empty() {
            String::new()
        } else {
            format!(", {} volume(s)", m.volumes.len())
        };
        let mut s = format!(
            "{} database(s){volumes}, {} in {}",
            m.databases.len(),
            human_bytes(m.bytes),
            self.dir.display()
        );
        if !self.removed.is_empty() {
            s.push_str(&format!("; removed {} old backup(s)", self.removed.len()));
        }
        s
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The release `<root>/stacks/<stack>` points at, if it is a stackpin release.
struct Current {
    id: String,
    dir: PathBuf,
    version: String,
}

fn current(host: &Host<'_>, stack: &str) -> Option<Current> {
    let id = release::current(&host.layout, stack).ok().flatten()?;
    let dir = host.layout.release_dir(stack, &id);
    let version = release::read_meta(&dir)
        .map(|m| m.version)
        .unwrap_or_else(|_| id.clone());
    Some(Current { id, dir, version })
}

/// Takes one backup of `stack` (its `backup:` section) into
/// `<root>/backups/<stack>/<id>/`, applies retention and records
/// `backup | <version> | success|failed` in history. `reason` is
/// `pre-deploy`, `manual` or `scheduled`.
///
/// # Guarantees
/// See the module: complete or absent (a failed backup removes its `.tmp-*`
/// directory), dumps streamed to disk, the URL never logged. Not idempotent:
/// every call takes a new backup. The caller holds the stack's lock.
///
/// # Errors
/// One line naming the database, its source and `pg_dump`'s stderr tail
/// (non-zero exit or empty output), or the file that could not be written.
pub async fn run(host: &Host<'_>, stack: &Stack, reason: &str) -> Result<BackupReport, Error> {
    let cur = current(host, &stack.name);
    let version = cur
        .as_ref()
        .map(|c| c.version.clone())
        .unwrap_or_else(|| "-".into());
    let env = stack.environment();
    tracing::info!(stack = %stack.name, reason, "backup started");
    match take(host, stack, reason, cur.as_ref()).await {
        Ok(r) => {
            tracing::info!(stack = %stack.name, dir = %r.dir.display(), bytes = r.manifest.bytes, "backup complete");
            let _ = host.record(
                &stack.name,
                env,
                Action::Backup,
                &version,
                Status::Success,
                &format!("{reason}: {}", r.summary()),
            );
            Ok(r)
        }
        Err(e) => {
            tracing::error!(stack = %stack.name, reason, "backup failed: {e}");
            let _ = host.record(
                &stack.name,
                env,
                Action::Backup,
                &version,
                Status::Failed,
                &format!("{reason}: {e}"),
            );
            Err(e)
        }
    }
}

async fn take(
    host: &Host<'_>,
    stack: &Stack,
    reason: &str,
    cur: Option<&Current>,
) -> Result<BackupReport, Error> {
    let started = Instant::now();
    let spec = stack.spec.backup.as_ref().ok_or_else(|| {
        format!(
            "stack {} has no `backup:` section in its stack.yaml",
            stack.name
        )
    })?;
    let dumps = dumps(spec)?;
    let parent = host.layout.backups_dir(&stack.name);
    prepare_parent(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let id = new_id(Utc::now(), |id| {
        fs::symlink_metadata(parent.join(id)).is_ok()
            || fs::symlink_metadata(parent.join(format!("{TMP_PREFIX}{id}"))).is_ok()
    });
    let tmp = parent.join(format!("{TMP_PREFIX}{id}"));
    let dir = parent.join(&id);
    fs::create_dir(&tmp)
        .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(DIR_MODE)))
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;

    let result: Result<Manifest, Error> = async {
        let mut records = Vec::with_capacity(dumps.len());
        for d in &dumps {
            records.push(dump_one(host, &stack.name, d, &tmp).await?);
        }
        // A helper container needs its image here: the running release's
        // are (a pre-deploy backup runs before the desired ones are pulled).
        let image = cur
            .and_then(|c| release::read_meta(&c.dir).ok())
            .and_then(|m| helper_image(m.images.values().filter_map(|p| p.pinned())))
            .or_else(|| helper_image(stack.pins.values().filter_map(|p| p.pinned())));
        let mut volumes = Vec::with_capacity(spec.volumes.len());
        for key in &spec.volumes {
            volumes.push(archive_volume(host, stack, key, image.as_deref(), &tmp).await?);
        }
        let release_files = match cur {
            Some(c) => {
                let (src, dst) = (c.dir.clone(), tmp.join(RELEASE_DIR));
                tokio::task::spawn_blocking(move || copy_release(&src, &dst))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("cannot copy the release {}: {e}", c.id))?
            }
            None => Vec::new(),
        };
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            stack: stack.name.clone(),
            environment: stack.environment().to_string(),
            reason: reason.to_string(),
            host: host.name.clone(),
            id: id.clone(),
            created_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            release_id: cur.map(|c| c.id.clone()),
            version: cur.map(|c| c.version.clone()),
            bytes: records.iter().map(|r| r.bytes).sum::<u64>()
                + volumes.iter().map(|v| v.bytes).sum::<u64>(),
            databases: records,
            volumes,
            release_files,
            millis: started.elapsed().as_millis() as u64,
        };
        let (tmp2, dir2, parent2, m) = (tmp.clone(), dir.clone(), parent.clone(), manifest.clone());
        tokio::task::spawn_blocking(move || finish(&tmp2, &dir2, &parent2, &m))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot complete {}: {e}", dir.display()))?;
        Ok(manifest)
    }
    .await;
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            // A failed backup leaves nothing behind: a partial dump is no
            // use and may be large.
            let _ = fsutil::remove_tree(&tmp);
            return Err(e);
        }
    };
    let keep = spec.keep.unwrap_or(Keep::Count(DEFAULT_KEEP));
    let removed = match retain(&parent, &keep) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(stack = %stack.name, "backup retention failed: {e}");
            Vec::new()
        }
    };
    Ok(BackupReport {
        dir,
        manifest,
        removed,
    })
}

/// A complete backup opened for a restore, its files checked.
#[derive(Debug, Clone)]
pub struct Opened {
    pub id: String,
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Opened {
    /// The release the backup belongs to (checked by [`open`]).
    pub fn release_id(&self) -> &str {
        self.manifest.release_id.as_deref().unwrap_or_default()
    }
}

/// Opens backup `id` of `stack` for a restore. Read-only.
///
/// # Errors
/// No such backup (the message lists the stack's backups), an unreadable
/// manifest, a file that does not match its checksum, a backup without a
/// release (taken before the first deploy), or a database dumped from a
/// `url_file` source (restored by hand: docs/operations.md says how).
pub fn open(backups_dir: &Path, stack: &str, id: &str) -> Result<Opened, Error> {
    let dir = backups_dir.join(id);
    if !is_id(id) || !dir.join(MANIFEST).is_file() {
        let ids = list(backups_dir).unwrap_or_default();
        let known = if ids.is_empty() {
            format!("{stack} has no backup in {}", backups_dir.display())
        } else {
            format!("backups of {stack}: {}", ids.join(", "))
        };
        return Err(Error(format!(
            "no backup `{id}` of {stack} ({known}); `stackpin backup {stack}` takes one"
        )));
    }
    let text = fs::read_to_string(dir.join(MANIFEST))
        .map_err(|e| format!("{}: {e}", dir.join(MANIFEST).display()))?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: not a stackpin manifest: {e}",
            dir.join(MANIFEST).display()
        )
    })?;
    if manifest.stack != stack {
        return Err(Error(format!(
            "backup {id} in {} belongs to stack {}, not {stack}",
            dir.display(),
            manifest.stack
        )));
    }
    if manifest.release_id.is_none() {
        return Err(Error(format!(
            "backup {id} of {stack} holds no release (it was taken before the first deploy); nothing to bring up with its data"
        )));
    }
    for d in &manifest.databases {
        if d.container.is_none() && !d.source.starts_with("container ") {
            return Err(Error(format!(
                "backup {id}: database `{}` was dumped from {}; stackpin restores databases of containers only: restore it with `pg_restore --clean --if-exists --create -d postgres {}`",
                d.database,
                d.source,
                dir.join(&d.file).display()
            )));
        }
    }
    let files = manifest
        .databases
        .iter()
        .map(|d| (&d.file, &d.sha256))
        .chain(manifest.volumes.iter().map(|v| (&v.file, &v.sha256)));
    for (file, want) in files {
        let path = dir.join(file);
        let got =
            sha256_file(&path).map_err(|e| format!("backup {id}: {}: {e}", path.display()))?;
        if &got != want {
            return Err(Error(format!(
                "backup {id}: {} does not match its checksum in the manifest (the backup is damaged; restore another one)",
                path.display()
            )));
        }
    }
    Ok(Opened {
        id: id.to_string(),
        dir,
        manifest,
    })
}

/// Makes sure the release `b` belongs to is kept on this host: a release
/// that retention removed is put back from the backup's copy (written as
/// `.tmp-<id>`, made read-only, renamed). Returns its directory.
pub fn reinstate_release(releases_dir: &Path, b: &Opened) -> Result<PathBuf, Error> {
    let id = b.release_id();
    let dst = releases_dir.join(id);
    if release::is_complete(&dst) {
        return Ok(dst);
    }
    let src = b.dir.join(RELEASE_DIR);
    if !release::is_complete(&src) {
        return Err(Error(format!(
            "release {id} is no longer kept here and backup {} holds no complete copy of it",
            b.id
        )));
    }
    let tmp = releases_dir.join(format!(".tmp-{id}"));
    let put = || -> io::Result<()> {
        if tmp.exists() {
            fsutil::remove_tree(&tmp)?;
        }
        copy_release(&src, &tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        fsutil::set_tree_readonly(&tmp)?;
        fs::rename(&tmp, &dst)?;
        fsutil::fsync_dir(releases_dir)
    };
    put().map_err(|e| format!("cannot put release {id} back from backup {}: {e}", b.id))?;
    tracing::info!(release = id, backup = %b.id, "release put back from the backup's copy");
    Ok(dst)
}

/// Checks a volume archive before anything is restored from it: it must be
/// a tar whose every entry stays inside the volume — no absolute path, no
/// `..`, no link whose target leads out — for the engine's extraction skips
/// such entries silently, and the restore would report success with data
/// missing. Names the first bad entry.
///
/// # Errors
/// The archive cannot be read as a tar, or an entry that leaves the volume.
pub fn check_archive(path: &std::path::Path) -> Result<(), String> {
    use std::path::{Component, Path, PathBuf};
    let f = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(f));
    let entries = archive
        .entries()
        .map_err(|e| format!("{} is not a tar archive: {e}", path.display()))?;
    let inside = |p: &Path| {
        let mut depth = 0i64;
        for c in p.components() {
            match c {
                Component::Normal(_) => depth += 1,
                Component::CurDir => {}
                Component::ParentDir => {
                    depth -= 1;
                    if depth < 0 {
                        return false;
                    }
                }
                Component::RootDir | Component::Prefix(_) => return false,
            }
        }
        true
    };
    let mut count = 0usize;
    for e in entries {
        let e = e.map_err(|e| format!("{} is not a tar archive: {e}", path.display()))?;
        let name: PathBuf = e
            .path()
            .map_err(|err| format!("{}: an entry's name cannot be read: {err}", path.display()))?
            .into_owned();
        let shown = name.display();
        if !inside(&name) {
            return Err(format!(
                "{}: entry `{shown}` leaves the volume (an absolute path or `..`); refusing the archive",
                path.display()
            ));
        }
        if let Some(target) = e.link_name().ok().flatten() {
            // As the engine's extraction joins them: a hard link from the
            // archive's root, a symlink from its own directory, a leading
            // `/` taken as that start (an absolute symlink is only a link).
            let rel: PathBuf = target
                .components()
                .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
                .collect();
            let resolved = if e.header().entry_type().is_hard_link() {
                rel
            } else {
                name.parent().unwrap_or(Path::new("")).join(rel)
            };
            if !inside(&resolved) {
                return Err(format!(
                    "{}: entry `{shown}` is a link to `{}`, outside the volume; refusing the archive",
                    path.display(),
                    target.display()
                ));
            }
        }
        count += 1;
    }
    if count == 0 {
        return Err(format!("{} holds no entry", path.display()));
    }
    Ok(())
}

/// How long a restored database container may take to accept connections.
const DB_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Puts every volume archive of `b` back, each volume's current content
/// first copied aside (`<backups>/<stack>/.safety-<id>/`): when an archive
/// fails to extract, every volume already touched gets its copy back, so a
/// failed restore leaves the data as it was. The copies are removed once
/// every volume is restored; after a crash they stay, and the restore run
/// again uses them (they hold the content from before the first try).
/// The engine's backup operations, or why it has none.
fn backup_ops<'a>(host: &'a Host<'_>) -> Result<&'a dyn crate::engine::Backups, Error> {
    crate::engine::require(
        host.engine,
        host.engine.backups(),
        "archive and restore volumes",
    )
    .map_err(|e| e.report().into())
}

async fn restore_volumes(
    host: &Host<'_>,
    b: &Opened,
    stack: &str,
    image: &str,
) -> Result<(), Error> {
    if b.manifest.volumes.is_empty() {
        return Ok(());
    }
    let ops = backup_ops(host)?;
    let safety = b
        .dir
        .parent()
        .unwrap_or(&b.dir)
        .join(format!(".safety-{}", b.id));
    crate::fsutil::create_dir_all_synced(&safety)
        .and_then(|()| std::fs::set_permissions(&safety, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| {
            format!(
                "the safety copy {}: {e}; nothing was restored",
                safety.display()
            )
        })?;
    // Each volume replaced so far, with its copy (None: it did not exist,
    // and stays as the failed import left it).
    let mut touched: Vec<(&VolumeRecord, Option<PathBuf>)> = Vec::new();
    let mut failure = None;
    for v in &b.manifest.volumes {
        let copy = safety.join(volume_file(&v.volume));
        // A copy left by an interrupted restore holds the content from
        // before it: kept, never overwritten with what it left behind. A
        // copy is complete once renamed from its `.partial` name.
        let partial = copy.with_extension("partial");
        let _ = std::fs::remove_file(&partial);
        let exported = if copy.is_file() {
            Ok(())
        } else {
            ops.volume_export(stack, &v.volume, &v.name, image, &partial)
                .await
                .map(|_| ())
                .and_then(|()| {
                    std::fs::rename(&partial, &copy)
                        .and_then(|()| crate::fsutil::fsync_dir(&safety))
                        .map_err(|source| crate::engine::Error::Archive {
                            what: "rename".into(),
                            path: partial.clone(),
                            source,
                        })
                })
        };
        let kept = match exported {
            Ok(()) => Some(copy),
            Err(crate::engine::Error::NoVolume(_)) => None,
            Err(e) => {
                failure = Some(format!(
                    "volume `{}`: its current content could not be copied aside ({})",
                    v.volume,
                    e.report()
                ));
                break;
            }
        };
        touched.push((v, kept));
        let archive = b.dir.join(&v.file);
        match ops
            .volume_import(stack, &v.volume, &v.name, image, &archive)
            .await
        {
            Ok(name) => {
                tracing::info!(stack, volume = %v.volume, name, bytes = v.bytes, "volume restored");
            }
            Err(e) => {
                failure = Some(format!("volume `{}`: {}", v.volume, e.report()));
                break;
            }
        }
    }
    let Some(why) = failure else {
        let _ = crate::fsutil::remove_tree(&safety);
        return Ok(());
    };
    // Put back what was there, newest first.
    let mut unrestored = Vec::new();
    for (v, copy) in touched.iter().rev() {
        let Some(copy) = copy else { continue };
        if let Err(e) = ops
            .volume_import(stack, &v.volume, &v.name, image, copy)
            .await
        {
            unrestored.push(format!("`{}` ({})", v.volume, e.report()));
        }
    }
    if unrestored.is_empty() {
        let _ = crate::fsutil::remove_tree(&safety);
        Err(format!("{why}; every volume has its previous content back").into())
    } else {
        Err(format!(
            "{why}; the previous content of {} could not be put back: it is in {}",
            unrestored.join(", "),
            safety.display()
        )
        .into())
    }
}

/// Restores what backup `b` holds into the stopped stack: every volume
/// archive (`restore_volumes`: the volume's content copied aside, then
/// replaced), then every database: its service
/// started alone from the release `project` names, the dump copied in and
/// `pg_restore --clean --if-exists --create` run as the user that dumped
/// it. `services` are the release's services; `image` mounts the volumes.
/// Returns a summary for the stage line.
///
/// # Errors
/// The first volume or database that could not be restored, with the
/// engine's or `pg_restore`'s reason (masked).
pub async fn restore_data(
    host: &Host<'_>,
    b: &Opened,
    project: crate::engine::Project<'_>,
    image: &str,
    services: &[String],
) -> Result<String, Error> {
    let stack = project.name;
    // Every archive is checked before any volume is touched: a restore
    // either puts every entry back or changes nothing.
    for v in &b.manifest.volumes {
        check_archive(&b.dir.join(&v.file))
            .map_err(|e| format!("volume `{}`: {e}; nothing was restored", v.volume))?;
    }
    restore_volumes(host, b, stack, image).await?;
    let mut started: Vec<String> = Vec::new();
    for d in &b.manifest.databases {
        let ops = backup_ops(host)?;
        let container = d
            .container
            .clone()
            .or_else(|| d.source.strip_prefix("container ").map(str::to_string))
            .unwrap_or_default();
        let user = d.user.clone().unwrap_or_else(|| "postgres".into());
        let label = format!("database `{}` (container {container})", d.database);
        if services.contains(&container) && !started.contains(&container) {
            ops.up_services(project, std::slice::from_ref(&container))
                .await
                .map_err(|e| format!("{label}: {}", e.report()))?;
            started.push(container.clone());
        }
        let target = wait_for_postgres(host, stack, &container, &user)
            .await
            .map_err(|e| format!("{label}: {e}"))?;
        let name = format!("stackpin-restore-{}", d.file);
        ops.copy_into(&target, &b.dir.join(&d.file), "/tmp", &name)
            .await
            .map_err(|e| format!("{label}: {}", e.report()))?;
        let path = format!("/tmp/{name}");
        let cmd: Vec<String> = [
            "pg_restore",
            "--clean",
            "--if-exists",
            "--create",
            "--exit-on-error",
            "-U",
            &user,
            "-d",
            "postgres",
            &path,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let result = host.engine.exec(&target, &cmd).await;
        let _ = host
            .engine
            .exec(&target, &["rm".into(), "-f".into(), path.clone()])
            .await;
        match result {
            Ok((0, _)) => {
                tracing::info!(stack, database = %d.database, bytes = d.bytes, "database restored");
            }
            Ok((code, out)) => {
                return Err(Error(format!(
                    "{label}: pg_restore exited with code {code}{}",
                    tail_suffix(&out)
                )));
            }
            Err(e) => return Err(Error(format!("{label}: {}", e.report()))),
        }
    }
    Ok(format!(
        "{} database(s) and {} volume(s) from backup {}",
        b.manifest.databases.len(),
        b.manifest.volumes.len(),
        b.id
    ))
}

/// Waits until `pg_isready` answers in `container` (a service of `stack`
/// or a container name); the running container's id.
async fn wait_for_postgres(
    host: &Host<'_>,
    stack: &str,
    container: &str,
    user: &str,
) -> Result<String, String> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < DB_READY_TIMEOUT {
        let target = resolve_container(host, stack, container).await;
        let cmd: Vec<String> = ["pg_isready", "-U", user]
            .iter()
            .map(|s| s.to_string())
            .collect();
        match host.engine.exec(&target, &cmd).await {
            Ok((0, _)) => return Ok(target),
            Ok((code, out)) => last = format!("pg_isready exited with code {code}: {}", out.trim()),
            Err(e) => last = e.report(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    Err(format!(
        "not accepting connections after {}s ({last})",
        DB_READY_TIMEOUT.as_secs()
    ))
}

/// Creates `<root>/backups/<stack>` owner-only and removes `.tmp-*` leftovers
/// of crashed backups (safe: the caller holds the stack's lock).
fn prepare_parent(parent: &Path) -> io::Result<()> {
    if let Some(root) = parent.parent()
        && !root.exists()
    {
        fsutil::create_dir_all_synced(root)?;
        fs::set_permissions(root, fs::Permissions::from_mode(DIR_MODE))?;
    }
    fsutil::create_dir_all_synced(parent)?;
    fs::set_permissions(parent, fs::Permissions::from_mode(DIR_MODE))?;
    for e in fs::read_dir(parent)? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            tracing::warn!(dir = %e.path().display(), "removing an incomplete backup left by an interrupted run");
            fsutil::remove_tree(&e.path())?;
        }
    }
    Ok(())
}

/// Complete backups of a stack, oldest first (ids).
pub fn list(backups_dir: &Path) -> io::Result<Vec<String>> {
    let mut ids = Vec::new();
    let rd = match fs::read_dir(backups_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ids),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if is_id(&name) && e.path().join(MANIFEST).is_file() {
            ids.push(name);
        }
    }
    ids.sort();
    Ok(ids)
}

fn retain(parent: &Path, keep: &Keep) -> io::Result<Vec<String>> {
    let old = expired(&list(parent)?, keep);
    for id in &old {
        fsutil::remove_tree(&parent.join(id))?;
    }
    if !old.is_empty() {
        fsutil::fsync_dir(parent)?;
    }
    Ok(old)
}

async fn dump_one(host: &Host<'_>, stack: &str, d: &Dump, tmp: &Path) -> Result<DumpRecord, Error> {
    let file = tmp.join(d.file_name());
    let t = Instant::now();
    let label = format!("database `{}` ({})", d.database, d.source.describe());
    let (code, bytes, tail) = match &d.source {
        Source::Container { container, user } => {
            let target = resolve_container(host, stack, container).await;
            let cmd: Vec<String> = ["pg_dump", "-Fc", "-U", user, &d.database]
                .iter()
                .map(|s| s.to_string())
                .collect();
            host.engine
                .exec_to_file(&target, &cmd, &[], None, &file)
                .await
                .map_err(|e| format!("{label}: {}", e.report()))?
        }
        Source::Url { url_file } => host_pg_dump(url_file, &d.database, &file)
            .await
            .map_err(|e| format!("{label}: {e}"))?,
    };
    if code != 0 || bytes == 0 {
        let mut tail = tail;
        // The engine reports an exec that could not start (no pg_dump in the
        // image) on stdout: show it when stderr says nothing.
        if tail.trim().is_empty() && bytes > 0 && bytes <= 4096 {
            let text = fs::read(&file).unwrap_or_default();
            tail = host.engine.mask(&String::from_utf8_lossy(&text));
        }
        let what = if code != 0 {
            format!("pg_dump exited with code {code}")
        } else {
            "pg_dump wrote nothing".to_string()
        };
        return Err(Error(format!("{label}: {what}{}", tail_suffix(&tail))));
    }
    let sha = checksum(tmp, &d.file_name(), &label).await?;
    Ok(DumpRecord {
        database: d.database.clone(),
        source: d.source.describe(),
        file: d.file_name(),
        bytes,
        sha256: sha,
        millis: t.elapsed().as_millis() as u64,
        container: match &d.source {
            Source::Container { container, .. } => Some(container.clone()),
            Source::Url { .. } => None,
        },
        user: match &d.source {
            Source::Container { user, .. } => Some(user.clone()),
            Source::Url { .. } => None,
        },
    })
}

/// The sha256 of `dir/name`, read back from disk, and its
/// `name.sha256` file beside it (`sha256sum -c` reads it).
async fn checksum(dir: &Path, name: &str, label: &str) -> Result<String, Error> {
    let file = dir.join(name);
    let path = file.clone();
    let sha = tokio::task::spawn_blocking(move || sha256_file(&path))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{label}: cannot read back {}: {e}", file.display()))?;
    let sum_file = dir.join(format!("{name}.sha256"));
    write_new(&sum_file, format!("{sha}  {name}\n").as_bytes(), DUMP_MODE)
        .map_err(|e| format!("{label}: cannot write {}: {e}", sum_file.display()))?;
    Ok(sha)
}

/// The archive file of volume `key` in a backup.
pub fn volume_file(key: &str) -> String {
    format!("volume-{key}.tar")
}

/// Archives the named volume `key` of the stack into `tmp`, with its
/// `.sha256` file beside it.
async fn archive_volume(
    host: &Host<'_>,
    stack: &Stack,
    key: &str,
    image: Option<&str>,
    tmp: &Path,
) -> Result<VolumeRecord, Error> {
    let ops = backup_ops(host)?;
    let t = Instant::now();
    let file_name = volume_file(key);
    let file = tmp.join(&file_name);
    let label = format!("volume `{key}`");
    let image = image
        .map(str::to_string)
        .ok_or_else(|| format!("{label}: the stack pins no image to mount it with"))?;
    let (name, bytes) = ops
        .volume_export(&stack.name, key, &volume_name(stack, key), &image, &file)
        .await
        .map_err(|e| format!("{label}: {}", e.report()))?;
    let sha = checksum(tmp, &file_name, &label).await?;
    Ok(VolumeRecord {
        volume: key.to_string(),
        name,
        file: file_name,
        bytes,
        sha256: sha,
        millis: t.elapsed().as_millis() as u64,
    })
}

/// The engine's name compose gives volume `key` of the stack: its `name:`,
/// else `<project>_<key>`. Pure.
pub fn volume_name(stack: &Stack, key: &str) -> String {
    stack
        .compose
        .value
        .get("volumes")
        .and_then(|v| v.get(key))
        .and_then(|v| v.get("name"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{}_{key}", stack.name))
}

/// The image a volume helper container is created from: the first pinned
/// image in order (any will do: it is never started). Pure.
pub fn helper_image(pins: impl Iterator<Item = String>) -> Option<String> {
    pins.into_iter().min()
}

/// `: last lines of stderr` (at most three lines, 400 characters), or nothing.
fn tail_suffix(tail: &str) -> String {
    let lines: Vec<&str> = tail
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    let last = lines[lines.len().saturating_sub(3)..].join(" / ");
    let n = last.chars().count();
    let short: String = if n > 400 {
        last.chars().skip(n - 400).collect()
    } else {
        last
    };
    format!(": {short}")
}

/// A service name of the stack resolves to its running container (compose
/// v1 and v2 name containers differently); anything else is passed to the
/// engine as a container name or id.
async fn resolve_container(host: &Host<'_>, stack: &str, name: &str) -> String {
    match host.engine.containers(stack).await {
        Ok(list) => list
            .iter()
            .filter(|c| c.state == "running")
            .find(|c| c.service == name || c.name == name)
            .map(|c| c.id.clone())
            .unwrap_or_else(|| name.to_string()),
        Err(_) => name.to_string(),
    }
}

/// Runs the host's `pg_dump -Fc --dbname=<url without password>/<db>` with
/// stdout going straight into `out`. Returns (exit code, bytes, masked stderr
/// tail). Errors never contain the URL.
async fn host_pg_dump(url_file: &str, db: &str, out: &Path) -> Result<(i64, u64, String), Error> {
    let raw = tokio::fs::read_to_string(url_file).await.map_err(|e| {
        format!(
            "url_file {url_file} cannot be read: {e} (create it on this host, mode 0600, holding postgresql://user:password@host:port)"
        )
    })?;
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(Error(format!("url_file {url_file} is empty")));
    }
    let u = url_for_db(raw, db).map_err(|e| format!("url_file {url_file}: the URL {e}"))?;
    let mut secrets = vec![raw.to_string(), u.url.clone()];
    secrets.extend(u.password.clone());
    if let Some((base, _)) = raw.split_once('?') {
        secrets.push(base.to_string());
    }
    let masker = Masker::new(secrets);
    let program = std::env::var(PG_DUMP_ENV).unwrap_or_else(|_| "pg_dump".into());
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(DUMP_MODE)
        .open(out)
        .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut cmd = tokio::process::Command::new(&program);
    cmd.arg("-Fc")
        .arg(format!("--dbname={}", u.url))
        .stdin(std::process::Stdio::null())
        .stdout(file)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
        // An unreachable server must fail the backup, not hang the deploy.
        cmd.env("PGCONNECT_TIMEOUT", "15");
    }
    // Without a password in the URL, libpq's own PGPASSWORD or ~/.pgpass
    // of the service's environment still apply.
    if let Some(p) = &u.password {
        cmd.env("PGPASSWORD", p);
    }
    tracing::debug!(url_file, db, "running {program} -Fc --dbname=***");
    let mut child = cmd.spawn().map_err(|e| {
        format!(
            "`{program}` cannot be started: {e} (install the PostgreSQL client, e.g. `apt-get install postgresql-client`, or set {PG_DUMP_ENV})"
        )
    })?;
    let mut tail: Vec<u8> = Vec::new();
    if let Some(mut err) = child.stderr.take() {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        loop {
            match err.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > STDERR_TAIL {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
            }
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for `{program}` failed: {e}"))?;
    let bytes = fs::File::open(out)
        .and_then(|f| {
            f.sync_all()?;
            f.metadata()
        })
        .map(|m| m.len())
        .map_err(|e| format!("cannot fsync {}: {e}", out.display()))?;
    let code = status.code().map(i64::from).unwrap_or(-1);
    Ok((code, bytes, masker.mask(&String::from_utf8_lossy(&tail))))
}

/// Hex sha256 of a file, read in chunks.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.sync_all()
}

/// Copies a release tree into `dst`: `.env` keeps mode 0600, other files
/// 0644, directories 0700; symlinks are copied as links, never followed.
/// Returns every file copied with its size and sha256, sorted.
fn copy_release(src: &Path, dst: &Path) -> io::Result<Vec<FileRecord>> {
    fn walk(root: &Path, src: &Path, dst: &Path, out: &mut Vec<FileRecord>) -> io::Result<()> {
        fs::create_dir(dst)?;
        fs::set_permissions(dst, fs::Permissions::from_mode(DIR_MODE))?;
        for e in fs::read_dir(src)? {
            let e = e?;
            let (from, to) = (e.path(), dst.join(e.file_name()));
            let ft = e.file_type()?;
            if ft.is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
            } else if ft.is_dir() {
                walk(root, &from, &to, out)?;
            } else if ft.is_file() {
                let bytes = fs::read(&from)?;
                // `.env` and the decrypted `secrets:` (owner-only in the
                // release) stay owner-only.
                let private = e.metadata()?.permissions().mode() & 0o077 == 0;
                let mode = if e.file_name() == ".env" || private {
                    fsutil::ENV_FILE_MODE
                } else {
                    0o644
                };
                write_new(&to, &bytes, mode)?;
                out.push(FileRecord {
                    path: from
                        .strip_prefix(root)
                        .unwrap_or(&from)
                        .to_string_lossy()
                        .into_owned(),
                    bytes: bytes.len() as u64,
                    sha256: hex::encode(Sha256::digest(&bytes)),
                });
            }
        }
        fsutil::fsync_dir(dst)
    }
    let mut out = Vec::new();
    walk(src, src, dst, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Writes `manifest.json` last, fsyncs the tree and renames it into place.
fn finish(tmp: &Path, dir: &Path, parent: &Path, m: &Manifest) -> io::Result<()> {
    let mut json = serde_json::to_vec_pretty(m).map_err(io::Error::other)?;
    json.push(b'\n');
    write_new(&tmp.join(MANIFEST), &json, DUMP_MODE)?;
    fsutil::fsync_dir(tmp)?;
    fs::rename(tmp, dir)?;
    fsutil::fsync_dir(parent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::spec::PostgresBackup;

    fn pg(container: Option<&str>, url_file: Option<&str>, dbs: &[&str]) -> PostgresBackup {
        PostgresBackup {
            container: container.map(str::to_string),
            user: container.map(|_| "odoo".to_string()),
            url_file: url_file.map(str::to_string),
            databases: dbs.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn dumps_in_order_with_their_sources() {
        let spec = Backup {
            postgres: vec![
                pg(Some("seisei-db"), None, &["ten_testodoo", "other"]),
                pg(None, Some("/etc/stackpin/secrets/db.url"), &["reports"]),
            ],
            ..Default::default()
        };
        let d = dumps(&spec).unwrap();
        assert_eq!(
            d.iter().map(|d| d.file_name()).collect::<Vec<_>>(),
            ["ten_testodoo.dump", "other.dump", "reports.dump"]
        );
        assert_eq!(
            d[0].source,
            Source::Container {
                container: "seisei-db".into(),
                user: "odoo".into()
            }
        );
        assert_eq!(
            d[2].source.describe(),
            "url_file /etc/stackpin/secrets/db.url"
        );
    }

    #[test]
    fn dumps_refuse_unusable_or_duplicate_names() {
        for bad in ["", "../x", "a/b", ".hidden", "-Fp"] {
            let spec = Backup {
                postgres: vec![pg(Some("db"), None, &[bad])],
                ..Default::default()
            };
            assert!(dumps(&spec).is_err(), "{bad:?} must be refused");
        }
        let spec = Backup {
            postgres: vec![
                pg(Some("db"), None, &["app"]),
                pg(None, Some("/etc/u"), &["app"]),
            ],
            ..Default::default()
        };
        assert!(dumps(&spec).unwrap_err().0.contains("listed twice"));
    }

    #[test]
    fn ids_are_utc_seconds_and_bump_when_taken() {
        let t = DateTime::parse_from_rfc3339("2026-01-30T10:00:00.750Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(new_id(t, |_| false), "20260130T100000Z");
        assert_eq!(
            new_id(t, |id| id == "20260130T100000Z" || id == "20260130T100001Z"),
            "20260130T100002Z"
        );
        assert!(is_id("20260130T100000Z"));
        for bad in [
            ".tmp-20260130T100000Z",
            "20260130T1000Z",
            "latest",
            "20261330T100000Z",
        ] {
            assert!(!is_id(bad), "{bad}");
        }
    }

    #[test]
    fn retention_keeps_the_newest() {
        let ids: Vec<String> = [
            "20260103T000000Z",
            "20260101T000000Z",
            "notes",
            "20260102T000000Z",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let n = |n| expired(&ids, &Keep::Count(n));
        assert_eq!(n(2), ["20260101T000000Z"]);
        assert_eq!(n(1), ["20260101T000000Z", "20260102T000000Z"]);
        assert!(n(10).is_empty());
        assert_eq!(n(0), n(1), "the newest is always kept");
    }

    #[test]
    fn retention_policy_keeps_one_per_day_and_week() {
        // Two backups a day (06:00 and 18:00) from Mon 2026-01-05 to
        // Sun 2026-02-01: four ISO weeks (2..=5), 28 days, 56 backups.
        let mut ids = Vec::new();
        for day in 0..28 {
            let d = chrono::NaiveDate::from_ymd_opt(2026, 1, 5).unwrap() + chrono::Days::new(day);
            for h in [6, 18] {
                ids.push(format!("{}T{h:02}0000Z", d.format("%Y%m%d")));
            }
        }
        let keep = |p: KeepPolicy| {
            let gone = expired(&ids, &Keep::Policy(p));
            let mut kept: Vec<String> = ids.iter().filter(|i| !gone.contains(i)).cloned().collect();
            kept.sort();
            kept
        };
        // daily 7: the evening backup of each of the last 7 days.
        let daily = keep(KeepPolicy {
            daily: 7,
            ..Default::default()
        });
        assert_eq!(daily.len(), 7, "{daily:?}");
        assert!(daily.iter().all(|i| i.ends_with("T180000Z")), "{daily:?}");
        assert_eq!(daily[0], "20260126T180000Z");
        assert_eq!(daily[6], "20260201T180000Z");
        // weekly 4: the newest of each ISO week, Sundays' evening backups.
        let weekly = keep(KeepPolicy {
            weekly: 4,
            ..Default::default()
        });
        assert_eq!(
            weekly,
            [
                "20260111T180000Z",
                "20260118T180000Z",
                "20260125T180000Z",
                "20260201T180000Z"
            ]
        );
        // The runbooks' 7 daily + 4 weekly: the union, 10 backups (the
        // newest Sunday is in both).
        let both = keep(KeepPolicy {
            daily: 7,
            weekly: 4,
            ..Default::default()
        });
        assert_eq!(both.len(), 10, "{both:?}");
        assert!(both.contains(&"20260111T180000Z".to_string()));
        // Monthly and last.
        let monthly = keep(KeepPolicy {
            monthly: 2,
            last: 3,
            ..Default::default()
        });
        assert_eq!(
            monthly,
            ["20260131T180000Z", "20260201T060000Z", "20260201T180000Z"],
            "January's newest is Jan 31 evening; February's is among the last 3"
        );
        // Not-ids are never touched.
        assert!(!expired(&["junk".into()], &Keep::Count(1)).contains(&"junk".to_string()));
    }

    #[test]
    fn url_gets_the_database_and_loses_the_password() {
        let u = url_for_db("postgresql://odoo:s%40cret@db.example:5433", "ten_testodoo").unwrap();
        assert_eq!(u.url, "postgresql://odoo@db.example:5433/ten_testodoo");
        assert_eq!(u.password.as_deref(), Some("s@cret"));

        let u = url_for_db(
            "postgres://odoo:pw@10.0.0.5/postgres?sslmode=require\n",
            "my db",
        )
        .unwrap();
        assert_eq!(u.url, "postgres://odoo@10.0.0.5/my%20db?sslmode=require");

        let u = url_for_db("postgresql://127.0.0.1:5432", "app").unwrap();
        assert_eq!(u.url, "postgresql://127.0.0.1:5432/app");
        assert_eq!(u.password, None);
    }

    #[test]
    fn url_errors_do_not_quote_the_url() {
        for bad in [
            "mysql://root:hunter22@db/x",
            "hunter22",
            "postgresql://u:hunter22%zz@h",
        ] {
            let e = url_for_db(bad, "app").unwrap_err();
            assert!(!e.0.contains("hunter22"), "{e}");
        }
    }

    #[test]
    fn stderr_tail_keeps_the_last_lines() {
        assert_eq!(tail_suffix(""), "");
        assert_eq!(tail_suffix("a\n\nb\nc\nd\n"), ": b / c / d");
    }

    #[test]
    fn sizes_read_like_a_person_wrote_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn release_copy_keeps_env_private_and_links_as_links() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("rel");
        fs::create_dir_all(src.join("config")).unwrap();
        fs::write(src.join("compose.yaml"), "services: {}\n").unwrap();
        fs::write(src.join(".env"), "SECRET=x\n").unwrap();
        fs::write(src.join("config/a.conf"), "a\n").unwrap();
        std::os::unix::fs::symlink("a.conf", src.join("config/link")).unwrap();
        fsutil::set_tree_readonly(&src).unwrap();
        let dst = tmp.path().join("copy");
        let files = copy_release(&src, &dst).unwrap();
        assert_eq!(
            files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            [".env", "compose.yaml", "config/a.conf"]
        );
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dst.join(".env")), 0o600);
        assert_eq!(mode(&dst), 0o700);
        assert_eq!(
            fs::read_link(dst.join("config/link")).unwrap(),
            Path::new("a.conf")
        );
        assert_eq!(
            files[1].sha256,
            hex::encode(Sha256::digest(b"services: {}\n"))
        );
        fsutil::remove_tree(&src).unwrap();
    }

    fn manifest(id: &str, release: Option<&str>) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            stack: "shop".into(),
            environment: "production".into(),
            reason: "manual".into(),
            host: "h".into(),
            id: id.into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            release_id: release.map(str::to_string),
            version: release.map(|_| "v1".into()),
            databases: Vec::new(),
            volumes: Vec::new(),
            release_files: Vec::new(),
            bytes: 0,
            millis: 0,
        }
    }

    fn put(dir: &Path, m: &Manifest, files: &[(&str, &[u8])]) {
        fs::create_dir_all(dir.join(&m.id)).unwrap();
        for (name, bytes) in files {
            fs::write(dir.join(&m.id).join(name), bytes).unwrap();
        }
        fs::write(
            dir.join(&m.id).join(MANIFEST),
            serde_json::to_vec(m).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn open_refuses_what_cannot_be_restored_before_anything_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let err = |id: &str| open(dir, "shop", id).unwrap_err().to_string();
        assert!(err("20260101T000000Z").contains("shop has no backup"));

        let mut good = manifest("20260101T000000Z", Some("v1__20260101T000000Z"));
        good.databases.push(DumpRecord {
            database: "shop".into(),
            source: "container db".into(),
            file: "shop.dump".into(),
            bytes: 3,
            sha256: hex::encode(Sha256::digest(b"abc")),
            millis: 0,
            container: Some("db".into()),
            user: Some("postgres".into()),
        });
        put(dir, &good, &[("shop.dump", b"abc")]);
        let opened = open(dir, "shop", &good.id).unwrap();
        assert_eq!(opened.release_id(), "v1__20260101T000000Z");
        let e = err("20990101T000000Z");
        assert!(
            e.contains("no backup `20990101T000000Z`") && e.contains("20260101T000000Z"),
            "names the backups there are: {e}"
        );
        assert!(err("../etc").contains("no backup"), "not an id");
        assert!(
            open(dir, "other", &good.id)
                .unwrap_err()
                .to_string()
                .contains("belongs to stack shop"),
        );

        // A file that changed since the backup.
        fs::write(dir.join(&good.id).join("shop.dump"), b"abd").unwrap();
        assert!(err(&good.id).contains("does not match its checksum"));

        // Taken before the first deploy: nothing to bring up.
        let early = manifest("20260102T000000Z", None);
        put(dir, &early, &[]);
        assert!(err(&early.id).contains("before the first deploy"));

        // A url_file database: restored by hand, with the command to run.
        let mut url = manifest("20260103T000000Z", Some("v1__20260101T000000Z"));
        url.databases.push(DumpRecord {
            source: "url_file /etc/stackpin/secrets/db.url".into(),
            container: None,
            user: None,
            ..good.databases[0].clone()
        });
        put(dir, &url, &[("shop.dump", b"abc")]);
        let e = err(&url.id);
        assert!(e.contains("url_file") && e.contains("pg_restore"), "{e}");
    }

    #[test]
    fn a_pruned_release_is_put_back_from_the_backup_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let rel = tmp.path().join("running");
        fs::create_dir_all(&rel).unwrap();
        fs::write(rel.join("compose.yaml"), "services: {}\n").unwrap();
        fs::write(rel.join("app.env"), "K=secret\n").unwrap();
        fs::set_permissions(rel.join("app.env"), fs::Permissions::from_mode(0o400)).unwrap();
        let meta = serde_json::json!({
            "stack": "shop", "release_id": "v1__20260101T000000Z", "version": "v1",
            "environment": "production", "fingerprint": "f", "commit": null,
            "images": {}, "compose_files": ["compose.yaml"],
            "created_at": "2026-01-01T00:00:00Z"
        });
        fs::write(rel.join(release::META_FILE), meta.to_string()).unwrap();
        assert!(release::is_complete(&rel), "the fixture is a release");
        let backups = tmp.path().join("backups");
        let m = manifest("20260101T000000Z", Some("v1__20260101T000000Z"));
        fs::create_dir_all(backups.join(&m.id)).unwrap();
        copy_release(&rel, &backups.join(&m.id).join(RELEASE_DIR)).unwrap();
        put(&backups, &m, &[]);
        let b = open(&backups, "shop", &m.id).unwrap();

        let releases = tmp.path().join("releases");
        fs::create_dir_all(&releases).unwrap();
        let dir = reinstate_release(&releases, &b).unwrap();
        assert_eq!(dir, releases.join("v1__20260101T000000Z"));
        assert!(release::is_complete(&dir));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode(&dir.join("compose.yaml")),
            0o444,
            "read-only like a release"
        );
        assert_eq!(
            mode(&dir.join("app.env")),
            0o600,
            "a secret stays owner-only"
        );
        assert!(!releases.join(".tmp-v1__20260101T000000Z").exists());
        // Kept already: used as it is.
        assert_eq!(reinstate_release(&releases, &b).unwrap(), dir);
        fsutil::remove_tree(&releases).unwrap();
    }
}
