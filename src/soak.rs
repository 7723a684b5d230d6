//! Soak time (SPEC §4): a gate with `promote_from: {stack, soak: 30m}`
//! counts a verified entry of the source only once the host that verified
//! it stamped it soaked: the release ran there for at least `soak` with no
//! failed smoke, heal, revert or container restart since it was verified.
//!
//! The source host stamps; the gate only compares the entry's own times
//! (`soaked_at - verified_at >= soak`, in `crate::gate`), so a production
//! host needs nothing but the published, signed entry. The stamp is a new
//! entry next to the first (same release, `soaked_at` added, signed again),
//! so the verified files stay append-only and older entries verify as
//! they did.
//!
//! The decision is pure ([`window`], [`judge`]); [`stamp`] gathers the
//! facts (this host's verified store, `current.json`, history, the
//! containers' restart counts) for a stack whose run found nothing to do,
//! and appends the soaked entry, which the publisher then pushes like any
//! other. How long a host soaks before it stamps: the longest of its
//! `verified.soak` and every `promote_from.soak` the desired state asks of
//! the stack.

use crate::desired::DesiredState;
use crate::desired::spec::VerifiedEntry;
use crate::history::{Action, Entry, Status};
use crate::host::Host;
use crate::observed::StackObservation;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Where a release stands in its soak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Soak {
    /// Clean so far; may be stamped at `until`.
    Soaking { until: DateTime<Utc> },
    /// Something happened to it since `since`: it is not stamped.
    Broken { why: String },
    /// Ran clean from `since` until now, at least the soak.
    Soaked { since: DateTime<Utc> },
}

