//! `engine: swarm`: a stack deployed with `docker stack deploy` on this host,
//! a Swarm manager, from the same immutable release; its tasks run on the
//! swarm's nodes. Pure checks of what Swarm cannot do as written, each
//! refused by name at validate time rather than ignored at deploy time
//! (`docker stack deploy` drops `build`, `container_name`, `network_mode`,
//! … with a line on stderr at most), the `update_config` stackpin gives
//! each service, and the order in which `depends_on` has stackpin deploy
//! the services ([`levels`]), since Swarm starts every service at once.
//!
//! What stays stackpin's: the pins, the gate, the smoke (the tasks of the
//! new spec running, as many as the service wants, then the HTTP/TCP
//! checks), and the revert of the **whole stack** to the previous release
//! when the smoke fails. Swarm's own `failure_action` is `pause`: Swarm
//! rolls back one service at a time, and `docker stack deploy` reports
//! success after an automatic rollback.

use super::compose::{Compose, volume_parts};
use super::finding::Sink;
use super::spec::{Check, Order, StackSpec};
use serde_json::Value;

/// Service keys `docker stack deploy` ignores or refuses, and what to write
/// instead (`build` is refused for every stack).
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "container_name",
        "remove it: a service's tasks are named by Swarm (`<stack>_<service>.<slot>`)",
    ),
    (
        "network_mode",
        "remove it: attach the service to an overlay network (or to the external network `host`)",
    ),
    (
        "links",
        "remove it: services reach each other by name on the stack's network",
    ),
    (
        "external_links",
        "remove it: attach the service to the other stack's network instead",
    ),
    (
        "volumes_from",
        "remove it: mount the same named volume in both services",
    ),
    (
        "restart",
        "remove it: write `deploy.restart_policy: {condition: on-failure}`",
    ),
    (
        "cgroup_parent",
        "remove it: Swarm services do not support it",
    ),
    ("devices", "remove it: Swarm services do not support it"),
    (
        "privileged",
        "remove it: Swarm services cannot be privileged",
    ),
    (
        "security_opt",
        "remove it: Swarm services do not support it",
    ),
    ("userns_mode", "remove it: Swarm services do not support it"),
];

