//! The pipeline and recovery against the in-memory engine: every stage
//! failing, an engine that stops mid-stage, and every journal phase at a
//! crash. Real files (a temp root), no Docker; time is paused so smoke's
//! stability watch costs nothing.

use super::*;
use crate::desired::{self, MemTree};
use crate::engine::memory::{Behaviour, MemoryEngine, Op as EngineOp};
use crate::events::EventSink;
use crate::host::LogReporter;
use crate::state::{JOURNAL_FORMAT, Journal, LocalStore, Phase};
use std::sync::Mutex;

const REPO: &str = "reg.test/app";

fn pin(c: char) -> String {
    format!("{REPO}@sha256:{}", c.to_string().repeat(64))
}

#[derive(Default)]
struct Events(Mutex<Vec<Event>>);

impl EventSink for Events {
    fn emit(&self, e: Event) {
        self.0.lock().unwrap().push(e);
    }
}

struct Bed {
    dir: tempfile::TempDir,
    engine: MemoryEngine,
    events: Events,
    policy: crate::policy::HostPolicy,
    secrets: crate::secrets::Age,
    renders: crate::release::cache::Cache,
    disk_free: u8,
}

impl Bed {
    fn new() -> Bed {
        let engine = MemoryEngine::new();
        engine
            .publish(&pin('a'), Behaviour::Runs)
            .publish(&pin('b'), Behaviour::Healthy)
            .publish(&pin('c'), Behaviour::Crashes)
            .publish(&pin('d'), Behaviour::Unhealthy)
            .publish(&pin('e'), Behaviour::Runs);
        Bed {
            dir: tempfile::tempdir().unwrap(),
            engine,
            events: Events::default(),
            policy: Default::default(),
            secrets: Default::default(),
            renders: Default::default(),
            disk_free: 0,
        }
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("root")
    }

    fn host(&self) -> Host<'_> {
        Host {
            layout: crate::layout::Layout::new(self.root()),
            store: LocalStore::new(&self.root()),
            engine: &self.engine,
            name: "h1".into(),
            labels: Vec::new(),
            actor: "test".into(),
            min_disk_free_percent: self.disk_free,
            reporter: &LogReporter,
            events: &self.events,
            policy: &self.policy,
            secrets: &self.secrets,
            renders: &self.renders,
        }
    }

    /// One stack `app` at `version`, pinned to `image`.
    fn desired(&self, version: &str, image: &str, extra: &str) -> DesiredState {
        self.desired_with(
            version,
            &format!("{{web: \"{image}\"}}"),
            extra,
            &format!("services:\n  web: {{image: {REPO}}}\n"),
        )
    }

    /// One stack `app` at `version` with these `images:` and compose file.
    fn desired_with(
        &self,
        version: &str,
        images: &str,
        extra: &str,
        compose: &str,
    ) -> DesiredState {
        let mut t = MemTree::default();
        t.0.insert(
            "stacks/app/stack.yaml".into(),
            format!(
                "environment: test\nversion: {version}\nimages: {images}\nsmoke: {{timeout: 20s}}\n{extra}"
            )
            .into_bytes(),
        );
        t.0.insert(
            "stacks/app/compose.yaml".into(),
            compose.as_bytes().to_vec(),
        );
        let d = desired::load(&t);
        assert!(d.errors().next().is_none(), "{:#?}", d.findings);
        d
    }

    async fn sync(&self, d: &DesiredState) -> StackResult {
        let r = sync(&self.host(), d, &SyncOptions::default()).await;
        r.results.into_iter().last().expect("one result")
    }

    async fn deploy(&self, version: &str, image: &str) -> StackResult {
        self.sync(&self.desired(version, image, "")).await
    }

    fn link(&self) -> Option<String> {
        release::current(&self.host().layout, "app").unwrap()
    }

    fn link_version(&self) -> Option<String> {
        self.link()
            .map(|id| id.split("__").next().unwrap().to_string())
    }

    fn current_version(&self) -> Option<String> {
        release::read_current(&self.host().layout, "app")
            .unwrap()
            .map(|c| c.version)
    }

    fn history(&self) -> String {
        std::fs::read_to_string(self.root().join("deploy-history.log")).unwrap_or_default()
    }

    fn running_image(&self) -> Option<String> {
        self.engine
            .project("app")
            .into_iter()
            .find(|c| c.service == "web" && c.state == "running")
            .map(|c| c.image)
    }

    fn journal(&self) -> Option<Journal> {
        self.host().store.journal("app").unwrap()
    }

    fn quarantined(&self) -> bool {
        self.host().store.quarantine("app").unwrap().is_some()
    }
}

