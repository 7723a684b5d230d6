//! The git mirror: one persistent bare repository under the state dir that
//! the daemon fetches one branch into and reads desired state from.
//!
//! Refs in the mirror:
//! - `refs/remotes/origin/<branch>`: what the last fetch brought, deleted
//!   before each fetch so that a branch gone from the remote is noticed;
//! - `refs/stackpin/<branch>`: the last fetched commit whose objects were all
//!   read back successfully. It only moves after that check, so a failed or
//!   corrupt fetch leaves it (and everything reachable from it) as it was.
//!
//! libgit2 never garbage-collects, so commits the branch no longer reaches
//! (after a force-push) stay readable for as long as the host runs them.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use git2::{ErrorClass, ErrorCode, Oid, Repository};

use super::credentials::{self, Creds, Purpose, Session, Transport, host_port};
use super::{Error, SourceConfig, redact, strip_credentials};
use crate::desired::{self, DesiredState, GitTree};

/// An object of the mirror that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unreadable(pub String);

impl From<String> for Unreadable {
    fn from(s: String) -> Unreadable {
        Unreadable(s)
    }
}

impl From<&str> for Unreadable {
    fn from(s: &str) -> Unreadable {
        Unreadable(s.to_string())
    }
}

/// The outcome of one fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The branch's commit now (full hex id).
    pub commit: String,
    /// The commit the previous successful fetch brought, if any.
    pub previous: Option<String>,
    /// `previous` is not an ancestor of `commit`: the branch was rewritten
    /// (force-pushed or reset). The new commit is followed anyway.
    pub forced: bool,
    /// `commit` differs from `previous`.
    pub changed: bool,
}

/// The daemon's view of the desired-state repository.
///
/// Fetches through one value are serialised; two processes must not share a
/// state dir (the daemon's lock already ensures that).
pub struct GitSource {
    cfg: SourceConfig,
    /// What libgit2 is given: `cfg.url`, with a relative local path made
    /// absolute.
    remote_url: String,
    transport: Transport,
    mirror: PathBuf,
    lock: Mutex<()>,
    /// `<state_dir>/mirror.lock`: serialises fetches between processes (the
    /// daemon and a one-shot command's `--fetch`).
    lock_file: PathBuf,
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("url", &strip_credentials(&self.cfg.url))
            .field("branch", &self.cfg.branch)
            .field("path", &self.cfg.path)
            .field("mirror", &self.mirror)
            .finish()
    }
}

impl GitSource {
    /// Prepares the mirror `<state_dir>/mirror.git`: creates it when missing;
    /// when it exists but cannot be opened, or its last fetched commit cannot
    /// be read, moves it aside to `mirror.git.corrupt-<time>` (logged) and
    /// starts a new one, so the next fetch repairs the host by itself.
    ///
    /// # Errors
    /// [`Error::BranchMissing`] for a branch name git cannot have,
    /// [`Error::Io`] when the state dir cannot be written.
    pub fn new(cfg: SourceConfig, state_dir: &Path) -> Result<GitSource, Error> {
        if cfg.branch.is_empty()
            || !git2::Reference::is_valid_name(&format!("refs/heads/{}", cfg.branch))
        {
            return Err(Error::BranchMissing { branch: cfg.branch });
        }
        std::fs::create_dir_all(state_dir).map_err(|source| Error::Io {
            op: "create the state dir",
            path: state_dir.to_path_buf(),
            source,
        })?;
        let src = GitSource::at(cfg, state_dir);
        let _other_processes = src.lock_processes()?;
        src.prepare_mirror(state_dir)?;
        Ok(src)
    }

    /// The mirror a daemon already made under `state_dir`, read as it is
    /// (nothing is created or repaired): `None` when there is none yet.
    pub fn open_existing(cfg: SourceConfig, state_dir: &Path) -> Option<GitSource> {
        let src = GitSource::at(cfg, state_dir);
        src.mirror.is_dir().then_some(src)
    }

