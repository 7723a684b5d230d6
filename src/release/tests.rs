#[test]
fn every_file_a_release_writes_is_reserved_for_validate() {
    for f in [ENV_FILE, META_FILE, OVERRIDE_FILE, crate::smoke::SPEC_FILE] {
        assert!(
            crate::desired::RESERVED_FILES.iter().any(|(n, _)| *n == f),
            "{f}"
        );
    }
}

use super::*;
use crate::desired::compose::Compose;
use crate::desired::image::ImageRef;
use crate::desired::spec::StackSpec;
use chrono::TimeZone;
use std::time::Duration;

const D1: &str = "sha256:1db6436ca7e084705cffcf3e760b6659cce449bd636edf94917b28de2df3fbe5";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn stack() -> Stack {
    let compose = "services:\n  web:\n    image: ghcr.io/acme/odoo18\n  db:\n    image: postgres\n";
    let mut spec = StackSpec {
        environment: Some("staging".into()),
        env_files: vec!["/etc/stackpin/secrets/s.env".into()],
        ..StackSpec::default()
    };
    spec.env.insert("DB_HOST".into(), "seisei-db".into());
    spec.env
        .insert("GREETING".into(), "hello world # not a comment".into());
    let mut pins = IndexMap::new();
    pins.insert(
        "web".to_string(),
        ImageRef::parse(&format!("ghcr.io/acme/odoo18@{D1}")).unwrap(),
    );
    pins.insert(
        "db".to_string(),
        ImageRef::parse(&format!("postgres:16@{D1}")).unwrap(),
    );
    let mut files = BTreeMap::new();
    files.insert("compose.yaml".to_string(), compose.as_bytes().to_vec());
    files.insert("config/odoo.conf".to_string(), b"[options]\n".to_vec());
    Stack {
        name: "odoo18-staging".into(),
        spec,
        compose_file: "compose.yaml".into(),
        compose: Compose {
            value: serde_json::json!({"services": {"web": {"image": "ghcr.io/acme/odoo18"}, "db": {"image": "postgres"}}}),
            ..Default::default()
        },
        files,
        pins,
        version: "sha-724f892".into(),
        keep_releases: 10,
        smoke_timeout: Duration::from_secs(120),
        rollout: crate::desired::update::Rollout {
            start_first: Vec::new(),
            drain: crate::desired::update::DEFAULT_DRAIN,
            reload: Vec::new(),
        },
        key: None,
    }
}

/// [`stack`] as `engine: swarm`, `web` depending on `db`.
fn swarm_stack() -> Stack {
    let mut s = stack();
    s.spec.engine = crate::desired::spec::StackEngine::Swarm;
    s.spec.env_files.clear();
    s.compose.value = serde_json::json!({
        "version": "3.8",
        "services": {
            "web": {"image": "ghcr.io/acme/odoo18", "depends_on": ["db"], "configs": [{"source": "conf", "target": "/etc/odoo.conf"}]},
            "db": {"image": "postgres", "environment": {"PGDATA": "${PGDATA:-/var/lib/pg}"}},
        },
        "configs": {"conf": {"file": "./config/odoo.conf"}},
    });
    s
}

