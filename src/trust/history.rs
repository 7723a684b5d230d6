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

/// Checks `tip` and, when `base` (the last deployed commit) is known, every
/// commit reachable from `tip` but not from `base` that changes `path`.
/// `sets` are the required signer sets (name, keys): each commit must
/// verify against all of them.
///
/// # Errors
/// The refusal, for the operator: which commit, what it changes, why.
pub fn check(
    repo: &git2::Repository,
    tip: &str,
    base: Option<&str>,
    path: &str,
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
    judge(tip).map_err(|why| format!("untrusted commit {}: {why}", short(tip)))?;
    let Some(base) = base else {
        return Ok(());
    };
    let base_oid = match repo.revparse_single(base).and_then(|o| o.peel_to_commit()) {
        Ok(c) => c.id(),
        Err(_) => {
            tracing::warn!(
                base,
                "the deployed commit is not in the repository (history rewritten?): only the desired commit's signature is checked"
            );
            return Ok(());
        }
    };
    let tip_oid = repo
        .revparse_single(tip)
        .and_then(|o| o.peel_to_commit())
        .map(|c| c.id())
        .map_err(|e| format!("commit {tip} not found: {}", e.message()))?;
    let walk = (|| -> Result<Vec<git2::Oid>, git2::Error> {
        let mut w = repo.revwalk()?;
        w.push(tip_oid)?;
        w.hide(base_oid)?;
        w.take(MAX_WALK + 1).collect()
    })()
    .map_err(|e| {
        format!(
            "failed to walk the history since {}: {}",
            short(base),
            e.message()
        )
    })?;
    if walk.len() > MAX_WALK {
        return Err(format!(
            "more than {MAX_WALK} commits since the deployed commit {}: too many to check; have the approver sign a commit on top of a reviewed history",
            short(base)
        ));
    }
    for oid in walk.into_iter().filter(|o| *o != tip_oid) {
        let commit = repo
            .find_commit(oid)
            .map_err(|e| format!("failed to read commit {oid}: {}", e.message()))?;
        if !changes(&commit, path) {
            continue;
        }
        let id = oid.to_string();
        judge(&id).map_err(|why| {
            format!(
                "commit {} ({}) changes {path} since the deployed commit {} and is not trusted: {why}",
                short(&id),
                String::from_utf8_lossy(commit.message_bytes()).lines().next().unwrap_or_default(),
                short(base)
            )
        })?;
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
