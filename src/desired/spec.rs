//! The typed files of a desired-state repository: `stackpin.yaml`,
//! `stacks/<stack>/stack.yaml` and `verified/<stack>.yaml`. Every struct denies
//! unknown keys: a typo must be an error, not a silently ignored setting.

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// `stackpin.yaml` at the repository root (optional).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    #[serde(default)]
    pub defaults: Defaults,
    /// Remove stacks from a host when they disappear from the repository.
    /// Off by default: a missing stack is then only reported.
    #[serde(default)]
    pub prune: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub keep_releases: Option<u32>,
    pub smoke_timeout: Option<String>,
}

/// `stacks/<stack>/stack.yaml`, SPEC §1.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StackSpec {
    pub environment: Option<String>,
    pub version: Option<String>,
    pub compose: Option<String>,
    /// service -> pinned image reference, in authoring order.
    #[serde(default)]
    pub images: IndexMap<String, String>,
    #[serde(default, deserialize_with = "scalar_map")]
    pub env: IndexMap<String, String>,
    #[serde(default)]
    pub env_files: Vec<String>,
    /// Compose profiles this stack runs: a service with `profiles:` runs
    /// only when one of its profiles is listed here.
    #[serde(default)]
    pub profiles: Vec<String>,
    /// Files of the stack directory encrypted with age to the hosts'
    /// recipients (`app.env.age`, `config/db.ini.age`): each is decrypted
    /// into the release without its `.age` (mode 0600); a `*.env` one's
    /// variables also go into the release's `.env`.
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub marks_verified: bool,
    pub promote_from: Option<PromoteFrom>,
    pub break_glass: Option<BreakGlass>,
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    pub keep_releases: Option<u32>,
    pub smoke: Option<Smoke>,
    pub backup: Option<Backup>,
    pub update: Option<Update>,
    /// What runs the stack: `compose` (the default) or `swarm` (`docker
    /// stack deploy` on a Swarm manager; see `desired::swarm`).
    #[serde(default, skip_serializing_if = "StackEngine::is_compose")]
    pub engine: StackEngine,
}

/// `engine:` in `stack.yaml`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StackEngine {
    /// `docker compose up` on this host's engine.
    #[default]
    Compose,
    /// `docker stack deploy` on this host, a Swarm manager: the tasks run
    /// on the swarm's nodes.
    Swarm,
}

impl StackEngine {
    pub fn is_swarm(self) -> bool {
        self == StackEngine::Swarm
    }

    pub fn is_compose(&self) -> bool {
        *self == StackEngine::Compose
    }

    /// As `engine:` spells it.
    pub fn name(self) -> &'static str {
        match self {
            StackEngine::Compose => "compose",
            StackEngine::Swarm => "swarm",
        }
    }
}

/// `update:` how a changed service is replaced (names as in compose's
/// `deploy.update_config`, which compose ignores outside Swarm):
/// `stop-first` (the default, what `compose up` does) or `start-first` (the
/// new container starts next to the old one and takes the service's name
/// only once it is good).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Update {
    /// The order of every service not listed in `services`.
    pub order: Option<Order>,
    /// How long the old and the new container both serve before the old
    /// one is stopped: the time a proxy needs to see the new address
    /// (default 2s; nginx with `resolver … valid=1s` needs 1s).
    pub drain: Option<String>,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceUpdate>,
    /// Commands run in a service's running container after `up` replaced
    /// containers it routes to (and, during a start-first replacement, as
    /// soon as the new container has the service's name): for a router that
    /// resolves its upstreams once, such as nginx with an `upstream` block,
    /// `{service: router, command: [nginx, -s, reload]}`.
    #[serde(default)]
    pub reload: Vec<ExecCheck>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServiceUpdate {
    pub order: Option<Order>,
    /// Named volumes the old and the new container of a start-first
    /// service may both write for a moment (a filestore, not a database):
    /// said once here, they are not warned about.
    #[serde(default)]
    pub shared_volumes: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    StopFirst,
    StartFirst,
}

/// `promote_from: <stack>` (same service names) or
/// `promote_from: {stack: <stack>, services: {<ours>: <theirs>}, soak: 30m}`:
/// a service named in `services` must run the digest the source verified for
/// the service it maps to; every other service, its own name's. With
/// `soak`, an entry counts only once the source host stamped it soaked
/// (`soaked_at`) at least `soak` after it was verified (see `crate::soak`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromoteFrom {
    pub stack: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "soak_text"
    )]
    pub soak: Option<std::time::Duration>,
}

fn soak_text<S: serde::Serializer>(
    d: &Option<std::time::Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        None => s.serialize_none(),
    }
}

impl PromoteFrom {
    pub fn stack(stack: &str) -> PromoteFrom {
        PromoteFrom {
            stack: stack.to_string(),
            services: BTreeMap::new(),
            soak: None,
        }
    }

