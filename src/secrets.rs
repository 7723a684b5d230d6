//! The stacks' `secrets:`: files committed encrypted with age to the hosts'
//! recipients, decrypted here with the identities of the host config's
//! `age_identity_file` when a release is rendered. The plaintext goes into
//! the release (mode 0600) and nowhere else: not in logs, plan, history,
//! notifications or the API (see `release::render`).
//!
//! Only native X25519 identities (`AGE-SECRET-KEY-1…`, what `age-keygen`
//! writes) are read: plugin identities would run programs named by the
//! identity file, and SSH keys are the repository's signing keys.

use crate::desired::{Stack, secret_target};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Why a stack's secrets cannot be decrypted on this host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "stacks/{stack}/{file} needs an age identity, and this host has none: set `age_identity_file:` in the host config to a file made by `age-keygen`"
    )]
    NoIdentity { stack: String, file: String },
    #[error("age identity file {}: {why}", path.display())]
    Identity { path: PathBuf, why: String },
    #[error("stacks/{stack}/{file} cannot be decrypted with {}: {why}", identity.display())]
    Decrypt {
        stack: String,
        file: String,
        identity: PathBuf,
        why: String,
    },
}

/// The identities of an `age-keygen` file: one `AGE-SECRET-KEY-1…` per
/// line, `#` comments and blank lines skipped.
///
/// # Errors
/// The file cannot be read, a line is not an X25519 identity (the message
/// gives the line number, never the line), or it holds none.
pub fn load_identities(path: &Path) -> Result<Vec<age::x25519::Identity>, Error> {
    let err = |why: String| Error::Identity {
        path: path.to_path_buf(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with("AGE-PLUGIN-") {
            return Err(err(format!(
                "line {}: plugin identities are not supported; use a native X25519 identity from `age-keygen`",
                i + 1
            )));
        }
        let id = age::x25519::Identity::from_str(line).map_err(|_| {
            err(format!(
                "line {} is not an age identity (`AGE-SECRET-KEY-1…`, as `age-keygen` writes)",
                i + 1
            ))
        })?;
        out.push(id);
    }
    if out.is_empty() {
        return Err(err(
            "holds no identity; write one with `age-keygen -o FILE`".into(),
        ));
    }
    Ok(out)
}

/// The public recipients of the identities in `path`, for
/// `daemon --check-config` (what to encrypt to).
///
/// # Errors
/// As [`load_identities`].
pub fn recipients(path: &Path) -> Result<Vec<String>, Error> {
    Ok(load_identities(path)?
        .iter()
        .map(|i| i.to_public().to_string())
        .collect())
}

/// Decrypts `ciphertext` (binary or `age -a` armored) with any of
/// `identities`.
///
/// # Errors
/// Not encrypted to any of them, or not an age file; the message says which.
pub fn decrypt(identities: &[age::x25519::Identity], ciphertext: &[u8]) -> Result<Vec<u8>, String> {
    const NOT_OURS: &str = "it is not encrypted to this host's recipient; re-encrypt it with `-r` for the recipient `age-keygen -y` prints from the host's identity file";
    // A header that does not parse: not age, or cut short.
    let decryptor = age::Decryptor::new_buffered(age::armor::ArmoredReader::new(ciphertext))
        .map_err(|e| {
            format!("it is not an age file ({e}); encrypt it with `age -r <recipient>`")
        })?;
    let mut reader = decryptor
        .decrypt(identities.iter().map(|i| i as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => NOT_OURS.to_string(),
            e => e.to_string(),
        })?;
    let mut plain = Vec::new();
    reader
        .read_to_end(&mut plain)
        .map_err(|e| format!("the file is damaged: {e}"))?;
    Ok(plain)
}

/// What decrypts the stacks' `secrets:` on this host: built once at
/// start-up from the host config and carried on the host, so a render never
/// asks where its keys are. Another backend (SOPS, a vault) is one more
/// implementation.
pub trait Decryptor: Send + Sync {
    /// The plaintext of each of `stack`'s `secrets:`, as `(path of the
    /// decrypted file in the release, bytes)` in `secrets:` order.
    ///
    /// # Errors
    /// [`Error::NoIdentity`] when this host has no key and the stack has
    /// secrets; an unreadable key; a file that does not decrypt. Each names
    /// the stack's file.
    fn decrypt_stack(&self, stack: &Stack) -> Result<Vec<(String, Vec<u8>)>, Error>;

    /// The host-local files [`Decryptor::decrypt_stack`] reads for
    /// `stack` (its keys): a render is reused only while they are
    /// unchanged.
    fn inputs(&self, _stack: &Stack) -> Vec<PathBuf> {
        Vec::new()
    }
}

/// age with the X25519 identities of the host config's
/// `age_identity_file`. The file is read when a stack with secrets is
/// rendered, not at start-up: a replaced identity file counts from the next
/// render, as before this seam.
#[derive(Debug, Clone, Default)]
pub struct Age {
    identity_file: Option<PathBuf>,
}

impl Age {
    pub fn new(identity_file: Option<PathBuf>) -> Age {
        Age { identity_file }
    }
}

impl Decryptor for Age {
    /// Reads the identity file only when the stack has secrets.
    fn decrypt_stack(&self, stack: &Stack) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let Some(first) = stack.spec.secrets.first() else {
            return Ok(Vec::new());
        };
        let Some(identity) = self.identity_file.as_deref() else {
            return Err(Error::NoIdentity {
                stack: stack.name.clone(),
                file: first.clone(),
            });
        };
        let identities = load_identities(identity)?;
        let mut out = Vec::new();
        for file in &stack.spec.secrets {
            let ciphertext = stack.files.get(file).map(Vec::as_slice).unwrap_or_default();
            let plain = decrypt(&identities, ciphertext).map_err(|why| Error::Decrypt {
                stack: stack.name.clone(),
                file: file.clone(),
                identity: identity.to_path_buf(),
                why,
            })?;
            out.push((secret_target(file).to_string(), plain));
        }
        Ok(out)
    }

    fn inputs(&self, stack: &Stack) -> Vec<PathBuf> {
        match (&self.identity_file, stack.spec.secrets.is_empty()) {
            (Some(f), false) => vec![f.clone()],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encrypt(to: &age::x25519::Identity, plain: &[u8]) -> Vec<u8> {
        age::encrypt(&to.to_public(), plain).unwrap()
    }

    #[test]
    fn decrypts_with_any_identity_of_the_file_and_names_a_wrong_recipient() {
        let (a, b) = (
            age::x25519::Identity::generate(),
            age::x25519::Identity::generate(),
        );
        let ct = encrypt(&b, b"TOKEN=s3cret\n");
        assert_eq!(
            decrypt(&[a.clone(), b], &ct).unwrap(),
            b"TOKEN=s3cret\n".to_vec()
        );
        let why = decrypt(&[a], &ct).unwrap_err();
        assert!(
            why.contains("not encrypted to this host's recipient"),
            "{why}"
        );
        let why = decrypt(&[age::x25519::Identity::generate()], b"TOKEN=clear\n").unwrap_err();
        assert!(why.contains("not an age file"), "{why}");
    }

    #[test]
    fn identity_files_as_age_keygen_writes_them() {
        use age::secrecy::ExposeSecret;
        let dir = tempfile::tempdir().unwrap();
        let id = age::x25519::Identity::generate();
        let path = dir.path().join("key.txt");
        std::fs::write(
            &path,
            format!(
                "# created: 2026-12-05T12:00:00Z\n# public key: {}\n{}\n",
                id.to_public(),
                id.to_string().expose_secret()
            ),
        )
        .unwrap();
        assert_eq!(recipients(&path).unwrap(), vec![id.to_public().to_string()]);

        std::fs::write(&path, "# nothing\n").unwrap();
        let e = load_identities(&path).err().unwrap().to_string();
        assert!(e.contains("holds no identity"), "{e}");
        std::fs::write(&path, "AGE-SECRET-KEY-1NOTAKEY\n").unwrap();
        let e = load_identities(&path).err().unwrap().to_string();
        assert!(e.contains("line 1 is not an age identity"), "{e}");
        assert!(!e.contains("NOTAKEY"), "the line is never printed: {e}");
        std::fs::write(&path, "AGE-PLUGIN-YUBIKEY-1XYZ\n").unwrap();
        let e = load_identities(&path).err().unwrap().to_string();
        assert!(e.contains("plugin identities are not supported"), "{e}");
    }
}
