//! Where the daemon gets desired state from: a git repository (https, ssh,
//! `file://` or a local path) fetched into a persistent bare mirror under the
//! state dir, one branch at a time. Desired state is always read from a
//! commit of the mirror, never from a work tree, so nobody can edit files
//! under a running sync, and the last good commit stays readable when the
//! remote is unreachable, force-pushed or corrupt.
//!
//! Errors are sorted as the daemon's retry loop needs them:
//! [`Error::is_transient`] says whether to retry with [`Backoff`], and every
//! message has its URL stripped of credentials.

mod backoff;
pub mod credentials;
mod git;

use std::path::PathBuf;
use std::time::Duration;

pub use backoff::Backoff;
pub use git::{Fetched, GitSource, HostKeyVerdict, KnownHosts};

/// How to authenticate to the remote. Secrets are read from files at each
/// fetch, so a rotated token or key takes effect without a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// Public https, `file://` or a local path.
    #[default]
    None,
    /// https with a token (GitHub: a fine-grained token or an app installation
    /// token): user `x-access-token`, password = the file's content, trimmed.
    Token { token_file: PathBuf },
    /// ssh with a deploy key. The server's host key must be listed in
    /// `known_hosts`; without one, ssh is refused.
    SshKey {
        key_file: PathBuf,
        known_hosts: Option<PathBuf>,
    },
}

/// What to fetch and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// `https://…`, `ssh://…`, `git@host:org/repo.git`, `file://…` or a local
    /// path (absolute, or relative to the working directory).
    pub url: String,
    pub branch: String,
    /// The directory inside the repository that holds `stacks/` ("." for the
    /// root).
    pub path: String,
    pub auth: Auth,
    /// The longest a fetch may take, connecting included.
    pub fetch_timeout: Duration,
}

/// Whether `url` names a repository reached over the network (ssh, https,
/// `git://`), not one on this machine: a one-shot command reads such a
/// repository from the daemon's mirror. An existing local path is local
/// even when it contains a colon.
pub fn is_remote(url: &str) -> bool {
    let local = std::path::Path::new(url.strip_prefix("file://").unwrap_or(url));
    credentials::Transport::of(url) != credentials::Transport::Local && !local.exists()
}

impl SourceConfig {
    /// The host config's repository (`repo:` section and flags), as the
    /// daemon and the one-shot commands alike fetch it; `None` without a
    /// repository.
    pub fn from_config(cfg: &crate::config::Config, fetch_timeout: Duration) -> Option<Self> {
        let url = cfg.repo.clone()?;
        Some(SourceConfig {
            url,
            branch: cfg.branch.clone().unwrap_or_else(|| "main".into()),
            path: cfg.repo_path.clone(),
            auth: Auth::of(cfg),
            fetch_timeout,
        })
    }

    /// `url` at `branch`, the repository root, no auth, a 60s timeout.
    pub fn new(url: impl Into<String>, branch: impl Into<String>) -> SourceConfig {
        SourceConfig {
            url: url.into(),
            branch: branch.into(),
            path: ".".into(),
            auth: Auth::None,
            fetch_timeout: Duration::from_secs(60),
        }
    }
}

impl Auth {
    /// The host config's credentials for its repository (`repo:` section):
    /// a deploy key, else a token, else none. Fetch and publish use the same.
    pub fn of(cfg: &crate::config::Config) -> Auth {
        let repo_cfg = cfg.file.repo.clone().unwrap_or_default();
        if let Some(key) = repo_cfg.ssh_key_file {
            Auth::SshKey {
                key_file: key,
                known_hosts: repo_cfg.known_hosts_file,
            }
        } else if let Some(t) = repo_cfg.token_file {
            Auth::Token { token_file: t }
        } else {
            Auth::None
        }
    }
}

/// Why a fetch (or reading from the mirror) failed. URLs in these errors never
/// carry credentials.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The remote could not be reached or refused the fetch.
    #[error("failed to fetch {url}: {message}")]
    Fetch { url: String, message: String },
    /// The remote did not answer within `fetch_timeout`.
    #[error("failed to fetch {url}: no answer within {secs}s (fetch_timeout)")]
    Timeout { url: String, secs: u64 },
    /// The remote has no such branch.
    #[error(
        "failed to find branch \"{branch}\" on the remote; check repo.branch in the config or push the branch"
    )]
    BranchMissing { branch: String },
    /// An object fetched (or already in the mirror) cannot be read.
    #[error("failed to read git objects: {message}")]
    Corrupt { message: String },
    /// The mirror or a state dir file could not be read or written.
    #[error("failed to {op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Credentials or the server's identity were refused.
    #[error("failed to authenticate: {message}")]
    Auth { message: String },
}

