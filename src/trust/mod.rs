//! Commit signature policy (SPEC §5): per environment, the desired commit
//! must carry an SSH signature from a key in an allowed-signers file, or an
//! OpenPGP signature from a configured public key. Anything else is
//! untrusted, and the environment's stacks stay on what they run.
//!
//! [`load_policy`] reads the files (I/O at the edge); [`verify_commit`] only
//! reads the commit object and returns a [`Verdict`], never an error: every
//! way a commit can fail to be trusted is a reason for the operator.
//!
//! SSH verification follows `git verify-commit` with `gpg.format=ssh`: the
//! signature's namespace must be `git`, its key must be listed for the `git`
//! namespace, and the entry must be valid at the verification time.

pub mod allowed_signers;
pub mod history;
pub mod openpgp;

use allowed_signers::{AllowedSigners, SignerEntry, Validity};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use std::path::PathBuf;

/// The namespace git uses for SSH signatures on commits and tags.
pub const GIT_NAMESPACE: &str = "git";

/// Why a trust policy could not be loaded; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse allowed signers file {}: {source}", path.display())]
    AllowedSigners {
        path: PathBuf,
        #[source]
        source: allowed_signers::ParseError,
    },
    #[error("failed to load OpenPGP keys from {}: {reason}", path.display())]
    OpenPgp { path: PathBuf, reason: String },
    #[error("failed to load the signing key {}: {reason}", path.display())]
    SigningKey { path: PathBuf, reason: String },
}

/// The signers one environment trusts.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub allowed_signers: Option<AllowedSigners>,
    pub openpgp: Vec<openpgp::TrustedKey>,
}

/// Reads the allowed-signers file and OpenPGP key files of one environment.
///
/// # Errors
/// A file that cannot be read or parsed; the error names it. A bad file is
/// an error rather than an empty policy, so a typo never trusts nothing (or
/// everything) silently.
pub fn load_policy(cfg: &crate::config::TrustConfig) -> Result<Policy, Error> {
    let allowed_signers = match &cfg.allowed_signers {
        Some(path) => Some(AllowedSigners::load(path)?),
        None => None,
    };
    let mut keys = Vec::new();
    for path in &cfg.openpgp_keys {
        keys.extend(openpgp::load_keys(path)?);
    }
    Ok(Policy {
        allowed_signers,
        openpgp: keys,
    })
}

/// Whether a commit's signature satisfies a [`Policy`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Trusted {
        /// The allowed-signers principal, or the OpenPGP user id (else key id).
        signer: String,
        /// `"ssh"` or `"openpgp"`.
        method: &'static str,
    },
    Untrusted {
        why: String,
    },
}

impl Verdict {
    pub fn is_trusted(&self) -> bool {
        matches!(self, Verdict::Trusted { .. })
    }

    /// One line for status, history and notifications.
    pub fn describe(&self) -> String {
        match self {
            Verdict::Trusted { signer, method } => format!("signed by {signer} ({method})"),
            Verdict::Untrusted { why } => format!("untrusted: {why}"),
        }
    }

    fn untrusted(why: impl Into<String>) -> Verdict {
        Verdict::Untrusted { why: why.into() }
    }
}