    fn at(cfg: SourceConfig, state_dir: &Path) -> GitSource {
        let transport = Transport::of(&cfg.url);
        let remote_url = match transport {
            Transport::Local if !cfg.url.contains("://") => std::path::absolute(&cfg.url)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| cfg.url.clone()),
            _ => cfg.url.clone(),
        };
        GitSource {
            cfg,
            remote_url,
            transport,
            mirror: GitSource::mirror_in(state_dir),
            lock: Mutex::new(()),
            lock_file: state_dir.join("mirror.lock"),
        }
    }

    /// Waits for any other process's fetch into this mirror to end.
    fn lock_processes(&self) -> Result<std::fs::File, Error> {
        let io = |source| Error::Io {
            op: "lock the git mirror",
            path: self.lock_file.clone(),
            source,
        };
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_file)
            .map_err(io)?;
        f.lock().map_err(io)?;
        Ok(f)
    }

    /// When the last successful fetch recorded its commit (the time the
    /// mirror's ref was written), if the mirror says.
    pub fn fetched_at(&self) -> Option<std::time::SystemTime> {
        let loose = self.mirror.join(self.good_ref());
        std::fs::metadata(loose).and_then(|m| m.modified()).ok()
    }

    /// Where the mirror of a state dir is.
    pub fn mirror_in(state_dir: &Path) -> PathBuf {
        state_dir.join("mirror.git")
    }

    /// The bare mirror repository.
    pub fn mirror_path(&self) -> &Path {
        &self.mirror
    }

    /// The configuration this source was made from.
    pub fn config(&self) -> &SourceConfig {
        &self.cfg
    }

    /// The commit the last successful fetch brought, if any (survives
    /// restarts: it is a ref in the mirror).
    pub fn last_fetched(&self) -> Option<String> {
        let repo = Repository::open_bare(&self.mirror).ok()?;
        repo.refname_to_id(&self.good_ref())
            .ok()
            .map(|id| id.to_string())
    }

    fn good_ref(&self) -> String {
        format!("refs/stackpin/{}", self.cfg.branch)
    }

    fn fetch_ref(&self) -> String {
        format!("refs/remotes/origin/{}", self.cfg.branch)
    }

    fn url(&self) -> String {
        strip_credentials(&self.cfg.url)
    }

    fn prepare_mirror(&self, state_dir: &Path) -> Result<(), Error> {
        let problem = match std::fs::symlink_metadata(&self.mirror) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.init_mirror(),
            Err(source) => {
                return Err(Error::Io {
                    op: "inspect the git mirror",
                    path: self.mirror.clone(),
                    source,
                });
            }
            Ok(_) => self.check_mirror().err(),
        };
        let Some(problem) = problem else {
            return Ok(());
        };
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let aside = state_dir.join(format!("mirror.git.corrupt-{stamp}"));
        tracing::warn!(
            mirror = %self.mirror.display(),
            moved_to = %aside.display(),
            problem = %problem,
            "the git mirror is unreadable; moving it aside and fetching into a new one"
        );
        std::fs::rename(&self.mirror, &aside).map_err(|source| Error::Io {
            op: "move aside the corrupt git mirror",
            path: self.mirror.clone(),
            source,
        })?;
        self.init_mirror()
    }

    /// Why the existing mirror cannot be used, if it cannot.
    fn check_mirror(&self) -> Result<(), Unreadable> {
        let repo = Repository::open_bare(&self.mirror).map_err(|e| e.message().to_string())?;
        if !repo.is_bare() {
            return Err("it is not a bare repository".into());
        }
        match repo.refname_to_id(&self.good_ref()) {
            Ok(id) => verify_commit(&repo, id),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(()),
            Err(e) => Err(Unreadable::from(e.message().to_string())),
        }
    }

    fn init_mirror(&self) -> Result<(), Error> {
        Repository::init_bare(&self.mirror).map_err(|e| Error::Io {
            op: "create the git mirror",
            path: self.mirror.clone(),
            source: std::io::Error::other(e.message().to_string()),
        })?;
        Ok(())
    }

    /// Fetches the branch into the mirror (blocking; at most `fetch_timeout`
    /// on the network) and reads every object of the new commit's tree back.
    ///
    /// # Guarantees
    /// Idempotent. On any error the mirror still holds, and
    /// [`GitSource::load`] still reads, every commit fetched before. A
    /// rewritten branch is followed and reported as `forced` (and logged).
    ///
    /// # Errors
    /// [`Error::Timeout`], [`Error::Fetch`] (unreachable, refused),
    /// [`Error::Auth`] (credentials, host key), [`Error::BranchMissing`],
    /// [`Error::Corrupt`] (an object cannot be read), [`Error::Io`].
    pub fn fetch(&self) -> Result<Fetched, Error> {
        let _serial = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let _other_processes = self.lock_processes()?;
        let repo = Repository::open_bare(&self.mirror).map_err(|e| Error::Corrupt {
            message: format!(
                "the git mirror {} cannot be opened ({}); restart the daemon to rebuild it",
                self.mirror.display(),
                e.message()
            ),
        })?;
        let previous = match repo.refname_to_id(&self.good_ref()) {
            Ok(id) => Some(id),
            Err(e) if e.code() == ErrorCode::NotFound => None,
            Err(e) => return Err(corrupt(&e)),
        };
        if let Ok(mut stale) = repo.find_reference(&self.fetch_ref()) {
            stale.delete().map_err(|e| corrupt(&e))?;
        }

        if self.transport == Transport::Local {
            let path = self
                .remote_url
                .strip_prefix("file://")
                .unwrap_or(&self.remote_url);
            if !Path::new(path).exists() {
                return Err(Error::Fetch {
                    url: self.url(),
                    message: "no such file or directory (is the disk mounted?)".into(),
                });
            }
        }
        let creds = Creds::read(&self.transport, &self.cfg.auth)
            .map_err(|r| Error::Auth { message: r.0 })?;
        let secret = creds.secret();
        let deadline = Instant::now() + self.cfg.fetch_timeout;
        if self.transport != Transport::Local {
            set_network_timeouts(self.cfg.fetch_timeout);
        }

        let timed_out = Cell::new(false);
        let session = Session::default();
        let url = self.url();
        let past_deadline = || {
            let late = Instant::now() >= deadline;
            if late {
                timed_out.set(true);
            }
            late
        };
        let result = {
            let mut cb = credentials::callbacks(
                &creds,
                &self.transport,
                &url,
                Purpose::Fetch,
                &session,
                &past_deadline,
            );
            cb.transfer_progress(|_| !past_deadline());
            cb.sideband_progress(|_| !past_deadline());
            let mut opts = git2::FetchOptions::new();
            opts.remote_callbacks(cb)
                .download_tags(git2::AutotagOption::None)
                .update_fetchhead(false);
            if self.transport == Transport::Http {
                let mut proxy = git2::ProxyOptions::new();
                proxy.auto();
                opts.proxy_options(proxy);
            }
            let refspec = format!("+refs/heads/{}:{}", self.cfg.branch, self.fetch_ref());
            repo.remote_anonymous(&self.remote_url)
                .and_then(|mut remote| remote.fetch(&[refspec.as_str()], Some(&mut opts), None))
        };
        if let Err(e) = result {
            if let Some(r) = session.take_refusal() {
                return Err(Error::Auth { message: r.0 });
            }
            return Err(self.classify(&e, timed_out.get() || Instant::now() >= deadline, secret));
        }

        let commit = match repo.refname_to_id(&self.fetch_ref()) {
            Ok(id) => id,
            Err(e) if e.code() == ErrorCode::NotFound => {
                return Err(Error::BranchMissing {
                    branch: self.cfg.branch.clone(),
                });
            }
            Err(e) => return Err(corrupt(&e)),
        };
        verify_commit(&repo, commit).map_err(|message| Error::Corrupt {
            message: format!("commit {commit}: {message}"),
        })?;
        let forced = match previous {
            Some(prev) if prev != commit => !repo
                .graph_descendant_of(commit, prev)
                .map_err(|e| corrupt(&e))?,
            _ => false,
        };
        if let Some(prev) = previous.filter(|_| forced) {
            tracing::warn!(
                url = %self.url(),
                branch = %self.cfg.branch,
                previous = %prev,
                commit = %commit,
                "the branch was rewritten (force-push): {prev} is not an ancestor of {commit}; following the new commit"
            );
        }
        repo.reference(&self.good_ref(), commit, true, "stackpin: fetched")
            .map_err(|e| Error::Io {
                op: "record the fetched commit in",
                path: self.mirror.clone(),
                source: std::io::Error::other(e.message().to_string()),
            })?;
        Ok(Fetched {
            commit: commit.to_string(),
            previous: previous.map(|p| p.to_string()),
            forced,
            changed: previous != Some(commit),
        })
    }

    /// The desired-state tree of `commit` (a full or abbreviated id, or a
    /// ref of the mirror), rooted at the configured path.
    pub fn tree(&self, commit: &str) -> Result<GitTree, Error> {
        GitTree::open(&self.mirror, commit, &self.cfg.path).map_err(|e| Error::Corrupt {
            message: format!(
                "commit {commit} cannot be read from the mirror {}: {}",
                self.mirror.display(),
                e.message()
            ),
        })
    }

    /// Loads and validates the desired state of `commit`; `commit` of the
    /// result is set to its full id.
    pub fn load(&self, commit: &str) -> Result<DesiredState, Error> {
        self.load_reusing(commit, None).map(|(state, _)| state)
    }

    /// [`GitSource::load`], taking from `previous` every stack whose
    /// directory is unchanged ([`desired::load_reusing`]); also returns the
    /// cache for the next load.
    pub fn load_reusing(
        &self,
        commit: &str,
        previous: Option<&desired::StackCache>,
    ) -> Result<(DesiredState, desired::StackCache), Error> {
        let tree = self.tree(commit)?;
        let (mut state, cache) = desired::load_reusing(&tree, previous);
        state.commit = Some(tree.commit_id());
        state.subject = tree.subject();
        // Signature checks read the commit from the mirror.
        state.repo_path = Some(self.mirror.clone());
        state.base = tree.base().to_string();
        Ok((state, cache))
    }

    fn classify(&self, e: &git2::Error, late: bool, secret: &str) -> Error {
        let url = self.url();
        if late || e.code() == ErrorCode::Timeout {
            return Error::Timeout {
                url,
                secs: self.cfg.fetch_timeout.as_secs().max(1),
            };
        }
        let mut message = redact(e.message(), &self.cfg.url, &[secret]);
        if e.code() == ErrorCode::Auth || e.code() == ErrorCode::Certificate {
            return Error::Auth {
                message: format!("{url}: {message}"),
            };
        }
        if matches!(
            e.class(),
            ErrorClass::Zlib | ErrorClass::Indexer | ErrorClass::Odb | ErrorClass::Object
        ) {
            return Error::Corrupt {
                message: format!(
                    "{url} sent an object that cannot be read ({message}); the remote repository may be damaged"
                ),
            };
        }
        if message.contains("not owned by current user") {
            message.push_str(
                "; the daemon's user must own the repository, or list it in that user's git \
                 config (`git config --global --add safe.directory PATH`)",
            );
        }
        Error::Fetch { url, message }
    }
}

