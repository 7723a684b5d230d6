//! The bad-input corpus (tests/corpus/): every malformed repository is
//! rejected by `validate` and by `sync` with a message naming the file, the
//! host is unchanged for it, and a good stack in the same repository still
//! converges.

mod common;

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
