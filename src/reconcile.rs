//! The converge pipeline (SPEC §3), the imperative shell around the pure
//! plan: preflight → release-create → pull → switch → up → smoke → record,
//! or revert to the previous release. Each stage that fails gives one
//! [`Reason`], which is what history, status and the exit code show.
//!
//! # Guarantees
//! - One converge per stack at a time: every stage runs under the stack's
//!   file lock, shared with every other stackpin process on the host.
//! - Nothing before the switch changes what runs: a failed preflight or pull
//!   leaves the old release and its containers untouched.
//! - A journal is written before the switch and cleared after the outcome is
//!   recorded; [`recover`] finishes or reverts an interrupted converge, so each
//!   stack ends on a complete release that passed smoke.

use crate::desired::spec::{Check, VerifiedEntry, VerifiedFile};
use crate::desired::{DesiredState, Stack};
use crate::engine::Engine;
use crate::events::{Event, EventSink};
use crate::fault;
use crate::gate::Verdict;
use crate::history::{self, Entry};
use crate::observed::{self, StackObservation};
use crate::plan::{self, Action, Item, LocalRecord, Skip};
use crate::release::{self, CurrentRecord, ImageRecord, Layout, ReleaseMeta, Rendered};
use crate::smoke;
use crate::state::{Hold, JOURNAL_FORMAT, Journal, LocalStore, Phase, Quarantine};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Why a stack did not end converged; one per failed stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    InvalidSpec,
    PreflightFailed,
    /// The pre-deploy backup failed (and `backup.required` is not `false`).
    BackupFailed,
    PullFailed,
    UpFailed,
    SmokeFailed,
    RolledBack,
    RevertFailed,
    Unverified,
    Quarantined,
    Held,
    Interrupted,
    EngineUnavailable,
}

/// How one stack's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing to do: the release is current and healthy.
    Unchanged,
    Deployed,
    Healed,
    /// The new release failed; the previous one runs again.
    RolledBack,
    Failed,
    Skipped,
    Blocked,
    /// Interrupted converge recovered.
    Recovered,
    /// `--dry-run`: what would happen, nothing done.
    Planned,
    /// Pruned: stopped and unlinked because it left the desired state.
    Removed,
}

impl Outcome {
    /// Whether the command should exit non-zero because of this stack.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::RolledBack | Outcome::Failed | Outcome::Blocked
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    pub ok: bool,
    pub millis: u128,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackResult {
    pub stack: String,
    pub outcome: Outcome,
    pub reason: Option<Reason>,
    pub message: String,
    pub version: Option<String>,
    pub release: Option<String>,
    pub stages: Vec<Stage>,
}

/// Receives progress as it happens (the CLI prints it; the daemon logs it).
pub trait Reporter: Send + Sync {
    fn stage(&self, stack: &str, stage: &Stage);
    fn pull_progress(&self, _stack: &str, _line: &str) {}
}

/// A reporter that only logs through tracing.
pub struct LogReporter;

impl Reporter for LogReporter {
    fn stage(&self, stack: &str, s: &Stage) {
        tracing::info!(stack, stage = s.name, ok = s.ok, millis = s.millis as u64, detail = %s.detail, "stage");
    }
}

pub struct Context<'a> {
    pub layout: Layout,
    pub store: LocalStore,
    pub engine: &'a Engine,
    pub host: String,
    /// Who acts: recorded in current.json.
    pub actor: String,
    pub min_disk_free_percent: u8,
    pub reporter: &'a dyn Reporter,
    /// Where notifications go (see `events`).
    pub events: &'a dyn EventSink,
    /// Signature policies by environment (SPEC §5); empty: no policy.
    pub trust: &'a BTreeMap<String, crate::trust::Policy>,
}

#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    pub force: bool,
    pub dry_run: bool,
    pub break_glass: Option<String>,
    pub only: Vec<String>,
    pub prune: bool,
    /// Stacks converging at once (at least 1).
    pub concurrency: usize,
    /// Environments whose desired commit failed the signature policy, with
    /// why; computed by [`sync`] from `Context::trust`.
    pub untrusted: BTreeMap<String, String>,
}

/// What the smoke of a release needs, stored inside the release so that a
/// revert smokes the previous release with its own checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SmokeSpec {
    pub timeout_secs: u64,
    pub services: Vec<String>,
    pub checks: Vec<Check>,
}

pub const SMOKE_FILE: &str = "stackpin.smoke.json";

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Renders a stack's release from the desired state and this host's secret
/// files. Errors name the missing or unreadable file.
pub fn render(stack: &Stack, commit: Option<&str>) -> Result<Rendered, String> {
    let mut secrets = Vec::new();
    for f in &stack.spec.env_files {
        match std::fs::read(f) {
            Ok(b) => secrets.push((f.clone(), b)),
            Err(e) => {
                return Err(format!(
                    "env file {f} cannot be read: {e} (create it on this host; secrets are never in git)"
                ));
            }
        }
    }
    // The smoke spec travels inside the release (a revert smokes the previous
    // release with its own checks) and is part of the fingerprint.
    let spec = SmokeSpec {
        timeout_secs: stack.smoke_timeout.as_secs(),
        services: stack.compose.service_names(),
        checks: stack.checks().to_vec(),
    };
    let mut with_smoke = stack.clone();
    with_smoke.files.insert(
        SMOKE_FILE.into(),
        serde_json::to_vec_pretty(&spec).map_err(|e| e.to_string())?,
    );
    release::render(&with_smoke, &secrets, commit).map_err(|e| e.to_string())
}

