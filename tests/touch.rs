//! Touch only what changed (issue 18), on the real engine and compose: a
//! stack shaped like the runbooks' (a router whose config is mounted from
//! the stack directory, an app, a database that mounts a config file).
//! Compose runs from the stack's link, a path that stays the same between
//! releases, and each service carries a fingerprint label of what it runs,
//! so compose recreates a service exactly when that changed. Run under
//! docker-compose v1 (Debian's) and compose v2 (production's).

use crate::common;

use common::{Fixtures, Flavour, TestHost};
use std::collections::BTreeMap;

struct Shape {
    stack: String,
    router: u16,
    app: u16,
    db: u16,
}

impl Shape {
    fn write(&self, h: &TestHost, app_image: &str, f: &Fixtures, router_conf: &str) {
        let s = &self.stack;
        h.write(
            format!("stacks/{s}/stack.yaml"),
            format!(
                "keep_releases: 2\nimages:\n  router: {v1}\n  app: {app_image}\n  db: {v1}\nenv:\n  ROUTER_PORT: \"{}\"\n  APP_PORT: \"{}\"\n  DB_PORT: \"{}\"\nsmoke:\n  timeout: 5s\n  checks:\n    - http: {{url: \"http://127.0.0.1:{}/health\", expect_status: 200}}\n",
                self.router,
                self.app,
                self.db,
                self.app,
                v1 = f.v1
            ),
        );
        let svc = |port: &str, mount: &str| {
            format!(
                "    image: stackpin-test/app\n    network_mode: host\n    stop_grace_period: 1s\n    environment:\n      PORT: ${{{port}}}\n{mount}"
            )
        };
        h.write(
            format!("stacks/{s}/compose.yaml"),
            format!(
                "services:\n  router:\n{}  app:\n{}  db:\n{}",
                svc(
                    "ROUTER_PORT",
                    "    volumes: [\"./config/router.conf:/etc/router.conf:ro\"]\n"
                ),
                svc("APP_PORT", ""),
                svc("DB_PORT", "    volumes: [\"./config/db:/etc/db:ro\"]\n"),
            ),
        );
        h.write(format!("stacks/{s}/config/router.conf"), router_conf);
        h.write(
            format!("stacks/{s}/config/db/db.conf"),
            "max_connections 100\n",
        );
    }

    fn ids(&self, h: &TestHost) -> BTreeMap<String, String> {
        h.containers(&self.stack)
            .into_iter()
            .filter(|c| c.is_running())
            .map(|c| (c.service.clone(), c.id.clone()))
            .collect()
    }
}

#[test]
fn a_digest_bump_recreates_only_its_service_and_a_config_change_only_its_own_v1() {
    scenario(Flavour::V1);
}

#[test]
fn a_digest_bump_recreates_only_its_service_and_a_config_change_only_its_own_v2() {
    scenario(Flavour::V2);
}

fn scenario(flavour: Flavour) {
    let h = TestHost::new();
    let f = Fixtures::require();
    let plan_services = || -> BTreeMap<String, (String, String)> {
        let plan = h.cmd_with(flavour, ["--json", "plan"]).run().ok().json();
        plan[0]["services"]
            .as_array()
            .unwrap_or_else(|| panic!("no services in the plan: {plan}"))
            .iter()
            .map(|c| {
                let why: Vec<&str> = c["why"]
                    .as_array()
                    .map(|w| w.iter().filter_map(|x| x.as_str()).collect())
                    .unwrap_or_default();
                (
                    c["service"].as_str().unwrap().to_string(),
                    (c["change"].as_str().unwrap().to_string(), why.join("; ")),
                )
            })
            .collect()
    };
    let sync = || h.cmd_with(flavour, ["sync"]).run();
    let shape = Shape {
        stack: h.stack("shop"),
        router: h.free_port(),
        app: h.free_port(),
        db: h.free_port(),
    };
    shape.write(&h, &f.v1, &f, "upstream app\n");
    h.commit("v1");
    let out = sync().ok();
    assert!(out.stdout().contains("deployed"), "{}", out.report());
    let first = shape.ids(&h);
    assert_eq!(first.len(), 3, "{first:?}");
    // The flavour asked for is the one that ran.
    flavour.assert_made(&h, &shape.stack);
    let v1_label = h.current_version(&shape.stack);

    // The app's digest moves: the router and the database keep running.
    shape.write(&h, &f.v2, &f, "upstream app\n");
    h.commit("app v2");
    // The plan says who restarts, and why.
    let planned = plan_services();
    assert_eq!(planned["app"].0, "recreate", "{planned:?}");
    assert!(planned["app"].1.starts_with("new digest "), "{planned:?}");
    assert_eq!(planned["router"].0, "keep", "{planned:?}");
    assert_eq!(planned["db"].0, "keep", "{planned:?}");
    sync().ok().stdout_contains("deployed");
    // History records the same.
    let last = h.history().lines().last().unwrap_or_default().to_string();
    assert!(last.contains("recreated app; kept db, router"), "{last}");
    h.serves(shape.app, "stackpin-test-app v2");
    let second = shape.ids(&h);
    assert_ne!(second["app"], first["app"], "the app was recreated");
    assert_eq!(second["router"], first["router"], "the router kept running");
    assert_eq!(second["db"], first["db"], "the database kept running");
    // Without `version:`, the label comes from every pin: a new app digest
    // is a new label even though the router's pin (listed first) is the same.
    assert_ne!(h.current_version(&shape.stack), v1_label);

    // A broken app bump is reverted: still only the app is touched.
    shape.write(&h, &f.broken, &f, "upstream app\n");
    h.commit("app broken");
    sync().code(1).stdout_contains("rolled-back");
    h.serves(shape.app, "stackpin-test-app v2");
    let third = shape.ids(&h);
    assert_eq!(
        third["router"], first["router"],
        "the revert left the router alone"
    );
    assert_eq!(
        third["db"], first["db"],
        "the revert left the database alone"
    );

    // The router's config changes: the router is recreated, nothing else.
    shape.write(&h, &f.v2, &f, "upstream app; timeout 5s\n");
    h.commit("router config");
    let planned = plan_services();
    assert_eq!(
        planned["router"],
        (
            "recreate".to_string(),
            "file config/router.conf changed".to_string()
        ),
        "{planned:?}"
    );
    assert_eq!(planned["app"].0, "keep", "{planned:?}");
    sync().ok().stdout_contains("deployed");
    let fourth = shape.ids(&h);
    assert_ne!(
        fourth["router"], third["router"],
        "the router was recreated"
    );
    assert_eq!(fourth["app"], third["app"], "the app kept running");
    assert_eq!(fourth["db"], third["db"], "the database kept running");
    let conf = h
        .docker(["exec", &fourth["router"], "cat", "/etc/router.conf"])
        .run()
        .ok()
        .stdout();
    assert_eq!(
        conf, "upstream app; timeout 5s\n",
        "the router sees its new config"
    );

    // keep_releases is 2 and four releases were made, but the database was
    // created from the first and still mounts its directory: that release
    // is kept, and the database still reads its config.
    let releases = h.release_dirs(&shape.stack);
    assert!(releases.len() >= 3, "{releases:?}");
    let db_conf = h
        .docker(["exec", &fourth["db"], "cat", "/etc/db/db.conf"])
        .run()
        .ok()
        .stdout();
    assert_eq!(db_conf, "max_connections 100\n");
}
