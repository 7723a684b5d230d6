//! Renders kept between runs (issue 37): a stack's [`Rendered`] is reused
//! while everything it was made from is unchanged: the stack as read from
//! the tree (its content key, [`crate::desired::Stack::key`]) and the
//! identity of every host-local file the render read (env files, the age
//! identity: device, inode, size, modification and change times). A file
//! rewritten in place changes its times, one replaced by a rename its
//! inode: a rotated secret is rendered again, and redeploys, without a
//! commit. The desired commit is not part of the key: it is carried, not
//! fingerprinted, and set on the reused render.

use super::Rendered;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What a host-local input file is now; `None` when it cannot be read
/// (then nothing is reused: the render says why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    pub fn of(path: &Path) -> Option<FileId> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// Everything a render was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The stack's content key in its tree.
    pub stack: String,
    /// Each host-local file read, with what it was.
    pub files: Vec<(PathBuf, FileId)>,
}

impl Key {
    /// The key of a render of a stack with content key `stack` that reads
    /// `files`; `None` when one of them cannot be read now.
    pub fn of(stack: &str, files: impl IntoIterator<Item = PathBuf>) -> Option<Key> {
        let files = files
            .into_iter()
            .map(|p| FileId::of(&p).map(|id| (p, id)))
            .collect::<Option<Vec<_>>>()?;
        Some(Key {
            stack: stack.to_string(),
            files,
        })
    }
}

/// The renders of one host's stacks, by stack name; one per stack.
#[derive(Debug, Default)]
pub struct Cache {
    entries: Mutex<HashMap<String, (Key, Rendered)>>,
}

impl Cache {
    /// The render of `name` made from `key`, with `commit`.
    pub fn get(&self, name: &str, key: &Key, commit: Option<&str>) -> Option<Rendered> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (_, r) = entries.get(name).filter(|(k, _)| k == key)?;
        let mut r = r.clone();
        r.commit = commit.map(str::to_string);
        Some(r)
    }

    /// Keeps `rendered` as `name`'s, made from `key`.
    pub fn put(&self, name: &str, key: Key, rendered: &Rendered) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), (key, rendered.clone()));
    }

    /// How many stacks have a render kept.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_rewritten_or_replaced_is_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("app.env");
        std::fs::write(&f, "A=1\n").unwrap();
        let k1 = Key::of("tree-1", [f.clone()]).unwrap();
        assert_eq!(Key::of("tree-1", [f.clone()]), Some(k1.clone()));
        assert_ne!(Key::of("tree-2", [f.clone()]), Some(k1.clone()));
        // Same size, rewritten in place: the change time moves.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&f, "A=2\n").unwrap();
        let k2 = Key::of("tree-1", [f.clone()]).unwrap();
        assert_ne!(k1, k2);
        // Replaced by a rename (how secrets are rotated atomically).
        let tmp = dir.path().join("app.env.new");
        std::fs::write(&tmp, "A=3\n").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert_ne!(Key::of("tree-1", [f.clone()]), Some(k2));
        // Gone: nothing to key on.
        std::fs::remove_file(&f).unwrap();
        assert_eq!(Key::of("tree-1", [f]), None);
    }
}
