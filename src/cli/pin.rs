//! `stackpin pin STACK SERVICE IMAGE[:TAG|@DIGEST]`: writes one digest pin
//! into `stacks/<stack>/stack.yaml` of a desired-state checkout, changing
//! nothing else in the file (its comments, order and quoting stay: see
//! `desired::edit`). A tag is resolved to its digest in the registry, with
//! the credentials pulls use (`registry_auth_file`, else Docker's own
//! config). `--commit` commits that one file, the message naming the old
//! and the new digest.

use super::setup::{self, BadInput};
use super::{Global, Status};
use crate::desired::edit;
use crate::desired::image::ImageRef;
use anyhow::Context;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(value_parser = crate::desired::parse_stack_name, add = super::completions::stack_names())]
    pub stack: String,
    /// The service of the stack's compose file the pin is for.
    pub service: String,
    /// `repository:tag` (resolved to its digest in the registry now) or
    /// `repository@sha256:…`.
    pub image: String,
    /// The desired-state checkout (default: the current directory).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Also set the stack's `version:` label.
    #[arg(long = "set-version", value_name = "VERSION")]
    pub set_version: Option<String>,
    /// Commit the file (only it), the message naming both digests.
    #[arg(long)]
    pub commit: bool,
}

/// What `pin` did (`--json`).
#[derive(Debug, serde::Serialize)]
struct Pinned {
    stack: String,
    service: String,
    file: String,
    old: Option<String>,
    new: String,
    version: Option<String>,
    commit: Option<String>,
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
    crate::desired::check_stack_name(&a.service)
        .map_err(|m| BadInput(format!("service `{}`: {m}", a.service)))?;
    let image = ImageRef::parse(&a.image).map_err(|e| {
        BadInput(format!(
            "{}: {e} (fix: `repository:tag` or `repository@sha256:<64 hex>`)",
            a.image
        ))
    })?;
    let new = match &image.digest {
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
    };
    let at = |e: edit::EditError| BadInput(format!("{}: {e}", file.display()));
    let (mut out, old) = edit::set_entry(&text, "images", &a.service, &new).map_err(at)?;
    if let Some(v) = &a.set_version {
        out = edit::set_top(&out, "version", v).map_err(at)?.0;
    }
    check_reads_back(&out, &a.service, &new, a.set_version.as_deref()).map_err(|why| {
        BadInput(format!(
            "{}: the edit would not read back ({why}); nothing was written",
            file.display()
        ))
    })?;
    crate::fsutil::write_atomic(&file, out.as_bytes(), 0o644)
        .with_context(|| format!("failed to write {}", file.display()))?;
    let commit = if a.commit {
        Some(commit(&a.dir, &rel, &message(&a, old.as_deref(), &new))?)
    } else {
        None
    };
    let p = Pinned {
        stack: a.stack.clone(),
        service: a.service.clone(),
        file: rel,
        old,
        new,
        version: a.set_version.clone(),
        commit,
    };
    if g.json {
        super::output::json(&p)?;
    } else {
        let from = p.old.as_deref().map_or("(new)".to_string(), short);
        println!(
            "pinned {}/{}: {from} -> {}",
            p.stack,
            p.service,
            short(&p.new)
        );
        if let Some(c) = &p.commit {
            println!("committed {}", &c[..12.min(c.len())]);
        }
    }
    Ok(Status::Ok)
}

/// `repo@sha256:` and the digest's first 12 hex digits.
fn short(pin: &str) -> String {
    match pin.split_once("@sha256:") {
        Some((repo, hex)) => format!("{repo}@sha256:{}", &hex[..12.min(hex.len())]),
        None => pin.to_string(),
    }
}

fn message(a: &Args, old: Option<&str>, new: &str) -> String {
    let from = old.map_or("(new)".to_string(), short);
    let mut m = format!(
        "pin {}/{}: {from} -> {}\n\nold: {}\nnew: {new}\n",
        a.stack,
        a.service,
        short(new),
        old.unwrap_or("(none)")
    );
    if let Some(v) = &a.set_version {
        m.push_str(&format!("version: {v}\n"));
    }
    m
}

/// The edited text parses, and holds the pin (and version) asked for.
fn check_reads_back(
    text: &str,
    service: &str,
    pin: &str,
    version: Option<&str>,
) -> Result<(), String> {
    let v: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    if v["images"][service].as_str() != Some(pin) {
        return Err(format!("images.{service} is not {pin}"));
    }
    if let Some(want) = version
        && v["version"].as_str() != Some(want)
    {
        return Err(format!("version is not {want}"));
    }
    Ok(())
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
