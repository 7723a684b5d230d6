//! Promotion, decided (issue 34): which verified entry of a gated stack's
//! `promote_from` source its gate passes, the line-level edit of
//! `stack.yaml` that pins it, and the pull request that proposes it to the
//! approver. Pure: `stackpin pin --from-verified` and the proposing host
//! (`crate::propose`) call the same functions, so the production bump is
//! written by the rule that will judge it.

use crate::desired::image::ImageRef;
use crate::desired::spec::{PromoteFrom, QuarantinedEntry, VerifiedEntry};
use crate::desired::{self, DesiredState, edit};
use crate::gate::{self, Verdict};
use std::collections::BTreeMap;

/// A gated stack's gate and the entries of its source that count: `policy`
/// is the host's (its gate wins over the commit's, lengthened by the
/// commit's soak, and only entries its `verifiers:` signed count, with why
/// each other one does not); without one, the commit's `promote_from:` and
/// every entry, signatures unchecked. `None`: the stack is not gated.
pub fn gate_input(
    state: &DesiredState,
    policy: Option<&crate::policy::HostPolicy>,
    name: &str,
) -> Option<(PromoteFrom, Vec<VerifiedEntry>, Vec<String>)> {
    let commit_gate = state
        .stacks
        .get(name)
        .and_then(|s| s.spec.promote_from.as_ref());
    let promote = policy
        .and_then(|p| p.effective(name).promote_from)
        .map(|h| h.lengthened_by(commit_gate))
        .or_else(|| commit_gate.cloned())?;
    let (entries, ignored) = match policy {
        Some(p) => {
            crate::reconcile::inputs::trusted_markers(p, state, &promote.stack, chrono::Utc::now())
        }
        None => (
            state
                .verified
                .get(&promote.stack)
                .cloned()
                .unwrap_or_default(),
            Vec::new(),
        ),
    };
    Some((promote, entries, ignored))
}

/// The entry chosen for a promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The source stack.
    pub source: String,
    /// (service of the target, pin) for every service the target pins.
    pub pins: Vec<(String, String)>,
    /// The newest entry of the source the gate passes.
    pub entry: VerifiedEntry,
    /// A newer entry the gate does not pass yet, and why.
    pub newer: Option<String>,
    /// The target's gate, as it judged the entry.
    pub promote: PromoteFrom,
}

/// Why no entry can be promoted (the text names the file and the fix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoChoice(pub String);

/// The pins of the newest entry of `stack`'s source that its gate passes,
/// services mapped as the gate maps them; entries holding a digest that a
/// host quarantined are skipped unless `force`.
///
/// # Errors
/// The stack is not valid, not gated, or no entry passes (each with why).
pub fn choose(
    state: &DesiredState,
    policy: Option<&crate::policy::HostPolicy>,
    stack: &str,
    force: bool,
) -> Result<Choice, NoChoice> {
    let rel = format!("stacks/{stack}/stack.yaml");
    let Some(target) = state.stacks.get(stack) else {
        let why: Vec<String> = state
            .findings
            .iter()
            .filter(|f| f.stack.as_deref() == Some(stack))
            .map(|f| f.to_string())
            .collect();
        return Err(NoChoice(format!(
            "{rel}: not a valid stack of {} ({}); fix it first (`stackpin validate`)",
            state.source,
            why.join("; ")
        )));
    };
    let Some((promote, entries, ignored)) = gate_input(state, policy, stack) else {
        return Err(NoChoice(format!(
            "{rel}: promote_from: not set, here or in the host's policy; a promotion copies the pins the stack's source verified: add `promote_from: STAGING_STACK`"
        )));
    };
    choose_from(state, target, promote, &entries, &ignored, force)
}

