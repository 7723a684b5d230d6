//! The crash-safe store: release ids, creating a release directory,
//! switching the stack link, listing, sweeping, retention and the small
//! state files. Each function states what a crash can leave behind.

use super::*;

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
