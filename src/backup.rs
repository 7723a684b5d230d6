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
//! - Retention keeps the `backup.keep` (default 10) newest complete backups
//!   and touches nothing else in the directory.
//! - Every run appends one history line: `backup | <version> | success|failed`.
//!
//! The caller holds the stack's lock ([`crate::state::LocalStore::lock`]):
//! the pre-deploy backup runs inside the converge, `stackpin backup` takes it.

use crate::desired::Stack;
use crate::desired::spec::Backup;
use crate::engine::Masker;
use crate::fsutil;
use crate::history::{Action, Status};
use crate::host::Host;
use crate::release;
use chrono::{DateTime, NaiveDateTime, TimeDelta, Timelike, Utc};
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

/// Of the complete backups `ids`, those retention removes: all but the
/// `keep` newest (ids sort by time). Pure.
pub fn expired(ids: &[String], keep: usize) -> Vec<String> {
    let mut sorted: Vec<&String> = ids.iter().filter(|i| is_id(i)).collect();
    sorted.sort();
    let n = sorted.len().saturating_sub(keep);
    sorted.into_iter().take(n).cloned().collect()
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
    pub release_files: Vec<FileRecord>,
    /// Sum of the dumps' sizes.
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
        let mut s = format!(
            "{} database(s), {} in {}",
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

fn human_bytes(n: u64) -> String {
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
            bytes: records.iter().map(|r| r.bytes).sum(),
            databases: records,
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
    let keep = spec.keep.unwrap_or(DEFAULT_KEEP).max(1) as usize;
    let removed = match retain(&parent, keep) {
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

fn retain(parent: &Path, keep: usize) -> io::Result<Vec<String>> {
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
    let path = file.clone();
    let sha = tokio::task::spawn_blocking(move || sha256_file(&path))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{label}: cannot read back {}: {e}", file.display()))?;
    let sum_file = tmp.join(format!("{}.sha256", d.file_name()));
    write_new(
        &sum_file,
        format!("{sha}  {}\n", d.file_name()).as_bytes(),
        DUMP_MODE,
    )
    .map_err(|e| format!("{label}: cannot write {}: {e}", sum_file.display()))?;
    Ok(DumpRecord {
        database: d.database.clone(),
        source: d.source.describe(),
        file: d.file_name(),
        bytes,
        sha256: sha,
        millis: t.elapsed().as_millis() as u64,
    })
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
                let mode = if e.file_name() == ".env" {
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
            keep: None,
            required: None,
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
        assert_eq!(expired(&ids, 2), ["20260101T000000Z"]);
        assert_eq!(expired(&ids, 1), ["20260101T000000Z", "20260102T000000Z"]);
        assert!(expired(&ids, 10).is_empty());
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
}