fn read_smoke(dir: &Path) -> SmokeSpec {
    std::fs::read(dir.join(SMOKE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(SmokeSpec {
            timeout_secs: 120,
            services: Vec::new(),
            checks: Vec::new(),
        })
}

impl Context<'_> {
    pub(crate) fn history(
        &self,
        stack: &str,
        env: &str,
        action: &str,
        version: &str,
        status: &str,
        notes: &str,
    ) {
        let e = Entry {
            time: chrono::Utc::now().naive_utc(),
            stack: stack.into(),
            env: env.into(),
            action: action.into(),
            version: version.into(),
            status: status.into(),
            notes: notes.into(),
        };
        if let Err(err) = history::append(&self.layout.history(), &e) {
            tracing::error!(stack, "failed to append to history: {err}");
        }
    }

    /// Records a deploy that failed: history `deploy … | failed` and a
    /// DeployFailed notification.
    pub(crate) fn deploy_failed(&self, stack: &str, env: &str, version: &str, msg: &str) {
        self.history(stack, env, "deploy", version, "failed", msg);
        self.emit(Event::DeployFailed {
            stack: stack.into(),
            environment: env.into(),
            version: version.into(),
            reason: msg.into(),
        });
    }

    pub(crate) fn emit(&self, e: Event) {
        self.events.emit(e);
    }

    /// The host's verified entries for a stack.
    pub fn verified_store(&self, stack: &str) -> Vec<VerifiedEntry> {
        read_verified_store(&self.layout, stack)
    }

    pub fn local_record(&self, stack: &str) -> LocalRecord {
        local_record(&self.layout, &self.store, stack)
    }
}

/// This host's records about one stack: quarantine, hold, verified entries.
pub fn local_record(layout: &Layout, store: &LocalStore, stack: &str) -> LocalRecord {
    LocalRecord {
        quarantined: store
            .quarantine(stack)
            .ok()
            .flatten()
            .map(|q| q.fingerprint),
        held: store.hold(stack).ok().flatten().map(|h| h.reason),
        verified: read_verified_store(layout, stack),
    }
}

/// The local records the plan of one stack needs: its own and, when it has
/// `promote_from`, its source's (the gate reads the source's verified store).
pub fn local_records_for(
    layout: &Layout,
    desired: &DesiredState,
    name: &str,
) -> BTreeMap<String, LocalRecord> {
    let store = LocalStore::new(&layout.root);
    std::iter::once(name.to_string())
        .chain(
            desired
                .stacks
                .get(name)
                .and_then(|s| s.spec.promote_from.clone()),
        )
        .map(|n| {
            let rec = local_record(layout, &store, &n);
            (n, rec)
        })
        .collect()
}

/// The host's verified entries for a stack (`releases/verified/<stack>.yaml`);
/// empty when missing or unreadable.
pub fn read_verified_store(layout: &Layout, stack: &str) -> Vec<VerifiedEntry> {
    std::fs::read(layout.verified_store(stack))
        .ok()
        .and_then(|b| {
            let mut f = Vec::new();
            let mut sink = crate::desired::Sink::new(None, "", &mut f);
            crate::desired::parse_typed::<VerifiedFile>(&b, &mut sink).ok()
        })
        .map(|v| v.verified)
        .unwrap_or_default()
}

/// Runs a stage, timing it and reporting it.
pub(crate) struct Stages<'r> {
    stack: String,
    list: Vec<Stage>,
    reporter: &'r dyn Reporter,
}

impl Stages<'_> {
    pub(crate) fn new<'r>(stack: &str, reporter: &'r dyn Reporter) -> Stages<'r> {
        Stages {
            stack: stack.to_string(),
            list: Vec::new(),
            reporter,
        }
    }

    pub(crate) fn into_list(self) -> Vec<Stage> {
        self.list
    }

    pub(crate) fn record(
        &mut self,
        name: &'static str,
        started: Instant,
        ok: bool,
        detail: impl Into<String>,
    ) {
        let s = Stage {
            name: name.to_string(),
            ok,
            millis: started.elapsed().as_millis(),
            detail: detail.into(),
        };
        self.reporter.stage(&self.stack, &s);
        self.list.push(s);
    }
}

