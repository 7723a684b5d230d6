//! An [`Engine`] in memory, for unit tests of the pipeline and of crash
//! recovery: a registry of pullable digests, local images, compose projects
//! whose containers follow the compose files of the project directory, and
//! failures injected per operation. It models what the pipeline relies on —
//! `up` recreates a service only when its image changed, removes orphans,
//! and a container of a "crashing" image is exited — and nothing else.
//!
//! It reads the compose files `up` is given (YAML, `services.<svc>.image`,
//! later files win), so a release rendered by the real code runs here as it
//! would under compose.

use super::{CommandLog, ContainerInfo, Engine, Error, Masker, Progress, Project};
use crate::desired::image::ImageRef;
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// An operation of the engine, for [`MemoryEngine::fail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Ping,
    Pull,
    Containers,
    Exec,
    Network,
    Up,
    Down,
    ConfigCheck,
}

/// How the containers of an image behave once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Runs, no healthcheck.
    Runs,
    /// Runs and reports `healthy`.
    Healthy,
    /// Runs and reports `unhealthy`.
    Unhealthy,
    /// Exits with code 1 at once.
    Crashes,
}

#[derive(Debug, Default)]
struct State {
    /// Digests the registry has.
    registry: BTreeSet<String>,
    /// Digests present locally.
    images: BTreeSet<String>,
    behaviour: HashMap<String, Behaviour>,
    projects: BTreeMap<String, Vec<ContainerInfo>>,
    networks: BTreeSet<String>,
    /// Remaining injected failures per operation.
    failures: HashMap<Op, u32>,
    /// The next call of this op finds the engine gone (and it stays gone).
    stops_at: Option<Op>,
    unreachable: bool,
    calls: Vec<String>,
    next_id: u64,
    masker: Masker,
}

/// See the module documentation. Cheap to share behind a reference.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    state: Mutex<State>,
}

impl MemoryEngine {
    pub fn new() -> MemoryEngine {
        MemoryEngine::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The registry serves `pinned` (`repo@sha256:…`), whose containers
    /// behave as `b`.
    pub fn publish(&self, pinned: &str, b: Behaviour) -> &Self {
        let digest = digest_of(pinned);
        let mut s = self.lock();
        s.registry.insert(digest.clone());
        s.behaviour.insert(digest, b);
        self
    }

    /// The next `times` calls of `op` fail.
    pub fn fail(&self, op: Op, times: u32) -> &Self {
        *self.lock().failures.entry(op).or_default() += times;
        self
    }

    /// The next call of `op` finds the engine stopped, and so does every
    /// call after it (until `reachable(true)`): an engine that dies mid-stage.
    pub fn stop_at(&self, op: Op) -> &Self {
        self.lock().stops_at = Some(op);
        self
    }

    /// Every call fails as if the engine had stopped (until `reachable(true)`).
    pub fn reachable(&self, yes: bool) -> &Self {
        self.lock().unreachable = !yes;
        self
    }

    pub fn add_network(&self, name: &str) -> &Self {
        self.lock().networks.insert(name.to_string());
        self
    }

    /// What was called, in order: `up <project>`, `pull <digest>`, …
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// The containers of `project` as they are now.
    pub fn project(&self, project: &str) -> Vec<ContainerInfo> {
        self.lock()
            .projects
            .get(project)
            .cloned()
            .unwrap_or_default()
    }

    /// Removes one container, as `docker rm -f` would.
    pub fn remove_container(&self, project: &str, service: &str) {
        if let Some(cs) = self.lock().projects.get_mut(project) {
            cs.retain(|c| c.service != service);
        }
    }

    /// Records the call and applies reachability and injected failures.
    fn enter(&self, op: Op, what: String) -> Result<MutexGuard<'_, State>, Error> {
        let mut s = self.lock();
        s.calls.push(what.clone());
        if s.stops_at == Some(op) {
            s.stops_at = None;
            s.unreachable = true;
        }
        if s.unreachable {
            return Err(Error::Unavailable(format!("{what}: the engine is down")));
        }
        if let Some(n) = s.failures.get_mut(&op)
            && *n > 0
        {
            *n -= 1;
            return Err(match op {
                Op::Pull => Error::Pull {
                    image: what,
                    message: "injected failure".into(),
                },
                Op::Up | Op::Down | Op::ConfigCheck => Error::Compose {
                    command: what,
                    code: Some(1),
                    output: "injected failure\n".into(),
                },
                _ => Error::Unavailable(format!("{what}: injected failure")),
            });
        }
        Ok(s)
    }
}

