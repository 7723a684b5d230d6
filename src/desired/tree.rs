//! Where desired state is read from: a directory on disk or a git tree at a
//! commit. The loader only sees this trait, so the daemon's git mirror plugs in
//! without the validation code knowing where bytes come from.

use std::io;
use std::path::{Path, PathBuf};

/// What a directory entry is. Symlinks are reported with their target and
/// never followed by the tree itself: the loader decides whether a link stays
/// inside the stack directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink(String),
    Other,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    /// False when the on-disk name was not valid UTF-8 (`name` is then lossy).
    pub utf8: bool,
    pub kind: Kind,
}

/// A read-only view of a desired-state repository. Paths are relative to the
/// repository root and use `/`.
pub trait Tree {
    /// A short description for messages: a directory path or `repo@commit`.
    fn describe(&self) -> String;
    /// The entries of a directory, sorted by name; `None` when it does not exist.
    fn list(&self, dir: &str) -> io::Result<Option<Vec<Entry>>>;
    /// What a path is, without following symlinks; `None` when it does not exist.
    fn kind(&self, path: &str) -> io::Result<Option<Kind>>;
    /// The bytes of a regular file; `None` when it does not exist.
    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>>;
    /// A content identity of `path`, file or directory: equal ids mean
    /// equal contents (a git object id; `-` for a path that does not
    /// exist). `None` when the tree cannot tell (a directory on disk): then
    /// nothing loaded from it is reused.
    fn id(&self, _path: &str) -> Option<String> {
        None
    }
}

/// The largest file a tree reads: a larger one is refused from its size
/// alone (the file's length, the git object's header), before a byte of
/// it is read, so a huge file in a commit cannot exhaust memory.
pub const MAX_READ_BYTES: u64 = super::MAX_FILE_BYTES as u64;

/// The error for a file over [`MAX_READ_BYTES`].
fn too_large(path: &str, size: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!("{path} is {size} bytes, over the {MAX_READ_BYTES} byte limit (not read)"),
    )
}

/// A desired-state repository checked out (or authored) in a directory.
pub struct DirTree {
    root: PathBuf,
}

impl DirTree {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirTree { root: root.into() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() || rel == "." {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }
}

fn kind_of(meta: &std::fs::Metadata, path: &Path) -> Kind {
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(path)
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default();
        Kind::Symlink(target)
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else {
        Kind::Other
    }
}

fn not_found<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Tree for DirTree {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn list(&self, dir: &str) -> io::Result<Option<Vec<Entry>>> {
        let path = self.path(dir);
        let Some(rd) = not_found(std::fs::read_dir(&path))? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e?;
            let os = e.file_name();
            let (name, utf8) = match os.to_str() {
                Some(s) => (s.to_string(), true),
                None => (os.to_string_lossy().into_owned(), false),
            };
            if name == ".git" {
                continue;
            }
            let meta = std::fs::symlink_metadata(e.path())?;
            out.push(Entry {
                name,
                utf8,
                kind: kind_of(&meta, &e.path()),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(out))
    }

    fn kind(&self, path: &str) -> io::Result<Option<Kind>> {
        let p = self.path(path);
        Ok(not_found(std::fs::symlink_metadata(&p))?.map(|m| kind_of(&m, &p)))
    }

    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        let p = self.path(path);
        match self.kind(path)? {
            None => Ok(None),
            Some(Kind::File) => {
                use std::io::Read as _;
                let f = std::fs::File::open(&p)?;
                let size = f.metadata()?.len();
                if size > MAX_READ_BYTES {
                    return Err(too_large(path, size));
                }
                // At most one byte more than the limit, should it grow.
                let mut out = Vec::with_capacity(size as usize);
                f.take(MAX_READ_BYTES + 1).read_to_end(&mut out)?;
                if out.len() as u64 > MAX_READ_BYTES {
                    return Err(too_large(path, out.len() as u64));
                }
                Ok(Some(out))
            }
            Some(_) => Err(io::Error::other(format!("{path} is not a regular file"))),
        }
    }
}

/// Every lookup walks from the root tree; libgit2 caches only trees up to
/// 4 KiB by default, so `stacks/` of a few hundred stacks was re-read for
/// every file (quadratic). This caches trees up to 1 MiB. `cli::main` calls it
/// first thing, before any thread exists; later calls do nothing.
pub fn init_git_cache() {
    static CACHE: std::sync::Once = std::sync::Once::new();
    CACHE.call_once(|| {
        // SAFETY: a global libgit2 option, set once; the first call happens
        // at process start (or in a test's first repository read).
        let _ = unsafe { git2::opts::set_cache_object_limit(git2::ObjectType::Tree, 1 << 20) };
    });
}

/// A desired-state repository as it is in one git commit: what the daemon
/// reads, so that nobody can edit a work tree under it.
pub struct GitTree {
    repo: git2::Repository,
    tree: git2::Oid,
    commit: git2::Oid,
    /// Path inside the repository that holds the desired state ("" for the root).
    base: String,
}

impl GitTree {
    /// Opens `repo_path` (bare or not) at `rev` (a commit id, branch or ref).
    pub fn open(repo_path: &Path, rev: &str, base: &str) -> Result<Self, git2::Error> {
        init_git_cache();
        let repo = git2::Repository::open(repo_path)?;
        let (commit, tree) = {
            let c = repo.revparse_single(rev)?.peel_to_commit()?;
            (c.id(), c.tree_id())
        };
        let base = base.trim_matches('/').trim_start_matches("./").to_string();
        let base = if base == "." { String::new() } else { base };
        Ok(GitTree {
            repo,
            tree,
            commit,
            base,
        })
    }