impl Error {
    /// Whether retrying with backoff may help without anybody changing
    /// anything: network trouble, timeouts, a damaged transfer, a full disk.
    /// A missing branch or refused credentials need a person (the daemon
    /// still polls at its normal interval, but does not hurry).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Fetch { .. }
            | Error::Timeout { .. }
            | Error::Corrupt { .. }
            | Error::Io { .. } => true,
            Error::BranchMissing { .. } | Error::Auth { .. } => false,
        }
    }

    /// Whether this is a fetch timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }
}

/// `url` without a password or token: `https://user:tok@host/x` →
/// `https://host/x`. For http(s) any user part goes (tokens are often passed
/// as the user name); for other schemes only a `user:password` part does, so
/// `ssh://git@host/x` and `git@host:x` stay as written.
pub fn strip_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let http = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    if http || userinfo.contains(':') {
        format!("{scheme}://{}{path}", &authority[at + 1..])
    } else {
        url.to_string()
    }
}

/// The secret parts of `url` (a password, or an http(s) user name), to mask
/// wherever they might show up in a message from libgit2.
fn url_secrets(url: &str) -> Vec<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..end].rfind('@') else {
        return Vec::new();
    };
    let userinfo = &rest[..at];
    let http = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    match userinfo.split_once(':') {
        Some((user, pass)) if http => {
            vec![userinfo.to_string(), user.to_string(), pass.to_string()]
        }
        Some((_, pass)) => vec![pass.to_string()],
        None if http => vec![userinfo.to_string()],
        None => Vec::new(),
    }
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect()
}

/// Masks `url`'s credentials and any of `extra` (e.g. a token) in `message`.
pub(crate) fn redact(message: &str, url: &str, extra: &[&str]) -> String {
    let mut out = message.replace(url, &strip_credentials(url));
    let mut secrets = url_secrets(url);
    secrets.extend(
        extra
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.to_string()),
    );
    // Longest first, so a secret containing another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in secrets {
        out = out.replace(&s, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_credentials_from_urls() {
        let cases = [
            (
                "https://x-access-token:ghp_secret@github.com/acme/ds.git",
                "https://github.com/acme/ds.git",
            ),
            (
                "https://ghp_secret@github.com/acme/ds.git",
                "https://github.com/acme/ds.git",
            ),
            (
                "http://u:p@127.0.0.1:8080/r.git?x=1",
                "http://127.0.0.1:8080/r.git?x=1",
            ),
            ("ssh://git:pw@host:2222/r.git", "ssh://host:2222/r.git"),
            ("ssh://git@host:2222/r.git", "ssh://git@host:2222/r.git"),
            ("git@github.com:acme/ds.git", "git@github.com:acme/ds.git"),
            (
                "https://github.com/acme/ds.git",
                "https://github.com/acme/ds.git",
            ),
            ("/srv/desired", "/srv/desired"),
            ("file:///srv/desired", "file:///srv/desired"),
        ];
        for (url, want) in cases {
            assert_eq!(strip_credentials(url), want, "{url}");
        }
    }

    #[test]
    fn redacts_messages() {
        let url = "https://bot:ghp_secret@github.com/acme/ds.git";
        let msg = format!("request to {url} failed; password ghp_secret; token tok123");
        let out = redact(&msg, url, &["tok123"]);
        assert!(!out.contains("ghp_secret"), "{out}");
        assert!(!out.contains("tok123"), "{out}");
        assert!(out.contains("https://github.com/acme/ds.git"), "{out}");
    }

    #[test]
    fn error_messages_never_show_credentials() {
        let url = "https://x-access-token:ghp_secret@github.com/acme/ds.git";
        let e = Error::Fetch {
            url: strip_credentials(url),
            message: redact(&format!("cannot reach {url}"), url, &[]),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("failed to fetch https://github.com/acme/ds.git"),
            "{text}"
        );
        assert!(!text.contains("ghp_secret"), "{text}");
        assert!(e.is_transient());
    }

    #[test]
    fn sorts_errors() {
        assert!(
            Error::Timeout {
                url: "u".into(),
                secs: 2
            }
            .is_transient()
        );
        assert!(
            Error::Corrupt {
                message: "m".into()
            }
            .is_transient()
        );
        assert!(
            !Error::BranchMissing {
                branch: "main".into()
            }
            .is_transient()
        );
        assert!(
            !Error::Auth {
                message: "m".into()
            }
            .is_transient()
        );
    }
}
