//! Publishing verified markers to a real git repository (issue 5, item 2):
//! two "hosts" (threads, each with its own state dir and work repository)
//! publish different entries to the same branch at the same moment, round
//! after round, over a local path (compare-and-swap) and over `git://`
//! (`git daemon` with receive-pack: a real non-fast-forward rejection). Every
//! entry lands, the file's existing bytes stay, and no commit touches any
//! other file.
//!
//! Needs `git` (and `git daemon`, part of git). No Docker.

use crate::common;

use stackpin::desired::spec::VerifiedEntry;
use stackpin::layout::Layout;
use stackpin::publish::{self, Publisher, Settings};
use stackpin::source::Auth;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

const HEADER: &str = "# Verified markers for app: appended by the staging reconciler.\nverified:\n  - version: sha-0000000\n    images:\n      web: ghcr.io/acme/app@sha256:0000000000000000000000000000000000000000000000000000000000000000\n    verified_at: \"2026-01-31T06:55:00Z\"\n    host: staging-0   # kept as written\n    commit: f921d1cec0e58bf2e14c2e502adb274cf6ea0f89\n";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(common::GIT_TEST_CONFIG)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A bare repository `remote.git` with a stack, a README and a verified
/// file; returns its path and the initial commit.
fn remote(tmp: &Path) -> (PathBuf, String) {
    let work = tmp.join("seed");
    std::fs::create_dir_all(work.join("stacks/app")).unwrap();
    std::fs::create_dir_all(work.join("verified")).unwrap();
    std::fs::write(work.join("stacks/app/stack.yaml"), "marks_verified: true\n").unwrap();
    std::fs::write(work.join("README.md"), "desired state\n").unwrap();
    std::fs::write(work.join("verified/app.yaml"), HEADER).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "seed"]);
    let bare = tmp.join("remote.git");
    git(
        tmp,
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    let head = git(&bare, &["rev-parse", "main"]).trim().to_string();
    (bare, head)
}

fn settings(url: &str, host: &str, state: PathBuf) -> Settings {
    Settings {
        url: url.to_string(),
        branch: "main".into(),
        path: ".".into(),
        auth: Auth::None,
        author_name: "stackpin".into(),
        author_email: format!("stackpin@{host}"),
        host: host.into(),
        state_dir: state,
        attempts: 10,
        backoff: Duration::from_millis(20),
    }
}

fn entry(version: &str, host: &str, n: u32) -> VerifiedEntry {
    VerifiedEntry {
        version: version.into(),
        images: [(
            "web".to_string(),
            format!("ghcr.io/acme/app@sha256:{:064x}", n),
        )]
        .into(),
        verified_at: "2026-02-01T00:00:00Z".into(),
        host: host.into(),
        commit: "5777e06c97ef8c8b025ad6e81199d89be62fa2a8".into(),
        soaked_at: None,
        signature: None,
    }
}

/// The marker file on `main` of the bare repository.
fn file_on_main(bare: &Path) -> String {
    git(bare, &["show", "main:verified/app.yaml"])
}

/// Every commit after `base` on main changes only verified/app.yaml and is
/// authored and committed by a stackpin host.
fn assert_only_marker_commits(bare: &Path, base: &str) {
    let range = format!("{base}..main");
    let commits = git(bare, &["rev-list", &range]);
    for c in commits.lines() {
        let files = git(bare, &["show", "--name-only", "--format=", c]);
        assert_eq!(
            files.trim(),
            "verified/app.yaml",
            "commit {c} changes more than the marker file"
        );
        let who = git(bare, &["show", "-s", "--format=%an <%ae>|%cn <%ce>", c]);
        assert!(
            who.trim().starts_with("stackpin <stackpin@host-")
                && who.contains("|stackpin <stackpin@host-"),
            "{c}: {who}"
        );
        let parents = git(bare, &["show", "-s", "--format=%P", c]);
        assert_eq!(
            parents.split_whitespace().count(),
            1,
            "{c} must be a plain commit on the previous head"
        );
    }
    // Nothing else in the tree changed.
    let diff = git(bare, &["diff", "--name-only", base, "main"]);
    assert_eq!(diff.trim(), "verified/app.yaml");
}

/// Two hosts publish different entries at the same moment, `rounds` times.
fn race(url: &str, bare: &Path, base: &str, tmp: &Path, rounds: u32) {
    let barrier = Arc::new(Barrier::new(2));
    let mut handles = Vec::new();
    for h in 0..2u32 {
        let host = format!("host-{h}");
        let p = Publisher::new(settings(url, &host, tmp.join(format!("state-{h}"))));
        let barrier = barrier.clone();
        handles.push(std::thread::spawn(move || {
            let mut attempts = 0;
            for r in 0..rounds {
                barrier.wait();
                let e = entry(&format!("v{r}-{host}"), &host, 1 + r * 2 + h);
                let out = p
                    .publish("app", std::slice::from_ref(&e))
                    .unwrap_or_else(|err| panic!("{host} round {r}: {err}"));
                assert!(out.commit.is_some(), "{host} round {r}: {out:?}");
                assert_eq!(out.added, vec![e.version.clone()]);
                attempts += out.attempts;
            }
            attempts
        }));
    }
    let attempts: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    eprintln!("{url}: {} publishes took {attempts} attempts", rounds * 2);
    let text = file_on_main(bare);
    assert!(
        text.starts_with(HEADER),
        "existing entries must keep their bytes:\n{text}"
    );
    let list = publish::parse_verified(&text).unwrap();
    assert_eq!(list.len() as u32, 1 + rounds * 2, "{text}");
    for r in 0..rounds {
        for h in 0..2u32 {
            let host = format!("host-{h}");
            let want = entry(&format!("v{r}-{host}"), &host, 1 + r * 2 + h);
            assert!(list.contains(&want), "lost {want:?}:\n{text}");
        }
    }
    assert_only_marker_commits(bare, base);
}