/// libgit2 has no per-fetch timeout; these process-wide socket timeouts bound
/// connecting and each read or write. The progress callbacks bound the rest.
fn set_network_timeouts(timeout: Duration) {
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: these only store an integer in libgit2's global settings, which
    // libgit2 reads when it opens a socket.
    unsafe {
        if let Err(e) = git2::opts::set_server_connect_timeout_in_milliseconds(ms) {
            tracing::debug!("failed to set libgit2's connect timeout: {e}");
        }
        if let Err(e) = git2::opts::set_server_timeout_in_milliseconds(ms) {
            tracing::debug!("failed to set libgit2's socket timeout: {e}");
        }
    }
}

fn corrupt(e: &git2::Error) -> Error {
    Error::Corrupt {
        message: e.message().to_string(),
    }
}

/// Reads the commit, its tree and every tree and blob below it, so that a
/// missing or damaged object is found now and not halfway through a sync.
fn verify_commit(repo: &Repository, id: Oid) -> Result<(), Unreadable> {
    let commit = repo
        .find_commit(id)
        .map_err(|e| format!("cannot read the commit object: {}", e.message()))?;
    let tree = commit
        .tree()
        .map_err(|e| format!("cannot read its tree: {}", e.message()))?;
    verify_tree(repo, &tree, "")
}

