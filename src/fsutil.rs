//! Crash-safe file system primitives: atomic replace, directory fsync, and
//! read-only trees, and the free space of a file system. Every state file stackpin writes goes through
//! [`write_atomic`], so a reader (or a restart after power loss) sees either
//! the old content or the new one, never a torn file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of directories in a read-only tree.
pub const RO_DIR_MODE: u32 = 0o555;
/// Mode of regular files in a read-only tree.
pub const RO_FILE_MODE: u32 = 0o444;
/// Mode of files that had an execute bit (scripts mounted into containers).
pub const RO_EXEC_MODE: u32 = 0o555;
/// Mode a file named `.env` keeps in a read-only tree: SPEC §2 fixes 0600,
/// owner-only because it holds the values of `env_files`.
pub const ENV_FILE_MODE: u32 = 0o600;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` atomically and durably.
///
/// # Guarantees
/// Writes a temporary file `.<file>.tmp-<pid>-<n>` in the same directory,
/// fsyncs it, sets `mode` (independent of the umask), renames it over `path`
/// and fsyncs the directory: after a crash `path` holds the old or the new
/// content. Creates the parent directory if missing. Idempotent.
///
/// # Errors
/// Any I/O error; the temporary file is removed on failure.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    create_dir_all_synced(dir)?;
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{n}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Flushes a directory's entries (creations, renames, removals) to disk.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Like `fs::create_dir_all`, and fsyncs the parent of every directory it
/// creates so the new entries survive a crash. Idempotent.
pub fn create_dir_all_synced(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all_synced(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        // Another process may have created it in between.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => fsync_dir(p),
        _ => fsync_dir(Path::new(".")),
    }
}

/// Makes a tree read-only: directories 0555, files 0444 (0555 when the file
/// had an execute bit), a file named `.env` or readable by its owner only
/// (a decrypted secret) [`ENV_FILE_MODE`]: nothing is made more readable.
///
/// Walks bottom-up so a directory loses its write bit only after its content
/// was changed, and never follows symlinks (chmod would act on the target,
/// which may lie outside the tree). Idempotent.
pub fn set_tree_readonly(dir: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    if !meta.is_dir() {
        return set_file_readonly(dir, &meta);
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            set_tree_readonly(&entry.path())?;
        } else if ft.is_file() {
            set_file_readonly(&entry.path(), &entry.metadata()?)?;
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(RO_DIR_MODE))
}

fn set_file_readonly(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    // `.env` and the decrypted secrets (written owner-only) stay so.
    let mode = if path.file_name().is_some_and(|n| n == ".env")
        || meta.permissions().mode() & 0o077 == 0
    {
        ENV_FILE_MODE
    } else if meta.permissions().mode() & 0o111 != 0 {
        RO_EXEC_MODE
    } else {
        RO_FILE_MODE
    };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Removes a tree, first giving its directories back their owner write bit
/// so read-only releases can be deleted. A missing tree is not an error
/// (idempotent). Symlinks inside are removed, never followed.
pub fn remove_tree(dir: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(dir);
    }
    make_dirs_writable(dir)?;
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

fn make_dirs_writable(dir: &Path) -> io::Result<()> {
    let mode = fs::symlink_metadata(dir)?.permissions().mode();
    // Top-down: a directory must be writable (and searchable) before its
    // entries can be removed, and searchable before it can be walked.
    fs::set_permissions(dir, fs::Permissions::from_mode((mode & 0o7777) | 0o700))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            make_dirs_writable(&entry.path())?;
        }
    }
    Ok(())
}

/// The free space of the file system holding `path`, in percent, as `df`
/// shows it (100 minus its `Use%`); `None` when it cannot be read.
pub fn disk_free_percent(path: &Path) -> Option<u8> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    free_percent(s.f_blocks as u64, s.f_bfree as u64, s.f_bavail as u64)
}

/// `df`'s arithmetic, from a `statvfs`'s block counts: the blocks an
/// unprivileged writer can still use over those it could ever use (the
/// used ones and the available ones). Blocks the file system reserves
/// (for root, 5% by default on ext4, often far more) count on neither side:
/// dividing by the total would call a disk that `df` shows 13% used only
/// 31% free.
pub fn free_percent(blocks: u64, bfree: u64, bavail: u64) -> Option<u8> {
    let used = blocks.saturating_sub(bfree) as u128;
    let usable = used + bavail as u128;
    if usable == 0 {
        return None;
    }
    // df rounds its Use% up, so the free share rounds down.
    Some((bavail as u128 * 100 / usable) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn write_atomic_creates_parent_sets_mode_and_leaves_no_temp() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a/b/state.json");
        write_atomic(&p, b"one", 0o644).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(mode(&p), 0o600);
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn readonly_tree_modes_and_removal() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("r");
        fs::create_dir_all(root.join("config/sub")).unwrap();
        fs::write(root.join("compose.yaml"), "x").unwrap();
        fs::write(root.join("config/sub/a.conf"), "x").unwrap();
        fs::write(root.join(".env"), "S=1").unwrap();
        fs::write(root.join("run.sh"), "#!/bin/sh").unwrap();
        fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        let outside = t.path().join("outside");
        fs::write(&outside, "keep").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();

        set_tree_readonly(&root).unwrap();
        assert_eq!(mode(&root), 0o555);
        assert_eq!(mode(&root.join("config/sub")), 0o555);
        assert_eq!(mode(&root.join("compose.yaml")), 0o444);
        assert_eq!(mode(&root.join("config/sub/a.conf")), 0o444);
        assert_eq!(mode(&root.join(".env")), ENV_FILE_MODE);
        assert_eq!(mode(&root.join("run.sh")), 0o555);
        assert_eq!(mode(&outside), 0o644, "symlink target must not change");

        remove_tree(&root).unwrap();
        assert!(!root.exists());
        assert!(outside.exists());
        remove_tree(&root).unwrap();
    }
}
