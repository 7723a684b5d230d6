//! Test-only fault switch, compiled in on purpose so the shipped binary is
//! the one the crash tests kill: with `STACKPIN_FAULT=<stage>[,<stage>…]` the
//! process aborts (no destructors, no cleanup, like SIGKILL) when it reaches a
//! named stage. Stages: `after-create`, `after-pull`, `after-journal`,
//! `after-switch`, `after-up`, `after-smoke`, `after-record`,
//! `revert-after-switch`, `revert-after-up`; manual rollback:
//! `rollback-after-switch`, `rollback-after-hold`; restore: `restore-after-data`.

pub const VAR: &str = "STACKPIN_FAULT";

/// Aborts the process if `stage` is named in `STACKPIN_FAULT`.
pub fn point(stage: &str) {
    if let Ok(v) = std::env::var(VAR)
        && v.split(',').any(|s| s.trim() == stage)
    {
        eprintln!("stackpin: fault injected at {stage}: aborting");
        std::process::abort();
    }
}
