//! `engine: swarm` (issue 14, parts 3 and 4) on a real three-node swarm:
//! the fleet's three engines (`scripts/setup.d/fleet.sh`), host 1 the
//! manager where stackpin runs, hosts 2 and 3 workers. The kernel here has
//! no IPVS, so there is no routing mesh: the stack's tasks listen on their
//! nodes' addresses (the external network `host`), one per node, behind a
//! real nginx on this machine that spreads requests over the three nodes
//! and, as a production router does, tries the next node when one refuses.
//!
//! An upgrade under load fails no request; a broken upgrade is reverted for
//! the whole stack (every service back on the previous release, not only
//! the one that failed); a node lost during an upgrade leaves the stack on
//! one release, the new or the old, never half-way, and status says which;
//! `depends_on` has stackpin deploy a service's dependencies first.

use crate::common;

use common::fleet::Fleet;
use common::{Fixtures, GitDaemon, TestHost};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// `docker -H <manager> ARGS…`, its stdout.
fn manager(args: &[&str]) -> String {
    let sock = std::env::var("STACKPIN_TEST_SWARM_MANAGER")
        .ok()
        .or_else(|| {
            let file =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-fleet.env");
            let text = std::fs::read_to_string(file).ok()?;
            common::parse_env_file(&text).remove("STACKPIN_TEST_SWARM_MANAGER")
        })
        .expect("STACKPIN_TEST_SWARM_MANAGER (scripts/setup.d/fleet.sh)");
    let out = Command::new("docker")
        .arg("-H")
        .arg(sock)
        .args(args)
        .output()
        .expect("docker");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The image a service of the stack runs now, by its spec.
fn service_image(stack: &str, service: &str) -> String {
    manager(&[
        "service",
        "inspect",
        "--format",
        "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
        &format!("{stack}_{service}"),
    ])
    .trim()
    .to_string()
}

/// The images of the tasks Swarm wants running for a service.
fn running_images(stack: &str, service: &str) -> Vec<String> {
    let mut v: Vec<String> = manager(&[
        "service",
        "ps",
        "--filter",
        "desired-state=running",
        "--no-trunc",
        "--format",
        "{{.Image}} {{.CurrentState}}",
        &format!("{stack}_{service}"),
    ])
    .lines()
    .map(|l| l.to_string())
    .collect();
    v.sort();
    v
}

/// Waits until the three nodes are `Ready` (a test before may have cut one
/// off: Swarm takes some seconds to see it back).
fn wait_for_three_nodes() {
    let ready = common::wait_for(Duration::from_secs(90), || {
        let n = manager(&["node", "ls", "--format", "{{.Status}} {{.Availability}}"])
            .lines()
            .filter(|l| l.trim() == "Ready Active")
            .count();
        (n == 3).then_some(())
    });
    assert!(
        ready.is_some(),
        "the swarm's nodes: {}",
        manager(&["node", "ls"])
    );
}

/// Removes the stack from the swarm, and a compose project of its name from
/// the manager's engine, when the test ends, passed or not.
struct StackGuard(String);

impl Drop for StackGuard {
    fn drop(&mut self) {
        manager(&["stack", "rm", &self.0]);
        let label = format!("label=com.docker.compose.project={}", self.0);
        for id in manager(&["ps", "-aq", "--filter", &label]).lines() {
            manager(&["rm", "-f", id]);
        }
    }
}

/// nginx on this machine in front of the three nodes' `port`, listening on
/// 127.0.0.1:`listen`: round robin, the next node on a refused or broken
/// connection (idempotent GETs only), a node that failed left out for 2 s.
struct Router(Child);

impl Router {
    fn start(h: &TestHost, fleet: &Fleet, port: u16, listen: u16) -> Router {
        let dir = h.tmp().join("nginx");
        std::fs::create_dir_all(&dir).unwrap();
        let servers: String = fleet
            .addresses()
            .iter()
            .map(|a| format!("    server {a}:{port} max_fails=1 fail_timeout=2s;\n"))
            .collect();
        let d = dir.display();
        std::fs::write(
            dir.join("nginx.conf"),
            format!(
                "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 512; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  upstream web {{\n{servers}  }}\n  server {{\n    listen 127.0.0.1:{listen};\n    location / {{\n      proxy_pass http://web;\n      proxy_next_upstream error timeout http_502 http_503;\n      proxy_connect_timeout 1s;\n      proxy_read_timeout 3s;\n    }}\n  }}\n}}\n"
            ),
        )
        .unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (scripts/setup.d/fleet.sh installs nginx-light)");
        Router(child)
    }
}

impl Drop for Router {
    /// SIGTERM, not SIGKILL: the master then stops its worker, which a
    /// SIGKILL would leave running (listening, holding the test's pipes).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// GETs through the router, one after another (about 100 a second),
/// until stopped and at least `min` were sent: how many, how many failed,
/// and the first failures.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<(u64, Vec<String>)>,
}

impl Load {
    fn start(listen: u16, min: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (s, n) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let mut failed = 0;
            let mut first = Vec::new();
            while !s.load(Ordering::Relaxed) || n.load(Ordering::Relaxed) < min {
                n.fetch_add(1, Ordering::Relaxed);
                // About 100 a second: a steady load, not one that starves
                // the three nodes of this machine's two cores.
                std::thread::sleep(Duration::from_millis(10));
                match common::http_get_within(listen, "/", Duration::from_secs(5)) {
                    Some((200, body)) if body.starts_with("stackpin-test-app") => {}
                    other => {
                        failed += 1;
                        if first.len() < 5 {
                            first.push(format!("{other:?}"));
                        }
                    }
                }
            }
            (failed, first)
        });
        Load { stop, sent, thread }
    }

    fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (failed, first) = self.thread.join().unwrap();
        (self.sent.load(Ordering::Relaxed), failed, first)
    }
}

