//! Registry credentials for pulls, read where the Docker CLI keeps them:
//! a `config.json` (`docker login` writes it) with `auths` (base64
//! `user:password`, or an identity token), `credHelpers` (one
//! `docker-credential-<name>` per registry) and `credsStore` (one helper for
//! all), in the CLI's order: a registry's helper, else the store, else
//! `auths`. The file is `registry_auth_file` from the host config, else
//! `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; it is read at
//! every pull, so a `docker login` takes effect without a restart.
//!
//! The decision (which entry answers for a registry) is pure
//! ([`lookup`]); running a helper and reading the file are the edges.

use serde_json::Value;
use std::path::{Path, PathBuf};

/// What answers for a registry in a Docker config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Nothing: pull anonymously.
    None,
    /// `auths` holds a user and password.
    Basic { username: String, password: String },
    /// `auths` holds an identity token (an OAuth refresh token).
    Token(String),
    /// A credential helper answers: `docker-credential-<name>`.
    Helper(String),
}

/// Credentials to send with a pull.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
    pub identity_token: Option<String>,
    /// The registry as the engine names it (`docker.io`: Docker Hub's
    /// `https://index.docker.io/v1/`).
    pub server: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, whatever prints it.
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The values to mask in every output.
    pub fn secrets(&self) -> Vec<String> {
        self.password
            .iter()
            .chain(self.identity_token.iter())
            .cloned()
            .collect()
    }
}

/// Docker Hub's key in `auths` and the server its helpers are asked for.
pub const HUB_SERVER: &str = "https://index.docker.io/v1/";

/// The host a config key names: `https://ghcr.io/v2/` → `ghcr.io`;
/// Docker Hub's spellings → `docker.io`.
pub fn key_host(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or_default();
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        h => h.to_string(),
    }
}

/// The server name a helper is asked for and the engine is told.
pub fn server_for(registry: &str) -> String {
    if registry == "docker.io" {
        HUB_SERVER.to_string()
    } else {
        registry.to_string()
    }
}

/// Who answers for `registry` (`ImageRef::registry`) in `config`.
///
/// # Errors
/// An `auths` entry whose `auth` is not base64 of `user:password`.
pub fn lookup(config: &Value, registry: &str) -> Result<Lookup, String> {
    let by_host = |section: &str| -> Option<&Value> {
        config
            .get(section)?
            .as_object()?
            .iter()
            .find(|(k, _)| key_host(k) == registry)
            .map(|(_, v)| v)
    };
    if let Some(helper) = by_host("credHelpers").and_then(Value::as_str) {
        return Ok(Lookup::Helper(helper.to_string()));
    }
    if let Some(store) = config.get("credsStore").and_then(Value::as_str)
        && !store.is_empty()
    {
        return Ok(Lookup::Helper(store.to_string()));
    }
    let Some(entry) = by_host("auths") else {
        return Ok(Lookup::None);
    };
    let text = |k: &str| {
        entry
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(token) = text("identitytoken") {
        return Ok(Lookup::Token(token.to_string()));
    }
    if let Some(auth) = text("auth") {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                format!("the `auths` entry for {registry} is not base64 of `user:password`")
            })?;
        let (username, password) = decoded.split_once(':').ok_or_else(|| {
            format!("the `auths` entry for {registry} is not base64 of `user:password`")
        })?;
        return Ok(Lookup::Basic {
            username: username.to_string(),
            password: password.to_string(),
        });
    }
    match (text("username"), text("password")) {
        (Some(u), Some(p)) => Ok(Lookup::Basic {
            username: u.to_string(),
            password: p.to_string(),
        }),
        _ => Ok(Lookup::None),
    }
}

