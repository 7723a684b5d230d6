//! `update:` in `stack.yaml`: which services are replaced start-first, and
//! the checks that make that safe. A start-first service runs two
//! containers for a moment, so it must not hold anything two containers
//! cannot share: a fixed host port, a `container_name`, a fixed address,
//! the host's or another container's network namespace, more than one
//! replica. Each is refused by name. A writable named volume is shared by
//! both for a moment: fine for a filestore, not for a database, so it is a
//! warning. And an nginx config in the stack that resolves a start-first
//! service once, at start (an `upstream` server or a literal `proxy_pass`
//! host), would keep the old container's address: a warning too.

use super::compose::{Compose, volume_parts};
use super::finding::Sink;
use super::spec::{ExecCheck, Order, StackSpec};
use serde_json::Value;
use std::time::Duration;

/// How long old and new serve together when `update.drain` is not set.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(2);

/// What `update:` says, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// Services replaced start-first, in compose file order.
    pub start_first: Vec<String>,
    pub drain: Duration,
    /// `update.reload`: run in the named services' running containers after
    /// `up` replaced containers they route to.
    pub reload: Vec<ExecCheck>,
}

/// The effective order of every service, with findings for what cannot be.
pub fn check(
    spec: &StackSpec,
    compose: &Compose,
    compose_rel: &str,
    sink: &mut Sink<'_>,
) -> Rollout {
    let mut out = Rollout {
        start_first: Vec::new(),
        drain: DEFAULT_DRAIN,
        reload: Vec::new(),
    };
    let Some(u) = &spec.update else {
        return out;
    };
    if let Some(d) = &u.drain {
        match humantime::parse_duration(d) {
            Ok(d) if d <= Duration::from_secs(300) => out.drain = d,
            _ => sink.error(
                "update.drain",
                format!("\"{d}\" is not a duration of at most 5m"),
                "write e.g. `drain: 2s` (the time your proxy needs to see a new address)",
            ),
        }
    }
    for name in u.services.keys() {
        if !compose.has_service(name) {
            sink.error(
                format!("update.services.{name}"),
                format!("no service `{name}` in {compose_rel}"),
                format!("name one of: {}", compose.service_names().join(", ")),
            );
        }
    }
    for (name, svc) in compose.services() {
        let (order, field) = match u.services.get(name).and_then(|s| s.order) {
            Some(o) => (o, format!("update.services.{name}.order")),
            None => (
                u.order.unwrap_or(Order::StopFirst),
                "update.order".to_string(),
            ),
        };
        if order != Order::StartFirst {
            continue;
        }
        let problems = unshareable(svc);
        let shared: &[String] = u
            .services
            .get(name)
            .map_or(&[], |s| s.shared_volumes.as_slice());
        let written: Vec<String> = svc
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(volume_parts)
            .filter(|v| v.kind == "volume" && !v.source.is_empty() && !v.read_only)
            .map(|v| v.source.to_string())
            .collect();
        for v in shared.iter().filter(|v| !written.contains(v)) {
            sink.error(
                format!("update.services.{name}.shared_volumes"),
                format!("service `{name}` does not write to a named volume `{v}`"),
                format!(
                    "list only named volumes `{name}` mounts writable in {compose_rel}{}",
                    if written.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", written.join(", "))
                    }
                ),
            );
        }
        for v in written.iter().filter(|v| !shared.contains(v)) {
            sink.warn(
                field.clone(),
                format!(
                    "service `{name}` writes to the named volume `{v}`, which its old and new containers share for a moment during a start-first replacement",
                ),
                format!("fine for shared files (a filestore): say so with `update: {{services: {{{name}: {{order: start-first, shared_volumes: [{v}]}}}}}}`; a database or an append-only log must stay stop-first: `update: {{services: {{{name}: {{order: stop-first}}}}}}`"),
            );
        }
        for p in &problems {
            sink.error(
                field.clone(),
                format!("service `{name}` cannot be replaced start-first: {p}"),
                format!(
                    "set `update: {{services: {{{name}: {{order: stop-first}}}}}}`, or remove that from the service in {compose_rel}"
                ),
            );
        }
        if problems.is_empty() {
            if svc.get("healthcheck").is_none() {
                sink.warn(
                    field.clone(),
                    format!("service `{name}` has no healthcheck: its new container is judged only by staying up and by the stack's exec checks on it before it takes traffic"),
                    format!("add a `healthcheck:` to `{name}` in {compose_rel} (an image's own HEALTHCHECK also counts)"),
                );
            }
            out.start_first.push(name.to_string());
        }
    }
    for (i, h) in u.reload.iter().enumerate() {
        let field = format!("update.reload[{i}]");
        if !compose.has_service(&h.service) {
            sink.error(
                format!("{field}.service"),
                format!("no service `{}` in {compose_rel}", h.service),
                format!(
                    "name the service that routes to the others (e.g. the router): one of {}",
                    compose.service_names().join(", ")
                ),
            );
        } else if out.start_first.contains(&h.service) {
            sink.error(
                format!("{field}.service"),
                format!(
                    "`{}` is replaced start-first, but a reload hook runs in a container that stays",
                    h.service
                ),
                format!(
                    "keep `{}` stop-first (`update: {{services: {{{}: {{order: stop-first}}}}}}`), or reload another service",
                    h.service, h.service
                ),
            );
        }
        if h.command.is_empty() {
            sink.error(
                format!("{field}.command"),
                "is empty",
                "write the command as a list, e.g. [\"nginx\", \"-s\", \"reload\"]",
            );
        }
        if !h.service.is_empty() && !h.command.is_empty() {
            out.reload.push(h.clone());
        }
    }
    out
}

