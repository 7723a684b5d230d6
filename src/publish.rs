//! Publishing verified markers to the desired-state repository (SPEC §4): a
//! staging reconciler commits the entries it verified to
//! `verified/<stack>.yaml` on the tracked branch and pushes, so that the gate
//! of a `promote_from` stack on another host sees them. The releases that
//! failed here go the same way to `quarantined/<stack>.yaml` (a [`Marker`]
//! of another kind), so that `stackpin pin` stops proposing their digests.
//!
//! What is pending is derived, not queued: every entry of this host's
//! verified store (`releases/verified/<stack>.yaml`) that this host verified
//! and has not published yet (a small record under the state dir). So an
//! entry whose publish failed is simply tried again at the next run, and
//! `stackpin verify` entries are published like the reconciler's own.
//!
//! # Guarantees
//! - A publish commit changes exactly one path, `verified/<stack>.yaml`: the
//!   tree diff is checked before anything leaves the host, and a commit that
//!   would change anything else is never pushed.
//! - Existing entries keep their bytes: new entries are appended as text
//!   (comments and layout stay), and the result is parsed back and compared
//!   with the old entries plus the new ones before it is committed.
//! - Nothing is lost when hosts publish at once: the branch only moves by
//!   fast-forward, so a host that lost the race fetches the new head,
//!   re-applies its entries on it and retries (bounded, jittered backoff).
//!   Over the network the remote's receive-pack refuses a non-fast-forward;
//!   for a local repository (a path or `file://`) the branch is updated by
//!   compare-and-swap under git's ref lock, because libgit2's local push
//!   overwrites the ref without comparing.
//! - Idempotent: an entry already on the branch (same version and images) is
//!   not added again.
//! - Off the converge path: [`Worker`] runs on its own thread; a failure is
//!   logged and retried at the next run and never fails a deploy.

use crate::config::Config;
use crate::desired::spec::{QuarantinedEntry, QuarantinedFile, VerifiedEntry, VerifiedFile};
use crate::layout::Layout;
use crate::source::credentials::{self, Creds, Purpose, Session, Transport};
use crate::source::{Auth, strip_credentials};
use git2::{ErrorCode, Oid, Repository, Signature};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Why a verified-markers file does not parse or cannot be updated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MarkerText(pub String);

impl From<String> for MarkerText {
    fn from(s: String) -> MarkerText {
        MarkerText(s)
    }
}

impl From<&str> for MarkerText {
    fn from(s: &str) -> MarkerText {
        MarkerText(s.to_string())
    }
}

/// Why publishing failed. URLs never carry credentials.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `verified.author` is not `Name <email>`.
    #[error(
        "failed to read verified.author {value:?} in the config: write it as `Name <email>`, e.g. `stackpin <stackpin@web-1>`"
    )]
    Author { value: String },
    /// Publishing is on but there is no repository to publish to.
    #[error(
        "failed to publish verified markers: no desired-state repository is configured (repo.url)"
    )]
    NoRepository,
    /// The remote cannot be reached, or git failed (transient).
    #[error("failed to publish to {url}: {message}")]
    Git { url: String, message: String },
    /// Credentials or the server's identity were refused.
    #[error("failed to authenticate to {url}: {message}")]
    Auth { url: String, message: String },
    /// The remote refused the push for a reason retrying will not fix
    /// (branch protection, a hook, a missing branch, a non-bare repository).
    #[error("failed to publish to {url}: {message}")]
    Refused { url: String, message: String },
    /// The marker file on the branch does not parse: a person must fix it.
    #[error(
        "failed to publish to {url}: {path} on {branch} cannot be read ({message}); fix it in a reviewed PR"
    )]
    Unparsable {
        url: String,
        branch: String,
        path: String,
        message: String,
    },
    /// Other hosts kept moving the branch; the entry stays pending.
    #[error(
        "failed to publish to {url}: {branch} moved on each of {attempts} attempts; the entries stay pending for the next run"
    )]
    Contended {
        url: String,
        branch: String,
        attempts: u32,
    },
    /// The commit would have changed more than the marker file (a bug).
    #[error(
        "failed to publish to {url}: the commit would change {changed:?}, not only {path}; nothing was pushed"
    )]
    ForeignChange {
        url: String,
        path: String,
        changed: Vec<String>,
    },
    #[error("failed to {op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where and as whom to publish.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The desired-state repository: the URL (or path) the daemon fetches.
    pub url: String,
    /// The branch to push to.
    pub branch: String,
    /// The directory inside the repository that holds `verified/` ("." for
    /// the root).
    pub path: String,
    pub auth: Auth,
    pub author_name: String,
    pub author_email: String,
    /// This host's name: only entries it verified are published.
    pub host: String,
    /// Holds `publish/` (the work repository and what was published).
    pub state_dir: PathBuf,
    /// Attempts per publish when the branch keeps moving.
    pub attempts: u32,
    /// Base of the jittered exponential backoff between attempts.
    pub backoff: Duration,
}

/// Splits `Name <email>`.
pub fn parse_author(value: &str) -> Result<(String, String), Error> {
    let bad = || Error::Author {
        value: value.to_string(),
    };
    let (name, rest) = value.split_once('<').ok_or_else(bad)?;
    let email = rest.strip_suffix('>').ok_or_else(bad)?.trim();
    let name = name.trim();
    if name.is_empty() || email.is_empty() || email.contains(['<', '>']) {
        return Err(bad());
    }
    Ok((name.to_string(), email.to_string()))
}

