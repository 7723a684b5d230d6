//! Unit tests of loading and validation over an in-memory tree: one case per
//! rule, each checking the file, the field and the message.

use super::*;

use tree::MemTree;

const D1: &str = "sha256:1db6436ca7e084705cffcf3e760b6659cce449bd636edf94917b28de2df3fbe5";
const D2: &str = "sha256:2b1e7c4f3a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f";

fn good_stack(name: &str) -> Vec<(String, String)> {
    vec![
        (format!("stacks/{name}/stack.yaml"), format!("environment: staging\nimages:\n  web: ghcr.io/acme/app@{D1}\n")),
        (
            format!("stacks/{name}/compose.yaml"),
            "services:\n  web:\n    image: ghcr.io/acme/app\n    volumes:\n      - ./config/app.conf:/etc/app.conf:ro\n      - data:/var/lib/app\nvolumes:\n  data: {}\n".into(),
        ),
        (format!("stacks/{name}/config/app.conf"), "key = value\n".into()),
    ]
}

fn load_files(files: Vec<(String, String)>) -> DesiredState {
    let t = MemTree(
        files
            .into_iter()
            .map(|(p, c)| (p, c.into_bytes()))
            .collect(),
    );
    load(&t)
}

/// Loads `good_stack("a")` with `path` replaced (or added) by `content`.
fn with(path: &str, content: &str) -> DesiredState {
    let mut files = good_stack("a");
    files.retain(|(p, _)| p != path);
    if !content.is_empty() || path.ends_with(".yaml") {
        files.push((path.to_string(), content.to_string()));
    }
    load_files(files)
}

fn the_error(st: &DesiredState) -> &Finding {
    let errs: Vec<&Finding> = st.errors().collect();
    assert_eq!(errs.len(), 1, "expected exactly one error, got {errs:#?}");
    errs[0]
}

#[test]
fn a_writable_relative_bind_is_mounted_read_only_with_one_warning() {
    let compose = "services:\n  web:\n    image: a\n    volumes: [\"./config/app.conf:/etc/app.conf\", {type: bind, source: ./config, target: /c}, \"./config:/z:z\", \"./config:/d:ro\"]\n";
    let st = with("stacks/a/compose.yaml", compose);
    assert!(st.errors().next().is_none(), "{:#?}", st.findings);
    let warned: Vec<&str> = st.findings.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(
        warned,
        [
            "services.web.volumes[0]",
            "services.web.volumes[1]",
            "services.web.volumes[2]"
        ],
        "{:#?}",
        st.findings
    );
    assert!(
        st.findings[0]
            .message
            .contains("stackpin mounts it read-only")
    );
    let s = &st.stacks["a"];
    assert!(s.compose.resolved, "the release runs the resolved model");
    assert_eq!(
        s.compose.value["services"]["web"]["volumes"],
        serde_json::json!([
            "./config/app.conf:/etc/app.conf:ro",
            {"type": "bind", "source": "./config", "target": "/c", "read_only": true},
            "./config:/z:ro,z",
            "./config:/d:ro"
        ])
    );
}

#[test]
fn a_good_stack_loads() {
    let st = load_files(good_stack("a"));
    assert!(st.findings.is_empty(), "{:#?}", st.findings);
    let s = &st.stacks["a"];
    assert_eq!(s.version, "1db6436");
    assert_eq!(
        s.pins["web"].pinned().unwrap(),
        format!("ghcr.io/acme/app@{D1}")
    );
    assert_eq!(s.keep_releases, DEFAULT_KEEP_RELEASES);
    assert!(s.files.contains_key("config/app.conf") && s.files.contains_key("compose.yaml"));
    assert!(!s.files.contains_key("stack.yaml"));
}

