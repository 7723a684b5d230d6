//! Full compose, as users write it (issue 15 part 4), under compose v1 and
//! v2: `include:` of a file in a subdirectory, `extends:` from another
//! file, service `profiles:` with stack.yaml `profiles:`, `env_file:`
//! relative to the file that names it, YAML anchors and merge keys. The
//! release holds the resolved model as `compose.resolved.yaml` and runs it;
//! `plan` diffs it; under v2 it agrees with compose's own `config`.

use crate::common;

use common::{Fixtures, Flavour, TestHost};
use std::collections::BTreeMap;

struct Full<'h> {
    h: &'h TestHost,
    f: Fixtures,
    stack: String,
    web: u16,
    side: u16,
}

impl Full<'_> {
    fn write(&self, from_base: &str) {
        let s = &self.stack;
        self.h.write(
            format!("stacks/{s}/stack.yaml"),
            "profiles: [extra]\nsmoke:\n  timeout: 30s\n  checks:\n    - containers: {}\n",
        );
        self.h.write(
            format!("stacks/{s}/compose.yaml"),
            format!(
                r#"include: [extra/compose.yaml]
x-env: &env
  SHARED: from-anchor
x-host: &host
  network_mode: host
services:
  web:
    <<: *host
    extends: {{file: common/base.yaml, service: app}}
    environment:
      <<: *env
      ROLE: web
  debug:
    <<: *host
    image: {missing}
    profiles: [debug]
"#,
                missing = self.f.missing,
            ),
        );
        self.h.write(
            format!("stacks/{s}/common/base.yaml"),
            format!(
                "services:\n  app:\n    image: {v1}\n    env_file: app.env\n    environment: {{PORT: \"{web}\", FROM_BASE: {from_base}, ROLE: base}}\n",
                v1 = self.f.v1,
                web = self.web,
            ),
        );
        self.h
            .write(format!("stacks/{s}/common/app.env"), "FROM_ENV_FILE=yes\n");
        self.h.write(
            format!("stacks/{s}/extra/compose.yaml"),
            format!(
                "services:\n  side:\n    image: {v1}\n    network_mode: host\n    environment: {{PORT: \"{side}\"}}\n    profiles: [extra]\n",
                v1 = self.f.v1,
                side = self.side,
            ),
        );
    }

    /// The running containers: service -> (id, environment).
    fn running(&self) -> BTreeMap<String, (String, BTreeMap<String, String>)> {
        self.h
            .containers(&self.stack)
            .into_iter()
            .filter(|c| c.is_running())
            .map(|c| {
                let env = self
                    .h
                    .docker(["inspect", "--format", "{{json .Config.Env}}", c.id.as_str()])
                    .run()
                    .ok()
                    .stdout();
                let env: Vec<String> = serde_json::from_str(env.trim()).unwrap();
                let env = env
                    .iter()
                    .filter_map(|l| l.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                (c.service.clone(), (c.id.clone(), env))
            })
            .collect()
    }
}

