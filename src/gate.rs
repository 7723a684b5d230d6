//! The promotion gate (SPEC §4), pure: a stack with `promote_from: S` passes
//! only when ONE verified entry of S holds, for every service it pins, the
//! same digest for the same service (or for the service `promote_from`'s
//! `services:` map names).
//!
//! Service -> digest, not sets: staging verified `{web: A, redis: B}`, not
//! `{web: B, redis: A}`. Digests are compared, not repository names: a
//! digest names the exact bytes of a manifest, so the same digest pulled
//! from a mirror is the image staging verified. Two entries that together
//! cover the pins do not pass: the combination itself was never verified.

use crate::desired::image::ImageRef;
use crate::desired::spec::{PromoteFrom, VerifiedEntry};
use serde::Serialize;

/// How a break-glass deploy is marked in history notes (the runbooks' form).
pub const BREAK_GLASS_PREFIX: &str = "BREAK_GLASS: ";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The stack has no `promote_from`.
    NotGated,
    /// Every pin is in the verified entry of `version`.
    Pass { source: String, version: String },
    /// The gate would refuse, but break-glass lets it through (audited).
    BreakGlass {
        source: String,
        reason: String,
        missing: Vec<String>,
    },
    /// Refused: `missing` lists `service=sha256:…` not verified in one entry.
    Refused {
        source: String,
        missing: Vec<String>,
    },
}

impl Verdict {
    pub fn allows(&self) -> bool {
        !matches!(self, Verdict::Refused { .. })
    }

    /// One line for status, history and notifications.
    pub fn describe(&self) -> String {
        match self {
            Verdict::NotGated => "not gated".into(),
            Verdict::Pass { source, version } => format!("verified in {source} as {version}"),
            Verdict::BreakGlass { reason, .. } => format!("{BREAK_GLASS_PREFIX}{reason}"),
            Verdict::Refused { missing, .. } => format!("unverified: {}", missing.join(", ")),
        }
    }
}

/// The digest `entry` verified for `service`.
fn verified_digest(entry: &VerifiedEntry, service: &str) -> Option<String> {
    ImageRef::parse(entry.images.get(service)?).ok()?.digest
}