fn digest_of(pinned: &str) -> String {
    ImageRef::parse(pinned)
        .ok()
        .and_then(|r| r.digest)
        .unwrap_or_else(|| pinned.to_string())
}

fn log(command: String) -> CommandLog {
    CommandLog {
        command,
        code: Some(0),
        output: String::new(),
        duration: Duration::ZERO,
    }
}

/// `from` merged into `into`: objects key by key, anything else replaced.
fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// service -> image of the compose files, later files winning.
fn services(p: &Project<'_>) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    for f in p.files {
        let path = p.dir.join(f);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Compose {
            command: format!("read {}", path.display()),
            code: Some(1),
            output: e.to_string(),
        })?;
        let v: serde_json::Value = serde_saphyr::from_str(&text).map_err(|e| Error::Compose {
            command: format!("parse {}", path.display()),
            code: Some(1),
            output: e.to_string(),
        })?;
        if let Some(svcs) = v.get("services").and_then(|s| s.as_object()) {
            for (name, def) in svcs {
                let image = def.get("image").and_then(|i| i.as_str());
                let entry = out.entry(name.clone()).or_insert_with(String::new);
                if let Some(i) = image {
                    *entry = i.to_string();
                }
            }
        }
    }
    Ok(out)
}

#[async_trait]
impl Engine for MemoryEngine {
    fn describe(&self) -> String {
        "in-memory engine".into()
    }

    fn add_secrets(&self, secrets: &[String]) {
        let mut s = self.lock();
        s.masker = s.masker.with(secrets);
    }

    fn mask(&self, text: &str) -> String {
        self.lock().masker.mask(text)
    }

    async fn ping(&self) -> Result<(), Error> {
        self.enter(Op::Ping, "ping".into()).map(|_| ())
    }

    async fn pull(&self, image: &ImageRef, progress: Progress<'_>) -> Result<(), Error> {
        let pinned = image.pinned().unwrap_or_else(|| image.to_string());
        let digest = image.digest.clone().unwrap_or_default();
        {
            let mut s = self.enter(Op::Pull, format!("pull {pinned}"))?;
            if !s.images.contains(&digest) {
                if !s.registry.contains(&digest) {
                    return Err(Error::Pull {
                        image: pinned,
                        message: "manifest unknown".into(),
                    });
                }
                s.images.insert(digest);
            }
        }
        progress(&format!("{pinned}: pulled"));
        Ok(())
    }

    async fn containers(&self, project: &str) -> Result<Vec<ContainerInfo>, Error> {
        let s = self.enter(Op::Containers, format!("containers {project}"))?;
        Ok(s.projects.get(project).cloned().unwrap_or_default())
    }

    async fn exec(&self, container: &str, cmd: &[String]) -> Result<(i64, String), Error> {
        drop(self.enter(Op::Exec, format!("exec {container} {}", cmd.join(" ")))?);
        Ok((0, String::new()))
    }

    /// The memory engine keeps no logs: empty for a container it knows.
    async fn logs(&self, container: &str, lines: usize) -> Result<String, Error> {
        drop(self.enter(Op::Containers, format!("logs {container} {lines}"))?);
        Ok(String::new())
    }

    async fn exec_to_file(
        &self,
        container: &str,
        cmd: &[String],
        _env: &[String],
        _user: Option<&str>,
        out: &std::path::Path,
    ) -> Result<(i64, u64, String), Error> {
        drop(self.enter(Op::Exec, format!("exec {container} {}", cmd.join(" ")))?);
        std::fs::write(out, b"dump").map_err(|source| Error::ExecOutput {
            container: container.to_string(),
            path: out.to_path_buf(),
            source,
        })?;
        Ok((0, 4, String::new()))
    }

    async fn network_exists(&self, name: &str) -> Result<bool, Error> {
        let s = self.enter(Op::Network, format!("network {name}"))?;
        Ok(s.networks.contains(name))
    }

