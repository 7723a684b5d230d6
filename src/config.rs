//! Configuration: flags > environment > `/etc/stackpin/config.yaml` >
//! defaults (SPEC §6). Unknown keys are errors; `*_file` keys name files that
//! hold secrets, which are read when needed and never printed.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cause is part of the message (not a `source`), so that a report
    /// of the whole chain names it once.
    #[error("failed to read config {}: {why}", path.display())]
    Read { path: PathBuf, why: std::io::Error },
    #[error("invalid config:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub host: Option<String>,
    /// What this host is (`{role: edge, region: tyo}`): stacks select hosts
    /// by `key=value` in `hosts:`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub root: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub repo: Option<RepoConfig>,
    pub http: Option<HttpConfig>,
    pub control_socket: Option<PathBuf>,
    /// Group that may use the control socket (mode 0660).
    pub control_socket_group: Option<String>,
    pub compose: Option<String>,
    pub concurrency: Option<usize>,
    /// Minimum free space on the root's filesystem, in percent (default 20).
    pub min_disk_free_percent: Option<u8>,
    pub notify: Option<NotifyConfig>,
    /// Removed: it looked policies up by the `environment:` of the commit
    /// being judged. Kept only to refuse it with the way out.
    #[serde(default, skip_serializing)]
    pub trust: Option<serde_json::Value>,
    /// Named sets of keys: who may sign commits, approve break-glass, or
    /// sign verified markers (see `policy`).
    #[serde(default)]
    pub signers: BTreeMap<String, TrustConfig>,
    /// What this host enforces, by stack name or glob (see `crate::policy`).
    #[serde(default)]
    pub policy: Vec<PolicyRule>,
    /// Source stack (name or glob) -> the signer set whose signatures on
    /// `verified/<source>.yaml` entries this host accepts.
    #[serde(default)]
    pub verifiers: BTreeMap<String, String>,
    /// Host powers (privileged, the Docker socket, writable host binds, …)
    /// this host lets named stacks use; every other stack asking for one is
    /// refused. See `crate::desired::powers::KINDS`.
    #[serde(default)]
    pub allow: Vec<AllowRule>,
    /// Directories `env_files:` may name files in (default
    /// `[/etc/stackpin/secrets]`).
    pub secret_dirs: Option<Vec<PathBuf>>,
    pub verified: Option<VerifiedConfig>,
    /// A Docker `config.json` with the registry credentials pulls use
    /// (`auths`, `credHelpers`, `credsStore`); default: the Docker CLI's own
    /// (`$DOCKER_CONFIG/config.json`, `~/.docker/config.json`).
    pub registry_auth_file: Option<PathBuf>,
    /// This host's age identities (an `age-keygen` file): they decrypt the
    /// stacks' `secrets:`. Read when a release is rendered, never printed.
    pub age_identity_file: Option<PathBuf>,
    /// Commit statuses on the desired-state repository after each converge
    /// (`stackpin/<host>/<stack>`; see `crate::commit_status`).
    pub github_status: Option<GithubStatusConfig>,
    /// Production pull requests this host opens once a release of `from`
    /// is verified and soaked here (see `crate::propose`).
    #[serde(default)]
    pub propose: Vec<ProposeConfig>,
}

/// One `propose:` entry: promote `from` (a stack this host verifies) to
/// `to` by a pull request on `repository`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProposeConfig {
    pub from: String,
    pub to: String,
    /// `github` (GitHub's REST API; GitHub Enterprise with `api_url`).
    pub forge: String,
    /// The desired-state repository on the forge, `owner/name`.
    pub repository: String,
    /// A token allowed to open and update pull requests there.
    pub token_file: PathBuf,
    /// Default `https://api.github.com`.
    pub api_url: Option<String>,
    /// The branch the proposal is pushed to (default
    /// `stackpin/promote/<to>`); stackpin owns it and force-pushes it.
    pub branch: Option<String>,
}

/// `github_status:` where the host reports what it made of each commit.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GithubStatusConfig {
    /// The desired-state repository on GitHub, `owner/name`.
    pub repo: String,
    /// A token allowed to write commit statuses there.
    pub token_file: PathBuf,
    /// Default `https://api.github.com`; GitHub Enterprise:
    /// `https://HOST/api/v3`.
    pub api_url: Option<String>,
    /// The link each status carries (this host's status page).
    pub target_url: Option<String>,
}

/// Lets `stacks` use `powers` on this host, for `reason`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    pub stacks: Vec<String>,
    pub powers: Vec<String>,
    pub reason: String,
}

