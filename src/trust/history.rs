//! Signed history, not only the tip: with a signature policy, the desired
//! commit and every commit since the one a stack last deployed that changes
//! the stack's directory must be signed by the required signer sets. An
//! approver's signed merge does not launder an unsigned commit it brings in:
//! that commit changes the directory and is checked on its own.
//!
//! A commit "changes" a path when the path's tree differs from the same
//! path in every parent (a merge that only takes one side's version changes
//! nothing itself; the side's commits are checked).

use super::{Policy, Verdict, verify_commit};
use chrono::{DateTime, Utc};

/// Most commits walked between the deployed commit and the tip.
pub const MAX_WALK: usize = 5000;

/// Checks every commit reachable from `tip` but not from `base` (the last
/// deployed commit) that changes one of `paths` (the stack's directory and
/// `stackpin.yaml`), the tip included only when it changes one: a commit
/// that changes neither (a marker publish, another stack's bump) needs no
/// signature for this stack. Without a base (a first deploy, or a deployed
/// commit gone after a rewrite), the newest commit that changes one of
/// `paths` is checked: the one that set what would be deployed. `sets` are
/// the required signer sets (name, keys): each commit must verify against
/// all of them.
///
/// # Errors
/// The refusal, for the operator: which commit, what it changes, why.
pub fn check(
    repo: &git2::Repository,
    tip: &str,
    base: Option<&str>,
    paths: &[&str],
    sets: &[(&str, &Policy)],
    now: DateTime<Utc>,
) -> Result<(), String> {
    let short = |s: &str| s[..12.min(s.len())].to_string();
    let judge = |commit: &str| -> Result<(), String> {
        for (name, policy) in sets {
            if let Verdict::Untrusted { why } = verify_commit(repo, commit, policy, now) {
                return Err(format!("{why} (signer set `{name}`)"));
            }
        }
        Ok(())
    };
    let tip_oid = repo
        .revparse_single(tip)
        .and_then(|o| o.peel_to_commit())
        .map(|c| c.id())
        .map_err(|e| format!("commit {tip} not found: {}", e.message()))?;
    let base_oid = match base {
        None => None,
        Some(b) => match repo.revparse_single(b).and_then(|o| o.peel_to_commit()) {
            Ok(c) => Some(c.id()),
            Err(_) => {
                tracing::warn!(
                    base = b,
                    "the deployed commit is not in the repository (history rewritten?): the newest commit that changes the stack is checked"
                );
                None
            }
        },
    };
    let walk = (|| -> Result<Vec<git2::Oid>, git2::Error> {
        let mut w = repo.revwalk()?;
        w.push(tip_oid)?;
        if let Some(b) = base_oid {
            w.hide(b)?;
        }
        w.take(MAX_WALK + 1).collect()
    })()
    .map_err(|e| format!("failed to walk the history: {}", e.message()))?;
    if base_oid.is_some() && walk.len() > MAX_WALK {
        return Err(format!(
            "more than {MAX_WALK} commits since the deployed commit {}: too many to check; have the approver sign a commit on top of a reviewed history",
            short(base.unwrap_or_default())
        ));
    }
    let what = paths.join(" or ");
    for oid in walk {
        let commit = repo
            .find_commit(oid)
            .map_err(|e| format!("failed to read commit {oid}: {}", e.message()))?;
        if !paths.iter().any(|p| changes(&commit, p)) {
            continue;
        }
        let id = oid.to_string();
        judge(&id).map_err(|why| {
            let subject = String::from_utf8_lossy(commit.message_bytes())
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            match base_oid {
                // The desired commit itself: said as it always was.
                _ if oid == tip_oid => format!("untrusted commit {}: {why}", short(&id)),
                Some(_) => format!(
                    "commit {} ({subject}) changes {what} since the deployed commit {} and is not trusted: {why}",
                    short(&id),
                    short(base.unwrap_or_default())
                ),
                None => format!(
                    "untrusted commit {} ({subject}), the newest that changes {what}: {why}",
                    short(&id)
                ),
            }
        })?;
        if base_oid.is_none() {
            // The newest change is what is deployed; older ones are not
            // judged without a base.
            return Ok(());
        }
    }
    if base_oid.is_none() {
        // No change found within the walk's bound: the tip stands for it.
        return judge(tip).map_err(|why| format!("untrusted commit {}: {why}", short(tip)));
    }
    Ok(())
}

/// Whether `commit` changes `path` relative to every parent.
fn changes(commit: &git2::Commit<'_>, path: &str) -> bool {
    let at = |c: &git2::Commit<'_>| -> Option<git2::Oid> {
        let tree = c.tree().ok()?;
        if path.is_empty() {
            return Some(tree.id());
        }
        tree.get_path(std::path::Path::new(path))
            .ok()
            .map(|e| e.id())
    };
    let mine = at(commit);
    let mut parents = commit.parents().peekable();
    if parents.peek().is_none() {
        return mine.is_some();
    }
    parents.all(|p| at(&p) != mine)
}
