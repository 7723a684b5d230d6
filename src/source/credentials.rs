//! Git credentials, for the source's fetch and for publishing's push alike:
//! how a URL is reached ([`Transport`]), what it needs read from the host
//! before any connection ([`Creds::read`]: a token file for https, a deploy
//! key and a known_hosts file for ssh — never a prompt), libgit2's callbacks
//! that answer with them ([`callbacks`]) and the ssh host-key check against
//! known_hosts. Refusals are [`Refusal`]s naming the file or the server;
//! callers wrap them in their own error.

use super::{Auth, HostKeyVerdict, KnownHosts};
use git2::{CertificateCheckStatus, CredentialType};
use std::cell::{Cell, RefCell};
use std::path::PathBuf;

/// How libgit2 will reach a URL, as far as auth and timeouts care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Local,
    Http,
    /// `git://`: the anonymous git protocol (read-only, no credentials).
    Git,
    Ssh {
        host: String,
        port: u16,
    },
}

impl Transport {
    pub fn of(url: &str) -> Transport {
        if let Some((scheme, rest)) = url.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            return match scheme.as_str() {
                "http" | "https" => Transport::Http,
                "git" => Transport::Git,
                "ssh" | "git+ssh" | "ssh+git" => {
                    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
                    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                    let (host, port) = split_host_port(hostport);
                    Transport::Ssh {
                        host,
                        port: port.unwrap_or(22),
                    }
                }
                _ => Transport::Local,
            };
        }
        // scp-like `[user@]host:path`: a colon before any slash.
        match (url.find(':'), url.find('/')) {
            (Some(colon), slash) if slash.is_none_or(|s| colon < s) && colon > 0 => {
                let hostpart = &url[..colon];
                let host = hostpart.rsplit_once('@').map_or(hostpart, |(_, h)| h);
                Transport::Ssh {
                    host: host.trim_matches(['[', ']']).to_string(),
                    port: 22,
                }
            }
            _ => Transport::Local,
        }
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(s: &str) -> (String, Option<u16>) {
    if let Some(rest) = s.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        return (
            host.to_string(),
            after.strip_prefix(':').and_then(|p| p.parse().ok()),
        );
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().ok()),
        _ => (s.to_string(), None),
    }
}

/// The name of a host in known_hosts: `host`, or `[host]:port` off port 22.
pub fn host_port(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// What the credentials are for: the wording of a refusal says what the
/// server must allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Read the repository (the source).
    Fetch,
    /// Write to it (publishing verified markers).
    Push,
}

/// Credentials or the server's identity were refused, or cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// What a fetch or push needs, read before touching the network.
pub enum Creds {
    None,
    Token(String),
    Ssh {
        key_file: PathBuf,
        known_hosts: PathBuf,
        hosts: KnownHosts,
    },
}

impl Creds {
    /// Reads what reaching `transport` with `auth` needs, so that a
    /// configuration mistake is reported as such and not as a refusal from
    /// the server.
    ///
    /// # Errors
    /// A token file that cannot be read or is empty; ssh without a deploy
    /// key or a known_hosts file, or with one that cannot be read.
    pub fn read(transport: &Transport, auth: &Auth) -> Result<Creds, Refusal> {
        match (transport, auth) {
            (Transport::Local | Transport::Git, _)
            | (Transport::Http, Auth::None | Auth::SshKey { .. }) => Ok(Creds::None),
            (Transport::Http, Auth::Token { token_file }) => {
                let token = std::fs::read_to_string(token_file).map_err(|e| {
                    Refusal(format!(
                        "cannot read the token file {}: {e}",
                        token_file.display()
                    ))
                })?;
                let token = token.trim().to_string();
                if token.is_empty() {
                    return Err(Refusal(format!(
                        "the token file {} is empty; write the access token into it",
                        token_file.display()
                    )));
                }
                Ok(Creds::Token(token))
            }
            (Transport::Ssh { host, port }, auth) => read_ssh(host, *port, auth),
        }
    }

    /// The secret a message must never show (the token).
    pub fn secret(&self) -> &str {
        match self {
            Creds::Token(t) => t,
            _ => "",
        }
    }

