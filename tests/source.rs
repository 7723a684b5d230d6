//! The git source against real repositories made with the git CLI: local
//! paths, `file://` bare repos, force-pushes, corrupt objects, missing
//! branches, unreachable and silent remotes, refused tokens.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::TestHost;
use stackpin::source::{Auth, Error, GitSource, SourceConfig};

const DIGEST: &str = "sha256:1db6436ca7e084705cffcf3e760b6659cce449bd636edf94917b28de2df3fbe5";

fn write_stack(host: &TestHost, base: &str, name: &str) {
    let dir = if base.is_empty() {
        format!("stacks/{name}")
    } else {
        format!("{base}/stacks/{name}")
    };
    host.write(
        format!("{dir}/stack.yaml"),
        format!("environment: staging\nimages:\n  web: ghcr.io/acme/app@{DIGEST}\n"),
    );
    host.write(
        format!("{dir}/compose.yaml"),
        "services:\n  web:\n    image: ghcr.io/acme/app\n",
    );
}

fn config(url: impl Into<String>) -> SourceConfig {
    let mut cfg = SourceConfig::new(url, "main");
    cfg.fetch_timeout = Duration::from_secs(20);
    cfg
}

fn stacks(src: &GitSource, commit: &str) -> Vec<String> {
    let st = src.load(commit).expect("load");
    assert_eq!(st.commit.as_deref(), Some(commit));
    let errors: Vec<_> = st.errors().map(|f| format!("{f:?}")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    st.stacks.keys().cloned().collect()
}

/// A bare repository `remote.git` next to the work tree, set as its `origin`.
fn bare_remote(host: &TestHost) -> PathBuf {
    let bare = host.tmp().join("remote.git");
    let ok = std::process::Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&bare)
        .status()
        .expect("failed to run git init --bare")
        .success();
    assert!(ok, "git init --bare failed");
    bare
}

fn push(host: &TestHost, bare: &Path, force: bool) {
    let mut args = vec!["push".to_string(), "-q".into()];
    if force {
        args.push("--force".into());
    }
    args.push(bare.display().to_string());
    args.push("main".into());
    host.git(args);
}

#[test]
fn fetches_a_local_work_tree_and_reads_commits_not_files() {
    let host = TestHost::new();
    write_stack(&host, "", "web");
    let c1 = host.commit("one");

    let src = GitSource::new(config(host.repo().display().to_string()), &host.state_dir()).unwrap();
    assert_eq!(src.mirror_path(), host.state_dir().join("mirror.git"));
    let f = src.fetch().unwrap();
    assert_eq!(f.commit, c1);
    assert_eq!(f.previous, None);
    assert!(f.changed && !f.forced, "{f:?}");

    // An uncommitted stack in the work tree is not desired state.
    write_stack(&host, "", "db");
    assert_eq!(stacks(&src, &c1), ["web"]);

    let f = src.fetch().unwrap();
    assert_eq!(f.commit, c1);
    assert_eq!(f.previous.as_deref(), Some(c1.as_str()));
    assert!(!f.changed && !f.forced, "{f:?}");

    let c2 = host.commit("two");
    let f = src.fetch().unwrap();
    assert_eq!(
        (f.commit.as_str(), f.previous.as_deref()),
        (c2.as_str(), Some(c1.as_str()))
    );
    assert!(f.changed && !f.forced, "{f:?}");
    assert_eq!(stacks(&src, &c2), ["db", "web"]);
    assert_eq!(stacks(&src, &c1), ["web"]);

    // The mirror persists: a new source on the same state dir remembers.
    drop(src);
    let src = GitSource::new(config(host.repo().display().to_string()), &host.state_dir()).unwrap();
    assert_eq!(src.last_fetched().as_deref(), Some(c2.as_str()));
    let f = src.fetch().unwrap();
    assert!(!f.changed, "{f:?}");
}

