//! Past one host (issue 14, parts 1 and 2): three test hosts, each in
//! its own network namespace with its own Docker engine
//! (`scripts/setup.d/fleet.sh`), converge from one desired-state
//! repository served by `git daemon` on their bridge and pull from the
//! loopback registry served there too. Each stackpin runs inside its host's
//! namespace, so cutting the host's link cuts it off from git and the
//! registry for real.
//!
//! `hosts:` selects by host name and by the hosts' `labels:`; each host
//! converges its stacks only; a host cut off keeps running its last good
//! release and converges once it is back; a host killed mid-converge
//! recovers on its next run; with a `stackpin daemon` on every host, two
//! staging hosts publish their markers at once and a daemon SIGKILLed
//! mid-converge finishes when started again. After every step every host is
//! on a complete release and has no journal left.

use crate::common;

use common::fleet::Fleet;
use common::{Fixtures, GitDaemon, StackFixture, TestHost};
use std::process::Command;

/// The fixture app ([`StackFixture`]) as the fleet runs it: its http check
/// only, 30 s of smoke (vfs pulls), and `head`: the stack.yaml lines that
/// select its hosts and promote it.
fn fleet_stack(stack: &str, image: &str, port: u16, version: &str, head: &str) -> StackFixture {
    StackFixture::new(stack, image, port, version)
        .http_only()
        .without_site_conf()
        .smoke_timeout("30s")
        .extra(head)
}

/// `sync` on member `i` deploys, and the app there serves `version`.
fn sync_promotes(fleet: &Fleet, h: &TestHost, i: usize, port: u16, version: &str) {
    let out = fleet.stackpin(h, i, &["sync"]).run().ok();
    assert!(
        out.stdout().contains("deployed"),
        "host {i}: {}",
        out.report()
    );
    assert_eq!(
        fleet.get(h, i, port),
        Some(format!("stackpin-test-app {version}\n")),
        "host {i} promoted"
    );
}

/// `web` on the hosts labelled `role=app`.
fn write_web(h: &TestHost, stack: &str, image: &str, port: u16, version: &str) {
    fleet_stack(stack, image, port, version, "hosts: [\"role=app\"]\n").write(h);
}

#[test]
fn three_hosts_converge_their_stacks_through_a_partition_and_a_kill() {
    let h = TestHost::new();
    let f = Fixtures::require();
    // The repository, served on the bridge to the hosts only.
    let fleet = Fleet::require(&h);
    let daemon = GitDaemon::serve_on(&fleet.bridge, h.tmp(), false);
    fleet.configure(
        &daemon.url("repo"),
        &["role: app, region: tyo", "role: app", "role: edge"],
        &[],
    );
    let web = h.stack("web");
    let edge = h.stack("edge");
    let (web_port, edge_port) = (h.free_port(), h.free_port());
    write_web(&h, &web, &fleet.image(&f, &f.v1), web_port, "v1");
    let on_host_3 = format!("hosts: [{}]\n", fleet.members[2].name);
    fleet_stack(&edge, &fleet.image(&f, &f.v1), edge_port, "v1", &on_host_3).write(&h);
    h.commit("web v1 on the app hosts, edge on host 3");

    // Each host converges its own stacks, on its own engine.
    for i in 0..3 {
        fleet.stackpin(&h, i, &["sync"]).run().ok();
    }
    for i in 0..2 {
        assert_eq!(fleet.running(i, &web).len(), 1, "host {i} runs web");
        assert!(fleet.running(i, &edge).is_empty(), "host {i} runs no edge");
        assert_eq!(
            fleet.get(&h, i, web_port).as_deref(),
            Some("stackpin-test-app v1\n")
        );
    }
    assert!(fleet.running(2, &web).is_empty(), "role=edge runs no web");
    assert_eq!(fleet.running(2, &edge).len(), 1);
    let status = fleet.stackpin(&h, 2, &["status"]).run().ok();
    assert!(
        status.stdout().contains(&web) && status.stdout().contains("role=app"),
        "status says why web is not here: {}",
        status.report()
    );
    fleet.assert_consistent();

    // Host 2 cut off: it keeps running v1; the others move to v2.
    let cut_off = fleet.cut(1);
    write_web(&h, &web, &fleet.image(&f, &f.v2), web_port, "v2");
    h.commit("web v2");
    fleet.stackpin(&h, 0, &["sync"]).run().ok();
    assert_eq!(
        fleet.get(&h, 0, web_port).as_deref(),
        Some("stackpin-test-app v2\n")
    );
    let cut = fleet.stackpin(&h, 1, &["sync"]).run();
    assert!(
        cut.stderr().contains("fetch") || cut.stdout().contains("fetch"),
        "the cut-off host says it could not fetch: {}",
        cut.report()
    );
    assert_eq!(
        fleet.get(&h, 1, web_port).as_deref(),
        Some("stackpin-test-app v1\n"),
        "the cut-off host still serves its last good release"
    );
    drop(cut_off);
    fleet.stackpin(&h, 1, &["sync"]).run().ok();
    assert_eq!(
        fleet.get(&h, 1, web_port).as_deref(),
        Some("stackpin-test-app v2\n"),
        "back on the network, host 2 converges"
    );
    fleet.assert_consistent();

    // Host 1 killed mid-converge (after the switch): its next run recovers.
    write_web(&h, &web, &fleet.image(&f, &f.v3), web_port, "v3");
    h.commit("web v3");
    let killed = fleet
        .stackpin(&h, 0, &["sync"])
        .env("STACKPIN_FAULT", "after-switch")
        .run();
    assert!(
        killed.stderr().contains("fault injected at after-switch"),
        "{}",
        killed.report()
    );
    fleet.stackpin(&h, 0, &["sync"]).run().ok();
    fleet.stackpin(&h, 1, &["sync"]).run().ok();
    for i in 0..2 {
        assert_eq!(
            fleet.get(&h, i, web_port).as_deref(),
            Some("stackpin-test-app v3\n"),
            "host {i}"
        );
    }
    assert_eq!(fleet.running(2, &edge).len(), 1, "edge untouched");
    fleet.assert_consistent();
}