    /// Answers libgit2's request for credentials, at most once per kind:
    /// asking again means the server refused them, and answering again would
    /// make libgit2 loop.
    pub fn answer(
        &self,
        url: &str,
        purpose: Purpose,
        user_from_url: Option<&str>,
        allowed: CredentialType,
        tried: &Cell<u32>,
    ) -> Result<git2::Cred, Refusal> {
        let once = |kind: CredentialType| {
            let first = tried.get() & kind.bits() == 0;
            tried.set(tried.get() | kind.bits());
            first
        };
        let user = user_from_url.unwrap_or("git");
        let lib = |e: git2::Error| Refusal(e.message().to_string());
        let may = match purpose {
            Purpose::Fetch => "may read the repository",
            Purpose::Push => "may push to it (contents: write)",
        };
        match self {
            Creds::Token(token) if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) => {
                if !once(CredentialType::USER_PASS_PLAINTEXT) {
                    return Err(Refusal(format!(
                        "{url} refused the token; check that it is valid and {may}"
                    )));
                }
                git2::Cred::userpass_plaintext("x-access-token", token).map_err(lib)
            }
            Creds::Ssh { .. }
                if allowed.contains(CredentialType::USERNAME) && once(CredentialType::USERNAME) =>
            {
                git2::Cred::username(user).map_err(lib)
            }
            Creds::Ssh { key_file, .. } if allowed.contains(CredentialType::SSH_KEY) => {
                if !once(CredentialType::SSH_KEY) {
                    return Err(Refusal(format!(
                        "{url} refused the ssh key {} for user {user}; check that it is a deploy key of the repository that {may}",
                        key_file.display()
                    )));
                }
                git2::Cred::ssh_key(user, None, key_file, None).map_err(lib)
            }
            Creds::None => Err(Refusal(format!(
                "{url} asks for credentials and none are configured; configure a token file (https) or a deploy key (ssh)"
            ))),
            _ => Err(Refusal(format!(
                "{url} asks for a kind of credentials ({allowed:?}) the configuration does not provide"
            ))),
        }
    }

    /// The server's ssh host key must be listed for it in known_hosts.
    pub fn check_host_key(
        &self,
        transport: &Transport,
        cert: &git2::cert::CertHostkey<'_>,
        libgit2_host: &str,
    ) -> Result<CertificateCheckStatus, Refusal> {
        let Creds::Ssh {
            known_hosts, hosts, ..
        } = self
        else {
            return Err(Refusal(
                "an ssh host key was offered but ssh is not configured".into(),
            ));
        };
        let (host, port) = match transport {
            Transport::Ssh { host, port } => (host.as_str(), *port),
            _ => (libgit2_host, 22),
        };
        let name = host_port(host, port);
        let key_type = cert.hostkey_type().map(|t| t.name()).unwrap_or("unknown");
        let Some(key) = cert.hostkey() else {
            return Err(Refusal(format!(
                "refusing ssh to {name}: libssh2 did not hand over the raw host key to compare with {}",
                known_hosts.display()
            )));
        };
        let file = known_hosts.display();
        let keyscan = format!(
            "ssh-keyscan {}{host}",
            if port == 22 {
                String::new()
            } else {
                format!("-p {port} ")
            }
        );
        match hosts.check(host, port, key) {
            HostKeyVerdict::Trusted => Ok(CertificateCheckStatus::CertificateOk),
            HostKeyVerdict::Revoked => Err(Refusal(format!(
                "refusing ssh to {name}: its {key_type} host key is marked @revoked in {file}"
            ))),
            HostKeyVerdict::Mismatch { known } => Err(Refusal(format!(
                "refusing ssh to {name}: its {key_type} host key does not match {file} (which lists {}); \
                 if the server's key really changed, replace its line with the output of `{keyscan}` after \
                 checking the fingerprint, otherwise someone may be intercepting the connection",
                known.join(", ")
            ))),
            HostKeyVerdict::Unknown => Err(Refusal(format!(
                "refusing ssh to {name}: the host is not in {file}; add its key (`{keyscan} >> {file}`, then compare the fingerprint)"
            ))),
        }
    }
}

fn read_ssh(host: &str, port: u16, auth: &Auth) -> Result<Creds, Refusal> {
    let name = host_port(host, port);
    let Auth::SshKey {
        key_file,
        known_hosts,
    } = auth
    else {
        return Err(Refusal(format!(
            "ssh to {name} needs a deploy key; configure an ssh key file (repo.ssh_key_file) and a known_hosts file"
        )));
    };
    let Some(known_hosts) = known_hosts else {
        return Err(Refusal(format!(
            "refusing ssh to {name}: no known_hosts file is configured, so the server's identity cannot be checked; \
             write its host key to a file (`ssh-keyscan {}{host} > FILE`, then compare the fingerprint) and configure it",
            if port == 22 {
                String::new()
            } else {
                format!("-p {port} ")
            }
        )));
    };
    let text = std::fs::read_to_string(known_hosts).map_err(|e| {
        Refusal(format!(
            "cannot read the known_hosts file {}: {e}",
            known_hosts.display()
        ))
    })?;
    if let Err(e) = std::fs::metadata(key_file) {
        return Err(Refusal(format!(
            "cannot read the ssh key {}: {e}",
            key_file.display()
        )));
    }
    Ok(Creds::Ssh {
        key_file: key_file.clone(),
        known_hosts: known_hosts.clone(),
        hosts: KnownHosts::parse(&text),
    })
}

