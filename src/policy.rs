//! What this host enforces (SPEC §5, the trust model): which stacks need
//! signed commits and from whom, which must pass the promotion gate from
//! which source, whose verified markers count and who may break the glass.
//!
//! All of it comes from the host's config and key files, never from the
//! commit being judged: a commit can add a gate (`promote_from:` in
//! `stack.yaml` still applies when the host names none) but cannot remove,
//! rename or open one the host names. [`HostPolicy::effective`] is pure; the
//! files are read once by [`HostPolicy::load`].

use crate::config::{FileConfig, PolicyRule};
use crate::desired::powers;
use crate::desired::spec::PromoteFrom;
use crate::trust::{self, allowed_signers::match_pattern_list};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to load signer set `{name}`: {source}")]
    Signers {
        name: String,
        #[source]
        source: trust::Error,
    },
    #[error(
        "{field} names signer set `{name}`, which is not defined: add it under `signers:` ({known})"
    )]
    UnknownSet {
        field: String,
        name: String,
        known: String,
    },
    #[error("policy[{index}].stacks is empty: list stack names or globs (`*` for every stack)")]
    NoStacks { index: usize },
    #[error("verified.signing_key: {0}")]
    SigningKey(#[source] trust::Error),
    #[error("verified.soak: {value:?} is not a duration ({why}); write it as `30m`, `2h` or `1d`")]
    Soak { value: String, why: String },
    #[error("allow[{index}]: {why}")]
    Allow { index: usize, why: String },
}

/// Where `env_files:` may point when `secret_dirs` is not set.
pub const DEFAULT_SECRET_DIR: &str = "/etc/stackpin/secrets";

/// The host's policy, its key files read.
#[derive(Debug, Default)]
pub struct HostPolicy {
    pub signers: BTreeMap<String, trust::Policy>,
    pub rules: Vec<PolicyRule>,
    /// Source stack pattern -> signer set, in config order.
    pub verifiers: Vec<(String, String)>,
    /// This host's key for signing the verified entries it records.
    pub signing_key: Option<ssh_key::PrivateKey>,
    /// How long a release this host verified runs clean before it stamps
    /// the entry soaked (`verified.soak`; see `crate::soak`).
    pub soak: Option<std::time::Duration>,
    /// Which stacks may use which host powers.
    pub allow: Vec<crate::config::AllowRule>,
    /// Where `env_files:` may point; `None`: anywhere (tests only — a
    /// loaded config always has the default).
    pub secret_dirs: Option<Vec<std::path::PathBuf>>,
    /// The identities that decrypt the stacks' `secrets:` (read at each
    /// render, so a rotated key needs no restart).
    pub age_identity_file: Option<std::path::PathBuf>,
    /// The host's own secrets and trust anchors (path, what it is): no
    /// container may mount or read them, whatever `allow:` says. See
    /// [`protected_paths`].
    pub protected: Vec<(PathBuf, String)>,
}

/// The files and directories no stack may reach on this host, with what
/// each is: its keys, tokens, credentials, trust anchors, config, state
/// and control socket (from the host's config, never from a commit).
pub fn protected_paths(cfg: &crate::config::Config) -> Vec<(PathBuf, String)> {
    let f = &cfg.file;
    let mut out: Vec<(PathBuf, String)> = Vec::new();
    let mut add = |p: Option<&PathBuf>, what: &str| {
        if let Some(p) = p {
            out.push((p.clone(), what.to_string()));
        }
    };
    add(
        f.verified.as_ref().and_then(|v| v.signing_key.as_ref()),
        "the marker signing key",
    );
    add(f.age_identity_file.as_ref(), "the age identity");
    add(
        f.github_status.as_ref().map(|g| &g.token_file),
        "the commit-status token",
    );
    add(f.registry_auth_file.as_ref(), "the registry credentials");
    if f.registry_auth_file.is_none() {
        let docker_config = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
        add(
            docker_config.map(|d| d.join("config.json")).as_ref(),
            "the registry credentials",
        );
    }
    if let Some(r) = &f.repo {
        add(r.ssh_key_file.as_ref(), "the repository's ssh key");
        add(r.token_file.as_ref(), "the repository's token");
    }
    add(
        f.http.as_ref().and_then(|h| h.github_secret_file.as_ref()),
        "the webhook secret",
    );
    if let Some(n) = &f.notify {
        add(n.slack_url_file.as_ref(), "the Slack webhook URL");
        add(n.webhook_url_file.as_ref(), "the notification webhook URL");
    }
    for (name, t) in &f.signers {
        add(t.allowed_signers.as_ref(), &format!("signer set `{name}`"));
        for k in &t.openpgp_keys {
            add(Some(k), &format!("signer set `{name}`"));
        }
    }
    for d in f
        .secret_dirs
        .clone()
        .unwrap_or_else(|| vec![DEFAULT_SECRET_DIR.into()])
    {
        add(Some(&d), "a secret directory of `env_files:`");
    }
    add(cfg.config_file.as_ref(), "the host's config");
    add(Some(&cfg.state_dir), "stackpin's state directory");
    add(Some(&cfg.control_socket), "stackpin's control socket");
    out
}

