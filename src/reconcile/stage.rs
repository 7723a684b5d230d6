//! One function per [`Stage`]. Each returns the detail shown in its stage
//! line, or the [`Error`] that stops the switch; the journal phase moves
//! with them: written as `switching` by [`journal`], `verifying` once
//! [`switch`] moved the link, `recording` once [`smoke`] passed (a revert
//! keeps `reverting` throughout).

use super::error::Error;
use super::switch::{Op, Run, Switch, Target, version_of};
use crate::events::Event;
use crate::gate;
use crate::history::{Action, Status};
use crate::host::{Host, now_rfc3339};
use crate::outcome::Stage;
use crate::release::{self, CurrentRecord, ReleaseMeta};
use crate::smoke;
use crate::state::{JOURNAL_FORMAT, Journal, Phase};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Runs `stage` of `r`. `Ok(None)`: the stage had nothing to do here (a
/// release without reload hooks) and is not reported.
pub async fn run(
    host: &Host<'_>,
    r: &mut Run<'_, '_>,
    stage: Stage,
) -> Result<Option<String>, Error> {
    match stage {
        Stage::Preflight => preflight(host, r).await.map(Some),
        Stage::Backup => backup(host, r).await.map(Some),
        Stage::Release => create_release(host, r).await.map(Some),
        Stage::Pull => pull(host, r).await.map(Some),
        Stage::Journal => journal(host, r).map(Some),
        Stage::Switch => switch(host, r).map(Some),
        Stage::Up => up(host, r).await.map(Some),
        Stage::Reload => reload(host, r).await,
        Stage::Smoke => smoke(host, r).await.map(Some),
        Stage::Record => record(host, r).map(Some),
        Stage::Revert => switch_back(host, r).map(Some),
        Stage::Stop => stop(host, r).await.map(Some),
        Stage::Restore => restore(host, r).await.map(Some),
    }
}

fn target_id<'a>(
    r: &'a Run<'_, '_>,
    stage: Stage,
) -> Result<(&'a str, &'a Path, &'a ReleaseMeta), Error> {
    match (&r.id, &r.dir, &r.meta) {
        (Some(id), Some(dir), Some(meta)) => Ok((id, dir, meta)),
        _ => Err(Error::NoMeta { stage }),
    }
}

fn set_phase(host: &Host<'_>, r: &mut Run<'_, '_>, phase: Phase) {
    if let Some(j) = &mut r.journal
        && j.phase != Phase::Reverting
    {
        j.phase = phase;
        if let Err(e) = host.store.write_journal(j) {
            // The journal still names the converge; recovery reads an
            // earlier phase, which it handles more cautiously.
            tracing::error!(stack = %j.stack, "failed to update the journal: {e}");
        }
    }
}

/// Disk space and external networks (the release was rendered by the plan).
async fn preflight(host: &Host<'_>, r: &mut Run<'_, '_>) -> Result<String, Error> {
    let Target::New { stack, .. } = &r.sw.target else {
        return Ok("nothing to check".into());
    };
    let mut problems = Vec::new();
    if let Some(pct) = crate::fsutil::disk_free_percent(&host.layout.root)
        && pct < host.min_disk_free_percent
    {
        problems.push(format!(
            "only {pct}% disk free on {}, {}% required",
            host.layout.root.display(),
            host.min_disk_free_percent
        ));
    }
    for net in stack.compose.external_networks() {
        match host.engine.network_exists(&net).await {
            Ok(true) => {}
            Ok(false) => problems.push(format!(
                "external network `{net}` does not exist (create it: docker network create {net})"
            )),
            Err(e) => problems.push(format!("cannot check network `{net}`: {}", e.report())),
        }
    }
    if problems.is_empty() {
        Ok(String::new())
    } else {
        Err(Error::Preflight(problems))
    }
}

/// SPEC §3 step 2: a failure blocks the deploy unless `backup.required:
/// false`; a first deploy has nothing to back up.
async fn backup(host: &Host<'_>, r: &mut Run<'_, '_>) -> Result<String, Error> {
    let Target::New { stack, .. } = &r.sw.target else {
        return Ok("skipped".into());
    };
    let Some(b) = &stack.spec.backup else {
        return Ok("none configured".into());
    };
    if r.sw.from.is_none() {
        return Ok("skipped: first deploy, nothing to back up".into());
    }
    match crate::backup::run(host, stack, "pre-deploy").await {
        Ok(rep) => Ok(rep.summary()),
        Err(e) if b.required == Some(false) => {
            r.notes.push(format!("backup failed (not required): {e}"));
            Ok(format!("{e} (not required: deploying)"))
        }
        Err(e) => Err(Error::Backup(e)),
    }
}

