//! The one place that assembles what the pure plan needs — the desired
//! releases rendered with this host's secret files, what the host runs, this
//! host's records and the signature verdicts — for `sync`, `plan`, `status`
//! and the daemon alike, so that they cannot disagree.

use crate::desired::spec::VERIFIED_NAMESPACE;
use crate::desired::{DesiredState, Stack};
use crate::host::Host;
use crate::observed::{self, StackObservation};
use crate::plan::{self, Gate, LocalRecord, ObservedStack, Plan};
use crate::release::{self, Rendered};
use crate::smoke;
use std::collections::{BTreeMap, BTreeSet};

/// Why a stack's release could not be rendered on this host.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(
        "env file {path} cannot be read: {source} (create it on this host; secrets are never in git)"
    )]
    EnvFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Secret(#[from] crate::secrets::Error),
    #[error("{0}")]
    Release(#[from] release::Error),
}

/// Renders a stack's release from the desired state, this host's secret
/// files and its secrets, decrypted by `secrets` (the host's
/// [`crate::secrets::Decryptor`]), with its smoke spec inside (a revert smokes a
/// release with its own checks, and the checks are part of the
/// fingerprint).
///
/// # Errors
/// A missing or unreadable env file (named), a secret that does not
/// decrypt, or what [`release::render`] refuses.
pub fn render(
    stack: &Stack,
    commit: Option<&str>,
    secrets: &dyn crate::secrets::Decryptor,
) -> Result<Rendered, RenderError> {
    render_as(stack, commit, secrets, false).map(|(r, _)| r)
}

/// [`render`], reusing the last render of the stack kept in `cache` while
/// the stack (its content key in the tree) and every host-local file the
/// render reads (env files, the secrets' keys) are what they were
/// ([`release::cache`]): a no-op pass reads and hashes nothing then. A
/// stack read from a work tree (no key) is rendered every time.
///
/// # Errors
/// As [`render`].
pub fn render_reusing(
    cache: &release::cache::Cache,
    stack: &Stack,
    commit: Option<&str>,
    secrets: &dyn crate::secrets::Decryptor,
) -> Result<Rendered, RenderError> {
    // The files' identities before they are read: a file that changes
    // while it is read is keyed as it was, so it is read again next time.
    let key = stack.key.as_deref().and_then(|k| {
        let files = stack
            .spec
            .env_files
            .iter()
            .map(std::path::PathBuf::from)
            .chain(secrets.inputs(stack));
        release::cache::Key::of(k, files)
    });
    if let Some(key) = &key
        && let Some(r) = cache.get(&stack.name, key, commit)
    {
        return Ok(r);
    }
    let r = render(stack, commit, secrets)?;
    if let Some(key) = key {
        cache.put(&stack.name, key, &r);
    }
    Ok(r)
}

/// [`render`] for a preview where host-local files may be absent (`plan`
/// on an approver's machine): an env file that does not exist here counts
/// as empty, and is returned as missing; so do the secrets when this
/// machine has no age identity. Anything else fails as in [`render`]. The
/// result is for showing, never for deploying.
///
/// # Errors
/// As [`render`], but for env files that do not exist.
pub fn render_preview(
    stack: &Stack,
    commit: Option<&str>,
    secrets: &dyn crate::secrets::Decryptor,
) -> Result<(Rendered, Vec<String>), RenderError> {
    render_as(stack, commit, secrets, true)
}

fn render_as(
    stack: &Stack,
    commit: Option<&str>,
    secrets: &dyn crate::secrets::Decryptor,
    preview: bool,
) -> Result<(Rendered, Vec<String>), RenderError> {
    let mut missing = Vec::new();
    let decrypted = match secrets.decrypt_stack(stack) {
        Err(crate::secrets::Error::NoIdentity { .. }) if preview => {
            for f in &stack.spec.secrets {
                missing.push(format!(
                    "an age identity for stacks/{}/{f} (no age_identity_file)",
                    stack.name
                ));
            }
            stack
                .spec
                .secrets
                .iter()
                .map(|f| (crate::desired::secret_target(f).to_string(), Vec::new()))
                .collect()
        }
        r => r?,
    };
    let mut env_files = Vec::new();
    for f in &stack.spec.env_files {
        let bytes = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) if preview && e.kind() == std::io::ErrorKind::NotFound => {
                missing.push(f.clone());
                Vec::new()
            }
            Err(source) => {
                return Err(RenderError::EnvFile {
                    path: f.clone(),
                    source,
                });
            }
        };
        env_files.push((f.clone(), bytes));
    }
    let mut with_smoke = stack.clone();
    let spec =
        serde_json::to_vec_pretty(&smoke::Spec::of(stack)).expect("a smoke spec always serializes");
    with_smoke.files.insert(smoke::SPEC_FILE.into(), spec);
    let host = release::Secrets {
        env_files,
        decrypted,
    };
    Ok((release::render(&with_smoke, &host, commit)?, missing))
}

