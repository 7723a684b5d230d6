//! The one converge pipeline. Every way stackpin changes what a stack runs —
//! a deploy, a heal, the auto-revert after a failed smoke, a manual rollback
//! and the recovery of an interrupted converge — is a [`Switch`] run by
//! [`run`] through the stages its [`Op`] lists, each stage one function in
//! [`super::stage`]. What happens after a failure is decided by the pure
//! [`after_failure`]; [`converge`] carries that decision out (revert, leave,
//! or retry later) and records the outcome.
//!
//! # Guarantees
//! - Nothing before [`Stage::Switch`] changes what runs: a failed preflight,
//!   backup, release-create, pull or journal write leaves the old release and
//!   its containers untouched (a release made for nothing is removed).
//! - The journal is written before the switch and cleared only once the
//!   outcome is recorded; while it exists, the next run's recovery finishes
//!   or reverts the converge it describes.

use super::error::Error;
use super::stage;
use super::switch::{Failed, Landed, Op, Run, Switch, Target, version_of};
use crate::events::Event;
use crate::history::{Action, Status};
use crate::host::{Host, Stages};
use crate::outcome::{Outcome, Reason, StackResult, Stage};
use crate::release;
use crate::state::{Phase, Quarantine};

/// Runs the stages of `sw`, stopping at the first that fails.
///
/// # Guarantees
/// Each stage is reported to the host's reporter as it ends; the journal
/// phase follows the stages (see [`super::stage`]).
pub async fn run(host: &Host<'_>, sw: &Switch) -> Result<Landed, Failed> {
    let mut r = Run {
        sw,
        id: None,
        meta: None,
        dir: None,
        created: false,
        journal: sw.journal.clone(),
        notes: sw.notes.clone(),
        stages: Stages::new(&sw.stack, host.reporter),
        recreated: None,
    };
    if let Target::Kept { id, meta } = &sw.target {
        r.dir = Some(host.layout.release_dir(&sw.stack, id));
        r.id = Some(id.clone());
        r.meta = Some((**meta).clone());
    }
    for s in sw.stages() {
        let t = std::time::Instant::now();
        match stage::run(host, &mut r, s).await {
            Ok(Some(detail)) => r.stages.record(s, t, true, detail),
            Ok(None) => {}
            Err(error) => {
                let output = error.command_output().map(|o| host.engine.mask(o));
                r.stages.record_with_output(
                    s,
                    t,
                    false,
                    host.engine.mask(&error.to_string()),
                    output,
                );
                return Err(Failed {
                    stage: s,
                    error,
                    release: r.id,
                    meta: r.meta,
                    created: r.created,
                    stages: r.stages.into_list(),
                    notes: r.notes,
                    journal: r.journal,
                });
            }
        }
        if let Some(p) = sw.op.fault_point(s) {
            crate::fault::point(p);
        }
    }
    Ok(Landed {
        release: r.id.unwrap_or_default(),
        meta: r.meta.expect("every op creates or names its release"),
        stages: r.stages.into_list(),
        notes: r.notes,
        journal: r.journal,
    })
}

/// What is known when a stage fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureFacts {
    pub op: Op,
    pub stage: Stage,
    /// Whether the engine answers now.
    pub engine_reachable: bool,
    /// Whether a previous complete release exists to go back to.
    pub has_previous: bool,
    /// The journal phase at the failure (`None`: no journal).
    pub phase: Option<Phase>,
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The host runs what it ran: report the failure, clear the journal.
    Leave,
    /// Switch back to the previous release, up it and smoke it; quarantine
    /// the failed one (a deploy's).
    Revert,
    /// A first deploy that failed after its switch: stop it and remove the
    /// link, so that no release that did not pass stays linked.
    StopFirstDeploy,
    /// Not the release's fault (the engine is gone, a record could not be
    /// written): keep the journal, so the next run finishes or reverts it.
    RetryLater,
}