/// Writes the release directory, then lets compose check it.
async fn create_release(host: &Host<'_>, r: &mut Run<'_, '_>) -> Result<String, Error> {
    let Target::New {
        stack, rendered, ..
    } = &r.sw.target
    else {
        return Ok("kept release".into());
    };
    let name = &r.sw.stack;
    let rdir = host.layout.releases_dir(name);
    let id = release::new_release_id(&stack.version, chrono::Utc::now(), |id| {
        rdir.join(id).exists()
    });
    let meta = ReleaseMeta::new(stack, rendered, &id, chrono::Utc::now());
    let t = std::time::Instant::now();
    let dir = release::create(&host.layout, name, rendered, &meta).map_err(Error::Release)?;
    let written = t.elapsed();
    r.created = true;
    r.id = Some(id.clone());
    r.dir = Some(dir.clone());
    let checked = host.engine.config_model(meta.project(&dir)).await;
    r.meta = Some(meta);
    let (_, model) = checked.map_err(Error::Config)?;
    // The host powers, judged on the model compose will run (interpolated,
    // merged, paths absolute), before anything reaches the engine.
    let refused = judge_powers(host, stack, &dir, &model);
    if !refused.is_empty() {
        return Err(Error::Refused(refused));
    }
    // Where the stage's time goes: the files, or compose's own check.
    tracing::debug!(
        stack = %name,
        files_ms = written.as_millis() as u64,
        config_check_ms = (t.elapsed() - written).as_millis() as u64,
        "release created"
    );
    Ok(id)
}

/// This host's refusals of the model compose resolved from the release in
/// `dir` (see `desired::powers`): relative paths there are the release's,
/// symlinks are followed.
fn judge_powers(
    host: &Host<'_>,
    stack: &crate::desired::Stack,
    dir: &Path,
    model: &serde_json::Value,
) -> Vec<String> {
    let resolve = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let j = crate::desired::powers::judge(&crate::desired::powers::Model {
        value: model,
        base: dir,
        resolved: true,
        resolve: &resolve,
        protected: &host.policy.protected,
    });
    let file = format!(
        "stacks/{}/{} (as compose resolved it)",
        stack.name, stack.compose_file
    );
    crate::policy::refusals_of(&host.policy.allow, &stack.name, &file, &j)
}

/// Pulls every pin of the target by digest, all at once (the engine
/// shares layers between concurrent pulls); the host is untouched on
/// failure, which names a service whose pull failed.
async fn pull(host: &Host<'_>, r: &mut Run<'_, '_>) -> Result<String, Error> {
    let (_, _, meta) = target_id(r, Stage::Pull)?;
    let name = r.sw.stack.clone();
    let reporter = host.reporter;
    let progress = move |line: &str| reporter.pull_progress(&name, line);
    let progress = &progress;
    futures_util::future::try_join_all(meta.images.iter().map(|(svc, pin)| async move {
        host.engine
            .pull(pin, progress)
            .await
            .map_err(|source| Error::Pull {
                service: svc.clone(),
                source,
            })
    }))
    .await?;
    Ok(format!("{} image(s)", meta.images.len()))
}

fn journal(host: &Host<'_>, r: &mut Run<'_, '_>) -> Result<String, Error> {
    let (id, _, meta) = target_id(r, Stage::Journal)?;
    let j = Journal {
        format: JOURNAL_FORMAT,
        stack: r.sw.stack.clone(),
        op: match r.sw.op {
            Op::Rollback => "rollback".into(),
            Op::Restore => "restore".into(),
            _ => "deploy".into(),
        },
        from: r.sw.from.clone(),
        to: id.to_string(),
        fingerprint: meta.fingerprint.clone(),
        phase: Phase::Switching,
        started_at: now_rfc3339(),
    };
    host.store.write_journal(&j).map_err(Error::Journal)?;
    r.journal = Some(j);
    Ok(String::new())
}

