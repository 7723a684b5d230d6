//! `stackpin completions SHELL`: prints a completion script for bash, zsh or
//! fish (elvish and PowerShell too) to stdout. Reads nothing, changes
//! nothing. The script asks the binary at each <Tab> (`COMPLETE=bash
//! stackpin -- …`, clap_complete's dynamic completion), so commands and
//! flags complete as this version has them and stack names complete from
//! the host and the desired state ([`stack_names`]).
//!
//! ```text
//! stackpin completions bash > /etc/bash_completion.d/stackpin
//! stackpin completions zsh  > "${fpath[1]}/_stackpin"
//! stackpin completions fish > ~/.config/fish/completions/stackpin.fish
//! ```
//!
//! `stackpin man DIR` writes the man pages, generated like the completions
//! from the CLI definition (`scripts/package-deb.sh` ships both).

use super::{Cli, Global, Status};
use clap::{CommandFactory, FromArgMatches};
use clap_complete::env::EnvCompleter;
use clap_complete::{ArgValueCandidates, CompletionCandidate, Shell};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// The directory to write `stackpin.1`, `stackpin-<command>.1` and the
    /// file formats' `stackpin-stack.yaml.5` and `stackpin-config.yaml.5`
    /// into (created when missing).
    pub dir: std::path::PathBuf,
}

/// Writes the man pages into `a.dir`, one line per page on stdout.
///
/// # Errors
/// The directory cannot be created or written.
/// Sections appended to the generated pages (roff): EXIT STATUS, FILES,
/// ENVIRONMENT and EXAMPLES on `stackpin(1)`, EXAMPLES on the pages of the
/// commands people reach for first.
const EXTRA_SECTIONS: &[(&str, &str)] = &[
    (
        "stackpin.1",
        r#".SH "EXIT STATUS"
.TP
\fB0\fR
Done; nothing refused or failed.
.TP
\fB1\fR
Refused or failed: bad input (a file, a field, a stack name; the message names the fix), a stack that failed to converge or was reverted, a stack that cannot converge (\fBplan\fR and \fBsync \-\-dry\-run\fR: invalid, blocked by the gate, untrusted, a host\-local file missing).
.TP
\fB2\fR
Unexpected: the engine, git or the file system failed. With \fB\-\-detailed\-exitcode\fR (\fBplan\fR, \fBsync \-\-dry\-run\fR): a sync would change something.
.SH FILES
.TP
\fI/etc/stackpin/config.yaml\fR
The host's configuration: what this host enforces (signers, verifiers, allowed powers), the repository, the daemon's settings.
.TP
\fI/srv/stacks/<stack>\fR
The link to the release that runs; \fI/srv/releases/stacks/<stack>/\fR holds the kept releases, \fI/srv/releases/current/<stack>.json\fR what runs.
.TP
\fI/srv/deploy\-history.log\fR
The audit log, one line per change (\fBstackpin history\fR).
.TP
\fI/srv/releases/.stackpin\fR
The host's records beside the releases: quarantine, holds, journals, locks.
.TP
\fI/var/lib/stackpin\fR
The daemon's state (\fBstate_dir\fR): the desired\-state repository's git mirror and the clone it publishes verified markers from.
.TP
\fI/run/stackpin/control.sock\fR
The running daemon's control socket: commands go through it when a daemon runs.
.SH ENVIRONMENT
.TP
\fBSTACKPIN_CONFIG\fR
The configuration file (as \fB\-\-config\fR).
.TP
\fBSTACKPIN_CONTROL_SOCKET\fR
The daemon's control socket (as \fB\-\-control\-socket\fR).
.TP
\fBRUST_LOG\fR
Log filter, over the defaults (\fBstackpin=info\fR for the daemon, warnings for commands).
.TP
\fBNO_COLOR\fR
No colours on a terminal (tables, severities, log lines); \fB\-\-color always\fR still colours.
.TP
\fBDOCKER_CONFIG\fR
Where Docker's CLI configuration is: compose's plugins, and registry credentials when \fBregistry_auth_file\fR is not set.
.SH EXAMPLES
.nf
stackpin validate ./desired-state        # every rule, before a merge
stackpin plan \-\-detailed\-exitcode        # what a sync would do (exit 2: changes)
stackpin sync                            # converge now
stackpin status                          # state, sync and health of each stack
stackpin rollback shop \-\-steps 1          # back one release, held there
stackpin resume shop                     # let git win again
stackpin pin shop web ghcr.io/acme/shop:1.4.2 \-\-commit
.fi
"#,
    ),
    (
        "stackpin-sync.1",
        r#".SH EXAMPLES
.nf
stackpin sync                            # every stack of this host
stackpin sync shop \-\-dry\-run             # what it would do, as plan says it
stackpin sync shop \-\-force               # retry a quarantined release
.fi
"#,
    ),
    (
        "stackpin-rollback.1",
        r#".SH EXAMPLES
.nf
stackpin rollback shop \-\-list            # the kept releases and their outcomes
stackpin rollback shop \-\-steps 1         # back one release, held there
stackpin rollback shop \-\-to 1.4.1        # to a version
stackpin rollback shop \-\-last\-good       # to the newest release that passed
.fi
"#,
    ),
    (
        "stackpin-pin.1",
        r#".SH EXAMPLES
.nf
# In the desired\-state checkout: resolve the tag, write the digest, commit.
stackpin pin shop web ghcr.io/acme/shop:1.4.2 \-\-commit
stackpin pin shop web ghcr.io/acme/shop@sha256:<64 hex> \-\-set\-version 1.4.2
.fi
"#,
    ),
];

