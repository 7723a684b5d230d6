//! This host's own records under `<root>/releases/.stackpin/`: per-stack
//! locks, converge journals, quarantined fingerprints and holds. Every file is
//! written atomically (temp + fsync + rename), so a crash leaves either the
//! old record or the new one.

use crate::fsutil::write_atomic;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// A record of this host that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} is corrupt: {why}", path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error("{} cannot be read: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("journal of {stack} has unknown format {format}")]
    UnknownFormat { stack: String, format: u32 },
}

/// Where in a converge a crash happened; written before each risky step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// About to switch the symlink from `from` to `to`.
    Switching,
    /// Switched to `to`; compose up / smoke under way.
    Verifying,
    /// Smoke passed: the outcome is being recorded (never reverted).
    Recording,
    /// Smoke failed: switching back to `from`.
    Reverting,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    /// Journal format version; an unknown one is reported, never guessed at.
    pub format: u32,
    pub stack: String,
    /// `deploy` or `rollback` (manual).
    pub op: String,
    pub from: Option<String>,
    pub to: String,
    pub fingerprint: String,
    pub phase: Phase,
    pub started_at: String,
}

pub const JOURNAL_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    pub fingerprint: String,
    pub release_id: String,
    pub version: String,
    pub reason: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub reason: String,
    pub at: String,
    /// The release the stack is held on, when a rollback put it there.
    pub release_id: Option<String>,
}

/// An exclusive per-stack lock shared by every stackpin process on the host;
/// released when dropped (or when the process dies).
#[derive(Debug)]
pub struct StackLock {
    _file: File,
}

pub struct LocalStore {
    dir: PathBuf,
}

impl LocalStore {
    pub fn new(root: &Path) -> Self {
        LocalStore {
            dir: root.join("releases").join(".stackpin"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, kind: &str, stack: &str) -> PathBuf {
        self.dir.join(kind).join(format!("{stack}.json"))
    }

    fn open_lock(&self, stack: &str) -> io::Result<File> {
        let dir = self.dir.join("locks");
        std::fs::create_dir_all(&dir)?;
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{stack}.lock")))
    }

    /// Takes the stack's lock without waiting; `None` when another process holds it.
    pub fn try_lock(&self, stack: &str) -> io::Result<Option<StackLock>> {
        let f = self.open_lock(stack)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(StackLock { _file: f })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Takes the stack's lock, waiting for another process to finish.
    pub fn lock(&self, stack: &str) -> io::Result<StackLock> {
        let f = self.open_lock(stack)?;
        f.lock()?;
        Ok(StackLock { _file: f })
    }

    fn read<T: DeserializeOwned>(&self, kind: &str, stack: &str) -> Result<Option<T>, Error> {
        let p = self.path(kind, stack);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::Corrupt {
                    path: p,
                    why: e.to_string(),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Unreadable { path: p, source }),
        }
    }

    fn write<T: Serialize>(&self, kind: &str, stack: &str, v: &T) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(v).map_err(io::Error::other)?;
        write_atomic(&self.path(kind, stack), &bytes, 0o644)
    }

    fn clear(&self, kind: &str, stack: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(kind, stack)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => crate::fsutil::fsync_dir(&self.dir.join(kind)).or(Ok(())),
        }
    }

    /// The stack's journal. A journal that does not parse (or of an unknown
    /// format) is an error the caller reports; it is never silently dropped.
    pub fn journal(&self, stack: &str) -> Result<Option<Journal>, Error> {
        let j: Option<Journal> = self.read("journal", stack)?;
        match j {
            Some(j) if j.format != JOURNAL_FORMAT => Err(Error::UnknownFormat {
                stack: stack.to_string(),
                format: j.format,
            }),
            j => Ok(j),
        }
    }

    pub fn write_journal(&self, j: &Journal) -> io::Result<()> {
        self.write("journal", &j.stack, j)
    }