fn parse(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The soak's window: from when the release both was verified and became
/// current here (a revert back to it starts it again), `soak` long.
pub fn window(
    entry: &VerifiedEntry,
    deployed_at: Option<&str>,
    soak: Duration,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let verified = parse(&entry.verified_at)?;
    let since = deployed_at
        .and_then(parse)
        .map_or(verified, |d| d.max(verified));
    Some((since, since + chrono::Duration::from_std(soak).ok()?))
}

/// Whether what the history and the containers say breaks the soak of
/// `version`, running since `since`: a line of the stack about that version
/// after `since` that failed (a refusal of a commit is none), reverted,
/// rolled back, restored or healed, or a container that restarted. A line
/// about another version is about another release: one that failed before
/// its switch left this one untouched, and one that was reverted made this
/// one current again, which starts its window anew.
pub fn judge(
    version: &str,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
    history: &[&Entry],
    restarts: &[(String, i64)],
) -> Soak {
    let incident = history.iter().find(|e| {
        e.time.and_utc() > since
            && e.version == version
            && e.action != Action::Blocked
            && (e.status != Status::Success
                || matches!(
                    e.action,
                    Action::Rollback | Action::ManualRollback | Action::Restore
                )
                || (e.action == Action::Deploy && e.notes.starts_with("heal:")))
    });
    if let Some(e) = incident {
        return Soak::Broken {
            why: format!(
                "{} {} at {}Z",
                e.action.as_str(),
                e.status.as_str(),
                e.time.format(crate::history::TIME_FORMAT)
            ),
        };
    }
    if let Some((name, n)) = restarts.iter().find(|(_, n)| *n > 0) {
        return Soak::Broken {
            why: format!("container {name} restarted {n} time(s)"),
        };
    }
    if now < until {
        Soak::Soaking { until }
    } else {
        Soak::Soaked { since }
    }
}

/// How long this host soaks `stack` before it stamps: the longest of its
/// own `verified.soak` and of every soak the desired state's gates ask of
/// the stack. `None`: nobody asks.
pub fn length(
    host_soak: Option<Duration>,
    desired: &DesiredState,
    stack: &str,
) -> Option<Duration> {
    desired
        .stacks
        .values()
        .filter_map(|s| s.spec.promote_from.as_ref())
        .filter(|p| p.stack == stack)
        .filter_map(|p| p.soak)
        .chain(host_soak)
        .max()
}

/// For a stack this run left as it was, that marks its releases verified
/// (`marks_verified`): stamps its current release soaked when it is due
/// (see the module). Returns what it did, for the run's
/// report; `None` when there was nothing to say.
pub fn stamp(
    host: &Host<'_>,
    desired: &DesiredState,
    stack: &str,
    obs: &StackObservation,
) -> Option<String> {
    // Cheap first: a no-op pass over thousands of stacks reads nothing
    // more for the ones that do not mark releases verified.
    if !obs.meta.as_ref().is_some_and(|m| m.marks_verified) {
        return None;
    }
    let current = obs.current.as_ref()?;
    let soak = length(host.policy.soak, desired, stack)?;
    let entries = crate::verified::read(&host.layout, stack).ok()?;
    let images: std::collections::BTreeMap<String, String> = current
        .images
        .iter()
        .map(|(k, v)| (k.clone(), v.pinned.clone()))
        .collect();
    let mine = |e: &&VerifiedEntry| {
        e.host == host.name && e.version == current.version && e.images == images
    };
    if entries.iter().filter(mine).any(|e| e.soaked_at.is_some()) {
        return None;
    }
    let first = entries.iter().rfind(mine)?;
    let (since, until) = window(first, Some(&current.deployed_at), soak)?;
    // Restarts are judged on the members as read now, or not at all.
    if !obs.members_read {
        return None;
    }
    let now = Utc::now();
    let log = match crate::history::read(&host.layout.history()) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(stack, "soak not judged: history unreadable: {e}");
            return None;
        }
    };
    let lines: Vec<&Entry> = log.for_stack(stack).collect();
    let restarts: Vec<(String, i64)> = obs
        .containers
        .iter()
        .map(|c| (c.name.clone(), c.restart_count))
        .collect();
    let at = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match judge(&current.version, since, until, now, &lines, &restarts) {
        Soak::Soaking { until } => Some(format!(
            "verified, soaking until {} ({})",
            at(until),
            humantime::format_duration(soak)
        )),
        Soak::Broken { why } => Some(format!(
            "verified, but not soaked: {why} since {}",
            at(since)
        )),
        Soak::Soaked { since } => {
            match crate::verified::record_soaked(
                &host.layout,
                stack,
                first,
                &at(since),
                &at(now),
                host.policy.signing_key.as_ref(),
            ) {
                Ok(_) => {
                    let note = format!(
                        "soaked {} since {}",
                        humantime::format_duration(soak),
                        at(since)
                    );
                    let _ = host.record(
                        stack,
                        &current.environment,
                        Action::Verify,
                        &current.version,
                        Status::Success,
                        &note,
                    );
                    Some(note)
                }
                Err(e) => {
                    tracing::error!(stack, "{e}");
                    Some(format!("soaked, but not recorded: {e}"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDateTime;

    fn t(s: &str) -> DateTime<Utc> {
        parse(s).unwrap()
    }

    fn line(time: &str, action: Action, status: Status, notes: &str) -> Entry {
        Entry {
            time: NaiveDateTime::parse_from_str(time, "%Y-%m-%d %H:%M:%S").unwrap(),
            stack: "stg".into(),
            env: "staging".into(),
            action,
            version: "v2".into(),
            status,
            notes: notes.into(),
        }
    }

    fn entry(verified_at: &str) -> VerifiedEntry {
        VerifiedEntry {
            version: "v2".into(),
            images: Default::default(),
            verified_at: verified_at.into(),
            host: "stg-1".into(),
            commit: String::new(),
            soaked_at: None,
            signature: None,
        }
    }

    #[test]
    fn the_window_starts_when_the_release_was_both_verified_and_current() {
        let soak = Duration::from_secs(1800);
        let e = entry("2026-12-01T10:00:00Z");
        let (since, until) = window(&e, Some("2026-12-01T09:59:58Z"), soak).unwrap();
        assert_eq!(since, t("2026-12-01T10:00:00Z"));
        assert_eq!(until, t("2026-12-01T10:30:00Z"));
        // Reverted back to it later: the soak starts again.
        let (since, _) = window(&e, Some("2026-12-01T11:00:00Z"), soak).unwrap();
        assert_eq!(since, t("2026-12-01T11:00:00Z"));
        assert_eq!(window(&entry("yesterday"), None, soak), None);
    }

    /// Name, the stack's history, restart counts, now, what it must be.
    type Case = (
        &'static str,
        Vec<Entry>,
        Vec<(String, i64)>,
        &'static str,
        fn(&Soak) -> bool,
    );

    #[test]
    fn table() {
        let since = t("2026-12-01T10:00:00Z");
        let until = t("2026-12-01T10:30:00Z");
        let deploy = line("2026-12-01 10:00:00", Action::Deploy, Status::Success, "");
        let cases: Vec<Case> = vec![
            (
                "clean, before the end",
                vec![deploy.clone()],
                vec![],
                "2026-12-01T10:29:59Z",
                |s| matches!(s, Soak::Soaking { .. }),
            ),
            (
                "clean, at the end",
                vec![deploy.clone()],
                vec![("c".into(), 0)],
                "2026-12-01T10:30:00Z",
                |s| matches!(s, Soak::Soaked { .. }),
            ),
            (
                "a heal since",
                vec![
                    deploy.clone(),
                    line(
                        "2026-12-01 10:10:00",
                        Action::Deploy,
                        Status::Success,
                        "heal: drift; healed",
                    ),
                ],
                vec![],
                "2026-12-01T11:00:00Z",
                |s| matches!(s, Soak::Broken { why } if why.contains("deploy success at 2026-12-01 10:10:00Z")),
            ),
            (
                "a failed smoke since",
                vec![line(
                    "2026-12-01 10:10:00",
                    Action::Deploy,
                    Status::Failed,
                    "smoke failed",
                )],
                vec![],
                "2026-12-01T11:00:00Z",
                |s| matches!(s, Soak::Broken { .. }),
            ),
            (
                "a revert since",
                vec![line(
                    "2026-12-01 10:10:00",
                    Action::Rollback,
                    Status::Success,
                    "",
                )],
                vec![],
                "2026-12-01T11:00:00Z",
                |s| matches!(s, Soak::Broken { .. }),
            ),
            (
                "a failure before it started does not count",
                vec![line(
                    "2026-12-01 09:10:00",
                    Action::Deploy,
                    Status::Failed,
                    "",
                )],
                vec![],
                "2026-12-01T11:00:00Z",
                |s| matches!(s, Soak::Soaked { .. }),
            ),
            (
                "a hold is no incident",
                vec![line(
                    "2026-12-01 10:10:00",
                    Action::Hold,
                    Status::Success,
                    "",
                )],
                vec![],
                "2026-12-01T11:00:00Z",
                |s| matches!(s, Soak::Soaked { .. }),
            ),
            (
                "a container restarted",
                vec![],
                vec![("web-1".into(), 0), ("web-2".into(), 2)],
                "2026-12-01T11:00:00Z",
                |s| matches!(s, Soak::Broken { why } if why == "container web-2 restarted 2 time(s)"),
            ),
            (
                "a refused commit is no incident",
                vec![line(
                    "2026-12-01 10:10:00",
                    Action::Blocked,
                    Status::Refused,
                    "unverified",
                )],
                vec![],
                "2026-12-01T11:00:00Z",
                |s| matches!(s, Soak::Soaked { .. }),
            ),
            (
                "another version's failure is not this release's",
                vec![Entry {
                    version: "v3".into(),
                    ..line(
                        "2026-12-01 10:10:00",
                        Action::Deploy,
                        Status::Failed,
                        "pull failed",
                    )
                }],
                vec![],
                "2026-12-01T11:00:00Z",
                |s| matches!(s, Soak::Soaked { .. }),
            ),
        ];
        for (name, lines, restarts, now, want) in cases {
            let refs: Vec<&Entry> = lines.iter().collect();
            let got = judge("v2", since, until, t(now), &refs, &restarts);
            assert!(want(&got), "{name}: {got:?}");
        }
    }
}
