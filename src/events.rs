//! What happened to a stack, as events for notifications. The reconcile
//! pipeline emits them at the moment a thing happens; a sink decides what to
//! send (and de-duplicates, so a person hears of a change once, not every
//! loop).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A deploy failed before or at the switch (preflight, backup, pull, compose), or a first deploy failed smoke.
    DeployFailed {
        stack: String,
        environment: String,
        version: String,
        reason: String,
    },
    /// A release failed smoke and the previous one runs again.
    RolledBack {
        stack: String,
        environment: String,
        failed_version: String,
        version: String,
        reason: String,
    },
    /// The failed fingerprint will not be retried until git changes or `--force`.
    Quarantined {
        stack: String,
        environment: String,
        version: String,
        fingerprint: String,
    },
    /// The promotion gate or the signature policy refused the desired state.
    Blocked {
        stack: String,
        environment: String,
        version: String,
        reason: String,
    },
    /// A deploy skipped the gate with break-glass.
    BreakGlass {
        stack: String,
        environment: String,
        version: String,
        reason: String,
    },
    /// A release converged (the sink turns this into "recovered" after a failure).
    Deployed {
        stack: String,
        environment: String,
        version: String,
    },
    /// An interrupted converge was finished or reverted at start.
    Recovered {
        stack: String,
        environment: String,
        version: String,
        note: String,
    },
}

impl Event {
    pub fn stack(&self) -> &str {
        match self {
            Event::DeployFailed { stack, .. }
            | Event::RolledBack { stack, .. }
            | Event::Quarantined { stack, .. }
            | Event::Blocked { stack, .. }
            | Event::BreakGlass { stack, .. }
            | Event::Deployed { stack, .. }
            | Event::Recovered { stack, .. } => stack,
        }
    }

    /// Whether the stack is in trouble after this event.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Event::DeployFailed { .. }
                | Event::RolledBack { .. }
                | Event::Quarantined { .. }
                | Event::Blocked { .. }
        )
    }

    /// One human line, used as the notification text.
    pub fn summary(&self) -> String {
        match self {
            Event::DeployFailed {
                stack,
                environment,
                version,
                reason,
            } => format!("{stack} ({environment}): deploy of {version} failed: {reason}"),
            Event::RolledBack {
                stack,
                environment,
                failed_version,
                version,
                reason,
            } => format!(
                "{stack} ({environment}): {failed_version} rolled back to {version}: {reason}"
            ),
            Event::Quarantined {
                stack,
                environment,
                version,
                fingerprint,
            } => format!(
                "{stack} ({environment}): {version} quarantined (fingerprint {}); fix git or `stackpin sync --force {stack}`",
                &fingerprint[..12.min(fingerprint.len())]
            ),
            Event::Blocked {
                stack,
                environment,
                version,
                reason,
            } => format!("{stack} ({environment}): {version} blocked: {reason}"),
            Event::BreakGlass {
                stack,
                environment,
                version,
                reason,
            } => format!("{stack} ({environment}): {version} deployed with BREAK_GLASS: {reason}"),
            Event::Deployed {
                stack,
                environment,
                version,
            } => format!("{stack} ({environment}): {version} deployed"),
            Event::Recovered {
                stack,
                environment,
                version,
                note,
            } => format!("{stack} ({environment}): recovered on {version}: {note}"),
        }
    }
}

/// Receives events. Implementations must not block the converge.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: Event);
}

/// Drops every event (one-shot commands without notifications configured).
pub struct NoEvents;

impl EventSink for NoEvents {
    fn emit(&self, _event: Event) {}
}