/// What `plan` and a dry run say of a host-local file this machine lacks:
/// one text for both views.
pub fn missing_here_line(path: &str) -> String {
    format!(
        "missing here (host-local): {path} — shown as if empty; a sync on this machine stops until it exists"
    )
}

/// The options of one plan beyond the inputs.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Retry quarantined fingerprints and redeploy even when nothing changed.
    pub force: bool,
    /// A one-run break-glass reason from the operator.
    pub break_glass: Option<String>,
    /// The operator who accepts a rewritten history for the stacks of this
    /// run (`sync STACK --accept-rewrite`).
    pub accept_rewrite: Option<String>,
    /// Remove stacks that left the desired state; `None`: what
    /// `stackpin.yaml` says (`prune:`).
    pub prune: Option<bool>,
}

/// Everything the plan of some stacks needs, read from the host.
#[derive(Debug, Default)]
pub struct PlanInputs {
    /// The stacks gathered, in converge order.
    pub names: Vec<String>,
    pub rendered: BTreeMap<String, Result<Rendered, RenderError>>,
    pub observed: BTreeMap<String, StackObservation>,
    pub local: BTreeMap<String, LocalRecord>,
    /// Each stack's judged policy (see [`judge`]).
    pub gates: BTreeMap<String, Gate>,
    /// stack -> the files of the release it runs (relative path -> bytes),
    /// read for the services' "file … changed" reasons.
    pub current_files: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// A preview's stacks rendered without host-local files that this
    /// machine lacks: stack -> the missing paths (see [`render_preview`]).
    pub missing_here: BTreeMap<String, Vec<String>>,
}

impl PlanInputs {
    /// Gathers the inputs of `names` (every stack of `desired` and of this
    /// host when empty). Reads files and lists containers; changes nothing.
    /// An engine that does not answer leaves the containers unobserved and
    /// says so in each observation's problems.
    pub async fn gather(host: &Host<'_>, desired: &DesiredState, names: &[String]) -> PlanInputs {
        let gates = judge(host, desired);
        PlanInputs::gather_with(host, desired, names, gates).await
    }

    /// [`PlanInputs::gather`] for showing what would change where the
    /// host-local files may be absent (`plan` on an approver's machine):
    /// a missing env file renders as empty and is listed in
    /// [`PlanInputs::missing_here`], so the diff and the gate verdict are
    /// still there. Never used to deploy.
    pub async fn gather_preview(
        host: &Host<'_>,
        desired: &DesiredState,
        names: &[String],
    ) -> PlanInputs {
        let gates = judge(host, desired);
        PlanInputs::gather_inner(host, desired, names, gates, true).await
    }

    /// [`PlanInputs::gather`] with the policy already judged (a run judges
    /// the commit once, then gathers stack by stack).
    pub async fn gather_with(
        host: &Host<'_>,
        desired: &DesiredState,
        names: &[String],
        gates: BTreeMap<String, Gate>,
    ) -> PlanInputs {
        PlanInputs::gather_inner(host, desired, names, gates, false).await
    }

