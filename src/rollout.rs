//! Start-first replacement of a service (`update:` in stack.yaml): the new
//! container starts next to the old one and takes no traffic until it is
//! good, so a bad release costs its users nothing and a good one no
//! downtime.
//!
//! For each start-first service whose running container carries another
//! fingerprint than the release wants ([`plan`], pure):
//! 1. compose creates one more container of the service from the release
//!    (`up --no-start --no-deps --no-recreate --scale`), which leaves the
//!    old one running;
//! 2. before it starts, it is attached to its networks without the
//!    service's name and aliases: nobody resolving `app` reaches it;
//! 3. it starts and is judged directly: exited, restarting or `unhealthy`
//!    fails at once; `healthy` (or, without a healthcheck, running for
//!    [`crate::smoke::MIN_STABLE`]) plus the stack's `exec` checks for
//!    that service, run in this container, and its `http` checks that name
//!    the service (`service:` + `port:`), sent to this container's
//!    address, pass;
//! 4. failed: the new container is removed; the old one never stopped;
//! 5. passed: it gets its aliases back, the `update.reload` hooks run in
//!    the routing services' containers (a router that resolves its
//!    upstreams once now sees both), both serve for `update.drain` (the
//!    time a proxy needs to resolve the name again), then the old one is
//!    stopped (SIGTERM, its `stop_grace_period` to finish what it serves)
//!    and removed.
//!
//! Then the stage's ordinary `compose up` finds the service up to date.
//! Containers are found by labels, never names, so this runs the same
//! under compose v1 and v2.

use crate::desired::short_id as short;
use crate::desired::spec::{Check, ExecCheck, HttpCheck};
use crate::engine::{ContainerInfo, Engine, Project, Replace};
use crate::release::SERVICE_FINGERPRINT_LABEL;
use crate::smoke::Spec;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// How often the new container's state is looked at while it is judged,
/// at the latest: an engine event of the project (it died, turned healthy
/// or unhealthy) makes the next look at once.
pub const POLL: Duration = Duration::from_millis(200);
/// Stop grace of a container that never served (a refused or stale one).
pub const REFUSED_GRACE: Duration = Duration::from_secs(1);

/// One thing to do for a start-first service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a new container next to the running `old` ones; `stale` are
    /// the service's other containers (left by an interrupted earlier
    /// attempt, or stopped), removed first.
    Replace {
        service: String,
        old: Vec<String>,
        stale: Vec<String>,
    },
    /// A container of the wanted fingerprint that lacks the service's name
    /// on a network (an attempt interrupted after step 2): it gets the name
    /// back, and the stage's smoke judges it.
    Reveal { service: String, container: String },
}

/// What to do, from the release's wanted fingerprints and the project's
/// containers. A service without a running container of another
/// fingerprint needs nothing: compose `up` creates or keeps it.
pub fn plan(
    start_first: &[String],
    wanted: &BTreeMap<String, String>,
    containers: &[ContainerInfo],
) -> Vec<Action> {
    let mut out = Vec::new();
    for service in start_first {
        let Some(want) = wanted.get(service) else {
            continue;
        };
        let of: Vec<&ContainerInfo> = containers
            .iter()
            .filter(|c| &c.service == service)
            .collect();
        let is_wanted = |c: &ContainerInfo| c.labels.get(SERVICE_FINGERPRINT_LABEL) == Some(want);
        let old: Vec<String> = of
            .iter()
            .filter(|c| !is_wanted(c) && c.state == "running")
            .map(|c| c.id.clone())
            .collect();
        let current: Vec<&ContainerInfo> = of.iter().copied().filter(|c| is_wanted(c)).collect();
        if !old.is_empty() {
            // Everything but the running old ones goes first: compose's
            // --scale counts stopped containers too.
            out.push(Action::Replace {
                service: service.clone(),
                stale: of
                    .iter()
                    .filter(|c| !old.contains(&c.id))
                    .map(|c| c.id.clone())
                    .collect(),
                old,
            });
            continue;
        }
        for c in current {
            if c.state == "running" && hidden(c) {
                out.push(Action::Reveal {
                    service: service.clone(),
                    container: c.id.clone(),
                });
            }
        }
    }
    out
}

