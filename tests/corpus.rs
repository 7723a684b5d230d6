//! The bad-input corpus (tests/corpus/): every malformed repository is
//! rejected by `validate` and by `sync` with a message naming the file, the
//! host is unchanged for it, and a good stack in the same repository still
//! converges.

use crate::common;

use common::{Fixtures, TestHost};
use std::path::{Path, PathBuf};

const GOOD_DIGEST: &str = "sha256:1db6436ca7e084705cffcf3e760b6659cce449bd636edf94917b28de2df3fbe5";

struct Case {
    name: String,
    repo: PathBuf,
    file: String,
    message: String,
}

fn corpus() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut out: Vec<Case> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("expect").is_file())
        .map(|e| {
            let expect = std::fs::read_to_string(e.path().join("expect")).unwrap();
            let field = |k: &str| {
                expect
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .unwrap_or_else(|| panic!("{}: no {k}", e.path().display()))
                    .trim()
                    .to_string()
            };
            Case {
                name: e.file_name().to_string_lossy().into_owned(),
                repo: e.path().join("repo"),
                file: field("file:"),
                message: field("message:"),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        out.len() >= 40,
        "the corpus must hold at least 40 cases, found {}",
        out.len()
    );
    out
}

/// Copies a case's repository (symlinks kept as links) into `dest`.
fn copy_case(src: &Path, dest: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(dest)
        .status()
        .unwrap();
    assert!(status.success(), "cp -a {}", src.display());
}

/// Writes cases that are too large to commit.
fn generated(dir: &Path) -> Vec<(String, PathBuf, String, String)> {
    let mut out = Vec::new();
    let huge = dir.join("huge-file");
    std::fs::create_dir_all(huge.join("stacks/bad")).unwrap();
    std::fs::write(
        huge.join("stacks/bad/stack.yaml"),
        format!("images:\n  web: app@{GOOD_DIGEST}\n"),
    )
    .unwrap();
    let mut big = String::from("services:\n  web:\n    image: app\nx-padding: |\n");
    while big.len() < 2 << 20 {
        big.push_str("  0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n");
    }
    std::fs::write(huge.join("stacks/bad/compose.yaml"), big).unwrap();
    out.push((
        "huge-file".into(),
        huge,
        "stacks/bad/compose.yaml".into(),
        "larger than the".into(),
    ));

    let many = dir.join("many-services");
    std::fs::create_dir_all(many.join("stacks/bad")).unwrap();
    std::fs::write(many.join("stacks/bad/stack.yaml"), "environment: x\n").unwrap();
    let mut text = String::from("services:\n");
    for i in 0..10_000 {
        text.push_str(&format!("  s{i}: {{image: \"app@{GOOD_DIGEST}\"}}\n"));
    }
    std::fs::write(many.join("stacks/bad/compose.yaml"), text).unwrap();
    out.push((
        "many-services".into(),
        many,
        "stacks/bad/compose.yaml".into(),
        "services".into(),
    ));
    out
}

fn write_good_stack(repo: &Path, image: &str, port: u16, marker: &str) {
    let d = repo.join("stacks/good");
    std::fs::create_dir_all(d.join("config")).unwrap();
    std::fs::write(
        d.join("stack.yaml"),
        format!("environment: test\nimages:\n  web: {image}\nenv:\n  PORT: \"{port}\"\nsmoke:\n  timeout: 15s\n  checks:\n    - http: {{url: \"http://127.0.0.1:{port}/health\"}}\n"),
    )
    .unwrap();
    std::fs::write(d.join("compose.yaml"), "services:\n  web:\n    image: app\n    network_mode: host\n    stop_grace_period: 1s\n    environment:\n      PORT: ${PORT}\n    volumes: ['./config/marker:/etc/marker:ro']\n").unwrap();
    std::fs::write(d.join("config/marker"), marker).unwrap();
}

#[test]
fn validate_rejects_every_case_naming_the_file() {
    let h = TestHost::new();
    let mut all: Vec<(String, PathBuf, String, String)> = corpus()
        .into_iter()
        .map(|c| (c.name, c.repo, c.file, c.message))
        .collect();
    all.extend(generated(&h.tmp().join("generated")));
    let mut failures = Vec::new();
    for (name, src, file, message) in &all {
        let work = h.tmp().join("cases").join(name);
        std::fs::create_dir_all(&work).unwrap();
        copy_case(src, &work);
        write_good_stack(
            &work,
            &format!("registry.example/app@{GOOD_DIGEST}"),
            8080,
            "x",
        );
        let out = h.cmd_raw(["validate", "--json"]).arg(&work).run();
        if out.status_code() != Some(1) {
            failures.push(format!(
                "{name}: exit {:?}\n{}",
                out.status_code(),
                out.stdout()
            ));
            continue;
        }
        let findings: Vec<serde_json::Value> = serde_json::from_str(&out.stdout())
            .unwrap_or_else(|e| panic!("{name}: --json is not JSON: {e}"));
        let hit = findings.iter().any(|f| {
            f["severity"] == "error"
                && f["file"]
                    .as_str()
                    .is_some_and(|x| x == file || x.starts_with(file.as_str()))
                && f["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(message.as_str()))
        });
        if !hit {
            failures.push(format!(
                "{name}: no error naming {file} with {message:?}: {findings:#?}"
            ));
        }
        // The good stack's one warning: the host network it asks for (a
        // host grants it, as the test host does).
        let host_network = |f: &serde_json::Value| {
            f["severity"] == "warning"
                && f["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("power `host_network`"))
        };
        if findings
            .iter()
            .any(|f| f["stack"] == "good" && !host_network(f))
        {
            failures.push(format!(
                "{name}: the good stack was reported: {findings:#?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n\n")
    );
}

#[test]
fn sync_refuses_every_case_and_the_good_stack_still_converges() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let port = h.free_port();
    h.stack("good"); // cleaned up on drop
    // The good stack's compose project is its directory name: make it unique.
    let good = h.stack("good");
    let mut all: Vec<(String, PathBuf, String, String)> = corpus()
        .into_iter()
        .map(|c| (c.name, c.repo, c.file, c.message))
        .collect();
    all.extend(generated(&h.tmp().join("generated")));
    let repo = h.repo();
    let mut deploys = 0;
    for (i, (name, src, file, _)) in all.iter().enumerate() {
        // A fresh repository content per case: the good stack plus the case.
        for entry in std::fs::read_dir(&repo).unwrap().flatten() {
            if entry.file_name() != ".git" {
                let p = entry.path();
                if p.is_dir() && !p.is_symlink() {
                    std::fs::remove_dir_all(&p).unwrap()
                } else {
                    std::fs::remove_file(&p).unwrap()
                }
            }
        }
        copy_case(src, &repo);
        // Every 8th case changes the good stack, so it must converge (deploy)
        // next to the bad one; the others must leave it unchanged.
        let bump = i % 8 == 0;
        if bump {
            deploys += 1;
        }
        write_good_stack(&repo, &f.v1, port, &format!("deploy {deploys}"));
        std::fs::rename(repo.join("stacks/good"), repo.join("stacks").join(&good)).unwrap();
        h.commit(name);
        let out = h.cmd(["sync"]).run();
        assert_eq!(
            out.status_code(),
            Some(1),
            "{name}: a bad stack must make sync exit 1\n{}",
            out.report()
        );
        assert!(
            out.stderr().contains(file.as_str())
                || out.stderr().contains(file.trim_end_matches('/')),
            "{name}: stderr must name {file}\n{}",
            out.report()
        );
        let want = if bump { "deployed" } else { "unchanged" };
        assert!(
            out.stdout()
                .lines()
                .any(|l| l.starts_with(&good) && l.contains(want)),
            "{name}: the good stack must be {want}\n{}",
            out.report()
        );
        // Nothing exists on the host for any bad stack.
        let linked: Vec<String> = std::fs::read_dir(h.root().join("stacks"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            linked,
            vec![good.clone()],
            "{name}: only the good stack may be on the host\n{}",
            h.root_listing()
        );
    }
    assert!(
        h.http_get(port, "/")
            .is_some_and(|b| b.contains("stackpin-test-app v1"))
    );
}

// ---- compose as the oracle (issue 32) ----------------------------------
//
// tests/compose-corpus/ holds compose files as users write them (some of
// compose's own e2e fixtures, the specification's forms) and files compose
// refuses. For each, `docker compose config` (v2) gives compose's verdict
// and model; stackpin's load gives its own. The verdicts must agree, except
// where docs/compose-corpus.md records a deliberate difference (listed in
// docs/format.md too), and where both accept, the models must agree on what each
// service runs.

/// A case's row of docs/compose-corpus.md: compose's verdict, stackpin's,
/// and why they differ.
struct Row {
    compose: String,
    stackpin: String,
    why: String,
}

fn corpus_table() -> std::collections::BTreeMap<String, Row> {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/compose-corpus.md"),
    )
    .unwrap();
    doc.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            assert!(cells.len() >= 5, "docs/compose-corpus.md row: {l}");
            (
                cells[0].trim_matches('`').to_string(),
                Row {
                    compose: cells[2].to_string(),
                    stackpin: cells[3].to_string(),
                    why: cells[4].to_string(),
                },
            )
        })
        .collect()
}

/// Words of a shell command line, as compose splits a string `command`.
fn shell_words(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    for c in s.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (_, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A `K=V` list or a mapping, as a mapping of strings.
fn as_map(v: &serde_json::Value) -> std::collections::BTreeMap<String, Option<String>> {
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    };
    match v {
        serde_json::Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), s(v))).collect(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|e| e.as_str())
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (e.to_string(), None),
            })
            .collect(),
        _ => Default::default(),
    }
}

