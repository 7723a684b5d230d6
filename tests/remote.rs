//! One-shot commands on a host whose `repo.url` is a real network remote
//! (`git daemon` on loopback), configured as README shows (issue 19): they
//! read the commit of the daemon's mirror and say which, `--fetch` fetches
//! first, `sync` without a daemon fetches and falls back to the last
//! fetched commit when the remote is gone.

use crate::common;

use common::{Fixtures, GitDaemon, StackFixture, TestCommand, TestHost};
use std::path::PathBuf;

/// A config file naming the remote, as on a daemon host.
fn config(h: &TestHost, url: &str) -> PathBuf {
    let cfg = h.tmp().join("config.yaml");
    common::write_config(
        &cfg,
        format!(
            "host: test-host\nroot: {}\nstate_dir: {}\ncontrol_socket: {}\nrepo: {{url: \"{url}\", branch: main}}\n",
            h.root().display(),
            h.state_dir().display(),
            h.tmp().join("control.sock").display(),
        ),
    )
    .unwrap();
    cfg
}

fn stackpin(h: &TestHost, cfg: &std::path::Path, args: &[&str]) -> TestCommand {
    let mut c = h.cmd_raw(["--config".as_ref(), cfg.as_os_str()]);
    c.args(args);
    c
}

fn short(commit: &str) -> &str {
    &commit[..12]
}

struct Remote {
    git: GitDaemon,
    cfg: PathBuf,
    url: String,
}

fn remote(h: &TestHost) -> Remote {
    h.bare_remote();
    let git = h.git_daemon();
    let url = git.url("remote.git");
    let cfg = config(h, &url);
    Remote { git, cfg, url }
}

#[test]
fn one_shot_commands_read_the_mirror_of_a_remote_repository() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("web");
    let port = h.free_port();
    StackFixture::new(&s, &f.v1, port, "v1").write(&h);
    let c1 = h.commit("v1");
    let mut r = remote(&h);

    // No mirror yet: nothing to read, and the command says what to do.
    stackpin(&h, &r.cfg, &["plan"])
        .run()
        .code(2)
        .stderr_contains("pass --fetch");
    assert!(
        !h.state_dir().join("mirror.git").exists(),
        "plan created the mirror"
    );

    // --fetch fetches, and the plan names the commit it read.
    let out = stackpin(&h, &r.cfg, &["plan", "--fetch"]).run().ok();
    let first = out.stdout().lines().next().unwrap_or_default().to_string();
    assert!(
        first.contains(&r.url) && first.contains(short(&c1)),
        "{}",
        out.report()
    );
    assert!(
        out.stdout().contains(&format!("{s}: deploy")),
        "{}",
        out.report()
    );

    // sync without a daemon fetches and converges.
    stackpin(&h, &r.cfg, &["sync"])
        .run()
        .ok()
        .stdout_contains("deployed");
    h.serves(port, "stackpin-test-app v1");

    // A new commit on the remote: the one-shot commands keep reading the
    // fetched commit until something fetches.
    StackFixture::new(&s, &f.v2, port, "v2").write(&h);
    let c2 = h.commit("v2");
    h.push(false);
    let out = stackpin(&h, &r.cfg, &["plan", &s]).run().ok();
    assert!(
        out.stdout().contains(short(&c1)) && out.stdout().contains("no change"),
        "{}",
        out.report()
    );
    let out = stackpin(&h, &r.cfg, &["status", "--fetch"]).run().ok();
    assert!(out.stderr().contains(short(&c2)), "{}", out.report());
    assert!(out.stdout().contains("v1"), "{}", out.report());
    stackpin(&h, &r.cfg, &["plan", "--detailed-exitcode"])
        .run()
        .code(2)
        .stdout_contains(short(&c2));

    // The backup timer's command and prune read it too.
    stackpin(&h, &r.cfg, &["backup", "--all"])
        .run()
        .ok()
        .stderr_contains(short(&c2));
    stackpin(&h, &r.cfg, &["prune", "--dry-run"])
        .run()
        .ok()
        .stdout_contains("nothing to prune");

    stackpin(&h, &r.cfg, &["sync", &s])
        .run()
        .ok()
        .stdout_contains("deployed");
    h.serves(port, "stackpin-test-app v2");

    // The remote goes away: --fetch is an error, sync warns and converges
    // to the last fetched commit (nothing to do), as the daemon would.
    r.git.stop();
    let out = stackpin(&h, &r.cfg, &["plan", "--fetch"]).run().code(2);
    // Said once (it read `failed to fetch URL: failed to fetch URL: …`).
    assert_eq!(
        out.stderr().matches("failed to fetch").count(),
        1,
        "{}",
        out.report()
    );
    let out = stackpin(&h, &r.cfg, &["sync"]).run().ok();
    assert!(
        out.stderr().contains("reading the commit fetched last")
            && out.stderr().contains(short(&c2)),
        "{}",
        out.report()
    );
    h.serves(port, "stackpin-test-app v2");
}