fn switch(host: &Host<'_>, r: &mut Run<'_, '_>) -> Result<String, Error> {
    let (id, _, _) = target_id(r, Stage::Switch)?;
    let id = id.to_string();
    release::switch(&host.layout, &r.sw.stack, &id).map_err(Error::Switch)?;
    set_phase(host, r, Phase::Verifying);
    Ok(format!(
        "{} → {id}",
        r.sw.from.as_deref().unwrap_or("(none)")
    ))
}

/// A restore's stop: `down` of the release that runs (its containers and
/// networks; volumes stay), so that nothing writes while the data is
/// replaced.
async fn stop(host: &Host<'_>, r: &mut Run<'_, '_>) -> Result<String, Error> {
    let Some(from) = r.sw.from.as_deref() else {
        return Ok("nothing runs".into());
    };
    let meta =
        release::read_meta(&host.layout.release_dir(&r.sw.stack, from)).map_err(Error::Release)?;
    let link = host.layout.stack_link(&r.sw.stack);
    meta.runtime()
        .remove(host.engine, meta.project(&link))
        .await
        .map_err(Error::Stop)?;
    Ok(format!("stopped {}", meta.version))
}

/// A restore's data: the backup's volumes and databases, into the target
/// release (the link points at it), before the rest of it starts.
async fn restore(host: &Host<'_>, r: &mut Run<'_, '_>) -> Result<String, Error> {
    let (_, _, meta) = target_id(r, Stage::Restore)?;
    let b = r.sw.restore.as_deref().ok_or(Error::NoMeta {
        stage: Stage::Restore,
    })?;
    let link = host.layout.stack_link(&r.sw.stack);
    let project = meta.project(&link);
    let image = crate::backup::helper_image(meta.images.values().filter_map(|p| p.pinned()))
        .unwrap_or_default();
    let services: Vec<String> = meta.images.keys().cloned().collect();
    crate::backup::restore_data(host, b, project, &image, &services)
        .await
        .map_err(Error::Restore)
}

/// The first stage of a revert: the link back to the previous release.
fn switch_back(host: &Host<'_>, r: &mut Run<'_, '_>) -> Result<String, Error> {
    let (id, _, _) = target_id(r, Stage::Revert)?;
    release::switch(&host.layout, &r.sw.stack, id).map_err(Error::Revert)?;
    Ok(format!(
        "{} → {id}",
        r.sw.from.as_deref().unwrap_or("(none)")
    ))
}

/// When the release before ran on the other engine (`engine:` changed, or
/// a revert across that change), it is taken down first, from its own
/// directory: compose containers and Swarm tasks cannot share the stack's
/// name, ports and `<stack>_default` network. What was done, for the
/// stage's line; `None` when the engine stays.
async fn leave_the_other_engine(
    host: &Host<'_>,
    r: &Run<'_, '_>,
    id: &str,
    meta: &ReleaseMeta,
) -> Result<Option<String>, Error> {
    let Some(from) = r.sw.from.as_deref().filter(|f| *f != id) else {
        return Ok(None);
    };
    let dir = host.layout.release_dir(&r.sw.stack, from);
    let Ok(before) = release::read_meta(&dir) else {
        return Ok(None);
    };
    if before.engine == meta.engine {
        return Ok(None);
    }
    before
        .runtime()
        .remove(host.engine, before.project(&dir))
        .await
        .map_err(Error::Up)?;
    Ok(Some(format!(
        "removed {} from {} first: {} runs on {}",
        before.version,
        before.engine.name(),
        meta.version,
        meta.engine.name()
    )))
}