fn verify_tree(repo: &Repository, tree: &git2::Tree<'_>, dir: &str) -> Result<(), Unreadable> {
    for entry in tree.iter() {
        let name = format!("{dir}{}", String::from_utf8_lossy(entry.name_bytes()));
        match entry.kind() {
            Some(git2::ObjectType::Tree) => {
                let sub = repo
                    .find_tree(entry.id())
                    .map_err(|e| format!("cannot read directory {name}: {}", e.message()))?;
                verify_tree(repo, &sub, &format!("{name}/"))?;
            }
            Some(git2::ObjectType::Blob) => {
                repo.find_blob(entry.id())
                    .map_err(|e| format!("cannot read {name}: {}", e.message()))?;
            }
            // Submodules (commits of other repositories) are not fetched.
            _ => {}
        }
    }
    Ok(())
}

/// An OpenSSH known_hosts file, as far as checking one server's key needs.
///
/// Each line is parsed by the `ssh-key` crate's known_hosts parser.
/// Understood: host patterns (comma lists, `*`/`?` wildcards, `!` negation,
/// `[host]:port`), hashed host names (`|1|salt|hash`, the default of
/// `ssh-keyscan -H` and of Debian's and Ubuntu's ssh: HMAC-SHA1 of the name
/// with the salt), `@revoked`. Skipped: `@cert-authority` lines, and lines
/// that do not parse (logged with their number).
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    entries: Vec<HostEntry>,
    skipped: Vec<(usize, String)>,
}

