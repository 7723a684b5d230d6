//! The production pull request, opened for the approver (issue 34): with
//! `propose: [{from, to, forge, repository, token_file}]` in its config, a
//! host that verifies and soaks releases of `from` pushes a branch bumping
//! `to`'s pins (as `stackpin pin --from-verified` would: the same
//! [`promote::choose_from`] and [`promote::apply`]) and opens a pull
//! request whose body is the evidence ([`promote::proposal`]).
//!
//! # Guarantees
//! - One open pull request per (from, to), on a branch stackpin owns
//!   (`stackpin/promote/<to>`, force-pushed; never the tracked branch): a
//!   newer soaked release moves the branch and rewrites the body.
//! - The branch starts from the tracked branch as published, so it holds
//!   the signed entry the production gate will look for, and its commit
//!   changes exactly `stacks/<to>/stack.yaml`.
//! - Only entries this host verified (and soaked, when a soak is asked)
//!   are proposed; an entry holding a quarantined digest never is.
//! - A release of `from` quarantined here after a proposal closes that
//!   proposal with a comment saying why.
//! - Off the converge path: it runs on the publishing thread after each
//!   publish; whatever fails is logged and tried again at the next run,
//!   and a rate-limited forge is not asked again before its limit resets.
//!   The token is never logged.

use crate::config::{Config, ProposeConfig};
use crate::desired::spec::PromoteFrom;
use crate::desired::{self, DesiredState, GitTree};
use crate::forge::{self, Forge};
use crate::layout::Layout;
use crate::promote::{self, Choice};
use crate::publish::Publisher;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `propose:` cannot be used, or a proposal failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("propose[{index}]: {why}")]
    Config { index: usize, why: String },
    #[error(transparent)]
    Publish(#[from] crate::publish::Error),
    #[error(transparent)]
    Forge(#[from] forge::Error),
    #[error("failed to build the proposal of {to}: {why}")]
    Git { to: String, why: String },
    #[error("failed to {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What one proposal run did for a (from, to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// Nothing to do, and why.
    Nothing(String),
    Opened {
        number: u64,
        url: String,
    },
    Updated {
        number: u64,
        url: String,
    },
    Closed {
        number: u64,
        why: String,
    },
}

/// What this host proposed for a (from, to), under the state dir.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub number: u64,
    pub url: String,
    pub open: bool,
    /// The source's version and images proposed.
    pub version: String,
    pub images: BTreeMap<String, String>,
    /// When (RFC 3339).
    pub proposed_at: String,
    /// The branch's commit.
    pub commit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<String>,
}

struct Rule {
    cfg: ProposeConfig,
    branch: String,
    forge: Box<dyn Forge>,
}

/// Opens and keeps the proposals of one host.
pub struct Proposer {
    rules: Vec<Rule>,
    layout: Layout,
    host: String,
    /// The host's own `verified.soak`: what it stamps, and so the least a
    /// proposal waits for.
    soak: Option<Duration>,
    dir: PathBuf,
    /// A rate-limited forge is not asked again before this (by target).
    waiting: std::sync::Mutex<BTreeMap<String, chrono::DateTime<chrono::Utc>>>,
}