/// (case, file, replacement content, expected file, expected field, expected message fragment)
#[test]
fn every_rule_names_file_field_and_reason() {
    let compose = "stacks/a/compose.yaml";
    let spec = "stacks/a/stack.yaml";
    let cases: Vec<(&str, &str, String, &str, &str, &str)> = vec![
        ("pin without digest", spec, "images:\n  web: ghcr.io/acme/app:1.2\n".into(), spec, "images.web", "pinned by tag only"),
        ("short digest", spec, "images:\n  web: ghcr.io/acme/app@sha256:abcd\n".into(), spec, "images.web", "it needs exactly 64"),
        ("latest in compose", spec, "environment: x\n".into(), compose, "services.web.image", "no digest"),
        ("pin for unknown service", spec, format!("images:\n  web: a@{D1}\n  api: a@{D1}\n"), spec, "images.api", "no service `api`"),
        ("unknown key", spec, "environment: x\nimagez: {}\n".into(), spec, "imagez", "unknown field `imagez`"),
        ("nested unknown key", spec, format!("images: {{web: a@{D1}}}\nsmoke:\n  checks:\n    - http: {{url: 'http://127.0.0.1:1/', expect: 200}}\n"), spec, "smoke.checks[0].http.expect", "unknown field `expect`"),
        ("break glass without reason", spec, format!("images: {{web: a@{D1}}}\nbreak_glass: {{}}\n"), spec, "break_glass.reason", "break_glass has no reason"),
        ("compose path escapes", spec, format!("compose: ../b/compose.yaml\nimages: {{web: a@{D1}}}\n"), spec, "compose", "uses `..`"),
        ("absolute compose path", spec, format!("compose: /etc/compose.yaml\nimages: {{web: a@{D1}}}\n"), spec, "compose", "is an absolute path"),
        ("duplicate hosts", spec, format!("images: {{web: a@{D1}}}\nhosts: [web-1, web-1]\n"), spec, "hosts[1]", "listed twice"),
        ("bad duration", spec, format!("images: {{web: a@{D1}}}\nsmoke: {{timeout: soon}}\n"), spec, "smoke.timeout", "is not a duration"),
        ("depends_on cycle", compose, format!("services:\n  web:\n    image: ghcr.io/acme/app\n    depends_on: [db]\n  db:\n    image: ghcr.io/acme/app@{D1}\n    depends_on: {{web: {{condition: service_started}}}}\n"), compose, "services", "depends_on forms a cycle: db -> web -> db"),
        ("dotenv in the stack", "stacks/a/.env", "X=1\n".into(), "stacks/a/.env", "", "a name stackpin writes into every release"),
        ("relative env file", spec, format!("images: {{web: a@{D1}}}\nenv_files: [secrets.env]\n"), spec, "env_files[0]", "not an absolute host path"),
        ("bad yaml", spec, "images: [\n".into(), spec, "", "is not valid YAML"),
        ("empty stack.yaml", spec, "".into(), spec, "", "is empty"),
        ("duplicate key", spec, format!("images: {{web: a@{D1}}}\nimages: {{web: a@{D1}}}\n"), spec, "", "is not valid YAML"),
        ("http on unknown service", spec, format!("images: {{web: a@{D1}}}\nsmoke: {{checks: [{{http: {{service: db, port: 5432}}}}]}}\n"), spec, "smoke.checks[0].http.service", "no service `db`"),
        ("http service without port", spec, format!("images: {{web: a@{D1}}}\nsmoke: {{checks: [{{http: {{service: web}}}}]}}\n"), spec, "smoke.checks[0].http.port", "needs the port"),
        ("http url and service", spec, format!("images: {{web: a@{D1}}}\nsmoke: {{checks: [{{http: {{url: 'http://127.0.0.1:1/', service: web, port: 1}}}}]}}\n"), spec, "smoke.checks[0].http", "both `url` and `service`"),
        ("http without url", spec, format!("images: {{web: a@{D1}}}\nsmoke: {{checks: [{{http: {{expect_status: 200}}}}]}}\n"), spec, "smoke.checks[0].http.url", "is missing"),
        ("http path without slash", spec, format!("images: {{web: a@{D1}}}\nsmoke: {{checks: [{{http: {{service: web, port: 80, path: health}}}}]}}\n"), spec, "smoke.checks[0].http.path", "does not start with `/`"),
        ("exec on unknown service", spec, format!("images: {{web: a@{D1}}}\nsmoke: {{checks: [{{exec: {{service: db, command: [\"true\"]}}}}]}}\n"), spec, "smoke.checks[0].exec.service", "no service `db`"),
        ("build", compose, "services:\n  web:\n    build: .\n".into(), compose, "services.web.build", "`build:` is not allowed"),
        ("bind escapes", compose, "services:\n  web:\n    image: a\n    volumes: [\"../../etc:/etc:ro\"]\n".into(), compose, "services.web.volumes[0]", "uses `..`"),
        ("bind source missing", compose, "services:\n  web:\n    image: a\n    volumes: [\"./nope.conf:/etc/x:ro\"]\n".into(), compose, "services.web.volumes[0]", "does not exist in stacks/a/"),
        ("undefined volume", compose, "services:\n  web:\n    image: a\n    volumes: [\"data:/d\"]\n".into(), compose, "services.web.volumes[0]", "undefined volume `data`"),
        ("undefined network", compose, "services:\n  web:\n    image: a\n    networks: [edge]\n".into(), compose, "services.web.networks", "undefined network `edge`"),
        ("undefined depends_on", compose, "services:\n  web:\n    image: a\n    depends_on: [db]\n".into(), compose, "services.web.depends_on", "undefined service `db`"),
        ("no services", compose, "volumes: {}\n".into(), compose, "services", "defines no services"),
        ("unknown top-level", compose, "services:\n  web: {image: a}\nservice: {}\n".into(), compose, "service", "unknown top-level key"),
        ("compose not a mapping", compose, "- a\n".into(), compose, "", "not a mapping"),
        ("interpolated image without pin", compose, "services:\n  web: {image: a}\n  db: {image: \"pg:${TAG}\"}\n".into(), compose, "services.db.image", "uses interpolation"),
        ("tag-only image without pin", compose, "services:\n  web: {image: a}\n  db: {image: \"postgres:16\"}\n".into(), compose, "services.db.image", "pinned by tag only"),
        ("latest image without pin", compose, "services:\n  web: {image: a}\n  db: {image: \"postgres:latest\"}\n".into(), compose, "services.db.image", "`:latest` tag"),
        ("service without image", compose, "services:\n  web: {image: a}\n  db: {restart: always}\n".into(), compose, "services.db.image", "has no image and no pin"),
        ("backup of an undeclared volume", spec, format!("images: {{web: a@{D1}}}\nbackup: {{volumes: [filestore]}}\n"), spec, "backup.volumes[0]", "not a named volume"),
        ("backup volume twice", spec, format!("images: {{web: a@{D1}}}\nbackup: {{volumes: [data, data]}}\n"), spec, "backup.volumes[1]", "listed twice"),
        ("keep policy keeps nothing", spec, format!("images: {{web: a@{D1}}}\nbackup: {{keep: {{daily: 0}}}}\n"), spec, "backup.keep", "keeps no backup"),
        ("keep policy unknown key", spec, format!("images: {{web: a@{D1}}}\nbackup: {{keep: {{yearly: 2}}}}\n"), spec, "backup.keep", "unknown key `yearly`"),
        ("keep not a count", spec, format!("images: {{web: a@{D1}}}\nbackup: {{keep: lots}}\n"), spec, "backup.keep", "expected a count"),
        ("include of a missing file", compose, "include: [nope.yaml]\nservices:\n  web: {image: a}\n".into(), compose, "include[0]", "`nope.yaml` does not exist"),
        ("extends an unknown service", compose, "services:\n  web: {image: a, extends: base}\n".into(), compose, "services.web.extends", "does not define"),
        ("depends on a profile left out", compose, "services:\n  web: {image: a, depends_on: [dbg]}\n  dbg: {image: b, profiles: [debug]}\n".into(), compose, "services.web.depends_on", "profile debug"),
        ("half a label selector", spec, format!("images: {{web: a@{D1}}}\nhosts: [\"role=\"]\n"), spec, "hosts[0]", "not a label selector"),
        ("network_mode with networks", compose, "services:\n  web: {image: a, network_mode: host, networks: [default]}\n".into(), compose, "services.web.network_mode", "cannot be combined"),
    ];
    for (name, path, content, file, field, msg) in cases {
        let st = with(path, &content);
        let e = the_error(&st);
        assert_eq!(
            (e.file.as_str(), e.field.as_str()),
            (file, field),
            "{name}: {e}"
        );
        assert!(
            e.message.contains(msg),
            "{name}: message {:?} lacks {msg:?}",
            e.message
        );
        assert!(!e.fix.is_empty(), "{name}: no fix given");
        assert_eq!(e.stack.as_deref(), Some("a"), "{name}");
        assert!(
            st.invalid.contains("a") && st.stacks.is_empty(),
            "{name}: stack not set aside"
        );
    }
}