#[test]
fn a_swarm_stack_with_depends_on_gets_a_deploy_step_per_level_but_the_last() {
    let s = swarm_stack();
    let r = render(&s, &Secrets::default(), None).unwrap();
    assert_eq!(r.swarm_steps.len(), 1, "{:?}", r.swarm_steps);
    let step = &r.swarm_steps[0];
    assert_eq!(step.services, ["db"]);
    assert_eq!(
        step.files,
        [
            "stackpin.swarm-step-1.yaml",
            "stackpin.swarm-step-1.override.yaml"
        ]
    );
    assert_eq!(step.wait_secs, 120);
    let read = |f: &str| -> serde_json::Value {
        serde_saphyr::from_str(std::str::from_utf8(&r.files[f]).unwrap()).unwrap()
    };
    // Only db, as written (interpolation is left to stack deploy), and
    // the top-level configs the whole stack declares.
    let step1 = read("stackpin.swarm-step-1.yaml");
    assert_eq!(step1["version"], "3.8");
    assert_eq!(
        step1["services"],
        serde_json::json!({"db": {"image": "postgres", "environment": {"PGDATA": "${PGDATA:-/var/lib/pg}"}}})
    );
    assert_eq!(step1["configs"]["conf"]["file"], "./config/odoo.conf");
    let pinned = read("stackpin.swarm-step-1.override.yaml");
    let svcs = pinned["services"].as_object().unwrap();
    assert_eq!(svcs.keys().collect::<Vec<_>>(), ["db"]);
    assert_eq!(svcs["db"]["image"], format!("postgres@{D1}"));
    assert_eq!(
        svcs["db"]["deploy"]["update_config"]["failure_action"],
        "pause"
    );
    // The whole stack's files are unchanged.
    let whole = read(OVERRIDE_FILE);
    assert_eq!(whole["services"].as_object().unwrap().len(), 2);
    assert_eq!(r.compose_files, ["compose.yaml", OVERRIDE_FILE]);
    // release.json carries the steps; older releases read as none.
    let meta = ReleaseMeta::new(&s, &r, "v1__20261205T000000Z", Utc::now());
    let back: ReleaseMeta = serde_json::from_str(&serde_json::to_string(&meta).unwrap()).unwrap();
    assert_eq!(back.swarm_steps, r.swarm_steps);
    assert_eq!(
        back.project(Path::new("/x")).steps,
        r.swarm_steps.as_slice()
    );
    let mut old = serde_json::to_value(&meta).unwrap();
    old.as_object_mut().unwrap().remove("swarm_steps");
    let old: ReleaseMeta = serde_json::from_value(old).unwrap();
    assert!(old.swarm_steps.is_empty());
    // No steps without depends_on, nor for a compose stack.
    let mut flat = swarm_stack();
    flat.compose.value["services"]["web"]
        .as_object_mut()
        .unwrap()
        .remove("depends_on");
    assert!(
        render(&flat, &Secrets::default(), None)
            .unwrap()
            .swarm_steps
            .is_empty()
    );
    let mut compose = swarm_stack();
    compose.spec.engine = crate::desired::spec::StackEngine::Compose;
    let r = render(&compose, &Secrets::default(), None).unwrap();
    assert!(r.swarm_steps.is_empty());
    assert!(!r.files.keys().any(|f| f.starts_with(SWARM_STEP_PREFIX)));
}

#[test]
fn a_stack_file_named_like_a_step_file_is_refused() {
    let mut s = swarm_stack();
    s.files
        .insert("stackpin.swarm-step-1.yaml".into(), b"x".to_vec());
    let e = render(&s, &Secrets::default(), None).unwrap_err();
    assert!(
        matches!(&e, Error::ReservedFile { file, .. } if file == "stackpin.swarm-step-1.yaml"),
        "{e}"
    );
}

fn secrets() -> Secrets {
    Secrets {
        env_files: vec![(
            "/etc/stackpin/secrets/s.env".to_string(),
            b"# secrets\n\nexport DB_PASSWORD=s3cr3t-pw\nAPI_KEY='a b#c'\nDB_HOST=override-db\n"
                .to_vec(),
        )],
        decrypted: Vec::new(),
    }
}

/// A temporary root removed on drop even when it holds read-only
/// releases (tempfile alone cannot when the tests run unprivileged).
struct Root(tempfile::TempDir);

impl Root {
    fn new() -> Root {
        Root(tempfile::tempdir().unwrap())
    }
    fn layout(&self) -> Layout {
        Layout::new(self.0.path())
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = fsutil::remove_tree(self.0.path());
    }
}

fn time(s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 30, 10, 0, s).unwrap()
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Creates a release of `stack()` with version `v` at second `s`.
fn make(layout: &Layout, v: &str, s: u32) -> String {
    let st = stack();
    let r = render(&st, &secrets(), Some("abc123")).unwrap();
    let id = new_release_id(v, time(s), |id| layout.release_dir(&st.name, id).exists());
    let meta = ReleaseMeta::new(&st, &r, &id, time(s));
    create(layout, &st.name, &r, &meta).unwrap();
    id
}

