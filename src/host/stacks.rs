//! What every command does to one stack by name, on the host: the name
//! checked (one check, one error: [`UnknownStack`]), the stack's lock taken,
//! a hold set or lifted. The pipeline, rollback, the daemon's control
//! socket and the CLI all come here, never to each other.

use super::{Host, now_rfc3339};
use crate::desired::DesiredState;
use crate::history::{Action, Status};
use crate::layout::Layout;
use crate::state::{Hold, StackLock};
use std::collections::BTreeSet;
use std::time::Duration;

/// How long [`Host::lock`] waits for another process to release a stack.
pub const LOCK_WAIT: Duration = Duration::from_secs(30 * 60);

/// A stack name an operator gave that is not one, or that neither the
/// desired state nor this host has: the message says which, with the
/// nearest known name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnknownStack(pub String);

impl From<UnknownStack> for std::io::Error {
    fn from(e: UnknownStack) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e.0)
    }
}

/// Refuses a stack name that is not one, or a stack neither the desired
/// state (valid or not; `desired` when it could be read) nor this host has:
/// an operator's typo must not create records for a stack that does not
/// exist. Each of `stacks`; the first unknown one's error.
///
/// # Errors
/// [`UnknownStack`] with the reason (and the nearest or the known stacks).
pub fn check_known_all(
    layout: &Layout,
    desired: Option<&DesiredState>,
    stacks: &[String],
) -> Result<(), UnknownStack> {
    for s in stacks {
        crate::desired::check_stack_name(s).map_err(UnknownStack)?;
    }
    let known = known_names(layout, desired);
    match stacks.iter().find(|s| !known.contains(*s)) {
        Some(s) => Err(UnknownStack(unknown_stack(s, &known))),
        None => Ok(()),
    }
}

/// Every stack name this host knows: those on the host, and those of the
/// desired state (valid or not) when it could be read.
pub fn known_names(layout: &Layout, desired: Option<&DesiredState>) -> BTreeSet<String> {
    let mut known = crate::observed::stacks_on_host(layout);
    if let Some(d) = desired {
        known.extend(d.stacks.keys().cloned());
        known.extend(d.invalid.iter().cloned());
    }
    known
}

/// "no stack `x` …; did you mean `y`?": the message for a stack name that
/// is neither in the desired state nor on this host, with the nearest known
/// name when one is close (edit distance at most 2, or a third of the name).
fn unknown_stack(stack: &str, known: &BTreeSet<String>) -> String {
    let limit = (stack.chars().count() / 3).max(2);
    let nearest = known
        .iter()
        .map(|k| (strsim::levenshtein(stack, k), k))
        .filter(|(d, _)| *d <= limit)
        .min();
    let mut out = format!("no stack `{stack}` in the desired state or on this host");
    match nearest {
        Some((_, k)) => out.push_str(&format!("; did you mean `{k}`?")),
        None if known.is_empty() => out.push_str(" (there are none)"),
        None => out.push_str(&format!(
            " (known: {})",
            known.iter().cloned().collect::<Vec<_>>().join(", ")
        )),
    }
    out
}

/// The name checked as a path component, as an I/O error (what the store's
/// callers return).
fn checked_name(stack: &str) -> std::io::Result<()> {
    crate::desired::check_stack_name(stack).map_err(|m| UnknownStack(m).into())
}