/// Warns about each nginx config among the stack's files that resolves a
/// start-first service (by its name or a network alias) once, when nginx
/// starts: a server in an `upstream` block, or a `proxy_pass` to a literal
/// host. After a start-first replacement such a router keeps sending to the
/// old container's address. `dir` is the stack directory (`stacks/<s>`).
pub fn check_routers(
    stack: &str,
    dir: &str,
    files: &std::collections::BTreeMap<String, Vec<u8>>,
    compose: &Compose,
    rollout: &Rollout,
    findings: &mut Vec<super::finding::Finding>,
) {
    // A reload hook makes the router resolve again once the new container
    // has the name (see `crate::rollout`).
    if rollout.start_first.is_empty() || !rollout.reload.is_empty() {
        return;
    }
    let mut names: Vec<(String, String)> = Vec::new(); // (name, service)
    for (svc, def) in compose.services() {
        if !rollout.start_first.iter().any(|s| s == svc) {
            continue;
        }
        names.push((svc.to_string(), svc.to_string()));
        for (_, net) in def
            .get("networks")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            for a in net
                .get("aliases")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                names.push((a.to_string(), svc.to_string()));
            }
        }
    }
    for (path, bytes) in files {
        if !path.ends_with(".conf") {
            continue;
        }
        let Ok(text) = std::str::from_utf8(bytes) else {
            continue;
        };
        for (line_no, host, how) in static_hosts(text) {
            let Some((_, svc)) = names.iter().find(|(n, _)| *n == host) else {
                continue;
            };
            let mut sink = Sink::new(Some(stack), format!("{dir}/{path}"), findings);
            sink.warn(
                format!("line {line_no}"),
                format!(
                    "nginx resolves `{host}` ({how}) once, when it starts: after a start-first replacement of `{svc}` it keeps sending to the old container's address"
                ),
                format!(
                    "resolve it per request through Docker's DNS: `resolver 127.0.0.11 valid=1s;` and `set $up http://{host}:PORT; proxy_pass $up;`, or reload the router (`update: {{reload: [{{service: ROUTER, command: [nginx, -s, reload]}}]}}`), or make `{svc}` stop-first"
                ),
            );
        }
    }
}

