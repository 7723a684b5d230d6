//! The operator's channel to a running daemon: a Unix socket (mode 0660,
//! optional group) speaking one JSON request and one JSON response per
//! connection. CLI actions go through it so that they run in the daemon's one
//! executor; with no daemon listening the CLI runs them in-process under the
//! same per-stack locks.

use crate::outcome::StackResult;
use crate::status::StackStatus;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_SOCKET: &str = "/run/stackpin/control.sock";

/// Talking to the daemon, or setting up its socket, failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "a daemon listens on {} but this user may not use it: {source} (join the socket's group, or run as root)",
        socket.display()
    )]
    Denied {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to talk to the daemon on {}: {source}", socket.display())]
    Talk {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon answered something unreadable: {0}")]
    Unreadable(String),
    #[error("failed to secure the control socket {}: {source}", socket.display())]
    Secure {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "group `{0}` for the control socket does not exist; create it (`groupadd --system {0}`) or set control_socket_group"
    )]
    NoGroup(String),
}

/// Connections the daemon serves at once on its control socket; more wait
/// in the socket's backlog.
pub const MAX_CONNECTIONS: usize = 16;
/// The longest request line the daemon reads (a request is a few hundred
/// bytes; a hold reason or a break-glass reason a few more).
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024;
/// How long a client has to send its request line, and the daemon to
/// write its answer once it has one (not the converge in between).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the daemon waits after a failed accept (out of file
/// descriptors) before it accepts again.
pub const ACCEPT_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Sync {
        root: PathBuf,
        stacks: Vec<String>,
        force: bool,
        dry_run: bool,
        break_glass: Option<String>,
        /// Who accepts a rewritten history for `stacks` (the socket peer,
        /// set by the daemon: see [`Request::attributed`]).
        #[serde(default)]
        accept_rewrite: Option<String>,
    },
    Status {
        root: PathBuf,
        stacks: Vec<String>,
    },
    Hold {
        root: PathBuf,
        stack: String,
        reason: String,
    },
    Resume {
        root: PathBuf,
        stack: String,
    },
    Rollback {
        root: PathBuf,
        stack: String,
        target: crate::rollback::Target,
    },
    Restore {
        root: PathBuf,
        stack: String,
        backup: String,
    },
}

impl Request {
    pub fn root(&self) -> &Path {
        match self {
            Request::Sync { root, .. }
            | Request::Status { root, .. }
            | Request::Hold { root, .. }
            | Request::Resume { root, .. }
            | Request::Rollback { root, .. }
            | Request::Restore { root, .. } => root,
        }
    }

    /// Every stack name in the request is a stack name (see
    /// [`crate::desired::check_stack_name`]); checked before anything else.
    ///
    /// # Errors
    /// The first bad name.
    pub fn check(&self) -> Result<(), String> {
        let names: Vec<&String> = match self {
            Request::Sync { stacks, .. } | Request::Status { stacks, .. } => {
                stacks.iter().collect()
            }
            Request::Hold { stack, .. }
            | Request::Resume { stack, .. }
            | Request::Rollback { stack, .. }
            | Request::Restore { stack, .. } => vec![stack],
        };
        names
            .into_iter()
            .try_for_each(|n| crate::desired::check_stack_name(n))
    }

    /// A break-glass reason names who asked: `REASON (requested by USER)`.
    /// Over the socket the user is the peer's (`SO_PEERCRED`), never the
    /// daemon's.
    /// An accepted rewrite names the user alone.
    pub fn attributed(self, user: &str) -> Request {
        match self {
            Request::Sync {
                root,
                stacks,
                force,
                dry_run,
                break_glass,
                accept_rewrite,
            } => Request::Sync {
                root,
                stacks,
                force,
                dry_run,
                break_glass: break_glass.map(|r| attribute(&r, user)),
                accept_rewrite: accept_rewrite.map(|_| user.to_string()),
            },
            other => other,
        }
    }