/// Converges every selected stack of `desired`: a stack starts once every
/// stack it depends on (`depends_on`, `promote_from`) has finished, and at
/// most `opts.concurrency` converge at once. Each stack is planned and
/// executed under its lock, so a plan is never acted on after another process
/// changed the stack.
pub async fn sync(
    ctx: &Context<'_>,
    desired: &DesiredState,
    opts: &SyncOptions,
) -> Vec<StackResult> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let mut results = recover(ctx).await;
    let mut with_trust = opts.clone();
    with_trust.untrusted = trust_verdicts(ctx, desired);
    let opts = &with_trust;
    let mut names: Vec<String> = desired
        .order()
        .into_iter()
        .chain(desired.invalid.iter().cloned())
        .filter(|n| opts.only.is_empty() || opts.only.contains(n))
        .collect();
    for s in observed::stacks_on_host(&ctx.layout) {
        if !names.contains(&s) && (opts.only.is_empty() || opts.only.contains(&s)) {
            names.push(s);
        }
    }
    let preds = |n: &str| -> Vec<String> {
        desired
            .stacks
            .get(n)
            .map(|s| {
                s.predecessors()
                    .filter(|p| names.iter().any(|x| x == p))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let limit = opts.concurrency.max(1);
    let mut pending: Vec<String> = names.clone();
    let mut done: Vec<String> = Vec::new();
    let mut running = FuturesUnordered::new();
    let mut by_name: BTreeMap<String, StackResult> = BTreeMap::new();
    loop {
        while running.len() < limit {
            let Some(pos) = pending
                .iter()
                .position(|n| preds(n).iter().all(|p| done.contains(p)))
            else {
                break;
            };
            let n = pending.remove(pos);
            running.push(async move {
                let r = sync_stack(ctx, desired, &n, opts).await;
                (n, r)
            });
        }
        match running.next().await {
            Some((n, r)) => {
                done.push(n.clone());
                by_name.insert(n, r);
            }
            None => break,
        }
    }
    // Report in converge order.
    for n in names {
        if let Some(r) = by_name.remove(&n) {
            results.push(r);
        }
    }
    results
}

/// Removes a stack that left the desired state (only when `prune: true` in
/// stackpin.yaml, or by `stackpin prune`): `compose down` of its current
/// release (volumes are kept), the `/srv/stacks/<stack>` link removed,
/// history `prune`. Release directories and backups are kept for audit;
/// the caller holds the stack lock.
pub async fn prune_stack(ctx: &Context<'_>, name: &str, obs: &StackObservation) -> StackResult {
    let mut st = Stages::new(name, ctx.reporter);
    let t = Instant::now();
    let version = obs
        .meta
        .as_ref()
        .map(|m| m.version.clone())
        .unwrap_or_else(|| "-".into());
    let env = obs
        .meta
        .as_ref()
        .map(|m| m.environment.clone())
        .unwrap_or_else(|| "-".into());
    let down = match &obs.release {
        Some(id) => {
            let dir = ctx.layout.release_dir(name, id);
            let files = obs
                .meta
                .as_ref()
                .map(|m| m.compose_files.clone())
                .unwrap_or_default();
            ctx.engine
                .down(&dir, name, &files)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        None => Ok(()),
    };
    let res = down.and_then(|_| release::unlink(&ctx.layout, name).map_err(|e| e.to_string()));
    st.record(
        "prune",
        t,
        res.is_ok(),
        res.as_ref().err().cloned().unwrap_or_default(),
    );
    let (outcome, status, msg) = match &res {
        Ok(()) => (
            Outcome::Removed,
            "success",
            format!(
                "removed (no longer in the desired state); releases kept under {}",
                ctx.layout.releases_dir(name).display()
            ),
        ),
        Err(e) => (Outcome::Failed, "failed", format!("prune failed: {e}")),
    };
    ctx.history(name, &env, "prune", &version, status, &msg);
    StackResult {
        stack: name.into(),
        outcome,
        reason: None,
        message: msg,
        version: Some(version),
        release: None,
        stages: st.into_list(),
    }
}

/// Checks the desired commit against the signature policy of every
/// environment that has one. Returns the environments it does not satisfy.
pub fn trust_verdicts(ctx: &Context<'_>, desired: &DesiredState) -> BTreeMap<String, String> {
    untrusted_environments(ctx.trust, desired)
}

/// [`trust_verdicts`] without a [`Context`], for commands that plan without
/// an engine (`plan`, `status`): environment -> `untrusted commit <sha>: <why>`.
pub fn untrusted_environments(
    trust: &BTreeMap<String, crate::trust::Policy>,
    desired: &DesiredState,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if trust.is_empty() {
        return out;
    }
    let envs: std::collections::BTreeSet<&str> =
        desired.stacks.values().map(|s| s.environment()).collect();
    let repo = desired
        .repo_path
        .as_ref()
        .and_then(|p| git2::Repository::open(p).ok());
    for env in envs {
        let Some(policy) = trust.get(env) else {
            continue;
        };
        let why = match (&repo, &desired.commit) {
            (Some(r), Some(c)) => {
                match crate::trust::verify_commit(r, c, policy, chrono::Utc::now()) {
                    crate::trust::Verdict::Trusted { signer, method } => {
                        tracing::debug!(environment = env, %signer, method, "desired commit is trusted");
                        continue;
                    }
                    crate::trust::Verdict::Untrusted { why } => why,
                }
            }
            _ => "the desired state is not a git commit, so its signature cannot be checked"
                .to_string(),
        };
        let sha = desired
            .commit
            .as_deref()
            .map(|c| &c[..12.min(c.len())])
            .unwrap_or("-");
        out.insert(env.to_string(), format!("untrusted commit {sha}: {why}"));
    }
    out
}

/// Plans and executes one stack under its lock.
pub async fn sync_stack(
    ctx: &Context<'_>,
    desired: &DesiredState,
    name: &str,
    opts: &SyncOptions,
) -> StackResult {
    let _lock = if opts.dry_run {
        None
    } else {
        match ctx.store.try_lock(name) {
            Ok(Some(l)) => Some(l),
            Ok(None) => {
                tracing::info!(
                    stack = name,
                    "another stackpin process is converging this stack; waiting for its lock"
                );
                let store = LocalStore::new(&ctx.layout.root);
                let n = name.to_string();
                match tokio::task::spawn_blocking(move || store.lock(&n)).await {
                    Ok(Ok(l)) => Some(l),
                    _ => {
                        return skipped(
                            name,
                            Reason::PreflightFailed,
                            "the stack's lock could not be taken",
                        );
                    }
                }
            }
            Err(e) => {
                return skipped(
                    name,
                    Reason::PreflightFailed,
                    &format!("the stack's lock could not be taken: {e}"),
                );
            }
        }
    };
    // A journal that cannot be read means an interrupted converge nobody
    // understands: leave the stack exactly as it is for a person.
    if let Err(e) = ctx.store.journal(name) {
        return StackResult {
            stack: name.into(),
            outcome: Outcome::Failed,
            reason: Some(Reason::Interrupted),
            message: format!(
                "{e}; the stack is left as it is: check it, then remove the journal file"
            ),
            version: None,
            release: None,
            stages: vec![],
        };
    }
    let mut fingerprints = BTreeMap::new();
    let mut rendered = None;
    let mut render_error = None;
    if let Some(stack) = desired.stacks.get(name) {
        match render(stack, desired.commit.as_deref()) {
            Ok(r) => {
                fingerprints.insert(name.to_string(), r.fingerprint.clone());
                rendered = Some(r);
            }
            Err(e) => render_error = Some(e),
        }
    }
    let obs = observed::observe(&ctx.layout, ctx.engine, name).await;
    for p in &obs.problems {
        tracing::warn!(stack = name, "{p}");
    }
    let local = local_records_for(&ctx.layout, desired, name);
    let mut observed_map = BTreeMap::new();
    observed_map.insert(name.to_string(), obs.for_plan());
    let only = vec![name.to_string()];
    let popts = plan::Options {
        host: &ctx.host,
        force: opts.force,
        prune: opts.prune,
        break_glass: opts.break_glass.as_deref(),
        only: &only,
        untrusted: Some(&opts.untrusted),
    };
    let p = plan::plan(desired, &fingerprints, &observed_map, &local, &popts);
    let Some(item) = p.items.into_iter().next() else {
        return skipped(name, Reason::InvalidSpec, "not in the desired state");
    };
    if let Some(e) = render_error {
        return StackResult {
            stack: name.into(),
            outcome: Outcome::Failed,
            reason: Some(Reason::PreflightFailed),
            message: e,
            version: None,
            release: obs.release,
            stages: vec![],
        };
    }
    if opts.dry_run {
        return StackResult {
            stack: name.into(),
            outcome: Outcome::Planned,
            reason: None,
            message: format!("would {}: {}", action_word(&item.action), item.reason),
            version: desired.stacks.get(name).map(|s| s.version.clone()),
            release: obs.release,
            stages: vec![],
        };
    }
    execute(ctx, desired, item, rendered, obs, opts).await
}

fn action_word(a: &Action) -> &'static str {
    match a {
        Action::Noop => "do nothing",
        Action::Deploy => "deploy",
        Action::Heal => "heal",
        Action::Remove => "remove",
        Action::Skip { .. } => "skip",
    }
}

fn skipped(stack: &str, reason: Reason, msg: &str) -> StackResult {
    StackResult {
        stack: stack.into(),
        outcome: Outcome::Skipped,
        reason: Some(reason),
        message: msg.into(),
        version: None,
        release: None,
        stages: vec![],
    }
}

async fn execute(
    ctx: &Context<'_>,
    desired: &DesiredState,
    item: Item,
    rendered: Option<Rendered>,
    obs: StackObservation,
    opts: &SyncOptions,
) -> StackResult {
    let name = item.stack.clone();
    let stack = desired.stacks.get(&name);
    let base = StackResult {
        stack: name.clone(),
        outcome: Outcome::Skipped,
        reason: None,
        message: item.reason.clone(),
        version: stack.map(|s| s.version.clone()),
        release: obs.release.clone(),
        stages: vec![],
    };
    match (&item.action, stack, rendered) {
        (Action::Noop, _, _) => StackResult {
            outcome: Outcome::Unchanged,
            ..base
        },
        (Action::Skip { why }, _, _) => {
            let reason = match why {
                Skip::Quarantined => Reason::Quarantined,
                Skip::Held => Reason::Held,
                Skip::Invalid => Reason::InvalidSpec,
                Skip::Blocked => Reason::Unverified,
                Skip::NotForThisHost | Skip::Orphaned => return base,
            };
            if *why == Skip::Blocked
                && let Some(s) = stack
            {
                record_refusal(ctx, s, &item);
                return StackResult {
                    outcome: Outcome::Blocked,
                    reason: Some(reason),
                    ..base
                };
            }
            StackResult {
                reason: Some(reason),
                ..base
            }
        }
        (Action::Heal, Some(s), _) => heal(ctx, s, &obs, &item.reason).await,
        (Action::Deploy, Some(s), Some(r)) => {
            deploy(ctx, desired, s, r, &obs, item.verdict.as_ref(), opts).await
        }
        (Action::Remove, _, _) => prune_stack(ctx, &name, &obs).await,
        _ => StackResult {
            outcome: Outcome::Failed,
            reason: Some(Reason::InvalidSpec),
            ..base
        },
    }
}

/// Writes `blocked … | refused` once per distinct refusal, not every loop.
fn record_refusal(ctx: &Context<'_>, s: &Stack, item: &Item) {
    let key = format!(
        "{}:{}",
        item.fingerprint.as_deref().unwrap_or(""),
        item.reason
    );
    let marker = ctx
        .store
        .dir()
        .join("blocked")
        .join(format!("{}.key", s.name));
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(key.as_str()) {
        return;
    }
    ctx.history(
        &s.name,
        s.environment(),
        "blocked",
        &s.version,
        "refused",
        &item.reason,
    );
    ctx.emit(Event::Blocked {
        stack: s.name.clone(),
        environment: s.environment().into(),
        version: s.version.clone(),
        reason: item.reason.clone(),
    });
    let _ = crate::fsutil::write_atomic(&marker, key.as_bytes(), 0o644);
}

async fn heal(ctx: &Context<'_>, s: &Stack, obs: &StackObservation, why: &str) -> StackResult {
    let mut st = Stages {
        stack: s.name.clone(),
        list: vec![],
        reporter: ctx.reporter,
    };
    let id = obs.release.clone().unwrap_or_default();
    let dir = ctx.layout.release_dir(&s.name, &id);
    let files = obs
        .meta
        .as_ref()
        .map(|m| m.compose_files.clone())
        .unwrap_or_default();
    let t = Instant::now();
    let up = ctx.engine.up(&dir, &s.name, &files).await;
    st.record(
        "up",
        t,
        up.is_ok(),
        up.as_ref().err().map(|e| e.to_string()).unwrap_or_default(),
    );
    let (outcome, reason, message) = match up {
        Err(e) => (
            Outcome::Failed,
            Some(Reason::UpFailed),
            format!("heal failed: {e}"),
        ),
        Ok(_) => {
            let spec = read_smoke(&dir);
            let t = Instant::now();
            let sm = smoke::run(
                ctx.engine,
                &s.name,
                &spec.services,
                &spec.checks,
                Duration::from_secs(spec.timeout_secs),
            )
            .await;
            st.record("smoke", t, sm.passed, smoke_detail(&sm));
            if sm.passed {
                (Outcome::Healed, None, format!("healed ({why})"))
            } else {
                (
                    Outcome::Failed,
                    Some(Reason::SmokeFailed),
                    format!("healed containers fail smoke: {}", smoke_detail(&sm)),
                )
            }
        }
    };
    let status = if outcome == Outcome::Healed {
        "success"
    } else {
        "failed"
    };
    let version = obs
        .meta
        .as_ref()
        .map(|m| m.version.clone())
        .unwrap_or_default();
    ctx.history(
        &s.name,
        s.environment(),
        "deploy",
        &version,
        status,
        &format!("heal: {why}; {message}"),
    );
    if outcome == Outcome::Healed {
        ctx.emit(Event::Deployed {
            stack: s.name.clone(),
            environment: s.environment().into(),
            version: version.clone(),
        });
    } else {
        ctx.emit(Event::DeployFailed {
            stack: s.name.clone(),
            environment: s.environment().into(),
            version: version.clone(),
            reason: message.clone(),
        });
    }
    StackResult {
        stack: s.name.clone(),
        outcome,
        reason,
        message,
        version: Some(version),
        release: Some(id),
        stages: st.list,
    }
}

fn smoke_detail(o: &smoke::Outcome) -> String {
    if o.passed {
        format!("passed after {} attempt(s)", o.attempts)
    } else {
        format!(
            "{}: {}",
            o.failed_check.as_deref().unwrap_or("smoke"),
            o.error.as_deref().unwrap_or("failed")
        )
    }
}

fn disk_free_percent(path: &Path) -> Option<u8> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 || s.f_blocks == 0 {
        return None;
    }
    Some(((s.f_bavail as u128 * 100) / s.f_blocks as u128) as u8)
}

async fn deploy(
    ctx: &Context<'_>,
    desired: &DesiredState,
    s: &Stack,
    rendered: Rendered,
    obs: &StackObservation,
    verdict: Option<&Verdict>,
    opts: &SyncOptions,
) -> StackResult {
    let name = s.name.clone();
    let env = s.environment().to_string();
    let mut st = Stages {
        stack: name.clone(),
        list: vec![],
        reporter: ctx.reporter,
    };
    let prev = obs
        .release
        .clone()
        .filter(|id| release::is_complete(&ctx.layout.release_dir(&name, id)));
    let fail = |st: Stages<'_>, reason: Reason, msg: String, release: Option<String>| StackResult {
        stack: name.clone(),
        outcome: Outcome::Failed,
        reason: Some(reason),
        message: msg,
        version: Some(s.version.clone()),
        release,
        stages: st.list,
    };
    let mut notes = Vec::new();
    match verdict {
        Some(Verdict::BreakGlass { reason, .. }) => notes.push(format!("BREAK_GLASS: {reason}")),
        Some(v @ Verdict::Pass { .. }) => notes.push(v.describe()),
        _ => {}
    }
    let _ = opts;

    // 1. preflight
    let t = Instant::now();
    let mut problems = Vec::new();
    std::fs::create_dir_all(ctx.layout.releases_dir(&name)).ok();
    if let Some(pct) = disk_free_percent(&ctx.layout.root)
        && pct < ctx.min_disk_free_percent
    {
        problems.push(format!(
            "only {pct}% disk free on {}, {}% required",
            ctx.layout.root.display(),
            ctx.min_disk_free_percent
        ));
    }
    for net in s.compose.external_networks() {
        match ctx.engine.network_exists(&net).await {
            Ok(true) => {}
            Ok(false) => problems.push(format!(
                "external network `{net}` does not exist (create it: docker network create {net})"
            )),
            Err(e) => problems.push(format!("cannot check network `{net}`: {e}")),
        }
    }
    st.record("preflight", t, problems.is_empty(), problems.join("; "));
    if !problems.is_empty() {
        let msg = format!("preflight failed: {}", problems.join("; "));
        ctx.deploy_failed(&name, &env, &s.version, &msg);
        return fail(st, Reason::PreflightFailed, msg, prev);
    }

    // 1b. backup (SPEC §3 step 2): a failure blocks the deploy unless
    // `backup.required: false`; a first deploy has nothing to back up.
    if let Some(b) = &s.spec.backup {
        let t = Instant::now();
        if prev.is_none() {
            st.record(
                "backup",
                t,
                true,
                "skipped: first deploy, nothing to back up",
            );
        } else {
            match crate::backup::run(ctx, s, "pre-deploy").await {
                Ok(r) => st.record("backup", t, true, r.summary()),
                Err(e) if b.required == Some(false) => {
                    st.record("backup", t, false, format!("{e} (not required: deploying)"));
                    notes.push(format!("backup failed (not required): {e}"));
                }
                Err(e) => {
                    st.record("backup", t, false, e.clone());
                    let msg = format!("backup failed: {e}");
                    ctx.deploy_failed(&name, &env, &s.version, &msg);
                    return fail(st, Reason::BackupFailed, msg, prev);
                }
            }
        }
    }

    // 2. release-create (+ compose config check on the written release)
    let t = Instant::now();
    let rdir = ctx.layout.releases_dir(&name);
    let id = release::new_release_id(&s.version, chrono::Utc::now(), |id| rdir.join(id).exists());
    let meta = ReleaseMeta {
        stack: name.clone(),
        release_id: id.clone(),
        version: s.version.clone(),
        environment: env.clone(),
        fingerprint: rendered.fingerprint.clone(),
        commit: desired.commit.clone(),
        images: s
            .pins
            .iter()
            .map(|(k, v)| (k.clone(), v.pinned().unwrap_or_default()))
            .collect(),
        compose_files: rendered.compose_files.clone(),
        created_at: now_rfc3339(),
    };
    let dir = match release::create(&ctx.layout, &name, &rendered, &meta) {
        Ok(d) => d,
        Err(e) => {
            st.record("release", t, false, e.to_string());
            let msg = format!("release-create failed: {e}");
            ctx.deploy_failed(&name, &env, &s.version, &msg);
            return fail(st, Reason::PreflightFailed, msg, prev);
        }
    };
    fault::point("after-create");
    if let Err(e) = ctx
        .engine
        .config_check(&dir, &name, &rendered.compose_files)
        .await
    {
        st.record("release", t, false, e.to_string());
        let msg = format!("compose config rejected the release: {e}");
        ctx.deploy_failed(&name, &env, &s.version, &msg);
        let _ = crate::fsutil::remove_tree(&dir);
        return fail(st, Reason::PreflightFailed, msg, prev);
    }
    st.record("release", t, true, id.clone());

    // 3. pull by digest (host untouched on failure)
    let t = Instant::now();
    for (svc, pin) in &s.pins {
        let reporter = ctx.reporter;
        let n = name.clone();
        let mut progress = |line: &str| reporter.pull_progress(&n, line);
        if let Err(e) = ctx.engine.pull(pin, &mut progress).await {
            st.record("pull", t, false, format!("{svc}: {e}"));
            let msg = format!("pull failed: {svc}: {e}");
            ctx.deploy_failed(&name, &env, &s.version, &msg);
            let _ = crate::fsutil::remove_tree(&dir);
            return fail(st, Reason::PullFailed, msg, prev);
        }
    }
    st.record("pull", t, true, format!("{} image(s)", s.pins.len()));
    fault::point("after-pull");

    // 4. journal, switch
    let mut journal = Journal {
        format: JOURNAL_FORMAT,
        stack: name.clone(),
        op: "deploy".into(),
        from: prev.clone(),
        to: id.clone(),
        fingerprint: rendered.fingerprint.clone(),
        phase: Phase::Switching,
        started_at: now_rfc3339(),
    };
    let t = Instant::now();
    if let Err(e) = ctx.store.write_journal(&journal) {
        st.record("switch", t, false, e.to_string());
        return fail(
            st,
            Reason::PreflightFailed,
            format!("journal cannot be written: {e}"),
            prev,
        );
    }
    fault::point("after-journal");
    if let Err(e) = release::switch(&ctx.layout, &name, &id) {
        st.record("switch", t, false, e.to_string());
        let _ = ctx.store.clear_journal(&name);
        let msg = format!("switch failed: {e}");
        ctx.deploy_failed(&name, &env, &s.version, &msg);
        return fail(st, Reason::PreflightFailed, msg, prev);
    }
    journal.phase = Phase::Verifying;
    let _ = ctx.store.write_journal(&journal);
    st.record(
        "switch",
        t,
        true,
        format!("{} → {id}", prev.as_deref().unwrap_or("(none)")),
    );
    fault::point("after-switch");

    // 5. up, 6. smoke
    let (ok, why) = up_and_smoke(ctx, &name, &dir, &rendered.compose_files, &mut st).await;
    fault::point("after-smoke");
    if ok {
        record_success(
            ctx,
            desired,
            s,
            &id,
            &rendered,
            // Protected from retention even when damaged (incomplete): it
            // is what ran before, and nothing is deleted that a person may
            // want to inspect.
            obs.release.as_deref(),
            &notes.join("; "),
        );
        fault::point("after-record");
        let _ = ctx.store.clear_journal(&name);
        return StackResult {
            stack: name.clone(),
            outcome: Outcome::Deployed,
            reason: None,
            message: format!("deployed {}", s.version),
            version: Some(s.version.clone()),
            release: Some(id),
            stages: st.list,
        };
    }

    // 7. failure. When the engine itself is gone (restarted, crashed), the
    // release is not at fault: no quarantine, and the journal stays so that
    // the next run, once the engine answers, reverts and retries.
    if ctx.engine.ping().await.is_err() {
        let msg = format!(
            "{why}; the Docker engine does not answer: the converge is finished or reverted when it does"
        );
        ctx.deploy_failed(&name, &env, &s.version, &msg);
        return StackResult {
            stack: name.clone(),
            outcome: Outcome::Failed,
            reason: Some(Reason::EngineUnavailable),
            message: msg,
            version: Some(s.version.clone()),
            release: Some(id),
            stages: st.list,
        };
    }
    // The release failed: revert to the previous one, quarantine the fingerprint.
    let q = Quarantine {
        fingerprint: rendered.fingerprint.clone(),
        release_id: id.clone(),
        version: s.version.clone(),
        reason: why.clone(),
        at: now_rfc3339(),
    };
    let _ = ctx.store.set_quarantine(&name, &q);
    ctx.emit(Event::Quarantined {
        stack: name.clone(),
        environment: env.clone(),
        version: s.version.clone(),
        fingerprint: rendered.fingerprint.clone(),
    });
    ctx.history(
        &name,
        &env,
        "deploy",
        &s.version,
        "failed",
        &join_notes(&why, &notes),
    );
    journal.phase = Phase::Reverting;
    let _ = ctx.store.write_journal(&journal);
    let res = revert(ctx, &name, &env, prev.as_deref(), &id, &why, &mut st).await;
    let _ = ctx.store.clear_journal(&name);
    StackResult {
        stack: name.clone(),
        version: Some(s.version.clone()),
        stages: st.list,
        ..res
    }
}