#[test]
fn fetches_a_bare_repo_by_file_url_and_follows_a_force_push() {
    let host = TestHost::new();
    let bare = bare_remote(&host);
    write_stack(&host, "", "web");
    let a = host.commit("a");
    write_stack(&host, "", "db");
    let b = host.commit("b");
    push(&host, &bare, false);

    let src = GitSource::new(
        config(format!("file://{}", bare.display())),
        &host.state_dir(),
    )
    .unwrap();
    let f = src.fetch().unwrap();
    assert_eq!(f.commit, b);
    assert_eq!(
        f.commit,
        host.git([
            "--git-dir",
            &bare.display().to_string(),
            "rev-parse",
            "main"
        ])
        .trim()
    );
    assert_eq!(stacks(&src, &b), ["db", "web"]);

    // Rewrite history: drop b, commit c on top of a, force-push.
    host.git(["reset", "-q", "--hard", &a]);
    write_stack(&host, "", "cache");
    let c = host.commit("c");
    push(&host, &bare, true);

    let f = src.fetch().unwrap();
    assert_eq!(f.commit, c);
    assert_eq!(f.previous.as_deref(), Some(b.as_str()));
    assert!(f.forced && f.changed, "{f:?}");
    assert_eq!(stacks(&src, &c), ["cache", "web"]);
    // What the host may still run stays readable.
    assert_eq!(stacks(&src, &b), ["db", "web"]);

    // A fast-forward after that is not forced.
    let d = host.commit("d");
    push(&host, &bare, false);
    let f = src.fetch().unwrap();
    assert_eq!(f.commit, d);
    assert!(!f.forced && f.changed, "{f:?}");
}

#[test]
fn reads_the_configured_path_inside_the_repo() {
    let host = TestHost::new();
    write_stack(&host, "deploy", "web");
    write_stack(&host, "", "elsewhere");
    let c = host.commit("one");
    let mut cfg = config(host.repo().display().to_string());
    cfg.path = "deploy".into();
    let src = GitSource::new(cfg, &host.state_dir()).unwrap();
    assert_eq!(src.fetch().unwrap().commit, c);
    assert_eq!(stacks(&src, &c), ["web"]);
}

#[test]
fn unreachable_remotes_are_transient_and_keep_the_last_good_commit() {
    let host = TestHost::new();
    write_stack(&host, "", "web");
    let good = host.commit("one");
    let ok = GitSource::new(config(host.repo().display().to_string()), &host.state_dir()).unwrap();
    ok.fetch().unwrap();

    for url in [
        "https://127.0.0.1:1/x.git".to_string(),
        host.tmp().join("no-such-repo").display().to_string(),
    ] {
        let mut cfg = config(url.clone());
        cfg.fetch_timeout = Duration::from_secs(5);
        let src = GitSource::new(cfg, &host.state_dir()).unwrap();
        let err = src.fetch().unwrap_err();
        assert!(matches!(err, Error::Fetch { .. }), "{url}: {err:?}");
        assert!(err.is_transient(), "{url}: {err:?}");
        assert!(err.to_string().starts_with("failed to fetch"), "{err}");
        assert_eq!(src.last_fetched().as_deref(), Some(good.as_str()));
        assert_eq!(stacks(&src, &good), ["web"]);
    }
}

#[test]
fn a_corrupt_object_is_an_error_and_the_last_good_commit_still_loads() {
    let host = TestHost::new();
    let bare = bare_remote(&host);
    write_stack(&host, "", "web");
    let good = host.commit("good");
    push(&host, &bare, false);
    let src = GitSource::new(
        config(format!("file://{}", bare.display())),
        &host.state_dir(),
    )
    .unwrap();
    assert_eq!(src.fetch().unwrap().commit, good);

    host.write("stacks/web/config/new.conf", "brand new content 4711\n");
    let bad = host.commit("bad");
    push(&host, &bare, false);
    // A small push to a bare repo is stored as loose objects: overwrite the
    // new blob's file with garbage.
    let blob = host.git(["rev-parse", "HEAD:stacks/web/config/new.conf"]);
    let blob = blob.trim();
    let file = bare.join("objects").join(&blob[..2]).join(&blob[2..]);
    assert!(
        file.exists(),
        "expected a loose object at {}",
        file.display()
    );
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, b"this is not a zlib stream").unwrap();

    let err = src.fetch().unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { .. } | Error::Fetch { .. }),
        "{err:?}"
    );
    assert_eq!(src.last_fetched().as_deref(), Some(good.as_str()));
    assert_eq!(stacks(&src, &good), ["web"]);
    assert!(src.load(&bad).is_err(), "the corrupt commit must not load");
}