#[test]
fn compose_digest_without_pin_is_accepted() {
    let st = with("stacks/a/stack.yaml", "environment: x\nversion: v1\n");
    let mut files = good_stack("a");
    files[0].1 = "environment: x\n".into();
    files[1].1 = format!("services:\n  web: {{image: \"ghcr.io/acme/app:1.2@{D2}\"}}\n");
    let st2 = load_files(files);
    assert_eq!(st.errors().count(), 1); // compose image has no digest
    assert!(st2.errors().next().is_none(), "{:#?}", st2.findings);
    assert_eq!(st2.stacks["a"].pins["web"].digest.as_deref(), Some(D2));
}

#[test]
fn bad_stack_names_are_refused_and_others_load() {
    let mut files = good_stack("good");
    for (p, c) in good_stack("Bad_Name") {
        files.push((p, c));
    }
    let st = load_files(files);
    let e = the_error(&st);
    assert_eq!(e.file, "stacks/Bad_Name");
    assert!(e.message.contains("not a valid stack name"), "{e}");
    assert!(st.stacks.contains_key("good"));
}

#[test]
fn one_bad_stack_does_not_block_the_others() {
    let mut files = good_stack("good");
    files.extend(good_stack("bad"));
    files.retain(|(p, _)| p != "stacks/bad/stack.yaml");
    files.push((
        "stacks/bad/stack.yaml".into(),
        "images: {web: \"app:latest\"}\n".into(),
    ));
    let st = load_files(files);
    assert!(st.stacks.contains_key("good"));
    assert!(st.invalid.contains("bad"));
    assert_eq!(the_error(&st).file, "stacks/bad/stack.yaml");
}