/// The stack: `web` with `replicas` tasks, at most one per node, on each
/// node's address at `port`; `side`, one task on `side_port`; the smoke
/// waits for every task of the new spec and checks `/health` on every node.
#[allow(clippy::too_many_arguments)]
fn write_stack(
    h: &TestHost,
    fleet: &Fleet,
    stack: &str,
    web: &str,
    side: &str,
    replicas: u32,
    port: u16,
    side_port: u16,
    version: &str,
) {
    let checks: String = if replicas == 3 {
        fleet
            .addresses()
            .iter()
            .map(|a| format!("    - http: {{url: \"http://{a}:{port}/health\"}}\n"))
            .collect()
    } else {
        String::new()
    };
    h.write(
        format!("stacks/{stack}/stack.yaml"),
        format!(
            "version: {version}\nengine: swarm\nupdate: {{order: stop-first}}\nsmoke:\n  timeout: 60s\n  checks:\n    - containers: {{}}\n{checks}"
        ),
    );
    h.write(
        format!("stacks/{stack}/compose.yaml"),
        format!(
            "version: \"3.8\"\nservices:\n  web:\n    image: {web}\n    environment: {{BIND: \"0.0.0.0\", PORT: \"{port}\"}}\n    networks: [hostnet]\n    deploy:\n      replicas: {replicas}\n      placement: {{max_replicas_per_node: 1}}\n  side:\n    image: {side}\n    environment: {{BIND: \"0.0.0.0\", PORT: \"{side_port}\"}}\n    networks: [hostnet]\n    deploy: {{replicas: 1}}\nnetworks:\n  hostnet: {{external: true, name: host}}\n"
        ),
    );
}