/// A judgement of a stack's compose model as this host's refusals, each
/// naming `file`, the field, the power and the fix. Pure.
pub fn refusals_of(
    allow: &[crate::config::AllowRule],
    stack: &str,
    file: &str,
    j: &powers::Judgement,
) -> Vec<String> {
    let mut out = Vec::new();
    for (field, why) in &j.forbidden {
        out.push(format!("{file}: {field}: {why}"));
    }
    for field in &j.unknown {
        out.push(format!(
            "{file}: {field}: stackpin has not classified this key, so it cannot tell what it gives the container on the host; remove it (or ask for it to be classified)"
        ));
    }
    for p in &j.powers {
        let granted = allow
            .iter()
            .any(|a| match_pattern_list(stack, &a.stacks) && a.powers.contains(&p.kind));
        if !granted {
            out.push(format!(
                "{file}: {}: {} (power `{}`; if this stack needs it, allow it in this host's config: `allow: [{{stacks: [{stack}], powers: [{}], reason: \"…\"}}]`)",
                p.field, p.what, p.kind, p.kind
            ));
        }
    }
    out
}

/// What the host requires of one stack, from every rule that matches it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Effective {
    /// Signer sets every commit touching the stack must verify against (all
    /// of them; empty: no signature needed).
    pub signed_by: Vec<String>,
    /// The gate the host imposes (the first matching rule that names one).
    pub promote_from: Option<PromoteFrom>,
    /// Signer sets whose signed commit may carry `break_glass:` (the
    /// rules' `break_glass_by`, else their `signed_by`).
    pub break_glass_by: Vec<String>,
    /// Indexes of the matching rules in `policy:`.
    pub rules: Vec<usize>,
}

impl Effective {
    /// Whether any rule protects the stack (a signature or a gate).
    pub fn protects(&self) -> bool {
        !self.signed_by.is_empty() || self.promote_from.is_some()
    }
}