async fn up(host: &Host<'_>, r: &mut Run<'_, '_>) -> Result<String, Error> {
    let (id, dir, meta) = target_id(r, Stage::Up)?;
    let id = id.to_string();
    // From the stack's link, which stays the same path between releases
    // (the switch stage has pointed it at this release): relative bind
    // sources keep their path, so compose recreates only the services whose
    // fingerprint label changed.
    let link = host.layout.stack_link(&r.sw.stack);
    let project = meta.project(&link);
    let mut replaced = Vec::new();
    if let Some(moved) = leave_the_other_engine(host, r, &id, meta).await? {
        tracing::info!(stack = %r.sw.stack, "{moved}");
        replaced.push(moved);
    }
    // Start-first services first: each new container is judged before it
    // takes the service's name, and a refused one never served.
    let spec = smoke::Spec::read(dir)?;
    let runtime = meta.runtime();
    if runtime.local() && !spec.start_first.is_empty() {
        let wanted = release::read_service_fingerprints(dir).map_err(Error::Rollout)?;
        let containers = host
            .engine
            .containers(&r.sw.stack)
            .await
            .map_err(Error::Up)?;
        for a in crate::rollout::plan(&spec.start_first, &wanted, &containers) {
            let line = crate::rollout::run(host.engine, project, &a, &spec)
                .await
                .map_err(|why| Error::Rollout(host.engine.mask(&why)))?;
            tracing::info!(stack = %r.sw.stack, "{line}");
            replaced.push(line);
        }
    }
    runtime
        .deploy(host.engine, project)
        .await
        .map_err(Error::Up)?;
    let note = runtime.deployed_note(&meta.swarm_steps);
    r.notes.extend(replaced.iter().cloned());
    if !runtime.local() {
        // The orchestrator rolls the members, on any node, and none mounts
        // this host's release (validation refuses bind mounts): nothing to
        // record; the smoke waits for the new members.
        replaced.extend(note);
        return Ok(replaced.join("; "));
    }
    let (problem, touched, recreated) = record_mounts(host, &r.sw.stack, &id).await;
    r.recreated = recreated;
    if let Some(t) = &touched {
        r.notes.push(t.clone());
    }
    Ok(replaced
        .into_iter()
        .map(Some)
        .chain([touched, problem])
        .flatten()
        .collect::<Vec<_>>()
        .join("; "))
}

/// After an `up` from the link pointing at `release`: every container not
/// seen before was created from `release`, and mounts it while it runs;
/// containers that kept running keep the release they had. Returns a
/// problem to show, if the record could not be kept (retention then keeps
/// every release a container may mount: see [`retain`]), which services
/// `up` recreated and which it left running, for history, and the set of
/// services that got a new container (`None`: not known).
async fn record_mounts(
    host: &Host<'_>,
    stack: &str,
    release: &str,
) -> (Option<String>, Option<String>, Option<BTreeSet<String>>) {
    let containers = match host.engine.containers(stack).await {
        Ok(c) => c,
        Err(e) => {
            let why = format!(
                "which release each container mounts is not known: {}",
                e.report()
            );
            return (Some(why), None, None);
        }
    };
    let old = host.store.mounts(stack).unwrap_or_default();
    let mut recreated = BTreeSet::new();
    let mut kept = BTreeSet::new();
    let now: BTreeMap<String, String> = containers
        .into_iter()
        .map(|c| {
            let r = match old.get(&c.id) {
                Some(r) => {
                    kept.insert(c.service.clone());
                    r.clone()
                }
                None => {
                    recreated.insert(c.service.clone());
                    release.to_string()
                }
            };
            (c.id, r)
        })
        .collect();
    let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
    // With no record yet (a first deploy) there is nothing to compare.
    let touched = (!old.is_empty()).then(|| {
        let kept: BTreeSet<String> = kept.difference(&recreated).cloned().collect();
        match (recreated.is_empty(), kept.is_empty()) {
            (true, _) => format!("nothing recreated; kept {}", list(&kept)),
            (false, true) => format!("recreated {}", list(&recreated)),
            (false, false) => format!("recreated {}; kept {}", list(&recreated), list(&kept)),
        }
    });
    if now == old {
        return (None, touched, Some(recreated));
    }
    let problem = host
        .store
        .set_mounts(stack, &now)
        .err()
        .map(|e| format!("which release each container mounts could not be recorded: {e}"));
    (problem, touched, Some(recreated))
}

/// The `update.reload` hooks, in the containers that kept running while
/// `up` gave others new ones: a router started by this `up` resolved its
/// upstreams when it started, and nothing recreated needs no reload. When
/// this run did not see `up` (a resumed recovery) every hook runs.
async fn reload(host: &Host<'_>, r: &mut Run<'_, '_>) -> Result<Option<String>, Error> {
    let (_, dir, _) = target_id(r, Stage::Reload)?;
    let spec = smoke::Spec::read(dir)?;
    if spec.reload.is_empty() {
        return Ok(None);
    }
    let hooks: Vec<_> = match &r.recreated {
        None => spec.reload.clone(),
        Some(new) if new.is_empty() => return Ok(Some("nothing was recreated".into())),
        Some(new) => spec
            .reload
            .iter()
            .filter(|h| !new.contains(&h.service))
            .cloned()
            .collect(),
    };
    if hooks.is_empty() {
        return Ok(Some(
            "the routing services were recreated themselves".into(),
        ));
    }
    let done = crate::rollout::reload(host.engine, &r.sw.stack, &hooks)
        .await
        .map_err(|why| Error::Reload(host.engine.mask(&why)))?;
    Ok(Some(if done.is_empty() {
        "no running container to reload".into()
    } else {
        done.join(", ")
    }))
}