#[test]
fn render_is_deterministic_and_pins_digests() {
    let st = stack();
    let a = render(&st, &secrets(), Some("c1")).unwrap();
    let b = render(&st, &secrets(), Some("c1")).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.compose_files, vec!["compose.yaml", OVERRIDE_FILE]);
    assert_eq!(a.files["compose.yaml"], st.files["compose.yaml"]);
    let ov = String::from_utf8(a.files[OVERRIDE_FILE].clone()).unwrap();
    assert!(
        ov.contains(&format!(
            "  \"web\":\n    image: \"ghcr.io/acme/odoo18@{D1}\"\n"
        )),
        "{ov}"
    );
    assert!(ov.contains(&format!("image: \"postgres@{D1}\"")), "{ov}");
    // The override is YAML a YAML parser reads back as the pins.
    let v: serde_json::Value = serde_saphyr::from_str(&ov).unwrap();
    assert_eq!(
        v["services"]["web"]["image"],
        format!("ghcr.io/acme/odoo18@{D1}")
    );
    assert_eq!(a.fingerprint.len(), 64);
}

#[test]
fn env_file_content_and_secret_values() {
    let r = render(&stack(), &secrets(), None).unwrap();
    let lines: Vec<&str> = r.env_file.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        vec![
            "COMPOSE_PROJECT_NAME=odoo18-staging",
            "COMPOSE_FILE=compose.yaml:stackpin.override.yaml",
            "GREETING='hello world # not a comment'",
            "DB_PASSWORD=s3cr3t-pw",
            "API_KEY='a b#c'",
            "DB_HOST=override-db",
        ]
    );
    assert_eq!(r.secret_values, vec!["override-db", "s3cr3t-pw", "a b#c"]);
}

#[test]
fn env_values_are_encoded_for_both_compose_versions() {
    assert_eq!(encode_env_value("plain-1.2:/x").unwrap(), "plain-1.2:/x");
    assert_eq!(encode_env_value("").unwrap(), "");
    assert_eq!(encode_env_value("a b").unwrap(), "'a b'");
    assert_eq!(encode_env_value("$HOME").unwrap(), "'$HOME'");
    assert_eq!(
        encode_env_value("it's \"x\"\n\\").unwrap(),
        "\"it's \\\"x\\\"\\n\\\\\""
    );
    assert!(encode_env_value("it's $5").is_err());
    // Values read back through our own parser as written.
    for v in [
        "a b",
        "#x",
        "x #y",
        "it's",
        "q\"q",
        "back\\slash",
        "l1\nl2",
        "tab\there",
        " pad ",
    ] {
        let enc = encode_env_value(v).unwrap();
        assert_eq!(crate::dotenv::parse_value(&enc).unwrap(), v, "{enc}");
    }
}

#[test]
fn env_file_errors_name_file_and_line_not_value() {
    let st = stack();
    let bad = |text: &str| {
        render(
            &st,
            &Secrets {
                env_files: vec![("/s.env".to_string(), text.as_bytes().to_vec())],
                decrypted: Vec::new(),
            },
            None,
        )
        .unwrap_err()
        .to_string()
    };
    let e = bad("OK=1\nNOEQUALS_topsecret\n");
    assert!(
        e.contains("/s.env (line 2)") && !e.contains("topsecret"),
        "{e}"
    );
    let e = bad("K='unterminated topsecret\n");
    assert!(e.contains("line 1") && !e.contains("topsecret"), "{e}");
    let e = bad("COMPOSE_PROJECT_NAME=other\n");
    assert!(e.contains("COMPOSE_PROJECT_NAME"), "{e}");
    let e = bad("1BAD=x\n");
    assert!(e.contains("invalid variable name"), "{e}");

    let mut st2 = stack();
    st2.files.insert(".env".into(), b"X=1".to_vec());
    assert!(matches!(
        render(&st2, &Secrets::default(), None),
        Err(Error::ReservedFile { .. })
    ));
    let mut st3 = stack();
    st3.files.insert("../escape".into(), b"X".to_vec());
    assert!(matches!(
        render(&st3, &Secrets::default(), None),
        Err(Error::BadPath { .. })
    ));
}