#[test]
fn symlinks_must_stay_inside_the_stack() {
    let mut files = good_stack("a");
    files.push((
        "stacks/a/config/passwd".into(),
        "@link:../../../etc/passwd".into(),
    ));
    let st = load_files(files.clone());
    let e = the_error(&st);
    assert!(e.message.contains("outside the stack directory"), "{e}");

    files.pop();
    files.push(("stacks/a/config/alias.conf".into(), "@link:app.conf".into()));
    let st = load_files(files);
    assert!(st.errors().next().is_none(), "{:#?}", st.findings);
    assert_eq!(st.stacks["a"].files["config/alias.conf"], b"key = value\n");
}

#[test]
fn cycles_and_missing_references() {
    let mut files = good_stack("a");
    files.extend(good_stack("b"));
    files.extend(good_stack("c"));
    let set = |files: &mut Vec<(String, String)>, s: &str, extra: &str| {
        let p = format!("stacks/{s}/stack.yaml");
        files.retain(|(q, _)| *q != p);
        files.push((p, format!("images: {{web: a@{D1}}}\n{extra}")));
    };
    set(&mut files, "a", "depends_on: [b]\n");
    set(&mut files, "b", "promote_from: a\n");
    let st = load_files(files.clone());
    assert_eq!(st.errors().count(), 2, "{:#?}", st.findings);
    assert!(st.errors().all(|e| e.message.contains("form a cycle")));
    assert!(st.stacks.contains_key("c") && !st.stacks.contains_key("a"));

    set(&mut files, "a", "depends_on: [zzz]\n");
    set(&mut files, "b", "promote_from: nope\n");
    let st = load_files(files.clone());
    let msgs: Vec<String> = st
        .errors()
        .map(|e| format!("{} {}", e.field, e.message))
        .collect();
    assert!(
        msgs.contains(&"depends_on[0] names stack `zzz`, which does not exist".to_string()),
        "{msgs:?}"
    );
    assert!(
        msgs.contains(&"promote_from names stack `nope`, which does not exist".to_string()),
        "{msgs:?}"
    );
}