impl HostPolicy {
    /// Reads the signer sets' files and the signing key, and checks that
    /// every set named in `policy:` and `verifiers:` exists.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, an undefined set, a rule
    /// without stacks; each names the field or file.
    pub fn load(file: &FileConfig) -> Result<HostPolicy, Error> {
        let mut signers = BTreeMap::new();
        for (name, t) in &file.signers {
            let p = trust::load_policy(t).map_err(|source| Error::Signers {
                name: name.clone(),
                source,
            })?;
            signers.insert(name.clone(), p);
        }
        let known = || {
            if signers.is_empty() {
                "none is".to_string()
            } else {
                format!(
                    "defined: {}",
                    signers.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            }
        };
        let check = |field: String, name: &Option<String>| match name {
            Some(n) if !signers.contains_key(n) => Err(Error::UnknownSet {
                field,
                name: n.clone(),
                known: known(),
            }),
            _ => Ok(()),
        };
        for (i, r) in file.policy.iter().enumerate() {
            if r.stacks.is_empty() {
                return Err(Error::NoStacks { index: i });
            }
            check(format!("policy[{i}].signed_by"), &r.signed_by)?;
            check(format!("policy[{i}].break_glass_by"), &r.break_glass_by)?;
        }
        for (pattern, set) in &file.verifiers {
            check(format!("verifiers.{pattern}"), &Some(set.clone()))?;
        }
        for (i, a) in file.allow.iter().enumerate() {
            let bad = |why: String| Error::Allow { index: i, why };
            if a.stacks.is_empty() {
                return Err(bad(
                    "stacks is empty: name the stacks this applies to".into()
                ));
            }
            if a.reason.trim().is_empty() {
                return Err(bad("reason is empty: say why these stacks need it".into()));
            }
            for p in &a.powers {
                if let Some((_, now)) = powers::RENAMED.iter().find(|(old, _)| old == p) {
                    return Err(bad(format!("power `{p}` was renamed: write {now}")));
                }
                if !powers::is_known(p) {
                    return Err(bad(format!(
                        "unknown power `{p}`; one of: {}, or cap_<capability> (cap_net_admin, cap_sys_admin, cap_all, …)",
                        powers::KINDS.join(", ")
                    )));
                }
            }
        }
        let signing_key = match file.verified.as_ref().and_then(|v| v.signing_key.as_ref()) {
            Some(p) => Some(trust::load_signing_key(p).map_err(Error::SigningKey)?),
            None => None,
        };
        let soak = match file.verified.as_ref().and_then(|v| v.soak.as_deref()) {
            Some(t) => Some(humantime::parse_duration(t).map_err(|e| Error::Soak {
                value: t.to_string(),
                why: e.to_string(),
            })?),
            None => None,
        };
        Ok(HostPolicy {
            signers,
            rules: file.policy.clone(),
            soak,
            verifiers: file
                .verifiers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            signing_key,
            allow: file.allow.clone(),
            secret_dirs: Some(
                file.secret_dirs
                    .clone()
                    .unwrap_or_else(|| vec![DEFAULT_SECRET_DIR.into()]),
            ),
            age_identity_file: file.age_identity_file.clone(),
            protected: Vec::new(),
        })
    }

    /// Why this host refuses to run `stack` as desired: each host power it
    /// asks for that no `allow:` rule grants it, and each `env_files:` entry
    /// outside the secret dirs. Pure. Empty: nothing refused.
    pub fn refusals(&self, stack: &crate::desired::Stack) -> Vec<String> {
        let mut out = Vec::new();
        let compose_file = format!("stacks/{}/{}", stack.name, stack.compose_file);
        let j = powers::of_raw(&stack.compose.value);
        out.extend(refusals_of(&self.allow, &stack.name, &compose_file, &j));
        if let Some(dirs) = &self.secret_dirs {
            for (i, f) in stack.spec.env_files.iter().enumerate() {
                let path = std::path::Path::new(f);
                let inside = path.is_absolute()
                    && !path
                        .components()
                        .any(|c| c == std::path::Component::ParentDir)
                    && dirs.iter().any(|d| path.starts_with(d));
                if !inside {
                    out.push(format!(
                        "stacks/{}/stack.yaml: env_files[{i}]: {f} is outside this host's secret directories ({}); move it there or add its directory to `secret_dirs:`",
                        stack.name,
                        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        out
    }

    /// What the host requires of `stack`. Pure.
    pub fn effective(&self, stack: &str) -> Effective {
        let mut e = Effective::default();
        let push = |list: &mut Vec<String>, v: &str| {
            if !list.iter().any(|x| x == v) {
                list.push(v.to_string());
            }
        };
        for (i, r) in self.rules.iter().enumerate() {
            if !match_pattern_list(stack, &r.stacks) {
                continue;
            }
            e.rules.push(i);
            if let Some(s) = &r.signed_by {
                push(&mut e.signed_by, s);
            }
            if let Some(b) = r.break_glass_by.as_ref().or(r.signed_by.as_ref()) {
                push(&mut e.break_glass_by, b);
            }
            if e.promote_from.is_none() {
                e.promote_from = r.promote_from.clone();
            }
        }
        e
    }

    /// The signer set whose marker signatures count for `source`, if any.
    pub fn verifiers_of(&self, source: &str) -> Option<(&str, &trust::Policy)> {
        self.verifiers
            .iter()
            .find(|(pattern, _)| match_pattern_list(source, std::slice::from_ref(pattern)))
            .and_then(|(_, set)| Some((set.as_str(), self.signers.get(set)?)))
    }

    /// The loaded signer sets named `names` (each exists: checked at load).
    pub fn sets<'a>(&'a self, names: &'a [String]) -> Vec<(&'a str, &'a trust::Policy)> {
        names
            .iter()
            .filter_map(|n| Some((n.as_str(), self.signers.get(n)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests;