impl Settings {
    /// The settings from the config, when `verified.publish` is on. The
    /// repository, branch, path and credentials are the daemon's own.
    pub fn from_config(cfg: &Config) -> Result<Option<Settings>, Error> {
        let Some(v) = cfg.file.verified.as_ref().filter(|v| v.publish) else {
            return Ok(None);
        };
        let url = cfg.repo.clone().ok_or(Error::NoRepository)?;
        let (author_name, author_email) = match &v.author {
            Some(a) => parse_author(a)?,
            None => ("stackpin".to_string(), format!("stackpin@{}", cfg.host)),
        };
        let auth = Auth::of(cfg);
        Ok(Some(Settings {
            url,
            branch: v
                .branch
                .clone()
                .or_else(|| cfg.branch.clone())
                .unwrap_or_else(|| "main".into()),
            path: cfg.repo_path.clone(),
            auth,
            author_name,
            author_email,
            host: cfg.host.clone(),
            state_dir: cfg.state_dir.clone(),
            attempts: 5,
            backoff: Duration::from_millis(200),
        }))
    }
}

/// What one publish did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Published {
    /// The commit pushed; `None` when every entry was already on the branch.
    pub commit: Option<String>,
    /// Versions added by that commit.
    pub added: Vec<String>,
    /// Attempts it took (1 when nobody else pushed meanwhile).
    pub attempts: u32,
}

/// Commits and pushes verified entries. One publish at a time per value.
pub struct Publisher {
    s: Settings,
    /// `url`, with a relative local path made absolute.
    remote_url: String,
    local: bool,
    serial: Mutex<()>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("url", &strip_credentials(&self.s.url))
            .field("branch", &self.s.branch)
            .finish()
    }
}

/// What a push did.
enum Pushed {
    Done,
    /// The branch moved since.
    NotFastForward,
    /// The remote refused the ref (a hook, protection): its words.
    Rejected(String),
}

/// One attempt's result.
enum Step {
    Done(Published),
    /// The branch moved under us: fetch again and re-apply.
    Moved(String),
}

impl Publisher {
    pub fn new(s: Settings) -> Publisher {
        let local = is_local(&s.url);
        let remote_url = if local && !s.url.contains("://") {
            std::path::absolute(&s.url)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| s.url.clone())
        } else {
            s.url.clone()
        };
        Publisher {
            s,
            remote_url,
            local,
            serial: Mutex::new(()),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.s
    }

    fn url(&self) -> String {
        strip_credentials(&self.s.url)
    }

    /// `verified/<stack>.yaml` inside the repository.
    pub fn file_path(&self, stack: &str) -> String {
        self.file_path_of::<VerifiedEntry>(stack)
    }

    /// `<kind>/<stack>.yaml` inside the repository.
    fn file_path_of<M: Marker>(&self, stack: &str) -> String {
        let base = self.s.path.trim_matches('/');
        if base.is_empty() || base == "." {
            format!("{}/{stack}.yaml", M::KIND)
        } else {
            format!("{base}/{}/{stack}.yaml", M::KIND)
        }
    }

    fn publish_dir(&self) -> PathBuf {
        self.s.state_dir.join("publish")
    }

    fn record_path<M: Marker>(&self, stack: &str) -> PathBuf {
        self.publish_dir()
            .join(format!("{stack}{}.published.json", M::RECORD))
    }

    /// Entries this host verified for `stack` and has not published yet.
    pub fn pending(&self, layout: &Layout, stack: &str) -> Vec<VerifiedEntry> {
        self.pending_of(layout, stack)
    }

    /// Entries of this kind this host recorded for `stack` and has not
    /// published yet.
    fn pending_of<M: Marker>(&self, layout: &Layout, stack: &str) -> Vec<M> {
        let done = self.published::<M>(stack);
        M::store(layout, stack)
            .unwrap_or_else(|e| {
                tracing::warn!(stack, "nothing to publish: {e}");
                Vec::new()
            })
            .into_iter()
            .filter(|e| e.host() == self.s.host)
            .filter(|e| !done.contains(&e.key()))
            .collect()
    }