pub fn man(a: ManArgs) -> anyhow::Result<Status> {
    use anyhow::Context as _;
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("failed to create {}", a.dir.display()))?;
    clap_mangen::generate_to(Cli::command(), &a.dir)
        .with_context(|| format!("failed to write the man pages into {}", a.dir.display()))?;
    // What clap does not know: the sections a reader looks for.
    for (page, extra) in EXTRA_SECTIONS {
        let path = a.dir.join(page);
        let mut text = std::fs::read_to_string(&path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        text.push_str(extra);
        std::fs::write(&path, text)
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    // The two file formats, section 5.
    for (page, text) in super::manfiles::pages() {
        let path = a.dir.join(page);
        std::fs::write(&path, text)
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    let mut pages: Vec<_> = std::fs::read_dir(&a.dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1" || x == "5"))
        .collect();
    pages.sort();
    for p in pages {
        println!("{}", p.display());
    }
    Ok(Status::Ok)
}

/// Answers a completion request (`COMPLETE=<shell> stackpin -- <words>`,
/// which the scripts make) and exits; returns at once otherwise. Called
/// before anything else prints.
pub fn answer_if_asked() {
    clap_complete::CompleteEnv::with_factory(Cli::command).complete();
}

/// The completion of a stack-name argument: the stacks this host has (its
/// stack links and kept releases) and the desired state's: its `stacks/`
/// when it is a directory here (a checkout, a daemon's local `repo:`), else
/// the last commit the daemon's mirror fetched (in `state_dir`). The
/// command line's own `--config`, `--root`, `--repo`, `--branch` and
/// `--state-dir` count. Never fails: what cannot be read adds nothing.
pub fn stack_names() -> ArgValueCandidates {
    ArgValueCandidates::new(|| {
        known_stack_names()
            .into_iter()
            .map(CompletionCandidate::new)
            .collect()
    })
}

fn known_stack_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let Some(g) = global_options_typed() else {
        return names;
    };
    let Ok(cfg) = super::setup::config(&g) else {
        return names;
    };
    let mut add = |n: &str| {
        if crate::desired::parse_stack_name(n).is_ok() {
            names.insert(n.to_string());
        }
    };
    let layout = crate::layout::Layout::new(&cfg.root);
    for n in crate::observed::stacks_on_host(&layout) {
        add(&n);
    }
    // A local path (`file://` too, as the commands read it) or a URL.
    if let Some(repo) = cfg
        .repo
        .as_deref()
        .map(|r| std::path::Path::new(r.strip_prefix("file://").unwrap_or(r)))
        && repo.is_dir()
    {
        let dir = repo.join(&cfg.repo_path).join("stacks");
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if let Some(n) = e.file_name().to_str() {
                add(n);
            }
        }
    }
    let branch = cfg.branch.as_deref().unwrap_or("main");
    for n in mirrored_stacks(&cfg.state_dir, branch, &cfg.repo_path) {
        add(&n);
    }
    names
}

/// The stack directories of the last commit the daemon fetched
/// (`refs/stackpin/<branch>` in its mirror), read without fetching.
fn mirrored_stacks(state_dir: &std::path::Path, branch: &str, base: &str) -> Vec<String> {
    let mirror = crate::source::GitSource::mirror_in(state_dir);
    let Ok(repo) = git2::Repository::open_bare(mirror) else {
        return Vec::new();
    };
    let stacks = match base.trim_matches('/') {
        "" | "." => "stacks".to_string(),
        b => format!("{b}/stacks"),
    };
    let tree = repo
        .find_reference(&format!("refs/stackpin/{branch}"))
        .and_then(|r| r.peel_to_tree())
        .and_then(|t| t.get_path(std::path::Path::new(&stacks)))
        .and_then(|e| e.to_object(&repo))
        .and_then(|o| o.peel_to_tree());
    let Ok(tree) = tree else {
        return Vec::new();
    };
    tree.iter()
        .filter(|e| e.kind() == Some(git2::ObjectType::Tree))
        .filter_map(|e| e.name().ok().map(str::to_string))
        .collect()
}

/// The global options on the line being completed (the words after `--`),
/// read leniently: the line is unfinished.
fn global_options_typed() -> Option<Global> {
    let words: Vec<OsString> = std::env::args_os()
        .skip_while(|a| a != "--")
        .skip(1)
        .collect();
    let m = Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(words)
        .ok()?;
    Global::from_arg_matches(&m).ok()
}

/// The shell's script: a function that asks `stackpin` at each <Tab>.
fn registration(shell: Shell, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let shell: &dyn EnvCompleter = match shell {
        Shell::Bash => &clap_complete::env::Bash,
        Shell::Zsh => &clap_complete::env::Zsh,
        Shell::Fish => &clap_complete::env::Fish,
        Shell::Elvish => &clap_complete::env::Elvish,
        Shell::PowerShell => &clap_complete::env::Powershell,
        other => anyhow::bail!("no completion for {other}"),
    };
    shell.write_registration("COMPLETE", "stackpin", "stackpin", "stackpin", out)?;
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<Status> {
    let mut out = Vec::new();
    registration(a.shell, &mut out)?;
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a stack of text.
    match stdout.write_all(&out).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(Status::Ok),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own consistency checks over every subcommand (duplicate
    /// names, a `version` argument next to `--version`, …), which otherwise
    /// only fire when that subcommand runs — or when completions are built.
    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn man_pages_cover_every_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        man(ManArgs {
            dir: dir.path().join("man1"),
        })
        .unwrap();
        let top = std::fs::read_to_string(dir.path().join("man1/stackpin.1")).unwrap();
        assert!(top.contains(".TH stackpin 1"), "{top}");
        for section in ["EXIT STATUS", "FILES", "ENVIRONMENT", "EXAMPLES"] {
            assert!(
                top.contains(&format!(".SH {section}"))
                    || top.contains(&format!(".SH \"{section}\"")),
                "{section}"
            );
        }
        let sync = std::fs::read_to_string(dir.path().join("man1/stackpin-sync.1")).unwrap();
        assert!(sync.contains(".SH EXAMPLES"), "{sync}");
        for sub in Cli::command().get_subcommands() {
            let page = dir
                .path()
                .join(format!("man1/stackpin-{}.1", sub.get_name()));
            assert!(page.is_file(), "no page for {}", sub.get_name());
        }
    }

    /// Each script asks the binary (tests/completion.rs runs bash's).
    #[test]
    fn every_script_asks_the_binary() {
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let mut out = Vec::new();
            registration(shell, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.contains("COMPLETE") && text.contains("stackpin"),
                "{shell}: {text}"
            );
        }
    }
}
