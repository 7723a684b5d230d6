//! `stackpin pin STACK SERVICE IMAGE[:TAG|@DIGEST]`: writes one digest pin
//! into `stacks/<stack>/stack.yaml` of a desired-state checkout, changing
//! nothing else in the file (its comments, order and quoting stay: see
//! `desired::edit`). A tag is resolved to its digest in the registry, with
//! the credentials pulls use (`registry_auth_file`, else Docker's own
//! config). `--commit` commits that one file, the message naming the old
//! and the new digest.
//!
//! `stackpin pin STACK --from-verified`: every pin of a gated stack from
//! the newest entry of its `promote_from` source that the gate would pass
//! (soaked long enough; with `--config`, signed by the host's verifiers),
//! services mapped as the gate maps them: the production bump written by
//! the same rule that will judge it.
//!
//! A digest a host quarantined (`quarantined/<stack>.yaml` of the stack, or
//! of its source) is refused unless `--force`, or unless a later verified
//! entry of the same stack holds it (it was retried and passed).

use super::setup::{self, BadInput};
use super::{Global, Status};
use crate::desired::image::ImageRef;
use crate::promote::{self, Change, Marks, short};
use anyhow::Context;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(value_parser = crate::desired::parse_stack_name, add = super::completions::stack_names())]
    pub stack: String,
    /// The service of the stack's compose file the pin is for.
    #[arg(required_unless_present = "from_verified")]
    pub service: Option<String>,
    /// `repository:tag` (resolved to its digest in the registry now) or
    /// `repository@sha256:…`.
    #[arg(required_unless_present = "from_verified")]
    pub image: Option<String>,
    /// Pin every service from the newest verified (and soaked) entry of
    /// the stack's `promote_from` source that its gate passes; `version:`
    /// becomes that entry's unless `--set-version` says otherwise. With
    /// `--config`, the gate and the verifiers are that host's.
    #[arg(long, conflicts_with_all = ["service", "image"])]
    pub from_verified: bool,
    /// The desired-state checkout (default: the current directory).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Also set the stack's `version:` label.
    #[arg(long = "set-version", value_name = "VERSION")]
    pub set_version: Option<String>,
    /// Commit the file (only it), the message naming both digests.
    #[arg(long)]
    pub commit: bool,
    /// Pin a digest even though a host quarantined it (it failed there).
    #[arg(long)]
    pub force: bool,
}

/// What `pin` did (`--json`).
#[derive(Debug, serde::Serialize)]
struct Pinned {
    stack: String,
    file: String,
    pins: Vec<Change>,
    version: Option<String>,
    /// The verified entry the pins came from (`--from-verified`).
    from: Option<Source>,
    /// A newer entry that the gate does not pass yet, and why.
    newer: Option<String>,
    commit: Option<String>,
}