/// [`choose`] over given entries of the source, judged by `promote`.
///
/// # Errors
/// No entry passes (each with why).
pub fn choose_from(
    state: &DesiredState,
    target: &desired::Stack,
    promote: PromoteFrom,
    entries: &[VerifiedEntry],
    ignored: &[String],
    force: bool,
) -> Result<Choice, NoChoice> {
    let stack = target.name.as_str();
    let source = promote.stack.clone();
    let marks = Marks::of(state, &[source.as_str(), stack]);
    let mut newer: Option<String> = None;
    let mut skipped = Vec::new();
    // Entries are read newest first: any before the chosen one is newer.
    for e in entries.iter().rev() {
        if !force && let Some(why) = e.images.values().find_map(|p| marks.quarantined(p)) {
            newer.get_or_insert_with(|| format!("{source} {}: {why}", e.version));
            skipped.push(format!("{}: {why}", e.version));
            continue;
        }
        let mapped: Result<Vec<(String, String)>, String> = target
            .pins
            .keys()
            .map(|svc| {
                let theirs = promote.source_service(svc);
                e.images
                    .get(theirs)
                    .map(|p| (svc.clone(), p.clone()))
                    .ok_or_else(|| format!("{} has no service {theirs}", e.version))
            })
            .collect();
        let mapped = match mapped {
            Ok(m) => m,
            Err(why) => {
                skipped.push(why);
                continue;
            }
        };
        let refs: Vec<(String, ImageRef)> = mapped
            .iter()
            .filter_map(|(s, p)| Some((s.clone(), ImageRef::parse(p).ok()?)))
            .collect();
        let verdict = gate::promotion(
            Some(&promote),
            refs.iter().map(|(s, r)| (s, r)),
            std::slice::from_ref(e),
            None,
        );
        match verdict {
            Verdict::Pass { .. } if refs.len() == mapped.len() => {
                return Ok(Choice {
                    source,
                    pins: mapped,
                    entry: e.clone(),
                    newer,
                    promote,
                });
            }
            v => {
                let why = v.describe();
                newer.get_or_insert_with(|| format!("{source} {}: {why}", e.version));
                skipped.push(format!("{}: {why}", e.version));
            }
        }
    }
    let mut why = if entries.is_empty() {
        format!("verified/{source}.yaml has no entry that counts here")
    } else {
        format!(
            "no entry of verified/{source}.yaml passes {stack}'s gate: {}",
            skipped.join("; ")
        )
    };
    if !ignored.is_empty() {
        why.push_str(&format!("; not counted: {}", ignored.join("; ")));
    }
    Err(NoChoice(why))
}

/// The quarantined and verified entries of some stacks, as the desired
/// state's `quarantined/<stack>.yaml` and `verified/<stack>.yaml` hold them
/// (a file that does not parse holds nothing here: the hosts judge for
/// themselves).
pub struct Marks<'a> {
    quarantined: Vec<(&'a str, &'a QuarantinedEntry)>,
    verified: Vec<&'a VerifiedEntry>,
}