async fn smoke(host: &Host<'_>, r: &mut Run<'_, '_>) -> Result<String, Error> {
    let (_, dir, meta) = target_id(r, Stage::Smoke)?;
    let spec = smoke::Spec::read(dir)?;
    let (stack, services, checks) = (&r.sw.stack, &spec.services, &spec.checks);
    let runtime = meta.runtime();
    let o = smoke::run(
        host.engine,
        runtime,
        stack,
        services,
        checks,
        spec.timeout(),
    )
    .await;
    if !o.passed {
        // Before the revert replaces them: what the containers said.
        let logs = smoke::failure_logs(host.engine, runtime, stack, services).await;
        return Err(Error::Smoke {
            // The error names its check already (`containers: …`).
            why: o
                .error
                .clone()
                .or(o.failed_check.clone())
                .unwrap_or_else(|| "failed".into()),
            logs,
        });
    }
    set_phase(host, r, Phase::Recording);
    // The deploy's history line carries what each check took: the evidence
    // a promotion of this release shows the approver.
    if r.sw.op == Op::Deploy {
        r.notes.push(format!("smoke passed: {}", o.passed_checks()));
    }
    Ok(format!(
        "passed after {} attempt(s): {}",
        o.attempts,
        o.passed_checks()
    ))
}

/// What a landed switch writes. The history line first (a deploy without
/// its audit line fails), `current.json` last: once it names the target,
/// the record is complete (recovery relies on that).
fn record(host: &Host<'_>, r: &mut Run<'_, '_>) -> Result<String, Error> {
    let (id, _, meta) = target_id(r, Stage::Record)?;
    let (id, meta) = (id.to_string(), meta.clone());
    let sw = r.sw;
    let notes = r.notes.join("; ");
    let history = |action: Action, notes: &str| {
        host.record(
            &sw.stack,
            &meta.environment,
            action,
            &meta.version,
            Status::Success,
            notes,
        )
        .map_err(|source| Error::Record {
            what: "history",
            source,
        })
    };
    let mut detail = Vec::new();
    match sw.op {
        Op::Heal => {
            history(Action::Deploy, &format!("heal: {notes}; healed"))?;
            host.emit(deployed(sw, &meta));
            return Ok("healed".into());
        }
        Op::Revert => {
            history(Action::Rollback, &notes)?;
            host.emit(Event::RolledBack {
                stack: sw.stack.clone(),
                environment: meta.environment.clone(),
                failed_version: failed_version(host, sw),
                version: meta.version.clone(),
                reason: notes.clone(),
            });
        }
        Op::Rollback | Op::Restore => {
            // An operator's change: recorded, then held there.
            let from_version = version_of(host, &sw.stack, sw.from.as_deref());
            let (first, reason) = if sw.op == Op::Restore {
                let backup = sw
                    .restore
                    .as_deref()
                    .map(|b| b.id.clone())
                    .unwrap_or_default();
                (
                    format!("backup {backup}; from {from_version}"),
                    format!("restored backup {backup} ({})", meta.version),
                )
            } else {
                (
                    format!("from {from_version}"),
                    format!("manual rollback to {}", meta.version),
                )
            };
            let mut why = vec![first];
            why.extend(r.notes.iter().cloned());
            history(sw.op.action(), &why.join("; "))?;
            host.hold_locked(&sw.stack, &reason, Some(id.clone()))
                .map_err(|source| Error::Record {
                    what: "hold",
                    source,
                })?;
        }
        Op::Deploy => {
            history(Action::Deploy, &notes)?;
            if let Err(e) = host.store.clear_quarantine(&sw.stack) {
                detail.push(format!("the old quarantine could not be cleared: {e}"));
            }
            if let Some(reason) = r
                .notes
                .iter()
                .find_map(|n| n.strip_prefix(gate::BREAK_GLASS_PREFIX))
            {
                host.emit(Event::BreakGlass {
                    stack: sw.stack.clone(),
                    environment: meta.environment.clone(),
                    version: meta.version.clone(),
                    reason: reason.to_string(),
                });
            }
            host.emit(if sw.recovering {
                Event::Recovered {
                    stack: sw.stack.clone(),
                    environment: meta.environment.clone(),
                    version: meta.version.clone(),
                    note: notes.clone(),
                }
            } else {
                deployed(sw, &meta)
            });
            if meta.marks_verified
                && let Err(e) = crate::verified::record(
                    &host.layout,
                    &host.name,
                    &sw.stack,
                    &meta.version,
                    &meta.images,
                    meta.commit.as_deref(),
                    host.policy.signing_key.as_ref(),
                )
            {
                tracing::error!(stack = %sw.stack, "{e}");
                detail.push(format!("not marked verified: {e}"));
            }
            detail.extend(retain(host, sw, &meta, &id));
        }
    }
    let current = release::read_current(&host.layout, &sw.stack)
        .ok()
        .flatten();
    if current.as_ref().is_none_or(|c| c.release_id != id) {
        release::write_current(
            &host.layout,
            &sw.stack,
            &CurrentRecord::of(&meta, &host.actor),
        )
        .map_err(Error::Current)?;
    }
    Ok(detail.join("; "))
}