#[derive(Debug, Clone)]
struct HostEntry {
    names: Names,
    key_type: String,
    key: Vec<u8>,
    revoked: bool,
}

#[derive(Debug, Clone)]
enum Names {
    Patterns(Vec<String>),
    Hashed { salt: Vec<u8>, hash: [u8; 20] },
}

impl Names {
    fn matches(&self, name: &str) -> bool {
        match self {
            Names::Patterns(p) => patterns_match(p, name),
            Names::Hashed { salt, hash } => {
                use hmac::{Hmac, Mac};
                let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                    return false;
                };
                mac.update(name.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
        }
    }
}

/// What a known_hosts file says about a server's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyVerdict {
    /// The key is listed for the host.
    Trusted,
    /// The key is listed as `@revoked`.
    Revoked,
    /// The host is listed, with other keys (their types).
    Mismatch { known: Vec<String> },
    /// The host is not listed.
    Unknown,
}

impl KnownHosts {
    /// Parses the text of a known_hosts file. Never fails: lines it cannot
    /// use are skipped and listed in [`KnownHosts::skipped`].
    pub fn parse(text: &str) -> KnownHosts {
        use ssh_key::known_hosts::{HostPatterns, KnownHosts as Parser, Marker};
        let mut kh = KnownHosts::default();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let Some(parsed) = Parser::new(line).next() else {
                continue; // blank or a comment
            };
            let entry = match parsed {
                Ok(e) => e,
                Err(e) => {
                    kh.skipped
                        .push((n, format!("not a known_hosts entry ({e})")));
                    continue;
                }
            };
            let revoked = match entry.marker() {
                None => false,
                Some(Marker::Revoked) => true,
                Some(Marker::CertAuthority) => {
                    kh.skipped
                        .push((n, "@cert-authority lines are not supported".into()));
                    continue;
                }
            };
            let key = match entry.public_key().to_bytes() {
                Ok(k) => k,
                Err(e) => {
                    kh.skipped
                        .push((n, format!("the key cannot be encoded ({e})")));
                    continue;
                }
            };
            let names = match entry.host_patterns() {
                HostPatterns::Patterns(p) => {
                    Names::Patterns(p.iter().map(|p| p.to_ascii_lowercase()).collect())
                }
                HostPatterns::HashedName { salt, hash } => Names::Hashed {
                    salt: salt.clone(),
                    hash: *hash,
                },
            };
            kh.entries.push(HostEntry {
                names,
                key_type: entry.public_key().algorithm().as_str().to_string(),
                key,
                revoked,
            });
        }
        for (n, why) in &kh.skipped {
            tracing::debug!(line = n, "known_hosts: skipping a line: {why}");
        }
        kh
    }

    /// The entries usable for checking.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Lines skipped (1-based line number, reason).
    pub fn skipped(&self) -> &[(usize, String)] {
        &self.skipped
    }

    /// Checks the key blob `key` (SSH wire format, as libssh2 hands it over)
    /// that `host` presented on `port`.
    pub fn check(&self, host: &str, port: u16, key: &[u8]) -> HostKeyVerdict {
        let host = host.to_ascii_lowercase();
        let mut names = vec![host_port(&host, port)];
        if port == 22 {
            names.push(format!("[{host}]:22"));
        }
        let matching: Vec<&HostEntry> = self
            .entries
            .iter()
            .filter(|e| names.iter().any(|n| e.names.matches(n)))
            .collect();
        if matching.iter().any(|e| e.revoked && e.key == key) {
            return HostKeyVerdict::Revoked;
        }
        if matching.iter().any(|e| !e.revoked && e.key == key) {
            return HostKeyVerdict::Trusted;
        }
        let mut known: Vec<String> = matching
            .iter()
            .filter(|e| !e.revoked)
            .map(|e| e.key_type.clone())
            .collect();
        known.dedup();
        if known.is_empty() {
            HostKeyVerdict::Unknown
        } else {
            HostKeyVerdict::Mismatch { known }
        }
    }
}

fn patterns_match(patterns: &[String], name: &str) -> bool {
    let mut hit = false;
    for p in patterns {
        match p.strip_prefix('!') {
            Some(neg) if glob(neg.as_bytes(), name.as_bytes()) => return false,
            Some(_) => {}
            None => hit |= glob(p.as_bytes(), name.as_bytes()),
        }
    }
    hit
}

