//! This host's verified store (`<root>/releases/verified/<stack>.yaml`) and
//! the runbooks' one-line marker `<root>/releases/verified/<stack>.txt`: the
//! releases that passed smoke here (a staging stack with `marks_verified`)
//! or that an operator verified by hand. The gate reads it for same-host
//! promotion; publishing copies it to git. A record, readable without the
//! pipeline. Next to it, the quarantined store
//! (`<root>/releases/quarantined/<stack>.yaml`): the releases that failed
//! here, published to `quarantined/<stack>.yaml` so that `pin` stops
//! proposing their digests.
//!
//! A store that cannot be read or parsed is an error, never an empty list:
//! reading it as empty and writing it back would lose every entry.

use crate::desired::image::ImageRef;
use crate::desired::spec::{QuarantinedEntry, QuarantinedFile, VerifiedEntry, VerifiedFile};
use crate::layout::Layout;
use crate::release;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the {kind} store {}", path.display())]
    Read {
        kind: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "failed to parse the {kind} store {}: {why}; fix or move the file (it is never overwritten while it cannot be read)",
        path.display()
    )]
    Parse {
        kind: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("failed to write the {kind} store {}", path.display())]
    Write {
        kind: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write the verified marker")]
    Marker(#[source] release::Error),
    #[error("failed to sign the entry with verified.signing_key: {0}")]
    Sign(String),
}

/// The host's verified entries for a stack, oldest first; empty when the
/// store does not exist.
///
/// # Errors
/// The file exists but cannot be read or parsed.
pub fn read(layout: &Layout, stack: &str) -> Result<Vec<VerifiedEntry>, Error> {
    Ok(
        read_file::<VerifiedFile>(&layout.verified_store(stack), "verified")?
            .unwrap_or_default()
            .verified,
    )
}

/// The host's quarantined entries for a stack, oldest first; empty when the
/// store does not exist.
///
/// # Errors
/// The file exists but cannot be read or parsed.
pub fn read_quarantined(layout: &Layout, stack: &str) -> Result<Vec<QuarantinedEntry>, Error> {
    Ok(
        read_file::<QuarantinedFile>(&layout.quarantined_store(stack), "quarantined")?
            .unwrap_or_default()
            .quarantined,
    )
}

fn read_file<F: serde::de::DeserializeOwned>(
    path: &Path,
    kind: &'static str,
) -> Result<Option<F>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Read {
                kind,
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut findings = Vec::new();
    let mut sink = crate::desired::Sink::new(None, path.display().to_string(), &mut findings);
    match crate::desired::parse_typed::<F>(&bytes, &mut sink) {
        Ok(f) => Ok(Some(f)),
        Err(_) => Err(Error::Parse {
            kind,
            why: findings
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join("; "),
            path: path.to_path_buf(),
        }),
    }
}

/// Records `version` with `images` (service -> pin) as verified on `host`:
/// appends an entry unless one with the same version and images is there,
/// and writes `verified/<stack>.txt`. With `key` (the host's
/// `verified.signing_key`) the entry is signed, so other hosts that trust
/// the key count it. Returns the entry and whether it was added.
///
/// # Guarantees
/// Idempotent for the same version and images; the store is replaced
/// atomically and never written when the existing one cannot be read.
pub fn record(
    layout: &Layout,
    host: &str,
    stack: &str,
    version: &str,
    images: &BTreeMap<String, ImageRef>,
    commit: Option<&str>,
    key: Option<&ssh_key::PrivateKey>,
) -> Result<(VerifiedEntry, bool), Error> {
    let mut list = read(layout, stack)?;
    let mut entry = VerifiedEntry {
        version: version.to_string(),
        images: pinned(images),
        verified_at: crate::history::now_rfc3339(),
        host: host.to_string(),
        commit: commit.unwrap_or("").to_string(),
        soaked_at: None,
        signature: None,
    };
    sign(&mut entry, stack, key)?;
    let existing = list
        .iter()
        .find(|e| e.images == entry.images && e.version == entry.version && e.soaked_at.is_none())
        .cloned();
    let added = existing.is_none();
    if added {
        list.push(entry.clone());
        write(layout, stack, list)?;
    }
    release::write_verified_txt(layout, stack, version).map_err(Error::Marker)?;
    Ok((existing.unwrap_or(entry), added))
}

/// Records that the release of `first` (an entry of this host's store)
/// soaked: a new entry with the same release, `verified_at` = `since` (when
/// it started to run clean here) and `soaked_at` = `at`, signed with `key`,
/// appended next to the first. Idempotent: a soaked entry of the same
/// release is kept and returned.
pub fn record_soaked(
    layout: &Layout,
    stack: &str,
    first: &VerifiedEntry,
    since: &str,
    at: &str,
    key: Option<&ssh_key::PrivateKey>,
) -> Result<VerifiedEntry, Error> {
    let mut list = read(layout, stack)?;
    if let Some(e) = list
        .iter()
        .find(|e| e.version == first.version && e.images == first.images && e.soaked_at.is_some())
    {
        return Ok(e.clone());
    }
    let mut entry = VerifiedEntry {
        verified_at: since.to_string(),
        soaked_at: Some(at.to_string()),
        signature: None,
        ..first.clone()
    };
    sign(&mut entry, stack, key)?;
    list.push(entry.clone());
    write(layout, stack, list)?;
    Ok(entry)
}

fn sign(
    entry: &mut VerifiedEntry,
    stack: &str,
    key: Option<&ssh_key::PrivateKey>,
) -> Result<(), Error> {
    entry.signature = signature(
        &entry.signed_bytes(stack),
        crate::desired::spec::VERIFIED_NAMESPACE,
        key,
    )?;
    Ok(())
}

fn signature(
    bytes: &[u8],
    namespace: &str,
    key: Option<&ssh_key::PrivateKey>,
) -> Result<Option<String>, Error> {
    key.map(|k| crate::trust::sign(k, namespace, bytes).map_err(Error::Sign))
        .transpose()
}

/// Replaces the store with `list`, atomically.
fn write(layout: &Layout, stack: &str, list: Vec<VerifiedEntry>) -> Result<(), Error> {
    write_file(
        &layout.verified_store(stack),
        "verified",
        &VerifiedFile { verified: list },
    )
}

fn write_file<F: serde::Serialize>(path: &Path, kind: &'static str, file: &F) -> Result<(), Error> {
    let text = serde_saphyr::to_string(file).map_err(|e| Error::Write {
        kind,
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    crate::fsutil::write_atomic(path, text.as_bytes(), 0o644).map_err(|source| Error::Write {
        kind,
        path: path.to_path_buf(),
        source,
    })
}

/// Records that the release `meta` describes failed here and was
/// quarantined, signed with `key`: appended to the quarantined store unless
/// an entry of the same release is there. Returns the entry and whether it
/// was added.
///
/// # Guarantees
/// Idempotent per release; the store is replaced atomically and never
/// written when the existing one cannot be read.
pub fn record_quarantined(
    layout: &Layout,
    host: &str,
    stack: &str,
    meta: &release::ReleaseMeta,
    reason: &str,
    key: Option<&ssh_key::PrivateKey>,
) -> Result<(QuarantinedEntry, bool), Error> {
    let mut list = read_quarantined(layout, stack)?;
    let mut entry = QuarantinedEntry {
        version: meta.version.clone(),
        images: pinned(&meta.images),
        reason: reason.to_string(),
        quarantined_at: crate::history::now_rfc3339(),
        host: host.to_string(),
        commit: meta.commit.clone().unwrap_or_default(),
        signature: None,
    };
    if let Some(e) = list
        .iter()
        .find(|e| e.version == entry.version && e.images == entry.images)
    {
        return Ok((e.clone(), false));
    }
    entry.signature = signature(
        &entry.signed_bytes(stack),
        crate::desired::spec::QUARANTINED_NAMESPACE,
        key,
    )?;
    list.push(entry.clone());
    write_file(
        &layout.quarantined_store(stack),
        "quarantined",
        &QuarantinedFile { quarantined: list },
    )?;
    Ok((entry, true))
}

/// service -> `repo@sha256:…`, as entries record images.
fn pinned(images: &BTreeMap<String, ImageRef>) -> BTreeMap<String, String> {
    images
        .iter()
        .map(|(k, v)| (k.clone(), v.pinned().unwrap_or_else(|| v.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:1db6436ca7e084705cffcf3e760b6659cce449bd636edf94917b28de2df3fbe5";

    #[test]
    fn records_once_and_refuses_to_overwrite_what_it_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let images: BTreeMap<String, ImageRef> =
            [("web".into(), ImageRef::parse(&format!("app@{D}")).unwrap())].into();
        assert!(read(&layout, "s").unwrap().is_empty());
        let (e, added) = record(&layout, "h", "s", "v1", &images, Some("c0"), None).unwrap();
        assert!(added);
        assert_eq!(e.images["web"], format!("app@{D}"));
        let (_, again) = record(&layout, "h", "s", "v1", &images, Some("c0"), None).unwrap();
        assert!(!again, "idempotent");
        assert_eq!(read(&layout, "s").unwrap().len(), 1);
        assert_eq!(
            release::read_verified_txt(&layout, "s").unwrap().as_deref(),
            Some("v1")
        );

        std::fs::write(layout.verified_store("s"), "verified: [ {").unwrap();
        let err = read(&layout, "s").unwrap_err();
        assert!(matches!(err, Error::Parse { .. }), "{err}");
        assert!(record(&layout, "h", "s", "v2", &images, None, None).is_err());
        assert_eq!(
            std::fs::read_to_string(layout.verified_store("s")).unwrap(),
            "verified: [ {",
            "an unreadable store is never overwritten"
        );
    }
}