    fn published<M: Marker>(&self, stack: &str) -> Vec<Key> {
        std::fs::read(self.record_path::<M>(stack))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn mark_published<M: Marker>(&self, stack: &str, entries: &[M]) -> Result<(), Error> {
        let mut done = self.published::<M>(stack);
        for e in entries {
            if !done.contains(&e.key()) {
                done.push(e.key());
            }
        }
        let path = self.record_path::<M>(stack);
        let bytes = serde_json::to_vec_pretty(&done).unwrap_or_default();
        crate::fsutil::write_atomic(&path, &bytes, 0o644).map_err(|source| Error::Io {
            op: "record published entries in",
            path,
            source,
        })
    }

    /// Publishes every pending entry of every stack in this host's verified
    /// and quarantined stores. Returns one result per file that had
    /// something pending, by its path in the repository.
    pub fn publish_pending(&self, layout: &Layout) -> Vec<(String, Result<Published, Error>)> {
        let mut out = self.publish_pending_of::<VerifiedEntry>(layout);
        out.extend(self.publish_pending_of::<QuarantinedEntry>(layout));
        out
    }

    fn publish_pending_of<M: Marker>(
        &self,
        layout: &Layout,
    ) -> Vec<(String, Result<Published, Error>)> {
        let dir = layout.root.join("releases").join(M::KIND);
        let mut stacks: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()?
                            .strip_suffix(".yaml")
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default();
        stacks.sort();
        stacks
            .into_iter()
            .filter(|s| !self.pending_of::<M>(layout, s).is_empty())
            .map(|s| {
                (
                    self.file_path_of::<M>(&s),
                    self.publish_stack_of::<M>(layout, &s),
                )
            })
            .collect()
    }

    /// Publishes the pending verified entries of one stack (nothing to do
    /// is `Ok` with no commit) and records them as published.
    pub fn publish_stack(&self, layout: &Layout, stack: &str) -> Result<Published, Error> {
        self.publish_stack_of::<VerifiedEntry>(layout, stack)
    }

    fn publish_stack_of<M: Marker>(
        &self,
        layout: &Layout,
        stack: &str,
    ) -> Result<Published, Error> {
        let pending = self.pending_of::<M>(layout, stack);
        if pending.is_empty() {
            return Ok(Published::default());
        }
        let p = self.publish(stack, &pending)?;
        if let Err(e) = self.mark_published(stack, &pending) {
            // Harmless: the next run finds the entries on the branch.
            tracing::warn!(stack, "{e}");
        }
        Ok(p)
    }

    /// Adds `entries` to `<kind>/<stack>.yaml` on the branch (those not
    /// there yet) in one commit, and pushes it.
    ///
    /// # Errors
    /// [`Error::Contended`] after `attempts` attempts lost to other pushes;
    /// [`Error::Unparsable`] when the file on the branch is broken;
    /// [`Error::Refused`], [`Error::Auth`], [`Error::Git`] from the remote.
    pub fn publish<M: Marker>(&self, stack: &str, entries: &[M]) -> Result<Published, Error> {
        let _serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        let attempts = self.s.attempts.max(1);
        for attempt in 1..=attempts {
            let step = if self.local {
                self.attempt_local(stack, entries)?
            } else {
                self.attempt_remote(stack, entries)?
            };
            match step {
                Step::Done(p) => {
                    if let Some(c) = &p.commit {
                        tracing::info!(stack, commit = %c, added = ?p.added, attempt, branch = %self.s.branch, "published {} entries", M::KIND);
                    }
                    return Ok(Published {
                        attempts: attempt,
                        ..p
                    });
                }
                Step::Moved(why) if attempt < attempts => {
                    let wait = jittered(self.s.backoff, attempt);
                    tracing::info!(stack, attempt, retry_in = ?wait, "{why}; re-applying the {} entries on the new head", M::KIND);
                    std::thread::sleep(wait);
                }
                Step::Moved(_) => {}
            }
        }
        Err(Error::Contended {
            url: self.url(),
            branch: self.s.branch.clone(),
            attempts,
        })
    }

    /// Builds, in `repo`, a commit on `head` that adds the missing entries
    /// to the marker file. `None` when nothing is missing.
    fn prepare<M: Marker>(
        &self,
        repo: &Repository,
        head: Oid,
        stack: &str,
        entries: &[M],
    ) -> Result<Option<(Oid, Vec<String>)>, Error> {
        let path = self.file_path_of::<M>(stack);
        let git = |e: git2::Error| self.git_error(&e);
        let head_commit = repo.find_commit(head).map_err(git)?;
        let head_tree = head_commit.tree().map_err(git)?;
        let old_text = match head_tree.get_path(Path::new(&path)) {
            Ok(entry) => {
                let blob = repo.find_blob(entry.id()).map_err(git)?;
                String::from_utf8(blob.content().to_vec())
                    .map_err(|_| self.unparsable(&path, "not UTF-8"))?
            }
            Err(e) if e.code() == ErrorCode::NotFound => String::new(),
            Err(e) => return Err(git(e)),
        };
        let old = parse::<M>(&old_text).map_err(|m| self.unparsable(&path, &m.0))?;
        let mut missing: Vec<M> = Vec::new();
        for e in entries {
            let known = old.iter().chain(missing.iter()).any(|o| o.key() == e.key());
            if !known {
                missing.push(e.clone());
            }
        }
        if missing.is_empty() {
            return Ok(None);
        }
        let text =
            updated_text(&old_text, &old, &missing).map_err(|m| self.unparsable(&path, &m.0))?;
        let blob = repo.blob(text.as_bytes()).map_err(git)?;
        let tree_id = git2::build::TreeUpdateBuilder::new()
            .upsert(path.as_str(), blob, git2::FileMode::Blob)
            .create_updated(repo, &head_tree)
            .map_err(git)?;
        let tree = repo.find_tree(tree_id).map_err(git)?;
        let diff = repo
            .diff_tree_to_tree(Some(&head_tree), Some(&tree), None)
            .map_err(git)?;
        let changed: Vec<String> = diff
            .deltas()
            .flat_map(|d| [d.old_file().path(), d.new_file().path()])
            .flatten()
            .map(|p| p.to_string_lossy().into_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if changed != [path.clone()] {
            return Err(Error::ForeignChange {
                url: self.url(),
                path,
                changed,
            });
        }
        let sig = Signature::now(&self.s.author_name, &self.s.author_email).map_err(git)?;
        let versions: Vec<String> = missing.iter().map(|e| e.version().to_string()).collect();
        let mut msg = format!(
            "{}: {stack} {} on {}\n\nPublished by stackpin on host {}: {}.\n",
            M::KIND,
            versions.join(", "),
            self.s.host,
            self.s.host,
            M::WHY
        );
        for e in &missing {
            if !e.commit().is_empty() {
                msg.push_str(&format!(
                    "{}: desired-state commit {}\n",
                    e.version(),
                    e.commit()
                ));
            }
        }
        let commit = repo
            .commit(None, &sig, &sig, &msg, &tree, &[&head_commit])
            .map_err(git)?;
        Ok(Some((commit, versions)))
    }

    /// A local repository: objects go straight into it and the branch moves
    /// by compare-and-swap.
    fn attempt_local<M: Marker>(&self, stack: &str, entries: &[M]) -> Result<Step, Error> {
        let (path, repo) = self.local_repo()?;
        let refname = format!("refs/heads/{}", self.s.branch);
        if !repo.is_bare()
            && repo
                .head()
                .ok()
                .and_then(|h| h.name().ok().map(str::to_string))
                .as_deref()
                == Some(refname.as_str())
        {
            return Err(Error::Refused {
                url: self.url(),
                message: format!(
                    "{path} has {} checked out in a work tree, which a push would leave stale; point repo.url at a bare repository",
                    self.s.branch
                ),
            });
        }
        let head = self.branch_head(&repo, &refname)?;
        let Some((commit, added)) = self.prepare(&repo, head, stack, entries)? else {
            return Ok(Step::Done(Published::default()));
        };
        let log = format!("stackpin: {} entries for {stack}", M::KIND);
        match repo.reference_matching(&refname, commit, true, head, &log) {
            Ok(_) => Ok(Step::Done(Published {
                commit: Some(commit.to_string()),
                added,
                attempts: 0,
            })),
            Err(e) if matches!(e.code(), ErrorCode::Modified | ErrorCode::Locked) => {
                Ok(Step::Moved(format!("{} moved since {head}", self.s.branch)))
            }
            Err(e) => Err(self.git_error(&e)),
        }
    }

    /// The work repository of a remote, created on first use.
    fn work_repo(&self) -> Result<Repository, Error> {
        let work = self.publish_dir().join("work.git");
        match Repository::open_bare(&work) {
            Ok(r) => Ok(r),
            Err(_) => {
                std::fs::create_dir_all(self.publish_dir()).map_err(|source| Error::Io {
                    op: "create",
                    path: self.publish_dir(),
                    source,
                })?;
                Repository::init_bare(&work).map_err(|e| self.git_error(&e))
            }
        }
    }

    /// Fetches the branch of a remote into `repo`; its head.
    fn fetch_branch(&self, repo: &Repository) -> Result<Oid, Error> {
        let tracking = format!("refs/remotes/origin/{}", self.s.branch);
        let transport = Transport::of(&self.s.url);
        let url = self.url();
        let creds = Creds::read(&transport, &self.s.auth).map_err(|r| self.refused(r))?;
        let never = || false;
        let session = Session::default();
        let cb = credentials::callbacks(&creds, &transport, &url, Purpose::Push, &session, &never);
        let mut opts = git2::FetchOptions::new();
        opts.remote_callbacks(cb)
            .download_tags(git2::AutotagOption::None)
            .update_fetchhead(false);
        let spec = format!("+refs/heads/{}:{tracking}", self.s.branch);
        let r = repo
            .remote_anonymous(&self.remote_url)
            .and_then(|mut remote| remote.fetch(&[spec.as_str()], Some(&mut opts), None));
        if let Err(e) = r {
            return Err(session
                .take_refusal()
                .map(|r| self.refused(r))
                .unwrap_or_else(|| self.git_error(&e)));
        }
        self.branch_head(repo, &tracking)
    }

    /// The local repository `url` names (a path or `file://`), and that path.
    fn local_repo(&self) -> Result<(&str, Repository), Error> {
        let path = self
            .remote_url
            .strip_prefix("file://")
            .unwrap_or(&self.remote_url);
        let repo = Repository::open(path).map_err(|e| self.git_error(&e))?;
        Ok((path, repo))
    }

    /// Where `refname` (the tracked branch, or its copy fetched) points.
    fn branch_head(&self, repo: &Repository, refname: &str) -> Result<Oid, Error> {
        match repo.refname_to_id(refname) {
            Ok(id) => Ok(id),
            Err(e) if e.code() == ErrorCode::NotFound => Err(self.no_branch()),
            Err(e) => Err(self.git_error(&e)),
        }
    }

    /// The repository to build commits in (the local one itself, or the
    /// work repository of a remote) and the branch's head there, fetched
    /// now.
    pub fn base(&self) -> Result<(Repository, Oid), Error> {
        let _serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        if self.local {
            let (_, repo) = self.local_repo()?;
            let head = self.branch_head(&repo, &format!("refs/heads/{}", self.s.branch))?;
            return Ok((repo, head));
        }
        let repo = self.work_repo()?;
        let head = self.fetch_branch(&repo)?;
        Ok((repo, head))
    }

    /// Points `branch` of the repository at `commit` (a commit of
    /// `repo`, from [`Publisher::base`]), whatever it pointed at: a branch
    /// stackpin owns, such as a proposal's. Never the tracked branch.
    pub fn force_branch(&self, repo: &Repository, commit: Oid, branch: &str) -> Result<(), Error> {
        if branch == self.s.branch {
            return Err(Error::Refused {
                url: self.url(),
                message: format!(
                    "{branch} is the tracked branch; stackpin force-pushes only its own branches"
                ),
            });
        }
        let _serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        let refname = format!("refs/heads/{branch}");
        if self.local {
            repo.reference(&refname, commit, true, "stackpin: propose")
                .map_err(|e| self.git_error(&e))?;
            return Ok(());
        }
        let local_ref = format!("refs/stackpin/branch/{branch}");
        repo.reference(&local_ref, commit, true, "stackpin: propose")
            .map_err(|e| self.git_error(&e))?;
        match self.push_spec(repo, &format!("+{local_ref}:{refname}"))? {
            Pushed::Done => Ok(()),
            // A forced push is not refused for that by git itself; a
            // hook of the remote's may (`receive.denyNonFastForwards`).
            Pushed::NotFastForward => Err(Error::Refused {
                url: self.url(),
                message: format!(
                    "the remote refused to move {branch} by force; let this host force-push the branches stackpin owns, or name another with propose.branch"
                ),
            }),
            Pushed::Rejected(status) => Err(Error::Refused {
                url: self.url(),
                message: format!("the remote rejected the push to {branch}: {status}"),
            }),
        }
    }

    /// Pushes `spec` to the remote with this host's credentials.
    fn push_spec(&self, repo: &Repository, spec: &str) -> Result<Pushed, Error> {
        let transport = Transport::of(&self.s.url);
        let url = self.url();
        let creds = Creds::read(&transport, &self.s.auth).map_err(|r| self.refused(r))?;
        let never = || false;
        let rejected: RefCell<Option<String>> = RefCell::new(None);
        let session = Session::default();
        let result = {
            let mut cb =
                credentials::callbacks(&creds, &transport, &url, Purpose::Push, &session, &never);
            cb.push_update_reference(|_refname, status| {
                if let Some(s) = status {
                    *rejected.borrow_mut() = Some(s.to_string());
                }
                Ok(())
            });
            let mut opts = git2::PushOptions::new();
            opts.remote_callbacks(cb);
            repo.remote_anonymous(&self.remote_url)
                .and_then(|mut remote| remote.push(&[spec], Some(&mut opts)))
        };
        match result {
            Err(e) if e.code() == ErrorCode::NotFastForward => Ok(Pushed::NotFastForward),
            Err(e) => Err(session
                .take_refusal()
                .map(|r| self.refused(r))
                .unwrap_or_else(|| self.git_error(&e))),
            Ok(()) => Ok(match rejected.into_inner() {
                Some(status) => Pushed::Rejected(status),
                None => Pushed::Done,
            }),
        }
    }

    /// A remote: fetch the branch into the work repository, commit on it,
    /// push without force.
    fn attempt_remote<M: Marker>(&self, stack: &str, entries: &[M]) -> Result<Step, Error> {
        let repo = self.work_repo()?;
        let head = self.fetch_branch(&repo)?;
        let Some((commit, added)) = self.prepare(&repo, head, stack, entries)? else {
            return Ok(Step::Done(Published::default()));
        };
        let local_ref = format!("refs/stackpin/publish/{}", self.s.branch);
        repo.reference(&local_ref, commit, true, "stackpin: publish")
            .map_err(|e| self.git_error(&e))?;
        let rejected =
            match self.push_spec(&repo, &format!("{local_ref}:refs/heads/{}", self.s.branch))? {
                Pushed::NotFastForward => {
                    return Ok(Step::Moved(format!("{} moved since {head}", self.s.branch)));
                }
                Pushed::Done => None,
                Pushed::Rejected(status) => Some(status),
            };
        if let Some(status) = rejected {
            let lower = status.to_ascii_lowercase();
            let permanent = [
                "declined",
                "protected",
                "denied",
                "permission",
                "not allowed",
            ]
            .iter()
            .any(|w| lower.contains(w));
            if permanent {
                return Err(Error::Refused {
                    url: self.url(),
                    message: format!(
                        "the remote rejected the push to {}: {status} (let this host's credentials push to {} or publish to another branch with verified.branch)",
                        self.s.branch, self.s.branch
                    ),
                });
            }
            return Ok(Step::Moved(format!(
                "the remote rejected the push: {status}"
            )));
        }
        Ok(Step::Done(Published {
            commit: Some(commit.to_string()),
            added,
            attempts: 0,
        }))
    }

    fn refused(&self, r: credentials::Refusal) -> Error {
        Error::Auth {
            url: self.url(),
            message: r.0,
        }
    }

    fn git_error(&self, e: &git2::Error) -> Error {
        let message = crate::source::redact(e.message(), &self.s.url, &[]);
        if e.code() == ErrorCode::Auth || e.code() == ErrorCode::Certificate {
            return Error::Auth {
                url: self.url(),
                message,
            };
        }
        Error::Git {
            url: self.url(),
            message,
        }
    }

    fn unparsable(&self, path: &str, message: &str) -> Error {
        Error::Unparsable {
            url: self.url(),
            branch: self.s.branch.clone(),
            path: path.to_string(),
            message: message.to_string(),
        }
    }

    fn no_branch(&self) -> Error {
        Error::Refused {
            url: self.url(),
            message: format!(
                "the repository has no branch {}; set verified.branch or repo.branch",
                self.s.branch
            ),
        }
    }
}

/// What makes two entries one, for publishing once: the release (version
/// and images) and, for a verified entry, whether it is the soaked one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    version: String,
    images: BTreeMap<String, String>,
    /// The soaked entry of a release is published apart from its first.
    #[serde(default)]
    soaked: bool,
}

/// A kind of entry a host records and publishes to `<KIND>/<stack>.yaml`:
/// the list under the one key `KIND:`, appended to as text.
pub trait Marker: Clone + PartialEq + std::fmt::Debug + Sized {
    /// The directory in the repository (and under `releases/` on the
    /// host), and the file's one key.
    const KIND: &'static str;
    /// What the host's record of published entries adds to its file name.
    const RECORD: &'static str;
    /// What the entries are, for the commit message.
    const WHY: &'static str;
    type File: serde::de::DeserializeOwned;
    fn entries(f: Self::File) -> Vec<Self>;
    fn version(&self) -> &str;
    fn host(&self) -> &str;
    fn commit(&self) -> &str;
    fn key(&self) -> Key;
    /// The entry's fields after `- version:`, one per line, each after `p`.
    fn fields(&self, p: &str) -> String;
    /// This host's store of the stack's entries.
    fn store(layout: &Layout, stack: &str) -> Result<Vec<Self>, crate::verified::Error>;
}

impl Marker for VerifiedEntry {
    const KIND: &'static str = "verified";
    const RECORD: &'static str = "";
    const WHY: &'static str = "these releases passed smoke";
    type File = VerifiedFile;
    fn entries(f: VerifiedFile) -> Vec<Self> {
        f.verified
    }
    fn version(&self) -> &str {
        &self.version
    }
    fn host(&self) -> &str {
        &self.host
    }
    fn commit(&self) -> &str {
        &self.commit
    }
    fn key(&self) -> Key {
        Key {
            version: self.version.clone(),
            images: self.images.clone(),
            soaked: self.soaked_at.is_some(),
        }
    }
    fn fields(&self, p: &str) -> String {
        let mut s = images_block(&self.images, p);
        s.push_str(&format!(
            "{p}verified_at: {}\n{p}host: {}\n{p}commit: {}\n",
            scalar(&self.verified_at),
            scalar(&self.host),
            scalar(&self.commit)
        ));
        if let Some(t) = &self.soaked_at {
            s.push_str(&format!("{p}soaked_at: {}\n", scalar(t)));
        }
        s.push_str(&signature_line(self.signature.as_deref(), p));
        s
    }
    fn store(layout: &Layout, stack: &str) -> Result<Vec<Self>, crate::verified::Error> {
        crate::verified::read(layout, stack)
    }
}

impl Marker for QuarantinedEntry {
    const KIND: &'static str = "quarantined";
    const RECORD: &'static str = ".quarantined";
    const WHY: &'static str = "these releases failed here and were quarantined";
    type File = QuarantinedFile;
    fn entries(f: QuarantinedFile) -> Vec<Self> {
        f.quarantined
    }
    fn version(&self) -> &str {
        &self.version
    }
    fn host(&self) -> &str {
        &self.host
    }
    fn commit(&self) -> &str {
        &self.commit
    }
    fn key(&self) -> Key {
        Key {
            version: self.version.clone(),
            images: self.images.clone(),
            soaked: false,
        }
    }
    fn fields(&self, p: &str) -> String {
        let mut s = images_block(&self.images, p);
        s.push_str(&format!(
            "{p}reason: {}\n{p}quarantined_at: {}\n{p}host: {}\n{p}commit: {}\n",
            scalar(&self.reason),
            scalar(&self.quarantined_at),
            scalar(&self.host),
            scalar(&self.commit)
        ));
        s.push_str(&signature_line(self.signature.as_deref(), p));
        s
    }
    fn store(layout: &Layout, stack: &str) -> Result<Vec<Self>, crate::verified::Error> {
        crate::verified::read_quarantined(layout, stack)
    }
}

fn images_block(images: &BTreeMap<String, String>, p: &str) -> String {
    let mut s = format!("{p}images:\n");
    for (k, v) in images {
        s.push_str(&format!("{p}  {}: {}\n", scalar(k), scalar(v)));
    }
    s
}

fn signature_line(sig: Option<&str>, p: &str) -> String {
    sig.map(|sig| format!("{p}signature: {}\n", scalar(sig)))
        .unwrap_or_default()
}

/// A path or `file://` URL (not `scheme://`, not scp-like `host:path`).
fn is_local(url: &str) -> bool {
    if let Some((scheme, _)) = url.split_once("://") {
        return scheme.eq_ignore_ascii_case("file");
    }
    !matches!(
        (url.find(':'), url.find('/')),
        (Some(colon), slash) if colon > 0 && slash.is_none_or(|s| colon < s)
    )
}

/// `base * 2^(attempt-1)`, plus up to as much again of jitter, so hosts that
/// collided do not collide again in step.
fn jittered(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1 << attempt.saturating_sub(1).min(6));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
        ^ (std::process::id() as u64).rotate_left(17)
        ^ {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::thread::current().id().hash(&mut h);
            h.finish()
        };
    let ms = exp.as_millis().max(1) as u64;
    exp + Duration::from_millis(seed % ms)
}