impl std::fmt::Debug for Proposer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proposer")
            .field(
                "rules",
                &self.rules.iter().map(|r| &r.cfg).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Proposer {
    /// The proposer of `propose:`, its entries checked; `None` without any.
    ///
    /// # Errors
    /// An entry names an unknown forge, a repository that is not
    /// `owner/name`, a URL that is not http(s), the same stack twice, or
    /// publishing is off (the proposal's branch starts from the published
    /// markers).
    pub fn from_config(cfg: &Config, soak: Option<Duration>) -> Result<Option<Proposer>, Error> {
        if cfg.file.propose.is_empty() {
            return Ok(None);
        }
        let publishing = cfg.file.verified.as_ref().is_some_and(|v| v.publish);
        let mut rules = Vec::new();
        for (index, p) in cfg.file.propose.iter().enumerate() {
            let bad = |why: String| Error::Config { index, why };
            if !publishing {
                return Err(bad("needs `verified: {publish: true}`: the proposal's branch starts from the markers this host publishes, which the production gate reads".into()));
            }
            for (field, name) in [("from", &p.from), ("to", &p.to)] {
                desired::check_stack_name(name)
                    .map_err(|m| bad(format!("{field}: {name:?}: {m}")))?;
            }
            if p.from == p.to {
                return Err(bad(format!("from and to are both {}", p.from)));
            }
            if rules.iter().any(|r: &Rule| r.cfg.to == p.to) {
                return Err(bad(format!(
                    "to: {} is proposed twice; one pull request per target",
                    p.to
                )));
            }
            if p.forge != "github" {
                return Err(bad(format!(
                    "forge: {:?} is not one stackpin speaks; write `github` (GitHub, or GitHub Enterprise with api_url)",
                    p.forge
                )));
            }
            let (owner, name) = forge::parse_repository(&p.repository).ok_or_else(|| {
                bad(format!(
                    "repository: {:?} is not `owner/name`; write the desired-state repository as on GitHub, e.g. acme/desired-state",
                    p.repository
                ))
            })?;
            let api = p.api_url.as_deref().unwrap_or(forge::GITHUB_API);
            if !(api.starts_with("https://") || api.starts_with("http://")) {
                return Err(bad(format!(
                    "api_url: {api:?} is not an http(s) URL; leave it out for github.com, or write https://HOST/api/v3 for GitHub Enterprise"
                )));
            }
            let branch = p
                .branch
                .clone()
                .unwrap_or_else(|| format!("stackpin/promote/{}", p.to));
            if git2::Branch::name_is_valid(&branch) != Ok(true) {
                return Err(bad(format!(
                    "branch: {branch:?} is not a valid branch name"
                )));
            }
            let gh = forge::GitHub::new(api, &owner, &name, p.token_file.clone())
                .map_err(|e| bad(e.to_string()))?;
            rules.push(Rule {
                cfg: p.clone(),
                branch,
                forge: Box::new(gh),
            });
        }
        Ok(Some(Proposer {
            rules,
            layout: Layout {
                root: cfg.root.clone(),
            },
            host: cfg.host.clone(),
            soak,
            dir: cfg.state_dir.join("propose"),
            waiting: Default::default(),
        }))
    }

    /// One line per entry for `daemon --check-config`.
    pub fn describe(&self) -> String {
        self.rules
            .iter()
            .map(|r| format!("{} -> {} on {}", r.cfg.from, r.cfg.to, r.forge.describe()))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Each token file is readable and not empty (`daemon --check-config`).
    ///
    /// # Errors
    /// The first token file that is not.
    pub fn check_tokens(&self) -> Result<(), String> {
        for r in &self.rules {
            forge::read_token(&r.cfg.token_file, forge::PR_TOKEN_HINT)
                .map_err(|why| format!("{}: {why}", r.cfg.token_file.display()))?;
        }
        Ok(())
    }

    /// Brings every proposal up to date: closes the ones whose release was
    /// quarantined here, then opens or updates one for the newest soaked
    /// release. One result per (from, to).
    pub fn run(&self, publisher: &Publisher) -> Vec<(String, Result<Done, Error>)> {
        self.rules
            .iter()
            .map(|r| {
                let name = format!("{} -> {}", r.cfg.from, r.cfg.to);
                let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(until) = waiting.get(&r.cfg.to).filter(|u| **u > chrono::Utc::now()) {
                    let why = format!(
                        "the forge is rate limited until {}",
                        until.format("%Y-%m-%dT%H:%M:%SZ")
                    );
                    return (name, Ok(Done::Nothing(why)));
                }
                let result = self.run_rule(r, publisher);
                if let Err(Error::Forge(forge::Error::RateLimited { until, .. })) = &result {
                    waiting.insert(r.cfg.to.clone(), *until);
                }
                (name, result)
            })
            .collect()
    }

    fn record_path(&self, from: &str, to: &str) -> PathBuf {
        self.dir.join(format!("{from}--{to}.json"))
    }

    /// What was proposed for the rule (a missing or unreadable record is
    /// none: the forge is asked again).
    pub fn record(&self, from: &str, to: &str) -> Option<Record> {
        std::fs::read(self.record_path(from, to))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    fn save(&self, r: &Rule, rec: &Record) -> Result<(), Error> {
        let path = self.record_path(&r.cfg.from, &r.cfg.to);
        let bytes = serde_json::to_vec_pretty(rec).unwrap_or_default();
        crate::fsutil::write_atomic(&path, &bytes, 0o644).map_err(|source| Error::Io {
            op: "record the proposal in",
            path,
            source,
        })
    }

    fn run_rule(&self, r: &Rule, publisher: &Publisher) -> Result<Done, Error> {
        let (from, to) = (r.cfg.from.as_str(), r.cfg.to.as_str());
        let mut record = self.record(from, to);
        // A proposal whose release failed here since is withdrawn first.
        if let Some(rec) = record.as_mut().filter(|rec| rec.open)
            && let Some(why) = self.quarantined_since(from, rec)
        {
            // Only the pull request still open on the branch: one a person
            // merged or closed meanwhile is theirs (the forge refuses to
            // close a merged one).
            let base = &publisher.settings().branch;
            let still_open = r
                .forge
                .find_open(&r.branch, base)?
                .is_some_and(|pr| pr.number == rec.number);
            rec.open = false;
            rec.closed = Some(why.clone());
            if !still_open {
                self.save(r, rec)?;
                return Ok(Done::Nothing(format!(
                    "#{} is no longer open; {why}",
                    rec.number
                )));
            }
            let comment = format!(
                "stackpin on `{}` closes this proposal: {why}. A newer release that is verified and soaks will be proposed again.",
                self.host
            );
            r.forge.close(rec.number, &comment)?;
            self.save(r, rec)?;
            tracing::info!(from, to, number = rec.number, "proposal closed: {why}");
            return Ok(Done::Closed {
                number: rec.number,
                why,
            });
        }
        // Cheap first: nothing new verified here since the open proposal.
        let newest = crate::verified::read(&self.layout, from)
            .unwrap_or_default()
            .into_iter()
            .rev()
            .find(|e| e.host == self.host && (self.soak.is_none() || e.soaked_at.is_some()));
        let Some(newest) = newest else {
            return Ok(Done::Nothing(format!(
                "no release of {from} verified{} here yet",
                if self.soak.is_some() {
                    " and soaked"
                } else {
                    ""
                }
            )));
        };
        if let Some(rec) = record.as_ref().filter(|rec| rec.open)
            && rec.version == newest.version
            && rec.images == newest.images
        {
            return Ok(Done::Nothing(format!(
                "#{} proposes {} {} already",
                rec.number, from, rec.version
            )));
        }
        let (repo, head) = publisher.base()?;
        let base_path = publisher.settings().path.clone();
        let git = |e: git2::Error| Error::Git {
            to: to.to_string(),
            why: e.message().to_string(),
        };
        let state = load(&repo, head, &base_path).map_err(git)?;
        let Some(target) = state.stacks.get(to) else {
            return Ok(Done::Nothing(format!(
                "{to} is not a valid stack of {} at {head}",
                publisher.settings().branch
            )));
        };
        let promote = self.gate_of(target, from);
        let entries: Vec<_> = state
            .verified
            .get(from)
            .map(|v| v.iter().filter(|e| e.host == self.host).cloned().collect())
            .unwrap_or_default();
        let choice = match promote::choose_from(&state, target, promote, &entries, &[], false) {
            Ok(c) => c,
            Err(why) => return Ok(Done::Nothing(why.0)),
        };
        if let Some(rec) = record.as_ref().filter(|rec| rec.open)
            && rec.version == choice.entry.version
            && rec.images == choice.entry.images
        {
            return Ok(Done::Nothing(format!(
                "#{} proposes {} {} already",
                rec.number, from, rec.version
            )));
        }
        let rel = stack_file(&base_path, to);
        let head_commit = repo.find_commit(head).map_err(git)?;
        let head_tree = head_commit.tree().map_err(git)?;
        let text = head_tree
            .get_path(Path::new(&rel))
            .and_then(|e| repo.find_blob(e.id()))
            .map(|b| String::from_utf8_lossy(b.content()).into_owned())
            .map_err(git)?;
        let (edited, changes) = promote::apply(&text, &choice.pins, Some(&choice.entry.version))
            .map_err(|why| Error::Git {
                to: to.to_string(),
                why: format!("{rel}: {why}"),
            })?;
        if edited == text {
            return Ok(Done::Nothing(format!(
                "{to} pins {from} {} on {} already",
                choice.entry.version,
                publisher.settings().branch
            )));
        }
        let blob = repo.blob(edited.as_bytes()).map_err(git)?;
        let tree_id = git2::build::TreeUpdateBuilder::new()
            .upsert(rel.as_str(), blob, git2::FileMode::Blob)
            .create_updated(&repo, &head_tree)
            .map_err(git)?;
        let tree = repo.find_tree(tree_id).map_err(git)?;
        let s = publisher.settings();
        let sig = git2::Signature::now(&s.author_name, &s.author_email).map_err(git)?;
        let message = promote::message(
            to,
            &changes,
            Some(&choice.entry.version),
            Some((from, &choice.entry)),
        );
        let commit = repo
            .commit(None, &sig, &sig, &message, &tree, &[&head_commit])
            .map_err(git)?;
        publisher.force_branch(&repo, commit, &r.branch)?;
        let after = load(&repo, commit, &base_path).map_err(git)?;
        let (title, body) = self.body(&choice, to, target, &changes, &after);
        let base = &s.branch;
        let (pr, opened) = match r.forge.find_open(&r.branch, base)? {
            Some(pr) => (r.forge.update(pr.number, &title, &body)?, false),
            None => (r.forge.create(&r.branch, base, &title, &body)?, true),
        };
        self.save(
            r,
            &Record {
                number: pr.number,
                url: pr.html_url.clone(),
                open: true,
                version: choice.entry.version.clone(),
                images: choice.entry.images.clone(),
                proposed_at: crate::history::now_rfc3339(),
                commit: commit.to_string(),
                closed: None,
            },
        )?;
        let (number, url) = (pr.number, pr.html_url);
        tracing::info!(from, to, number, url = %url, version = %choice.entry.version, "proposed");
        Ok(if opened {
            Done::Opened { number, url }
        } else {
            Done::Updated { number, url }
        })
    }

    /// The gate a proposal must pass: the target's `promote_from` as the
    /// desired state says it (or `from`, same services), lengthened by the
    /// soak this host stamps.
    fn gate_of(&self, target: &desired::Stack, from: &str) -> PromoteFrom {
        let mut p = target
            .spec
            .promote_from
            .clone()
            .filter(|p| p.stack == from)
            .unwrap_or_else(|| PromoteFrom::stack(from));
        p.soak = p.soak.max(self.soak);
        p
    }

    /// The evidence, from this host's history and the desired state after
    /// the edit.
    fn body(
        &self,
        choice: &Choice,
        to: &str,
        before: &desired::Stack,
        changes: &[promote::Change],
        after: &DesiredState,
    ) -> (String, String) {
        let history = crate::history::read(&self.layout.history()).unwrap_or_default();
        let deploy_note = history
            .for_stack(&choice.source)
            .rev()
            .find(|e| {
                e.is(
                    crate::history::Action::Deploy,
                    crate::history::Status::Success,
                ) && e.version == choice.entry.version
            })
            .map(|e| e.notes.clone());
        let after_stack = after.stacks.get(to);
        let verdict = match after_stack {
            Some(s) => {
                let promote = s
                    .spec
                    .promote_from
                    .clone()
                    .unwrap_or_else(|| choice.promote.clone());
                let entries = after
                    .verified
                    .get(&promote.stack)
                    .cloned()
                    .unwrap_or_default();
                crate::gate::promotion(Some(&promote), &s.pins, &entries, None)
            }
            None => crate::gate::Verdict::Refused {
                source: choice.source.clone(),
                missing: vec![format!("{to} does not read back after the edit")],
            },
        };
        promote::proposal(&promote::Evidence {
            host: &self.host,
            choice,
            target: to,
            old_version: before.spec.version.as_deref(),
            changes,
            deploy_note: deploy_note.as_deref(),
            after: after_stack,
            verdict: &verdict,
        })
    }

    /// Why the proposed release counts no more: a quarantined entry of
    /// `from` recorded here after the proposal that holds one of its
    /// digests.
    fn quarantined_since(&self, from: &str, rec: &Record) -> Option<String> {
        let digest = promote::digest;
        let proposed: Vec<String> = rec.images.values().filter_map(|p| digest(p)).collect();
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
        crate::verified::read_quarantined(&self.layout, from)
            .unwrap_or_default()
            .into_iter()
            .rev()
            .find(|q| {
                at(&q.quarantined_at) >= at(&rec.proposed_at)
                    && q.images
                        .values()
                        .filter_map(|p| digest(p))
                        .any(|d| proposed.contains(&d))
            })
            .map(|q| {
                format!(
                    "{from} {} holds a digest of {}, and failed on {} at {} ({})",
                    q.version, rec.version, q.host, q.quarantined_at, q.reason
                )
            })
    }
}

/// `stacks/<stack>/stack.yaml` under the repository's desired-state path.
fn stack_file(base: &str, stack: &str) -> String {
    let base = base.trim_matches('/').trim_start_matches("./");
    if base.is_empty() || base == "." {
        format!("stacks/{stack}/stack.yaml")
    } else {
        format!("{base}/stacks/{stack}/stack.yaml")
    }
}

/// The desired state at `commit` of `repo`.
fn load(
    repo: &git2::Repository,
    commit: git2::Oid,
    base: &str,
) -> Result<DesiredState, git2::Error> {
    let path = if repo.is_bare() {
        repo.path().to_path_buf()
    } else {
        repo.workdir().unwrap_or(repo.path()).to_path_buf()
    };
    let tree = GitTree::open(&path, &commit.to_string(), base)?;
    Ok(desired::load(&tree))
}

/// Runs the proposer after each publish (the publishing thread's hook).
pub fn after_publish(p: Proposer) -> Box<dyn Fn(&Publisher) + Send> {
    Box::new(move |publisher| {
        for (name, r) in p.run(publisher) {
            match r {
                Ok(Done::Nothing(why)) => tracing::debug!(proposal = %name, "{why}"),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(proposal = %name, "{e}; tried again at the next run")
                }
            }
        }
    })
}