/// The compose file's services, as `docker stack deploy` would take them.
/// Refused: the keys of [`UNSUPPORTED`], a compose file without a `version:
/// "3.x"` (the stack loader of Docker's CLI reads only those), and
/// `deploy.rollback_config` (the revert is stackpin's, for the whole stack),
/// `depends_on` in its long form (the stack loader reads a list only). A
/// cycle is refused for every engine (`load_stack`).
pub fn check_compose(compose: &Compose, sink: &mut Sink<'_>) {
    let version = match compose.value.get("version") {
        Some(Value::String(v)) => Some(v.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    if !version
        .as_deref()
        .is_some_and(|v| v == "3" || v.starts_with("3."))
    {
        sink.error(
            "version",
            match &version {
                Some(v) => format!("is \"{v}\"; `docker stack deploy` reads version 3 files only"),
                None => "is missing; `docker stack deploy` reads version 3 files only".to_string(),
            },
            "write `version: \"3.8\"` at the top of the compose file",
        );
    }
    for (name, def) in compose.services() {
        if compose.inactive.contains(name) {
            continue;
        }
        for (key, fix) in UNSUPPORTED {
            if def.get(*key).is_some() {
                sink.error(
                    format!("services.{name}.{key}"),
                    format!("`{key}` is not supported by `engine: swarm`"),
                    *fix,
                );
            }
        }
        for (i, v) in def
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if volume_parts(v).is_some_and(|p| p.kind == "bind") {
                sink.error(
                    format!("services.{name}.volumes[{i}]"),
                    "a bind mount reads this host's files; a Swarm task may run on any node",
                    "ship the file with a top-level `configs:` entry (`file: ./config/x`, which `docker stack deploy` stores in the swarm) and mount it with the service's `configs:`",
                );
            }
        }
        if def.pointer("/deploy/rollback_config").is_some() {
            sink.error(
                format!("services.{name}.deploy.rollback_config"),
                "Swarm's own rollback is not used by `engine: swarm`".to_string(),
                "remove it: when the smoke fails, stackpin deploys the previous release of the whole stack",
            );
        }
        if def.get("depends_on").is_some_and(Value::is_object) {
            sink.error(
                format!("services.{name}.depends_on"),
                "the long form (with `condition:`) is not read by `docker stack deploy`, whose compose files are version 3",
                "write the list form, `depends_on: [db]`: stackpin deploys `db` first and waits until its tasks run (healthy, when it has a healthcheck)",
            );
        }
    }
}

/// The active services in the order `depends_on` asks stackpin to deploy
/// them: each level after every level its services depend on, names sorted
/// within a level. One level when nothing depends on anything. A dependency
/// on a service the file does not define (or leaves out by profile) is not
/// an edge here: compose's checks report it. Pure.
///
/// # Errors
/// A cycle, as `a -> b -> a`.
pub fn levels(compose: &Compose) -> Result<Vec<Vec<String>>, String> {
    use std::collections::{BTreeMap, BTreeSet};
    let active: BTreeSet<&str> = compose
        .services()
        .map(|(n, _)| n)
        .filter(|n| !compose.inactive.contains(*n))
        .collect();
    let mut deps: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, def) in compose.services().filter(|(n, _)| active.contains(n)) {
        let named: Vec<&str> = match def.get("depends_on") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            Some(Value::Object(m)) => m.keys().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        deps.insert(
            name,
            named.into_iter().filter(|d| active.contains(d)).collect(),
        );
    }
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    while placed.len() < deps.len() {
        let level: Vec<&str> = deps
            .iter()
            .filter(|(n, d)| !placed.contains(*n) && d.iter().all(|x| placed.contains(x)))
            .map(|(n, _)| *n)
            .collect();
        if level.is_empty() {
            return Err(cycle_of(&deps, &placed));
        }
        placed.extend(level.iter().copied());
        out.push(level.into_iter().map(str::to_string).collect());
    }
    Ok(out)
}

/// One cycle among the services not yet placed, as `a -> b -> a`: walking
/// from the first of them along unplaced dependencies must come back to a
/// service already on the path.
fn cycle_of(
    deps: &std::collections::BTreeMap<&str, std::collections::BTreeSet<&str>>,
    placed: &std::collections::BTreeSet<&str>,
) -> String {
    let mut path: Vec<&str> = Vec::new();
    let mut cur = deps.keys().copied().find(|n| !placed.contains(n));
    while let Some(n) = cur {
        if let Some(i) = path.iter().position(|p| *p == n) {
            let mut cycle = path[i..].to_vec();
            cycle.push(n);
            return cycle.join(" -> ");
        }
        path.push(n);
        cur = deps[n].iter().copied().find(|d| !placed.contains(d));
    }
    path.join(" -> ")
}

/// The stack.yaml settings that need a container on this host, refused for a
/// Swarm stack (whose tasks may run on any node).
pub fn check_spec(spec: &StackSpec, sink: &mut Sink<'_>) {
    if spec.backup.is_some() {
        sink.error(
            "backup",
            "backups are not supported with `engine: swarm` (the databases' tasks may run on another node)",
            "remove `backup:`, or back up the database from a compose stack on its node",
        );
    }
    if let Some(u) = &spec.update {
        if u.drain.is_some() {
            sink.error(
                "update.drain",
                "`drain` is for compose stacks; Swarm replaces tasks itself",
                "remove it (`update.order: start-first` gives Swarm's `update_config.order`)",
            );
        }
        if !u.reload.is_empty() {
            sink.error(
                "update.reload",
                "`reload` runs in a container on this host; a Swarm service's tasks may run on any node",
                "remove it: route through the service's name (Swarm's virtual IP follows the tasks)",
            );
        }
        for (svc, s) in &u.services {
            if !s.shared_volumes.is_empty() {
                sink.error(
                    format!("update.services.{svc}.shared_volumes"),
                    "`shared_volumes` is for compose stacks",
                    "remove it",
                );
            }
        }
    }
    for (i, c) in spec.smoke.iter().flat_map(|s| s.checks.iter()).enumerate() {
        match c {
            Check::Exec(_) => sink.error(
                format!("smoke.checks[{i}].exec"),
                "an `exec` check runs in a container on this host; a Swarm service's tasks may run on any node",
                "use an `http` or `tcp` check against an address the service publishes",
            ),
            Check::Http(h) if h.service.is_some() => sink.error(
                format!("smoke.checks[{i}].http.service"),
                "an `http` check by `service` needs the address of a container on this host",
                "give the check a `url:` the service publishes (its routing-mesh port on any node)",
            ),
            _ => {}
        }
    }
}