/// The trust chain across hosts: the staging host deploys, verifies and
/// publishes a signed marker over `git://` to the repository; the two
/// production hosts, which trust that host's key, promote the same pins on
/// their own engines. Before the marker, production is blocked.
#[test]
fn staging_on_one_host_promotes_production_on_two_others() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let fleet = Fleet::require(&h);
    let stg = h.stack("stg");
    let prod = h.stack("prod");
    let port = h.free_port();
    let key = h.ssh_signer("staging-key", &fleet.members[0].name, "stackpin-verified");
    for (stack, env, extra) in [
        (
            &stg,
            "staging",
            "marks_verified: true\nhosts: [\"role=staging\"]\n".to_string(),
        ),
        (
            &prod,
            "production",
            format!("hosts: [\"role=prod\"]\npromote_from: {stg}\n"),
        ),
    ] {
        fleet_stack(stack, &fleet.image(&f, &f.v1), port, "v1", &extra)
            .environment(env)
            .write(&h);
    }
    h.commit("staging on host 1, production on hosts 2 and 3");
    h.bare_remote();
    let daemon = GitDaemon::serve_on(&fleet.bridge, h.tmp(), true);
    let trusting = format!(
        "signers: {{staging-hosts: {{allowed_signers: {}}}}}\nverifiers: {{{stg}: staging-hosts}}\npolicy:\n  - {{stacks: [{prod}], promote_from: {stg}}}\n",
        key.allowed.display()
    );
    fleet.configure(
        &daemon.url("remote.git"),
        &["role: staging", "role: prod", "role: prod"],
        &[
            format!(
                "verified: {{publish: true, signing_key: {}}}\n",
                key.key.display()
            ),
            trusting.clone(),
            trusting,
        ],
    );

    let out = fleet.stackpin(&h, 1, &["sync"]).run().code(1);
    assert!(out.stdout().contains("blocked"), "{}", out.report());
    let out = fleet.stackpin(&h, 0, &["sync"]).run().ok();
    assert!(out.stdout().contains("deployed"), "{}", out.report());
    let out = fleet
        .stackpin(&h, 0, &["--json", "verify", stg.as_str()])
        .run()
        .ok()
        .json();
    assert!(
        out["published"]["commit"].is_string(),
        "published over git://: {out}"
    );
    for i in 1..3 {
        sync_promotes(&fleet, &h, i, port, "v1");
        assert!(fleet.running(i, &stg).is_empty(), "no staging on host {i}");
    }
    assert!(
        fleet.running(0, &prod).is_empty(),
        "no production on staging"
    );
    fleet.assert_consistent();
}

