//! Converging the host to the desired state (SPEC §3). [`sync`] is the loop
//! over stacks: recovery first, then every selected stack in `depends_on` /
//! `promote_from` order, at most `concurrency` at once, each planned and
//! executed under its lock by [`sync_stack`]. What a stack's plan item asks
//! for becomes a [`Switch`] run by the one pipeline.
//!
//! The layout: [`inputs`] gathers what the pure plan needs; [`switch`] is
//! what a converge is and how it ends; [`pipeline`] runs a switch's stages
//! and decides what follows a failure; [`stage`] is one function per stage
//! (below the pipeline: it imports [`switch`], never [`pipeline`]);
//! [`recover`] turns a journal into a switch. Locks, holds and the stack-name
//! check are the host's ([`crate::host`]). Manual rollback
//! (`crate::rollback`), backups and status sit on top of this module and of
//! [`crate::host`], never the other way round — except that the backup stage
//! calls [`crate::backup::run`].
//!
//! # Guarantees
//! - One converge per stack at a time: every stage runs under the stack's
//!   file lock, shared with every other stackpin process on the host.
//! - Nothing before the switch changes what runs (see [`pipeline`]).
//! - A journal is written before the switch and cleared after the outcome is
//!   recorded; [`recover`] finishes or reverts an interrupted converge, so
//!   each stack ends on a complete release that passed smoke.

pub mod error;
pub mod inputs;
pub mod pipeline;
pub mod recover;
pub mod stage;
pub mod switch;

pub use error::Error;
pub use inputs::{PlanInputs, PlanOptions, render, render_reusing};
pub use recover::recover;
pub use switch::{Op, Switch, Target};

use crate::desired::{DesiredState, Stack};
use crate::events::Event;
use crate::history::{Action, Status};
use crate::host::{Host, Stages};
use crate::observed::StackObservation;
use crate::outcome::{Health, Outcome, Reason, StackResult, Stage};
use crate::plan::{self, Item, Skip};
use crate::release::{self, Rendered};
use std::collections::BTreeMap;
use std::time::Instant;

/// What one run converges and how.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    pub force: bool,
    pub dry_run: bool,
    pub break_glass: Option<String>,
    /// Who accepts a rewritten history for the stacks of this run.
    pub accept_rewrite: Option<String>,
    /// Limit to these stacks (empty: all).
    pub only: Vec<String>,
    /// Remove stacks that left the desired state; `None`: `stackpin.yaml`.
    pub prune: Option<bool>,
    /// Stacks converging at once (at least 1).
    pub concurrency: usize,
}

impl SyncOptions {
    fn plan_options(&self) -> PlanOptions {
        PlanOptions {
            force: self.force,
            break_glass: self.break_glass.clone(),
            accept_rewrite: self.accept_rewrite.clone(),
            prune: self.prune,
        }
    }
}

/// One run: each stack's result, with the plan item it acted on (what the
/// daemon publishes as status without planning again).
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Recoveries first, then stacks in converge order.
    pub results: Vec<StackResult>,
    /// The plan item of each stack that was planned, by stack.
    pub items: BTreeMap<String, Item>,
    /// The health of what each stack ran before this run acted on it, from
    /// the members its plan read (see `status::health_of`).
    pub seen: BTreeMap<String, Health>,
}

impl SyncReport {
    pub fn any_failure(&self) -> bool {
        self.results.iter().any(|r| r.outcome.is_failure())
    }
}