/// The `update_config` stackpin writes for `service` of a Swarm stack: one
/// task at a time, in the order `update:` gives it (stop-first by default,
/// as Swarm's), `failure_action: pause` (stackpin reverts the whole stack),
/// and a monitor window in which a task that fails counts against the
/// update.
pub fn update_config(spec: &StackSpec, service: &str) -> Value {
    let order = spec
        .update
        .as_ref()
        .and_then(|u| u.services.get(service).and_then(|s| s.order).or(u.order))
        .unwrap_or(Order::StopFirst);
    serde_json::json!({
        "parallelism": 1,
        "order": match order {
            Order::StartFirst => "start-first",
            Order::StopFirst => "stop-first",
        },
        "failure_action": "pause",
        "monitor": "5s",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::finding::Finding;

    fn compose(yaml: &str) -> Compose {
        Compose {
            value: serde_saphyr::from_str(yaml).unwrap(),
            resolved: false,
            inactive: Default::default(),
        }
    }

    fn findings_of(f: impl FnOnce(&mut Sink<'_>)) -> Vec<Finding> {
        let mut out = Vec::new();
        f(&mut Sink::new(
            Some("web"),
            "stacks/web/compose.yaml",
            &mut out,
        ));
        out
    }

    #[test]
    fn refuses_what_stack_deploy_ignores_by_name() {
        let c = compose(
            "version: \"3.8\"\nservices:\n  web:\n    image: x\n    build: .\n    container_name: web\n    depends_on: [db]\n    restart: always\n    volumes: [\"data:/data\", \"./conf:/etc/conf:ro\"]\n  db:\n    image: y\n    network_mode: host\n    deploy: {rollback_config: {parallelism: 1}}\n",
        );
        let f = findings_of(|s| check_compose(&c, s));
        let fields: Vec<&str> = f.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "services.web.container_name",
                "services.web.restart",
                "services.web.volumes[1]",
                "services.db.network_mode",
                "services.db.deploy.rollback_config",
            ]
        );
        assert!(f.iter().all(|f| !f.fix.is_empty()), "{f:?}");
        assert!(f[1].fix.contains("restart_policy"), "{}", f[1].fix);
    }

    #[test]
    fn depends_on_orders_the_services_in_levels() {
        let c = compose(
            "version: \"3.8\"\nservices:\n  web: {image: x, depends_on: [api, cache]}\n  api: {image: x, depends_on: [db]}\n  db: {image: y}\n  cache: {image: z}\n  worker: {image: w, depends_on: [db, debug]}\n  debug: {image: d, depends_on: [web]}\n",
        );
        // One level: nothing depends on anything.
        let flat = compose("version: \"3.8\"\nservices:\n  b: {image: x}\n  a: {image: y}\n");
        assert_eq!(levels(&flat).unwrap(), [vec!["a", "b"]]);
        // `debug` is left out by its profile: no edge to it.
        let mut c2 = c.clone();
        c2.inactive.insert("debug".into());
        assert_eq!(
            levels(&c2).unwrap(),
            [vec!["cache", "db"], vec!["api", "worker"], vec!["web"]]
        );
        assert_eq!(
            levels(&c).unwrap(),
            [
                vec!["cache", "db"],
                vec!["api"],
                vec!["web"],
                vec!["debug"],
                vec!["worker"]
            ]
        );
        assert!(findings_of(|s| check_compose(&c, s)).is_empty());
    }

    #[test]
    fn depends_on_in_a_cycle_or_in_the_long_form_is_refused() {
        let cyc = compose(
            "version: \"3.8\"\nservices:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [c]}\n  c: {image: x, depends_on: [a]}\n  d: {image: x}\n",
        );
        assert_eq!(levels(&cyc).unwrap_err(), "a -> b -> c -> a");
        let own = compose("version: \"3.8\"\nservices:\n  a: {image: x, depends_on: [a]}\n");
        assert_eq!(levels(&own).unwrap_err(), "a -> a");
        // The refusal itself is every engine's (`load_stack`), said once.
        assert!(findings_of(|s| check_compose(&cyc, s)).is_empty());
        let long = compose(
            "version: \"3.8\"\nservices:\n  web: {image: x, depends_on: {db: {condition: service_healthy}}}\n  db: {image: y}\n",
        );
        let f = findings_of(|s| check_compose(&long, s));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].field, "services.web.depends_on");
        assert!(f[0].fix.contains("depends_on: [db]"), "{}", f[0].fix);
        // The order is still known, for the error's sake.
        assert_eq!(levels(&long).unwrap(), [vec!["db"], vec!["web"]]);
    }

    #[test]
    fn a_compose_file_for_swarm_says_version_3() {
        for (yaml, ok) in [
            ("version: \"3.8\"\nservices: {}\n", true),
            ("version: 3\nservices: {}\n", true),
            ("version: \"2.4\"\nservices: {}\n", false),
            ("services: {}\n", false),
        ] {
            let f = findings_of(|s| check_compose(&compose(yaml), s));
            assert_eq!(f.is_empty(), ok, "{yaml}: {f:?}");
            if !ok {
                assert_eq!(f[0].field, "version");
                assert!(f[0].fix.contains("3.8"), "{}", f[0].fix);
            }
        }
    }

    #[test]
    fn inactive_services_are_not_checked() {
        let mut c = compose(
            "version: \"3.8\"\nservices:\n  web: {image: x}\n  debug: {image: y, build: .}\n",
        );
        c.inactive.insert("debug".into());
        assert!(findings_of(|s| check_compose(&c, s)).is_empty());
    }

    #[test]
    fn settings_that_need_a_local_container_are_refused() {
        let spec: StackSpec = serde_saphyr::from_str(
            "engine: swarm\nbackup: {volumes: [data]}\nupdate: {drain: 2s, reload: [{service: r, command: [x]}]}\nsmoke:\n  checks:\n    - exec: {service: web, command: [\"true\"]}\n    - http: {service: web, port: 80}\n    - http: {url: \"http://127.0.0.1:8080/\"}\n",
        )
        .unwrap();
        let f = findings_of(|s| check_spec(&spec, s));
        let fields: Vec<&str> = f.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "backup",
                "update.drain",
                "update.reload",
                "smoke.checks[0].exec",
                "smoke.checks[1].http.service",
            ]
        );
    }

    #[test]
    fn update_config_takes_the_order_and_pauses_on_failure() {
        let spec: StackSpec = serde_saphyr::from_str(
            "engine: swarm\nupdate: {order: start-first, services: {db: {order: stop-first}}}\n",
        )
        .unwrap();
        assert_eq!(update_config(&spec, "web")["order"], "start-first");
        assert_eq!(update_config(&spec, "db")["order"], "stop-first");
        assert_eq!(update_config(&spec, "web")["failure_action"], "pause");
        let plain = StackSpec::default();
        assert_eq!(update_config(&plain, "web")["order"], "stop-first");
        assert_eq!(plain.engine, crate::desired::spec::StackEngine::Compose);
    }
}