fn join_notes(a: &str, extra: &[String]) -> String {
    std::iter::once(a.to_string())
        .chain(extra.iter().cloned())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `compose up` then smoke. Returns (passed, why not).
pub(crate) async fn up_and_smoke(
    ctx: &Context<'_>,
    name: &str,
    dir: &Path,
    files: &[String],
    st: &mut Stages<'_>,
) -> (bool, String) {
    let t = Instant::now();
    let up = ctx.engine.up(dir, name, files).await;
    st.record(
        "up",
        t,
        up.is_ok(),
        up.as_ref().err().map(|e| e.to_string()).unwrap_or_default(),
    );
    fault::point(if st.list.iter().any(|s| s.name == "revert") {
        "revert-after-up"
    } else {
        "after-up"
    });
    if let Err(e) = up {
        return (
            false,
            format!("compose up failed: {}", first_line(&e.to_string())),
        );
    }
    let spec = read_smoke(dir);
    let t = Instant::now();
    let sm = smoke::run(
        ctx.engine,
        name,
        &spec.services,
        &spec.checks,
        Duration::from_secs(spec.timeout_secs),
    )
    .await;
    st.record("smoke", t, sm.passed, smoke_detail(&sm));
    if sm.passed {
        (true, String::new())
    } else {
        (false, format!("smoke failed: {}", smoke_detail(&sm)))
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(300).collect()
}

/// Switches back to `prev` (if any), brings it up and smokes it; with no
/// previous release the failed one is stopped and the link removed.
pub(crate) async fn revert(
    ctx: &Context<'_>,
    name: &str,
    env: &str,
    prev: Option<&str>,
    failed_id: &str,
    why: &str,
    st: &mut Stages<'_>,
) -> StackResult {
    let t = Instant::now();
    let failed_dir = ctx.layout.release_dir(name, failed_id);
    let Some(prev) = prev else {
        let files = release_meta(&failed_dir)
            .map(|m| m.compose_files)
            .unwrap_or_default();
        let down = ctx.engine.down(&failed_dir, name, &files).await;
        let _ = release::unlink(&ctx.layout, name);
        st.record(
            "revert",
            t,
            down.is_ok(),
            "first deploy failed: stopped, no previous release",
        );
        let note = format!("{why}; first deploy left stopped");
        return revert_failed(
            ctx,
            name,
            env,
            failed_id,
            "-",
            &note,
            Reason::SmokeFailed,
            None,
        );
    };
    if let Err(e) = release::switch(&ctx.layout, name, prev) {
        st.record("revert", t, false, e.to_string());
        let note = format!("{why}; switch back failed: {e}");
        return revert_failed(
            ctx,
            name,
            env,
            failed_id,
            prev,
            &note,
            Reason::RevertFailed,
            Some(failed_id.into()),
        );
    }
    st.record("revert", t, true, format!("{failed_id} → {prev}"));
    fault::point("revert-after-switch");
    let dir = ctx.layout.release_dir(name, prev);
    let meta = release_meta(&dir);
    let files = meta
        .as_ref()
        .map(|m| m.compose_files.clone())
        .unwrap_or_default();
    let version = meta
        .as_ref()
        .map(|m| m.version.clone())
        .unwrap_or_else(|| prev.to_string());
    let (ok, why2) = up_and_smoke(ctx, name, &dir, &files, st).await;
    let (status, outcome, reason, msg) = if ok {
        (
            Outcome::RolledBack,
            "success",
            Reason::RolledBack,
            format!("{why}; rolled back to {version}"),
        )
    } else {
        (
            Outcome::Failed,
            "failed",
            Reason::RevertFailed,
            format!("{why}; the previous release {version} also fails: {why2}"),
        )
    };
    ctx.history(
        name,
        env,
        "rollback",
        &version,
        outcome,
        &format!("{why} (release {failed_id})"),
    );
    if status == Outcome::RolledBack {
        ctx.emit(Event::RolledBack {
            stack: name.into(),
            environment: env.into(),
            failed_version: failed_version(ctx, name, failed_id),
            version: version.clone(),
            reason: why.to_string(),
        });
    } else {
        ctx.emit(Event::DeployFailed {
            stack: name.into(),
            environment: env.into(),
            version: failed_version(ctx, name, failed_id),
            reason: format!("{why}; the previous release {version} also fails: {why2}"),
        });
    }
    StackResult {
        stack: name.into(),
        outcome: status,
        reason: Some(reason),
        message: msg,
        version: Some(version),
        release: Some(prev.into()),
        stages: vec![],
    }
}

/// A revert that could not bring the previous release back: history
/// `rollback … | failed`, a DeployFailed event, and the failed result.
#[allow(clippy::too_many_arguments)]
fn revert_failed(
    ctx: &Context<'_>,
    name: &str,
    env: &str,
    failed_id: &str,
    history_version: &str,
    note: &str,
    reason: Reason,
    release: Option<String>,
) -> StackResult {
    ctx.history(name, env, "rollback", history_version, "failed", note);
    ctx.emit(Event::DeployFailed {
        stack: name.into(),
        environment: env.into(),
        version: failed_version(ctx, name, failed_id),
        reason: note.to_string(),
    });
    StackResult {
        stack: name.into(),
        outcome: Outcome::Failed,
        reason: Some(reason),
        message: note.to_string(),
        version: None,
        release,
        stages: vec![],
    }
}

/// The version of a release, for messages (its id when unreadable).
fn failed_version(ctx: &Context<'_>, stack: &str, id: &str) -> String {
    release_meta(&ctx.layout.release_dir(stack, id))
        .map(|m| m.version)
        .unwrap_or_else(|| id.to_string())
}

pub(crate) fn release_meta(dir: &Path) -> Option<ReleaseMeta> {
    serde_json::from_slice(&std::fs::read(dir.join("release.json")).ok()?).ok()
}

fn record_success(
    ctx: &Context<'_>,
    desired: &DesiredState,
    s: &Stack,
    id: &str,
    rendered: &Rendered,
    prev: Option<&str>,
    notes: &str,
) {
    let name = &s.name;
    let rec = CurrentRecord {
        stack: name.clone(),
        release_id: id.into(),
        version: s.version.clone(),
        environment: s.environment().into(),
        commit: desired.commit.clone(),
        images: s
            .pins
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    ImageRecord {
                        pinned: v.pinned().unwrap_or_default(),
                        digest: v.digest.clone().unwrap_or_default(),
                    },
                )
            })
            .collect(),
        fingerprint: rendered.fingerprint.clone(),
        deployed_at: now_rfc3339(),
        actor: ctx.actor.clone(),
    };
    if let Err(e) = release::write_current(&ctx.layout, name, &rec) {
        tracing::error!(stack = %name, "failed to write current record: {e}");
    }
    let _ = ctx.store.clear_quarantine(name);
    ctx.history(
        name,
        s.environment(),
        "deploy",
        &s.version,
        "success",
        notes,
    );
    if let Some(reason) = notes.strip_prefix("BREAK_GLASS: ") {
        ctx.emit(Event::BreakGlass {
            stack: name.clone(),
            environment: s.environment().into(),
            version: s.version.clone(),
            reason: reason.split("; ").next().unwrap_or(reason).to_string(),
        });
    }
    ctx.emit(Event::Deployed {
        stack: name.clone(),
        environment: s.environment().into(),
        version: s.version.clone(),
    });
    if s.spec.marks_verified {
        mark_verified(ctx, s, desired.commit.as_deref());
    }
    let mut protect: Vec<String> = vec![id.to_string()];
    protect.extend(prev.map(str::to_string));
    if let Ok(v) = std::fs::read_to_string(ctx.layout.verified_txt(name)) {
        let v = v.trim();
        if let Ok(list) = release::list(&ctx.layout, name)
            && let Some(r) = list
                .iter()
                .rev()
                .find(|r| r.meta.as_ref().is_some_and(|m| m.version == v))
        {
            protect.push(r.id.clone());
        }
    }
    let protect_refs: Vec<&str> = protect.iter().map(String::as_str).collect();
    match release::retain(&ctx.layout, name, s.keep_releases as usize, &protect_refs) {
        Ok(removed) if !removed.is_empty() => {
            tracing::info!(stack = %name, removed = ?removed, "retention removed old releases")
        }
        Err(e) => tracing::warn!(stack = %name, "retention failed: {e}"),
        _ => {}
    }
}