/// Hosts an nginx config resolves at start: `(line, host, how)`.
fn static_hosts(text: &str) -> Vec<(usize, String, &'static str)> {
    let mut out = Vec::new();
    let mut in_upstream = false;
    let mut depth = 0usize;
    let mut upstream_depth = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == ';')
            .filter(|w| !w.is_empty())
            .collect();
        for (k, w) in words.iter().enumerate() {
            let next = words.get(k + 1).copied().unwrap_or("");
            match *w {
                "upstream" if !next.is_empty() => {
                    in_upstream = true;
                    upstream_depth = depth;
                }
                "server" if in_upstream && !next.is_empty() && !next.contains('$') => {
                    let host = next.split(':').next().unwrap_or(next);
                    out.push((i + 1, host.to_string(), "an upstream server"));
                }
                "proxy_pass" if !next.is_empty() && !next.contains('$') => {
                    let rest = next.split_once("://").map_or(next, |(_, r)| r);
                    let host = rest.split(['/', ':']).next().unwrap_or(rest).to_string();
                    out.push((i + 1, host, "a literal proxy_pass host"));
                }
                _ => {}
            }
        }
        for c in line.chars() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if in_upstream && depth <= upstream_depth {
                        in_upstream = false;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// What a service holds that two containers of it cannot share.
fn unshareable(svc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if svc.get("container_name").is_some() {
        out.push("it has a `container_name`, which only one container can hold".to_string());
    }
    for p in svc
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(host) = fixed_host_port(p) {
            out.push(format!(
                "it publishes the fixed host port {host}, which only one container can bind (publish it from a router in front, or let the engine pick: `\"127.0.0.1::8000\"`)"
            ));
        }
    }
    if let Some(mode) = svc.get("network_mode").and_then(Value::as_str)
        && mode != "bridge"
        && mode != "default"
    {
        out.push(format!(
            "`network_mode: {mode}` gives it no network alias to move from the old container to the new one"
        ));
    }
    if let Some(nets) = svc.get("networks").and_then(Value::as_object) {
        for (net, cfg) in nets {
            for key in ["ipv4_address", "ipv6_address"] {
                if cfg.get(key).is_some() {
                    out.push(format!("`networks.{net}.{key}` is a fixed address, which only one container can hold"));
                }
            }
        }
    }
    let replicas = svc
        .get("deploy")
        .and_then(|d| d.get("replicas"))
        .or_else(|| svc.get("scale"))
        .and_then(Value::as_u64);
    if replicas.is_some_and(|n| n > 1) {
        out.push("it runs more than one replica (start-first replaces one container)".to_string());
    }
    out
}

