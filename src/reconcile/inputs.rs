//! The one place that assembles what the pure plan needs — the desired
//! releases rendered with this host's secret files, what the host runs, this
//! host's records and the signature verdicts — for `sync`, `plan`, `status`
//! and the daemon alike, so that they cannot disagree.

use crate::desired::{DesiredState, Stack};
use crate::host::Host;
use crate::observed::{self, StackObservation};
use crate::plan::{self, LocalRecord, ObservedStack, Plan};
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
    Release(#[from] release::Error),
}

/// Renders a stack's release from the desired state and this host's secret
/// files, with its smoke spec inside (a revert smokes a release with its own
/// checks, and the checks are part of the fingerprint).
///
/// # Errors
/// A missing or unreadable env file (named), or what [`release::render`]
/// refuses.
pub fn render(stack: &Stack, commit: Option<&str>) -> Result<Rendered, RenderError> {
    let mut secrets = Vec::new();
    for f in &stack.spec.env_files {
        let bytes = std::fs::read(f).map_err(|source| RenderError::EnvFile {
            path: f.clone(),
            source,
        })?;
        secrets.push((f.clone(), bytes));
    }
    let mut with_smoke = stack.clone();
    let spec =
        serde_json::to_vec_pretty(&smoke::Spec::of(stack)).expect("a smoke spec always serializes");
    with_smoke.files.insert(smoke::SPEC_FILE.into(), spec);
    Ok(release::render(&with_smoke, &secrets, commit)?)
}

/// The options of one plan beyond the inputs.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Retry quarantined fingerprints and redeploy even when nothing changed.
    pub force: bool,
    /// A one-run break-glass reason from the operator.
    pub break_glass: Option<String>,
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
    /// environment -> `untrusted commit <sha>: <why>`.
    pub untrusted: BTreeMap<String, String>,
}

impl PlanInputs {
    /// Gathers the inputs of `names` (every stack of `desired` and of this
    /// host when empty). Reads files and lists containers; changes nothing.
    /// An engine that does not answer leaves the containers unobserved and
    /// says so in each observation's problems.
    pub async fn gather(host: &Host<'_>, desired: &DesiredState, names: &[String]) -> PlanInputs {
        let untrusted = super::untrusted_environments(host.trust, desired);
        PlanInputs::gather_with(host, desired, names, untrusted).await
    }

    /// [`PlanInputs::gather`] with the signature verdicts already known (a
    /// run checks the commit once, then gathers stack by stack).
    pub async fn gather_with(
        host: &Host<'_>,
        desired: &DesiredState,
        names: &[String],
        untrusted: BTreeMap<String, String>,
    ) -> PlanInputs {
        let names = if names.is_empty() {
            all_names(host, desired)
        } else {
            names.to_vec()
        };
        let mut inputs = PlanInputs {
            untrusted,
            ..Default::default()
        };
        for name in &names {
            if let Some(s) = desired.stacks.get(name) {
                let r = render(s, desired.commit.as_deref());
                if let Ok(r) = &r {
                    host.engine.add_secrets(&r.secret_values);
                }
                inputs.rendered.insert(name.clone(), r);
            }
            let obs = observed::observe(&host.layout, host.engine, name).await;
            inputs.observed.insert(name.clone(), obs);
            let sources = std::iter::once(name.as_str()).chain(
                desired
                    .stacks
                    .get(name)
                    .and_then(|s| s.spec.promote_from.as_deref()),
            );
            for n in sources {
                if !inputs.local.contains_key(n) {
                    inputs.local.insert(n.to_string(), local_record(host, n));
                }
            }
        }
        inputs.names = names;
        inputs
    }

    /// The plan of the gathered stacks. Pure.
    pub fn plan(&self, host_name: &str, desired: &DesiredState, opts: &PlanOptions) -> Plan {
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
                host: host_name,
                force: opts.force,
                prune: opts.prune.unwrap_or(desired.repo.prune),
                break_glass: opts.break_glass.as_deref(),
                only: &self.names,
                untrusted: Some(&self.untrusted),
            },
        );
        for item in &mut p.items {
            if let Some(Err(e)) = self.rendered.get(&item.stack) {
                item.reason = format!("{}; {e}", item.reason);
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
pub fn all_names_of(layout: &release::Layout, desired: &DesiredState) -> Vec<String> {
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