/// Appends this release to the host's verified store and writes the one-line
/// `verified/<stack>.txt` of the runbooks. Publishing the entry to git (when
/// configured) happens off the converge path: see [`crate::publish`].
pub fn mark_verified(ctx: &Context<'_>, s: &Stack, commit: Option<&str>) {
    let images = s
        .pins
        .iter()
        .map(|(k, v)| (k.clone(), v.pinned().unwrap_or_default()))
        .collect();
    record_verified(&ctx.layout, &ctx.host, &s.name, &s.version, images, commit);
}

/// Records `version` with `images` (service -> pinned ref, as in a release's
/// `release.json`) as verified on this host: appends an entry to
/// `releases/verified/<stack>.yaml` unless one with the same version and
/// images is there, and writes `verified/<stack>.txt`. Returns the entry and
/// whether it was added.
///
/// # Guarantees
/// Idempotent for the same version and images; the store is replaced
/// atomically. Failures are logged, never returned: a verified marker must not
/// fail the deploy that earned it.
pub fn record_verified(
    layout: &Layout,
    host: &str,
    stack: &str,
    version: &str,
    images: BTreeMap<String, String>,
    commit: Option<&str>,
) -> (VerifiedEntry, bool) {
    let mut list = read_verified_store(layout, stack);
    let entry = VerifiedEntry {
        version: version.to_string(),
        images,
        verified_at: now_rfc3339(),
        host: host.to_string(),
        commit: commit.unwrap_or("").to_string(),
    };
    let existing = list
        .iter()
        .find(|e| e.images == entry.images && e.version == entry.version)
        .cloned();
    let added = existing.is_none();
    if added {
        list.push(entry.clone());
    }
    let file = VerifiedFile { verified: list };
    match serde_saphyr::to_string(&file) {
        Ok(text) => {
            if let Err(e) =
                crate::fsutil::write_atomic(&layout.verified_store(stack), text.as_bytes(), 0o644)
            {
                tracing::error!(stack, "failed to write the verified store: {e}");
            }
        }
        Err(e) => tracing::error!(stack, "failed to serialize the verified store: {e}"),
    }
    if let Err(e) = release::write_verified_txt(layout, stack, version) {
        tracing::error!(stack, "failed to write verified marker: {e}");
    }
    (existing.unwrap_or(entry), added)
}