#[test]
fn a_missing_branch_is_reported_as_such() {
    let host = TestHost::new();
    write_stack(&host, "", "web");
    host.commit("one");
    let mut cfg = config(host.repo().display().to_string());
    cfg.branch = "production".into();
    let err = GitSource::new(cfg, &host.state_dir())
        .unwrap()
        .fetch()
        .unwrap_err();
    assert!(
        matches!(&err, Error::BranchMissing { branch } if branch == "production"),
        "{err:?}"
    );
    assert!(!err.is_transient());
}

#[test]
fn a_branch_deleted_on_the_remote_is_missing_but_its_commit_stays() {
    let host = TestHost::new();
    write_stack(&host, "", "web");
    let c = host.commit("one");
    host.git(["branch", "release"]);
    let mut cfg = config(host.repo().display().to_string());
    cfg.branch = "release".into();
    let src = GitSource::new(cfg, &host.state_dir()).unwrap();
    assert_eq!(src.fetch().unwrap().commit, c);
    host.git(["branch", "-q", "-D", "release"]);
    let err = src.fetch().unwrap_err();
    assert!(matches!(err, Error::BranchMissing { .. }), "{err:?}");
    assert_eq!(stacks(&src, &c), ["web"]);
}

#[test]
fn a_silent_server_times_out() {
    let host = TestHost::new();
    // Connections complete in the kernel's backlog; nobody ever answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut cfg = config(format!("http://127.0.0.1:{port}/repo.git"));
    cfg.fetch_timeout = Duration::from_secs(2);
    let src = GitSource::new(cfg, &host.state_dir()).unwrap();
    let started = Instant::now();
    let err = src.fetch().unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(err.is_transient());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    drop(listener);
}

/// An http server that answers every request with 401, counting requests.
fn unauthorized_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if line == "\r\n" {
                    break;
                }
                line.clear();
            }
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = conn.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (port, count)
}

#[test]
fn a_refused_token_is_an_auth_error_without_looping_or_leaking() {
    let host = TestHost::new();
    let (port, requests) = unauthorized_server();
    let token_file = host.tmp().join("token");
    std::fs::write(&token_file, "ghp_supersecret\n").unwrap();
    let mut cfg = config(format!("http://127.0.0.1:{port}/acme/ds.git"));
    cfg.auth = Auth::Token {
        token_file: token_file.clone(),
    };
    let src = GitSource::new(cfg, &host.state_dir()).unwrap();
    let err = src.fetch().unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert!(!err.is_transient());
    let text = format!("{err} {err:?}");
    assert!(text.contains("refused the token"), "{text}");
    assert!(!text.contains("ghp_supersecret"), "{text}");
    let n = requests.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=4).contains(&n), "{n} requests");

    // Without a token, the server's demand for one is explained.
    let src = GitSource::new(
        config(format!("http://127.0.0.1:{port}/acme/ds.git")),
        &host.state_dir(),
    )
    .unwrap();
    let err = src.fetch().unwrap_err();
    assert!(err.to_string().contains("none are configured"), "{err}");

    // An empty token file is a configuration error, found before connecting.
    std::fs::write(&token_file, "  \n").unwrap();
    let mut cfg = config(format!("http://127.0.0.1:{port}/acme/ds.git"));
    cfg.auth = Auth::Token { token_file };
    let err = GitSource::new(cfg, &host.state_dir())
        .unwrap()
        .fetch()
        .unwrap_err();
    assert!(err.to_string().contains("is empty"), "{err}");
}