/// The config file pulls read: `explicit` (the host config's
/// `registry_auth_file`), else the Docker CLI's own.
pub fn config_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// For `daemon --check-config`: which file pulls will read, and that it
/// parses. A named file must exist; the CLI's own may be absent (anonymous
/// pulls).
pub fn check_file(explicit: Option<&Path>) -> Result<String, String> {
    let Some(path) = config_path(explicit) else {
        return Ok("none (no HOME, no DOCKER_CONFIG): anonymous pulls".into());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str::<Value>(&text)
            .map(|_| format!("{} (read at every pull)", path.display()))
            .map_err(|e| format!("{}: not JSON: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => Ok(format!(
            "{} is absent: anonymous pulls (`docker login` writes it)",
            path.display()
        )),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The credentials for `registry` from the file at `path` (a missing file
/// when it was not named explicitly: none).
///
/// # Errors
/// A named file that is missing, a file that is not JSON, a bad `auths`
/// entry, a helper that fails: each message names the file or the helper
/// and the registry, never a secret.
pub fn credentials(
    path: Option<&Path>,
    explicit: bool,
    registry: &str,
) -> Result<Option<Credentials>, String> {
    let Some(path) = path else { return Ok(None) };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
        Err(e) => {
            return Err(format!(
                "registry credentials {}: {e} (registry_auth_file names a Docker config.json; \
                 `docker login` writes one)",
                path.display()
            ));
        }
    };
    let config: Value = serde_json::from_str(&text)
        .map_err(|e| format!("registry credentials {}: not JSON: {e}", path.display()))?;
    let server = server_for(registry);
    let found = lookup(&config, registry).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(match found {
        Lookup::None => None,
        Lookup::Basic { username, password } => Some(Credentials {
            username: Some(username),
            password: Some(password),
            identity_token: None,
            server,
        }),
        Lookup::Token(t) => Some(Credentials {
            username: None,
            password: None,
            identity_token: Some(t),
            server,
        }),
        Lookup::Helper(name) => from_helper(&name, &server, path)?,
    })
}

/// Asks `docker-credential-<name> get` for `server`, as the Docker CLI does
/// (the server on stdin, `{"Username", "Secret"}` on stdout; a user of
/// `<token>` means the secret is an identity token).
fn from_helper(name: &str, server: &str, config: &Path) -> Result<Option<Credentials>, String> {
    use std::io::Write;
    let program = format!("docker-credential-{name}");
    let mut child = std::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "{}: the credential helper `{program}` for {server} cannot run: {e} \
                 (install it on the PATH, or remove it from the config)",
                config.display()
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("`{program} get`: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "credentials not found in native keychain": none, as for the CLI.
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        return Err(format!(
            "`{program} get` for {server} failed ({}): {}",
            out.status,
            stdout.trim().lines().last().unwrap_or_default()
        ));
    }
    let v: Value = serde_json::from_str(&stdout)
        .map_err(|_| format!("`{program} get` for {server} did not print its JSON answer"))?;
    let user = v
        .get("Username")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let secret = v.get("Secret").and_then(Value::as_str).unwrap_or_default();
    if secret.is_empty() {
        return Ok(None);
    }
    let token = user == "<token>";
    Ok(Some(Credentials {
        username: (!token).then(|| user.to_string()),
        password: (!token).then(|| secret.to_string()),
        identity_token: token.then(|| secret.to_string()),
        server: server.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_keys_name_hosts() {
        assert_eq!(key_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(key_host("registry-1.docker.io"), "docker.io");
        assert_eq!(key_host("https://ghcr.io"), "ghcr.io");
        assert_eq!(key_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(key_host("http://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
        assert_eq!(server_for("docker.io"), HUB_SERVER);
        assert_eq!(server_for("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn lookup_follows_the_clis_order() {
        // base64("u:p:w") -- a password may hold a colon.
        let cfg = json!({
            "auths": {
                "127.0.0.1:5000": {"auth": "dTpwOnc="},
                "https://index.docker.io/v1/": {"identitytoken": "tok"},
                "ghcr.io": {"auth": "dTpw"},
                "plain.example": {"username": "a", "password": "b"},
                "empty.example": {}
            },
            "credHelpers": {"ghcr.io": "gh"}
        });
        assert_eq!(
            lookup(&cfg, "127.0.0.1:5000").unwrap(),
            Lookup::Basic {
                username: "u".into(),
                password: "p:w".into()
            }
        );
        assert_eq!(
            lookup(&cfg, "docker.io").unwrap(),
            Lookup::Token("tok".into())
        );
        // A registry's helper wins over its `auths` entry.
        assert_eq!(
            lookup(&cfg, "ghcr.io").unwrap(),
            Lookup::Helper("gh".into())
        );
        assert_eq!(
            lookup(&cfg, "plain.example").unwrap(),
            Lookup::Basic {
                username: "a".into(),
                password: "b".into()
            }
        );
        assert_eq!(lookup(&cfg, "empty.example").unwrap(), Lookup::None);
        assert_eq!(lookup(&cfg, "other.example").unwrap(), Lookup::None);
        // A store answers for every registry without its own helper.
        let store = json!({"credsStore": "pass", "credHelpers": {"ghcr.io": "gh"},
                           "auths": {"127.0.0.1:5000": {}}});
        assert_eq!(
            lookup(&store, "127.0.0.1:5000").unwrap(),
            Lookup::Helper("pass".into())
        );
        assert_eq!(
            lookup(&store, "ghcr.io").unwrap(),
            Lookup::Helper("gh".into())
        );
    }

    #[test]
    fn a_bad_auth_entry_is_named_without_its_value() {
        let cfg = json!({"auths": {"r.example": {"auth": "!!not-base64-secret"}}});
        let e = lookup(&cfg, "r.example").unwrap_err();
        assert!(e.contains("r.example"), "{e}");
        assert!(!e.contains("not-base64-secret"), "{e}");
        let cfg = json!({"auths": {"r.example": {"auth": "bm9jb2xvbg=="}}});
        assert!(lookup(&cfg, "r.example").is_err());
    }

    #[test]
    fn credentials_never_debug_print_their_secret() {
        let c = Credentials {
            username: Some("u".into()),
            password: Some("hunter2-secret".into()),
            identity_token: Some("tok-secret".into()),
            server: "r".into(),
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok-secret"),
            "{shown}"
        );
        assert_eq!(c.secrets(), vec!["hunter2-secret", "tok-secret"]);
    }
}
