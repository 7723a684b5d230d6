//! Crash recovery: a journal left behind names an interrupted converge.
//! [`Recovery::decide`] reads where it stopped from the journal phase and
//! the host's files (pure, table-tested); [`recover`] then runs the matching
//! [`Switch`] through the one pipeline — the way kube-runtime's finalizer
//! first computes a state, then matches on it to choose the I/O.
//!
//! The journal is followed forward whenever it can be: a release that was
//! being verified is verified again (not reverted and redeployed), one that
//! had passed smoke is recorded, and only one that cannot be shown healthy
//! is reverted — through the same failure handling as any deploy.

use super::pipeline;
use super::switch::{Op, Switch, Target, version_of};
use crate::host::Host;
use crate::outcome::{Outcome, Reason, StackResult, Stage};
use crate::release;
use crate::state::{Journal, Phase};

/// Where an interrupted converge stopped, and so what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// The link never moved: the target never ran. Nothing to undo; the
    /// next sync deploys again.
    NothingRan,
    /// The target is linked and was being brought up or smoked: verify it
    /// again, and revert only if it fails.
    ResumeVerify,
    /// Smoke had passed: write the record.
    ResumeRecord,
    /// The record is complete (current.json names the target): only the
    /// journal was left.
    Completed,
    /// A revert was under way: revert again (it is idempotent).
    Revert,
}

impl Recovery {
    /// `link`: the release the stack link points at now; `current`: the
    /// release `current/<stack>.json` names.
    pub fn decide(j: &Journal, link: Option<&str>, current: Option<&str>) -> Recovery {
        let linked = link == Some(j.to.as_str());
        match j.phase {
            Phase::Switching if linked => Recovery::ResumeVerify,
            Phase::Switching => Recovery::NothingRan,
            Phase::Verifying => Recovery::ResumeVerify,
            Phase::Recording if current == Some(j.to.as_str()) => Recovery::Completed,
            Phase::Recording => Recovery::ResumeRecord,
            Phase::Reverting if j.from.is_none() => Recovery::ResumeVerify,
            Phase::Reverting => Recovery::Revert,
        }
    }
}

/// Finishes or reverts every interrupted converge found in the journals.
///
/// # Guarantees
/// Idempotent: running it twice is harmless. A journal that cannot be read is
/// reported and left in place for a person, never guessed at.
pub async fn recover(host: &Host<'_>) -> Vec<StackResult> {
    let mut out = Vec::new();
    for name in host.store.journaled_stacks() {
        let _lock = match host.lock(&name).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(stack = %name, "not recovered now: {e}");
                continue;
            }
        };
        match host.store.journal(&name) {
            Ok(Some(j)) => out.push(recover_one(host, j).await),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(stack = %name, "{e}; leaving it for an operator (remove it once the stack is checked)");
                out.push(StackResult::new(
                    &name,
                    Outcome::Failed,
                    Some(Reason::Interrupted),
                    e.to_string(),
                ));
            }
        }
    }
    out
}