/// Whether the container lacks its service's name on some network.
/// The engine's start-first operations, or why it has none.
fn replace_ops(engine: &dyn Engine) -> Result<&dyn Replace, String> {
    crate::engine::require(engine, engine.replace(), "replace containers start-first")
        .map_err(|e| e.report())
}

fn hidden(c: &ContainerInfo) -> bool {
    c.networks
        .iter()
        .any(|n| !n.aliases.iter().any(|a| a == &c.service))
}

/// The aliases a container keeps while it is judged: only its own name and
/// short id, never the service's name or user aliases.
fn private_aliases(c: &ContainerInfo, aliases: &[String]) -> Vec<String> {
    aliases
        .iter()
        .filter(|a| **a == c.name || (a.len() >= 12 && c.id.starts_with(a.as_str())))
        .cloned()
        .collect()
}

/// Carries out `action`. Returns a line for the stage detail, or why the
/// new container was refused (it is then removed; the old one still runs).
///
/// # Errors
/// The reason, in words, for history and status.
pub async fn run(
    engine: &dyn Engine,
    project: Project<'_>,
    action: &Action,
    spec: &Spec,
) -> Result<String, String> {
    let ops = replace_ops(engine)?;
    match action {
        Action::Reveal { service, container } => {
            let cs = engine
                .containers(project.name)
                .await
                .map_err(|e| e.report())?;
            let c = cs
                .iter()
                .find(|c| &c.id == container)
                .ok_or_else(|| format!("{service}: container {} is gone", short(container)))?;
            for n in &c.networks {
                let mut aliases = n.aliases.clone();
                aliases.push(service.clone());
                ops.reconnect(&c.id, &n.network, &aliases)
                    .await
                    .map_err(|e| format!("{service}: {}", e.report()))?;
            }
            Ok(format!(
                "{service}: {} given its name back",
                short(container)
            ))
        }
        Action::Replace {
            service,
            old,
            stale,
        } => replace(engine, project, service, old, stale, spec).await,
    }
}