/// Finishes or reverts every interrupted converge found in the journals.
///
/// # Guarantees
/// Idempotent: running it twice is harmless. A journal that cannot be read is
/// reported and left in place for a person, never guessed at.
pub async fn recover(ctx: &Context<'_>) -> Vec<StackResult> {
    let mut out = Vec::new();
    for name in ctx.store.journaled_stacks() {
        let Ok(_lock) = ctx.store.lock(&name) else {
            continue;
        };
        let j = match ctx.store.journal(&name) {
            Ok(Some(j)) => j,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(stack = %name, "{e}; leaving it for an operator (remove it once the stack is checked)");
                out.push(StackResult {
                    stack: name.clone(),
                    outcome: Outcome::Failed,
                    reason: Some(Reason::Interrupted),
                    message: e,
                    version: None,
                    release: None,
                    stages: vec![],
                });
                continue;
            }
        };
        out.push(recover_one(ctx, &j).await);
        let _ = ctx.store.clear_journal(&name);
    }
    out
}

async fn recover_one(ctx: &Context<'_>, j: &Journal) -> StackResult {
    let name = &j.stack;
    let mut st = Stages {
        stack: name.clone(),
        list: vec![],
        reporter: ctx.reporter,
    };
    let to_dir = ctx.layout.release_dir(name, &j.to);
    let env = release_meta(&to_dir)
        .map(|m| m.environment)
        .unwrap_or_else(|| "default".into());
    tracing::warn!(stack = %name, phase = ?j.phase, from = ?j.from, to = %j.to, "recovering an interrupted {}", j.op);
    let why = format!("interrupted {} to {} recovered", j.op, j.to);
    match &j.from {
        // A manual rollback that got as far as its hold had completed (the
        // hold is written last, after current.json and history).
        Some(_)
            if j.op == "rollback"
                && ctx
                    .store
                    .hold(name)
                    .ok()
                    .flatten()
                    .and_then(|h| h.release_id)
                    == Some(j.to.clone())
                && release::current(&ctx.layout, name).ok().flatten() == Some(j.to.clone()) =>
        {
            StackResult {
                stack: name.clone(),
                outcome: Outcome::Recovered,
                reason: None,
                message: format!("interrupted rollback to {} had completed", j.to),
                version: None,
                release: Some(j.to.clone()),
                stages: st.list,
            }
        }
        Some(prev) => {
            let mut r = revert(ctx, name, &env, Some(prev), &j.to, &why, &mut st).await;
            if r.outcome == Outcome::RolledBack {
                r.outcome = Outcome::Recovered;
            }
            StackResult {
                stages: st.list,
                ..r
            }
        }
        None => {
            // First deploy: finish it if it passes, else stop it.
            let current = release::current(&ctx.layout, name).ok().flatten();
            if current.as_deref() != Some(j.to.as_str()) {
                return StackResult {
                    stack: name.clone(),
                    outcome: Outcome::Recovered,
                    reason: Some(Reason::Interrupted),
                    message: "interrupted before the switch; nothing ran".into(),
                    version: None,
                    release: None,
                    stages: st.list,
                };
            }
            let files = release_meta(&to_dir)
                .map(|m| m.compose_files)
                .unwrap_or_default();
            let (ok, why2) = up_and_smoke(ctx, name, &to_dir, &files, &mut st).await;
            if ok {
                if let Some(m) = release_meta(&to_dir) {
                    let rec = current_from_meta(&m, &ctx.actor);
                    let _ = release::write_current(&ctx.layout, name, &rec);
                    ctx.history(name, &env, "deploy", &m.version, "success", &why);
                    ctx.emit(Event::Recovered {
                        stack: name.clone(),
                        environment: env.clone(),
                        version: m.version.clone(),
                        note: why.clone(),
                    });
                }
                StackResult {
                    stack: name.clone(),
                    outcome: Outcome::Recovered,
                    reason: None,
                    message: why,
                    version: None,
                    release: Some(j.to.clone()),
                    stages: st.list,
                }
            } else {
                let q = Quarantine {
                    fingerprint: j.fingerprint.clone(),
                    release_id: j.to.clone(),
                    version: String::new(),
                    reason: why2.clone(),
                    at: now_rfc3339(),
                };
                let _ = ctx.store.set_quarantine(name, &q);
                let mut r = revert(ctx, name, &env, None, &j.to, &why2, &mut st).await;
                r.stages = st.list;
                r
            }
        }
    }
}