/// The fleet with its three nodes ready, configured to converge `h`'s
/// repository (served on the bridge), and the name of stack `name`,
/// removed from the swarm when the guard drops.
fn on_the_swarm(h: &TestHost, name: &str) -> (Fleet, GitDaemon, String, StackGuard) {
    let fleet = Fleet::require(h);
    wait_for_three_nodes();
    let git = GitDaemon::serve_on(&fleet.bridge, h.tmp(), false);
    fleet.configure(&git.url("repo"), &["", "", ""], &[]);
    let stack = h.stack(name);
    let guard = StackGuard(stack.clone());
    (fleet, git, stack, guard)
}

#[test]
fn an_upgrade_fails_no_request_and_a_broken_one_reverts_the_whole_stack() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (fleet, _git, stack, _guard) = on_the_swarm(&h, "sw");
    let (port, side_port, listen) = (h.free_port(), h.free_port(), h.free_port());
    let (v1, v2, v3) = (
        fleet.image(&f, &f.v1),
        fleet.image(&f, &f.v2),
        fleet.image(&f, &f.v3),
    );
    write_stack(&h, &fleet, &stack, &v1, &v1, 3, port, side_port, "v1");
    h.commit("v1 on the swarm");
    let out = fleet.stackpin(&h, 0, &["sync"]).run().ok();
    assert!(out.stdout().contains("deployed"), "{}", out.report());
    for a in fleet.addresses() {
        let body = common::wait_for(Duration::from_secs(10), || {
            http_body(&format!("http://{a}:{port}/"))
        });
        assert_eq!(body.as_deref(), Some("stackpin-test-app v1\n"), "node {a}");
    }
    assert_eq!(service_image(&stack, "web"), v1);

    // v2 under load through the router: no request fails.
    let _router = Router::start(&h, &fleet, port, listen);
    assert!(
        common::wait_for(Duration::from_secs(10), || common::http_get(listen, "/")).is_some(),
        "the router answers"
    );
    write_stack(&h, &fleet, &stack, &v2, &v2, 3, port, side_port, "v2");
    h.commit("v2");
    let load = Load::start(listen, 1000);
    let out = fleet.stackpin(&h, 0, &["sync"]).run().ok();
    let (sent, failed, first) = load.finish();
    assert!(out.stdout().contains("deployed"), "{}", out.report());
    assert_eq!(failed, 0, "{failed} of {sent} requests failed: {first:?}");
    assert!(sent >= 1000, "{sent}");
    eprintln!("upgrade v1 -> v2 on 3 nodes: {sent} requests, {failed} failed");
    for a in fleet.addresses() {
        assert_eq!(
            http_body(&format!("http://{a}:{port}/")).as_deref(),
            Some("stackpin-test-app v2\n"),
            "node {a}"
        );
    }

    // A broken web (no /health) and a new side: the smoke fails, and the
    // whole stack goes back to v2, side included.
    write_stack(
        &h,
        &fleet,
        &stack,
        &fleet.image(&f, &f.broken),
        &v3,
        3,
        port,
        side_port,
        "v3",
    );
    h.commit("v3: web broken");
    let out = fleet.stackpin(&h, 0, &["sync"]).run().code(1);
    assert!(out.stdout().contains("rolled back"), "{}", out.report());
    assert_eq!(service_image(&stack, "web"), v2);
    assert_eq!(service_image(&stack, "side"), v2, "side is reverted too");
    let images = running_images(&stack, "web");
    assert_eq!(images.len(), 3, "{images:?}");
    assert!(
        images
            .iter()
            .all(|i| i.starts_with(&v2) && i.contains("Running")),
        "every web task runs v2: {images:?}"
    );
    assert_eq!(
        fleet.states(&h, 0)[&stack],
        ("rolled_back".to_string(), "v2".to_string())
    );
    let history = fleet.stackpin(&h, 0, &["history", &stack]).run().ok();
    assert!(
        history.stdout().contains("rollback"),
        "{}",
        history.report()
    );
    fleet.assert_consistent();
}