/// Parses the text of a verified file; empty (or comments only) is no entries.
pub fn parse_verified(text: &str) -> Result<Vec<VerifiedEntry>, MarkerText> {
    parse::<VerifiedEntry>(text)
}

/// Parses the text of a marker file of kind `M`; empty (or comments only)
/// is no entries.
pub fn parse<M: Marker>(text: &str) -> Result<Vec<M>, MarkerText> {
    let has_content = text
        .lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    if !has_content {
        return Ok(Vec::new());
    }
    let mut findings = Vec::new();
    let mut sink = crate::desired::Sink::new(None, "", &mut findings);
    match crate::desired::parse_typed::<M::File>(text.as_bytes(), &mut sink) {
        Ok(f) => Ok(M::entries(f)),
        Err(_) => Err(MarkerText::from(
            findings
                .iter()
                .map(|f| {
                    if f.field.is_empty() {
                        f.message.clone()
                    } else {
                        format!("{}: {}", f.field, f.message)
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
        )),
    }
}

/// The new text of a marker file holding `old` (parsed from `old_text`)
/// plus `added`: appended as text when the file is a block list under a last
/// top-level `verified:` (`quarantined:`) key, so existing bytes stay;
/// otherwise the file is written anew (its leading comment kept). Checked
/// by parsing it back.
pub fn updated_text<M: Marker>(
    old_text: &str,
    old: &[M],
    added: &[M],
) -> Result<String, MarkerText> {
    let want: Vec<M> = old.iter().chain(added).cloned().collect();
    let check = |text: &str| parse::<M>(text).ok().as_ref() == Some(&want);
    if let Some(text) = appended(old_text, added)
        && check(&text)
    {
        return Ok(text);
    }
    let header: String = old_text
        .lines()
        .take_while(|l| l.trim_start().starts_with('#') || l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let mut text = header;
    text.push_str(&format!("{}:\n", M::KIND));
    for e in &want {
        text.push_str(&render_entry(e, 2));
    }
    if check(&text) {
        Ok(text)
    } else {
        Err("the entries could not be written back unchanged".into())
    }
}

/// `old_text` with `added` appended as block-list items, when its layout
/// allows (see [`updated_text`]).
fn appended<M: Marker>(old_text: &str, added: &[M]) -> Option<String> {
    let lines: Vec<&str> = old_text.lines().collect();
    let content = |l: &str| !l.trim().is_empty() && !l.trim_start().starts_with('#');
    let mut out = old_text.to_string();
    let list_key = format!("{}:", M::KIND);
    let Some(key) = lines.iter().position(|l| {
        l.strip_prefix(list_key.as_str())
            .is_some_and(|rest| rest.trim().is_empty() || rest.trim_start().starts_with('#'))
    }) else {
        if lines.iter().any(|l| content(l)) {
            return None;
        }
        // Empty or comments only: start the list.
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("{list_key}\n"));
        for e in added {
            out.push_str(&render_entry(e, 2));
        }
        return Some(out);
    };
    let after = &lines[key + 1..];
    // Another top-level key after the list: appending at the end would land
    // in it.
    if after
        .iter()
        .any(|l| content(l) && !l.starts_with(' ') && !l.starts_with("- ") && *l != "-")
    {
        return None;
    }
    let indent = after
        .iter()
        .find(|l| content(l))
        .map(|l| l.len() - l.trim_start().len())
        .unwrap_or(2);
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for e in added {
        out.push_str(&render_entry(e, indent));
    }
    Some(out)
}

/// One block-list item at `indent`.
fn render_entry<M: Marker>(e: &M, indent: usize) -> String {
    let p = " ".repeat(indent);
    let mut s = format!("{p}- version: {}\n", scalar(e.version()));
    s.push_str(&e.fields(&format!("{p}  ")));
    s
}

/// A YAML scalar that reads back as this string: plain when it is plainly a
/// word (starts with a letter, no YAML punctuation, not a keyword), else
/// double-quoted (JSON escaping is valid YAML).
fn scalar(s: &str) -> String {
    let plain = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/@:+-".contains(c))
        && !s.ends_with(':')
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
        );
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
    }
}

/// Publishes on its own thread, one run at a time: [`Worker::kick`] after a
/// converge run; kicks during a publish coalesce into one more. `after`
/// runs after each publish, on the same thread (the proposals).
pub struct Worker {
    tx: std::sync::mpsc::SyncSender<()>,
}

/// What runs after each publish.
pub type After = Box<dyn Fn(&Publisher) + Send>;

impl Worker {
    pub fn spawn(publisher: Publisher, layout: Layout, after: Option<After>) -> Worker {
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let spawned = std::thread::Builder::new()
            .name("stackpin-publish".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    for (file, r) in publisher.publish_pending(&layout) {
                        match r {
                            Ok(p) if p.commit.is_none() => {
                                tracing::debug!(file, "entries already published")
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(
                                file,
                                "{e}; the entries stay on this host and are published at the next run"
                            ),
                        }
                    }
                    if let Some(after) = &after {
                        after(&publisher);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("failed to start the publisher thread: {e}");
        }
        Worker { tx }
    }

    /// Asks for a publish run; never blocks.
    pub fn kick(&self) {
        let _ = self.tx.try_send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: &str, digest: char, host: &str) -> VerifiedEntry {
        VerifiedEntry {
            soaked_at: None,
            signature: None,
            version: version.into(),
            images: [(
                "web".to_string(),
                format!("ghcr.io/acme/app@sha256:{}", digest.to_string().repeat(64)),
            )]
            .into(),
            verified_at: "2026-01-31T06:55:00Z".into(),
            host: host.into(),
            commit: "4f2a9c0000000000000000000000000000000000".into(),
        }
    }

    #[test]
    fn appends_and_keeps_existing_bytes() {
        let old = "# markers\nverified:\n  - version: sha-1\n    images: {web: \"ghcr.io/acme/app@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}\n    verified_at: \"2026-01-31T06:55:00Z\"\n    host: staging-1   # first\n    commit: abc\n";
        let parsed = parse_verified(old).unwrap();
        assert_eq!(parsed.len(), 1);
        let new = updated_text(old, &parsed, &[entry("1.0", 'b', "web-1")]).unwrap();
        assert!(new.starts_with(old), "{new}");
        let back = parse_verified(&new).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(
            back[1].version, "1.0",
            "a version that looks like a number stays a string"
        );
    }

    #[test]
    fn starts_missing_or_empty_files_and_handles_odd_layouts() {
        let cases = [
            ("", 0),
            ("# only a comment\n", 0),
            ("verified: []\n", 0),
            (
                "verified:\n- version: v0\n  images: {web: a@sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc}\n  verified_at: x\n  host: h\n  commit: c",
                1,
            ),
        ];
        for (old, n) in cases {
            let parsed = parse_verified(old).unwrap();
            assert_eq!(parsed.len(), n, "{old:?}");
            let new = updated_text(old, &parsed, &[entry("v2", 'd', "h")]).unwrap();
            let back = parse_verified(&new).unwrap();
            assert_eq!(back.len(), n + 1, "{old:?} -> {new}");
            assert_eq!(back.last().unwrap(), &entry("v2", 'd', "h"));
            if old.contains("- version") {
                assert!(new.starts_with(old), "{new}");
            }
        }
        assert!(parse_verified("verified: [oops").is_err());
    }

    #[test]
    fn a_soaked_entry_is_published_next_to_the_first() {
        let first = entry("v1", 'a', "staging-1");
        let soaked = VerifiedEntry {
            soaked_at: Some("2026-01-31T07:25:00Z".into()),
            ..first.clone()
        };
        let old = updated_text("", &[], std::slice::from_ref(&first)).unwrap();
        let new = updated_text(
            &old,
            std::slice::from_ref(&first),
            std::slice::from_ref(&soaked),
        )
        .unwrap();
        assert!(new.starts_with(&old), "{new}");
        assert_eq!(
            parse_verified(&new).unwrap(),
            vec![first.clone(), soaked.clone()]
        );
        // Published apart: the first's record does not cover the stamp.
        let key = Key {
            version: first.version.clone(),
            images: first.images.clone(),
            soaked: false,
        };
        assert!(first.key() == key && soaked.key() != key);
        // A record written before soak existed reads as "not soaked".
        let old_record: Vec<Key> =
            serde_json::from_str(r#"[{"version":"v1","images":{}}]"#).unwrap();
        assert!(!old_record[0].soaked);
    }

    #[test]
    fn quarantined_entries_are_written_and_appended_as_verified_ones_are() {
        let q = |version: &str| QuarantinedEntry {
            version: version.into(),
            images: [(
                "web".to_string(),
                format!("ghcr.io/acme/app@sha256:{}", "e".repeat(64)),
            )]
            .into(),
            reason: "smoke failed: http http://127.0.0.1:8080/health: status 404".into(),
            quarantined_at: "2026-01-31T07:00:00Z".into(),
            host: "staging-1".into(),
            commit: "abc".into(),
            signature: Some(
                "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n".into(),
            ),
        };
        let old = updated_text("# failed releases\n", &[], &[q("v3")]).unwrap();
        assert!(
            old.starts_with("# failed releases\nquarantined:\n  - version: v3\n"),
            "{old}"
        );
        let new = updated_text(&old, &[q("v3")], &[q("v4")]).unwrap();
        assert!(new.starts_with(&old), "{new}");
        assert_eq!(
            parse::<QuarantinedEntry>(&new).unwrap(),
            vec![q("v3"), q("v4")]
        );
        // A verified file is not a quarantined one.
        assert!(parse::<QuarantinedEntry>("verified: []\n").is_err());
    }

    #[test]
    fn scalars_read_back_as_strings() {
        for s in [
            "sha-724f892",
            "1.0",
            "true",
            "no",
            "2026-01-31T06:55:00Z",
            "127.0.0.1:5000/app@sha256:ab",
            "12e45",
            "a: b",
            "#x",
            "",
        ] {
            let e = VerifiedEntry {
                soaked_at: None,
                signature: None,
                version: s.into(),
                images: [("web".into(), s.into())].into(),
                verified_at: s.into(),
                host: s.into(),
                commit: s.into(),
            };
            let text = format!("verified:\n{}", render_entry(&e, 2));
            assert_eq!(parse_verified(&text).unwrap(), vec![e], "{s:?}: {text}");
        }
    }

    #[test]
    fn authors_and_urls() {
        assert_eq!(
            parse_author("stackpin <stackpin@web-1>").unwrap(),
            ("stackpin".into(), "stackpin@web-1".into())
        );
        assert!(parse_author("stackpin").is_err());
        assert!(parse_author("<a@b>").is_err());
        assert!(is_local("/srv/desired.git"));
        assert!(is_local("file:///srv/desired.git"));
        assert!(is_local("relative/dir"));
        assert!(!is_local("git@github.com:acme/ds.git"));
        assert!(!is_local("https://github.com/acme/ds.git"));
        assert!(!is_local("git://127.0.0.1:9418/ds.git"));
        let d = jittered(Duration::from_millis(100), 3);
        assert!(d >= Duration::from_millis(400) && d < Duration::from_millis(800));
    }
}