/// OpenSSH host pattern matching: `*` any run, `?` any one character.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Auth;

    // GitHub's published host keys.
    const ED: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const ECDSA: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg=";

    fn key(b64: &str) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    }

    #[test]
    fn the_source_can_be_shared_with_blocking_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<GitSource>();
        shareable::<Error>();
    }

    #[test]
    fn the_key_blob_is_the_wire_format_libssh2_hands_over() {
        let kh = KnownHosts::parse(&format!("github.com ssh-ed25519 {ED}\n"));
        assert_eq!(kh.entries[0].key, key(ED));
        assert_eq!(&kh.entries[0].key[4..15], b"ssh-ed25519");
    }

    #[test]
    fn matches_plain_comma_and_port_entries() {
        let kh = KnownHosts::parse(&format!(
            "# comment\n\
             \n\
             github.com,140.82.121.4 ssh-ed25519 {ED}\n\
             [git.example.org]:2222 ssh-ed25519 {ED} deploy@example\n\
             *.corp.example,!evil.corp.example ecdsa-sha2-nistp256 {ECDSA}\n"
        ));
        assert_eq!(kh.len(), 3);
        assert!(kh.skipped().is_empty(), "{:?}", kh.skipped());
        let ed = key(ED);
        assert_eq!(kh.check("github.com", 22, &ed), HostKeyVerdict::Trusted);
        assert_eq!(kh.check("GitHub.com", 22, &ed), HostKeyVerdict::Trusted);
        assert_eq!(kh.check("140.82.121.4", 22, &ed), HostKeyVerdict::Trusted);
        // A port entry only matches that port, and a plain one only port 22.
        assert_eq!(
            kh.check("git.example.org", 2222, &ed),
            HostKeyVerdict::Trusted
        );
        assert_eq!(
            kh.check("git.example.org", 22, &ed),
            HostKeyVerdict::Unknown
        );
        assert_eq!(kh.check("github.com", 2222, &ed), HostKeyVerdict::Unknown);
        // Wildcards and negation.
        let ec = key(ECDSA);
        assert_eq!(
            kh.check("git.corp.example", 22, &ec),
            HostKeyVerdict::Trusted
        );
        assert_eq!(
            kh.check("evil.corp.example", 22, &ec),
            HostKeyVerdict::Unknown
        );
    }

    #[test]
    fn a_different_key_is_a_mismatch() {
        let kh = KnownHosts::parse(&format!("github.com ssh-ed25519 {ED}\n"));
        assert_eq!(
            kh.check("github.com", 22, &key(ECDSA)),
            HostKeyVerdict::Mismatch {
                known: vec!["ssh-ed25519".into()]
            }
        );
    }

    #[test]
    fn revoked_keys_are_refused() {
        let kh = KnownHosts::parse(&format!(
            "@revoked * ssh-ed25519 {ED}\ngithub.com ssh-ed25519 {ED}\n"
        ));
        assert_eq!(
            kh.check("github.com", 22, &key(ED)),
            HostKeyVerdict::Revoked
        );
    }

    #[test]
    fn skips_cert_authority_and_broken_lines() {
        let kh = KnownHosts::parse(&format!(
            "@cert-authority *.example ssh-ed25519 {ED}\n\
             host-only\n\
             host ssh-ed25519 %%%\n"
        ));
        assert!(kh.is_empty());
        let lines: Vec<usize> = kh.skipped().iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, [1, 2, 3]);
        assert_eq!(
            kh.check("github.com", 22, &key(ED)),
            HostKeyVerdict::Unknown
        );
    }

    #[test]
    fn ssh_without_known_hosts_is_refused_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, "not really a key").unwrap();
        let mut cfg = SourceConfig::new("git@127.0.0.1:acme/ds.git", "main");
        cfg.auth = Auth::SshKey {
            key_file,
            known_hosts: None,
        };
        let src = GitSource::new(cfg, dir.path()).unwrap();
        let err = src.fetch().unwrap_err();
        assert!(matches!(err, Error::Auth { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("no known_hosts file is configured"), "{text}");
        assert!(!err.is_transient());
    }

    #[test]
    fn ssh_without_a_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SourceConfig::new("ssh://git@127.0.0.1:1/ds.git", "main");
        let err = GitSource::new(cfg, dir.path())
            .unwrap()
            .fetch()
            .unwrap_err();
        assert!(err.to_string().contains("needs a deploy key"), "{err}");
    }
}