/// A worker cut off while an upgrade runs: Swarm moves its task to the
/// spare node and the rollout finishes, or the smoke fails and stackpin
/// reverts the whole stack. Either way every task Swarm wants runs the
/// image of the release the host recorded, and status says which.
#[test]
fn a_node_lost_during_an_upgrade_leaves_the_stack_on_one_release() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (fleet, _git, stack, _guard) = on_the_swarm(&h, "lost");
    let (port, side_port) = (h.free_port(), h.free_port());
    let (v1, v2) = (fleet.image(&f, &f.v1), fleet.image(&f, &f.v2));
    write_stack(&h, &fleet, &stack, &v1, &v1, 2, port, side_port, "v1");
    h.commit("v1: two replicas over three nodes");
    fleet.stackpin(&h, 0, &["sync"]).run().ok();

    write_stack(&h, &fleet, &stack, &v2, &v2, 2, port, side_port, "v2");
    h.commit("v2");
    let sync = fleet.stackpin(&h, 0, &["sync"]).spawn();
    std::thread::sleep(Duration::from_secs(2));
    let cut = fleet.cut(1);
    let out = sync.wait();
    let status = fleet
        .stackpin(&h, 0, &["--json", "status", &stack])
        .run()
        .ok()
        .json();
    let (state, version) = (
        status[0]["state"].as_str().unwrap_or_default().to_string(),
        status[0]["version"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    );
    let want = match (state.as_str(), version.as_str()) {
        ("converged", "v2") => &v2,
        ("rolled_back", "v1") | ("failed", "v1") => &v1,
        other => panic!("neither finished nor reverted: {other:?}\n{}", out.report()),
    };
    eprintln!("node lost during the upgrade: {state} on {version}");
    for svc in ["web", "side"] {
        assert_eq!(&service_image(&stack, svc), want, "{svc}: {}", out.report());
    }
    drop(cut);
    // Back on the network: the stack stays on that release, its tasks all
    // on its image once Swarm has reconciled the node that came back.
    let settled = common::wait_for(Duration::from_secs(60), || {
        let images = running_images(&stack, "web");
        (images.len() == 2
            && images
                .iter()
                .all(|i| i.starts_with(want.as_str()) && i.contains("Running")))
        .then_some(images)
    });
    assert!(settled.is_some(), "{:?}", running_images(&stack, "web"));
    fleet.assert_consistent();
    wait_for_three_nodes();
}

/// A stack of two services on `ports`, `web` with `depends_on: [side]`;
/// `side` binds `side_bind` and has a healthcheck that first runs 3 s after
/// its task starts, so Swarm calls the task running only then.
fn write_ordered_stack(
    h: &TestHost,
    stack: &str,
    (web, side, side_bind): (&str, &str, &str),
    (port, side_port): (u16, u16),
    version: &str,
) {
    h.write(
        format!("stacks/{stack}/stack.yaml"),
        format!("version: {version}\nengine: swarm\nsmoke:\n  timeout: 60s\n  checks:\n    - containers: {{}}\n"),
    );
    h.write(
        format!("stacks/{stack}/compose.yaml"),
        format!(
            "version: \"3.8\"\nservices:\n  web:\n    image: {web}\n    depends_on: [side]\n    environment: {{BIND: \"0.0.0.0\", PORT: \"{port}\"}}\n    networks: [hostnet]\n  side:\n    image: {side}\n    environment: {{BIND: \"{side_bind}\", PORT: \"{side_port}\"}}\n    networks: [hostnet]\n    healthcheck:\n      test: [\"CMD\", \"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:{side_port}/health\"]\n      interval: 3s\n      retries: 2\nnetworks:\n  hostnet: {{external: true, name: host}}\n"
        ),
    );
}