#[tokio::test(start_paused = true)]
async fn deploy_upgrade_and_noop() {
    let b = Bed::new();
    let r = b.deploy("v1", &pin('a')).await;
    assert_eq!((r.outcome, r.reason), (Outcome::Deployed, None), "{r:?}");
    assert_eq!(b.link_version().as_deref(), Some("v1"));
    assert_eq!(b.running_image(), Some(pin('a')));
    let stages: Vec<Stage> = r.stages.iter().map(|s| s.name).collect();
    // Without `update.reload` hooks the reload stage has nothing to do and
    // is not reported.
    let want: Vec<Stage> = Op::Deploy
        .stages()
        .iter()
        .copied()
        .filter(|s| *s != Stage::Reload)
        .collect();
    assert_eq!(stages, want);
    let r = b.deploy("v2", &pin('b')).await;
    assert_eq!(r.outcome, Outcome::Deployed, "{r:?}");
    assert_eq!(b.current_version().as_deref(), Some("v2"));
    assert_eq!(b.running_image(), Some(pin('b')));
    let r = b.deploy("v2", &pin('b')).await;
    assert_eq!(r.outcome, Outcome::Unchanged, "{r:?}");
    assert!(b.journal().is_none());
    assert!(
        b.history()
            .contains("| app | test | deploy | v2 | success |")
    );
}

/// How a stage of the v2 deploy is made to fail, on a host running v1.
enum Breakage {
    Setup(fn(&Bed)),
    Image(char),
}

/// Per stage: how it is broken, the outcome and reason, and the version the
/// link ends on.
fn breakages() -> Vec<(Stage, Breakage, Outcome, Reason, &'static str)> {
    use Breakage::*;
    // The disk threshold is raised by the test itself.
    fn disk(b: &Bed) {
        let _ = b;
    }
    vec![
        (
            Stage::Preflight,
            Setup(disk),
            Outcome::Failed,
            Reason::PreflightFailed,
            "v1",
        ),
        (
            Stage::Backup,
            Setup(|b| {
                b.engine.fail(EngineOp::Exec, 1);
            }),
            Outcome::Failed,
            Reason::BackupFailed,
            "v1",
        ),
        (
            Stage::Release,
            Setup(|b| {
                b.engine.fail(EngineOp::ConfigCheck, 1);
            }),
            Outcome::Failed,
            Reason::ReleaseFailed,
            "v1",
        ),
        (
            Stage::Pull,
            Image('f'),
            Outcome::Failed,
            Reason::PullFailed,
            "v1",
        ),
        (
            Stage::Journal,
            Setup(|b| {
                // A journal directory that cannot be created: reads find
                // no journal, writes fail.
                let j = b.root().join("releases/.stackpin/journal");
                std::fs::remove_dir_all(&j).ok();
                std::os::unix::fs::symlink(b.root().join("gone/journal"), &j).unwrap();
            }),
            Outcome::Failed,
            Reason::JournalFailed,
            "v1",
        ),
        (
            Stage::Switch,
            Setup(|b| {
                let tmp = b
                    .root()
                    .join(format!("stacks/.app.tmp-link-{}/x", std::process::id()));
                std::fs::create_dir_all(tmp).unwrap();
            }),
            Outcome::Failed,
            Reason::SwitchFailed,
            "v1",
        ),
        (
            Stage::Up,
            Setup(|b| {
                b.engine.fail(EngineOp::Up, 1);
            }),
            Outcome::RolledBack,
            Reason::RolledBack,
            "v1",
        ),
        (
            Stage::Smoke,
            Image('c'),
            Outcome::RolledBack,
            Reason::RolledBack,
            "v1",
        ),
        (
            Stage::Smoke,
            Image('d'),
            Outcome::RolledBack,
            Reason::RolledBack,
            "v1",
        ),
        (
            Stage::Record,
            Setup(|b| {
                let h = b.root().join("deploy-history.log");
                std::fs::remove_file(&h).ok();
                std::fs::create_dir_all(h.join("x")).unwrap();
            }),
            Outcome::Failed,
            Reason::RecordFailed,
            "v2",
        ),
    ]
}