    pub fn commit_id(&self) -> String {
        self.commit.to_string()
    }

    /// The first line of the commit's message.
    pub fn subject(&self) -> Option<String> {
        let c = self.repo.find_commit(self.commit).ok()?;
        c.summary().ok().flatten().map(str::to_string)
    }

    /// The directory inside the repository the tree is read from (empty:
    /// the root).
    pub fn base(&self) -> &str {
        &self.base
    }

    fn full(&self, rel: &str) -> String {
        match (self.base.is_empty(), rel.is_empty() || rel == ".") {
            (true, _) => rel.to_string(),
            (false, true) => self.base.clone(),
            (false, false) => format!("{}/{}", self.base, rel),
        }
    }

    /// The blob `id`, refused from its object header's size alone when it
    /// is over [`MAX_READ_BYTES`] (libgit2 would inflate it whole).
    fn blob(&self, id: git2::Oid, path: &str) -> io::Result<git2::Blob<'_>> {
        let (size, _) = self
            .repo
            .odb()
            .and_then(|odb| odb.read_header(id))
            .map_err(io::Error::other)?;
        if size as u64 > MAX_READ_BYTES {
            return Err(too_large(path, size as u64));
        }
        self.repo.find_blob(id).map_err(io::Error::other)
    }

    fn entry_kind(&self, e: &git2::TreeEntry<'_>) -> io::Result<Kind> {
        Ok(match e.kind() {
            Some(git2::ObjectType::Tree) => Kind::Dir,
            Some(git2::ObjectType::Blob) if e.filemode() == 0o120000 => {
                let blob = self.blob(e.id(), e.name().unwrap_or("a symlink"))?;
                Kind::Symlink(String::from_utf8_lossy(blob.content()).into_owned())
            }
            Some(git2::ObjectType::Blob) => Kind::File,
            _ => Kind::Other,
        })
    }

