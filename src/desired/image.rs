//! Image references: `registry/repo[:tag][@sha256:<64 hex>]`. A pin is a
//! reference with a digest; the tag, if any, is informational.
//!
//! This is the one place that takes a reference string apart: everything
//! else (release records, the gate, drift, the engine's digest check) works
//! on [`ImageRef`] values. In `release.json` a reference is stored as its
//! fields; in the verified markers, which people read and write, as the
//! pinned string.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// What is wrong with an image reference, in words for a finding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RefError(pub String);

impl From<String> for RefError {
    fn from(s: String) -> RefError {
        RefError(s)
    }
}

impl From<&str> for RefError {
    fn from(s: &str) -> RefError {
        RefError(s.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ImageRef {
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 lowercase hex>` when pinned.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses an image reference. Errors describe what is malformed so the
    /// caller can put it in a finding.
    pub fn parse(s: &str) -> Result<ImageRef, RefError> {
        let s = s.trim();
        if s.is_empty() {
            return Err("the image reference is empty".into());
        }
        if s.contains(char::is_whitespace) {
            return Err(RefError::from(format!("\"{s}\" contains white space")));
        }
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => {
                check_digest(d).map_err(|e| format!("\"{s}\": {e}"))?;
                (n, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag is a ':' after the last '/', so "127.0.0.1:5000/app" has none.
        let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (repository, tag) = match name[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (name[..i].to_string(), Some(name[i + 1..].to_string()))
            }
            None => (name.to_string(), None),
        };
        if repository.is_empty() {
            return Err(RefError::from(format!("\"{s}\" has no repository name")));
        }
        if tag.as_deref() == Some("") {
            return Err(RefError::from(format!("\"{s}\" has an empty tag")));
        }
        Ok(ImageRef {
            repository,
            tag,
            digest,
        })
    }

    /// The hex part of the digest, when pinned.
    pub fn digest_hex(&self) -> Option<&str> {
        self.digest.as_deref().map(|d| &d[7..])
    }

    /// `repository@sha256:…`, the form stackpin pulls and writes into releases.
    pub fn pinned(&self) -> Option<String> {
        self.digest
            .as_ref()
            .map(|d| format!("{}@{}", self.repository, d))
    }
}

impl ImageRef {
    /// The repository as the engine lists it in RepoDigests: Docker Hub's
    /// `docker.io/` and `library/` prefixes dropped.
    pub fn normalized_repository(&self) -> &str {
        normalize_repository(&self.repository)
    }

    /// Whether `repo_digest` (`repo@sha256:…`, as the engine reports an
    /// image's RepoDigests or a container's configured image) names this
    /// pin: the same digest in the same (normalized) repository.
    pub fn matches(&self, repo_digest: &str) -> bool {
        let Some(digest) = &self.digest else {
            return false;
        };
        ImageRef::parse(repo_digest).is_ok_and(|other| {
            other.digest.as_ref() == Some(digest)
                && other.normalized_repository() == self.normalized_repository()
        })
    }

    /// Whether any of `repo_digests` names this pin (see [`ImageRef::matches`]).
    pub fn is_in(&self, repo_digests: &[String]) -> bool {
        repo_digests.iter().any(|rd| self.matches(rd))
    }

    /// Whether `reference` carries this pin's digest, whatever repository it
    /// names (a container runs the image a digest names, from any mirror).
    pub fn same_digest(&self, reference: &str) -> bool {
        self.digest.is_some()
            && ImageRef::parse(reference).is_ok_and(|other| other.digest == self.digest)
    }
}

/// A repository name as the engine lists it in RepoDigests: Docker Hub's
/// `docker.io/` and `library/` prefixes dropped.
pub fn normalize_repository(repo: &str) -> &str {
    let repo = ["docker.io/", "index.docker.io/", "registry-1.docker.io/"]
        .iter()
        .find_map(|p| repo.strip_prefix(p))
        .unwrap_or(repo);
    repo.strip_prefix("library/").unwrap_or(repo)
}

/// Reads a reference written either as its fields (`release.json` since the
/// typed format) or as one string (older releases, hand-written files).
impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            repository: String,
            #[serde(default)]
            tag: Option<String>,
            #[serde(default)]
            digest: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Fields(Fields),
        }
        let text = match Either::deserialize(d)? {
            Either::Text(s) => s,
            Either::Fields(f) => {
                let mut s = f.repository;
                if let Some(t) = f.tag {
                    s.push(':');
                    s.push_str(&t);
                }
                if let Some(dg) = f.digest {
                    s.push('@');
                    s.push_str(&dg);
                }
                s
            }
        };
        ImageRef::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Checks `sha256:<64 lowercase hex>`.
pub fn check_digest(d: &str) -> Result<(), RefError> {
    let Some(hex) = d.strip_prefix("sha256:") else {
        return Err(RefError::from(format!(
            "digest \"{d}\" must start with \"sha256:\" followed by 64 hex characters"
        )));
    };
    if hex.len() != 64 {
        return Err(RefError::from(format!(
            "digest has {} hex characters after \"sha256:\", it needs exactly 64",
            hex.len()
        )));
    }
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err("digest must be lowercase hex (0-9, a-f)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:1db6436ca7e084705cffcf3e760b6659cce449bd636edf94917b28de2df3fbe5";

    #[test]
    fn parses_the_forms() {
        let cases = [
            ("nginx", "nginx", None, false),
            ("nginx:1.25", "nginx", Some("1.25"), false),
            ("127.0.0.1:5000/app", "127.0.0.1:5000/app", None, false),
            (
                "127.0.0.1:5000/app:v1",
                "127.0.0.1:5000/app",
                Some("v1"),
                false,
            ),
        ];
        for (input, repo, tag, pinned) in cases {
            let r = ImageRef::parse(input).unwrap();
            assert_eq!(r.repository, repo, "{input}");
            assert_eq!(r.tag.as_deref(), tag, "{input}");
            assert_eq!(r.digest.is_some(), pinned, "{input}");
        }
        let r = ImageRef::parse(&format!("ghcr.io/acme/odoo:18@{D}")).unwrap();
        assert_eq!(r.repository, "ghcr.io/acme/odoo");
        assert_eq!(r.tag.as_deref(), Some("18"));
        assert_eq!(r.pinned().unwrap(), format!("ghcr.io/acme/odoo@{D}"));
        assert_eq!(r.digest_hex().unwrap().len(), 64);
    }

    #[test]
    fn matches_docker_hub_short_names_and_needs_the_same_digest() {
        let p = |s: &str| ImageRef::parse(s).unwrap();
        let rd = vec![format!("redis@{D}")];
        assert!(p(&format!("docker.io/library/redis@{D}")).is_in(&rd));
        assert!(p(&format!("redis@{D}")).is_in(&rd));
        assert!(p(&format!("library/redis@{D}")).is_in(&rd));
        assert!(p(&format!("docker.io/acme/app@{D}")).is_in(&[format!("acme/app@{D}")]));
        let rd = vec![format!("127.0.0.1:5000/app@{D}")];
        assert!(p(&format!("127.0.0.1:5000/app@{D}")).is_in(&rd));
        assert!(!p(&format!("127.0.0.1:5000/other@{D}")).is_in(&rd));
        let other = D.replace("1db6", "2db6");
        assert!(!p(&format!("127.0.0.1:5000/app@{other}")).is_in(&rd));
        assert!(!p("127.0.0.1:5000/app").is_in(&rd));
        assert!(!p(&format!("127.0.0.1:5000/app@{D}")).is_in(&[]));
        assert!(p(&format!("mirror.example/app@{D}")).same_digest(&rd[0]));
    }

    #[test]
    fn reads_fields_or_a_string_and_writes_fields() {
        let r = ImageRef::parse(&format!("ghcr.io/acme/odoo:18@{D}")).unwrap();
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["repository"], "ghcr.io/acme/odoo");
        assert_eq!(json["digest"], D);
        assert_eq!(serde_json::from_value::<ImageRef>(json).unwrap(), r);
        let old: ImageRef =
            serde_json::from_value(serde_json::json!(format!("ghcr.io/acme/odoo:18@{D}"))).unwrap();
        assert_eq!(old, r);
        assert!(serde_json::from_value::<ImageRef>(serde_json::json!("app@sha256:x")).is_err());
    }

    #[test]
    fn rejects_bad_digests() {
        assert!(
            ImageRef::parse("app@sha256:abc")
                .unwrap_err()
                .0
                .contains("exactly 64")
        );
        assert!(
            ImageRef::parse("app@md5:abc")
                .unwrap_err()
                .0
                .contains("sha256:")
        );
        let upper = format!("app@{}", D.to_uppercase().replace("SHA256", "sha256"));
        assert!(ImageRef::parse(&upper).unwrap_err().0.contains("lowercase"));
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("app:").is_err());
    }
}