/// The state one fetch or push shares with its callbacks: how often each
/// kind of credentials was asked for, and the refusal to report instead of
/// libgit2's generic error.
#[derive(Default)]
pub struct Session {
    pub tried: Cell<u32>,
    pub refused: RefCell<Option<Refusal>>,
}

impl Session {
    /// The refusal a callback recorded, if any.
    pub fn take_refusal(&self) -> Option<Refusal> {
        self.refused.borrow_mut().take()
    }
}

/// libgit2 callbacks answering credentials and checking ssh host keys with
/// `creds`. A refusal is kept in `session` (libgit2 only sees its text).
/// `abort` is asked before each answer: `true` stops the transfer (a
/// deadline).
pub fn callbacks<'a>(
    creds: &'a Creds,
    transport: &'a Transport,
    url: &'a str,
    purpose: Purpose,
    session: &'a Session,
    abort: &'a (dyn Fn() -> bool + 'a),
) -> git2::RemoteCallbacks<'a> {
    let mut cb = git2::RemoteCallbacks::new();
    let keep = move |r: Refusal| {
        let msg = r.0.clone();
        *session.refused.borrow_mut() = Some(r);
        git2::Error::from_str(&msg)
    };
    cb.credentials(move |_url, user, allowed| {
        if abort() {
            return Err(git2::Error::from_str("timed out"));
        }
        creds
            .answer(url, purpose, user, allowed, &session.tried)
            .map_err(keep)
    });
    cb.certificate_check(move |cert, host| match cert.as_hostkey() {
        None => Ok(CertificateCheckStatus::CertificatePassthrough),
        Some(hostkey) => creds.check_host_key(transport, hostkey, host).map_err(keep),
    });
    cb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_urls() {
        let ssh = |host: &str, port| Transport::Ssh {
            host: host.into(),
            port,
        };
        let cases = [
            ("https://github.com/a/b.git", Transport::Http),
            ("http://127.0.0.1:8080/r.git", Transport::Http),
            ("git@github.com:acme/ds.git", ssh("github.com", 22)),
            ("github.com:acme/ds.git", ssh("github.com", 22)),
            (
                "ssh://git@git.example.org:2222/ds.git",
                ssh("git.example.org", 2222),
            ),
            ("ssh://git.example.org/ds.git", ssh("git.example.org", 22)),
            ("ssh://git@[::1]:2222/ds.git", ssh("::1", 2222)),
            ("git://127.0.0.1:9418/ds.git", Transport::Git),
            ("file:///srv/ds", Transport::Local),
            ("/srv/ds", Transport::Local),
            ("./ds", Transport::Local),
            ("ds", Transport::Local),
            ("./a:b", Transport::Local),
        ];
        for (url, want) in cases {
            assert_eq!(Transport::of(url), want, "{url}");
        }
    }

    #[test]
    fn reads_what_each_transport_needs_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let ssh = Transport::of("git@127.0.0.1:acme/ds.git");
        let err = |r: Result<Creds, Refusal>| r.err().map(|e| e.0).unwrap_or_default();
        assert!(err(Creds::read(&ssh, &Auth::None)).contains("needs a deploy key"));
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, "k").unwrap();
        let no_kh = Auth::SshKey {
            key_file: key_file.clone(),
            known_hosts: None,
        };
        assert!(err(Creds::read(&ssh, &no_kh)).contains("no known_hosts file is configured"));
        let token = dir.path().join("token");
        std::fs::write(&token, "\n").unwrap();
        let http = Transport::Http;
        assert!(
            err(Creds::read(
                &http,
                &Auth::Token {
                    token_file: token.clone()
                }
            ))
            .contains("is empty")
        );
        std::fs::write(&token, "t0ken\n").unwrap();
        let c = Creds::read(&http, &Auth::Token { token_file: token }).unwrap();
        assert_eq!(c.secret(), "t0ken");
        assert!(matches!(
            Creds::read(&Transport::Local, &no_kh),
            Ok(Creds::None)
        ));
    }
}