fn as_list(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a
            .iter()
            .map(|e| {
                e.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| e.to_string())
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Volume targets and whether each is read-only.
fn mounts(v: &serde_json::Value) -> std::collections::BTreeMap<String, bool> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| match e {
            serde_json::Value::String(s) => {
                let p: Vec<&str> = s.split(':').collect();
                let target = if p.len() == 1 { p[0] } else { p[1] };
                let ro = p.get(2).is_some_and(|o| o.split(',').any(|x| x == "ro"));
                Some((target.to_string(), ro))
            }
            serde_json::Value::Object(m) => Some((
                m.get("target")?.as_str()?.to_string(),
                m.get("read_only")
                    .and_then(|r| r.as_bool())
                    .unwrap_or(false),
            )),
            _ => None,
        })
        .collect()
}

/// The variables of a service's env files, as compose inlines them.
fn env_file_vars(dir: &Path, svc: &serde_json::Value) -> std::collections::BTreeSet<String> {
    let files: Vec<String> = match svc.get("env_file") {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|e| e.as_str().or_else(|| e.get("path")?.as_str()))
            .map(str::to_string)
            .collect(),
        Some(v) => as_list(v),
        None => Vec::new(),
    };
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| Some(l.split_once('=')?.0.trim().to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Where stackpin's resolved service and compose's differ, in words.
fn model_differences(
    dir: &Path,
    name: &str,
    ours: &serde_json::Value,
    theirs: &serde_json::Value,
) -> Vec<String> {
    let mut out = Vec::new();
    let differ = |what: &str, a: String, b: String| {
        (a != b).then(|| format!("{name}.{what}: stackpin {a}, compose {b}"))
    };
    let words = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => shell_words(s),
        Some(v) => as_list(v),
        None => Vec::new(),
    };
    let literal = |v: &serde_json::Value| !v.to_string().contains('$');
    for key in ["command", "entrypoint"] {
        if ours.get(key).is_none_or(literal) {
            out.extend(differ(
                key,
                format!("{:?}", words(ours.get(key))),
                format!("{:?}", words(theirs.get(key).filter(|v| !v.is_null()))),
            ));
        }
    }
    for key in ["cap_add", "dns", "dns_search", "tmpfs", "profiles"] {
        let (mut a, mut b) = (
            ours.get(key).map(as_list).unwrap_or_default(),
            theirs.get(key).map(as_list).unwrap_or_default(),
        );
        a.sort();
        b.sort();
        out.extend(differ(key, format!("{a:?}"), format!("{b:?}")));
    }
    if ours.get("labels").is_none_or(literal) {
        out.extend(differ(
            "labels",
            format!("{:?}", ours.get("labels").map(as_map).unwrap_or_default()),
            format!("{:?}", theirs.get("labels").map(as_map).unwrap_or_default()),
        ));
    }
    // Environment: each literal variable stackpin sets, compose sets alike;
    // compose's others come from the env files it inlines.
    let env = ours.get("environment").map(as_map).unwrap_or_default();
    let their_env = theirs.get("environment").map(as_map).unwrap_or_default();
    for (k, v) in &env {
        if v.as_deref().is_some_and(|v| !v.contains('$')) {
            out.extend(differ(
                &format!("environment.{k}"),
                format!("{v:?}"),
                format!("{:?}", their_env.get(k).cloned().flatten()),
            ));
        }
    }
    let from_files = env_file_vars(dir, ours);
    for k in their_env.keys() {
        if !env.contains_key(k) && !from_files.contains(k) {
            out.push(format!(
                "{name}.environment: compose sets {k}, stackpin does not"
            ));
        }
    }
    let (a, b) = (
        ours.get("volumes").map(mounts).unwrap_or_default(),
        theirs.get("volumes").map(mounts).unwrap_or_default(),
    );
    out.extend(differ(
        "volumes",
        format!("{:?}", a.keys().collect::<Vec<_>>()),
        format!("{:?}", b.keys().collect::<Vec<_>>()),
    ));
    for (t, ro) in &b {
        if *ro && a.get(t) == Some(&false) {
            out.push(format!(
                "{name}.volumes {t}: compose mounts it read-only, stackpin writable"
            ));
        }
    }
    let count = |v: Option<&serde_json::Value>| v.and_then(|p| p.as_array()).map_or(0, Vec::len);
    out.extend(differ(
        "ports",
        count(ours.get("ports")).to_string(),
        count(theirs.get("ports")).to_string(),
    ));
    let deps = |v: Option<&serde_json::Value>| -> Vec<String> {
        match v {
            Some(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
            Some(v) => as_list(v),
            None => Vec::new(),
        }
    };
    let (mut a, mut b) = (deps(ours.get("depends_on")), deps(theirs.get("depends_on")));
    a.sort();
    b.sort();
    out.extend(differ("depends_on", format!("{a:?}"), format!("{b:?}")));
    if ours.get("image").is_some_and(literal) {
        out.extend(differ(
            "image",
            format!("{:?}", ours.get("image")),
            format!("{:?}", theirs.get("image")),
        ));
    }
    out
}

#[test]
fn stackpin_reads_the_compose_corpus_as_compose_does() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compose-corpus");
    let table = corpus_table();
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/format.md"))
            .unwrap();
    let mut cases: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("compose.yaml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    assert!(cases.len() >= 30, "the corpus holds {} cases", cases.len());
    let (mut failures, mut rows) = (Vec::new(), Vec::new());
    for case in &cases {
        let dir = src.join(case);
        // Compose's verdict and model.
        let mut config = std::process::Command::new("docker");
        config
            .args(["compose", "-p", "corpus", "config", "--format", "json"])
            .current_dir(&dir)
            .env("DOCKER_CONFIG", &f.compose_v2_config);
        let out = h.command(config).run();
        let theirs: Option<serde_json::Value> = out
            .success()
            .then(|| serde_json::from_str(&out.stdout()).expect("compose config --format json"));
        // stackpin's, with every service pinned (pins are stackpin's rule,
        // not compose's).
        let repo = h.tmp().join("corpus-repo").join(case);
        let stack = repo.join("stacks").join(case);
        std::fs::create_dir_all(&stack).unwrap();
        copy_case(&dir, &stack);
        let raw: serde_json::Value =
            serde_saphyr::from_str(&std::fs::read_to_string(dir.join("compose.yaml")).unwrap())
                .unwrap_or_default();
        let mut services: std::collections::BTreeSet<String> = raw
            .get("services")
            .and_then(|s| s.as_object())
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        if let Some(t) = &theirs {
            services.extend(t["services"].as_object().unwrap().keys().cloned());
        }
        let pins: String = services
            .iter()
            .map(|s| format!("  {s}: registry.example/corpus@{GOOD_DIGEST}\n"))
            .collect();
        std::fs::write(
            stack.join("stack.yaml"),
            format!("environment: test\nimages:\n{pins}"),
        )
        .unwrap();
        let st = stackpin::desired::load(&stackpin::desired::DirTree::new(&repo));
        let errors: Vec<String> = st
            .errors()
            .map(|e| format!("{}: {}: {}", e.file, e.field, e.message))
            .collect();
        let verdict = |ok: bool| if ok { "accept" } else { "refuse" };
        let (c, s) = (verdict(theirs.is_some()), verdict(errors.is_empty()));
        rows.push(format!("{case}: compose {c}, stackpin {s}"));
        match table.get(case) {
            None => failures.push(format!(
                "{case}: no row in docs/compose-corpus.md (compose {c}, stackpin {s})"
            )),
            Some(r) if r.compose != c || r.stackpin != s => failures.push(format!(
                "{case}: docs/compose-corpus.md says compose {}, stackpin {}; the run: compose {c}, stackpin {s}; stackpin: {errors:?}; compose: {}",
                r.compose,
                r.stackpin,
                out.stderr()
            )),
            Some(r) if c != s && (r.why.is_empty() || !readme.contains(&format!("`{case}`"))) => {
                failures.push(format!(
                    "{case}: a difference needs its reason in docs/compose-corpus.md and its name in docs/format.md"
                ))
            }
            Some(_) => {}
        }
        // Both accept: the models agree on what each service runs.
        if let (Some(t), true) = (&theirs, errors.is_empty()) {
            let s = &st.stacks[case.as_str()];
            let ours = &s.compose.value["services"];
            let (a, b): (Vec<&String>, Vec<&String>) = (
                ours.as_object().unwrap().keys().collect(),
                t["services"].as_object().unwrap().keys().collect(),
            );
            let (mut a, mut b) = (a, b);
            a.sort();
            b.sort();
            if a != b {
                failures.push(format!("{case}: services: stackpin {a:?}, compose {b:?}"));
                continue;
            }
            let allowed: Vec<&str> = table
                .get(case)
                .map(|r| r.why.as_str())
                .into_iter()
                .collect();
            for name in a {
                for d in model_differences(
                    &stack,
                    name,
                    &ours[name.as_str()],
                    &t["services"][name.as_str()],
                ) {
                    // A documented model difference names its field.
                    let field = d.split(':').next().unwrap_or("");
                    if !allowed.iter().any(|w| w.contains(field)) {
                        failures.push(format!("{case}: {d}"));
                    }
                }
            }
        }
    }
    eprintln!("{}", rows.join("\n"));
    assert!(
        failures.is_empty(),
        "{} disagreement(s) outside docs/compose-corpus.md:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