async fn replace(
    engine: &dyn Engine,
    project: Project<'_>,
    service: &str,
    old: &[String],
    stale: &[String],
    spec: &Spec,
) -> Result<String, String> {
    let ops = replace_ops(engine)?;
    let fail = |why: String| format!("{service}: {why}");
    for id in stale {
        ops.remove(id, Some(REFUSED_GRACE))
            .await
            .map_err(|e| fail(e.report()))?;
    }
    ops.create_more(project, service, old.len() + 1)
        .await
        .map_err(|e| fail(e.report()))?;
    let cs = engine
        .containers(project.name)
        .await
        .map_err(|e| fail(e.report()))?;
    let mut created = cs
        .iter()
        .filter(|c| c.service == service && c.state == "created" && !old.contains(&c.id));
    let (Some(new), None) = (created.next(), created.next()) else {
        return Err(fail(
            "compose did not create exactly one new container next to the old one".into(),
        ));
    };
    let new = new.clone();
    let verdict = judge(engine, project, service, &new, &spec.checks, spec.timeout()).await;
    if let Err(why) = verdict {
        if let Err(e) = ops.remove(&new.id, Some(REFUSED_GRACE)).await {
            tracing::warn!(
                stack = project.name,
                service,
                "failed to remove the refused container: {}",
                e.report()
            );
        }
        return Err(fail(format!(
            "the new container was refused before it took traffic ({why}); the old one kept serving"
        )));
    }
    let judged = verdict.unwrap_or_default();
    for n in &new.networks {
        ops.reconnect(&new.id, &n.network, &n.aliases)
            .await
            .map_err(|e| fail(e.report()))?;
    }
    // A router that resolved the service once learns the new address now,
    // while the old one still serves. A failed hook is not the new
    // container's fault: the reload stage after `up` runs it again and
    // judges it.
    let mut reloaded = String::new();
    if !spec.reload.is_empty() {
        match reload(engine, project.name, &spec.reload).await {
            Ok(lines) if !lines.is_empty() => reloaded = format!(", {}", lines.join(", ")),
            Ok(_) => {}
            Err(e) => tracing::warn!(stack = project.name, service, "{e}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(spec.drain_ms)).await;
    for id in old {
        ops.remove(id, None).await.map_err(|e| {
            fail(format!(
                "the new container serves, but the old one could not be removed: {}",
                e.report()
            ))
        })?;
    }
    Ok(format!(
        "{service}: {} {judged}{reloaded}, then replaced {} start-first",
        short(&new.id),
        old.iter().map(|o| short(o)).collect::<Vec<_>>().join(", ")
    ))
}

/// Runs each `update.reload` hook in every running container of its
/// service. Returns one `reloaded <service>` per container, or the first
/// failure, in words.
///
/// # Errors
/// The containers cannot be listed, or a hook exits non-zero or hangs.
pub async fn reload(
    engine: &dyn Engine,
    stack: &str,
    hooks: &[ExecCheck],
) -> Result<Vec<String>, String> {
    let cs = engine.containers(stack).await.map_err(|e| e.report())?;
    let mut done = Vec::new();
    for h in hooks {
        for c in cs
            .iter()
            .filter(|c| c.service == h.service && c.state == "running")
        {
            crate::smoke::exec_in(engine, &c.id, h).await.map_err(|f| {
                format!(
                    "{}: {} in {}: {f}",
                    h.service,
                    h.command.join(" "),
                    short(&c.id)
                )
            })?;
            done.push(format!("reloaded {}", h.service));
        }
    }
    Ok(done)
}

/// Hides the new container, starts it and waits for its verdict.
async fn judge(
    engine: &dyn Engine,
    project: Project<'_>,
    service: &str,
    new: &ContainerInfo,
    checks: &[Check],
    timeout: Duration,
) -> Result<String, String> {
    let ops = replace_ops(engine)?;
    for n in &new.networks {
        ops.reconnect(&new.id, &n.network, &private_aliases(new, &n.aliases))
            .await
            .map_err(|e| e.report())?;
    }
    // Listening before the start: its death or health verdict wakes the
    // judging loop at once instead of at the next poll.
    let mut watch = engine.watch(project.name);
    ops.start(&new.id).await.map_err(|e| e.report())?;
    let started = Instant::now();
    let deadline = started + timeout;
    let stable = crate::smoke::MIN_STABLE.min(timeout / 2);
    let execs: Vec<&ExecCheck> = checks
        .iter()
        .filter_map(|c| match c {
            Check::Exec(e) if e.service == service => Some(e),
            _ => None,
        })
        .collect();
    let https: Vec<&HttpCheck> = checks
        .iter()
        .filter_map(|c| match c {
            Check::Http(h) if h.service.as_deref() == Some(service) => Some(h),
            _ => None,
        })
        .collect();
    let client = crate::smoke::http_client().map_err(|e| e.0)?;
    let mut ready = false;
    let mut last = String::from("not running yet");
    loop {
        let cs = engine
            .containers(project.name)
            .await
            .map_err(|e| e.report())?;
        let Some(c) = cs.iter().find(|c| c.id == new.id) else {
            return Err("it was removed".into());
        };
        match (c.state.as_str(), c.health.as_deref()) {
            ("exited" | "dead", _) => {
                return Err(format!("it exited with code {}", c.exit_code.unwrap_or(-1)));
            }
            ("restarting", _) => return Err("it is restarting".into()),
            _ if c.restart_count > 0 => {
                return Err(format!("it restarted {} time(s)", c.restart_count));
            }
            ("running", Some("unhealthy")) => {
                return Err(format!(
                    "Docker reports it unhealthy {:.1}s after its start",
                    started.elapsed().as_secs_f64()
                ));
            }
            ("running", Some("healthy")) => ready = true,
            ("running", None)
                if crate::smoke::run_age(c, started, Instant::now(), chrono::Utc::now())
                    >= stable =>
            {
                ready = true
            }
            (s, h) => last = format!("{s}{}", h.map(|h| format!(" ({h})")).unwrap_or_default()),
        }
        if ready {
            let mut failed = None;
            for e in &execs {
                if let Err(f) = crate::smoke::exec_in(engine, &new.id, e).await {
                    failed = Some(format!("exec {}: {f}", e.command.join(" ")));
                    break;
                }
            }
            for h in &https {
                if failed.is_some() {
                    break;
                }
                let label = Check::Http((*h).clone()).label();
                let Some(url) = h.url_for(c.address().as_deref()) else {
                    failed = Some(format!("{label}: the new container has no address yet"));
                    break;
                };
                if let Err(f) = crate::smoke::http_check(&client, h, &url).await {
                    failed = Some(format!("{label}: {f}"));
                }
            }
            match failed {
                None => {
                    return Ok(format!(
                        "good after {:.1}s",
                        started.elapsed().as_secs_f64()
                    ));
                }
                Some(f) => {
                    last = f;
                    ready = false;
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "not good within {}: {last}",
                humantime::format_duration(timeout)
            ));
        }
        crate::smoke::wait_or_event(Instant::now() + POLL, &mut watch, project.name).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Endpoint;
    use std::collections::HashMap;

    fn c(id: &str, service: &str, fp: &str, state: &str, aliases: &[&str]) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            name: format!("p-{service}-{id}"),
            service: service.into(),
            image: String::new(),
            image_id: String::new(),
            repo_digests: vec![],
            state: state.into(),
            health: None,
            health_log: None,
            restart_count: 0,
            started_at: None,
            exit_code: None,
            labels: HashMap::from([(SERVICE_FINGERPRINT_LABEL.to_string(), fp.to_string())]),
            networks: vec![Endpoint {
                network: "p_default".into(),
                aliases: aliases.iter().map(|s| s.to_string()).collect(),
                ip: None,
            }],
        }
    }

    fn wanted() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app".to_string(), "new".to_string()),
            ("db".to_string(), "db1".to_string()),
        ])
    }

    #[test]
    fn only_start_first_services_running_another_fingerprint_are_replaced() {
        let cs = vec![
            c("a1", "app", "old", "running", &["app"]),
            c("d1", "db", "db0", "running", &["db"]),
        ];
        let start_first = vec!["app".to_string()];
        assert_eq!(
            plan(&start_first, &wanted(), &cs),
            vec![Action::Replace {
                service: "app".into(),
                old: vec!["a1".into()],
                stale: vec![],
            }]
        );
        // Up to date, or nothing running to keep serving: compose up's job.
        let cs = vec![c("a2", "app", "new", "running", &["app"])];
        assert!(plan(&start_first, &wanted(), &cs).is_empty());
        let cs = vec![c("a1", "app", "old", "exited", &["app"])];
        assert!(plan(&start_first, &wanted(), &cs).is_empty());
        // A stopped container next to the running one goes first (compose's
        // --scale would count it).
        let cs = vec![
            c("a0", "app", "older", "exited", &["app"]),
            c("a1", "app", "old", "running", &["app"]),
        ];
        assert_eq!(
            plan(&start_first, &wanted(), &cs),
            vec![Action::Replace {
                service: "app".into(),
                old: vec!["a1".into()],
                stale: vec!["a0".into()],
            }]
        );
        assert!(plan(&start_first, &wanted(), &[]).is_empty());
    }

    #[test]
    fn leftovers_of_an_interrupted_attempt_are_removed_or_given_their_name_back() {
        let start_first = vec!["app".to_string()];
        let cs = vec![
            c("a1", "app", "old", "running", &["app"]),
            c("a2", "app", "new", "running", &["p-app-a2"]),
        ];
        assert_eq!(
            plan(&start_first, &wanted(), &cs),
            vec![Action::Replace {
                service: "app".into(),
                old: vec!["a1".into()],
                stale: vec!["a2".into()],
            }]
        );
        let cs = vec![c("a2", "app", "new", "running", &["p-app-a2"])];
        assert_eq!(
            plan(&start_first, &wanted(), &cs),
            vec![Action::Reveal {
                service: "app".into(),
                container: "a2".into()
            }]
        );
    }

    #[test]
    fn a_judged_container_keeps_only_its_own_names() {
        let mut x = c("0123456789abcdef", "app", "new", "created", &[]);
        x.name = "p-app-2".into();
        let aliases: Vec<String> = ["p-app-2", "app", "web", "0123456789ab"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            private_aliases(&x, &aliases),
            vec!["p-app-2", "0123456789ab"]
        );
    }
}