    /// A short description for the daemon's log.
    pub fn describe(&self) -> String {
        match self {
            Request::Sync {
                stacks,
                force,
                dry_run,
                break_glass,
                accept_rewrite,
                ..
            } => format!(
                "sync{}{}{}{} [{}]",
                if *force { " --force" } else { "" },
                if *dry_run { " --dry-run" } else { "" },
                if break_glass.is_some() {
                    " --break-glass"
                } else {
                    ""
                },
                if accept_rewrite.is_some() {
                    " --accept-rewrite"
                } else {
                    ""
                },
                stacks.join(", ")
            ),
            Request::Status { .. } => "status".into(),
            Request::Hold { stack, .. } => format!("hold {stack}"),
            Request::Resume { stack, .. } => format!("resume {stack}"),
            Request::Rollback { stack, target, .. } => {
                format!("rollback {stack} {}", target.describe())
            }
            Request::Restore { stack, backup, .. } => format!("restore {stack} {backup}"),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub error: Option<String>,
    /// The daemon manages another root: the caller should act in-process.
    #[serde(default)]
    pub wrong_root: bool,
    #[serde(default)]
    pub results: Vec<StackResult>,
    #[serde(default)]
    pub status: Vec<StackStatus>,
    pub message: Option<String>,
    /// The error is the caller's input (an unknown stack name): the CLI
    /// exits 1 for it, as when it checks the name itself.
    #[serde(default)]
    pub bad_input: bool,
    /// What the daemon runs stacks with (`docker compose (Docker Compose
    /// version v2.40.3)`), for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

impl Response {
    /// A refusal of `e`, marked as bad input when it is one (an unknown
    /// or malformed stack name).
    pub fn refusal(e: &std::io::Error) -> Response {
        Response {
            error: Some(e.to_string()),
            bad_input: e.kind() == std::io::ErrorKind::InvalidInput,
            ..Default::default()
        }
    }
}

/// Sends `req` to the daemon at `socket`. `Ok(None)` when no daemon listens
/// there (no socket, or connection refused) or it manages another root.
/// Writes all of `buf` with `MSG_NOSIGNAL`: a one-shot command runs with
/// SIGPIPE's default disposition (so that `| head` ends it quietly), and a
/// daemon that closed the socket must be an error here, not a silent death.
fn send_all(stream: &UnixStream, mut buf: &[u8]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for `buf.len()` bytes; the fd is open for
        // as long as `stream` is borrowed.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

pub fn call(socket: &Path, req: &Request) -> Result<Option<Response>, Error> {
    let stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(source) if source.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(Error::Denied {
                socket: socket.to_path_buf(),
                source,
            });
        }
        Err(_) => return Ok(None),
    };
    let io = |source| Error::Talk {
        socket: socket.to_path_buf(),
        source,
    };
    // A converge can take minutes (pulls, smoke timeouts).
    stream
        .set_read_timeout(Some(Duration::from_secs(3600)))
        .map_err(io)?;
    let mut line = serde_json::to_string(req).map_err(|e| Error::Unreadable(e.to_string()))?;
    line.push('\n');
    send_all(&stream, line.as_bytes()).map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer).map_err(io)?;
    let resp: Response =
        serde_json::from_str(&answer).map_err(|e| Error::Unreadable(e.to_string()))?;
    if resp.wrong_root {
        return Ok(None);
    }
    Ok(Some(resp))
}

/// Makes the socket 0660 and, when configured, owned by `group`.
pub fn secure_socket(path: &Path, group: Option<&str>) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| Error::Secure {
        socket: path.to_path_buf(),
        source,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    if let Some(g) = group {
        let gid = group_id(g)?;
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io)?;
    }
    Ok(())
}

/// The id of the group named `g` (the control socket's group).
///
/// # Errors
/// [`Error::NoGroup`] when this host has no such group.
pub fn group_id(g: &str) -> Result<u32, Error> {
    let cname = std::ffi::CString::new(g).map_err(|_| Error::NoGroup(g.to_string()))?;
    // SAFETY: getgrnam reads a NUL-terminated name and returns a pointer
    // into static storage or NULL; we copy the gid out immediately.
    let gr = unsafe { libc::getgrnam(cname.as_ptr()) };
    if gr.is_null() {
        return Err(Error::NoGroup(g.to_string()));
    }
    Ok(unsafe { (*gr).gr_gid })
}

/// `reason (requested by user)`, once.
pub fn attribute(reason: &str, user: &str) -> String {
    let suffix = format!("(requested by {user})");
    if reason.ends_with(&suffix) {
        reason.to_string()
    } else {
        format!("{reason} {suffix}")
    }
}

/// The login name of `uid` from `/etc/passwd`, else `uid N`.
pub fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                let id: u32 = f.nth(1)?.parse().ok()?;
                (id == uid).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// The user running this process.
pub fn current_user() -> String {
    // SAFETY: getuid has no preconditions and cannot fail.
    user_name(unsafe { libc::getuid() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_with_a_path_for_a_stack_name_are_refused() {
        let root = PathBuf::from("/srv");
        let bad = [
            Request::Hold {
                root: root.clone(),
                stack: "../../x".into(),
                reason: "r".into(),
            },
            Request::Resume {
                root: root.clone(),
                stack: "a/b".into(),
            },
            Request::Sync {
                root: root.clone(),
                stacks: vec!["web".into(), "..".into()],
                force: false,
                dry_run: false,
                break_glass: None,
                accept_rewrite: None,
            },
            Request::Status {
                root: root.clone(),
                stacks: vec!["".into()],
            },
        ];
        for r in bad {
            let e = r.check().unwrap_err();
            assert!(e.contains("is not a stack name"), "{e}");
        }
        let ok = Request::Hold {
            root,
            stack: "odoo18-prod".into(),
            reason: "r".into(),
        };
        assert!(ok.check().is_ok());
    }

    #[test]
    fn break_glass_names_who_asked_once() {
        let r = Request::Sync {
            root: PathBuf::from("/srv"),
            stacks: vec![],
            force: false,
            dry_run: false,
            break_glass: Some("CVE hotfix".into()),
            // What a client claims is replaced by the socket's peer.
            accept_rewrite: Some("mallory".into()),
        }
        .attributed("alice")
        .attributed("alice");
        let Request::Sync {
            break_glass,
            accept_rewrite,
            ..
        } = r
        else {
            unreachable!()
        };
        assert_eq!(
            break_glass.as_deref(),
            Some("CVE hotfix (requested by alice)")
        );
        assert_eq!(accept_rewrite.as_deref(), Some("alice"));
        assert_eq!(user_name(0), "root");
    }
}
