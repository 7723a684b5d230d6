//! The plan, pure: from the desired state, what the host runs and this host's
//! own records, one action per stack with the reason. Nothing here touches the
//! engine or the disk, so `plan`, `--dry-run` and the daemon agree by
//! construction and the table tests below cover every branch.

use crate::desired::DesiredState;
use crate::desired::image::ImageRef;
use crate::desired::spec::{PromoteFrom, VerifiedEntry};
use crate::gate::{self, Verdict};
use serde::Serialize;
use std::collections::BTreeMap;

/// What the host runs for one stack, reduced to what planning needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedStack {
    /// Release id the symlink points at.
    pub release: Option<String>,
    /// Fingerprint recorded in that release's release.json.
    pub fingerprint: Option<String>,
    /// service -> pin of that release (from release.json).
    pub images: BTreeMap<String, ImageRef>,
    pub containers: Vec<ObservedContainer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    pub service: String,
    pub running: bool,
    /// The image reference and repo digests the container runs.
    pub images: Vec<String>,
}

/// This host's records about a stack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalRecord {
    /// Fingerprint that failed smoke and must not be retried unforced.
    pub quarantined: Option<String>,
    /// Why the stack is held (manual rollback or `hold`).
    pub held: Option<String>,
    /// This host's verified entries, by stack (for the gate).
    pub verified: Vec<VerifiedEntry>,
}

/// What the host's policy and the signatures say about one stack, judged
/// from the host's config and keys (`reconcile::inputs::judge`), never from
/// the commit alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gate {
    /// The gate that applies: the host's, else the one the commit declares.
    pub promote: Option<PromoteFrom>,
    /// The host names the gate: `break_glass:` from git needs an approver.
    pub host_gated: bool,
    /// Why the commit or its history is not trusted for this stack.
    pub untrusted: Option<String>,
    /// Whether `break_glass:` in stack.yaml may be honoured.
    pub git_break_glass: bool,
    /// Entries of `verified/<source>.yaml` signed by a verifier this host
    /// trusts for the source.
    pub git_entries: Vec<VerifiedEntry>,
    /// Entries of `verified/<source>.yaml` that do not count, and why.
    pub ignored: Vec<String>,
    /// What this host refuses to run as desired (host powers it does not
    /// allow, env files outside its secret dirs).
    pub refused: Vec<String>,
    /// The host protects the stack (`signed_by` or `promote_from`): a
    /// rewritten history waits for an operator.
    pub protected: bool,
    /// The desired commit does not descend from the one the stack last
    /// deployed, or that commit is gone (the branch was rewritten): both
    /// commits, in words.
    pub rewrite: Option<String>,
    /// The desired commit declares `break_glass:` and is signed by every
    /// `break_glass_by` set: it accepts a rewrite by itself.
    pub rewrite_signed: bool,
}