fn deployed(sw: &Switch, meta: &ReleaseMeta) -> Event {
    Event::Deployed {
        stack: sw.stack.clone(),
        environment: meta.environment.clone(),
        version: meta.version.clone(),
    }
}

/// The version of the release a revert undoes, for its event.
fn failed_version(host: &Host<'_>, sw: &Switch) -> String {
    version_of(host, &sw.stack, sw.from.as_deref())
}

/// Retention after a deploy: keeps `keep_releases`, the new release, the one
/// it replaced and the newest verified one. Returns a note when it failed.
fn retain(host: &Host<'_>, sw: &Switch, meta: &ReleaseMeta, id: &str) -> Option<String> {
    let name = &sw.stack;
    let mut protect: Vec<String> = vec![id.to_string()];
    protect.extend(sw.from.clone());
    // Releases a running container was created from, and so still mounts.
    match host.store.mounts(name) {
        Ok(m) => protect.extend(m.into_values()),
        Err(e) => {
            tracing::warn!(stack = %name, "{e}: no release is removed this time");
            return Some(format!("retention skipped: {e}"));
        }
    }
    if let Ok(Some(v)) = release::read_verified_txt(&host.layout, name)
        && let Ok(list) = release::list(&host.layout, name)
        && let Some(r) = list
            .iter()
            .rev()
            .find(|r| r.meta.as_ref().is_some_and(|m| m.version == v))
    {
        protect.push(r.id.clone());
    }
    let keep = meta
        .keep_releases
        .unwrap_or(crate::desired::DEFAULT_KEEP_RELEASES) as usize;
    let refs: Vec<&str> = protect.iter().map(String::as_str).collect();
    match release::retain(&host.layout, name, keep, &refs) {
        Ok(removed) => {
            if !removed.is_empty() {
                tracing::info!(stack = %name, removed = ?removed, "retention removed old releases");
            }
            None
        }
        Err(e) => {
            tracing::warn!(stack = %name, "retention failed: {e}");
            Some(format!("retention failed: {e}"))
        }
    }
}

/// A first deploy that failed: its containers stopped, the link removed.
/// Returns what could not be done (empty: both done).
pub async fn stop_and_unlink(
    host: &Host<'_>,
    stack: &str,
    meta: Option<&ReleaseMeta>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(m) = meta {
        // The same project directory `up` used: the link while it points at
        // this release, else the release itself.
        let link = host.layout.stack_link(stack);
        let dir = match std::fs::read_link(&link) {
            Ok(t) if t.file_name() == Some(std::ffi::OsStr::new(&m.release_id)) => link,
            _ => host.layout.release_dir(stack, &m.release_id),
        };
        if let Err(e) = m.runtime().remove(host.engine, m.project(&dir)).await {
            problems.push(e.report());
        }
    }
    if let Err(e) = release::unlink(&host.layout, stack) {
        problems.push(e.to_string());
    }
    problems
}