#[test]
fn promote_from_reads_a_soak_and_names_a_bad_one() {
    let mut files = good_stack("a");
    files.extend(good_stack("b"));
    let set = |files: &mut Vec<(String, String)>, extra: &str| {
        let p = "stacks/b/stack.yaml".to_string();
        files.retain(|(q, _)| *q != p);
        files.push((p, format!("images: {{web: a@{D1}}}\n{extra}")));
    };
    set(&mut files, "promote_from: {stack: a, soak: 30m}\n");
    let st = load_files(files.clone());
    assert_eq!(st.errors().count(), 0, "{:#?}", st.findings);
    let p = st.stacks["b"].spec.promote_from.clone().unwrap();
    assert_eq!(p.soak, Some(std::time::Duration::from_secs(1800)));
    // The host's 10m lengthened by the commit's 30m; never shortened.
    let mut host = spec::PromoteFrom::stack("a");
    host.soak = Some(std::time::Duration::from_secs(600));
    assert_eq!(host.lengthened_by(Some(&p)).soak, p.soak);
    assert_eq!(p.lengthened_by(Some(&host)).soak, p.soak);
    assert_eq!(
        host.lengthened_by(Some(&spec::PromoteFrom::stack("other")))
            .soak,
        host.soak
    );

    set(&mut files, "promote_from: {stack: a, soak: half an hour}\n");
    let st = load_files(files);
    let msgs: Vec<String> = st.errors().map(|e| e.to_string()).collect();
    assert!(
        msgs.iter().any(|m| m.contains("stacks/b/stack.yaml")
            && m.contains("promote_from.soak: \"half an hour\" is not a duration")
            && m.contains("`30m`")),
        "{msgs:?}"
    );
}

#[test]
fn order_follows_depends_on_and_promote_from() {
    let mut files = Vec::new();
    for (s, extra) in [
        ("prod", "promote_from: stg\ndepends_on: [edge]\n"),
        ("stg", "depends_on: [edge]\n"),
        ("edge", ""),
    ] {
        let mut g = good_stack(s);
        g[0].1 = format!("images: {{web: a@{D1}}}\n{extra}");
        files.extend(g);
    }
    let st = load_files(files);
    assert!(st.errors().next().is_none(), "{:#?}", st.findings);
    assert_eq!(st.order(), vec!["edge", "stg", "prod"]);
}

#[test]
fn verified_files_are_parsed_and_checked() {
    let mut files = good_stack("a");
    files.push((
        "verified/a.yaml".into(),
        format!("verified:\n  - version: v1\n    images: {{web: \"ghcr.io/acme/app@{D1}\"}}\n    verified_at: 2026-01-31T06:55:00Z\n    host: stg-1\n    commit: {}\n", "a".repeat(40)),
    ));
    let st = load_files(files.clone());
    assert!(st.findings.is_empty(), "{:#?}", st.findings);
    assert_eq!(st.verified["a"][0].version, "v1");

    files.pop();
    files.push(("verified/a.yaml".into(), "verified:\n  - version: v1\n    images: {web: \"app:1\"}\n    verified_at: x\n    host: h\n    commit: c\n".into()));
    let st = load_files(files);
    let e = the_error(&st);
    assert_eq!(
        (e.file.as_str(), e.field.as_str()),
        ("verified/a.yaml", "verified[0].images.web")
    );
}

#[test]
fn env_values_become_strings() {
    let st = with(
        "stacks/a/stack.yaml",
        &format!("images: {{web: a@{D1}}}\nenv: {{WORKERS: 4, DEBUG: false, NAME: x}}\n"),
    );
    let env = &st.stacks["a"].spec.env;
    assert_eq!(env["WORKERS"], "4");
    assert_eq!(env["DEBUG"], "false");
}