/// The host port a `ports:` entry fixes, if it fixes one: `"8080:80"`,
/// `"127.0.0.1:8080:80"`, `{published: 8080}`; not `"80"` or
/// `"127.0.0.1::80"` (the engine picks a free port).
fn fixed_host_port(p: &Value) -> Option<String> {
    match p {
        Value::String(s) => {
            let s = s.split('/').next().unwrap_or(s);
            let parts: Vec<&str> = s.rsplitn(3, ':').collect();
            // rsplitn: [container, host, ip]
            let host = parts.get(1)?;
            (!host.is_empty()).then(|| host.to_string())
        }
        Value::Number(_) => None,
        Value::Object(m) => match m.get("published")? {
            Value::String(s) if s.is_empty() => None,
            v => Some(v.to_string().trim_matches('"').to_string()),
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::finding::{Finding, Severity};

    fn run(update: &str, compose: &str) -> (Rollout, Vec<Finding>) {
        let spec: StackSpec = serde_saphyr::from_str(update).unwrap();
        let value: Value = serde_saphyr::from_str(compose).unwrap();
        let c = Compose {
            value,
            ..Default::default()
        };
        let mut f = Vec::new();
        let r = check(
            &spec,
            &c,
            "compose.yaml",
            &mut Sink::new(Some("s"), "stack.yaml", &mut f),
        );
        (r, f)
    }

    #[test]
    fn start_first_is_per_service_and_default_is_stop_first() {
        let compose = "services:\n  router: {image: r, ports: [\"80:80\"]}\n  app: {image: a, healthcheck: {test: [CMD, 'true']}}\n  db: {image: p, volumes: ['data:/var/lib/postgresql']}\nvolumes: {data: {}}\n";
        let (r, f) = run("images: {}\n", compose);
        assert!(r.start_first.is_empty());
        assert!(f.is_empty(), "{f:?}");
        let (r, f) = run(
            "update: {drain: 1500ms, services: {app: {order: start-first}}}\n",
            compose,
        );
        assert_eq!(r.start_first, vec!["app"]);
        assert_eq!(r.drain, Duration::from_millis(1500));
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn reload_hooks_name_a_service_that_stays_and_a_command() {
        let compose = "services:\n  router: {image: r}\n  app: {image: a, healthcheck: {test: [CMD, 'true']}}\n";
        let (r, f) = run(
            "update: {services: {app: {order: start-first}}, reload: [{service: router, command: [nginx, -s, reload]}]}\n",
            compose,
        );
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(r.reload.len(), 1);
        assert_eq!(r.reload[0].command, vec!["nginx", "-s", "reload"]);
        let cases = [
            (
                "reload: [{service: nginx, command: [nginx, -s, reload]}]",
                "update.reload[0].service",
                "no service `nginx`",
            ),
            (
                "order: start-first, reload: [{service: app, command: [kill, -HUP, '1']}]",
                "update.reload[0].service",
                "replaced start-first",
            ),
            (
                "reload: [{service: router, command: []}]",
                "update.reload[0].command",
                "is empty",
            ),
        ];
        for (update, field, want) in cases {
            let (r, f) = run(&format!("update: {{{update}}}\n"), compose);
            let e: Vec<_> = f.iter().filter(|x| x.severity == Severity::Error).collect();
            assert_eq!(e.len(), 1, "{update}: {f:?}");
            assert_eq!(e[0].field, field, "{update}");
            assert!(e[0].message.contains(want), "{update}: {}", e[0].message);
            assert!(r.reload.iter().all(|h| !h.command.is_empty()), "{update}");
        }
    }

    #[test]
    fn what_two_containers_cannot_share_is_refused_by_name() {
        let cases = [
            (
                "router: {image: r, ports: [\"127.0.0.1:8080:80\"]}",
                "fixed host port 8080",
            ),
            (
                "router: {image: r, ports: [{target: 80, published: 8080}]}",
                "fixed host port 8080",
            ),
            ("router: {image: r, container_name: web}", "container_name"),
            (
                "router: {image: r, network_mode: host}",
                "network_mode: host",
            ),
            (
                "router: {image: r, networks: {default: {ipv4_address: 10.0.0.2}}}",
                "ipv4_address",
            ),
            (
                "router: {image: r, deploy: {replicas: 2}}",
                "more than one replica",
            ),
        ];
        for (svc, want) in cases {
            let compose = format!("services:\n  {svc}\nvolumes: {{data: {{}}}}\n");
            let (r, f) = run("update: {order: start-first}\n", &compose);
            assert!(r.start_first.is_empty(), "{svc}");
            let e: Vec<_> = f.iter().filter(|x| x.severity == Severity::Error).collect();
            assert_eq!(e.len(), 1, "{svc}: {f:?}");
            assert_eq!(e[0].field, "update.order");
            assert!(e[0].message.contains(want), "{svc}: {}", e[0].message);
            assert!(e[0].fix.contains("stop-first"), "{}", e[0].fix);
        }
    }

    #[test]
    fn shareable_ports_and_read_only_volumes_pass_and_a_missing_healthcheck_warns() {
        let compose = "services:\n  app: {image: a, ports: ['8000', '127.0.0.1::8000'], volumes: ['./c:/c:ro', 'cache:/cache:ro']}\nvolumes: {cache: {}}\n";
        let (r, f) = run("update: {services: {app: {order: start-first}}}\n", compose);
        assert_eq!(r.start_first, vec!["app"]);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(f[0].message.contains("no healthcheck"));
    }

    #[test]
    fn a_writable_named_volume_is_a_warning_not_a_refusal() {
        let compose = "services:\n  app: {image: a, healthcheck: {test: [CMD, 'true']}, volumes: ['data:/data']}\nvolumes: {data: {}}\n";
        let (r, f) = run("update: {order: start-first}\n", compose);
        assert_eq!(r.start_first, vec!["app"]);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(
            f[0].message.contains("named volume `data`"),
            "{}",
            f[0].message
        );
        assert!(f[0].fix.contains("shared_volumes: [data]"), "{}", f[0].fix);
        // Said to be shared: no warning. A volume it does not write: an error.
        let (r, f) = run(
            "update: {services: {app: {order: start-first, shared_volumes: [data]}}}\n",
            compose,
        );
        assert_eq!(r.start_first, vec!["app"]);
        assert!(f.is_empty(), "{f:?}");
        let (_, f) = run(
            "update: {services: {app: {order: start-first, shared_volumes: [data, logs]}}}\n",
            compose,
        );
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Error);
        assert_eq!(f[0].field, "update.services.app.shared_volumes");
        assert!(f[0].message.contains("`logs`"), "{}", f[0].message);
    }

    #[test]
    fn an_nginx_config_that_resolves_a_start_first_service_once_is_named() {
        let compose = "services:\n  router: {image: r}\n  app: {image: a, healthcheck: {test: [CMD, 'true']}, networks: {default: {aliases: [shop-app]}}}\n";
        let (r, _) = run("update: {services: {app: {order: start-first}}}\n", compose);
        let c = Compose {
            value: serde_saphyr::from_str(compose).unwrap(),
            ..Default::default()
        };
        let conf = "upstream a {\n    server shop-app:8000;\n}\nserver {\n  location / { proxy_pass http://app:8000/; }\n  location /x { set $u http://app:8000; proxy_pass $u; }\n  location /y { proxy_pass http://a; }\n}\n";
        let files = std::collections::BTreeMap::from([
            ("config/nginx.conf".to_string(), conf.as_bytes().to_vec()),
            ("config/other.txt".to_string(), conf.as_bytes().to_vec()),
        ]);
        let mut f = Vec::new();
        check_routers("s", "stacks/s", &files, &c, &r, &mut f);
        let got: Vec<(String, String)> = f
            .iter()
            .map(|x| (x.file.clone(), x.field.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "stacks/s/config/nginx.conf".to_string(),
                    "line 2".to_string()
                ),
                (
                    "stacks/s/config/nginx.conf".to_string(),
                    "line 5".to_string()
                ),
            ],
            "{f:?}"
        );
        assert!(
            f.iter()
                .all(|x| x.severity == Severity::Warning && x.fix.contains("resolver 127.0.0.11"))
        );
        // A reload hook makes the router resolve again: nothing to say.
        let (reloaded, _) = run(
            "update: {services: {app: {order: start-first}}, reload: [{service: router, command: [nginx, -s, reload]}]}\n",
            compose,
        );
        let mut f = Vec::new();
        check_routers("s", "stacks/s", &files, &c, &reloaded, &mut f);
        assert!(f.is_empty(), "{f:?}");
        // Resolved per request: nothing to say.
        let dynamic = "resolver 127.0.0.11 valid=1s;\nserver { location / { set $u http://app:8000; proxy_pass $u; } }\n";
        let files = std::collections::BTreeMap::from([(
            "nginx.conf".to_string(),
            dynamic.as_bytes().to_vec(),
        )]);
        let mut f = Vec::new();
        check_routers("s", "stacks/s", &files, &c, &r, &mut f);
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn unknown_services_and_bad_drains_are_named() {
        let (_, f) = run(
            "update: {drain: soon, services: {ap: {order: start-first}}}\n",
            "services:\n  app: {image: a}\n",
        );
        let fields: Vec<&str> = f.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(fields, vec!["update.drain", "update.services.ap"], "{f:?}");
        assert!(f[1].fix.contains("app"));
    }
}
