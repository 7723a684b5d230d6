//! What runs a stack on this host, as `engine:` in its `stack.yaml` names
//! it: compose on this host's engine, or `docker stack` on a Swarm manager.
//! The pipeline, the smoke and status ask a stack's [`Runtime`] (chosen
//! from the release's meta with [`of`]) to deploy, remove and list what
//! runs; a new runtime is one implementation here and one arm in [`of`].

use super::{CommandLog, ContainerInfo, Engine, Error, Project, require};
use crate::desired::spec::StackEngine;
use async_trait::async_trait;

/// How the smoke judges a fresh deploy ([`Runtime::gate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The containers `deploy` started are the new release's: every check
    /// runs from the start.
    Containers,
    /// `deploy` only asked an orchestrator to replace the members: the
    /// `containers` check runs first and the others once it has passed
    /// (before that, an `http` check could answer for the old release).
    Rollout,
}

/// What runs a stack's release.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// As `engine:` spells it.
    fn kind(&self) -> StackEngine;

    /// Starts or updates the project to what its files say. Idempotent.
    async fn deploy(&self, engine: &dyn Engine, p: Project<'_>) -> Result<CommandLog, Error>;

    /// Stops and removes what runs the project (never its volumes).
    /// Idempotent.
    async fn remove(&self, engine: &dyn Engine, p: Project<'_>) -> Result<CommandLog, Error>;

    /// What runs stack `stack` now, as containers, stopped ones included.
    /// Read-only.
    async fn members(&self, engine: &dyn Engine, stack: &str) -> Result<Vec<ContainerInfo>, Error>;

    /// How the smoke judges a fresh deploy.
    fn gate(&self) -> Gate;

    /// Whether the members run on this host's engine from this host's
    /// release directory: then stackpin replaces start-first services
    /// itself and records what each container mounts. (Swarm places tasks
    /// on any node and rolls them itself.)
    fn local(&self) -> bool;

    /// What a landed deploy adds to the stack's notes, beyond what stackpin
    /// did itself (`steps`: the release's [`super::swarm::Step`]s).
    fn deployed_note(&self, steps: &[super::swarm::Step]) -> Option<String>;
}

/// The runtime of a stack whose release says `engine: kind`.
pub fn of(kind: StackEngine) -> &'static dyn Runtime {
    match kind {
        StackEngine::Compose => &ComposeRuntime,
        StackEngine::Swarm => &SwarmRuntime,
    }
}

/// `docker compose` (or `docker-compose`) on this host's engine.
pub struct ComposeRuntime;

#[async_trait]
impl Runtime for ComposeRuntime {
    fn kind(&self) -> StackEngine {
        StackEngine::Compose
    }

    async fn deploy(&self, engine: &dyn Engine, p: Project<'_>) -> Result<CommandLog, Error> {
        engine.up(p).await
    }

    async fn remove(&self, engine: &dyn Engine, p: Project<'_>) -> Result<CommandLog, Error> {
        engine.down(p).await
    }

    async fn members(&self, engine: &dyn Engine, stack: &str) -> Result<Vec<ContainerInfo>, Error> {
        engine.containers(stack).await
    }

    fn gate(&self) -> Gate {
        Gate::Containers
    }

    fn local(&self) -> bool {
        true
    }

    fn deployed_note(&self, _steps: &[super::swarm::Step]) -> Option<String> {
        None
    }
}

/// `docker stack deploy` on this host, a Swarm manager ([`super::swarm`]):
/// the members are the stack's tasks on every node.
pub struct SwarmRuntime;

const SWARM: &str = "deploy `engine: swarm` stacks (`docker stack`)";

#[async_trait]
impl Runtime for SwarmRuntime {
    fn kind(&self) -> StackEngine {
        StackEngine::Swarm
    }

    async fn deploy(&self, engine: &dyn Engine, p: Project<'_>) -> Result<CommandLog, Error> {
        require(engine, engine.swarm(), SWARM)?.deploy(p).await
    }

    async fn remove(&self, engine: &dyn Engine, p: Project<'_>) -> Result<CommandLog, Error> {
        require(engine, engine.swarm(), SWARM)?.rm(p).await
    }

    async fn members(&self, engine: &dyn Engine, stack: &str) -> Result<Vec<ContainerInfo>, Error> {
        require(engine, engine.swarm(), SWARM)?.tasks(stack).await
    }

    fn gate(&self) -> Gate {
        Gate::Rollout
    }

    fn local(&self) -> bool {
        false
    }

    fn deployed_note(&self, steps: &[super::swarm::Step]) -> Option<String> {
        let order: String = steps
            .iter()
            .map(|s| format!("{} running, then ", s.services.join(", ")))
            .collect();
        Some(if order.is_empty() {
            "deployed to the swarm; its tasks are rolled one at a time".into()
        } else {
            format!(
                "deployed to the swarm in depends_on order ({order}the whole stack); its tasks are rolled one at a time"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::memory::MemoryEngine;

    #[test]
    fn each_engine_setting_has_its_runtime() {
        for kind in [StackEngine::Compose, StackEngine::Swarm] {
            assert_eq!(of(kind).kind(), kind);
        }
        assert_eq!(of(StackEngine::Swarm).gate(), Gate::Rollout);
        assert!(of(StackEngine::Compose).local());
    }

    /// An engine without `docker stack` refuses a Swarm stack by name
    /// instead of running compose on it.
    #[tokio::test]
    async fn a_swarm_stack_on_an_engine_without_swarm_is_unsupported() {
        let engine = MemoryEngine::new();
        let e = of(StackEngine::Swarm)
            .members(&engine, "s")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("docker stack"), "{e}");
    }
}
