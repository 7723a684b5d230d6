//! `stackpin completions SHELL`: prints a completion script for bash, zsh or
//! fish (and the other shells clap_complete knows) to stdout. Reads nothing,
//! changes nothing.
//!
//! ```text
//! stackpin completions bash > /etc/bash_completion.d/stackpin
//! stackpin completions zsh  > "${fpath[1]}/_stackpin"
//! stackpin completions fish > ~/.config/fish/completions/stackpin.fish
//! ```
//!
//! `stackpin man DIR` writes the man pages, generated like the completions
//! from the CLI definition (`scripts/package-deb.sh` ships both).

use super::{Cli, Status};
use clap::CommandFactory;
use clap_complete::Shell;
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// The directory to write `stackpin.1` and `stackpin-<command>.1` into
    /// (created when missing).
    pub dir: std::path::PathBuf,
}

/// Writes the man pages into `a.dir`, one line per page on stdout.
///
/// # Errors
/// The directory cannot be created or written.
pub fn man(a: ManArgs) -> anyhow::Result<Status> {
    use anyhow::Context as _;
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("failed to create {}", a.dir.display()))?;
    clap_mangen::generate_to(Cli::command(), &a.dir)
        .with_context(|| format!("failed to write the man pages into {}", a.dir.display()))?;
    let mut pages: Vec<_> = std::fs::read_dir(&a.dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    for p in pages {
        println!("{}", p.display());
    }
    Ok(Status::Ok)
}

pub fn run(a: Args) -> anyhow::Result<Status> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "stackpin", &mut out);
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
        for sub in Cli::command().get_subcommands() {
            let page = dir
                .path()
                .join(format!("man1/stackpin-{}.1", sub.get_name()));
            assert!(page.is_file(), "no page for {}", sub.get_name());
        }
    }

    #[test]
    fn completes_every_subcommand() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "stackpin", &mut out);
            let text = String::from_utf8(out).unwrap();
            for sub in Cli::command().get_subcommands() {
                assert!(
                    text.contains(sub.get_name()),
                    "{shell}: no {}",
                    sub.get_name()
                );
            }
        }
    }
}