    pub fn clear_journal(&self, stack: &str) -> io::Result<()> {
        self.clear("journal", stack)
    }

    /// Stacks that have a journal file (an interrupted converge).
    pub fn journaled_stacks(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.dir.join("journal")) else {
            return Vec::new();
        };
        let mut out: Vec<String> = rd
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".json")
                    .map(str::to_string)
            })
            .collect();
        out.sort();
        out
    }

    pub fn quarantine(&self, stack: &str) -> Result<Option<Quarantine>, Error> {
        self.read("quarantine", stack)
    }

    pub fn set_quarantine(&self, stack: &str, q: &Quarantine) -> io::Result<()> {
        self.write("quarantine", stack, q)
    }

    pub fn clear_quarantine(&self, stack: &str) -> io::Result<()> {
        self.clear("quarantine", stack)
    }

    pub fn hold(&self, stack: &str) -> Result<Option<Hold>, Error> {
        self.read("hold", stack)
    }

    pub fn set_hold(&self, stack: &str, h: &Hold) -> io::Result<()> {
        self.write("hold", stack, h)
    }

    pub fn clear_hold(&self, stack: &str) -> io::Result<()> {
        self.clear("hold", stack)
    }

    /// Which release each of the stack's containers was created from
    /// (container id -> release id): compose runs from the stack's link, so
    /// a container mounts the release the link pointed at when it was
    /// created, and keeps it while it runs. Retention never removes one.
    pub fn mounts(&self, stack: &str) -> Result<std::collections::BTreeMap<String, String>, Error> {
        Ok(self.read("mounts", stack)?.unwrap_or_default())
    }

    pub fn set_mounts(
        &self,
        stack: &str,
        m: &std::collections::BTreeMap<String, String>,
    ) -> io::Result<()> {
        self.write("mounts", stack, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path());
        assert_eq!(s.quarantine("a").unwrap(), None);
        let q = Quarantine {
            fingerprint: "f".into(),
            release_id: "v1__x".into(),
            version: "v1".into(),
            reason: "smoke failed".into(),
            at: "t".into(),
        };
        s.set_quarantine("a", &q).unwrap();
        assert_eq!(s.quarantine("a").unwrap(), Some(q));
        s.clear_quarantine("a").unwrap();
        s.clear_quarantine("a").unwrap();
        assert_eq!(s.quarantine("a").unwrap(), None);

        let j = Journal {
            format: JOURNAL_FORMAT,
            stack: "a".into(),
            op: "deploy".into(),
            from: None,
            to: "v1__x".into(),
            fingerprint: "f".into(),
            phase: Phase::Verifying,
            started_at: "t".into(),
        };
        s.write_journal(&j).unwrap();
        assert_eq!(s.journaled_stacks(), vec!["a"]);
        assert_eq!(s.journal("a").unwrap(), Some(j));
        std::fs::write(
            dir.path().join("releases/.stackpin/journal/a.json"),
            "{\"format\": 9",
        )
        .unwrap();
        assert!(s.journal("a").unwrap_err().to_string().contains("corrupt"));
        let raw = serde_json::json!({"format": 7, "stack": "b", "op": "deploy", "from": null, "to": "x", "fingerprint": "f", "phase": "verifying", "started_at": "t"});
        std::fs::write(
            dir.path().join("releases/.stackpin/journal/b.json"),
            raw.to_string(),
        )
        .unwrap();
        assert!(
            s.journal("b")
                .unwrap_err()
                .to_string()
                .contains("unknown format 7")
        );
    }

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path());
        let l = s.try_lock("a").unwrap().expect("first lock");
        assert!(
            s.try_lock("a").unwrap().is_none(),
            "second lock must fail while the first is held"
        );
        assert!(
            s.try_lock("b").unwrap().is_some(),
            "other stacks are independent"
        );
        drop(l);
        assert!(s.try_lock("a").unwrap().is_some());
    }
}