    /// The one gathering: `preview` as [`PlanInputs::gather_preview`]
    /// (a dry run previews too: one verdict with `plan`).
    pub(super) async fn gather_inner(
        host: &Host<'_>,
        desired: &DesiredState,
        names: &[String],
        gates: BTreeMap<String, Gate>,
        preview: bool,
    ) -> PlanInputs {
        let names = if names.is_empty() {
            all_names(host, desired)
        } else {
            names.to_vec()
        };
        let mut inputs = PlanInputs {
            gates,
            ..Default::default()
        };
        for name in &names {
            if let Some(s) = desired.stacks.get(name) {
                let r = if preview {
                    render_preview(s, desired.commit.as_deref(), host.secrets).map(
                        |(r, missing)| {
                            if !missing.is_empty() {
                                inputs.missing_here.insert(name.clone(), missing);
                            }
                            r
                        },
                    )
                } else {
                    render_reusing(host.renders, s, desired.commit.as_deref(), host.secrets)
                };
                if let Ok(r) = &r {
                    host.engine.add_secrets(&r.secret_values);
                }
                inputs.rendered.insert(name.clone(), r);
            }
            let obs = observed::observe(&host.layout, host.engine, name).await;
            // Only when the release changes: a no-op run reads no tree.
            let changes = match (inputs.rendered.get(name), &obs.meta) {
                (Some(Ok(r)), Some(m)) => r.fingerprint != m.fingerprint,
                _ => false,
            };
            if let Some(id) = obs.release.as_ref().filter(|_| changes) {
                let dir = host.layout.release_dir(name, id);
                inputs
                    .current_files
                    .insert(name.clone(), release::read_tree(&dir));
            }
            inputs.observed.insert(name.clone(), obs);
            let source = inputs
                .gates
                .get(name)
                .and_then(|g| g.promote.as_ref())
                .map(|p| p.stack.clone());
            let sources = std::iter::once(name.clone()).chain(source);
            for n in sources {
                if let std::collections::btree_map::Entry::Vacant(v) = inputs.local.entry(n) {
                    let rec = local_record(host, v.key());
                    v.insert(rec);
                }
            }
        }
        inputs.names = names;
        inputs
    }

    /// The plan of the gathered stacks. Pure.
    pub fn plan(&self, host: &Host<'_>, desired: &DesiredState, opts: &PlanOptions) -> Plan {
        let fingerprints: BTreeMap<String, String> = self
            .rendered
            .iter()
            .filter_map(|(k, r)| Some((k.clone(), r.as_ref().ok()?.fingerprint.clone())))
            .collect();
        let observed: BTreeMap<String, ObservedStack> = self
            .observed
            .iter()
            .map(|(k, o)| (k.clone(), o.for_plan()))
            .collect();
        let mut p = plan::plan(
            desired,
            &fingerprints,
            &observed,
            &self.local,
            &plan::Options {
                host: &host.name,
                labels: &host.labels,
                force: opts.force,
                prune: opts.prune.unwrap_or(desired.repo.prune),
                break_glass: opts.break_glass.as_deref(),
                only: &self.names,
                gates: Some(&self.gates),
                accept_rewrite: opts.accept_rewrite.as_deref(),
            },
        );
        for item in &mut p.items {
            let not_here = item.action.not_for_this_host();
            match self.rendered.get(&item.stack) {
                // Not this host's stack: its files are not this host's
                // business.
                Some(Err(_)) if not_here => {}
                Some(Err(e)) => item.reason = format!("{}; {e}", item.reason),
                Some(Ok(r)) if item.action == plan::Action::Deploy => {
                    if let (Some(s), Some(o)) = (
                        desired.stacks.get(&item.stack),
                        self.observed.get(&item.stack),
                    ) {
                        item.services = service_changes(s, r, o, &self.current_files);
                    }
                }
                _ => {}
            }
        }
        p
    }
}

