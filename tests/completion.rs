//! Shell completion as a user gets it: bash sources what `stackpin
//! completions bash` prints, and each <Tab> asks the binary. Commands
//! complete, and stack names complete from the host (its stack links and
//! kept releases) and from the desired state (a directory here, or the
//! daemon's mirror of a URL), with the line's own `--root`, `--repo` and
//! `--state-dir`.

use crate::common;

use common::TestHost;

/// What bash offers for the words `line` (the last one being completed),
/// through the completion function the script registered.
fn complete(h: &TestHost, script: &std::path::Path, line: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = line.iter().map(|w| format!("'{w}'")).collect();
    let bin_dir = std::path::Path::new(common::STACKPIN).parent().unwrap();
    let program = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={}\n_clap_complete_stackpin stackpin {} {}\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" "),
        line.len() - 1,
        quoted[line.len() - 1],
        quoted[line.len().saturating_sub(2)],
    );
    let mut c = std::process::Command::new("bash");
    c.args(["--norc", "-c", &program]).env(
        "PATH",
        format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap()),
    );
    common::without_developer_env(&mut c);
    let out = h.command(c).run().ok().stdout();
    out.lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn bash_completes_commands_and_the_stack_names_of_the_host_and_the_desired_state() {
    let h = TestHost::new();
    let script = h.tmp().join("stackpin.bash");
    let text = h.cmd_raw(["completions", "bash"]).run().ok().stdout();
    std::fs::write(&script, text).unwrap();

    // The host: a stack link and a stack with kept releases only; the
    // desired state: two stacks (one of them also on the host).
    let root = h.root();
    std::fs::create_dir_all(root.join("stacks")).unwrap();
    std::fs::create_dir_all(root.join("releases/stacks/shop/20260101T000000Z-v1")).unwrap();
    std::os::unix::fs::symlink(
        root.join("releases/stacks/shop/20260101T000000Z-v1"),
        root.join("stacks/shop"),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("releases/stacks/old-blog")).unwrap();
    for s in ["shop", "odoo18-staging"] {
        h.write(format!("stacks/{s}/stack.yaml"), "environment: staging\n");
    }
    // Not a stack name: never offered.
    std::fs::create_dir_all(root.join("releases/stacks/.tmp-x")).unwrap();

    let root_s = root.display().to_string();
    let repo_s = h.repo().display().to_string();
    assert!(
        complete(&h, &script, &["stackpin", "rel"]).contains(&"releases".to_string()),
        "commands complete"
    );
    let all = complete(
        &h,
        &script,
        &[
            "stackpin", "--root", &root_s, "--repo", &repo_s, "releases", "",
        ],
    );
    // An empty word is offered the stack names, then the options.
    let names: Vec<&String> = all.iter().filter(|w| !w.starts_with('-')).collect();
    assert_eq!(names, ["odoo18-staging", "old-blog", "shop"], "{all:?}");
    assert!(
        all.contains(&"--list".to_string()) || all.contains(&"--help".to_string()),
        "{all:?}"
    );
    let some = complete(
        &h,
        &script,
        &[
            "stackpin", "--root", &root_s, "--repo", &repo_s, "rollback", "o",
        ],
    );
    assert_eq!(some, ["odoo18-staging", "old-blog"], "{some:?}");
    // Global options after the command count too; without the repository
    // only the host's stacks.
    let host_only = complete(&h, &script, &["stackpin", "status", "--root", &root_s, ""]);
    assert!(
        host_only.contains(&"shop".to_string())
            && !host_only.contains(&"odoo18-staging".to_string()),
        "{host_only:?}"
    );

    // A URL: the names come from the last commit the mirror fetched (here
    // by `plan --fetch`), read without fetching again.
    h.commit("two stacks");
    let git = h.git_daemon();
    let url = git.url("repo");
    let state = h.tmp().join("url-state");
    let state_s = state.display().to_string();
    let empty_root = h.tmp().join("empty-root").display().to_string();
    let globals = [
        "--root",
        &empty_root,
        "--repo",
        &url,
        "--state-dir",
        &state_s,
    ];
    let line = [&["stackpin"][..], &globals, &["resume", ""]].concat();
    let before = complete(&h, &script, &line);
    assert!(
        before.iter().all(|w| w.starts_with('-')),
        "nothing fetched yet: {before:?}"
    );
    h.cmd_raw(
        globals
            .iter()
            .chain(&["--host", "test-host", "plan", "--fetch"]),
    )
    .run()
    .ok();
    let fetched = complete(&h, &script, &line);
    let names: Vec<&String> = fetched.iter().filter(|w| !w.starts_with('-')).collect();
    assert_eq!(names, ["odoo18-staging", "shop"], "{fetched:?}");
}