impl Gate {
    /// A stack the host's policy says nothing about: the commit's own gate
    /// applies, and only this host's verified store counts.
    pub fn of_commit(stack: &crate::desired::Stack) -> Gate {
        Gate {
            promote: stack.spec.promote_from.clone(),
            git_break_glass: true,
            ..Gate::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Noop,
    Deploy,
    Heal,
    Skip {
        why: Skip,
    },
    /// The stack left the desired state; prune is on.
    Remove,
}

impl Action {
    /// A stack another host runs: its files are not this host's business.
    pub fn not_for_this_host(&self) -> bool {
        matches!(
            self,
            Action::Skip {
                why: Skip::NotForThisHost
            }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    Quarantined,
    Held,
    NotForThisHost,
    /// The desired stack has validation errors: the host keeps what it runs.
    Invalid,
    /// The promotion gate refused the pins.
    Blocked,
    /// The desired commit does not satisfy the signature policy.
    Untrusted,
    /// Running but no longer desired, and prune is off: only reported.
    Orphaned,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    pub stack: String,
    #[serde(flatten)]
    pub action: Action,
    pub reason: String,
    /// Desired fingerprint, when the stack is valid and for this host.
    pub fingerprint: Option<String>,
    pub verdict: Option<Verdict>,
    /// For a deploy: what happens to each service (who restarts and why).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceChange>,
    /// For a deploy of a rewritten history: the rewrite and who accepted it
    /// (the deploy's history line says it too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<String>,
}

/// What a deploy does to one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceChange {
    pub service: String,
    /// `recreate`, `create` or `keep`.
    pub change: &'static str,
    /// Why it is recreated: `new digest …`, `file config/x changed`, …
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub why: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub items: Vec<Item>,
}

/// Inputs beyond desired and observed.
#[derive(Debug, Clone, Default)]
pub struct Options<'a> {
    pub host: &'a str,
    /// This host's `labels` (its config), matched by `key=value` in `hosts:`.
    pub labels: &'a [(String, String)],
    /// Retry quarantined fingerprints and redeploy even when nothing changed.
    pub force: bool,
    /// Remove stacks that left the desired state.
    pub prune: bool,
    /// A one-run break-glass reason from the operator.
    pub break_glass: Option<&'a str>,
    /// Limit to these stacks (empty: all).
    pub only: &'a [String],
    /// Each stack's judged policy (a stack missing here: [`Gate::of_commit`]).
    pub gates: Option<&'a BTreeMap<String, Gate>>,
    /// An operator accepts a rewritten history for the stacks of this run
    /// (`sync STACK --accept-rewrite`): who.
    pub accept_rewrite: Option<&'a str>,
}

/// Computes the plan.
///
/// `fingerprints` holds the desired fingerprint of each valid stack (the
/// caller renders releases to compute it, reading secret files on the way).
pub fn plan(
    desired: &DesiredState,
    fingerprints: &BTreeMap<String, String>,
    observed: &BTreeMap<String, ObservedStack>,
    local: &BTreeMap<String, LocalRecord>,
    opts: &Options<'_>,
) -> Plan {
    let wanted = |s: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == s);
    let none = LocalRecord::default();
    let empty = ObservedStack::default();
    let mut items = Vec::new();
    for name in desired.order() {
        if !wanted(&name) {
            continue;
        }
        let fp = fingerprints.get(&name).cloned();
        let (action, reason, verdict) = plan_stack(
            &desired.stacks[&name],
            fp.as_deref(),
            observed.get(&name).unwrap_or(&empty),
            local.get(&name).unwrap_or(&none),
            local,
            opts,
        );
        let rewrite = (action == Action::Deploy)
            .then(|| rewrite_note(opts.gates.and_then(|g| g.get(&name)), opts))
            .flatten();
        let reason = match &rewrite {
            Some(note) => format!("{reason}; {note}"),
            None => reason,
        };
        items.push(Item {
            stack: name,
            action,
            reason,
            fingerprint: fp,
            verdict,
            services: Vec::new(),
            rewrite,
        });
    }
    for name in &desired.invalid {
        if wanted(name) {
            items.push(Item {
                stack: name.clone(),
                action: Action::Skip { why: Skip::Invalid },
                reason: "the desired state of this stack has errors (see `stackpin validate`); the host keeps what it runs".into(),
                fingerprint: None,
                verdict: None,
                services: Vec::new(),
                rewrite: None,
            });
        }
    }
    items.extend(orphans(desired, observed, local, opts).filter(|i| wanted(&i.stack)));
    Plan { items }
}

/// The action for one valid stack, why, and the gate's verdict.
fn plan_stack(
    stack: &crate::desired::Stack,
    fp: Option<&str>,
    obs: &ObservedStack,
    rec: &LocalRecord,
    local: &BTreeMap<String, LocalRecord>,
    opts: &Options<'_>,
) -> (Action, String, Option<Verdict>) {
    let own;
    let gate = match opts.gates.and_then(|g| g.get(&stack.name)) {
        Some(g) => g,
        None => {
            own = Gate::of_commit(stack);
            &own
        }
    };
    let deployed_here = obs.release.is_some();
    // An untrusted commit moves nothing: not even off this host.
    if let Some(why) = &gate.untrusted
        && (deployed_here || stack.runs_on(opts.host, opts.labels))
    {
        return untrusted_wait(obs, why);
    }
    if !stack.runs_on(opts.host, opts.labels) {
        let reason = format!(
            "hosts: [{}] does not include {}",
            stack.spec.hosts.join(", "),
            opts.host
        );
        if deployed_here {
            return moved_away(opts, rec, &stack.name, reason);
        }
        return (
            Action::Skip {
                why: Skip::NotForThisHost,
            },
            reason,
            None,
        );
    }
    // A stack that waits (held, blocked, quarantined) keeps its current
    // release running: drift of that release is still healed.
    let wait = |why: Skip, reason: String, verdict: Option<Verdict>| match current_drift(obs) {
        Some(d) => (
            Action::Heal,
            format!("{reason}; the running release {d}: healing it"),
            verdict,
        ),
        None => (Action::Skip { why }, reason, verdict),
    };
    if let Some(why) = &rec.held {
        return wait(Skip::Held, format!("held: {why}"), None);
    }
    if !gate.refused.is_empty() {
        return wait(
            Skip::Invalid,
            format!("refused by this host: {}", gate.refused.join("; ")),
            None,
        );
    }
    let Some(fp) = fp else {
        return (
            Action::Skip { why: Skip::Invalid },
            "the desired release could not be rendered".into(),
            None,
        );
    };
    let up_to_date = obs.fingerprint.as_deref() == Some(fp);
    if up_to_date && !opts.force {
        return match drift(stack, obs) {
            Some(d) => (Action::Heal, d, None),
            None => (
                Action::Noop,
                format!(
                    "release {} is current",
                    obs.release.as_deref().unwrap_or("?")
                ),
                None,
            ),
        };
    }
    if rec.quarantined.as_deref() == Some(fp) && !opts.force {
        return wait(
            Skip::Quarantined,
            format!(
                "fingerprint {} failed smoke and is quarantined; change the desired state or run `stackpin sync --force {}`",
                &fp[..12.min(fp.len())],
                stack.name
            ),
            None,
        );
    }
    // A rewritten branch can take a stack back to an older release, each
    // commit of it signed: a protected stack waits for a person.
    if let Some(rw) = &gate.rewrite
        && gate.protected
        && !gate.rewrite_signed
        && opts.accept_rewrite.is_none()
    {
        return wait(
            Skip::Untrusted,
            format!(
                "{rw}: a rewritten branch can take the stack back to an older release; if that is intended, accept it with `stackpin sync {} --accept-rewrite`, or commit `break_glass:` signed by a break_glass_by signer",
                stack.name
            ),
            None,
        );
    }
    let mut entries = gate.git_entries.clone();
    if let Some(p) = &gate.promote
        && let Some(r) = local.get(&p.stack)
    {
        entries.extend(r.verified.iter().cloned());
    }
    let git_bg = stack.break_glass_reason().filter(|_| gate.git_break_glass);
    let bg = opts.break_glass.or(git_bg);
    let verdict = gate::promotion(gate.promote.as_ref(), &stack.pins, &entries, bg);
    if !verdict.allows() {
        let mut reason = verdict.describe();
        if stack.break_glass_reason().is_some() && git_bg.is_none() {
            reason.push_str("; break_glass in stack.yaml is ignored: the host gates this stack and the commit is not signed by a break-glass approver");
        }
        if !gate.ignored.is_empty() {
            reason.push_str(&format!("; not counted: {}", gate.ignored.join("; ")));
        }
        return wait(Skip::Blocked, reason, Some(verdict));
    }
    let reason = match (&obs.release, up_to_date) {
        (None, _) => format!("first deploy of {}", stack.version),
        (Some(_), true) => format!("forced redeploy of {}", stack.version),
        (Some(r), false) => format!("desired {} differs from release {r}", stack.version),
    };
    let verdict = (verdict != Verdict::NotGated).then_some(verdict);
    (Action::Deploy, reason, verdict)
}

/// For a deploy the gate let through: the rewrite it deploys, if any, and
/// why it may (who accepted it, or that the host does not protect it).
fn rewrite_note(gate: Option<&Gate>, opts: &Options<'_>) -> Option<String> {
    let gate = gate?;
    let rw = gate.rewrite.as_ref()?;
    let how = if !gate.protected {
        "deployed: this host does not protect the stack".to_string()
    } else if let Some(who) = opts.accept_rewrite {
        format!("accepted by {who}")
    } else {
        "accepted by the desired commit's break-glass signature".to_string()
    };
    Some(format!("history rewritten: {rw}; {how}"))
}

/// An untrusted stack keeps what it runs; drift of that release is healed.
fn untrusted_wait(obs: &ObservedStack, why: &str) -> (Action, String, Option<Verdict>) {
    match current_drift(obs) {
        Some(d) => (
            Action::Heal,
            format!("{why}; the running release {d}: healing it"),
            None,
        ),
        None => (
            Action::Skip {
                why: Skip::Untrusted,
            },
            why.to_string(),
            None,
        ),
    }
}

/// A stack this host runs whose `hosts:` no longer names it: removed with
/// prune, else reported as orphaned.
fn moved_away(
    opts: &Options<'_>,
    rec: &LocalRecord,
    stack: &str,
    reason: String,
) -> (Action, String, Option<Verdict>) {
    if let Some((action, why)) = held_not_pruned(opts, rec, stack, &reason) {
        return (action, why, None);
    }
    if opts.prune {
        (
            Action::Remove,
            format!("{reason}; it runs here and prune is on: removing it"),
            None,
        )
    } else {
        (
            Action::Skip {
                why: Skip::Orphaned,
            },
            format!("{reason}; left running because prune is off"),
            None,
        )
    }
}

/// A held stack is never removed by prune: an operator holds it for a
/// reason (a rollback, an incident), and removing it would undo that.
fn held_not_pruned(
    opts: &Options<'_>,
    rec: &LocalRecord,
    stack: &str,
    reason: &str,
) -> Option<(Action, String)> {
    let held = rec.held.as_ref().filter(|_| opts.prune)?;
    Some((
        Action::Skip { why: Skip::Held },
        format!(
            "{reason}; held ({held}), so prune leaves it running: `stackpin resume {stack}` first to let prune remove it"
        ),
    ))
}

/// Stacks the host runs that left the desired state: removed with prune,
/// else reported.
fn orphans<'a>(
    desired: &'a DesiredState,
    observed: &'a BTreeMap<String, ObservedStack>,
    local: &'a BTreeMap<String, LocalRecord>,
    opts: &'a Options<'_>,
) -> impl Iterator<Item = Item> + 'a {
    observed
        .iter()
        .filter(|(name, obs)| {
            !desired.stacks.contains_key(*name)
                && !desired.invalid.contains(*name)
                && obs.release.is_some()
        })
        .map(|(name, obs)| {
            if let Some(why) = opts
                .gates
                .and_then(|g| g.get(name))
                .and_then(|g| g.untrusted.as_ref())
            {
                let (action, reason, _) = untrusted_wait(obs, why);
                return Item {
                    stack: name.clone(),
                    action,
                    reason,
                    fingerprint: None,
                    verdict: None,
                    services: Vec::new(),
                    rewrite: None,
                };
            }
            let gone = "no longer in the desired state";
            let rec = local.get(name).cloned().unwrap_or_default();
            let (action, reason) = if let Some(held) = held_not_pruned(opts, &rec, name, gone) {
                held
            } else if opts.prune {
                (Action::Remove, format!("{gone}; prune is on"))
            } else {
                (
                    Action::Skip {
                        why: Skip::Orphaned,
                    },
                    "no longer in the desired state; left running because prune is off".to_string(),
                )
            };
            Item {
                stack: name.clone(),
                action,
                reason,
                fingerprint: None,
                verdict: None,
                services: Vec::new(),
                rewrite: None,
            }
        })
}