    async fn up(&self, p: Project<'_>) -> Result<CommandLog, Error> {
        let wanted = services(&p)?;
        let what = format!("up {}", p.name);
        let mut s = self.enter(Op::Up, what.clone())?;
        let old = s.projects.remove(p.name).unwrap_or_default();
        let mut now = Vec::new();
        for (svc, image) in wanted {
            let digest = digest_of(&image);
            if !s.images.contains(&digest) {
                s.projects.insert(p.name.to_string(), old);
                return Err(Error::Compose {
                    command: what,
                    code: Some(1),
                    output: format!("ERROR: pull access denied for {image}\n"),
                });
            }
            if let Some(c) = old
                .iter()
                .find(|c| c.service == svc && c.image == image && c.state == "running")
            {
                now.push(c.clone());
                continue;
            }
            let b = s.behaviour.get(&digest).copied().unwrap_or(Behaviour::Runs);
            s.next_id += 1;
            let (state, exit_code, health) = match b {
                Behaviour::Runs => ("running", None, None),
                Behaviour::Healthy => ("running", None, Some("healthy".to_string())),
                Behaviour::Unhealthy => ("running", None, Some("unhealthy".to_string())),
                Behaviour::Crashes => ("exited", Some(1), None),
            };
            now.push(ContainerInfo {
                id: format!("mem{:04}", s.next_id),
                name: format!("{}-{svc}-1", p.name),
                service: svc.clone(),
                image: image.clone(),
                image_id: digest.clone(),
                repo_digests: vec![image.clone()],
                state: state.to_string(),
                health,
                health_log: None,
                restart_count: 0,
                started_at: None,
                exit_code,
                labels: [
                    (super::PROJECT_LABEL.to_string(), p.name.to_string()),
                    (super::SERVICE_LABEL.to_string(), svc.clone()),
                ]
                .into(),
                networks: vec![super::Endpoint {
                    network: format!("{}_default", p.name),
                    aliases: vec![svc],
                    ip: None,
                }],
            });
        }
        s.projects.insert(p.name.to_string(), now);
        Ok(log(what))
    }

    async fn down(&self, p: Project<'_>) -> Result<CommandLog, Error> {
        let what = format!("down {}", p.name);
        let mut s = self.enter(Op::Down, what.clone())?;
        s.projects.remove(p.name);
        Ok(log(what))
    }

    /// The project's files merged (objects key by key, later files win):
    /// no interpolation, paths as written.
    async fn config_model(&self, p: Project<'_>) -> Result<(CommandLog, serde_json::Value), Error> {
        let what = format!("config {}", p.name);
        drop(self.enter(Op::ConfigCheck, what.clone())?);
        services(&p)?;
        let mut model = serde_json::Value::Null;
        for f in p.files {
            let path = p.dir.join(f);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let v: serde_json::Value = serde_saphyr::from_str(&text).unwrap_or_default();
            merge(&mut model, v);
        }
        Ok((log(what), model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str =
        "reg/app@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str =
        "reg/app@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn project(dir: &std::path::Path, image: &str) -> Vec<String> {
        std::fs::write(
            dir.join("c.yaml"),
            format!("services:\n  web: {{image: \"{image}\"}}\n  db: {{image: \"{A}\"}}\n"),
        )
        .unwrap();
        vec!["c.yaml".to_string()]
    }

    #[tokio::test]
    async fn up_recreates_only_what_changed_and_failures_are_injected() {
        let dir = tempfile::tempdir().unwrap();
        let e = MemoryEngine::new();
        e.publish(A, Behaviour::Runs).publish(B, Behaviour::Crashes);
        let files = project(dir.path(), A);
        let p = Project {
            name: "s",
            dir: dir.path(),
            files: &files,
            steps: &[],
        };
        let none = |_: &str| {};
        assert!(e.up(p).await.is_err(), "images must be pulled first");
        e.pull(&ImageRef::parse(A).unwrap(), &none).await.unwrap();
        e.up(p).await.unwrap();
        let first = e.project("s");
        assert_eq!(first.len(), 2);
        e.pull(&ImageRef::parse(B).unwrap(), &none).await.unwrap();
        let files = project(dir.path(), B);
        let p = Project { files: &files, ..p };
        e.up(p).await.unwrap();
        let second = e.project("s");
        let db = |cs: &[ContainerInfo]| cs.iter().find(|c| c.service == "db").unwrap().id.clone();
        assert_eq!(db(&first), db(&second), "db unchanged, not recreated");
        let web = second.iter().find(|c| c.service == "web").unwrap();
        assert_eq!((web.state.as_str(), web.exit_code), ("exited", Some(1)));
        e.fail(Op::Up, 1);
        assert!(e.up(p).await.is_err());
        e.up(p).await.unwrap();
        e.reachable(false);
        assert!(matches!(e.ping().await, Err(Error::Unavailable(_))));
    }
}
