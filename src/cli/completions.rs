//! `stackpin completions SHELL`: prints a completion script for bash, zsh or
//! fish (and the other shells clap_complete knows) to stdout. Reads nothing,
//! changes nothing.
//!
//! ```text
//! stackpin completions bash > /etc/bash_completion.d/stackpin
//! stackpin completions zsh  > "${fpath[1]}/_stackpin"
//! stackpin completions fish > ~/.config/fish/completions/stackpin.fish
//! ```

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