/// When Swarm says the running task of `service` became running
/// (RFC 3339, the manager's clock).
fn running_since(stack: &str, service: &str) -> String {
    let id = manager(&[
        "service",
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        "desired-state=running",
        &format!("{stack}_{service}"),
    ]);
    let id = id.lines().next().unwrap_or_default().to_string();
    manager(&[
        "inspect",
        "--format",
        "{{.Status.State}} {{.Status.Timestamp}}",
        &id,
    ])
    .trim()
    .strip_prefix("running ")
    .unwrap_or_else(|| panic!("{service}'s task {id} is not running"))
    .to_string()
}

/// The images of every task `service` has had, the exited ones included.
fn task_images(stack: &str, service: &str) -> Vec<String> {
    manager(&[
        "service",
        "ps",
        "--no-trunc",
        "--format",
        "{{.Image}}",
        &format!("{stack}_{service}"),
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

/// `depends_on` in a Swarm stack: stackpin deploys `side` first and deploys
/// `web` only once side's task runs (healthy); when the new side fails,
/// the rollout stops before `web` is touched and the whole stack is
/// reverted.
#[test]
fn depends_on_deploys_the_dependency_first_and_a_failed_one_stops_the_rollout() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (fleet, _git, stack, _guard) = on_the_swarm(&h, "dep");
    let (v1, v2) = (fleet.image(&f, &f.v1), fleet.image(&f, &f.v2));
    let ports = (h.free_port(), h.free_port());
    write_ordered_stack(&h, &stack, (&v1, &v1, "0.0.0.0"), ports, "v1");
    h.commit("v1: web depends on side");
    let out = fleet.stackpin(&h, 0, &["sync"]).run().ok();
    assert!(
        out.stderr()
            .contains("in depends_on order (side running, then the whole stack)"),
        "{}",
        out.report()
    );
    // web was created after side's task passed its healthcheck: with
    // stack deploy alone both are created at once.
    let side_running = running_since(&stack, "side");
    let web_created = manager(&[
        "service",
        "inspect",
        "--format",
        "{{.CreatedAt}}",
        &format!("{stack}_web"),
    ]);
    let t = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s.trim())
            .or_else(|_| chrono::DateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S%.f %z %Z"))
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
    };
    assert!(
        t(&web_created) > t(&side_running),
        "web created at {web_created}, side running since {side_running}"
    );

    // A sync that stops at side's step and reverts the stack to v1.
    let stopped_at_side_and_reverted_to_v1 = || {
        let out = fleet.stackpin(&h, 0, &["sync"]).run().code(1);
        assert!(out.stdout().contains("rolled back"), "{}", out.report());
        assert!(
            out.report()
                .contains("at step 1 of 2 (depends_on: side first): side: "),
            "{}",
            out.report()
        );
        assert_eq!(
            fleet.states(&h, 0)[&stack],
            ("rolled_back".to_string(), "v1".to_string())
        );
    };

    // v2 with a side that crashes: the step fails, web never runs v2, and
    // the whole stack is back on v1.
    let crash = fleet.image(&f, &f.crash);
    write_ordered_stack(&h, &stack, (&v2, &crash, "0.0.0.0"), ports, "v2");
    h.commit("v2: side crashes");
    stopped_at_side_and_reverted_to_v1();
    assert!(
        task_images(&stack, "web").iter().all(|i| i == &v1),
        "web never ran v2: {:?}",
        task_images(&stack, "web")
    );
    assert_eq!(service_image(&stack, "web"), v1);
    assert_eq!(service_image(&stack, "side"), v1);

    // v3 changes only side's environment, to an address it cannot bind:
    // same image, a new spec. The step waits for tasks of the new spec (not
    // those of the old one, same image), which fail: the stack is reverted.
    write_ordered_stack(&h, &stack, (&v1, &v1, "10.255.255.1"), ports, "v3");
    h.commit("v3: side binds an address it does not have");
    stopped_at_side_and_reverted_to_v1();
    let healthy = common::wait_for(Duration::from_secs(30), || {
        http_body(&format!("http://127.0.0.1:{}/health", ports.1)).or_else(|| {
            fleet
                .addresses()
                .iter()
                .find_map(|a| http_body(&format!("http://{a}:{}/health", ports.1)))
        })
    });
    assert_eq!(healthy.as_deref(), Some("ok\n"), "side serves again");
    fleet.assert_consistent();
}

/// The body of `http://<node>:port/` from the first node that answers.
fn from_any_node(fleet: &Fleet, port: u16) -> Option<String> {
    fleet
        .addresses()
        .iter()
        .find_map(|a| http_body(&format!("http://{a}:{port}/")))
}

/// `engine:` changed: a compose stack on the manager's engine becomes a
/// Swarm stack on the same port, and goes back. Each time the release
/// before is removed from its engine first (compose containers and Swarm
/// tasks cannot share the name and the port), and the next one serves.
#[test]
fn a_stack_moves_from_compose_to_swarm_and_back() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (fleet, _git, stack, _guard) = on_the_swarm(&h, "mv");
    let port = h.free_port();
    let write = |image: &str, swarm: bool, version: &str| {
        h.write(
            format!("stacks/{stack}/stack.yaml"),
            format!(
                "version: {version}\n{}smoke:\n  timeout: 60s\n  checks:\n    - containers: {{}}\n",
                if swarm { "engine: swarm\n" } else { "" }
            ),
        );
        let net = if swarm {
            "    networks: [hostnet]\nnetworks:\n  hostnet: {external: true, name: host}\n"
        } else {
            "    network_mode: host\n"
        };
        h.write(
            format!("stacks/{stack}/compose.yaml"),
            format!(
                "version: \"3.8\"\nservices:\n  web:\n    image: {image}\n    environment: {{BIND: \"0.0.0.0\", PORT: \"{port}\"}}\n{net}"
            ),
        );
    };
    let services = || {
        manager(&[
            "service",
            "ls",
            "-q",
            "--filter",
            &format!("label=com.docker.stack.namespace={stack}"),
        ])
    };
    write(&fleet.image(&f, &f.v1), false, "v1");
    h.commit("v1 with compose");
    fleet.stackpin(&h, 0, &["sync"]).run().ok();
    assert_eq!(fleet.running(0, &stack).len(), 1);
    assert_eq!(
        fleet.get(&h, 0, port).as_deref(),
        Some("stackpin-test-app v1\n")
    );

    write(&fleet.image(&f, &f.v2), true, "v2");
    h.commit("v2 on the swarm");
    let out = fleet.stackpin(&h, 0, &["sync"]).run().ok();
    assert!(
        out.stderr()
            .contains("removed v1 from compose first: v2 runs on swarm"),
        "{}",
        out.report()
    );
    assert!(
        fleet.running(0, &stack).is_empty(),
        "compose's container is gone"
    );
    assert_eq!(service_image(&stack, "web"), fleet.image(&f, &f.v2));
    let body = common::wait_for(Duration::from_secs(20), || from_any_node(&fleet, port));
    assert_eq!(body.as_deref(), Some("stackpin-test-app v2\n"));

    write(&fleet.image(&f, &f.v3), false, "v3");
    h.commit("v3 back on compose");
    let out = fleet.stackpin(&h, 0, &["sync"]).run().ok();
    assert!(
        out.stderr()
            .contains("removed v2 from swarm first: v3 runs on compose"),
        "{}",
        out.report()
    );
    assert!(
        services().trim().is_empty(),
        "the stack's services: {}",
        services()
    );
    assert_eq!(fleet.running(0, &stack).len(), 1);
    assert_eq!(
        fleet.get(&h, 0, port).as_deref(),
        Some("stackpin-test-app v3\n")
    );
    assert_eq!(
        fleet.states(&h, 0)[&stack],
        ("converged".to_string(), "v3".to_string())
    );
    fleet.assert_consistent();
}

fn http_body(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-fsS", "--max-time", "3", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