/// Why the running containers differ from the desired release, if they do.
fn drift(stack: &crate::desired::Stack, obs: &ObservedStack) -> Option<String> {
    drift_from(stack.pins.iter(), obs)
}

/// Why the running containers differ from the release the host runs (its
/// recorded images), if they do: a stack that is held, blocked or whose
/// desired state is quarantined still gets its current release healed.
fn current_drift(obs: &ObservedStack) -> Option<String> {
    if obs.release.is_none() || obs.images.is_empty() {
        return None;
    }
    drift_from(obs.images.iter(), obs)
}

fn drift_from<'a>(
    pins: impl Iterator<Item = (&'a String, &'a ImageRef)>,
    obs: &ObservedStack,
) -> Option<String> {
    let mut problems = Vec::new();
    for (svc, pin) in pins {
        let ours: Vec<&ObservedContainer> = obs
            .containers
            .iter()
            .filter(|c| &c.service == svc)
            .collect();
        if ours.is_empty() {
            problems.push(format!("{svc}: no container"));
        } else if ours.iter().any(|c| !c.running) {
            problems.push(format!("{svc}: not running"));
        } else if !ours
            .iter()
            .all(|c| c.images.iter().any(|i| pin.same_digest(i)))
        {
            problems.push(format!("{svc}: runs another image"));
        }
    }
    (!problems.is_empty()).then(|| format!("drifted: {}", problems.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{self, DirTree};

    const D1: &str = "1db6436ca7e084705cffcf3e760b6659cce449bd636edf94917b28de2df3fbe5";
    const D2: &str = "2b1e7c4f3a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f";

    fn desired(stacks: &[(&str, &str)], verified: Option<&str>) -> DesiredState {
        let dir = tempfile::tempdir().unwrap();
        for (name, extra) in stacks {
            let d = dir.path().join("stacks").join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("stack.yaml"),
                format!("images: {{web: app@sha256:{D1}}}\n{extra}"),
            )
            .unwrap();
            std::fs::write(d.join("compose.yaml"), "services:\n  web: {image: app}\n").unwrap();
        }
        if let Some(v) = verified {
            std::fs::create_dir_all(dir.path().join("verified")).unwrap();
            std::fs::write(dir.path().join("verified/stg.yaml"), v).unwrap();
        }
        let st = desired::load(&DirTree::new(dir.path()));
        assert!(
            st.errors().next().is_none() || stacks.iter().any(|(_, e)| e.contains("BAD")),
            "{:#?}",
            st.findings
        );
        st
    }

    fn running(digest: &str) -> ObservedStack {
        ObservedStack {
            release: Some("v1__20260101T000000Z".into()),
            fingerprint: Some("fp-a".into()),
            images: [(
                "web".to_string(),
                ImageRef::parse(&format!("app@sha256:{digest}")).unwrap(),
            )]
            .into(),
            containers: vec![ObservedContainer {
                service: "web".into(),
                running: true,
                images: vec![format!("app@sha256:{digest}")],
            }],
        }
    }

    fn fps(d: &DesiredState, fp: &str) -> BTreeMap<String, String> {
        d.stacks
            .keys()
            .map(|k| (k.clone(), fp.to_string()))
            .collect()
    }

    fn one(
        d: &DesiredState,
        fp: &str,
        obs: Option<ObservedStack>,
        rec: LocalRecord,
        opts: Options<'_>,
    ) -> Item {
        let observed: BTreeMap<String, ObservedStack> =
            obs.into_iter().map(|o| ("a".to_string(), o)).collect();
        let local: BTreeMap<String, LocalRecord> = [("a".to_string(), rec)].into();
        let p = plan(d, &fps(d, fp), &observed, &local, &opts);
        p.items.into_iter().find(|i| i.stack == "a").unwrap()
    }

    /// (what, desired fingerprint, observed, local record, options, action,
    /// a part of the reason).
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<ObservedStack>,
        LocalRecord,
        &'a Options<'a>,
        Action,
        &'a str,
    );

    fn check_cases(d: &DesiredState, cases: Vec<Case<'_>>) {
        for (name, fp, obs, rec, opts, action, reason) in cases {
            let it = one(d, fp, obs, rec, opts.clone());
            assert_eq!(it.action, action, "{name}: {it:?}");
            assert!(
                it.reason.contains(reason),
                "{name}: reason {:?} lacks {reason:?}",
                it.reason
            );
        }
    }

    #[test]
    fn table_fresh_changed_and_drifted() {
        let d = desired(&[("a", "")], None);
        let host = Options {
            host: "h",
            ..Default::default()
        };
        let stopped = ObservedStack {
            containers: vec![ObservedContainer {
                service: "web".into(),
                running: false,
                images: vec![],
            }],
            ..running(D1)
        };
        let cases: Vec<Case<'_>> = vec![
            (
                "nothing deployed",
                "fp-a",
                None,
                LocalRecord::default(),
                &host,
                Action::Deploy,
                "first deploy",
            ),
            (
                "same fingerprint, healthy",
                "fp-a",
                Some(running(D1)),
                LocalRecord::default(),
                &host,
                Action::Noop,
                "is current",
            ),
            (
                "new fingerprint",
                "fp-b",
                Some(running(D1)),
                LocalRecord::default(),
                &host,
                Action::Deploy,
                "differs from release",
            ),
            (
                "container missing",
                "fp-a",
                Some(ObservedStack {
                    containers: vec![],
                    ..running(D1)
                }),
                LocalRecord::default(),
                &host,
                Action::Heal,
                "web: no container",
            ),
            (
                "container stopped",
                "fp-a",
                Some(stopped),
                LocalRecord::default(),
                &host,
                Action::Heal,
                "web: not running",
            ),
            (
                "other image",
                "fp-a",
                Some(running(D2)),
                LocalRecord::default(),
                &host,
                Action::Heal,
                "runs another image",
            ),
        ];
        check_cases(&d, cases);
    }

    #[test]
    fn table_waiting_and_forced() {
        let d = desired(&[("a", "")], None);
        let host = Options {
            host: "h",
            ..Default::default()
        };
        let force = Options {
            host: "h",
            force: true,
            ..Default::default()
        };
        let q = LocalRecord {
            quarantined: Some("fp-b".into()),
            ..Default::default()
        };
        let held = LocalRecord {
            held: Some("manual rollback".into()),
            ..Default::default()
        };
        #[allow(clippy::type_complexity)]
        let cases: Vec<Case<'_>> = vec![
            (
                "quarantined",
                "fp-b",
                Some(running(D1)),
                q.clone(),
                &host,
                Action::Skip {
                    why: Skip::Quarantined,
                },
                "quarantined",
            ),
            (
                "quarantined but forced",
                "fp-b",
                Some(running(D1)),
                q,
                &force,
                Action::Deploy,
                "differs",
            ),
            (
                "forced with nothing changed",
                "fp-a",
                Some(running(D1)),
                LocalRecord::default(),
                &force,
                Action::Deploy,
                "forced redeploy",
            ),
            (
                "held",
                "fp-b",
                Some(running(D1)),
                held.clone(),
                &host,
                Action::Skip { why: Skip::Held },
                "manual rollback",
            ),
            // Waiting stacks keep their current release running.
            (
                "held, current release stopped",
                "fp-b",
                Some(ObservedStack {
                    containers: vec![ObservedContainer {
                        service: "web".into(),
                        running: false,
                        images: vec![],
                    }],
                    ..running(D1)
                }),
                held,
                &host,
                Action::Heal,
                "the running release drifted: web: not running",
            ),
            (
                "quarantined, current container gone",
                "fp-b",
                Some(ObservedStack {
                    containers: vec![],
                    ..running(D1)
                }),
                LocalRecord {
                    quarantined: Some("fp-b".into()),
                    ..Default::default()
                },
                &host,
                Action::Heal,
                "`stackpin sync --force a`; the running release drifted: web: no container: healing it",
            ),
        ];
        check_cases(&d, cases);
    }

    #[test]
    fn hosts_and_the_promotion_gate() {
        let d = desired(&[("a", "hosts: [other]\n")], None);
        let it = one(
            &d,
            "fp",
            None,
            LocalRecord::default(),
            Options {
                host: "h",
                ..Default::default()
            },
        );
        assert_eq!(
            it.action,
            Action::Skip {
                why: Skip::NotForThisHost
            }
        );

        // A marker in git counts only when judged trusted (signed by a
        // verifier the host lists): read alone, the commit proves nothing.
        let entry = format!(
            "verified:\n  - {{version: v1, images: {{web: app@sha256:{D1}}}, verified_at: x, host: s, commit: c}}\n"
        );
        let d = desired(&[("a", "promote_from: stg\n"), ("stg", "")], Some(&entry));
        let host = Options {
            host: "h",
            ..Default::default()
        };
        let it = one(&d, "fp", None, LocalRecord::default(), host.clone());
        assert_eq!(it.action, Action::Skip { why: Skip::Blocked }, "{it:?}");
        let judged: BTreeMap<String, Gate> = [(
            "a".to_string(),
            Gate {
                git_entries: d.verified["stg"].clone(),
                ..Gate::of_commit(&d.stacks["a"])
            },
        )]
        .into();
        let it = one(
            &d,
            "fp",
            None,
            LocalRecord::default(),
            Options {
                gates: Some(&judged),
                ..host.clone()
            },
        );
        assert_eq!(it.action, Action::Deploy);
        assert!(matches!(it.verdict, Some(Verdict::Pass { .. })));

        let d = desired(&[("a", "promote_from: stg\n"), ("stg", "")], None);
        let it = one(
            &d,
            "fp",
            None,
            LocalRecord::default(),
            Options {
                host: "h",
                ..Default::default()
            },
        );
        assert_eq!(it.action, Action::Skip { why: Skip::Blocked });
        assert!(
            it.reason.starts_with("unverified: web=sha256:1db6436"),
            "{}",
            it.reason
        );
        let it = one(
            &d,
            "fp",
            None,
            LocalRecord::default(),
            Options {
                host: "h",
                break_glass: Some("hotfix"),
                ..Default::default()
            },
        );
        assert_eq!(it.action, Action::Deploy);
    }

    #[test]
    fn the_hosts_own_verified_store_counts_for_the_gate() {
        let d = desired(&[("a", "promote_from: stg\n"), ("stg", "")], None);
        let mut local: BTreeMap<String, LocalRecord> = BTreeMap::new();
        local.insert(
            "stg".into(),
            LocalRecord {
                verified: desired::spec::VerifiedFile::default().verified,
                ..Default::default()
            },
        );
        let mut e = serde_json::from_value::<VerifiedEntry>(serde_json::json!({"version": "v9", "images": {"web": format!("app@sha256:{D1}")}, "verified_at": "x", "host": "h", "commit": "c"})).unwrap();
        e.version = "v9".into();
        local.get_mut("stg").unwrap().verified.push(e);
        let p = plan(
            &d,
            &fps(&d, "fp"),
            &BTreeMap::new(),
            &local,
            &Options {
                host: "h",
                ..Default::default()
            },
        );
        let it = p.items.iter().find(|i| i.stack == "a").unwrap();
        assert!(
            matches!(&it.verdict, Some(Verdict::Pass { version, .. }) if version == "v9"),
            "{it:?}"
        );
    }

    #[test]
    fn an_untrusted_commit_blocks_only_the_stacks_the_host_protects() {
        let d = desired(
            &[
                ("a", "environment: Production\n"),
                ("c", "environment: staging\n"),
                ("m", "hosts: [elsewhere]\n"),
            ],
            None,
        );
        let why = "untrusted commit 0123456789ab: unsigned commit (signer set `approvers`)";
        let untrusted = Gate {
            untrusted: Some(why.into()),
            ..Gate::default()
        };
        let gates: BTreeMap<String, Gate> = [
            ("a".to_string(), untrusted.clone()),
            ("m".to_string(), untrusted.clone()),
            ("gone".to_string(), untrusted),
        ]
        .into();
        let mut observed: BTreeMap<String, ObservedStack> = BTreeMap::new();
        observed.insert("m".into(), running(D1));
        observed.insert("gone".into(), running(D1));
        let p = plan(
            &d,
            &fps(&d, "fp"),
            &observed,
            &BTreeMap::new(),
            &Options {
                host: "h",
                prune: true,
                gates: Some(&gates),
                ..Default::default()
            },
        );
        let by: BTreeMap<&str, &Item> = p.items.iter().map(|i| (i.stack.as_str(), i)).collect();
        let untrusted = Action::Skip {
            why: Skip::Untrusted,
        };
        // Whatever the commit calls the environment.
        assert_eq!(by["a"].action, untrusted);
        assert_eq!(by["a"].reason, why);
        assert_eq!(by["c"].action, Action::Deploy);
        // An unsigned commit can neither move a protected stack away nor
        // delete it, even with prune.
        assert_eq!(by["m"].action, untrusted, "{:?}", by["m"]);
        assert_eq!(by["gone"].action, untrusted, "{:?}", by["gone"]);
    }

    #[test]
    fn a_rewritten_history_waits_on_protected_stacks_until_someone_accepts_it() {
        let d = desired(&[("p", ""), ("u", ""), ("same", "")], None);
        let rw = "the desired commit 0123456789ab does not descend from fedcba987654, the commit this stack last deployed";
        let rewritten = |protected| Gate {
            rewrite: Some(rw.into()),
            protected,
            ..Gate::default()
        };
        let gates: BTreeMap<String, Gate> = [
            ("p".to_string(), rewritten(true)),
            ("u".to_string(), rewritten(false)),
            ("same".to_string(), rewritten(true)),
        ]
        .into();
        let observed: BTreeMap<String, ObservedStack> = ["p", "u", "same"]
            .iter()
            .map(|n| (n.to_string(), running(D1)))
            .collect();
        // `same` runs what the rewritten commit describes: nothing moves.
        let mut fingerprints = fps(&d, "fp-new");
        fingerprints.insert("same".into(), "fp-a".into());
        let run = |opts: Options<'_>| {
            let p = plan(&d, &fingerprints, &observed, &BTreeMap::new(), &opts);
            p.items
                .into_iter()
                .map(|i| (i.stack.clone(), i))
                .collect::<BTreeMap<String, Item>>()
        };
        let base = Options {
            host: "h",
            gates: Some(&gates),
            ..Default::default()
        };
        let by = run(base.clone());
        assert_eq!(
            by["p"].action,
            Action::Skip {
                why: Skip::Untrusted
            }
        );
        assert!(
            by["p"].reason.starts_with(rw)
                && by["p"].reason.contains("stackpin sync p --accept-rewrite"),
            "{}",
            by["p"].reason
        );
        assert_eq!(by["p"].rewrite, None);
        // Not protected: deployed, and said.
        assert_eq!(by["u"].action, Action::Deploy);
        let note = by["u"].rewrite.as_deref().unwrap_or_default();
        assert!(
            note.contains(rw) && note.contains("does not protect"),
            "{note}"
        );
        assert!(by["u"].reason.contains(note), "{}", by["u"].reason);
        assert_eq!(by["same"].action, Action::Noop);

        // An operator accepts it, by name.
        let by = run(Options {
            accept_rewrite: Some("alice"),
            ..base.clone()
        });
        assert_eq!(by["p"].action, Action::Deploy);
        let note = |by: &BTreeMap<String, Item>| by["p"].rewrite.clone().unwrap_or_default();
        assert!(note(&by).ends_with("accepted by alice"), "{}", note(&by));
        // Or the desired commit's break-glass signature does.
        let mut signed = gates.clone();
        signed.get_mut("p").unwrap().rewrite_signed = true;
        let by = run(Options {
            gates: Some(&signed),
            ..base
        });
        assert_eq!(by["p"].action, Action::Deploy);
        assert!(note(&by).contains("break-glass signature"), "{}", note(&by));
    }

    #[test]
    fn git_break_glass_counts_only_when_the_judge_allows_it() {
        let d = desired(
            &[
                ("a", "promote_from: stg\nbreak_glass: {reason: hotfix}\n"),
                ("stg", ""),
            ],
            None,
        );
        let host = Options {
            host: "h",
            ..Default::default()
        };
        let it = one(&d, "fp", None, LocalRecord::default(), host.clone());
        assert!(
            matches!(it.verdict, Some(Verdict::BreakGlass { .. })),
            "{it:?}"
        );
        let gates: BTreeMap<String, Gate> = [(
            "a".to_string(),
            Gate {
                host_gated: true,
                git_break_glass: false,
                ..Gate::of_commit(&d.stacks["a"])
            },
        )]
        .into();
        let it = one(
            &d,
            "fp",
            None,
            LocalRecord::default(),
            Options {
                gates: Some(&gates),
                ..host
            },
        );
        assert_eq!(it.action, Action::Skip { why: Skip::Blocked }, "{it:?}");
        assert!(
            it.reason.contains("break_glass in stack.yaml is ignored"),
            "{}",
            it.reason
        );
    }

    #[test]
    fn a_stack_moved_to_another_host_is_orphaned_or_pruned() {
        let d = desired(&[("a", "hosts: [other]\n")], None);
        let base = Options {
            host: "h",
            ..Default::default()
        };
        let it = one(
            &d,
            "fp",
            Some(running(D1)),
            LocalRecord::default(),
            base.clone(),
        );
        assert_eq!(
            it.action,
            Action::Skip {
                why: Skip::Orphaned
            },
            "{it:?}"
        );
        let it = one(
            &d,
            "fp",
            Some(running(D1)),
            LocalRecord::default(),
            Options {
                prune: true,
                ..base
            },
        );
        assert_eq!(it.action, Action::Remove, "{it:?}");
    }

    #[test]
    fn invalid_stacks_orphans_and_prune() {
        let d = desired(&[("a", ""), ("b", "images: BAD\n")], None);
        let mut observed = BTreeMap::new();
        observed.insert("gone".to_string(), running(D1));
        let p = plan(
            &d,
            &fps(&d, "fp"),
            &observed,
            &BTreeMap::new(),
            &Options {
                host: "h",
                ..Default::default()
            },
        );
        let by: BTreeMap<&str, &Action> = p
            .items
            .iter()
            .map(|i| (i.stack.as_str(), &i.action))
            .collect();
        assert_eq!(by["b"], &Action::Skip { why: Skip::Invalid });
        assert_eq!(
            by["gone"],
            &Action::Skip {
                why: Skip::Orphaned
            }
        );
        let p = plan(
            &d,
            &fps(&d, "fp"),
            &observed,
            &BTreeMap::new(),
            &Options {
                host: "h",
                prune: true,
                ..Default::default()
            },
        );
        assert!(
            p.items
                .iter()
                .any(|i| i.stack == "gone" && i.action == Action::Remove)
        );
        let only = vec!["a".to_string()];
        let p = plan(
            &d,
            &fps(&d, "fp"),
            &observed,
            &BTreeMap::new(),
            &Options {
                host: "h",
                only: &only,
                ..Default::default()
            },
        );
        assert_eq!(p.items.len(), 1);
    }
}
