//! What would change between the current release and the desired one: a
//! unified diff per file (secret values in `.env` masked) and the image
//! changes. Pure: the caller reads both trees.

use crate::desired::image::ImageRef;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Added,
    Removed,
    Modified,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileDiff {
    pub path: String,
    pub change: Change,
    /// Unified diff (`--- a/…`/`+++ b/…`); a note for binary files.
    pub unified: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ImageChange {
    pub service: String,
    pub old: Option<ImageRef>,
    pub new: Option<ImageRef>,
}

/// Files that describe the release itself rather than its content.
const SKIP: &[&str] = &["release.json"];

/// Diffs two release trees (relative path -> bytes). The content of the
/// files in `secret` (decrypted secrets, in either tree) is never shown:
/// only that they changed.
pub fn diff_trees(
    old: &BTreeMap<String, Vec<u8>>,
    new: &BTreeMap<String, Vec<u8>>,
    secret: &BTreeSet<String>,
) -> Vec<FileDiff> {
    let paths: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let mut out = Vec::new();
    for p in paths {
        if SKIP.contains(&p.as_str()) {
            continue;
        }
        let (a, b) = (old.get(p), new.get(p));
        if a == b {
            continue;
        }
        let change = match (a, b) {
            (None, _) => Change::Added,
            (_, None) => Change::Removed,
            _ => Change::Modified,
        };
        let (ta, tb) = (
            a.map(|x| std::str::from_utf8(x)),
            b.map(|x| std::str::from_utf8(x)),
        );
        let unified = match (ta, tb) {
            _ if secret.contains(p) => {
                format!("Secret file {p} differs (decrypted from {p}.age; content not shown)\n")
            }
            (Some(Err(_)), _) | (_, Some(Err(_))) => format!("Binary file {p} differs\n"),
            (ta, tb) => {
                let ta = ta.map(|r| r.unwrap_or_default()).unwrap_or("");
                let tb = tb.map(|r| r.unwrap_or_default()).unwrap_or("");
                similar::TextDiff::from_lines(ta, tb)
                    .unified_diff()
                    .context_radius(3)
                    .header(&format!("a/{p}"), &format!("b/{p}"))
                    .to_string()
            }
        };
        out.push(FileDiff {
            path: p.clone(),
            change,
            unified,
        });
    }
    out
}

/// Masks the values of a `.env` file except the keys in `public` (the
/// stack's `env:` values and the COMPOSE_* settings): what came from secret
/// env files never appears in a diff.
pub fn mask_env(text: &str, public: &BTreeSet<String>) -> String {
    let mut out = String::new();
    for line in text.lines() {
        match line.split_once('=') {
            Some((k, _))
                if !line.trim_start().starts_with('#')
                    && !public.contains(k.trim())
                    && !k.trim().starts_with("COMPOSE_") =>
            {
                out.push_str(k);
                out.push_str("=***");
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Image changes between the current release's images and the desired pins.
pub fn image_changes(
    old: &BTreeMap<String, ImageRef>,
    new: &BTreeMap<String, ImageRef>,
) -> Vec<ImageChange> {
    let services: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    services
        .into_iter()
        .filter(|s| old.get(*s).map(ImageRef::pinned) != new.get(*s).map(ImageRef::pinned))
        .map(|s| ImageChange {
            service: s.clone(),
            old: old.get(s).cloned(),
            new: new.get(s).cloned(),
        })
        .collect()
}

fn short(r: &ImageRef) -> String {
    match r.digest_hex() {
        Some(h) => format!("sha256:{}", &h[..12.min(h.len())]),
        None => r.to_string(),
    }
}

impl ImageChange {
    /// `web: sha256:1db6436ca7e0 → sha256:2b1e7c4f3a9d (version a → b)`.
    pub fn describe(&self, old_version: Option<&str>, new_version: &str) -> String {
        format!(
            "{}: {} → {} (version {} → {})",
            self.service,
            self.old
                .as_ref()
                .map(short)
                .unwrap_or_else(|| "(none)".into()),
            self.new
                .as_ref()
                .map(short)
                .unwrap_or_else(|| "(removed)".into()),
            old_version.unwrap_or("-"),
            new_version
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        files
            .iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn diffs_added_removed_modified() {
        let a = tree(&[
            ("compose.yaml", "a\nb\n"),
            ("old.conf", "x\n"),
            ("release.json", "{}"),
        ]);
        let b = tree(&[
            ("compose.yaml", "a\nc\n"),
            ("new.conf", "y\n"),
            ("release.json", "{\"x\":1}"),
        ]);
        let d = diff_trees(&a, &b, &BTreeSet::new());
        let kinds: Vec<(&str, &Change)> = d.iter().map(|f| (f.path.as_str(), &f.change)).collect();
        assert_eq!(
            kinds,
            vec![
                ("compose.yaml", &Change::Modified),
                ("new.conf", &Change::Added),
                ("old.conf", &Change::Removed)
            ]
        );
        assert!(
            d[0].unified.contains("--- a/compose.yaml")
                && d[0].unified.contains("-b\n")
                && d[0].unified.contains("+c\n"),
            "{}",
            d[0].unified
        );
    }

    #[test]
    fn env_secrets_are_masked() {
        let public: BTreeSet<String> = ["PORT".to_string()].into();
        let m = mask_env(
            "COMPOSE_PROJECT_NAME=x\nPORT=80\nDB_PASSWORD=hunter2\n",
            &public,
        );
        assert_eq!(m, "COMPOSE_PROJECT_NAME=x\nPORT=80\nDB_PASSWORD=***\n");
    }

    #[test]
    fn image_changes_describe_digests_and_versions() {
        let d1 = ImageRef::parse(&format!("app@sha256:{}", "1".repeat(64))).unwrap();
        let d2 = ImageRef::parse(&format!("app@sha256:{}", "2".repeat(64))).unwrap();
        let old: BTreeMap<String, ImageRef> = [
            ("web".to_string(), d1.clone()),
            ("db".to_string(), d1.clone()),
        ]
        .into();
        let new: BTreeMap<String, ImageRef> =
            [("web".to_string(), d2), ("db".to_string(), d1)].into();
        let c = image_changes(&old, &new);
        assert_eq!(c.len(), 1);
        assert_eq!(
            c[0].describe(Some("v1"), "v2"),
            "web: sha256:111111111111 → sha256:222222222222 (version v1 → v2)"
        );
    }
}