impl<'a> Marks<'a> {
    pub fn of(state: &'a DesiredState, stacks: &[&str]) -> Marks<'a> {
        let mut m = Marks {
            quarantined: Vec::new(),
            verified: Vec::new(),
        };
        for (name, list) in &state.quarantined {
            if stacks.contains(&name.as_str()) {
                m.quarantined
                    .extend(list.iter().map(|e| (name.as_str(), e)));
            }
        }
        for (name, list) in &state.verified {
            if stacks.contains(&name.as_str()) {
                m.verified.extend(list);
            }
        }
        m
    }

    /// Why `pin`'s digest is quarantined: the newest entry that holds it,
    /// unless a verified entry holds it since (it was retried and passed).
    pub fn quarantined(&self, pin: &str) -> Option<String> {
        let d = digest(pin)?;
        let (stack, q) = self
            .quarantined
            .iter()
            .rev()
            .find(|(_, q)| q.images.values().any(|p| digest(p).as_deref() == Some(&d)))?;
        let later = self.verified.iter().any(|v| {
            v.verified_at > q.quarantined_at
                && v.images.values().any(|p| digest(p).as_deref() == Some(&d))
        });
        (!later).then(|| {
            format!(
                "{} was quarantined on {} at {} ({stack} {}: {})",
                short(pin),
                q.host,
                q.quarantined_at,
                q.version,
                q.reason
            )
        })
    }
}

/// The digest of a pin (`sha256:…`), when it has one.
pub fn digest(pin: &str) -> Option<String> {
    ImageRef::parse(pin).ok().and_then(|r| r.digest)
}

/// `repo@sha256:` and the digest's first 12 hex digits.
pub fn short(pin: &str) -> String {
    match pin.split_once("@sha256:") {
        Some((repo, hex)) => format!("{repo}@sha256:{}", &hex[..12.min(hex.len())]),
        None => pin.to_string(),
    }
}

/// The commit message of a pin edit: the subject names the promotion (or
/// the one pin), the body every old and new digest.
pub fn message(
    stack: &str,
    changes: &[Change],
    version: Option<&str>,
    from: Option<(&str, &VerifiedEntry)>,
) -> String {
    let mut m = match (from, changes) {
        (Some((source, e)), _) => format!("promote {source} {} to {stack}\n\n", e.version),
        (None, [c]) => format!(
            "pin {stack}/{}: {} -> {}\n\n",
            c.service,
            c.old.as_deref().map_or("(new)".to_string(), short),
            short(&c.new)
        ),
        (None, _) => format!("pin {stack}\n\n"),
    };
    for c in changes {
        m.push_str(&format!(
            "{}: {} -> {}\n",
            c.service,
            c.old.as_deref().unwrap_or("(none)"),
            c.new
        ));
    }
    if let Some(v) = version {
        m.push_str(&format!("version: {v}\n"));
    }
    if let Some((_, e)) = from {
        m.push_str(&format!("verified on {} at {}", e.host, e.verified_at));
        if let Some(t) = &e.soaked_at {
            m.push_str(&format!(", soaked until {t}"));
        }
        m.push('\n');
    }
    m
}

/// One pin an edit changes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    pub service: String,
    pub old: Option<String>,
    pub new: String,
}

/// `stack.yaml`'s text with `pins` (and `version`) set, every other byte
/// kept (`desired::edit`), checked to read back; and what changed.
///
/// # Errors
/// The file has no place for the pin, or the edit would not read back.
pub fn apply(
    text: &str,
    pins: &[(String, String)],
    version: Option<&str>,
) -> Result<(String, Vec<Change>), String> {
    let mut out = text.to_string();
    let mut changes = Vec::new();
    for (service, new) in pins {
        let (edited, old) =
            edit::set_entry(&out, "images", service, new).map_err(|e| e.to_string())?;
        out = edited;
        changes.push(Change {
            service: service.clone(),
            old,
            new: new.clone(),
        });
    }
    if let Some(v) = version {
        out = edit::set_top(&out, "version", v)
            .map_err(|e| e.to_string())?
            .0;
    }
    reads_back(&out, &changes, version)
        .map_err(|why| format!("the edit would not read back ({why})"))?;
    Ok((out, changes))
}

/// The edited text parses, and holds the pins (and version) asked for.
fn reads_back(text: &str, pins: &[Change], version: Option<&str>) -> Result<(), String> {
    let v: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    for c in pins {
        if v["images"][&c.service].as_str() != Some(c.new.as_str()) {
            return Err(format!("images.{} is not {}", c.service, c.new));
        }
    }
    if let Some(want) = version
        && v["version"].as_str() != Some(want)
    {
        return Err(format!("version is not {want}"));
    }
    Ok(())
}

/// What a pull request proposing a promotion says: the evidence the
/// approver reviews.
#[derive(Debug, Clone)]
pub struct Evidence<'a> {
    /// The host proposing (it verified and soaked the entry).
    pub host: &'a str,
    pub choice: &'a Choice,
    /// The target stack.
    pub target: &'a str,
    /// The target's `version:` before the promotion.
    pub old_version: Option<&'a str>,
    pub changes: &'a [Change],
    /// The history line of the source host's deploy of the entry's
    /// version: its gate verdict and each smoke check with its time.
    pub deploy_note: Option<&'a str>,
    /// The target as the desired state declares it after the edit.
    pub after: Option<&'a desired::Stack>,
    /// The gate verdict on the edited desired state.
    pub verdict: &'a Verdict,
}

/// The marker a proposal's body ends with: which (from, to) it is, for
/// whoever reads the pull request by program.
pub const MARKER: &str = "<!-- stackpin-proposal";