/// The decision after a failure. Pure; see the table test.
pub fn after_failure(f: FailureFacts) -> Next {
    // A restore has stopped the stack and may have replaced its data:
    // nothing before it fits that data. It stays where it failed, held,
    // for the operator (the history and the result say what is left).
    if f.op == Op::Restore {
        return Next::Leave;
    }
    let after_switch = f.stage.is_after_switch();
    if after_switch && !f.engine_reachable {
        return Next::RetryLater;
    }
    match (f.op, f.stage) {
        // Before the switch nothing changed; a switch that failed did not
        // move the link (rename is atomic).
        (_, s) if !after_switch => {
            let _ = s;
            Next::Leave
        }
        // Smoke had passed: the record is retried, the release is good.
        (_, Stage::Record) => Next::RetryLater,
        _ if f.phase == Some(Phase::Recording) => Next::RetryLater,
        // The revert itself failed: nothing is left to go back to.
        (Op::Revert, _) => Next::Leave,
        // Healing runs the same release: there is nothing else to run.
        (Op::Heal, _) => Next::Leave,
        (Op::Deploy | Op::Rollback, _) if f.has_previous => Next::Revert,
        (Op::Deploy | Op::Rollback, _) => Next::StopFirstDeploy,
        (Op::Restore, _) => Next::Leave,
    }
}

/// Runs `sw` and, when it fails, what [`after_failure`] says; records the
/// outcome (history, events, quarantine) and clears the journal when the
/// converge is over.
pub async fn converge(host: &Host<'_>, sw: Switch) -> StackResult {
    let failed = match run(host, &sw).await {
        Ok(l) => return landed(host, &sw, l),
        Err(f) => f,
    };
    let reachable = !failed.stage.is_after_switch() || host.engine.ping().await.is_ok();
    let has_previous = sw
        .from
        .as_deref()
        .is_some_and(|id| release::is_complete(&host.layout.release_dir(&sw.stack, id)));
    let next = after_failure(FailureFacts {
        op: sw.op,
        stage: failed.stage,
        engine_reachable: reachable,
        has_previous,
        phase: failed.journal.as_ref().map(|j| j.phase),
    });
    let why = host.engine.mask(&failed.error.to_string());
    tracing::warn!(stack = %sw.stack, op = sw.op.as_str(), stage = %failed.stage, next = ?next, "{why}");
    match next {
        Next::Leave => leave(host, &sw, failed, why),
        Next::RetryLater => retry_later(host, &sw, failed, why, reachable),
        Next::StopFirstDeploy => stop_first_deploy(host, &sw, failed, why).await,
        Next::Revert => revert(host, &sw, failed, why).await,
    }
}

fn result(sw: &Switch, outcome: Outcome, reason: Option<Reason>, message: String) -> StackResult {
    StackResult {
        version: Some(sw.version()),
        ..StackResult::new(&sw.stack, outcome, reason, message)
    }
}

fn clear_journal(host: &Host<'_>, stack: &str) {
    if let Err(e) = host.store.clear_journal(stack) {
        tracing::error!(stack, "failed to clear the journal: {e}");
    }
}

fn landed(host: &Host<'_>, sw: &Switch, l: Landed) -> StackResult {
    clear_journal(host, &sw.stack);
    let (outcome, message) = match (sw.op, sw.recovering) {
        (Op::Revert, _) => (
            Outcome::RolledBack,
            format!("{}; rolled back to {}", join(&sw.notes), l.meta.version),
        ),
        (_, true) => (
            Outcome::Recovered,
            format!("{}; {} runs", join(&sw.notes), l.meta.version),
        ),
        (Op::Deploy, false) => (Outcome::Deployed, format!("deployed {}", l.meta.version)),
        (Op::Heal, false) => (Outcome::Healed, format!("healed ({})", join(&sw.notes))),
        (Op::Restore, false) => (
            Outcome::Deployed,
            format!(
                "restored {} (release {}) with its data: {}; held: `stackpin resume {}` lets git win again",
                l.meta.version,
                l.release,
                sw.restore
                    .as_ref()
                    .map(|b| b.id.as_str())
                    .map(|id| format!("backup {id}"))
                    .unwrap_or_default(),
                sw.stack
            ),
        ),
        (Op::Rollback, false) => (
            Outcome::Deployed,
            format!(
                "rolled back to {} (release {}) from {}; held: `stackpin resume {}` lets git win again",
                l.meta.version,
                l.release,
                version_of(host, &sw.stack, sw.from.as_deref()),
                sw.stack
            ),
        ),
    };
    let reason = (outcome == Outcome::RolledBack).then_some(Reason::RolledBack);
    StackResult {
        version: Some(l.meta.version.clone()),
        release: Some(l.release),
        stages: l.stages,
        ..StackResult::new(&sw.stack, outcome, reason, message)
    }
}

