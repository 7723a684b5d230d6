//! Why a stage failed. Each variant names the boundary it came from; the
//! stage it failed in is carried next to it ([`super::switch::Failed`]).
//! Messages read as "<what> failed: <why>", which is what history, status
//! and notifications show.

use crate::outcome::Stage;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The desired release could not be rendered on this host.
    #[error("preflight failed: {0}")]
    Render(#[from] super::inputs::RenderError),
    /// Disk space, external networks: each problem in words.
    #[error("preflight failed: {}", .0.join("; "))]
    Preflight(Vec<String>),
    #[error("backup failed: {0}")]
    Backup(#[from] crate::backup::Error),
    #[error("release-create failed: {}", report(.0))]
    Release(#[source] crate::release::Error),
    #[error("compose config rejected the release: {}", .0.report())]
    Config(#[source] crate::engine::Error),
    /// The host powers the model compose resolved asks for and this host
    /// does not grant (each names the file, the field, the power and the
    /// fix).
    #[error("refused by this host: {}", .0.join("; "))]
    Refused(Vec<String>),
    #[error("pull failed: {service}: {}", source.report())]
    Pull {
        service: String,
        #[source]
        source: crate::engine::Error,
    },
    #[error("journal cannot be written: {0}")]
    Journal(#[source] std::io::Error),
    #[error("switch failed: {}", report(.0))]
    Switch(#[source] crate::release::Error),
    #[error("up failed: {}", .0.report())]
    Up(#[source] crate::engine::Error),
    /// `logs`: the last lines of the containers that failed it (or of all,
    /// when none looks unwell), for the stage's output.
    #[error("smoke failed: {why}")]
    Smoke { why: String, logs: Option<String> },
    /// A start-first replacement refused its new container (or could not
    /// be carried out).
    #[error("start-first rollout failed: {0}")]
    Rollout(String),
    /// An `update.reload` hook failed or hung.
    #[error("reload failed: {0}")]
    Reload(String),
    #[error("{0}")]
    SmokeSpec(#[from] crate::smoke::SpecError),
    #[error("the record could not be written: {what}: {source}")]
    Record {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the record could not be written: current.json: {}", report(.0))]
    Current(#[source] crate::release::Error),
    #[error("switch back failed: {}", report(.0))]
    Revert(#[source] crate::release::Error),
    /// A restore could not stop the release that ran.
    #[error("stop failed: {}", .0.report())]
    Stop(#[source] crate::engine::Error),
    /// A restore could not put a volume or database back.
    #[error("restore failed: {0}")]
    Restore(#[source] crate::backup::Error),
    #[error("{stage}: the release has no readable release.json")]
    NoMeta { stage: Stage },
}

impl Error {
    /// What the compose command behind this error printed (masked, its
    /// tail), when one failed it; for a failed smoke, the containers' last
    /// log lines.
    pub fn command_output(&self) -> Option<&str> {
        match self {
            Error::Up(crate::engine::Error::Compose { output, .. })
            | Error::Config(crate::engine::Error::Compose { output, .. }) => Some(output),
            Error::Smoke {
                logs: Some(logs), ..
            } => Some(logs),
            _ => None,
        }
    }
}

/// `a: b: c` for an error and its causes.
pub fn report(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.ends_with(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}
