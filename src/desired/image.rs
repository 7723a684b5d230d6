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
        check_name(&repository).map_err(|e| format!("\"{s}\": {e}"))?;
        if let Some(t) = &tag {
            check_tag(t).map_err(|e| format!("\"{s}\": {e}"))?;
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

    /// The registry the image is pulled from, as the distribution grammar
    /// reads it: the first path component when it looks like a host (it has
    /// a `.` or a `:`, or is `localhost`), else Docker Hub (`docker.io`).
    pub fn registry(&self) -> &str {
        match self.repository.split_once('/') {
            Some((first, _))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                first
            }
            _ => "docker.io",
        }
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

/// Longest repository name the distribution grammar allows.
pub const NAME_MAX: usize = 255;

/// Checks a repository name against the distribution reference grammar as
/// Docker applies it (`ParseNormalizedNamed`): an optional domain (the first
/// component, when it has a `.` or a `:`, is `localhost`, or has an
/// upper-case letter), then path components of lower-case letters and
/// digits joined by `.`, `_`, `__` or dashes, at most 255 characters.
/// Tested against the reference package's own accept and reject cases.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.len() > NAME_MAX {
        return Err(format!(
            "the repository name is {} characters long; at most {NAME_MAX}",
            name.len()
        ));
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    };
    if let Some(d) = domain {
        check_domain(d)?;
    }
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "the repository name `{path}` must be lowercase (Docker refuses it)"
        ));
    }
    for component in path.split('/') {
        if !path_component(component) {
            return Err(format!(
                "`{component}` is not a valid repository path component: lowercase letters and digits, joined by `.`, `_`, `__` or dashes, none empty"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        let sep = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let s = &c[sep..i];
        if !(s == "." || s == "_" || s == "__" || s.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
}

/// `host[:port]`: a host name of `[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?`
/// labels joined by dots, or an IPv6 address in brackets (no zone).
fn check_domain(d: &str) -> Result<(), String> {
    let bad = || format!("`{d}` is not a valid registry host[:port]");
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or_else(bad)?;
        if inner.is_empty() || !inner.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(bad());
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (None, port)
    } else {
        match d.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    if let Some(h) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !h.split('.').all(label_ok) {
            return Err(bad());
        }
    }
    Ok(())
}

/// `[\w][\w.-]{0,127}`
fn check_tag(t: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = t.as_bytes();
    if b.len() > 128 || !word(b[0]) || !b.iter().all(|&x| word(x) || x == b'.' || x == b'-') {
        return Err(format!(
            "the tag `{t}` is not valid: letters, digits, `_`, `.` and `-`, not starting with `.` or `-`, at most 128"
        ));
    }
    Ok(())
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
    fn the_registry_is_the_first_component_when_it_is_a_host() {
        for (r, want) in [
            ("nginx", "docker.io"),
            ("library/nginx", "docker.io"),
            ("acme/app", "docker.io"),
            ("docker.io/library/nginx", "docker.io"),
            ("ghcr.io/acme/app", "ghcr.io"),
            ("127.0.0.1:5000/app", "127.0.0.1:5000"),
            ("localhost/app", "localhost"),
            ("registry:5000/team/app", "registry:5000"),
        ] {
            assert_eq!(ImageRef::parse(r).unwrap().registry(), want, "{r}");
        }
    }

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

    /// The accept and reject cases of the distribution reference package's
    /// own tests (`reference_test.go`, `normalize_test.go`), as Docker
    /// parses a compose `image:`. Digests there are any algorithm; a
    /// stackpin pin is sha256, so the sha512 case is refused here by design.
    #[test]
    fn follows_the_distribution_reference_grammar() {
        let f64 = "f".repeat(64);
        let accept = [
            "test_com".to_string(),
            "test.com:tag".into(),
            "test.com:5000".into(),
            "test.com/repo:tag".into(),
            "test:5000/repo".into(),
            "test:5000/repo:tag".into(),
            format!("test:5000/repo@sha256:{f64}"),
            format!("test:5000/repo:tag@sha256:{f64}"),
            "lowercase:Uppercase".into(),
            format!("{}a:tag-puts-this-over-max", "a/".repeat(127)),
            "sub-dom1.foo.com/bar/baz/quux".into(),
            "sub-dom1.foo.com/bar/baz/quux:some-long-tag".into(),
            "b.gcr.io/test.example.com/my-app:test.example.com".into(),
            "xn--n3h.com/myimage:xn--n3h.com".into(),
            "foo_bar.com:8080".into(),
            "foo/foo_bar.com:8080".into(),
            "192.168.1.1".into(),
            "192.168.1.1:tag".into(),
            "192.168.1.1:5000".into(),
            "192.168.1.1/repo".into(),
            "192.168.1.1:5000/repo".into(),
            "192.168.1.1:5000/repo:5050".into(),
            "[2001:db8::1]/repo".into(),
            "[2001:db8:1:2:3:4:5:6]/repo:tag".into(),
            "[2001:db8::1]:5000/repo".into(),
            "[2001:db8::1]:5000/repo:tag".into(),
            format!("[2001:db8::1]:5000/repo@sha256:{f64}"),
            "[2001:db8::]:5000/repo".into(),
            "[::1]:5000/repo".into(),
            "test-com:8080/foo".into(),
            "localhost/foo".into(),
            "Docker.io/library/nginx".into(),
            "a__b/c--d/e.f_g".into(),
        ];
        for r in &accept {
            assert!(ImageRef::parse(r).is_ok(), "{r}: {:?}", ImageRef::parse(r));
        }
        let reject = [
            ":justtag".to_string(),
            format!("@sha256:{f64}"),
            "repo@sha256:ffffffffffffffffffffffffffffffffff".into(),
            format!("validname@invaliddigest:{f64}"),
            "Uppercase:tag".into(),
            "test:5000/Uppercase/lowercase:tag".into(),
            format!("{}a:tag", "a/".repeat(128)),
            "aa/asdf$$^/aa".into(),
            "[2001:db8::1]".into(),
            "[2001:db8::1]:5000".into(),
            "[2001:db8::1]:tag".into(),
            "[fe80::1%eth0]:5000/repo".into(),
            "[fe80::1%@invalidzone]:5000/repo".into(),
            format!(
                "xn--7o8h.com/myimage:xn--7o8h.com@sha512:{}",
                "f".repeat(128)
            ),
            // issue 19: Docker refuses both at deploy time.
            format!("Docker.io/Library/NGINX@sha256:{f64}"),
            format!("docker.io//library/nginx!!@sha256:{f64}"),
            "a/-b".into(),
            "a/b-".into(),
            "a/b...c".into(),
            "a/b___c".into(),
            "-bad.example/app".into(),
            "app:.tag".into(),
            format!("app:{}", "t".repeat(129)),
        ];
        for r in &reject {
            assert!(ImageRef::parse(r).is_err(), "{r} was accepted");
        }
        let e = ImageRef::parse(&format!("Docker.io/Library/NGINX@sha256:{f64}")).unwrap_err();
        assert!(e.0.contains("must be lowercase"), "{e}");
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