/// Every stack of the desired state (valid or not) and of this host, in
/// converge order.
pub fn all_names(host: &Host<'_>, desired: &DesiredState) -> Vec<String> {
    all_names_of(&host.layout, desired)
}

/// [`all_names`] from the host's layout alone.
pub fn all_names_of(layout: &crate::layout::Layout, desired: &DesiredState) -> Vec<String> {
    let mut seen = BTreeSet::new();
    desired
        .order()
        .into_iter()
        .chain(desired.invalid.iter().cloned())
        .chain(observed::stacks_on_host(layout))
        .filter(|n| seen.insert(n.clone()))
        .collect()
}

/// This host's records about one stack: quarantine, hold, verified entries.
/// A record that cannot be read is not read as absent: an unreadable hold
/// holds, an unreadable quarantine quarantines nothing new but is named in
/// `problems`.
pub fn local_record(host: &Host<'_>, stack: &str) -> LocalRecord {
    let mut problems = Vec::new();
    let quarantined = match host.store.quarantine(stack) {
        Ok(q) => q.map(|q| q.fingerprint),
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    let held = match host.store.hold(stack) {
        Ok(h) => h.map(|h| h.reason),
        Err(e) => Some(format!("{e}; held until it is fixed")),
    };
    let verified = match crate::verified::read(&host.layout, stack) {
        Ok(v) => v,
        Err(e) => {
            problems.push(e.to_string());
            Vec::new()
        }
    };
    for p in &problems {
        tracing::warn!(stack, "{p}");
    }
    LocalRecord {
        quarantined,
        held,
        verified,
    }
}

/// Judges every stack of the desired state and of this host against the
/// host's policy: the gate that applies, whether the commit and its history
/// are trusted for the stack, whether git's `break_glass:` may count, and
/// which of the source's git markers carry a trusted verifier's signature.
/// Reads the git repository and this host's records; changes nothing.
pub fn judge(host: &Host<'_>, desired: &DesiredState) -> BTreeMap<String, Gate> {
    let repo = desired
        .repo_path
        .as_ref()
        .and_then(|p| git2::Repository::open(p).ok());
    let now = chrono::Utc::now();
    let mut out = BTreeMap::new();
    for name in all_names(host, desired) {
        let eff = host.policy.effective(&name);
        let stack = desired.stacks.get(&name);
        let mut gate = match stack {
            Some(s) => Gate::of_commit(s),
            None => Gate::default(),
        };
        if let Some(p) = &eff.promote_from {
            let commit = stack.and_then(|s| s.spec.promote_from.as_ref());
            if commit.is_some_and(|c| c.stack != p.stack || c.services != p.services) {
                tracing::warn!(
                    stack = name,
                    "promote_from in stack.yaml differs from the host's policy: the host's applies"
                );
            }
            // The commit may lengthen the host's soak, never shorten it.
            gate.promote = Some(p.lengthened_by(commit));
            gate.host_gated = true;
        }
        if let Some(s) = stack {
            gate.refused = host.policy.refusals(s);
        }
        let sets = host.policy.sets(&eff.signed_by);
        if !sets.is_empty() {
            gate.untrusted = signed_history(host, desired, repo.as_ref(), &name, &sets, now).err();
        }
        gate.protected = !sets.is_empty() || eff.promote_from.is_some();
        gate.rewrite = rewrite(host, desired, repo.as_ref(), &name);
        if gate.rewrite.is_some() {
            // `break_glass_by` defaults to `signed_by`: only a commit that
            // declares break-glass accepts a rewrite by its signature.
            let approvers = host.policy.sets(&eff.break_glass_by);
            gate.rewrite_signed = stack.is_some_and(|s| s.break_glass_reason().is_some())
                && !approvers.is_empty()
                && match (&repo, &desired.commit) {
                    (Some(r), Some(c)) => approvers
                        .iter()
                        .all(|(_, p)| crate::trust::verify_commit(r, c, p, now).is_trusted()),
                    _ => false,
                };
        }
        if gate.host_gated {
            let approvers = host.policy.sets(&eff.break_glass_by);
            gate.git_break_glass = !approvers.is_empty()
                && match (&repo, &desired.commit) {
                    (Some(r), Some(c)) => approvers
                        .iter()
                        .all(|(_, p)| crate::trust::verify_commit(r, c, p, now).is_trusted()),
                    _ => false,
                };
        }
        if let Some(p) = &gate.promote {
            let (good, ignored) = trusted_markers(host.policy, desired, &p.stack, now);
            gate.git_entries = good;
            gate.ignored = ignored;
        }
        out.insert(name, gate);
    }
    out
}

/// Whether the desired commit rewrites the history the stack deployed
/// from: it does not descend from the stack's deployed commit, or that
/// commit is no longer in the repository. `None` without a deployed commit
/// or a git desired state.
fn rewrite(
    host: &Host<'_>,
    desired: &DesiredState,
    repo: Option<&git2::Repository>,
    name: &str,
) -> Option<String> {
    let (repo, tip) = (repo?, desired.commit.as_deref()?);
    let base = release::read_current(&host.layout, name)
        .ok()
        .flatten()?
        .commit?;
    let short = |s: &str| s[..12.min(s.len())].to_string();
    let oid = |s: &str| {
        repo.revparse_single(s)
            .and_then(|o| o.peel_to_commit())
            .map(|c| c.id())
    };
    let tip_oid = oid(tip).ok()?;
    let Ok(base_oid) = oid(&base) else {
        return Some(format!(
            "the commit {} this stack last deployed is no longer in the repository (its history was rewritten); the desired commit is {}",
            short(&base),
            short(tip)
        ));
    };
    if tip_oid == base_oid || repo.graph_descendant_of(tip_oid, base_oid).unwrap_or(false) {
        return None;
    }
    Some(format!(
        "the desired commit {} does not descend from {}, the commit this stack last deployed (the branch was reset or force-pushed)",
        short(tip),
        short(&base)
    ))
}

/// The desired commit and every commit since the stack's deployed one that
/// changes its directory are signed by every set in `sets`.
fn signed_history(
    host: &Host<'_>,
    desired: &DesiredState,
    repo: Option<&git2::Repository>,
    name: &str,
    sets: &[(&str, &crate::trust::Policy)],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), String> {
    let (Some(repo), Some(tip)) = (repo, desired.commit.as_deref()) else {
        return Err(
            "the desired state is not a git commit, so its signature cannot be checked".into(),
        );
    };
    let base = release::read_current(&host.layout, name)
        .ok()
        .flatten()
        .and_then(|c| c.commit);
    let path = if desired.base.is_empty() {
        format!("stacks/{name}")
    } else {
        format!("{}/stacks/{name}", desired.base)
    };
    // stackpin.yaml sets every stack's defaults (and `prune`): a change to
    // it is a change to the stack.
    let defaults = if desired.base.is_empty() {
        "stackpin.yaml".to_string()
    } else {
        format!("{}/stackpin.yaml", desired.base)
    };
    crate::trust::history::check(repo, tip, base.as_deref(), &[&path, &defaults], sets, now)
}

/// The entries of `verified/<source>.yaml` that a verifier this host trusts
/// for `source` signed, and why each other entry does not count.
/// The entries of `verified/<source>.yaml` signed by the signer set the
/// host's `verifiers:` names for `source`, and why each other one is
/// ignored. Also what `validate --gate` checks a PR with.
pub fn trusted_markers(
    policy: &crate::policy::HostPolicy,
    desired: &DesiredState,
    source: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> (Vec<crate::desired::spec::VerifiedEntry>, Vec<String>) {
    let Some(entries) = desired.verified.get(source).filter(|e| !e.is_empty()) else {
        return (Vec::new(), Vec::new());
    };
    let Some((set, keys)) = policy.verifiers_of(source) else {
        return (
            Vec::new(),
            vec![format!(
                "{} entr{} of verified/{source}.yaml (no verifiers for {source} in this host's config: add `verifiers: {{{source}: SIGNER_SET}}`)",
                entries.len(),
                if entries.len() == 1 { "y" } else { "ies" }
            )],
        );
    };
    let mut good = Vec::new();
    let mut ignored = Vec::new();
    for e in entries {
        let why = match &e.signature {
            None => "unsigned".to_string(),
            Some(sig) => {
                match crate::trust::verify_ssh(
                    keys,
                    sig,
                    &e.signed_bytes(source),
                    VERIFIED_NAMESPACE,
                    now,
                ) {
                    crate::trust::Verdict::Trusted { .. } => {
                        good.push(e.clone());
                        continue;
                    }
                    crate::trust::Verdict::Untrusted { why } => why,
                }
            }
        };
        ignored.push(format!(
            "verified/{source}.yaml entry {} from {}: {why} (signer set `{set}`)",
            e.version, e.host
        ));
    }
    (good, ignored)
}

/// What deploying `rendered` does to each service: kept when its running
/// containers carry the same fingerprint label, created when it has none,
/// else recreated, with why (a new digest, which mounted files changed,
/// else its definition or a variable it uses).
pub fn service_changes(
    stack: &Stack,
    rendered: &Rendered,
    obs: &StackObservation,
    current_files: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
) -> Vec<plan::ServiceChange> {
    let sources = release::service_sources(stack);
    let empty = BTreeMap::new();
    let old_files = current_files.get(&stack.name).unwrap_or(&empty);
    let mut out = Vec::new();
    for (svc, fp) in &rendered.services {
        let ours: Vec<_> = obs
            .containers
            .iter()
            .filter(|c| &c.service == svc)
            .collect();
        let labels: BTreeSet<Option<&String>> = ours
            .iter()
            .map(|c| c.labels.get(release::SERVICE_FINGERPRINT_LABEL))
            .collect();
        let change = |change: &'static str, why: Vec<String>| plan::ServiceChange {
            service: svc.clone(),
            change,
            why,
        };
        if ours.is_empty() {
            out.push(change("create", vec!["no container".into()]));
            continue;
        }
        if labels.len() == 1 && labels.contains(&Some(fp)) {
            out.push(change("keep", Vec::new()));
            continue;
        }
        let mut why = Vec::new();
        if labels.contains(&None) {
            why.push("its container has no fingerprint label yet".to_string());
        }
        let new_pin = stack.pins.get(svc.as_str());
        let old_pin = obs.meta.as_ref().and_then(|m| m.images.get(svc.as_str()));
        if let (Some(n), Some(o)) = (new_pin, old_pin)
            && n.digest != o.digest
        {
            let short = |r: &crate::desired::image::ImageRef| {
                r.digest_hex()
                    .map(|h| h[..12].to_string())
                    .unwrap_or_default()
            };
            why.push(format!("new digest {} -> {}", short(o), short(n)));
        }
        let mine = sources.get(svc.as_str()).cloned().unwrap_or_default();
        let new: BTreeMap<&String, &Vec<u8>> =
            release::files_under(&rendered.files, &mine).collect();
        let old: BTreeMap<&String, &Vec<u8>> = release::files_under(old_files, &mine).collect();
        for path in new.keys().chain(old.keys()).collect::<BTreeSet<_>>() {
            if new.get(path) != old.get(path) {
                why.push(format!("file {path} changed"));
            }
        }
        if why.is_empty() {
            why.push("its compose definition or a variable it uses changed".into());
        }
        // A start-first service is replaced next to its running container.
        if stack.rollout.start_first.iter().any(|s| s == svc) {
            out.push(change("start-first", why));
        } else {
            out.push(change("recreate", why));
        }
    }
    out
}