#[test]
fn concurrent_hosts_over_a_local_path_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (bare, base) = remote(tmp.path());
    let url = format!("file://{}", bare.display());
    race(&url, &bare, &base, tmp.path(), 6);
}

#[test]
fn concurrent_hosts_over_git_protocol_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (bare, base) = remote(tmp.path());
    let daemon = common::GitDaemon::serve(tmp.path(), true);
    let url = format!("git://127.0.0.1:{}/remote.git", daemon.port);
    race(&url, &bare, &base, tmp.path(), 5);
}

#[test]
fn pending_entries_are_published_once_and_not_resurrected() {
    let tmp = tempfile::tempdir().unwrap();
    let (bare, base) = remote(tmp.path());
    let root = tmp.path().join("root");
    let layout = Layout::new(&root);
    let p = Publisher::new(settings(
        bare.to_str().unwrap(),
        "host-1",
        tmp.path().join("state"),
    ));
    // Nothing verified yet: nothing to do.
    assert!(p.publish_pending(&layout).is_empty());

    let images = entry("x", "host-1", 7)
        .images
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                stackpin::desired::image::ImageRef::parse(v).unwrap(),
            )
        })
        .collect();
    let (e, added) = stackpin::verified::record(
        &layout,
        "host-1",
        "app",
        "sha-1111111",
        &images,
        Some("5777e06c97ef8c8b025ad6e81199d89be62fa2a8"),
        None,
    )
    .unwrap();
    assert!(added);
    // An entry another host verified (e.g. copied in by hand) is not ours to publish.
    let mut foreign = entry("sha-2222222", "host-2", 8);
    foreign.verified_at = e.verified_at.clone();
    let mut store = stackpin::verified::read(&layout, "app").unwrap();
    store.push(foreign.clone());
    let text = serde_saphyr::to_string(&stackpin::desired::spec::VerifiedFile { verified: store })
        .unwrap();
    std::fs::write(layout.verified_store("app"), text).unwrap();
    assert_eq!(p.pending(&layout, "app"), vec![e.clone()]);

    let out = p.publish_pending(&layout);
    assert_eq!(out.len(), 1);
    let published = out[0].1.as_ref().unwrap();
    assert!(published.commit.is_some());
    let list = publish::parse_verified(&file_on_main(&bare)).unwrap();
    assert!(list.contains(&e));
    assert!(!list.contains(&foreign));
    assert_only_marker_commits(&bare, &base);

    // Published: the next run does nothing.
    assert!(p.pending(&layout, "app").is_empty());
    let head = git(&bare, &["rev-parse", "main"]);
    assert!(p.publish_pending(&layout).is_empty());
    assert_eq!(git(&bare, &["rev-parse", "main"]), head);

    // A reviewer prunes the entry from git: it is not published again.
    let work = tmp.path().join("reviewer");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    std::fs::write(work.join("verified/app.yaml"), HEADER).unwrap();
    git(&work, &["commit", "-q", "-am", "prune old markers"]);
    git(&work, &["push", "-q", "origin", "main"]);
    assert!(p.publish_pending(&layout).is_empty());
    assert_eq!(file_on_main(&bare), HEADER);

    // Publishing the same entry explicitly is idempotent once it is there.
    let again = p.publish("app", std::slice::from_ref(&foreign)).unwrap();
    assert!(again.commit.is_some());
    let same = p.publish("app", std::slice::from_ref(&foreign)).unwrap();
    assert_eq!(same.commit, None, "already on the branch: no new commit");
}

#[test]
fn refuses_what_it_must_not_touch() {
    let tmp = tempfile::tempdir().unwrap();
    let (bare, _) = remote(tmp.path());
    let e = entry("v1", "host-1", 1);

    // A marker file that does not parse is left for a person.
    let work = tmp.path().join("w");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    std::fs::write(work.join("verified/app.yaml"), "verified: [oops\n").unwrap();
    git(&work, &["commit", "-q", "-am", "break it"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let head = git(&bare, &["rev-parse", "main"]);
    let p = Publisher::new(settings(
        bare.to_str().unwrap(),
        "host-1",
        tmp.path().join("s1"),
    ));
    let err = p.publish("app", std::slice::from_ref(&e)).unwrap_err();
    assert!(matches!(err, publish::Error::Unparsable { .. }), "{err}");
    assert!(err.to_string().contains("verified/app.yaml"), "{err}");
    assert_eq!(git(&bare, &["rev-parse", "main"]), head, "nothing pushed");

    // A work tree with the branch checked out would be left stale.
    let p = Publisher::new(settings(
        work.to_str().unwrap(),
        "host-1",
        tmp.path().join("s2"),
    ));
    let err = p.publish("app", std::slice::from_ref(&e)).unwrap_err();
    assert!(err.to_string().contains("bare repository"), "{err}");

    // A branch that does not exist.
    let mut s = settings(bare.to_str().unwrap(), "host-1", tmp.path().join("s3"));
    s.branch = "nope".into();
    let err = Publisher::new(s)
        .publish("app", std::slice::from_ref(&e))
        .unwrap_err();
    assert!(err.to_string().contains("no branch nope"), "{err}");
}
