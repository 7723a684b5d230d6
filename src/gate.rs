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
    /// Every pin is verified in one entry, but the gate's `soak` is not
    /// over: the source has not stamped it soaked (`soaked` is `None`,
    /// `until` when it may), or stamped it after less than `soak`.
    Soaking {
        source: String,
        version: String,
        soak: String,
        until: String,
        soaked: Option<String>,
    },
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
        !matches!(self, Verdict::Refused { .. } | Verdict::Soaking { .. })
    }

    /// One line for status, history and notifications.
    pub fn describe(&self) -> String {
        match self {
            Verdict::NotGated => "not gated".into(),
            Verdict::Pass { source, version } => format!("verified in {source} as {version}"),
            Verdict::Soaking {
                source,
                version,
                until,
                soaked: None,
                ..
            } => format!(
                "verified in {source} as {version}, soaking until {until} (the host running {source} stamps it soaked if it ran clean until then)"
            ),
            Verdict::Soaking {
                source,
                version,
                soak,
                soaked: Some(got),
                ..
            } => format!(
                "verified in {source} as {version}, but soaked only {got} of the {soak} this host asks: the host running {source} stamps entries after the longest soak it knows (its `verified.soak`, or a `promote_from.soak` in the desired state)"
            ),
            Verdict::BreakGlass { reason, .. } => format!("{BREAK_GLASS_PREFIX}{reason}"),
            Verdict::Refused { missing, .. } => format!("unverified: {}", missing.join(", ")),
        }
    }
}

/// The digest `entry` verified for `service`.
fn verified_digest(entry: &VerifiedEntry, service: &str) -> Option<String> {
    ImageRef::parse(entry.images.get(service)?).ok()?.digest
}

/// How long `entry` soaked (from `verified_at` to `soaked_at`); `None`
/// before it was stamped or when a time does not parse.
pub fn soaked_for(entry: &VerifiedEntry) -> Option<std::time::Duration> {
    let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    let (from, to) = (at(&entry.verified_at)?, at(entry.soaked_at.as_deref()?)?);
    (to - from).to_std().ok()
}

/// When `entry`'s soak of `soak` ends, as RFC 3339 (its `verified_at` as
/// is when that does not parse).
fn soak_ends(entry: &VerifiedEntry, soak: std::time::Duration) -> String {
    chrono::DateTime::parse_from_rfc3339(&entry.verified_at)
        .ok()
        .and_then(|t| Some(t + chrono::Duration::from_std(soak).ok()?))
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
        .unwrap_or_else(|| entry.verified_at.clone())
}

fn words(d: std::time::Duration) -> String {
    humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string()
}

