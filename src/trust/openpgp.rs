//! OpenPGP signatures on commits, verified with the pure-Rust `pgp` crate
//! against armored public keys the operator configured.
//!
//! GitHub signs the commits it creates in its web UI (merges, squash and
//! rebase merges, web edits) with its own "web-flow" OpenPGP key. Configuring
//! that public key (<https://github.com/web-flow.gpg>) in `openpgp_keys` makes
//! "merged on GitHub" commits trusted: anyone who can merge a pull request on
//! GitHub can then move the environment, so pair it with branch protection.
//!
//! Limits: a key file is the trust root, so expiry and revocation in it are
//! not evaluated (remove a key from the file to distrust it); subkeys are used
//! only when their binding signature verifies against the primary key.

use super::Error;
use pgp::composed::{Deserializable, SignedPublicKey, StandaloneSignature};
use pgp::types::KeyDetails;
use std::path::Path;

/// Why OpenPGP keys or a signature could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OpenPgpError(pub String);

impl From<String> for OpenPgpError {
    fn from(s: String) -> OpenPgpError {
        OpenPgpError(s)
    }
}

impl From<&str> for OpenPgpError {
    fn from(s: &str) -> OpenPgpError {
        OpenPgpError(s.to_string())
    }
}

/// A public key whose signatures are trusted.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Primary key fingerprint, upper-case hex.
    pub fingerprint: String,
    /// The first user id, e.g. `GitHub <noreply@github.com>`.
    pub user_id: Option<String>,
    key: SignedPublicKey,
}

impl TrustedKey {
    /// Wraps a parsed key, dropping subkeys whose binding does not verify.
    pub fn new(mut key: SignedPublicKey) -> TrustedKey {
        let primary = key.primary_key.clone();
        key.public_subkeys.retain(|sub| match sub.verify(&primary) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(
                    subkey = %hex_upper(sub.key_id().as_ref()),
                    error = %e,
                    "ignoring OpenPGP subkey whose binding signature does not verify"
                );
                false
            }
        });
        let fingerprint = hex_upper(key.fingerprint().as_bytes());
        let user_id = key
            .details
            .users
            .first()
            .map(|u| String::from_utf8_lossy(u.id.id()).into_owned());
        TrustedKey {
            fingerprint,
            user_id,
            key,
        }
    }

    /// Upper-case hex key id of the primary key (the last 8 bytes of a v4
    /// fingerprint), as gpg and git print it.
    pub fn key_id(&self) -> String {
        hex_upper(self.key.key_id().as_ref())
    }

    /// The name a verdict shows: the first user id, else the key id.
    pub fn signer(&self) -> String {
        self.user_id.clone().unwrap_or_else(|| self.key_id())
    }
}

/// Reads the armored public keys in `path`. A file may hold several armor
/// blocks, and each block several keys.
///
/// # Errors
/// The file cannot be read, holds no public key, or a block does not parse;
/// the error names the file.
pub fn load_keys(path: &Path) -> Result<Vec<TrustedKey>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_keys(&text).map_err(|reason| Error::OpenPgp {
        path: path.to_path_buf(),
        reason: reason.0,
    })
}

/// Parses armored public keys (see [`load_keys`]).
pub fn parse_keys(text: &str) -> Result<Vec<TrustedKey>, OpenPgpError> {
    const BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
    let mut keys = Vec::new();
    let starts: Vec<usize> = text.match_indices(BEGIN).map(|(i, _)| i).collect();
    if starts.is_empty() {
        return Err(OpenPgpError::from(format!(
            "no armored public key ({BEGIN}) found"
        )));
    }
    for (n, start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(text.len());
        let block = &text[*start..end];
        let (parsed, _headers) = SignedPublicKey::from_string_many(block)
            .map_err(|e| format!("failed to parse public key block {}: {e}", n + 1))?;
        for key in parsed {
            let key =
                key.map_err(|e| format!("failed to parse public key block {}: {e}", n + 1))?;
            keys.push(TrustedKey::new(key));
        }
    }
    if keys.is_empty() {
        return Err("no public key found".into());
    }
    Ok(keys)
}

/// Verifies a detached, armored signature over `data` with one of `keys`
/// (primary key or a bound subkey, found by the signature's issuer).
///
/// Returns the signer's name on success, or why the signature is not trusted:
/// `no OpenPGP keys configured`, `signed by unknown OpenPGP key <KEYID>`,
/// `bad signature`, or `malformed OpenPGP signature: …`.
pub fn verify(
    keys: &[TrustedKey],
    signature_armored: &str,
    data: &[u8],
) -> Result<String, OpenPgpError> {
    if keys.is_empty() {
        return Err("no OpenPGP keys configured".into());
    }
    let (signature, _headers) = StandaloneSignature::from_string(signature_armored)
        .map_err(|e| format!("malformed OpenPGP signature: {e}"))?;
    let sig = &signature.signature;
    let ids = sig.issuer();
    let fingerprints = sig.issuer_fingerprint();
    let issued_by = |k: &dyn KeyDetails| {
        ids.iter().any(|id| **id == k.key_id())
            || fingerprints.iter().any(|fp| **fp == k.fingerprint())
    };

    for trusted in keys {
        let outcome = if issued_by(&trusted.key) {
            Some(signature.verify(&trusted.key, data))
        } else {
            trusted
                .key
                .public_subkeys
                .iter()
                .find(|sub| issued_by(*sub))
                .map(|sub| signature.verify(sub, data))
        };
        match outcome {
            None => continue,
            Some(Ok(())) => return Ok(trusted.signer()),
            Some(Err(e)) => {
                tracing::debug!(key = %trusted.fingerprint, error = %e, "OpenPGP verification failed");
                return Err("bad signature".into());
            }
        }
    }

    let who = ids
        .first()
        .map(|id| hex_upper(id.as_ref()))
        .or_else(|| fingerprints.first().map(|fp| hex_upper(fp.as_bytes())))
        .unwrap_or_else(|| "(no issuer in signature)".into());
    Err(OpenPgpError::from(format!(
        "signed by unknown OpenPGP key {who}"
    )))
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}