    /// This gate with the longer of its soak and `other`'s, when `other`
    /// promotes from the same stack: a commit may lengthen the host's soak,
    /// never shorten it.
    pub fn lengthened_by(&self, other: Option<&PromoteFrom>) -> PromoteFrom {
        let mut out = self.clone();
        if let Some(o) = other.filter(|o| o.stack == self.stack) {
            out.soak = out.soak.max(o.soak);
        }
        out
    }

    /// The source's service whose verified digest `service` must run.
    pub fn source_service<'a>(&'a self, service: &'a str) -> &'a str {
        self.services
            .get(service)
            .map(String::as_str)
            .unwrap_or(service)
    }
}

impl<'de> Deserialize<'de> for PromoteFrom {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Long {
            stack: String,
            #[serde(default)]
            services: BTreeMap<String, String>,
            #[serde(default)]
            soak: Option<String>,
        }
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(PromoteFrom::stack(&s)),
            v @ serde_json::Value::Object(_) => {
                let l: Long = serde_json::from_value(v).map_err(|e| {
                    D::Error::custom(format!(
                        "promote_from: {e}; write `promote_from: STACK` or `promote_from: {{stack: STACK, services: {{OURS: THEIRS}}, soak: 30m}}`"
                    ))
                })?;
                let soak = match l.soak.as_deref() {
                    None => None,
                    Some(t) => Some(humantime::parse_duration(t).map_err(|e| {
                        D::Error::custom(format!(
                            "promote_from.soak: {t:?} is not a duration ({e}); write it as `30m`, `2h` or `1d`"
                        ))
                    })?),
                };
                Ok(PromoteFrom {
                    stack: l.stack,
                    services: l.services,
                    soak,
                })
            }
            other => Err(D::Error::custom(format!(
                "promote_from must be a stack name or {{stack, services}}, not {other}"
            ))),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BreakGlass {
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Smoke {
    pub timeout: Option<String>,
    #[serde(default)]
    pub checks: Vec<Check>,
}

/// One smoke check; written as a one-key mapping (`- http: {...}`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Check {
    Containers(ContainersCheck),
    Http(HttpCheck),
    Tcp(TcpCheck),
    Exec(ExecCheck),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ContainersCheck {}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    /// The URL to get; or, instead, `service` + `port` (+ `path`): the
    /// service's container directly, at its address on the project's
    /// network, so that during a start-first replacement the new container
    /// itself is checked, not whatever answers in front of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default = "default_status")]
    pub expect_status: u16,
    pub host: Option<String>,
    pub contains: Option<String>,
}

impl HttpCheck {
    /// The URL to get, given the address of the service's container when
    /// the check names a service.
    pub fn url_for(&self, container_ip: Option<&str>) -> Option<String> {
        if let Some(u) = &self.url {
            return Some(u.clone());
        }
        let ip = container_ip?;
        Some(format!(
            "http://{ip}:{}{}",
            self.port?,
            self.path.as_deref().unwrap_or("/")
        ))
    }
}

fn default_status() -> u16 {
    200
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TcpCheck {
    pub address: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExecCheck {
    pub service: String,
    pub command: Vec<String>,
}

impl Check {
    /// A short name for messages and history: `http http://127.0.0.1:8069/…`.
    pub fn label(&self) -> String {
        match self {
            Check::Containers(_) => "containers".into(),
            Check::Http(h) => match (&h.url, &h.service) {
                (Some(u), _) => format!("http {u}"),
                (None, Some(svc)) => format!(
                    "http {svc}:{}{}",
                    h.port.unwrap_or(0),
                    h.path.as_deref().unwrap_or("/")
                ),
                (None, None) => "http".into(),
            },
            Check::Tcp(t) => format!("tcp {}", t.address),
            Check::Exec(e) => format!("exec {}: {}", e.service, e.command.join(" ")),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    #[serde(default)]
    pub postgres: Vec<PostgresBackup>,
    /// Named volumes of the compose file (their keys under `volumes:`)
    /// archived as tar with every backup: data that is not in a database,
    /// such as an Odoo filestore.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Which backups retention keeps (default: the 10 newest).
    pub keep: Option<Keep>,
    /// A failed backup blocks the deploy unless this is `false`.
    pub required: Option<bool>,
}

/// `backup.keep`: a count (`keep: 10`, the newest ten) or a policy
/// (`keep: {daily: 7, weekly: 4}`, as restic's `--keep-daily` and
/// `--keep-weekly`: the newest backup of each of the last 7 days that have
/// one, and of each of the last 4 ISO weeks; `last` and `monthly` too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Keep {
    Count(u32),
    Policy(KeepPolicy),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeepPolicy {
    #[serde(default)]
    pub last: u32,
    #[serde(default)]
    pub daily: u32,
    #[serde(default)]
    pub weekly: u32,
    #[serde(default)]
    pub monthly: u32,
}

impl<'de> Deserialize<'de> for Keep {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Keep, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u32),
            Map(std::collections::BTreeMap<String, u32>),
        }
        let raw = Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a count (`keep: 10`) or a policy such as `keep: {daily: 7, weekly: 4}` (keys last, daily, weekly, monthly; whole numbers)",
            )
        })?;
        match raw {
            Raw::Count(n) => Ok(Keep::Count(n)),
            Raw::Map(m) => {
                let mut p = KeepPolicy::default();
                for (k, v) in m {
                    match k.as_str() {
                        "last" => p.last = v,
                        "daily" => p.daily = v,
                        "weekly" => p.weekly = v,
                        "monthly" => p.monthly = v,
                        other => {
                            return Err(serde::de::Error::custom(format!(
                                "unknown key `{other}`: a policy keeps `last`, `daily`, `weekly` and `monthly` backups"
                            )));
                        }
                    }
                }
                Ok(Keep::Policy(p))
            }
        }
    }
}