#[test]
fn fingerprint_tracks_content_not_commit() {
    let base = render(&stack(), &secrets(), Some("c1"))
        .unwrap()
        .fingerprint;
    let fp = |st: &Stack, sec: &Secrets| render(st, sec, Some("c2")).unwrap().fingerprint;
    assert_eq!(
        fp(&stack(), &secrets()),
        base,
        "commit alone must not change it"
    );

    let mut st = stack();
    st.files.insert(
        "config/odoo.conf".into(),
        b"[options]\nworkers = 4\n".to_vec(),
    );
    assert_ne!(fp(&st, &secrets()), base, "config file");

    let mut st = stack();
    st.pins.insert(
        "web".into(),
        ImageRef::parse(&format!("ghcr.io/acme/odoo18@{D2}")).unwrap(),
    );
    assert_ne!(fp(&st, &secrets()), base, "pin");

    let mut st = stack();
    st.spec.env.insert("DB_HOST".into(), "other".into());
    assert_ne!(fp(&st, &secrets()), base, "env");

    let mut sec = secrets();
    sec.env_files[0].1 = b"DB_PASSWORD=rotated\n".to_vec();
    assert_ne!(fp(&stack(), &sec), base, "secret file");
}

#[test]
fn release_ids() {
    let id = new_release_id("sha-724f892", time(5), |_| false);
    assert_eq!(id, "sha-724f892__20260130T100005Z");
    assert_eq!(
        parse_release_id(&id),
        Some(("sha-724f892".to_string(), time(5)))
    );
    let taken = ["v1__20260130T100005Z", "v1__20260130T100006Z"];
    let id = new_release_id("v1", time(5), |id| taken.contains(&id));
    assert_eq!(id, "v1__20260130T100007Z");
    // Split at the last `__`, so an old version label holding `__` still parses.
    assert_eq!(
        parse_release_id("a__b__20260130T100005Z").map(|(v, _)| v),
        Some("a__b".to_string())
    );
    for bad in [
        "v1",
        "v1__2026",
        "__20260130T100005Z",
        "v1__20260130T100005",
        ".tmp-v__20260130T100005Z",
        "a/b__20260130T100005Z",
    ] {
        assert!(parse_release_id(bad).is_none(), "{bad}");
    }
}