/// The `current/<stack>.json` record of a release that now runs, from its
/// `release.json` (recovery and manual rollback; a deploy has the stack).
pub(crate) fn current_from_meta(m: &ReleaseMeta, actor: &str) -> CurrentRecord {
    CurrentRecord {
        stack: m.stack.clone(),
        release_id: m.release_id.clone(),
        version: m.version.clone(),
        environment: m.environment.clone(),
        commit: m.commit.clone(),
        images: m
            .images
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    ImageRecord {
                        pinned: v.clone(),
                        digest: v
                            .split_once('@')
                            .map(|x| x.1.to_string())
                            .unwrap_or_default(),
                    },
                )
            })
            .collect(),
        fingerprint: m.fingerprint.clone(),
        deployed_at: now_rfc3339(),
        actor: actor.to_string(),
    }
}

fn env_of(ctx: &Context<'_>, stack: &str) -> (String, String) {
    match release::read_current(&ctx.layout, stack).ok().flatten() {
        Some(c) => (c.environment, c.version),
        None => ("-".into(), "-".into()),
    }
}

/// Holds a stack: syncs skip it until [`resume_stack`]. Idempotent; records
/// `hold` in history.
pub fn hold_stack(
    ctx: &Context<'_>,
    stack: &str,
    reason: &str,
    release_id: Option<String>,
) -> std::io::Result<String> {
    let _lock = ctx.store.lock(stack)?;
    hold_locked(ctx, stack, reason, release_id)
}

/// [`hold_stack`] for a caller that already holds the stack's lock.
pub(crate) fn hold_locked(
    ctx: &Context<'_>,
    stack: &str,
    reason: &str,
    release_id: Option<String>,
) -> std::io::Result<String> {
    ctx.store.set_hold(
        stack,
        &Hold {
            reason: reason.into(),
            at: now_rfc3339(),
            release_id,
        },
    )?;
    let (env, version) = env_of(ctx, stack);
    ctx.history(stack, &env, "hold", &version, "success", reason);
    Ok(format!(
        "{stack} is held: {reason}; `stackpin resume {stack}` lets git win again"
    ))
}

/// Lifts a hold. Records `resume` in history when there was one.
pub fn resume_stack(ctx: &Context<'_>, stack: &str) -> std::io::Result<String> {
    let _lock = ctx.store.lock(stack)?;
    if ctx.store.hold(stack).ok().flatten().is_none() {
        return Ok(format!("{stack} is not held"));
    }
    ctx.store.clear_hold(stack)?;
    let (env, version) = env_of(ctx, stack);
    ctx.history(stack, &env, "resume", &version, "success", "");
    Ok(format!(
        "{stack} resumed: the next sync converges it to git"
    ))
}