/// Checks the signature on `commit` (any revision git2 can resolve) against
/// `policy`, judging allowed-signers validity windows at `now`.
///
/// # Guarantees
/// Reads the commit object only; never errors: a missing commit, an
/// unsigned commit or an unreadable signature is `Untrusted` with the reason.
pub fn verify_commit(
    repo: &git2::Repository,
    commit: &str,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Verdict {
    let oid = match repo
        .revparse_single(commit)
        .and_then(|o| o.peel_to_commit())
    {
        Ok(c) => c.id(),
        Err(e) => return Verdict::untrusted(format!("commit {commit} not found: {}", e.message())),
    };
    let (signature, signed_data) = match repo.extract_signature(&oid, None) {
        Ok(pair) => pair,
        Err(e) if e.code() == git2::ErrorCode::NotFound => {
            return Verdict::untrusted("unsigned commit");
        }
        Err(e) => {
            return Verdict::untrusted(format!(
                "failed to read the signature of {oid}: {}",
                e.message()
            ));
        }
    };
    let Ok(signature) = std::str::from_utf8(&signature) else {
        return Verdict::untrusted("malformed signature: not UTF-8");
    };
    let signature = signature.trim_start();
    if signature.starts_with("-----BEGIN SSH SIGNATURE-----") {
        verify_ssh(policy, signature, &signed_data, GIT_NAMESPACE, now)
    } else if signature.starts_with("-----BEGIN PGP SIGNATURE-----") {
        match openpgp::verify(&policy.openpgp, signature, &signed_data) {
            Ok(signer) => Verdict::Trusted {
                signer,
                method: "openpgp",
            },
            Err(why) => Verdict::Untrusted { why: why.0 },
        }
    } else {
        let first = signature.lines().next().unwrap_or_default();
        Verdict::untrusted(format!(
            "unsupported signature format {first:?} (only SSH and OpenPGP signatures are accepted)"
        ))
    }
}

/// Signs `data` the way `ssh-keygen -Y sign -n NAMESPACE` does (SHA-512),
/// returning the armored signature.
///
/// # Errors
/// The key cannot sign (an encrypted key, an unsupported algorithm).
pub fn sign(key: &ssh_key::PrivateKey, namespace: &str, data: &[u8]) -> Result<String, String> {
    let sig = ssh_key::SshSig::sign(key, namespace, ssh_key::HashAlg::Sha512, data)
        .map_err(|e| e.to_string())?;
    sig.to_pem(ssh_key::LineEnding::LF)
        .map_err(|e| e.to_string())
}

/// Reads an OpenSSH private key for signing (unencrypted).
///
/// # Errors
/// The file cannot be read or is not an unencrypted OpenSSH private key.
pub fn load_signing_key(path: &std::path::Path) -> Result<ssh_key::PrivateKey, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let key = ssh_key::PrivateKey::from_openssh(&text).map_err(|e| Error::SigningKey {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if key.is_encrypted() {
        return Err(Error::SigningKey {
            path: path.to_path_buf(),
            reason: "the key is encrypted; the daemon signs unattended, so it needs an unencrypted key readable only by it (mode 0600)".into(),
        });
    }
    Ok(key)
}

/// Checks an armored SSH signature over `data` in `namespace` against the
/// allowed signers of `policy` (the same rules as commit signatures).
pub fn verify_ssh(
    policy: &Policy,
    armored: &str,
    data: &[u8],
    namespace: &str,
    now: DateTime<Utc>,
) -> Verdict {
    let Some(signers) = &policy.allowed_signers else {
        return Verdict::untrusted("no SSH allowed_signers configured");
    };
    let sig = match armored.parse::<ssh_key::SshSig>() {
        Ok(sig) => sig,
        Err(e) => return Verdict::untrusted(format!("malformed SSH signature: {e}")),
    };
    if sig.namespace() != namespace {
        return Verdict::untrusted(format!(
            "signature namespace {:?} is not {namespace:?}",
            sig.namespace()
        ));
    }

    let listed: Vec<&SignerEntry> = signers.entries_for_key(sig.public_key()).collect();
    let Some(first) = listed.first() else {
        let fingerprint = sig.public_key().fingerprint(ssh_key::HashAlg::Sha256);
        return Verdict::untrusted(format!(
            "signing key {fingerprint} is not in allowed_signers"
        ));
    };
    let for_git: Vec<&SignerEntry> = listed
        .iter()
        .copied()
        .filter(|e| e.allows_namespace(namespace))
        .collect();
    if for_git.is_empty() {
        return Verdict::untrusted(format!(
            "namespace {namespace:?} not allowed for {}",
            first.principal()
        ));
    }
    // The same key may be listed more than once (e.g. a rotated window):
    // any entry valid now is enough; otherwise report the first one.
    let mut refusal = None;
    let mut valid = None;
    for entry in &for_git {
        match entry.validity_at(now) {
            Validity::Valid => {
                valid = Some(*entry);
                break;
            }
            Validity::Expired(before) => refusal.get_or_insert_with(|| {
                format!(
                    "signer {} is not valid after {}",
                    entry.principal(),
                    show_time(before)
                )
            }),
            Validity::NotYetValid(after) => refusal.get_or_insert_with(|| {
                format!(
                    "signer {} is not yet valid (valid from {})",
                    entry.principal(),
                    show_time(after)
                )
            }),
        };
    }
    let Some(entry) = valid else {
        return Verdict::untrusted(refusal.unwrap_or_default());
    };

    match entry.key.verify(namespace, data, &sig) {
        Ok(()) => Verdict::Trusted {
            signer: entry.principal(),
            method: "ssh",
        },
        Err(e) => {
            tracing::debug!(error = %e, line = entry.line, "SSH signature verification failed");
            Verdict::untrusted("bad signature")
        }
    }
}

fn show_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_serializes_with_a_tag() {
        let v = Verdict::Trusted {
            signer: "alice@example.com".into(),
            method: "ssh",
        };
        assert_eq!(
            serde_json::to_value(&v).unwrap(),
            serde_json::json!({"verdict": "trusted", "signer": "alice@example.com", "method": "ssh"})
        );
        assert!(v.is_trusted());
        let u = Verdict::untrusted("unsigned commit");
        assert_eq!(u.describe(), "untrusted: unsigned commit");
        assert!(!u.is_trusted());
    }

    #[test]
    fn missing_files_are_named() {
        let cfg = crate::config::TrustConfig {
            allowed_signers: Some(PathBuf::from("/nonexistent/allowed_signers")),
            openpgp_keys: vec![],
        };
        let err = load_policy(&cfg).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/allowed_signers"),
            "{err}"
        );
        let cfg = crate::config::TrustConfig {
            allowed_signers: None,
            openpgp_keys: vec![PathBuf::from("/nonexistent/github.asc")],
        };
        let err = load_policy(&cfg).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/github.asc"), "{err}");
    }

    #[test]
    fn bad_files_are_named_with_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let signers = dir.path().join("allowed_signers");
        std::fs::write(&signers, "# ok\nalice@example.com\n").unwrap();
        let keys = dir.path().join("keys.asc");
        std::fs::write(&keys, "not a key\n").unwrap();

        let cfg = crate::config::TrustConfig {
            allowed_signers: Some(signers.clone()),
            openpgp_keys: vec![],
        };
        let err = load_policy(&cfg).unwrap_err().to_string();
        assert!(err.contains(&signers.display().to_string()), "{err}");
        assert!(err.contains("line 2"), "{err}");

        let cfg = crate::config::TrustConfig {
            allowed_signers: None,
            openpgp_keys: vec![keys.clone()],
        };
        let err = load_policy(&cfg).unwrap_err().to_string();
        assert!(err.contains(&keys.display().to_string()), "{err}");
        assert!(err.contains("no armored public key"), "{err}");
    }
}