/// The fleet as it runs in production: a `stackpin daemon` on every host.
/// Two staging hosts, each with its own signing key, deploy their stacks
/// from the same commit and publish their markers to the one repository at
/// about the same time; the production host promotes both stacks only once
/// both markers are there. Then a digest bump, and the first staging daemon
/// is SIGKILLed in the middle of its converge (its journal on disk) and
/// started again: it finishes, publishes, production promotes, and no
/// marker of either host is lost.
#[test]
fn daemons_on_three_hosts_publish_at_once_and_survive_a_sigkill() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let fleet = Fleet::require(&h);
    let names: Vec<String> = fleet.members.iter().map(|m| m.name.clone()).collect();
    let (stg_a, stg_b) = (h.stack("stga"), h.stack("stgb"));
    let (prod_a, prod_b) = (h.stack("proda"), h.stack("prodb"));
    let ports: Vec<u16> = (0..4).map(|_| h.free_port()).collect();
    let key_a = h.ssh_signer("key-a", &names[0], "stackpin-verified");
    let key_b = h.ssh_signer("key-b", &names[1], "stackpin-verified");
    let write_all = |version: &str, image: &str| {
        let image = fleet.image(&f, image);
        let staging = |stack: &str, port: u16, name: &str| {
            let head = format!("marks_verified: true\nhosts: [{name}]\n");
            fleet_stack(stack, &image, port, version, &head)
                .environment("staging")
                .write(&h);
        };
        let production = |stack: &str, port: u16, from: &str| {
            let head = format!("hosts: [\"role=prod\"]\npromote_from: {from}\n");
            fleet_stack(stack, &image, port, version, &head)
                .environment("production")
                .write(&h);
        };
        staging(&stg_a, ports[0], &names[0]);
        staging(&stg_b, ports[1], &names[1]);
        production(&prod_a, ports[2], &stg_a);
        production(&prod_b, ports[3], &stg_b);
    };
    write_all("v1", &f.v1);
    h.commit("v1: two staging hosts, production on the third");
    let remote = h.bare_remote();
    let git = GitDaemon::serve_on(&fleet.bridge, h.tmp(), true);
    let publishing = |key: &common::SshSigner| {
        format!(
            "verified: {{publish: true, signing_key: {}}}\n",
            key.key.display()
        )
    };
    fleet.configure(
        &git.url("remote.git"),
        &["role: staging", "role: staging", "role: prod"],
        &[
            publishing(&key_a),
            publishing(&key_b),
            format!(
                "signers: {{a: {{allowed_signers: {}}}, b: {{allowed_signers: {}}}}}\nverifiers: {{{stg_a}: a, {stg_b}: b}}\npolicy:\n  - {{stacks: [{prod_a}], promote_from: {stg_a}}}\n  - {{stacks: [{prod_b}], promote_from: {stg_b}}}\n",
                key_a.allowed.display(),
                key_b.allowed.display()
            ),
        ],
    );
    let mut daemons: Vec<common::Running> = (0..3).map(|i| fleet.daemon(&h, i)).collect();
    let serving = |i: usize, port: u16, version: &str| {
        fleet.get(&h, i, port).as_deref() == Some(&format!("stackpin-test-app {version}\n")[..])
    };
    let converged = |version: &str| {
        serving(0, ports[0], version)
            && serving(1, ports[1], version)
            && serving(2, ports[2], version)
            && serving(2, ports[3], version)
    };
    let marker = |stack: &str| {
        Command::new("git")
            .arg("--git-dir")
            .arg(&remote)
            .args(["show", &format!("main:verified/{stack}.yaml")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let report = |daemons: &[common::Running]| {
        daemons
            .iter()
            .enumerate()
            .map(|(i, d)| format!("--- daemon {i} stderr:\n{}", d.stderr()))
            .collect::<String>()
    };
    // Serving is not finished: the record stage follows the smoke. Each
    // daemon's journal empties when its converge is over (a bound, not a
    // speed: a busy machine's compose may take a while to exit).
    let settle = |daemons: &[common::Running]| {
        let settled = common::wait_for(std::time::Duration::from_secs(120), || {
            let journals_empty = fleet.members.iter().all(|m| {
                std::fs::read_dir(m.root.join("releases/.stackpin/journal"))
                    .map(|d| d.count() == 0)
                    .unwrap_or(true)
            });
            journals_empty.then_some(())
        });
        assert!(settled.is_some(), "journals left\n{}", report(daemons));
        fleet.assert_consistent();
    };
    let up = common::wait_for(std::time::Duration::from_secs(180), || {
        converged("v1").then_some(())
    });
    assert!(up.is_some(), "v1 everywhere\n{}", report(&daemons));
    for stack in [&stg_a, &stg_b] {
        assert!(
            marker(stack).contains("v1"),
            "{stack}'s marker on main: {}",
            marker(stack)
        );
    }
    settle(&daemons);

    // v2: the test's clone takes the markers first, as a developer would.
    h.git(["pull", "-q", "--rebase", "origin", "main"]);
    write_all("v2", &f.v2);
    h.commit("v2");
    h.git(["push", "-q", "origin", "main"]);
    let journal = fleet.members[0].root.join("releases/.stackpin/journal");
    let mid = common::wait_for(std::time::Duration::from_secs(120), || {
        let n = std::fs::read_dir(&journal).map(|d| d.count()).unwrap_or(0);
        (n > 0).then_some(())
    });
    assert!(
        mid.is_some(),
        "host 1 started the v2 converge\n{}",
        report(&daemons)
    );
    daemons[0].signal("KILL");
    let killed = std::mem::replace(&mut daemons[0], fleet.daemon(&h, 0));
    let killed = killed.wait();
    assert!(!killed.success(), "SIGKILLed: {}", killed.report());
    // Between the kill and the restart: the stack link is on a complete
    // release (the old one or the new one, never half of one).
    let link = std::fs::read_link(fleet.members[0].root.join("stacks").join(&stg_a)).unwrap();
    assert!(link.join("release.json").is_file(), "{}", link.display());

    let done = common::wait_for(std::time::Duration::from_secs(180), || {
        converged("v2").then_some(())
    });
    assert!(
        done.is_some(),
        "v2 everywhere after the kill\n{}",
        report(&daemons)
    );
    for (stack, key) in [(&stg_a, &names[0]), (&stg_b, &names[1])] {
        let m = marker(stack);
        assert!(
            m.contains("v1") && m.contains("v2") && m.contains(key.as_str()),
            "{stack}: both versions verified by {key}, nothing lost: {m}"
        );
    }
    settle(&daemons);
    for (i, stacks) in [
        (0, vec![&stg_a]),
        (1, vec![&stg_b]),
        (2, vec![&prod_a, &prod_b]),
    ] {
        let states = fleet.states(&h, i);
        for s in stacks {
            assert_eq!(
                states.get(s.as_str()),
                Some(&("converged".to_string(), "v2".to_string())),
                "host {i}: {s} in {states:?}"
            );
        }
    }
    let history = fleet
        .stackpin(&h, 0, &["history", stg_a.as_str()])
        .run()
        .ok();
    assert!(
        history.stdout().contains("v2"),
        "the recovered converge is in the history: {}",
        history.report()
    );
}

/// The promotion loop end to end (issue 34): a developer pins a new image
/// on the staging stack; the staging host's daemon deploys it, verifies
/// it, soaks it and opens a pull request on the (loopback) forge bumping
/// production, with the evidence; the approver squash-merges it with a
/// signed commit; both production hosts, which trust only the approvers'
/// commits and the staging host's markers, converge, and their history
/// names the pull request. Then a broken image: staging reverts and
/// quarantines it, no pull request proposes it, `pin` refuses it; and a
/// release of the proposed digest that fails closes the open proposal.
#[test]
fn a_pinned_image_reaches_production_through_a_proposed_pull_request() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let fleet = Fleet::require(&h);
    let (stg, prod) = (h.stack("stg"), h.stack("prod"));
    let port = h.free_port();
    let names: Vec<String> = fleet.members.iter().map(|m| m.name.clone()).collect();
    let marker_key = h.ssh_signer("staging-key", &names[0], "stackpin-verified");
    let approver = h.ssh_signer("approver", "approver@acme.example", "git");
    let gate = format!("{{stack: {stg}, soak: 2s}}");
    let staging = |image: &str, version: &str| {
        fleet_stack(
            &stg,
            &fleet.image(&f, image),
            port,
            version,
            "marks_verified: true\nhosts: [\"role=staging\"]\n",
        )
        .environment("staging")
        .write(&h);
    };
    staging(&f.v1, "v1");
    fleet_stack(
        &prod,
        &fleet.image(&f, &f.v1),
        port,
        "v1",
        &format!("hosts: [\"role=prod\"]\npromote_from: {gate}\n"),
    )
    .environment("production")
    .write(&h);
    h.commit_signed(&approver.key, "v1 on staging and production");
    let remote = h.bare_remote();
    let git = GitDaemon::serve_on(&fleet.bridge, h.tmp(), true);
    let forge =
        common::github::Forge::start(&fleet.bridge, "acme", "desired-state", &remote, h.tmp());
    let production = format!(
        "signers: {{staging-hosts: {{allowed_signers: {}}}, approvers: {{allowed_signers: {}}}}}\nverifiers: {{{stg}: staging-hosts}}\npolicy:\n  - {{stacks: [{prod}], promote_from: {gate}, signed_by: approvers}}\n",
        marker_key.allowed.display(),
        approver.allowed.display()
    );
    fleet.configure(
        &git.url("remote.git"),
        &["role: staging", "role: prod", "role: prod"],
        &[
            format!(
                "verified: {{publish: true, signing_key: {}, soak: 2s}}\npropose:\n  - {{from: {stg}, to: {prod}, forge: github, repository: acme/desired-state, token_file: {}, api_url: \"{}\"}}\n",
                marker_key.key.display(),
                forge.token_file.display(),
                forge.url
            ),
            production.clone(),
            production,
        ],
    );
    let daemon = fleet.daemon(&h, 0);
    let on_main = |path: &str| {
        Command::new("git")
            .arg("--git-dir")
            .arg(&remote)
            .args(["show", &format!("main:{path}")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let soaked = |version: &str| {
        on_main(&format!("verified/{stg}.yaml"))
            .split("- version: ")
            .any(|e| e.starts_with(version) && e.contains("soaked_at:"))
    };
    let wait = |what: &str, secs: u64, f: &mut dyn FnMut() -> bool| {
        let done = common::wait_for(std::time::Duration::from_secs(secs), || f().then_some(()));
        assert!(done.is_some(), "{what}\n--- daemon:\n{}", daemon.stderr());
    };
    wait("staging soaks v1", 180, &mut || soaked("v1"));
    // Production pins v1 already: nothing to propose.
    assert!(forge.pulls().is_empty(), "{:?}", forge.pulls());

    // The developer pins v2 on staging (rebasing over the markers the
    // staging host publishes meanwhile).
    let sync_with_remote = || h.git(["pull", "-q", "--rebase", "origin", "main"]);
    let push = || {
        for _ in 0..5 {
            sync_with_remote();
            let out = h
                .command({
                    let mut c = Command::new("git");
                    c.arg("-C")
                        .arg(h.repo())
                        .args(["push", "-q", "origin", "main"]);
                    c
                })
                .run();
            if out.success() {
                return;
            }
        }
        panic!("could not push to main");
    };
    sync_with_remote();
    let pin = |image: &str, version: &str| {
        h.cmd([
            "pin",
            &stg,
            "web",
            &fleet.image(&f, image),
            "--set-version",
            version,
            "--commit",
        ])
        .current_dir(h.repo())
        .run()
    };
    pin(&f.v2, "v2").ok();
    let pushed = std::time::Instant::now();
    push();
    let mut pr = None;
    wait("a pull request proposes v2", 180, &mut || {
        pr = forge.pulls().into_iter().find(|p| p.state == "open");
        pr.is_some()
    });
    let to_pr = pushed.elapsed();
    let pr = pr.unwrap();
    assert_eq!(pr.title, format!("Promote {stg} v2 to {prod}"));
    assert_eq!(pr.head, format!("stackpin/promote/{prod}"));
    let short = |image: &str| {
        let (repo, hex) = fleet
            .image(&f, image)
            .split_once("@sha256:")
            .map(|(r, h)| (r.to_string(), h.to_string()))
            .unwrap();
        format!("{repo}@sha256:{}", &hex[..12])
    };
    for want in [
        format!("| Source | `{stg}` on `{}` |", names[0]),
        "| Soaked | 2s with no failed smoke, heal or restart".to_string(),
        "| Signed | yes".to_string(),
        "- smoke passed: ".to_string(),
        format!("http http://127.0.0.1:{port}/health in "),
        format!(
            "| web | `{}` (v1) | `{}` (v2) |",
            short(&f.v1),
            short(&f.v2)
        ),
        "- `web`: recreated stop-first".to_string(),
        format!("verified in {stg} as v2"),
    ] {
        assert!(pr.body.contains(&want), "{want}\n---\n{}", pr.body);
    }
    assert!(forge.rejected().is_empty(), "{:?}", forge.rejected());
    assert_eq!(
        forge.requests()[..2],
        [
            "GET /repos/acme/desired-state/pulls",
            "POST /repos/acme/desired-state/pulls"
        ],
        "looked for an open pull request of the branch, then opened one"
    );
    // The branch changes production's stack.yaml and nothing else.
    let changed = Command::new("git")
        .arg("--git-dir")
        .arg(&remote)
        .args([
            "diff",
            "--name-only",
            &format!("main...stackpin/promote/{prod}"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&changed.stdout),
        format!("stacks/{prod}/stack.yaml\n")
    );

    // The approver squash-merges it, signed; both production hosts converge.
    sync_with_remote();
    h.git(["fetch", "-q", "origin"]);
    h.git([
        "merge",
        "-q",
        "--squash",
        &format!("origin/stackpin/promote/{prod}"),
    ]);
    h.commit_signed(&approver.key, &format!("{} (#{})", pr.title, pr.number));
    let merged = std::time::Instant::now();
    push();
    forge.merged(pr.number);
    for i in 1..3 {
        sync_promotes(&fleet, &h, i, port, "v2");
        let history = fleet.stackpin(&h, i, &["history", &prod]).run().ok();
        assert!(
            history.stdout().contains(&format!("(#{})", pr.number)),
            "host {i}'s history names the pull request: {}",
            history.report()
        );
    }
    let to_prod = merged.elapsed();
    eprintln!(
        "bench: promotion on the fleet: image pinned and pushed -> pull request opened {:.1}s; merged -> both production hosts converged {:.1}s",
        to_pr.as_secs_f64(),
        to_prod.as_secs_f64()
    );

    // v3 is proposed in a new pull request (the first was merged).
    sync_with_remote();
    pin(&f.v3, "v3").ok();
    push();
    wait("a pull request proposes v3", 180, &mut || {
        forge
            .pulls()
            .iter()
            .any(|p| p.state == "open" && p.title.contains("v3"))
    });
    let open = forge
        .pulls()
        .into_iter()
        .find(|p| p.state == "open")
        .unwrap();

    // A broken image: staging reverts and quarantines it; nothing
    // proposes it; `pin` refuses it.
    sync_with_remote();
    pin(&f.broken, "v4-broken").ok();
    push();
    wait(
        "staging quarantines v4-broken and publishes it",
        180,
        &mut || on_main(&format!("quarantined/{stg}.yaml")).contains("v4-broken"),
    );
    assert_eq!(forge.pulls().len(), 2, "{:?}", forge.pulls());
    assert!(forge.pulls().iter().all(|p| !p.body.contains("v4-broken")));
    sync_with_remote();
    let refused = pin(&f.broken, "v5").code(1);
    assert!(
        refused.stderr().contains("was quarantined on"),
        "{}",
        refused.report()
    );
    h.git(["checkout", "-q", "--", "."]);

    // A release of v3's digest fails on staging (its smoke now asks for a
    // page the app does not have): the proposal of v3 is closed.
    let file = h.repo().join(format!("stacks/{stg}/stack.yaml"));
    let text = std::fs::read_to_string(&file).unwrap();
    let text = text
        .replace(&fleet.image(&f, &f.broken), &fleet.image(&f, &f.v3))
        .replace("v4-broken", "v3-smoke")
        .replace("/health", "/missing");
    std::fs::write(&file, text).unwrap();
    h.commit("staging: v3 with a smoke check that fails");
    push();
    wait("the proposal of v3 is closed", 180, &mut || {
        forge
            .pulls()
            .iter()
            .any(|p| p.number == open.number && p.state == "closed")
    });
    let closed = forge
        .pulls()
        .into_iter()
        .find(|p| p.number == open.number)
        .unwrap();
    assert!(
        closed
            .comments
            .iter()
            .any(|c| c.contains("closes this proposal") && c.contains("v3-smoke")),
        "{:?}",
        closed.comments
    );
    assert!(forge.rejected().is_empty(), "{:?}", forge.rejected());
    drop(daemon);
    fleet.assert_consistent();
}