impl Host<'_> {
    /// [`check_known_all`] on this host.
    ///
    /// # Errors
    /// As [`check_known_all`].
    pub fn check_known(
        &self,
        desired: Option<&DesiredState>,
        stacks: &[String],
    ) -> Result<(), UnknownStack> {
        check_known_all(&self.layout, desired, stacks)
    }

    /// Takes the stack's lock, waiting (off the async threads, so the
    /// daemon's loop never blocks on it) for another process to finish with
    /// it, at most [`LOCK_WAIT`].
    ///
    /// # Errors
    /// The lock file cannot be opened, or the wait timed out (`TimedOut`).
    pub async fn lock(&self, name: &str) -> std::io::Result<StackLock> {
        self.lock_within(name, LOCK_WAIT).await
    }

    /// [`Host::lock`] with its own bound.
    ///
    /// # Errors
    /// As [`Host::lock`].
    pub async fn lock_within(&self, name: &str, wait: Duration) -> std::io::Result<StackLock> {
        if let Some(l) = self.store.try_lock(name)? {
            return Ok(l);
        }
        tracing::info!(
            stack = name,
            "another stackpin process is converging this stack; waiting for its lock"
        );
        let store = crate::state::LocalStore::new(&self.layout.root);
        let n = name.to_string();
        // A timed-out waiter thread takes the lock later and drops it at once.
        match tokio::time::timeout(wait, tokio::task::spawn_blocking(move || store.lock(&n))).await
        {
            Ok(joined) => joined.map_err(std::io::Error::other)?,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "another stackpin process has held the lock of {name} for more than {}",
                    humantime::format_duration(wait)
                ),
            )),
        }
    }

    /// Holds a stack: syncs skip it until [`Host::resume_stack`].
    /// Idempotent; records `hold` in history.
    ///
    /// # Errors
    /// Not a stack name, the lock, the hold file or the history line.
    pub fn hold_stack(
        &self,
        stack: &str,
        reason: &str,
        release_id: Option<String>,
    ) -> std::io::Result<String> {
        checked_name(stack)?;
        let _lock = self.store.lock(stack)?;
        self.hold_locked(stack, reason, release_id)
    }

    /// [`Host::hold_stack`] for a caller that already holds the stack's
    /// lock.
    ///
    /// # Errors
    /// As [`Host::hold_stack`].
    pub fn hold_locked(
        &self,
        stack: &str,
        reason: &str,
        release_id: Option<String>,
    ) -> std::io::Result<String> {
        checked_name(stack)?;
        self.store.set_hold(
            stack,
            &Hold {
                reason: reason.into(),
                at: now_rfc3339(),
                release_id: release_id.clone(),
            },
        )?;
        // Held on a release: that release's version, even before
        // current.json names it (a rollback holds, then records).
        let (env, version) = release_id
            .as_deref()
            .and_then(|id| crate::release::read_meta(&self.layout.release_dir(stack, id)).ok())
            .map(|m| (m.environment, m.version))
            .unwrap_or_else(|| self.env_of(stack));
        self.record(stack, &env, Action::Hold, &version, Status::Success, reason)?;
        Ok(format!(
            "{stack} is held: {reason}; `stackpin resume {stack}` lets git win again"
        ))
    }

    /// Lifts a hold. Records `resume` in history when there was one.
    ///
    /// # Errors
    /// Not a stack name, the lock, the hold file or the history line.
    pub fn resume_stack(&self, stack: &str) -> std::io::Result<String> {
        checked_name(stack)?;
        let _lock = self.store.lock(stack)?;
        self.resume_locked(stack)
    }

    /// [`Host::resume_stack`] for a caller that already holds the stack's
    /// lock.
    ///
    /// # Errors
    /// As [`Host::resume_stack`].
    pub fn resume_locked(&self, stack: &str) -> std::io::Result<String> {
        checked_name(stack)?;
        match self.store.hold(stack) {
            Ok(None) => return Ok(format!("{stack} is not held")),
            Ok(Some(_)) => {}
            // An unreadable hold is lifted too: resume is how a person
            // clears it.
            Err(e) => tracing::warn!(stack, "{e}; removing it"),
        }
        self.store.clear_hold(stack)?;
        let (env, version) = self.env_of(stack);
        self.record(stack, &env, Action::Resume, &version, Status::Success, "")?;
        Ok(format!(
            "{stack} resumed: the next sync converges it to git"
        ))
    }

    /// The environment and version current.json names (`-` when none).
    pub fn env_of(&self, stack: &str) -> (String, String) {
        match crate::release::read_current(&self.layout, stack)
            .ok()
            .flatten()
        {
            Some(c) => (c.environment, c.version),
            None => ("-".into(), "-".into()),
        }
    }
}