/// How long a compose command left running by the interrupted converge
/// may go on finishing its work before it is stopped.
pub const ORPHAN_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Recovers one stack; the caller holds its lock.
pub async fn recover_one(host: &Host<'_>, j: Journal) -> StackResult {
    let name = j.stack.clone();
    // A compose command the crashed run started may still be working on
    // the project (only stackpin's own process died): let it finish, or
    // stop it, before anything else touches the project.
    for line in host.engine.settle_orphans(&name, ORPHAN_WAIT).await {
        tracing::warn!(stack = %name, "{line}");
    }
    let link = release::current(&host.layout, &name).ok().flatten();
    let current = release::read_current(&host.layout, &name)
        .ok()
        .flatten()
        .map(|c| c.release_id);
    if j.op == "restore" && j.phase != Phase::Recording {
        // An interrupted restore may have replaced part of the data: no
        // release is known to fit it (not even the target: the restore may
        // have stopped half-way, also onto the release that ran). Only a
        // restore whose smoke passed (Recording) is finished as usual. The
        // stack stays held (the restore held it before it began) and the
        // operator runs it again.
        if let Err(e) = host.store.clear_journal(&name) {
            tracing::error!(stack = %name, "failed to clear the journal: {e}");
        }
        let msg = format!(
            "interrupted restore to {}: its data may be partly restored; {name} stays held: run `stackpin restore` again (`stackpin history {name}` names the backup)",
            j.to
        );
        tracing::error!(stack = %name, "{msg}");
        let _ = host.record(
            &name,
            &host.env_of(&name).0,
            crate::history::Action::Restore,
            &version_of(host, &name, Some(&j.to)),
            crate::history::Status::Failed,
            &msg,
        );
        return StackResult {
            release: link.clone(),
            ..StackResult::new(&name, Outcome::Failed, Some(Reason::Interrupted), msg)
        };
    }
    let decision = Recovery::decide(&j, link.as_deref(), current.as_deref());
    tracing::warn!(stack = %name, phase = ?j.phase, from = ?j.from, to = %j.to, ?decision, "recovering an interrupted {}", j.op);
    let note = format!("interrupted {} to {} recovered", j.op, j.to);
    let done = |msg: String| {
        if let Err(e) = host.store.clear_journal(&name) {
            tracing::error!(stack = %name, "failed to clear the journal: {e}");
        }
        StackResult {
            release: link.clone(),
            ..StackResult::new(&name, Outcome::Recovered, None, msg)
        }
    };
    let (target, resume_at, op, from) = match decision {
        Recovery::NothingRan => {
            let mut r = done(format!(
                "interrupted {} to {} before the switch; nothing ran",
                j.op, j.to
            ));
            r.reason = Some(Reason::Interrupted);
            return r;
        }
        Recovery::Completed => return done(format!("{note}: it had completed")),
        Recovery::ResumeVerify => (j.to.clone(), Stage::Up, op_of(&j), j.from.clone()),
        Recovery::ResumeRecord => (j.to.clone(), Stage::Record, op_of(&j), j.from.clone()),
        Recovery::Revert => (
            j.from.clone().unwrap_or_default(),
            Stage::Revert,
            Op::Revert,
            Some(j.to.clone()),
        ),
    };
    let meta = match release::read_meta(&host.layout.release_dir(&name, &target)) {
        Ok(m) => m,
        Err(e) => {
            return StackResult::new(
                &name,
                Outcome::Failed,
                Some(Reason::Interrupted),
                format!(
                    "{note} failed: release {target} cannot be read ({e}); the journal is left for an operator"
                ),
            );
        }
    };
    let sw = Switch {
        op,
        stack: name.clone(),
        environment: meta.environment.clone(),
        from,
        target: Target::Kept {
            id: target,
            meta: Box::new(meta),
        },
        notes: vec![note],
        resume_at: Some(resume_at),
        recovering: true,
        journal: Some(j),
        restore: None,
    };
    let mut r = pipeline::converge(host, sw).await;
    if r.outcome == Outcome::RolledBack && decision == Recovery::Revert {
        r.outcome = Outcome::Recovered;
    }
    r
}

fn op_of(j: &Journal) -> Op {
    if j.op == "rollback" {
        Op::Rollback
    } else {
        Op::Deploy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::JOURNAL_FORMAT;

    fn journal(phase: Phase, from: Option<&str>) -> Journal {
        Journal {
            format: JOURNAL_FORMAT,
            stack: "s".into(),
            op: "deploy".into(),
            from: from.map(String::from),
            to: "new".into(),
            fingerprint: "f".into(),
            phase,
            started_at: "t".into(),
        }
    }

    #[test]
    fn decide_table() {
        use Recovery::*;
        let old = Some("old");
        let new = Some("new");
        let cases = [
            (Phase::Switching, old, old, old, NothingRan),
            (Phase::Switching, None, None, None, NothingRan),
            (Phase::Switching, old, new, old, ResumeVerify),
            (Phase::Verifying, old, new, old, ResumeVerify),
            (Phase::Verifying, None, new, None, ResumeVerify),
            (Phase::Recording, old, new, old, ResumeRecord),
            (Phase::Recording, old, new, new, Completed),
            (Phase::Reverting, old, new, old, Revert),
            (Phase::Reverting, old, old, old, Revert),
            (Phase::Reverting, None, new, None, ResumeVerify),
        ];
        for (phase, from, link, current, want) in cases {
            let j = journal(phase, from);
            assert_eq!(
                Recovery::decide(&j, link, current),
                want,
                "{phase:?} from {from:?} link {link:?} current {current:?}"
            );
        }
    }
}