#[test]
fn create_writes_complete_read_only_release() {
    let t = Root::new();
    let layout = t.layout();
    let id = make(&layout, "sha-724f892", 0);
    let dir = layout.release_dir("odoo18-staging", &id);
    assert!(is_complete(&dir));
    let meta = read_meta(&dir).unwrap();
    assert_eq!(meta.release_id, id);
    assert_eq!(meta.commit.as_deref(), Some("abc123"));
    assert_eq!(meta.environment, "staging");
    assert_eq!(
        meta.images["web"].pinned().unwrap(),
        format!("ghcr.io/acme/odoo18@{D1}")
    );
    assert_eq!(meta.created_at, "2026-01-30T10:00:00Z");
    let env = fs::read_to_string(dir.join(".env")).unwrap();
    assert!(env.contains("COMPOSE_PROJECT_NAME=odoo18-staging\n"));
    assert!(env.contains("DB_PASSWORD=s3cr3t-pw\n"));
    assert_eq!(mode(&dir.join(".env")), 0o600);
    assert_eq!(mode(&dir.join("compose.yaml")), 0o444);
    assert_eq!(mode(&dir.join("config/odoo.conf")), 0o444);
    assert_eq!(mode(&dir.join(META_FILE)), 0o444);
    assert_eq!(mode(&dir), 0o555);
    assert_eq!(mode(&dir.join("config")), 0o555);
    assert!(dir.join(OVERRIDE_FILE).is_file());
    let names: Vec<String> = fs::read_dir(layout.releases_dir("odoo18-staging"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![id.clone()], "no .tmp- left");
    // The same id is never written twice.
    let st = stack();
    let r = render(&st, &secrets(), None).unwrap();
    let meta = ReleaseMeta::new(&st, &r, &id, time(0));
    assert!(matches!(
        create(&layout, &st.name, &r, &meta),
        Err(Error::Exists { .. })
    ));
    // A unique id within the same second.
    let id2 = make(&layout, "sha-724f892", 0);
    assert_eq!(id2, "sha-724f892__20260130T100001Z");
}

#[test]
fn decrypted_secrets_are_owner_only_files_and_their_env_variables_are_masked() {
    let t = Root::new();
    let layout = t.layout();
    let mut st = stack();
    st.spec.secrets = vec!["app.env.age".into(), "config/db.ini.age".into()];
    st.files
        .insert("app.env.age".into(), b"age-ciphertext-1".to_vec());
    st.files
        .insert("config/db.ini.age".into(), b"age-ciphertext-2".to_vec());
    let mut host = secrets();
    host.decrypted = vec![
        (
            "app.env".into(),
            b"APP_TOKEN=tok-from-git\nDB_PASSWORD=from-git\n".to_vec(),
        ),
        (
            "config/db.ini".into(),
            b"[db]\npassword = hunter2-long\n".to_vec(),
        ),
    ];
    let r = render(&st, &host, None).unwrap();
    assert!(
        !r.files.contains_key("app.env.age"),
        "ciphertext is not copied"
    );
    assert_eq!(r.files["config/db.ini"], host.decrypted[1].1);
    assert_eq!(
        r.secret_files.iter().collect::<Vec<_>>(),
        vec!["app.env", "config/db.ini"]
    );
    assert!(
        r.env_file.contains("APP_TOKEN=tok-from-git\n"),
        "{}",
        r.env_file
    );
    assert!(
        r.env_file.contains("DB_PASSWORD=s3cr3t-pw\n")
            && !r.env_file.contains("DB_PASSWORD=from-git"),
        "the host's env file wins: {}",
        r.env_file
    );
    for v in ["tok-from-git", "password = hunter2-long", "hunter2-long"] {
        assert!(r.secret_values.iter().any(|s| s == v), "{v} masked");
    }
    assert!(
        !r.secret_values.iter().any(|s| s == "[db]"),
        "short lines are syntax"
    );

    // Re-encrypting the same plaintext changes nothing; a new plaintext does.
    let mut again = st.clone();
    again
        .files
        .insert("app.env.age".into(), b"age-ciphertext-3".to_vec());
    assert_eq!(
        render(&again, &host, None).unwrap().fingerprint,
        r.fingerprint
    );
    let mut rotated = host.clone();
    rotated.decrypted[1].1 = b"[db]\npassword = rotated-long\n".to_vec();
    assert_ne!(
        render(&st, &rotated, None).unwrap().fingerprint,
        r.fingerprint
    );

    let id = new_release_id("v1", time(0), |_| false);
    let meta = ReleaseMeta::new(&st, &r, &id, time(0));
    assert_eq!(meta.secret_files, vec!["app.env", "config/db.ini"]);
    let dir = create(&layout, &st.name, &r, &meta).unwrap();
    assert_eq!(mode(&dir.join("config/db.ini")), ENV_MODE);
    assert_eq!(mode(&dir.join("app.env")), ENV_MODE);
    assert_eq!(mode(&dir.join("compose.yaml")), 0o444);

    // A secret may not land on a file of the stack.
    let mut clash = host.clone();
    clash.decrypted[0].0 = "compose.yaml".into();
    assert!(matches!(
        render(&st, &clash, None),
        Err(Error::ReservedFile { .. })
    ));
}

#[test]
fn crash_leftovers_are_not_releases_and_are_swept() {
    let t = Root::new();
    let layout = t.layout();
    let id = make(&layout, "v1", 0);
    let rel = layout.releases_dir("odoo18-staging");
    fs::create_dir_all(rel.join(".tmp-v2__20260130T100009Z/config")).unwrap();
    fs::write(rel.join(".tmp-v2__20260130T100009Z/compose.yaml"), "x").unwrap();
    fsutil::set_tree_readonly(&rel.join(".tmp-v2__20260130T100009Z")).unwrap();
    fs::create_dir_all(layout.stacks_dir()).unwrap();
    let tmp_link = layout.stacks_dir().join(".odoo18-staging.tmp-link-999");
    std::os::unix::fs::symlink("/nonexistent", &tmp_link).unwrap();
    let other_link = layout.stacks_dir().join(".other.tmp-link-999");
    std::os::unix::fs::symlink("/nonexistent", &other_link).unwrap();

    let ids: Vec<String> = list(&layout, "odoo18-staging")
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec![id.clone()]);
    let removed = sweep_temp(&layout, "odoo18-staging").unwrap();
    assert_eq!(removed.len(), 2);
    assert!(!rel.join(".tmp-v2__20260130T100009Z").exists());
    assert!(fs::symlink_metadata(&tmp_link).is_err());
    assert!(
        fs::symlink_metadata(&other_link).is_ok(),
        "other stacks' links untouched"
    );
    assert!(sweep_temp(&layout, "odoo18-staging").unwrap().is_empty());
}

