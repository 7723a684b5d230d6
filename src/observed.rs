//! What the host runs: for each stack the symlink target, the release's
//! `release.json`, `current/<stack>.json`, and the containers of compose
//! project `<stack>`. Missing or corrupt files become `problems`; nothing here
//! panics on what it finds on disk.

use crate::engine::{ContainerInfo, Engine};
use crate::layout::Layout;
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
    pub problems: Vec<String>,
}

impl StackObservation {
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
        Ok(c) => o.containers = c,
        Err(e) => o
            .problems
            .push(format!("containers of {stack} cannot be listed: {e}")),
    }
    o
}
