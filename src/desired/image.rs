//! Image references: `registry/repo[:tag][@sha256:<64 hex>]`. A pin is a
//! reference with a digest; the tag, if any, is informational.

use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageRef {
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 lowercase hex>` when pinned.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses an image reference. Errors describe what is malformed so the
    /// caller can put it in a finding.
    pub fn parse(s: &str) -> Result<ImageRef, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("the image reference is empty".into());
        }
        if s.contains(char::is_whitespace) {
            return Err(format!("\"{s}\" contains white space"));
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
            return Err(format!("\"{s}\" has no repository name"));
        }
        if tag.as_deref() == Some("") {
            return Err(format!("\"{s}\" has an empty tag"));
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
pub fn check_digest(d: &str) -> Result<(), String> {
    let Some(hex) = d.strip_prefix("sha256:") else {
        return Err(format!(
            "digest \"{d}\" must start with \"sha256:\" followed by 64 hex characters"
        ));
    };
    if hex.len() != 64 {
        return Err(format!(
            "digest has {} hex characters after \"sha256:\", it needs exactly 64",
            hex.len()
        ));
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
    fn rejects_bad_digests() {
        assert!(
            ImageRef::parse("app@sha256:abc")
                .unwrap_err()
                .contains("exactly 64")
        );
        assert!(
            ImageRef::parse("app@md5:abc")
                .unwrap_err()
                .contains("sha256:")
        );
        let upper = format!("app@{}", D.to_uppercase().replace("SHA256", "sha256"));
        assert!(ImageRef::parse(&upper).unwrap_err().contains("lowercase"));
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("app:").is_err());
    }
}