/// Decides whether `pins` (service -> pinned image) may run, given the
/// verified entries of the source stack that count (signed by a trusted
/// verifier, or from this host's own store). With `promote.soak`, an entry
/// that verified every pin counts only when it soaked that long.
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
    let mut soaking: Option<Verdict> = None;
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
            let soaked = soaked_for(entry);
            match promote.soak {
                Some(soak) if soaked.is_none_or(|d| d < soak) => {
                    // The soak that ends first is the one to report.
                    let v = Verdict::Soaking {
                        source: source.to_string(),
                        version: entry.version.clone(),
                        soak: words(soak),
                        until: soak_ends(entry, soak),
                        soaked: soaked.map(words),
                    };
                    let earlier = |old: &Verdict| match (old, &v) {
                        (Verdict::Soaking { until: a, .. }, Verdict::Soaking { until: b, .. }) => {
                            b < a
                        }
                        _ => false,
                    };
                    if soaking.as_ref().is_none_or(earlier) {
                        soaking = Some(v);
                    }
                    continue;
                }
                _ => {
                    return Verdict::Pass {
                        source: source.to_string(),
                        version: entry.version.clone(),
                    };
                }
            }
        }
        if best.as_ref().is_none_or(|b| missing.len() < b.len()) {
            best = Some(missing);
        }
    }
    let missing = match (&soaking, best) {
        (Some(_), _) => Vec::new(),
        (None, Some(b)) => b,
        (None, None) => pins
            .iter()
            .map(|(s, r)| format!("{s}={}", r.digest.as_deref().unwrap_or("no digest")))
            .collect(),
    };
    match break_glass {
        Some(reason) if !reason.trim().is_empty() => Verdict::BreakGlass {
            source: source.to_string(),
            reason: reason.to_string(),
            missing,
        },
        _ => soaking.unwrap_or_else(|| Verdict::Refused {
            source: source.to_string(),
            missing,
        }),
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
            soaked_at: None,
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

    #[test]
    fn a_soak_counts_only_stamped_entries_that_soaked_long_enough() {
        let both = [("web", "ghcr.io/a/odoo", 'a'), ("redis", "redis", 'b')];
        let p = pins(&both);
        let mut promote = PromoteFrom::stack("stg");
        promote.soak = Some(std::time::Duration::from_secs(1800));
        let first = entry("v1", &both);
        let stamped = |at: &str| VerifiedEntry {
            soaked_at: Some(at.into()),
            ..first.clone()
        };
        // Verified, not stamped: soaking until verified_at + soak.
        let v = promotion(Some(&promote), &p, std::slice::from_ref(&first), None);
        assert_eq!(
            v,
            Verdict::Soaking {
                source: "stg".into(),
                version: "v1".into(),
                soak: "30m".into(),
                until: "2026-01-31T07:25:00Z".into(),
                soaked: None,
            }
        );
        assert!(!v.allows());
        assert!(
            v.describe().contains("soaking until 2026-01-31T07:25:00Z"),
            "{}",
            v.describe()
        );
        // Stamped after 10 minutes: still short, and says so.
        let v = promotion(
            Some(&promote),
            &p,
            &[first.clone(), stamped("2026-01-31T07:05:00Z")],
            None,
        );
        assert!(
            matches!(&v, Verdict::Soaking { soaked: Some(s), .. } if s == "10m"),
            "{v:?}"
        );
        assert!(
            v.describe().contains("soaked only 10m of the 30m"),
            "{}",
            v.describe()
        );
        // Stamped after the soak: passes.
        let v = promotion(
            Some(&promote),
            &p,
            &[first.clone(), stamped("2026-01-31T07:25:00Z")],
            None,
        );
        assert!(matches!(v, Verdict::Pass { .. }), "{v:?}");
        // A stamp on another release does not lend its soak.
        let other = VerifiedEntry {
            soaked_at: Some("2026-02-01T00:00:00Z".into()),
            ..entry(
                "v0",
                &[("web", "ghcr.io/a/odoo", 'c'), ("redis", "redis", 'b')],
            )
        };
        let v = promotion(Some(&promote), &p, &[other, first.clone()], None);
        assert!(matches!(v, Verdict::Soaking { .. }), "{v:?}");
        // Break-glass goes through a soak as through any refusal.
        let v = promotion(
            Some(&promote),
            &p,
            std::slice::from_ref(&first),
            Some("incident 42"),
        );
        assert!(matches!(v, Verdict::BreakGlass { .. }), "{v:?}");
        // Without a soak the first entry passes, as before.
        promote.soak = None;
        let v = promotion(Some(&promote), &p, &[first], None);
        assert!(matches!(v, Verdict::Pass { .. }), "{v:?}");
    }

    #[test]
    fn an_entry_without_soaked_at_signs_what_entries_signed_before() {
        let e = entry("v1", &[("web", "ghcr.io/a/odoo", 'a')]);
        let old = format!(
            r#"{{"stack":"stg","version":"v1","images":{{"web":"ghcr.io/a/odoo@{}"}},"verified_at":"2026-01-31T06:55:00Z","host":"staging-1","commit":"{}"}}"#,
            d('a'),
            "0".repeat(40)
        );
        assert_eq!(String::from_utf8(e.signed_bytes("stg")).unwrap(), old);
        let soaked = VerifiedEntry {
            soaked_at: Some("2026-01-31T07:25:00Z".into()),
            ..e
        };
        let with = String::from_utf8(soaked.signed_bytes("stg")).unwrap();
        assert_eq!(
            with,
            format!(
                r#"{},"soaked_at":"2026-01-31T07:25:00Z"}}"#,
                &old[..old.len() - 1]
            )
        );
    }
}