/// The pull request's title and Markdown body. Pure.
pub fn proposal(ev: &Evidence<'_>) -> (String, String) {
    let c = ev.choice;
    let e = &c.entry;
    let title = format!("Promote {} {} to {}", c.source, e.version, ev.target);
    let mut b = String::new();
    b.push_str(&format!(
        "stackpin on `{}` verified `{}` {} and proposes it for `{}`. Each production host judges the merge with its own gate and keys; approve and merge when the evidence below is what you expect.\n\n",
        ev.host, c.source, e.version, ev.target
    ));
    b.push_str("| | |\n|---|---|\n");
    b.push_str(&format!("| Source | `{}` on `{}` |\n", c.source, e.host));
    let commit = if e.commit.is_empty() {
        "unknown".to_string()
    } else {
        format!("`{}`", &e.commit[..12.min(e.commit.len())])
    };
    b.push_str(&format!(
        "| Release | `{}` (desired-state commit {commit}) |\n",
        e.version
    ));
    b.push_str(&format!("| Verified | {} |\n", e.verified_at));
    match (&e.soaked_at, c.promote.soak) {
        (Some(at), Some(soak)) => b.push_str(&format!(
            "| Soaked | {} with no failed smoke, heal or restart, stamped {at} |\n",
            humantime::format_duration(soak)
        )),
        (Some(at), None) => b.push_str(&format!("| Soaked | stamped {at} |\n")),
        (None, _) => b.push_str("| Soaked | no soak asked |\n"),
    }
    b.push_str(&format!(
        "| Signed | {} |\n\n",
        if e.signature.is_some() {
            "yes (SSH, namespace `stackpin-verified`)"
        } else {
            "no: only the recording host counts it"
        }
    ));
    b.push_str(&format!("### Smoke on `{}`\n\n", e.host));
    match ev.deploy_note {
        Some(note) => {
            for part in note.split("; ").filter(|p| !p.is_empty()) {
                b.push_str(&format!("- {}\n", md_line(part)));
            }
        }
        None => b.push_str("- the deploy's history line is no longer on this host\n"),
    }
    b.push_str(&format!(
        "\n### Images\n\n| Service | `{}` now | Proposed |\n|---|---|---|\n",
        ev.target
    ));
    let old_v = ev.old_version.unwrap_or("?");
    for ch in ev.changes {
        let old = ch.old.as_deref().map_or("(none)".to_string(), |o| {
            format!("`{}` ({old_v})", short(o))
        });
        let new = if ch.old.as_deref() == Some(ch.new.as_str()) {
            "unchanged".to_string()
        } else {
            format!("`{}` ({})", short(&ch.new), e.version)
        };
        b.push_str(&format!("| {} | {old} | {new} |\n", ch.service));
    }
    b.push_str(&format!(
        "\n### What the hosts of `{}` will do\n\n",
        ev.target
    ));
    for ch in ev.changes {
        let start_first = ev
            .after
            .is_some_and(|s| s.rollout.start_first.contains(&ch.service));
        let what = if ch.old.as_deref() == Some(ch.new.as_str()) {
            "kept".to_string()
        } else if start_first {
            "recreated start-first (the new container serves before the old one stops)".to_string()
        } else {
            "recreated stop-first".to_string()
        };
        b.push_str(&format!("- `{}`: {what}\n", ch.service));
    }
    if let Some(bk) = ev.after.and_then(|s| s.spec.backup.as_ref()) {
        let mut what: Vec<String> = bk
            .postgres
            .iter()
            .flat_map(|p| &p.databases)
            .map(|d| format!("PostgreSQL database `{d}`"))
            .collect();
        what.extend(bk.volumes.iter().map(|v| format!("volume `{v}`")));
        if !what.is_empty() {
            b.push_str(&format!(
                "- before the deploy, a backup of {} ({})\n",
                what.join(", "),
                if bk.required.unwrap_or(true) {
                    "a failed backup stops the deploy"
                } else {
                    "not required"
                }
            ));
        }
    }
    b.push_str(&format!(
        "\n### The gate\n\n{} (the gate as the desired state declares it; each production host judges the merge with its own policy and keys)\n",
        md_line(&ev.verdict.describe())
    ));
    if let Some(n) = &c.newer {
        b.push_str(&format!("\nNot proposed yet: {}\n", md_line(n)));
    }
    let images: BTreeMap<&str, &str> = c
        .pins
        .iter()
        .map(|(s, p)| (s.as_str(), p.as_str()))
        .collect();
    b.push_str(&format!(
        "\n{MARKER} {} -->\n",
        serde_json::json!({"from": c.source, "to": ev.target, "version": e.version, "images": images})
    ));
    (title, b)
}