/// Decides whether `pins` (service -> pinned image) may run, given the
/// verified entries of the source stack that count (signed by a trusted
/// verifier, or from this host's own store).
pub fn promotion<'a>(
    promote: Option<&PromoteFrom>,
    pins: impl IntoIterator<Item = (&'a String, &'a ImageRef)>,
    entries: &[VerifiedEntry],
    break_glass: Option<&str>,
) -> Verdict {
    let Some(promote) = promote else {
        return Verdict::NotGated;
    };
    let source = promote.stack.as_str();
    let pins: Vec<(&String, &ImageRef)> = pins.into_iter().collect();
    let mut best: Option<Vec<String>> = None;
    // Newest entries last in the files; prefer the newest that passes.
    for entry in entries.iter().rev() {
        let missing: Vec<String> = pins
            .iter()
            .filter(|(s, r)| {
                let theirs = promote.source_service(s);
                r.digest.is_none() || verified_digest(entry, theirs) != r.digest
            })
            .map(|(s, r)| format!("{s}={}", r.digest.as_deref().unwrap_or("no digest")))
            .collect();
        if missing.is_empty() {
            return Verdict::Pass {
                source: source.to_string(),
                version: entry.version.clone(),
            };
        }
        if best.as_ref().is_none_or(|b| missing.len() < b.len()) {
            best = Some(missing);
        }
    }
    let missing = best.unwrap_or_else(|| {
        pins.iter()
            .map(|(s, r)| format!("{s}={}", r.digest.as_deref().unwrap_or("no digest")))
            .collect()
    });
    match break_glass {
        Some(reason) if !reason.trim().is_empty() => Verdict::BreakGlass {
            source: source.to_string(),
            reason: reason.to_string(),
            missing,
        },
        _ => Verdict::Refused {
            source: source.to_string(),
            missing,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexMap;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn pins(list: &[(&str, &str, char)]) -> IndexMap<String, ImageRef> {
        list.iter()
            .map(|(s, repo, c)| {
                (
                    s.to_string(),
                    ImageRef::parse(&format!("{repo}@{}", d(*c))).unwrap(),
                )
            })
            .collect()
    }

    fn entry(version: &str, list: &[(&str, &str, char)]) -> VerifiedEntry {
        VerifiedEntry {
            version: version.into(),
            images: list
                .iter()
                .map(|(s, repo, c)| (s.to_string(), format!("{repo}@{}", d(*c))))
                .collect(),
            verified_at: "2026-01-31T06:55:00Z".into(),
            host: "staging-1".into(),
            commit: "0".repeat(40),
            signature: None,
        }
    }

    #[test]
    fn table() {
        let both = [("web", "ghcr.io/a/odoo", 'a'), ("redis", "redis", 'b')];
        struct Case {
            name: &'static str,
            source: Option<&'static str>,
            pins: Vec<(&'static str, &'static str, char)>,
            entries: Vec<VerifiedEntry>,
            break_glass: Option<&'static str>,
            expect: fn(&Verdict) -> bool,
        }
        let cases = vec![
            Case {
                name: "no promote_from",
                source: None,
                pins: both.to_vec(),
                entries: vec![],
                break_glass: None,
                expect: |v| *v == Verdict::NotGated,
            },
            Case {
                name: "exact entry",
                source: Some("stg"),
                pins: both.to_vec(),
                entries: vec![entry("v1", &both)],
                break_glass: None,
                expect: |v| matches!(v, Verdict::Pass { version, .. } if version == "v1"),
            },
            Case {
                name: "partial match is refused and names the missing digest",
                source: Some("stg"),
                pins: both.to_vec(),
                entries: vec![entry(
                    "v1",
                    &[("web", "ghcr.io/a/odoo", 'a'), ("redis", "redis", 'c')],
                )],
                break_glass: None,
                expect: |v| matches!(v, Verdict::Refused { missing, .. } if missing == &vec![format!("redis={}", d('b'))]),
            },
            Case {
                name: "digests from two different entries are refused",
                source: Some("stg"),
                pins: both.to_vec(),
                entries: vec![
                    entry("v1", &[("web", "ghcr.io/a/odoo", 'a')]),
                    entry("v2", &[("redis", "redis", 'b')]),
                ],
                break_glass: None,
                expect: |v| matches!(v, Verdict::Refused { missing, .. } if missing.len() == 1),
            },
            Case {
                name: "same digest under another repository passes (digests are content addresses)",
                source: Some("stg"),
                pins: vec![("web", "mirror.example/odoo", 'a')],
                entries: vec![entry("v1", &[("web", "ghcr.io/a/odoo", 'a')])],
                break_glass: None,
                expect: |v| matches!(v, Verdict::Pass { .. }),
            },
            Case {
                name: "swapped digests are refused: service -> digest, not sets",
                source: Some("stg"),
                pins: vec![("web", "ghcr.io/a/odoo", 'b'), ("redis", "redis", 'a')],
                entries: vec![entry("v1", &both)],
                break_glass: None,
                expect: |v| matches!(v, Verdict::Refused { missing, .. } if missing.len() == 2),
            },
            Case {
                name: "the same digest under another service name is refused without a map",
                source: Some("stg"),
                pins: vec![("web", "ghcr.io/a/odoo", 'a')],
                entries: vec![entry("v1", &[("app", "ghcr.io/a/odoo", 'a')])],
                break_glass: None,
                expect: |v| matches!(v, Verdict::Refused { .. }),
            },
            Case {
                name: "no verified entries at all",
                source: Some("stg"),
                pins: both.to_vec(),
                entries: vec![],
                break_glass: None,
                expect: |v| matches!(v, Verdict::Refused { missing, .. } if missing.len() == 2),
            },
            Case {
                name: "break glass passes an unverified pin",
                source: Some("stg"),
                pins: both.to_vec(),
                entries: vec![],
                break_glass: Some("CVE hotfix"),
                expect: |v| matches!(v, Verdict::BreakGlass { reason, .. } if reason == "CVE hotfix"),
            },
            Case {
                name: "break glass with an empty reason does not pass",
                source: Some("stg"),
                pins: both.to_vec(),
                entries: vec![],
                break_glass: Some("  "),
                expect: |v| matches!(v, Verdict::Refused { .. }),
            },
            Case {
                name: "verified pins do not need break glass",
                source: Some("stg"),
                pins: both.to_vec(),
                entries: vec![entry("v1", &both)],
                break_glass: Some("x"),
                expect: |v| matches!(v, Verdict::Pass { .. }),
            },
            Case {
                name: "newest passing entry is named",
                source: Some("stg"),
                pins: both.to_vec(),
                entries: vec![entry("v1", &both), entry("v2", &both)],
                break_glass: None,
                expect: |v| matches!(v, Verdict::Pass { version, .. } if version == "v2"),
            },
        ];
        for c in cases {
            let p = pins(&c.pins);
            let promote = c.source.map(PromoteFrom::stack);
            let v = promotion(promote.as_ref(), &p, &c.entries, c.break_glass);
            assert!((c.expect)(&v), "{}: got {v:?}", c.name);
        }
    }

    #[test]
    fn a_services_map_names_the_source_service() {
        // The runbooks' tenant/admin split: both run what staging's `web` ran.
        let p = pins(&[
            ("odoo-tenant", "ghcr.io/a/odoo", 'a'),
            ("odoo-admin", "ghcr.io/a/odoo", 'a'),
            ("redis", "redis", 'b'),
        ]);
        let mut promote = PromoteFrom::stack("stg");
        promote.services = [
            ("odoo-tenant".to_string(), "web".to_string()),
            ("odoo-admin".to_string(), "web".to_string()),
        ]
        .into();
        let staged = entry(
            "v1",
            &[("web", "ghcr.io/a/odoo", 'a'), ("redis", "redis", 'b')],
        );
        let v = promotion(Some(&promote), &p, std::slice::from_ref(&staged), None);
        assert!(matches!(v, Verdict::Pass { .. }), "{v:?}");
        // A map cannot launder another service's digest.
        promote.services.insert("redis".into(), "web".into());
        let v = promotion(Some(&promote), &p, &[staged], None);
        assert!(
            matches!(&v, Verdict::Refused { missing, .. } if missing == &vec![format!("redis={}", d('b'))]),
            "{v:?}"
        );
    }
}