#[tokio::test(start_paused = true)]
async fn every_stage_failing_reports_its_own_reason_and_ends_on_a_complete_release() {
    for (stage, breakage, outcome, reason, ends_on) in breakages() {
        let mut b = Bed::new();
        b.deploy("v1", &pin('a')).await;
        let extra = if stage == Stage::Backup {
            "backup: {postgres: [{container: db, user: u, databases: [x]}]}\n"
        } else {
            ""
        };
        let image = match &breakage {
            Breakage::Image(c) => pin(*c),
            Breakage::Setup(f) => {
                f(&b);
                pin('e')
            }
        };
        if stage == Stage::Preflight {
            b.disk_free = 101;
        }
        let r = b.sync(&b.desired("v2", &image, extra)).await;
        let what = format!("{stage}: {r:#?}\n{}", b.history());
        assert_eq!((r.outcome, r.reason), (outcome, Some(reason)), "{what}");
        let failed = r.stages.iter().find(|s| !s.ok).expect("a failed stage");
        assert_eq!(failed.name, stage, "{what}");
        assert_eq!(b.link_version().as_deref(), Some(ends_on), "{what}");
        let dir = b.root().join("releases/stacks/app").join(b.link().unwrap());
        assert!(release::is_complete(&dir), "{what}");
        if stage.is_after_switch() && stage != Stage::Record {
            assert!(b.quarantined(), "a failed smoke quarantines: {what}");
            assert_eq!(b.running_image(), Some(pin('a')), "{what}");
            assert!(
                b.history().contains("| rollback | v1 | success |"),
                "{what}"
            );
        } else {
            assert!(!b.quarantined(), "{what}");
        }
        if stage == Stage::Record {
            // Smoke passed: the release is good and the record is retried.
            assert_eq!(
                b.journal().map(|j| j.phase),
                Some(Phase::Recording),
                "{what}"
            );
            let h = b.root().join("deploy-history.log");
            std::fs::remove_dir_all(&h).unwrap();
            let r = b.sync(&b.desired("v2", &image, extra)).await;
            assert!(
                matches!(r.outcome, Outcome::Recovered | Outcome::Unchanged),
                "{r:#?}"
            );
            assert_eq!(b.current_version().as_deref(), Some("v2"));
            assert!(b.journal().is_none());
        } else {
            assert!(b.journal().is_none(), "{what}");
        }
        if !stage.is_after_switch() {
            let kept = release::list(&b.host().layout, "app").unwrap();
            assert_eq!(kept.len(), 1, "an unused release is removed: {what}");
            assert!(b.history().contains("| deploy | v2 | failed |"), "{what}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn reload_hooks_run_in_the_router_that_kept_running_and_a_failed_one_reverts() {
    let b = Bed::new();
    let hook = "update: {reload: [{service: router, command: [nginx, -s, reload]}]}\n";
    let compose = format!("services:\n  web: {{image: {REPO}}}\n  router: {{image: {REPO}}}\n");
    let desired = |v: &str, web: char| {
        b.desired_with(
            v,
            &format!("{{web: \"{}\", router: \"{}\"}}", pin(web), pin('e')),
            hook,
            &compose,
        )
    };
    let reloads = || {
        b.engine
            .calls()
            .iter()
            .filter(|c| c.starts_with("exec ") && c.ends_with("nginx -s reload"))
            .count()
    };
    let router = || {
        b.engine
            .project("app")
            .into_iter()
            .find(|c| c.service == "router")
            .map(|c| c.id)
            .unwrap()
    };
    // A first deploy starts the router: it resolves everything itself.
    let r = b.sync(&desired("v1", 'a')).await;
    assert_eq!(r.outcome, Outcome::Deployed, "{r:#?}");
    let reload = r.stages.iter().find(|s| s.name == Stage::Reload).unwrap();
    assert!(reload.detail.contains("recreated themselves"), "{reload:?}");
    assert_eq!(reloads(), 0);
    // The app gets a new container, the router keeps running: reloaded.
    let before = router();
    let r = b.sync(&desired("v2", 'b')).await;
    assert_eq!(r.outcome, Outcome::Deployed, "{r:#?}");
    assert_eq!(router(), before);
    assert_eq!(reloads(), 1, "{:?}", b.engine.calls());
    assert!(
        b.engine
            .calls()
            .contains(&format!("exec {before} nginx -s reload")),
        "{:?}",
        b.engine.calls()
    );
    // A hook that fails is the release's failure: back to v2, whose own
    // up and reload run again.
    b.engine.fail(EngineOp::Exec, 1);
    let r = b.sync(&desired("v3", 'a')).await;
    assert_eq!(
        (r.outcome, r.reason),
        (Outcome::RolledBack, Some(Reason::RolledBack)),
        "{r:#?}"
    );
    let failed = r.stages.iter().find(|s| !s.ok).expect("a failed stage");
    assert_eq!(failed.name, Stage::Reload, "{r:#?}");
    assert!(
        failed
            .detail
            .starts_with("reload failed: router: nginx -s reload"),
        "{failed:?}"
    );
    assert_eq!(b.link_version().as_deref(), Some("v2"));
    assert_eq!(b.running_image(), Some(pin('b')));
    assert_eq!(reloads(), 3, "v3's failed hook, then v2's again");
    assert!(b.quarantined());
}

#[tokio::test(start_paused = true)]
async fn a_revert_that_fails_too_is_revert_failed() {
    let b = Bed::new();
    b.deploy("v1", &pin('a')).await;
    // The previous release's image now crashes as well.
    b.engine.publish(&pin('a'), Behaviour::Crashes);
    let r = b.deploy("v2", &pin('c')).await;
    assert_eq!(
        (r.outcome, r.reason),
        (Outcome::Failed, Some(Reason::RevertFailed)),
        "{r:#?}"
    );
    assert!(
        b.history().contains("| rollback | v1 | failed |"),
        "{}",
        b.history()
    );
    assert_eq!(b.link_version().as_deref(), Some("v1"));
    assert!(b.journal().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_first_deploy_that_fails_is_left_stopped_and_unlinked() {
    let b = Bed::new();
    let r = b.deploy("v1", &pin('c')).await;
    assert_eq!(
        (r.outcome, r.reason),
        (Outcome::Failed, Some(Reason::SmokeFailed)),
        "{r:#?}"
    );
    assert!(b.link().is_none());
    assert!(b.engine.project("app").is_empty());
    assert!(b.history().contains("first deploy left stopped"));
    assert!(b.quarantined());
}

#[tokio::test(start_paused = true)]
async fn an_engine_that_stops_mid_up_is_not_the_release_fault() {
    let b = Bed::new();
    b.deploy("v1", &pin('a')).await;
    b.engine.stop_at(EngineOp::Up);
    let r = b.deploy("v2", &pin('b')).await;
    assert_eq!(
        (r.outcome, r.reason),
        (Outcome::Failed, Some(Reason::EngineUnavailable)),
        "{r:#?}"
    );
    assert!(!b.quarantined(), "the release did nothing wrong");
    assert_eq!(b.journal().map(|j| j.phase), Some(Phase::Verifying));
    b.engine.reachable(true);
    let r = b.deploy("v2", &pin('b')).await;
    assert_eq!(r.outcome, Outcome::Unchanged, "{r:#?}");
    let h = b.history();
    assert!(h.contains("interrupted deploy to v2__"), "{h}");
    assert_eq!(b.current_version().as_deref(), Some("v2"));
    assert_eq!(b.running_image(), Some(pin('b')));
}

#[tokio::test(start_paused = true)]
async fn heal_recreates_a_removed_container_and_a_failed_heal_is_reported() {
    let b = Bed::new();
    b.deploy("v1", &pin('a')).await;
    b.engine.remove_container("app", "web");
    let r = b.deploy("v1", &pin('a')).await;
    assert_eq!(r.outcome, Outcome::Healed, "{r:#?}");
    assert_eq!(b.running_image(), Some(pin('a')));
    b.engine.remove_container("app", "web");
    b.engine.fail(EngineOp::Up, 1);
    let r = b.deploy("v1", &pin('a')).await;
    assert_eq!(
        (r.outcome, r.reason),
        (Outcome::Failed, Some(Reason::UpFailed)),
        "{r:#?}"
    );
    assert!(r.message.starts_with("heal failed"), "{}", r.message);
}

/// Two kept releases, v1 (running, recorded) and v2, and a journal of a
/// deploy from v1 to v2 interrupted at `phase`, with the link where the
/// crash left it.
async fn crashed_at(phase: Phase, linked_to_new: bool, recorded: bool) -> (Bed, String, String) {
    let b = Bed::new();
    b.deploy("v2", &pin('b')).await;
    let v2 = b.link().unwrap();
    b.deploy("v1", &pin('a')).await;
    let v1 = b.link().unwrap();
    assert_ne!(v1, v2);
    let layout = b.host().layout;
    let meta = release::read_meta(&layout.release_dir("app", &v2)).unwrap();
    if linked_to_new {
        // The crash came after the switch: v2's containers were started.
        release::switch(&layout, "app", &v2).unwrap();
        let dir = layout.release_dir("app", &v2);
        crate::engine::Engine::up(&b.engine, meta.project(&dir))
            .await
            .unwrap();
    }
    if recorded {
        release::write_current(&layout, "app", &release::CurrentRecord::of(&meta, "t")).unwrap();
    }
    b.host()
        .store
        .write_journal(&Journal {
            format: JOURNAL_FORMAT,
            stack: "app".into(),
            op: "deploy".into(),
            from: Some(v1.clone()),
            to: v2.clone(),
            fingerprint: meta.fingerprint.clone(),
            phase,
            started_at: "t".into(),
        })
        .unwrap();
    (b, v1, v2)
}

#[tokio::test(start_paused = true)]
async fn recovery_follows_each_journal_phase() {
    // (phase, link moved, current.json written, ends on, outcome)
    let cases = [
        (Phase::Switching, false, false, "v1", None),
        (Phase::Switching, true, false, "v2", None),
        (Phase::Verifying, true, false, "v2", None),
        (Phase::Recording, true, false, "v2", None),
        (Phase::Recording, true, true, "v2", Some("had completed")),
        (Phase::Reverting, true, false, "v1", None),
    ];
    for (phase, linked, recorded, ends_on, note) in cases {
        let (b, _v1, _v2) = crashed_at(phase, linked, recorded).await;
        let lines_before = b.history().lines().count();
        let results = recover(&b.host()).await;
        let what = format!(
            "{phase:?} linked={linked} recorded={recorded}: {results:#?}\n{}",
            b.history()
        );
        assert_eq!(results.len(), 1, "{what}");
        assert_eq!(results[0].outcome, Outcome::Recovered, "{what}");
        if let Some(n) = note {
            assert!(results[0].message.contains(n), "{what}");
            assert_eq!(
                b.history().lines().count(),
                lines_before,
                "nothing recorded twice: {what}"
            );
        }
        assert_eq!(b.link_version().as_deref(), Some(ends_on), "{what}");
        assert_eq!(b.current_version().as_deref(), Some(ends_on), "{what}");
        assert!(b.journal().is_none(), "{what}");
        assert!(!b.quarantined(), "a crash quarantines nothing: {what}");
        let want = if ends_on == "v2" { pin('b') } else { pin('a') };
        if phase != Phase::Switching || linked {
            assert_eq!(b.running_image(), Some(want), "{what}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn recovery_reverts_a_release_that_fails_when_verified_again() {
    let (b, _v1, _v2) = crashed_at(Phase::Verifying, true, false).await;
    // v2's container died with the daemon; started again it crashes.
    b.engine.publish(&pin('b'), Behaviour::Crashes);
    b.engine.remove_container("app", "web");
    let results = recover(&b.host()).await;
    assert_eq!(results[0].outcome, Outcome::RolledBack, "{results:#?}");
    assert_eq!(b.link_version().as_deref(), Some("v1"));
    assert!(b.quarantined(), "it failed its own smoke");
}

#[tokio::test(start_paused = true)]
async fn plan_inputs_are_the_same_for_sync_status_and_plan() {
    let b = Bed::new();
    b.deploy("v1", &pin('a')).await;
    let d = b.desired("v2", &pin('b'), "");
    let inputs = PlanInputs::gather(&b.host(), &d, &[]).await;
    assert_eq!(inputs.names, vec!["app".to_string()]);
    let p = inputs.plan(&b.host(), &d, &PlanOptions::default());
    assert_eq!(p.items[0].action, plan::Action::Deploy);
    let dry = sync(
        &b.host(),
        &d,
        &SyncOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(dry.items["app"], p.items[0], "sync plans what plan shows");
    assert_eq!(
        b.link_version().as_deref(),
        Some("v1"),
        "a dry run changes nothing"
    );
}

#[tokio::test]
async fn a_lock_held_elsewhere_times_out_instead_of_blocking_the_loop() {
    let b = Bed::new();
    let host = b.host();
    std::fs::create_dir_all(b.root()).unwrap();
    let held = host.store.lock("app").unwrap();
    let Err(e) = host
        .lock_within("app", std::time::Duration::from_millis(200))
        .await
    else {
        panic!("the second lock must not be granted while the first is held");
    };
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    assert!(e.to_string().contains("lock of app"), "{e}");
    drop(held);
    host.lock_within("app", std::time::Duration::from_secs(5))
        .await
        .unwrap();
}