#[test]
fn credentials_in_the_url_never_appear_in_errors() {
    let host = TestHost::new();
    let mut cfg = config("https://x-access-token:ghp_inurl@127.0.0.1:1/acme/ds.git");
    cfg.fetch_timeout = Duration::from_secs(5);
    let err = GitSource::new(cfg, &host.state_dir())
        .unwrap()
        .fetch()
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("ghp_inurl"), "{text}");
    assert!(text.contains("https://127.0.0.1:1/acme/ds.git"), "{text}");
}

#[test]
fn ssh_without_known_hosts_is_refused() {
    let host = TestHost::new();
    let key_file = host.tmp().join("deploy_key");
    std::fs::write(&key_file, "unused").unwrap();
    let mut cfg = config("ssh://git@127.0.0.1:1/acme/ds.git");
    cfg.auth = Auth::SshKey {
        key_file,
        known_hosts: None,
    };
    let err = GitSource::new(cfg, &host.state_dir())
        .unwrap()
        .fetch()
        .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("no known_hosts file is configured"),
        "{err}"
    );
}

#[test]
fn a_corrupt_mirror_is_moved_aside_and_rebuilt() {
    let host = TestHost::new();
    write_stack(&host, "", "web");
    let c = host.commit("one");
    let mirror = host.state_dir().join("mirror.git");
    std::fs::create_dir_all(&mirror).unwrap();
    std::fs::write(mirror.join("HEAD"), "garbage").unwrap();

    let src = GitSource::new(config(host.repo().display().to_string()), &host.state_dir()).unwrap();
    let aside: Vec<_> = std::fs::read_dir(host.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("mirror.git.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(src.fetch().unwrap().commit, c);
}

/// A new commit reads only the stacks whose directory changed (issue 13):
/// the others are taken from the previous load by their git tree ids, and
/// the state is exactly what a full load of the new commit gives, findings
/// and set-aside stacks included. A change of `stackpin.yaml` (the
/// defaults every stack reads) reads them all again.
#[test]
fn a_new_commit_reads_only_the_stacks_it_changed() {
    let host = TestHost::new();
    for name in ["alpha", "beta", "gamma"] {
        write_stack(&host, "", name);
    }
    host.write("stacks/broken/stack.yaml", "images: [\n");
    host.commit("four stacks, one broken");
    let src = GitSource::new(config(host.repo().display().to_string()), &host.state_dir()).unwrap();
    let first = src.fetch().unwrap().commit;
    let (_, cache) = src.load_reusing(&first, None).unwrap();
    assert_eq!((cache.read, cache.reused), (4, 0));

    host.write(
        "stacks/beta/compose.yaml",
        "services:\n  web:\n    image: ghcr.io/acme/app\n    environment: {A: \"1\"}\n",
    );
    host.commit("beta changes");
    let second = src.fetch().unwrap().commit;
    let (state, cache) = src.load_reusing(&second, Some(&cache)).unwrap();
    assert_eq!((cache.read, cache.reused), (1, 3));
    let full = src.load(&second).unwrap();
    assert_eq!(format!("{:?}", state.stacks), format!("{:?}", full.stacks));
    assert_eq!(state.findings, full.findings);
    assert_eq!(state.invalid, full.invalid);
    assert!(state.invalid.contains("broken"), "{:?}", state.invalid);
    assert!(
        format!("{:?}", state.stacks["beta"].compose).contains("\"A\""),
        "beta is read from the new commit"
    );

    host.write("stackpin.yaml", "defaults: {keep_releases: 4}\n");
    host.commit("defaults");
    let third = src.fetch().unwrap().commit;
    let (state, cache) = src.load_reusing(&third, Some(&cache)).unwrap();
    assert_eq!((cache.read, cache.reused), (4, 0));
    assert_eq!(state.stacks["alpha"].keep_releases, 4);
}
