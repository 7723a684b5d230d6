//! What the host runs: for each stack the symlink target, the release's
//! `release.json`, `current/<stack>.json`, and the containers of compose
//! project `<stack>`. Missing or corrupt files become `problems`; nothing here
//! panics on what it finds on disk.

use crate::engine::{ContainerInfo, Engine};
use crate::layout::Layout;
use crate::outcome::Health;
use crate::plan::{ObservedContainer, ObservedStack};
use crate::release::{self, CurrentRecord, ReleaseMeta};
use serde::Serialize;
use std::collections::BTreeSet;

#[derive(Debug, Clone, Default, Serialize)]
pub struct StackObservation {
    pub stack: String,
    /// Release id the symlink points at.
    pub release: Option<String>,
    pub meta: Option<ReleaseMeta>,
    pub current: Option<CurrentRecord>,
    #[serde(skip)]
    pub containers: Vec<ContainerInfo>,
    /// Whether `containers` were read now ([`observe`]), not just left
    /// empty ([`observe_files`], or the engine did not answer).
    #[serde(skip)]
    pub members_read: bool,
    pub problems: Vec<String>,
}

impl StackObservation {
    /// The health of what runs here, from its members as read now; `None`
    /// when they were not read.
    pub fn members_health(&self) -> Option<Health> {
        if !self.members_read {
            return None;
        }
        Some(match (&self.release, &self.meta) {
            (None, _) => Health::Missing,
            (Some(_), None) => Health::Unknown,
            (Some(_), Some(m)) => health_of_members(m.images.keys(), &self.containers),
        })
    }

    pub fn for_plan(&self) -> ObservedStack {
        ObservedStack {
            release: self.release.clone(),
            fingerprint: self.meta.as_ref().map(|m| m.fingerprint.clone()),
            images: self
                .meta
                .as_ref()
                .map(|m| m.images.clone())
                .unwrap_or_default(),
            containers: self
                .containers
                .iter()
                .map(|c| ObservedContainer {
                    service: c.service.clone(),
                    running: c.state == "running",
                    images: std::iter::once(c.image.clone())
                        .chain(c.repo_digests.iter().cloned())
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Stacks that have a symlink or releases under the root.
pub fn stacks_on_host(layout: &Layout) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for dir in [
        layout.root.join("stacks"),
        layout.root.join("releases").join("stacks"),
    ] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if let Some(n) = e.file_name().to_str()
                    && !n.starts_with('.')
                {
                    out.insert(n.to_string());
                }
            }
        }
    }
    out
}

/// Reads the files of one stack (no engine).
pub fn observe_files(layout: &Layout, stack: &str) -> StackObservation {
    let mut o = StackObservation {
        stack: stack.to_string(),
        ..Default::default()
    };
    match release::current(layout, stack) {
        Ok(Some(id)) => {
            let dir = layout.release_dir(stack, &id);
            match std::fs::read(dir.join("release.json")) {
                Ok(b) => match serde_json::from_slice::<ReleaseMeta>(&b) {
                    Ok(m) => o.meta = Some(m),
                    Err(e) => o
                        .problems
                        .push(format!("{}/release.json is corrupt: {e}", dir.display())),
                },
                Err(e) => o.problems.push(format!(
                    "{}/release.json cannot be read: {e}",
                    dir.display()
                )),
            }
            o.release = Some(id);
        }
        Ok(None) => {}
        Err(e) => o.problems.push(e.to_string()),
    }
    match release::read_current(layout, stack) {
        Ok(c) => o.current = c,
        Err(e) => o.problems.push(e.to_string()),
    }
    o
}

/// Reads the files of one stack and its members (as its release's runtime
/// lists them: containers, or a Swarm stack's tasks).
pub async fn observe(layout: &Layout, engine: &dyn Engine, stack: &str) -> StackObservation {
    let mut o = observe_files(layout, stack);
    let runtime = o.meta.as_ref().map_or(
        &crate::engine::runtime::ComposeRuntime as &dyn crate::engine::runtime::Runtime,
        ReleaseMeta::runtime,
    );
    match runtime.members(engine, stack).await {
        Ok(c) => {
            o.containers = c;
            o.members_read = true;
        }
        Err(e) => o
            .problems
            .push(format!("containers of {stack} cannot be listed: {e}")),
    }
    o
}

/// The health of a release's `services` from its members (containers, or a
/// Swarm stack's tasks). Pure. `Degraded` when a service has no running
/// member (one that exited 0, a one-shot job, counts as done; all of them
/// removed counts too: the release is linked, so something should run, and
/// `Missing` is for a stack with no release here), or one restarts or is
/// unhealthy; `Progressing` while a healthcheck is still starting; else
/// `Healthy`.
pub fn health_of_members<'a>(
    services: impl IntoIterator<Item = &'a String>,
    members: &[ContainerInfo],
) -> Health {
    let mut starting = false;
    for svc in services {
        let of: Vec<&ContainerInfo> = members.iter().filter(|c| &c.service == svc).collect();
        let running: Vec<&&ContainerInfo> = of.iter().filter(|c| c.state == "running").collect();
        let done = !of.is_empty()
            && of
                .iter()
                .all(|c| c.state == "exited" && c.exit_code == Some(0));
        if running.is_empty() && !done {
            return Health::Degraded;
        }
        if of.iter().any(|c| c.state == "restarting")
            || running
                .iter()
                .any(|c| c.health.as_deref() == Some("unhealthy"))
        {
            return Health::Degraded;
        }
        starting |= running
            .iter()
            .any(|c| c.health.as_deref() == Some("starting"));
    }
    if starting {
        Health::Progressing
    } else {
        Health::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(
        service: &str,
        state: &str,
        health: Option<&str>,
        exit: Option<i64>,
    ) -> ContainerInfo {
        ContainerInfo {
            service: service.into(),
            state: state.into(),
            health: health.map(str::to_string),
            exit_code: exit,
            ..Default::default()
        }
    }

    #[test]
    fn health_from_the_members_of_a_release() {
        let services = ["web".to_string(), "migrate".to_string()];
        let web = |state, health| member("web", state, health, None);
        let migrated = member("migrate", "exited", None, Some(0));
        let cases: Vec<(Vec<ContainerInfo>, Health)> = vec![
            (vec![], Health::Degraded),
            (
                vec![web("running", None), migrated.clone()],
                Health::Healthy,
            ),
            (
                vec![web("running", Some("healthy")), migrated.clone()],
                Health::Healthy,
            ),
            (
                vec![web("running", Some("starting")), migrated.clone()],
                Health::Progressing,
            ),
            (
                vec![web("running", Some("unhealthy")), migrated.clone()],
                Health::Degraded,
            ),
            (
                vec![web("restarting", None), migrated.clone()],
                Health::Degraded,
            ),
            (
                vec![web("exited", None), migrated.clone()],
                Health::Degraded,
            ),
            // A one-shot job that failed, or a service with no member.
            (
                vec![
                    web("running", None),
                    member("migrate", "exited", None, Some(1)),
                ],
                Health::Degraded,
            ),
            (vec![web("running", None)], Health::Degraded),
        ];
        for (members, want) in cases {
            assert_eq!(health_of_members(&services, &members), want, "{members:?}");
        }
    }
}