#[test]
fn alias_bombs_are_refused() {
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let prev = (b'a' + (i - 1) as u8) as char;
        let cur = (b'a' + i as u8) as char;
        bomb.push_str(&format!("{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    let st = with("stacks/a/compose.yaml", &bomb);
    let e = the_error(&st);
    assert!(e.message.contains("is not valid YAML"), "{e}");
}

#[test]
fn deploy_keys_compose_ignores_are_refused_by_name() {
    let compose = |deploy: &str| {
        let mut files = good_stack("a");
        files.retain(|(p, _)| p != "stacks/a/compose.yaml");
        files.push((
            "stacks/a/compose.yaml".into(),
            format!("services:\n  web:\n    image: ghcr.io/acme/app\n    deploy: {deploy}\n"),
        ));
        load_files(files)
    };
    let st = compose("{update_config: {order: start-first}}");
    let e = the_error(&st);
    assert_eq!(e.field, "services.web.deploy.update_config");
    assert!(
        e.message.contains("start-first") && e.message.contains("stop-first"),
        "{}",
        e.message
    );
    let st = compose("{placement: {constraints: [node.role==manager]}}");
    assert_eq!(the_error(&st).field, "services.web.deploy.placement");
    let st = compose("{labels: {a: b}}");
    assert!(st.errors().next().is_none());
    assert!(
        st.findings
            .iter()
            .any(|f| f.field == "services.web.deploy.labels"),
        "{:#?}",
        st.findings
    );
    let st = compose(
        "{resources: {limits: {memory: 512m}}, replicas: 1, restart_policy: {condition: on-failure}}",
    );
    assert!(st.findings.is_empty(), "honoured: {:#?}", st.findings);
}

#[test]
fn secrets_name_age_files_of_the_stack_and_their_plaintext_stays_out_of_git() {
    let spec = "stacks/a/stack.yaml";
    let stack_yaml = |secrets: &str| format!("images: {{web: a@{D1}}}\nsecrets: {secrets}\n");
    let load_with = |secrets: &str, extra: &[(&str, &str)]| {
        let mut files = good_stack("a");
        files.retain(|(p, _)| p != spec);
        files.push((spec.into(), stack_yaml(secrets)));
        for (p, c) in extra {
            files.push((format!("stacks/a/{p}"), c.to_string()));
        }
        load_files(files)
    };
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            "not age",
            "[app.env]",
            vec![("app.env", "A=1\n")],
            "secrets[0]",
            "does not end in `.age`",
        ),
        (
            "missing",
            "[app.env.age]",
            vec![],
            "secrets[0]",
            "stacks/a/app.env.age does not exist",
        ),
        (
            "escapes",
            "[../b/app.env.age]",
            vec![],
            "secrets[0]",
            "uses `..`",
        ),
        (
            "clear copy committed",
            "[app.env.age]",
            vec![("app.env.age", "x"), ("app.env", "A=1\n")],
            "secrets[0]",
            "committed next to app.env.age, in clear",
        ),
        (
            "twice",
            "[app.env.age, ./app.env.age]",
            vec![("app.env.age", "x")],
            "secrets[1]",
            "listed twice",
        ),
    ];
    for (name, secrets, extra, field, msg) in cases {
        let st = load_with(secrets, &extra);
        let e = the_error(&st);
        assert_eq!(
            (e.file.as_str(), e.field.as_str()),
            (spec, field),
            "{name}: {e}"
        );
        assert!(
            e.message.contains(msg),
            "{name}: {:?} lacks {msg:?}",
            e.message
        );
        assert!(!e.fix.is_empty() && st.invalid.contains("a"), "{name}");
    }

    // A secret's decrypted name counts as a file of the stack for binds.
    let mut files = good_stack("a");
    files.retain(|(p, _)| p != "stacks/a/config/app.conf");
    files.retain(|(p, _)| p != spec);
    files.push((spec.into(), stack_yaml("[./config/app.conf.age]")));
    files.push(("stacks/a/config/app.conf.age".into(), "age".into()));
    let st = load_files(files);
    assert!(st.findings.is_empty(), "{:#?}", st.findings);
    assert_eq!(st.stacks["a"].spec.secrets, vec!["config/app.conf.age"]);

    // An `.age` file not listed is copied encrypted: a warning.
    let st = load_with("[]", &[("forgotten.env.age", "x")]);
    assert!(st.stacks.contains_key("a"));
    assert!(
        st.findings.iter().any(|f| f.severity == Severity::Warning
            && f.field == "secrets"
            && f.message.contains("forgotten.env.age is not listed")),
        "{:#?}",
        st.findings
    );
}

#[test]
fn hosts_select_by_name_or_by_label() {
    let st = with(
        "stacks/a/stack.yaml",
        &format!("images: {{web: a@{D1}}}\nhosts: [edge-1, \"role=app\"]\n"),
    );
    let s = &st.stacks["a"];
    let l = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert!(s.runs_on("edge-1", &[]), "by name");
    assert!(
        s.runs_on("prod-2", &l(&[("region", "tyo"), ("role", "app")])),
        "by label"
    );
    assert!(
        !s.runs_on("prod-2", &l(&[("role", "edge")])),
        "another value"
    );
    assert!(!s.runs_on("role=app", &[]), "a selector is not a name");
    let all = with("stacks/a/stack.yaml", &format!("images: {{web: a@{D1}}}\n"));
    assert!(all.stacks["a"].runs_on("anything", &[]));
}