/// One rule of the host's policy: the stacks it covers and what they need.
/// Every rule that matches a stack applies (the strictest wins).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// Stack names, `*` and `?` wildcards: `odoo18-production`, `*-prod`, `*`.
    pub stacks: Vec<String>,
    /// The signer set every commit touching these stacks must be signed by.
    pub signed_by: Option<String>,
    /// The promotion gate these stacks must pass, whatever the commit says.
    pub promote_from: Option<crate::desired::spec::PromoteFrom>,
    /// The signer set whose signed commit may carry `break_glass:`
    /// (default `signed_by`; without either, git's break_glass is ignored).
    pub break_glass_by: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub url: Option<String>,
    pub branch: Option<String>,
    pub path: Option<String>,
    pub ssh_key_file: Option<PathBuf>,
    pub known_hosts_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub poll_interval: Option<String>,
    /// Watch a local repository path for changes (default true).
    pub watch: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: Option<String>,
    pub github_secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    pub slack_url_file: Option<PathBuf>,
    pub webhook_url_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    pub allowed_signers: Option<PathBuf>,
    #[serde(default)]
    pub openpgp_keys: Vec<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerifiedConfig {
    /// Commit and push this host's verified entries to `verified/<stack>.yaml`
    /// in the desired-state repository (see `crate::publish`).
    #[serde(default)]
    pub publish: bool,
    /// Author and committer of those commits, `Name <email>`; default
    /// `stackpin <stackpin@HOST>`.
    pub author: Option<String>,
    /// Branch to push to; default the tracked branch (`repo.branch`).
    pub branch: Option<String>,
    /// This host's OpenSSH private key (ed25519, unencrypted): every entry
    /// it records is signed with it (namespace `stackpin-verified`), so a
    /// host that lists the public key in `verifiers:` can trust it.
    pub signing_key: Option<PathBuf>,
    /// How long a release this host verified must run here clean (no
    /// failed smoke, heal, revert or container restart) before the host
    /// stamps its entry soaked (`30m`, `2h`); the desired state's
    /// `promote_from.soak` may ask longer. Unset: only those.
    pub soak: Option<String>,
}

impl Config {
    /// This host's labels, as pairs.
    pub fn labels(&self) -> Vec<(String, String)> {
        self.file
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// The effective settings a command runs with.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub host: String,
    pub root: PathBuf,
    pub state_dir: PathBuf,
    /// Desired-state repository: URL or local path.
    pub repo: Option<String>,
    pub branch: Option<String>,
    /// Path of the desired state inside the repository.
    pub repo_path: String,
    pub compose: String,
    pub min_disk_free_percent: u8,
    /// The daemon's control socket (CLI actions go through it when it answers).
    pub control_socket: PathBuf,
    /// The config file read (or the default path, which may not exist).
    pub config_file: Option<PathBuf>,
    pub file: FileConfig,
}

/// Reads the config file. A missing file is fine when it is the default path
/// (every command runs without one); a missing file named explicitly is an
/// error, and so is any unknown key.
pub fn load_file(path: &Path, explicit: bool) -> Result<FileConfig, Error> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(FileConfig::default());
        }
        Err(source) => {
            return Err(Error::Read {
                path: path.to_path_buf(),
                why: source,
            });
        }
    };
    let mut findings = Vec::new();
    let mut sink = crate::desired::Sink::new(None, path.display().to_string(), &mut findings);
    let parsed: Result<FileConfig, _> = crate::desired::parse_typed(&bytes, &mut sink);
    match parsed {
        Ok(c) if c.trust.is_some() => Err(Error::Invalid(vec![format!(
            "{}: trust: is no longer read: it chose the signature policy by the `environment:` of the very commit being checked; name key sets under `signers:` and say which stacks need them under `policy: [{{stacks: [...], signed_by: SET}}]`",
            path.display()
        )])),
        Ok(c) => match c
            .labels
            .iter()
            .find(|(k, v)| k.trim().is_empty() || k.contains('=') || v.trim().is_empty())
        {
            Some((k, v)) => Err(Error::Invalid(vec![format!(
                "{}: labels: `{k}: {v}` cannot be matched: a label needs a key without `=` and a value (stacks select it with `hosts: [\"key=value\"]`)",
                path.display()
            )])),
            None => Ok(c),
        },
        Err(_) => Err(Error::Invalid(
            findings.iter().map(|f| f.to_string()).collect(),
        )),
    }
}

/// The machine's host name, for `hosts:` matching when none is configured.
pub fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