/// One PostgreSQL source: `pg_dump -Fc` run inside `container` through the
/// engine's exec API (as `user`), or the host's `pg_dump` against the
/// connection URL held in the host-local secret file `url_file`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresBackup {
    pub container: Option<String>,
    pub user: Option<String>,
    pub url_file: Option<String>,
    pub databases: Vec<String>,
}

/// `verified/<stack>.yaml`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerifiedFile {
    #[serde(default)]
    pub verified: Vec<VerifiedEntry>,
}

/// One verified release of a stack: these exact pins passed smoke.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VerifiedEntry {
    pub version: String,
    /// service -> pinned reference (`repo@sha256:…`).
    pub images: BTreeMap<String, String>,
    pub verified_at: String,
    pub host: String,
    pub commit: String,
    /// When the verifying host confirmed the release had run there since
    /// `verified_at` with no failed smoke, heal, revert or container
    /// restart (RFC 3339); absent until it soaked. A soaked entry is
    /// appended next to the first one, never written over it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soaked_at: Option<String>,
    /// The verifying host's SSH signature (namespace `stackpin-verified`)
    /// over [`VerifiedEntry::signed_bytes`]; entries without one count
    /// only on the host that recorded them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// The namespace of verified-marker signatures.
pub const VERIFIED_NAMESPACE: &str = "stackpin-verified";

impl VerifiedEntry {
    /// The canonical bytes a marker signature covers: one compact JSON
    /// object, keys in this fixed order (stack, version, images sorted by
    /// service, verified_at, host, commit, then soaked_at when the entry
    /// has it): an entry without `soaked_at` signs exactly what entries
    /// signed before the field existed.
    pub fn signed_bytes(&self, stack: &str) -> Vec<u8> {
        let mut v = serde_json::json!({
            "stack": stack,
            "version": self.version,
            "images": self.images,
            "verified_at": self.verified_at,
            "host": self.host,
            "commit": self.commit,
        });
        if let Some(t) = &self.soaked_at {
            v["soaked_at"] = serde_json::Value::String(t.clone());
        }
        serde_json::to_vec(&v).expect("a JSON value always serializes")
    }
}

/// `quarantined/<stack>.yaml`: releases that failed on the host that
/// published them, so that `pin` and bump automation stop proposing their
/// digests.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantinedFile {
    #[serde(default)]
    pub quarantined: Vec<QuarantinedEntry>,
}

/// One release that failed (smoke, up) on `host` and was quarantined there.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QuarantinedEntry {
    pub version: String,
    /// service -> pinned reference (`repo@sha256:…`).
    pub images: BTreeMap<String, String>,
    /// Why it failed, as the host's history says.
    pub reason: String,
    pub quarantined_at: String,
    pub host: String,
    pub commit: String,
    /// The host's SSH signature (namespace `stackpin-quarantined`) over
    /// [`QuarantinedEntry::signed_bytes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// The namespace of quarantined-entry signatures.
pub const QUARANTINED_NAMESPACE: &str = "stackpin-quarantined";

impl QuarantinedEntry {
    /// The canonical bytes its signature covers: one compact JSON object,
    /// keys in this fixed order (stack, version, images sorted by service,
    /// reason, quarantined_at, host, commit).
    pub fn signed_bytes(&self, stack: &str) -> Vec<u8> {
        let v = serde_json::json!({
            "stack": stack,
            "version": self.version,
            "images": self.images,
            "reason": self.reason,
            "quarantined_at": self.quarantined_at,
            "host": self.host,
            "commit": self.commit,
        });
        serde_json::to_vec(&v).expect("a JSON value always serializes")
    }
}

/// `env:` values may be written as numbers or booleans in YAML; they all end
/// up as strings in `.env`.
fn scalar_map<'de, D: Deserializer<'de>>(d: D) -> Result<IndexMap<String, String>, D::Error> {
    use serde::de::Error;
    let raw: IndexMap<String, serde_json::Value> = IndexMap::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| {
            let s = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => {
                    return Err(D::Error::custom(format!(
                        "env.{k} must be a string, number or boolean, not {other}"
                    )));
                }
            };
            Ok((k, s))
        })
        .collect()
}