#[test]
fn switch_is_atomic_and_refuses_incomplete() {
    let t = Root::new();
    let layout = t.layout();
    let stack = "odoo18-staging";
    assert_eq!(current(&layout, stack).unwrap(), None);
    let a = make(&layout, "v1", 0);
    let b = make(&layout, "v2", 1);
    switch(&layout, stack, &a).unwrap();
    assert_eq!(
        current(&layout, stack).unwrap().as_deref(),
        Some(a.as_str())
    );
    switch(&layout, stack, &b).unwrap();
    let link = layout.stack_link(stack);
    assert_eq!(
        fs::read_link(&link).unwrap(),
        std::path::absolute(layout.release_dir(stack, &b)).unwrap()
    );
    assert_eq!(
        current(&layout, stack).unwrap().as_deref(),
        Some(b.as_str())
    );
    switch(&layout, stack, &b).unwrap();
    let names: Vec<String> = fs::read_dir(layout.stacks_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![stack.to_string()], "no temp link remains");
    assert!(
        fs::read_to_string(link.join(".env"))
            .unwrap()
            .contains("COMPOSE_PROJECT_NAME")
    );

    // Incomplete: a directory without release.json, and a missing id.
    let half = layout.release_dir(stack, "v3__20260130T100002Z");
    fs::create_dir_all(&half).unwrap();
    fs::write(half.join("compose.yaml"), "x").unwrap();
    assert!(matches!(
        switch(&layout, stack, "v3__20260130T100002Z"),
        Err(Error::Incomplete { .. })
    ));
    assert!(matches!(
        switch(&layout, stack, "nope__20260130T100002Z"),
        Err(Error::Incomplete { .. })
    ));
    assert_eq!(
        current(&layout, stack).unwrap().as_deref(),
        Some(b.as_str())
    );
    let info = list(&layout, stack).unwrap();
    assert_eq!(
        info.iter().map(|r| r.complete).collect::<Vec<_>>(),
        vec![true, true, false]
    );
    unlink(&layout, stack).unwrap();
    assert!(fs::symlink_metadata(&link).is_err());
    assert_eq!(current(&layout, stack).unwrap(), None);
    unlink(&layout, stack).unwrap();
    assert!(layout.release_dir(stack, &b).is_dir(), "the release stays");
}

#[test]
fn legacy_and_foreign_links_are_errors() {
    let t = Root::new();
    let layout = t.layout();
    let stack = "odoo18-staging";
    let a = make(&layout, "v1", 0);
    fs::create_dir_all(layout.stack_link(stack)).unwrap();
    fs::write(layout.stack_link(stack).join("docker-compose.yml"), "x").unwrap();
    let e = switch(&layout, stack, &a).unwrap_err();
    assert!(matches!(e, Error::LegacyDir { .. }), "{e}");
    assert!(
        layout.stack_link(stack).join("docker-compose.yml").exists(),
        "left alone"
    );
    assert!(matches!(
        current(&layout, stack),
        Err(Error::LegacyDir { .. })
    ));
    fs::remove_dir_all(layout.stack_link(stack)).unwrap();

    std::os::unix::fs::symlink(t.0.path(), layout.stack_link(stack)).unwrap();
    assert!(matches!(
        current(&layout, stack),
        Err(Error::ForeignLink { .. })
    ));
    fs::remove_file(layout.stack_link(stack)).unwrap();
    std::os::unix::fs::symlink(
        layout.release_dir(stack, "gone__20260130T100000Z"),
        layout.stack_link(stack),
    )
    .unwrap();
    assert!(matches!(
        current(&layout, stack),
        Err(Error::Dangling { .. })
    ));
    // A relative link made by hand is understood.
    fs::remove_file(layout.stack_link(stack)).unwrap();
    std::os::unix::fs::symlink(
        format!("../releases/stacks/{stack}/{a}"),
        layout.stack_link(stack),
    )
    .unwrap();
    assert_eq!(
        current(&layout, stack).unwrap().as_deref(),
        Some(a.as_str())
    );
}