    fn lookup(&self, rel: &str) -> io::Result<Option<git2::TreeEntry<'static>>> {
        let full = self.full(rel);
        let root = self.repo.find_tree(self.tree).map_err(io::Error::other)?;
        if full.is_empty() {
            return Ok(None);
        }
        match root.get_path(Path::new(&full)) {
            Ok(e) => Ok(Some(e.to_owned())),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

impl Tree for GitTree {
    fn describe(&self) -> String {
        format!(
            "{}@{}",
            self.repo.path().display(),
            &self.commit.to_string()[..12]
        )
    }

    fn list(&self, dir: &str) -> io::Result<Option<Vec<Entry>>> {
        let tree = if self.full(dir).is_empty() {
            self.repo.find_tree(self.tree).map_err(io::Error::other)?
        } else {
            match self.lookup(dir)? {
                Some(e) if e.kind() == Some(git2::ObjectType::Tree) => {
                    self.repo.find_tree(e.id()).map_err(io::Error::other)?
                }
                _ => return Ok(None),
            }
        };
        let mut out = Vec::new();
        for e in tree.iter() {
            let (name, utf8) = match e.name() {
                Ok(n) => (n.to_string(), true),
                Err(_) => (String::from_utf8_lossy(e.name_bytes()).into_owned(), false),
            };
            out.push(Entry {
                name,
                utf8,
                kind: self.entry_kind(&e)?,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(out))
    }

    fn kind(&self, path: &str) -> io::Result<Option<Kind>> {
        if self.full(path).is_empty() {
            return Ok(Some(Kind::Dir));
        }
        match self.lookup(path)? {
            None => Ok(None),
            Some(e) => Ok(Some(self.entry_kind(&e)?)),
        }
    }

    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        match self.lookup(path)? {
            None => Ok(None),
            Some(e) if self.entry_kind(&e)? == Kind::File => {
                let blob = self.blob(e.id(), path)?;
                Ok(Some(blob.content().to_vec()))
            }
            Some(_) => Err(io::Error::other(format!("{path} is not a regular file"))),
        }
    }

    fn id(&self, path: &str) -> Option<String> {
        match self.lookup(path).ok()? {
            None => Some("-".into()),
            // The mode too: a file turned into a link is another input.
            Some(e) => Some(format!("{:o}:{}", e.filemode(), e.id())),
        }
    }
}

/// A tree held in memory: path -> bytes, where a value `@link:<target>`
/// stands for a symlink. Used by tests, fuzzing and benchmarks.
#[derive(Debug, Clone, Default)]
pub struct MemTree(pub std::collections::BTreeMap<String, Vec<u8>>);

impl MemTree {
    fn kind_of(&self, path: &str) -> Option<Kind> {
        if let Some(c) = self.0.get(path) {
            return Some(match c.strip_prefix(b"@link:") {
                Some(t) => Kind::Symlink(String::from_utf8_lossy(t).into_owned()),
                None => Kind::File,
            });
        }
        let prefix = format!("{path}/");
        self.0
            .keys()
            .any(|k| k.starts_with(&prefix) || path.is_empty())
            .then_some(Kind::Dir)
    }
}

impl Tree for MemTree {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn list(&self, dir: &str) -> io::Result<Option<Vec<Entry>>> {
        if self.kind_of(dir) != Some(Kind::Dir) {
            return Ok(None);
        }
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut names = std::collections::BTreeSet::new();
        for k in self.0.keys() {
            if let Some(rest) = k.strip_prefix(&prefix)
                && let Some(first) = rest.split('/').next()
                && !first.is_empty()
            {
                names.insert(first.to_string());
            }
        }
        Ok(Some(
            names
                .into_iter()
                .filter_map(|n| {
                    let kind = self.kind_of(&format!("{prefix}{n}"))?;
                    Some(Entry {
                        kind,
                        name: n,
                        utf8: true,
                    })
                })
                .collect(),
        ))
    }

    fn kind(&self, path: &str) -> io::Result<Option<Kind>> {
        Ok(self.kind_of(path))
    }

    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(match self.kind_of(path) {
            Some(Kind::File) => self.0.get(path).cloned(),
            _ => None,
        })
    }
}