fn join(notes: &[String]) -> String {
    notes
        .iter()
        .filter(|n| !n.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join("; ")
}

/// The history line and event of a switch that failed and left the host as
/// it was (or, for a revert, as the failure left it).
fn record_failure(host: &Host<'_>, sw: &Switch, version: &str, why: &str) {
    let mut notes = vec![why.to_string()];
    notes.extend(sw.notes.iter().cloned());
    let _ = host.record(
        &sw.stack,
        &sw.environment,
        sw.op.action(),
        version,
        Status::Failed,
        &join(&notes),
    );
    host.emit(Event::DeployFailed {
        stack: sw.stack.clone(),
        environment: sw.environment.clone(),
        version: version.to_string(),
        reason: why.to_string(),
    });
}

fn leave(host: &Host<'_>, sw: &Switch, f: Failed, why: String) -> StackResult {
    if f.created
        && !f.stage.is_after_switch()
        && let Some(id) = &f.release
    {
        let dir = host.layout.release_dir(&sw.stack, id);
        if let Err(e) = crate::fsutil::remove_tree(&dir) {
            tracing::warn!(stack = %sw.stack, "failed to remove the unused release {id}: {e}");
        }
    }
    clear_journal(host, &sw.stack);
    let version = match sw.op {
        Op::Revert => f
            .meta
            .as_ref()
            .map(|m| m.version.clone())
            .unwrap_or_default(),
        _ => sw.version(),
    };
    if matches!(f.error, Error::Refused(_)) {
        // Nothing ran: the deploy is blocked, as when the plan refuses it
        // (the caller audits it once per refusal).
        return StackResult {
            release: sw.from.clone(),
            stages: f.stages,
            ..result(sw, Outcome::Blocked, Some(Reason::InvalidSpec), why)
        };
    }
    let why = match (&sw.restore, sw.op) {
        (Some(b), Op::Restore) => format!(
            "{why}; {stack} stays held, its containers may be stopped and its data partly restored: fix the cause and run `stackpin restore {stack} {id}` again",
            stack = sw.stack,
            id = b.id
        ),
        _ => why,
    };
    record_failure(host, sw, &version, &why);
    let reason = match sw.op {
        Op::Revert => Reason::RevertFailed,
        _ => f.stage.reason(),
    };
    let running = match sw.op {
        Op::Revert | Op::Heal => f.release.clone(),
        Op::Restore if f.stage.is_after_switch() => f.release.clone(),
        _ => sw.from.clone(),
    };
    StackResult {
        release: running,
        stages: f.stages,
        ..result(sw, Outcome::Failed, Some(reason), why)
    }
}

fn retry_later(
    host: &Host<'_>,
    sw: &Switch,
    f: Failed,
    why: String,
    reachable: bool,
) -> StackResult {
    let (reason, msg) = if reachable {
        (
            f.stage.reason(),
            format!("{why}; the converge is kept in the journal and finished at the next run"),
        )
    } else {
        (
            Reason::EngineUnavailable,
            format!(
                "{why}; the Docker engine does not answer: the converge is finished or reverted when it does"
            ),
        )
    };
    record_failure(host, sw, &sw.version(), &msg);
    StackResult {
        release: f.release,
        stages: f.stages,
        ..result(sw, Outcome::Failed, Some(reason), msg)
    }
}

/// Quarantines the failed fingerprint of a deploy: it is not retried until
/// the desired state changes or an operator forces it.
fn quarantine(host: &Host<'_>, sw: &Switch, f: &Failed, why: &str) -> Option<String> {
    if sw.op != Op::Deploy {
        return None;
    }
    let meta = f.meta.as_ref()?;
    let q = Quarantine {
        fingerprint: meta.fingerprint.clone(),
        release_id: meta.release_id.clone(),
        version: meta.version.clone(),
        reason: why.to_string(),
        at: crate::host::now_rfc3339(),
    };
    host.emit(Event::Quarantined {
        stack: sw.stack.clone(),
        environment: sw.environment.clone(),
        version: meta.version.clone(),
        fingerprint: meta.fingerprint.clone(),
    });
    // The record others read (published to `quarantined/<stack>.yaml`):
    // its loss costs no safety here, only a warning elsewhere.
    if let Err(e) = crate::verified::record_quarantined(
        &host.layout,
        &host.name,
        &sw.stack,
        meta,
        why,
        host.policy.signing_key.as_ref(),
    ) {
        tracing::warn!(stack = %sw.stack, "the quarantined entry was not recorded: {e}");
    }
    let Err(e) = host.store.set_quarantine(&sw.stack, &q) else {
        return None;
    };
    // Without its quarantine the failed release would be retried every run:
    // hold the stack instead, so a person looks first.
    let hold = crate::state::Hold {
        reason: format!(
            "release {} failed ({why}) and its quarantine could not be written ({e}); `stackpin resume {}` once the state dir is fixed",
            meta.release_id, sw.stack
        ),
        at: crate::host::now_rfc3339(),
        release_id: None,
    };
    Some(match host.store.set_hold(&sw.stack, &hold) {
        Ok(()) => format!("the quarantine could not be written ({e}): the stack is held instead"),
        Err(h) => format!(
            "neither the quarantine ({e}) nor a hold ({h}) could be written: the release may be retried"
        ),
    })
}

async fn stop_first_deploy(host: &Host<'_>, sw: &Switch, f: Failed, why: String) -> StackResult {
    // Said where the operator looks (history, status through the
    // quarantine, the notification): nothing of the stack runs now.
    let why = format!(
        "{why}; first deploy left stopped: {stack} had no earlier release to go back to, so nothing of it runs now; fix the cause and push a new commit, or retry this release with `stackpin sync {stack} --force`",
        stack = sw.stack
    );
    let q = quarantine(host, sw, &f, &why);
    let mut stages = Stages::new(&sw.stack, host.reporter);
    let t = std::time::Instant::now();
    let stopped = stage::stop_and_unlink(host, &sw.stack, f.meta.as_ref()).await;
    stages.record(
        Stage::Revert,
        t,
        stopped.is_empty(),
        "first deploy failed: stopped, no previous release",
    );
    clear_journal(host, &sw.stack);
    let mut note = why;
    if !stopped.is_empty() {
        note.push_str(&format!(" (stopping it failed: {})", stopped.join("; ")));
    }
    if let Some(q) = q {
        note.push_str(&format!("; {q}"));
    }
    let _ = host.record(
        &sw.stack,
        &sw.environment,
        Action::Rollback,
        "-",
        Status::Failed,
        &note,
    );
    host.emit(Event::DeployFailed {
        stack: sw.stack.clone(),
        environment: sw.environment.clone(),
        version: sw.version(),
        reason: note.clone(),
    });
    let mut all = f.stages;
    all.extend(stages.into_list());
    StackResult {
        stages: all,
        ..result(sw, Outcome::Failed, Some(f.stage.reason()), note)
    }
}

async fn revert(host: &Host<'_>, sw: &Switch, f: Failed, why: String) -> StackResult {
    let q = quarantine(host, sw, &f, &why);
    let mut why_all = vec![why.clone()];
    why_all.extend(q);
    // The failed switch is in the history before the revert's own line.
    let _ = host.record(
        &sw.stack,
        &sw.environment,
        sw.op.action(),
        &sw.version(),
        Status::Failed,
        &join(&[why_all.clone(), sw.notes.clone()].concat()),
    );
    let prev = sw
        .from
        .clone()
        .expect("after_failure reverts only with a previous release");
    let prev_dir = host.layout.release_dir(&sw.stack, &prev);
    let meta = match release::read_meta(&prev_dir) {
        Ok(m) => m,
        Err(e) => {
            clear_journal(host, &sw.stack);
            let msg = format!("{why}; the previous release {prev} cannot be read: {e}");
            return StackResult {
                stages: f.stages,
                ..result(sw, Outcome::Failed, Some(Reason::RevertFailed), msg)
            };
        }
    };
    let mut journal = f.journal.clone();
    if let Some(j) = &mut journal {
        j.phase = Phase::Reverting;
        if let Err(e) = host.store.write_journal(j) {
            tracing::error!(stack = %sw.stack, "failed to write the journal: {e}");
        }
    }
    let failed_id = f.release.clone().unwrap_or_default();
    let prev_version = meta.version.clone();
    let back = Switch {
        op: Op::Revert,
        stack: sw.stack.clone(),
        environment: sw.environment.clone(),
        from: Some(failed_id.clone()),
        target: Target::Kept {
            id: prev,
            meta: Box::new(meta),
        },
        notes: vec![format!("{} (release {failed_id})", why_all.join("; "))],
        resume_at: None,
        recovering: false,
        journal,
        restore: None,
    };
    let mut r = Box::pin(converge(host, back)).await;
    let mut stages = f.stages;
    stages.append(&mut r.stages);
    r.stages = stages;
    if sw.op == Op::Rollback {
        r.message = if r.outcome == Outcome::RolledBack {
            format!(
                "rollback to {} failed ({why}); {prev_version} runs again",
                sw.version()
            )
        } else {
            format!("rollback to {} failed ({why}); {}", sw.version(), r.message)
        };
    }
    r.version = Some(sw.version());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_failure_table() {
        use Next::{Leave, RetryLater, StopFirstDeploy};
        use Op::{Deploy, Heal, Rollback};
        let (revert, op_revert) = (Next::Revert, Op::Revert);
        let f = |op, stage, engine_reachable, has_previous, phase| FailureFacts {
            op,
            stage,
            engine_reachable,
            has_previous,
            phase,
        };
        let v = Some(Phase::Verifying);
        let cases = [
            // Before the switch nothing changed, engine or not.
            (f(Deploy, Stage::Preflight, true, true, None), Leave),
            (f(Deploy, Stage::Backup, true, true, None), Leave),
            (f(Deploy, Stage::Release, true, false, None), Leave),
            (f(Deploy, Stage::Pull, false, true, None), Leave),
            (f(Deploy, Stage::Journal, true, true, None), Leave),
            (
                f(Deploy, Stage::Switch, true, true, Some(Phase::Switching)),
                Leave,
            ),
            (f(Rollback, Stage::Pull, true, true, None), Leave),
            // After it: revert, stop a first deploy, or wait for the engine.
            (f(Deploy, Stage::Up, true, true, v), revert),
            (f(Deploy, Stage::Smoke, true, true, v), revert),
            (f(Deploy, Stage::Smoke, true, false, v), StopFirstDeploy),
            (f(Deploy, Stage::Up, false, true, v), RetryLater),
            (f(Deploy, Stage::Smoke, false, false, v), RetryLater),
            (f(Rollback, Stage::Smoke, true, true, v), revert),
            // Smoke had passed: never revert a good release.
            (
                f(Deploy, Stage::Record, true, true, Some(Phase::Recording)),
                RetryLater,
            ),
            (
                f(Deploy, Stage::Up, true, true, Some(Phase::Recording)),
                RetryLater,
            ),
            // A heal or a revert has nothing else to go to.
            (f(Heal, Stage::Up, true, true, None), Leave),
            (f(Heal, Stage::Smoke, true, true, None), Leave),
            (f(Heal, Stage::Smoke, false, true, None), RetryLater),
            (
                f(op_revert, Stage::Revert, true, true, Some(Phase::Reverting)),
                Leave,
            ),
            (
                f(op_revert, Stage::Smoke, true, true, Some(Phase::Reverting)),
                Leave,
            ),
            (
                f(op_revert, Stage::Up, false, true, Some(Phase::Reverting)),
                RetryLater,
            ),
        ];
        for (facts, want) in cases {
            assert_eq!(after_failure(facts), want, "{facts:?}");
        }
    }

    #[test]
    fn ops_list_their_stages_and_resume_inside_them() {
        assert_eq!(Op::Deploy.stages().first(), Some(&Stage::Preflight));
        assert_eq!(Op::Deploy.stages().last(), Some(&Stage::Record));
        for op in [Op::Deploy, Op::Heal, Op::Rollback, Op::Revert] {
            let s = op.stages();
            assert!(
                s.windows(2).all(|w| w[0] < w[1] || w[0] == Stage::Revert),
                "{op:?}"
            );
            assert!(
                s.contains(&Stage::Smoke) && s.contains(&Stage::Up),
                "{op:?}"
            );
        }
    }
}