#[test]
fn retain_keeps_newest_protected_and_current() {
    let t = Root::new();
    let layout = t.layout();
    let stack = "odoo18-staging";
    let ids: Vec<String> = (0..6).map(|i| make(&layout, &format!("v{i}"), i)).collect();
    // An incomplete leftover older than the newest, and one newer.
    let old_half = layout.release_dir(stack, "old__20260130T095959Z");
    fs::create_dir_all(&old_half).unwrap();
    let new_half = layout.release_dir(stack, "new__20260130T110000Z");
    fs::create_dir_all(&new_half).unwrap();
    switch(&layout, stack, &ids[1]).unwrap();

    let removed = retain(&layout, stack, 2, &[ids[0].as_str()]).unwrap();
    assert_eq!(
        removed,
        vec![
            "old__20260130T095959Z".to_string(),
            ids[2].clone(),
            ids[3].clone()
        ]
    );
    let left: Vec<String> = list(&layout, stack)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        left,
        vec![
            ids[0].clone(),
            ids[1].clone(),
            ids[4].clone(),
            ids[5].clone(),
            "new__20260130T110000Z".to_string()
        ]
    );
    assert!(
        retain(&layout, stack, 2, &[ids[0].as_str()])
            .unwrap()
            .is_empty(),
        "idempotent"
    );
    // keep 0 still keeps the current release.
    let removed = retain(&layout, stack, 0, &[]).unwrap();
    assert_eq!(
        removed,
        vec![ids[0].clone(), ids[4].clone(), ids[5].clone()]
    );
    assert_eq!(
        current(&layout, stack).unwrap().as_deref(),
        Some(ids[1].as_str())
    );
}

#[test]
fn current_and_verified_records() {
    let t = Root::new();
    let layout = t.layout();
    assert_eq!(read_current(&layout, "s").unwrap(), None);
    assert_eq!(read_verified_txt(&layout, "s").unwrap(), None);
    let mut images = BTreeMap::new();
    images.insert(
        "web".to_string(),
        ImageRecord {
            pinned: format!("ghcr.io/acme/odoo18@{D1}"),
            digest: D1.to_string(),
        },
    );
    let rec = CurrentRecord {
        stack: "s".into(),
        release_id: "v1__20260130T100000Z".into(),
        version: "v1".into(),
        environment: "staging".into(),
        commit: Some("abc".into()),
        images,
        fingerprint: "f".repeat(64),
        deployed_at: "2026-01-30T10:00:00Z".into(),
        actor: "stackpin@web-1".into(),
    };
    write_current(&layout, "s", &rec).unwrap();
    assert_eq!(read_current(&layout, "s").unwrap(), Some(rec));
    assert!(
        layout
            .current_json("s")
            .ends_with("releases/current/s.json")
    );
    write_verified_txt(&layout, "s", "sha-724f892").unwrap();
    assert_eq!(
        fs::read_to_string(layout.verified_txt("s")).unwrap(),
        "sha-724f892\n"
    );
    assert_eq!(
        read_verified_txt(&layout, "s").unwrap().as_deref(),
        Some("sha-724f892")
    );
    fs::write(layout.current_json("s"), "{not json").unwrap();
    let e = read_current(&layout, "s").unwrap_err().to_string();
    assert!(
        e.starts_with("failed to parse") && e.contains("current/s.json"),
        "{e}"
    );
}

#[test]
fn layout_paths() {
    let l = Layout::new("/srv");
    assert_eq!(l.stack_link("a"), Path::new("/srv/stacks/a"));
    assert_eq!(l.releases_dir("a"), Path::new("/srv/releases/stacks/a"));
    assert_eq!(
        l.release_dir("a", "v__x"),
        Path::new("/srv/releases/stacks/a/v__x")
    );
    assert_eq!(
        l.verified_txt("a"),
        Path::new("/srv/releases/verified/a.txt")
    );
    assert_eq!(
        l.verified_store("a"),
        Path::new("/srv/releases/verified/a.yaml")
    );
    assert_eq!(l.history(), Path::new("/srv/deploy-history.log"));
    assert_eq!(l.state_dir(), Path::new("/srv/releases/.stackpin"));
}