/// One line of Markdown: no newlines, no table breaks, no HTML.
fn md_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
        .replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "# production\nversion: v1 # label\nimages:\n  web: &w \"ghcr.io/acme/app@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" # pinned\n  db: {image: x} \n";

    fn pin(c: char) -> String {
        format!("ghcr.io/acme/app@sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn apply_edits_only_the_pins_and_the_version() {
        let text = "# production\nversion: v1 # label\nimages:\n  web: \"ghcr.io/acme/app@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" # pinned\n";
        let (out, changes) = apply(text, &[("web".into(), pin('b'))], Some("v2")).unwrap();
        assert_eq!(
            out,
            text.replace(&pin('a'), &pin('b')).replace("v1 #", "v2 #")
        );
        assert_eq!(changes[0].old.as_deref(), Some(pin('a').as_str()));
        assert!(apply(YAML, &[("db".into(), pin('b'))], None).is_err());
    }

    fn entry() -> VerifiedEntry {
        VerifiedEntry {
            version: "v2".into(),
            images: [("web".to_string(), pin('b'))].into(),
            verified_at: "2026-12-01T10:00:00Z".into(),
            host: "staging-1".into(),
            commit: "4f2a9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b".into(),
            soaked_at: Some("2026-12-01T10:30:00Z".into()),
            signature: Some("sig".into()),
        }
    }

    #[test]
    fn the_proposal_carries_the_evidence_and_nothing_unescaped() {
        let mut promote = PromoteFrom::stack("shop-staging");
        promote.soak = Some(std::time::Duration::from_secs(1800));
        let choice = Choice {
            source: "shop-staging".into(),
            pins: vec![("web".into(), pin('b'))],
            entry: entry(),
            newer: None,
            promote,
        };
        let changes = vec![Change {
            service: "web".into(),
            old: Some(pin('a')),
            new: pin('b'),
        }];
        let verdict = Verdict::Pass {
            source: "shop-staging".into(),
            version: "v2".into(),
        };
        let (title, body) = proposal(&Evidence {
            host: "staging-1",
            choice: &choice,
            target: "shop",
            old_version: Some("v1"),
            changes: &changes,
            deploy_note: Some(
                "not gated; smoke: passed after 2 attempt(s): http http://x/health in 1s, containers in 5s; hook <b>|</b>",
            ),
            after: None,
            verdict: &verdict,
        });
        assert_eq!(title, "Promote shop-staging v2 to shop");
        for want in [
            "| Release | `v2` (desired-state commit `4f2a9c0d1e2f`) |",
            "| Verified | 2026-12-01T10:00:00Z |",
            "| Soaked | 30m with no failed smoke, heal or restart, stamped 2026-12-01T10:30:00Z |",
            "- smoke: passed after 2 attempt(s): http http://x/health in 1s, containers in 5s\n",
            "- hook &lt;b&gt;\\|&lt;/b&gt;\n",
            "| web | `ghcr.io/acme/app@sha256:aaaaaaaaaaaa` (v1) | `ghcr.io/acme/app@sha256:bbbbbbbbbbbb` (v2) |",
            "- `web`: recreated stop-first",
            "verified in shop-staging as v2 (the gate as the desired state declares it",
            "<!-- stackpin-proposal {\"from\":\"shop-staging\",\"to\":\"shop\",\"version\":\"v2\",\"images\":{\"web\":\"ghcr.io/acme/app@sha256:bbbb",
        ] {
            assert!(body.contains(want), "{want}\n---\n{body}");
        }
    }
}