#[derive(Debug, serde::Serialize)]
struct Source {
    stack: String,
    version: String,
    host: String,
    verified_at: String,
    soaked_at: Option<String>,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<Status> {
    let rel = format!("stacks/{}/stack.yaml", a.stack);
    let file = a.dir.join(&rel);
    let text = std::fs::read_to_string(&file).map_err(|e| {
        BadInput(format!(
            "{}: {e} (pin edits an existing stack of a desired-state checkout: pass it with --dir)",
            file.display()
        ))
    })?;
    let (wanted, choice) = if a.from_verified {
        let c = from_verified(g, &a)?;
        (c.pins.clone(), Some(c))
    } else {
        // clap requires both without --from-verified.
        let (service, image) = (
            a.service.clone().unwrap_or_default(),
            a.image.clone().unwrap_or_default(),
        );
        let pin = one(g, &service, &image)?;
        // (--from-verified skips the entries that hold such a digest.)
        if !a.force {
            let state = load_checkout(&a.dir)?;
            let marks = Marks::of(&state, &[a.stack.as_str()]);
            if let Some(why) = marks.quarantined(&pin) {
                return Err(BadInput(format!(
                    "{service}: {why}; pin another image, or this one anyway with --force; nothing was written"
                ))
                .into());
            }
        }
        (vec![(service, pin)], None)
    };
    let from = choice.as_ref().map(|c| Source {
        stack: c.source.clone(),
        version: c.entry.version.clone(),
        host: c.entry.host.clone(),
        verified_at: c.entry.verified_at.clone(),
        soaked_at: c.entry.soaked_at.clone(),
    });
    let newer = choice.as_ref().and_then(|c| c.newer.clone());
    let version = a
        .set_version
        .clone()
        .or_else(|| from.as_ref().map(|f| f.version.clone()));
    let (out, pins) = promote::apply(&text, &wanted, version.as_deref())
        .map_err(|why| BadInput(format!("{}: {why}; nothing was written", file.display())))?;
    crate::fsutil::write_atomic(&file, out.as_bytes(), 0o644)
        .with_context(|| format!("failed to write {}", file.display()))?;
    let mut p = Pinned {
        stack: a.stack.clone(),
        file: rel,
        pins,
        version,
        from,
        newer,
        commit: None,
    };
    if a.commit {
        let message = promote::message(
            &p.stack,
            &p.pins,
            p.version.as_deref(),
            choice.as_ref().map(|c| (c.source.as_str(), &c.entry)),
        );
        p.commit = Some(commit(&a.dir, &p.file, &message)?);
    }
    if g.json {
        super::output::json(&p)?;
    } else {
        if let Some(f) = &p.from {
            println!(
                "from {} {} (verified on {} at {}{})",
                f.stack,
                f.version,
                f.host,
                f.verified_at,
                f.soaked_at
                    .as_deref()
                    .map(|t| format!(", soaked until {t}"))
                    .unwrap_or_default()
            );
        }
        for c in &p.pins {
            let from = c.old.as_deref().map_or("(new)".to_string(), short);
            println!(
                "pinned {}/{}: {from} -> {}",
                p.stack,
                c.service,
                short(&c.new)
            );
        }
        if let Some(n) = &p.newer {
            println!("not yet: {n}");
        }
        if let Some(c) = &p.commit {
            println!("committed {}", &c[..12.min(c.len())]);
        }
    }
    Ok(Status::Ok)
}

/// `SERVICE IMAGE`: the pin, a tag resolved to its digest now.
fn one(g: &Global, service: &str, image: &str) -> anyhow::Result<String> {
    crate::desired::check_stack_name(service)
        .map_err(|m| BadInput(format!("service `{service}`: {m}")))?;
    let image = ImageRef::parse(image).map_err(|e| {
        BadInput(format!(
            "{image}: {e} (fix: `repository:tag` or `repository@sha256:<64 hex>`)"
        ))
    })?;
    Ok(match &image.digest {
        Some(d) => format!("{}@{d}", image.repository),
        None => {
            let cfg = setup::config(g)?;
            let explicit = cfg.file.registry_auth_file.is_some();
            let auth = crate::engine::auth::config_path(cfg.file.registry_auth_file.as_deref());
            let creds =
                crate::engine::auth::credentials(auth.as_deref(), explicit, image.registry())
                    .map_err(anyhow::Error::msg)?;
            let digest = setup::runtime()?
                .block_on(crate::engine::registry::resolve_tag(&image, creds.as_ref()))
                .map_err(|e| {
                    // No such tag is the input's fault (exit 1); an
                    // unreachable registry or refused credentials are not.
                    if e.no_tag {
                        anyhow::Error::new(BadInput(e.to_string()))
                    } else {
                        anyhow::Error::new(e)
                    }
                })?;
            format!("{}@{digest}", image.repository)
        }
    })
}

/// `--from-verified`: the pins of the newest entry of the stack's source
/// that its gate passes ([`promote::choose`]).
fn from_verified(g: &Global, a: &Args) -> anyhow::Result<promote::Choice> {
    let state = load_checkout(&a.dir)?;
    let policy = if setup::config_is_explicit() {
        let file = crate::config::load_file(&g.config, true)?;
        Some(crate::policy::HostPolicy::load(&file)?)
    } else {
        None
    };
    Ok(promote::choose(&state, policy.as_ref(), &a.stack, a.force)
        .map_err(|e| BadInput(format!("{e}; nothing was written")))?)
}

/// The desired state of the checkout at `dir`, as `validate` reads it.
fn load_checkout(dir: &Path) -> anyhow::Result<crate::desired::DesiredState> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("failed to resolve {}", dir.display()))?;
    Ok(crate::desired::load(&crate::desired::DirTree::new(&dir)))
}

/// Commits `rel` as it is in the work tree onto HEAD, alone (other staged
/// changes stay staged, not committed); the commit id.
fn commit(dir: &Path, rel: &str, message: &str) -> anyhow::Result<String> {
    let repo = git2::Repository::discover(dir)
        .with_context(|| format!("--commit: {} is not in a git repository", dir.display()))?;
    let workdir = repo
        .workdir()
        .context("--commit: the repository has no work tree")?
        .to_path_buf();
    let path = dir
        .canonicalize()?
        .join(rel)
        .strip_prefix(workdir.canonicalize()?)
        .context("--commit: the file is outside the repository's work tree")?
        .to_path_buf();
    let sig = repo
        .signature()
        .context("--commit needs user.name and user.email in git's config")?;
    let head = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let mut index = git2::Index::new()?;
    if let Some(h) = &head {
        index.read_tree(&h.tree()?)?;
    }
    let blob = repo.blob_path(&workdir.join(&path))?;
    index.add(&git2::IndexEntry {
        ctime: git2::IndexTime::new(0, 0),
        mtime: git2::IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode: 0o100644,
        uid: 0,
        gid: 0,
        file_size: 0,
        id: blob,
        flags: 0,
        flags_extended: 0,
        path: path.to_string_lossy().as_bytes().to_vec(),
    })?;
    let tree = repo.find_tree(index.write_tree_to(&repo)?)?;
    let parents: Vec<&git2::Commit> = head.iter().collect();
    let id = repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)?;
    // The work tree's index agrees with the new commit for this file.
    let mut real = repo.index()?;
    real.add_path(&path)?;
    real.write()?;
    Ok(id.to_string())
}