fn full_compose_runs_resolved(flavour: Flavour) {
    let h = TestHost::new();
    let f = Fixtures::require();
    let full = Full {
        h: &h,
        f: f.clone(),
        stack: h.stack("full"),
        web: h.free_port(),
        side: h.free_port(),
    };
    full.write("\"yes\"");
    h.commit("full compose");
    let out = h.cmd_with(flavour, ["validate"]).run().ok();
    // The host network reaches `web` through an anchor and `side` through
    // `include`: validate names both (the test host grants it).
    assert!(
        out.stdout().contains("0 error(s), 2 warning(s)")
            && out.stdout().contains("services.web.network_mode")
            && out.stdout().contains("services.side.network_mode")
            && out.stdout().contains("power `host_network`"),
        "{}",
        out.report()
    );
    let out = h.cmd_with(flavour, ["sync"]).run().ok();
    assert!(out.stdout().contains("deployed"), "{}", out.report());
    flavour.assert_made(&h, &full.stack);
    h.serves(full.web, "stackpin-test-app v1");
    h.serves(full.side, "stackpin-test-app v1");

    // Exactly the services the profiles activate: `debug` (an image the
    // registry does not have) was neither pulled nor started.
    let run = full.running();
    assert_eq!(
        run.keys().map(String::as_str).collect::<Vec<_>>(),
        ["side", "web"],
        "{run:?}"
    );
    let env = &run["web"].1;
    for (k, v) in [
        ("ROLE", "web"),
        ("FROM_BASE", "yes"),
        ("FROM_ENV_FILE", "yes"),
        ("SHARED", "from-anchor"),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k} in {env:?}");
    }

    // The release holds the resolved model, and it is what compose ran.
    let release = h.link_target(&full.stack).unwrap();
    let resolved = std::fs::read_to_string(release.join("compose.resolved.yaml")).unwrap();
    let model: serde_json::Value =
        serde_saphyr::from_str(&resolved).expect("compose.resolved.yaml is YAML");
    let services = model["services"].as_object().unwrap();
    assert_eq!(
        services.keys().map(String::as_str).collect::<Vec<_>>(),
        ["web", "side"]
    );
    for gone in ["include", "x-env", "x-host"] {
        assert!(model.get(gone).is_none(), "{gone} in {resolved}");
    }
    assert_eq!(services["web"]["env_file"], "./common/app.env");
    assert!(services["web"].get("extends").is_none());
    let dotenv = std::fs::read_to_string(release.join(".env")).unwrap();
    assert!(
        dotenv.contains("COMPOSE_FILE=compose.resolved.yaml:stackpin.override.yaml"),
        "{dotenv}"
    );

    // Compose's own reading of the files as written agrees (v2: v1 has no
    // `include`).
    if flavour == Flavour::V2 {
        let src = h.repo().join("stacks").join(&full.stack);
        let out = h
            .docker([
                "compose",
                "--project-directory",
                src.to_str().unwrap(),
                "-f",
                "compose.yaml",
                "--profile",
                "extra",
                "config",
                "--format",
                "json",
            ])
            .env("DOCKER_CONFIG", &f.compose_v2_config)
            .current_dir(&src)
            .run()
            .ok();
        let theirs: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
        let mut names: Vec<&String> = theirs["services"].as_object().unwrap().keys().collect();
        names.sort();
        assert_eq!(names, ["side", "web"], "compose leaves `debug` out too");
        for k in ["ROLE", "FROM_BASE", "FROM_ENV_FILE", "SHARED", "PORT"] {
            assert_eq!(
                theirs["services"]["web"]["environment"][k].as_str(),
                env.get(k).map(String::as_str),
                "compose's own resolution of {k}"
            );
        }
    }

    // A change in the extended file: plan shows it in the resolved model
    // and recreates `web` only.
    let side_id = run["side"].0.clone();
    full.write("changed");
    h.commit("base changed");
    let plan = h
        .cmd_with(flavour, ["plan", full.stack.as_str()])
        .run()
        .ok();
    let text = plan.stdout();
    assert!(
        text.contains("compose.resolved.yaml")
            && text
                .lines()
                .any(|l| l.trim_start().starts_with('+') && l.contains("FROM_BASE: changed"))
            && text
                .lines()
                .any(|l| l.trim_start().starts_with('-') && l.contains("FROM_BASE: \"yes\"")),
        "the resolved model's diff: {}",
        plan.report()
    );
    assert!(plan.stdout().contains("recreate web"), "{}", plan.report());
    h.cmd_with(flavour, ["sync"])
        .run()
        .ok()
        .stdout_contains("deployed");
    let run = full.running();
    assert_eq!(
        run["web"].1.get("FROM_BASE").map(String::as_str),
        Some("changed")
    );
    assert_eq!(run["side"].0, side_id, "side was not touched");
}

#[test]
fn full_compose_runs_resolved_under_v1() {
    full_compose_runs_resolved(Flavour::V1);
}

#[test]
fn full_compose_runs_resolved_under_v2() {
    full_compose_runs_resolved(Flavour::V2);
}