/// Converges every selected stack of `desired`: a stack starts once every
/// stack it depends on (`depends_on`, `promote_from`) has finished, and at
/// most `opts.concurrency` converge at once. Each stack is planned and
/// executed under its lock, so a plan is never acted on after another process
/// changed the stack.
pub async fn sync(host: &Host<'_>, desired: &DesiredState, opts: &SyncOptions) -> SyncReport {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let mut report = SyncReport {
        results: if opts.dry_run {
            Vec::new()
        } else {
            recover(host).await
        },
        ..Default::default()
    };
    let gates = inputs::judge(host, desired);
    let names: Vec<String> = inputs::all_names(host, desired)
        .into_iter()
        .filter(|n| opts.only.is_empty() || opts.only.contains(n))
        .collect();
    let preds = |n: &str| -> Vec<String> {
        desired
            .stacks
            .get(n)
            .map(|s| {
                s.predecessors()
                    .filter(|p| names.iter().any(|x| x == p))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let limit = opts.concurrency.max(1);
    let mut pending: Vec<String> = names.clone();
    let mut done: Vec<String> = Vec::new();
    let mut running = FuturesUnordered::new();
    let mut by_name: BTreeMap<String, (StackResult, Option<Item>, Option<Health>)> =
        BTreeMap::new();
    loop {
        while running.len() < limit {
            let Some(pos) = pending
                .iter()
                .position(|n| preds(n).iter().all(|p| done.contains(p)))
            else {
                break;
            };
            let n = pending.remove(pos);
            let gates = gates.clone();
            running.push(async move {
                let r = sync_stack(host, desired, &n, opts, gates).await;
                (n, r)
            });
        }
        match running.next().await {
            Some((n, r)) => {
                done.push(n.clone());
                by_name.insert(n, r);
            }
            None => break,
        }
    }
    for n in names {
        if let Some((r, item, seen)) = by_name.remove(&n) {
            report.seen.extend(seen.map(|h| (n.clone(), h)));
            report.items.extend(item.map(|i| (n, i)));
            report.results.push(r);
        }
    }
    report
}

/// Plans and executes one stack under its lock; the plan item it acted on
/// and the health of what ran before it acted (from the members the plan
/// read).
pub async fn sync_stack(
    host: &Host<'_>,
    desired: &DesiredState,
    name: &str,
    opts: &SyncOptions,
    gates: BTreeMap<String, crate::plan::Gate>,
) -> (StackResult, Option<Item>, Option<Health>) {
    let _lock = if opts.dry_run {
        None
    } else {
        match host.lock(name).await {
            Ok(l) => Some(l),
            Err(e) => {
                return (
                    StackResult::new(
                        name,
                        Outcome::Skipped,
                        Some(Reason::LockFailed),
                        format!("the stack's lock could not be taken: {e}"),
                    ),
                    None,
                    None,
                );
            }
        }
    };
    // A journal that cannot be read means an interrupted converge nobody
    // understands: leave the stack exactly as it is for a person.
    if let Err(e) = host.store.journal(name) {
        let msg =
            format!("{e}; the stack is left as it is: check it, then remove the journal file");
        return (
            StackResult::new(name, Outcome::Failed, Some(Reason::Interrupted), msg),
            None,
            None,
        );
    }
    if !opts.dry_run
        && let Err(e) = release::sweep_temp(&host.layout, name)
    {
        tracing::warn!(stack = name, "failed to remove temporary leftovers: {e}");
    }
    // A dry run previews as `plan` does (a host-local file missing here is
    // named, not a render failure): one verdict, two views.
    let names = [name.to_string()];
    let mut inputs = PlanInputs::gather_inner(host, desired, &names, gates, opts.dry_run).await;
    let plan = inputs.plan(host, desired, &opts.plan_options());
    let Some(item) = plan.items.into_iter().next() else {
        let r = StackResult::new(
            name,
            Outcome::Skipped,
            Some(Reason::InvalidSpec),
            "not in the desired state".into(),
        );
        return (r, None, None);
    };
    let obs = inputs.observed.remove(name).unwrap_or_default();
    let seen = obs.members_health();
    for p in &obs.problems {
        tracing::warn!(stack = name, "{p}");
    }
    let rendered = inputs.rendered.remove(name);
    if opts.dry_run {
        // A stack of another host needs none of this host's files.
        let missing = match item.action.not_for_this_host() {
            true => Vec::new(),
            false => inputs.missing_here.remove(name).unwrap_or_default(),
        };
        let mut message = format!("would {}: {}", action_word(&item.action), item.reason);
        for m in &missing {
            message.push_str("; ");
            message.push_str(&inputs::missing_here_line(m));
        }
        let reason = match &item.action {
            plan::Action::Skip { why } => skip_reason(why),
            _ if !missing.is_empty() => Some(Reason::PreflightFailed),
            _ => None,
        };
        let r = StackResult {
            version: desired.stacks.get(name).map(|s| s.version.clone()),
            release: obs.release.clone(),
            ..StackResult::new(name, Outcome::Planned, reason, message)
        };
        return (r, Some(item), seen);
    }
    let r = execute(host, desired, &item, rendered, obs).await;
    (r, Some(item), seen)
}

/// The reason a skipped stack's result carries (`None`: not this host's,
/// or orphaned, which are no failure).
pub fn skip_reason(why: &Skip) -> Option<Reason> {
    Some(match why {
        Skip::Quarantined => Reason::Quarantined,
        Skip::Held => Reason::Held,
        Skip::Invalid => Reason::InvalidSpec,
        Skip::Blocked => Reason::Unverified,
        Skip::Untrusted => Reason::Untrusted,
        Skip::NotForThisHost | Skip::Orphaned => return None,
    })
}

/// `commit 4f2a9c0d1e2f: Promote shop-staging v2 to shop (#12)`: which
/// commit a deploy came from and what it said (its pull request, when
/// merged on a forge), at most 100 characters of the subject.
fn commit_note(commit: &str, subject: &str) -> String {
    let cut: String = subject.chars().take(100).collect();
    let ellipsis = if cut.len() < subject.len() { "…" } else { "" };
    format!(
        "commit {}: {cut}{ellipsis}",
        &commit[..12.min(commit.len())]
    )
}

fn action_word(a: &plan::Action) -> &'static str {
    match a {
        plan::Action::Noop => "do nothing",
        plan::Action::Deploy => "deploy",
        plan::Action::Heal => "heal",
        plan::Action::Remove => "remove",
        plan::Action::Skip { .. } => "skip",
    }
}

/// Carries out one plan item.
async fn execute(
    host: &Host<'_>,
    desired: &DesiredState,
    item: &Item,
    rendered: Option<Result<Rendered, inputs::RenderError>>,
    obs: StackObservation,
) -> StackResult {
    let name = item.stack.as_str();
    let stack = desired.stacks.get(name);
    let base = StackResult {
        version: stack.map(|s| s.version.clone()),
        release: obs.release.clone(),
        ..StackResult::new(name, Outcome::Skipped, None, item.reason.clone())
    };
    match (&item.action, stack) {
        (plan::Action::Noop, _) => {
            // Nothing to do: the time to see whether what runs has soaked.
            let soaked = crate::soak::stamp(host, desired, name, &obs);
            StackResult {
                outcome: Outcome::Unchanged,
                message: match soaked {
                    Some(s) => format!("{}; {s}", base.message),
                    None => base.message.clone(),
                },
                ..base
            }
        }
        (plan::Action::Skip { why }, _) => {
            let Some(reason) = skip_reason(why) else {
                return base;
            };
            // A valid stack skipped as invalid was refused by this host
            // (a host power it does not allow): blocked, and audited.
            if matches!(why, Skip::Blocked | Skip::Untrusted | Skip::Invalid)
                && let Some(s) = stack
            {
                record_refusal(host, s, item.fingerprint.as_deref(), &item.reason);
                return StackResult {
                    outcome: Outcome::Blocked,
                    reason: Some(reason),
                    ..base
                };
            }
            StackResult {
                reason: Some(reason),
                ..base
            }
        }
        (plan::Action::Heal, Some(s)) => heal(host, s, &obs, &item.reason).await,
        (plan::Action::Deploy, Some(s)) => match rendered {
            Some(Ok(r)) => deploy(host, desired, s, r, &obs, item).await,
            Some(Err(e)) => {
                let e = Error::Render(e);
                StackResult {
                    outcome: Outcome::Failed,
                    reason: Some(Stage::Preflight.reason()),
                    message: e.to_string(),
                    ..base
                }
            }
            None => StackResult {
                outcome: Outcome::Failed,
                reason: Some(Reason::InvalidSpec),
                ..base
            },
        },
        (plan::Action::Remove, _) => prune_stack(host, name, &obs).await,
        _ => StackResult {
            outcome: Outcome::Failed,
            reason: Some(Reason::InvalidSpec),
            ..base
        },
    }
}

async fn deploy(
    host: &Host<'_>,
    desired: &DesiredState,
    s: &Stack,
    rendered: Rendered,
    obs: &StackObservation,
    item: &Item,
) -> StackResult {
    let mut notes = Vec::new();
    match &item.verdict {
        Some(v @ crate::gate::Verdict::BreakGlass { missing, .. }) => {
            // The audit line comes first: no line, no deploy.
            let line = format!(
                "{}; skips the gate for {}",
                v.describe(),
                missing.join(", ")
            );
            if let Err(e) = host.record(
                &s.name,
                s.environment(),
                Action::BreakGlass,
                &s.version,
                Status::Success,
                &line,
            ) {
                return StackResult {
                    version: Some(s.version.clone()),
                    ..StackResult::new(
                        &s.name,
                        Outcome::Failed,
                        Some(Stage::Preflight.reason()),
                        format!(
                            "break-glass needs its audit line and history could not be written ({e}); nothing was deployed"
                        ),
                    )
                };
            }
            notes.push(v.describe());
        }
        Some(v @ crate::gate::Verdict::Pass { .. }) => notes.push(v.describe()),
        _ => {}
    }
    if let Some(rw) = &item.rewrite {
        tracing::warn!(stack = s.name, "{rw}");
        notes.push(rw.clone());
    }
    if let (Some(c), Some(subject)) = (&desired.commit, &desired.subject) {
        notes.push(commit_note(c, subject));
    }
    let sw = Switch {
        op: Op::Deploy,
        stack: s.name.clone(),
        environment: s.environment().to_string(),
        // An incomplete release that ran before is not one to go back to
        // (it is still protected from retention as the one replaced).
        from: obs.release.clone(),
        target: Target::New {
            stack: Box::new(s.clone()),
            rendered: Box::new(rendered),
            commit: desired.commit.clone(),
        },
        notes,
        resume_at: None,
        recovering: false,
        journal: None,
        restore: None,
    };
    let r = pipeline::converge(host, sw).await;
    if r.outcome == Outcome::Blocked {
        // Refused on the model compose resolved: audited like a refusal
        // the plan saw.
        record_refusal(host, s, item.fingerprint.as_deref(), &r.message);
    }
    r
}

async fn heal(host: &Host<'_>, s: &Stack, obs: &StackObservation, why: &str) -> StackResult {
    let (Some(id), Some(meta)) = (&obs.release, &obs.meta) else {
        return StackResult::new(
            &s.name,
            Outcome::Failed,
            Some(Reason::UpFailed),
            format!("heal failed: the running release has no readable release.json ({why})"),
        );
    };
    let sw = Switch {
        op: Op::Heal,
        stack: s.name.clone(),
        environment: s.environment().to_string(),
        from: Some(id.clone()),
        target: Target::Kept {
            id: id.clone(),
            meta: Box::new(meta.clone()),
        },
        notes: vec![why.to_string()],
        resume_at: None,
        recovering: false,
        journal: None,
        restore: None,
    };
    let mut r = pipeline::converge(host, sw).await;
    if r.outcome == Outcome::Failed {
        r.message = format!("heal failed: {}", r.message);
    }
    r
}

/// Writes `blocked … | refused` once per distinct refusal, not every loop.
fn record_refusal(host: &Host<'_>, s: &Stack, fingerprint: Option<&str>, reason: &str) {
    let key = format!("{}:{reason}", fingerprint.unwrap_or(""));
    let marker = host
        .store
        .dir()
        .join("blocked")
        .join(format!("{}.key", s.name));
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(key.as_str()) {
        return;
    }
    let _ = host.record(
        &s.name,
        s.environment(),
        Action::Blocked,
        &s.version,
        Status::Refused,
        reason,
    );
    host.emit(Event::Blocked {
        stack: s.name.clone(),
        environment: s.environment().into(),
        version: s.version.clone(),
        reason: reason.to_string(),
    });
    if let Err(e) = crate::fsutil::write_atomic(&marker, key.as_bytes(), 0o644) {
        tracing::warn!(stack = %s.name, "failed to remember the refusal: {e}");
    }
}

/// Removes a stack that left the desired state (only when `prune: true` in
/// stackpin.yaml, or by `stackpin prune`): `compose down` of its current
/// release (volumes are kept), the `/srv/stacks/<stack>` link removed,
/// history `prune`. Release directories and backups are kept for audit;
/// the caller holds the stack lock.
pub async fn prune_stack(host: &Host<'_>, name: &str, obs: &StackObservation) -> StackResult {
    let mut st = Stages::new(name, host.reporter);
    let t = Instant::now();
    let version = obs
        .meta
        .as_ref()
        .map(|m| m.version.clone())
        .unwrap_or_else(|| "-".into());
    let env = obs
        .meta
        .as_ref()
        .map(|m| m.environment.clone())
        .unwrap_or_else(|| "-".into());
    let problems = stage::stop_and_unlink(host, name, obs.meta.as_ref()).await;
    // A link that could not be stopped (no readable release) is still removed.
    let ok = problems.is_empty();
    st.record(Stage::Record, t, ok, problems.join("; "));
    let (outcome, status, msg) = if ok {
        (
            Outcome::Removed,
            Status::Success,
            format!(
                "removed (no longer in the desired state); releases kept under {}",
                host.layout.releases_dir(name).display()
            ),
        )
    } else {
        (
            Outcome::Failed,
            Status::Failed,
            format!("prune failed: {}", problems.join("; ")),
        )
    };
    let _ = host.record(name, &env, Action::Prune, &version, status, &msg);
    StackResult {
        version: Some(version),
        stages: st.into_list(),
        ..StackResult::new(name, outcome, None, msg)
    }
}

#[cfg(test)]
mod tests;
