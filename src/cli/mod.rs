//! Command-line interface: argument parsing and one module per subcommand.
//! Exit codes: 0 ok, 1 refused or failed, 2 unexpected (the command itself
//! could not run).

mod history;
mod releases;
pub mod setup;
mod status;
mod sync;
mod validate;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// What a command concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Refused or failed: bad input, a failed converge, a gate refusal.
    Failed,
}

#[derive(Debug, Parser)]
#[command(
    name = "stackpin",
    version,
    about = "GitOps reconciler for Docker Compose stacks",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Global options (SPEC §6): each overrides the config file.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Config file.
    #[arg(
        long,
        global = true,
        default_value = "/etc/stackpin/config.yaml",
        env = "STACKPIN_CONFIG"
    )]
    pub config: PathBuf,
    /// Desired-state repository: a URL or a local path.
    #[arg(long, global = true)]
    pub repo: Option<String>,
    /// Branch of the desired-state repository.
    #[arg(long, global = true)]
    pub branch: Option<String>,
    /// Host root (the directory that holds stacks/, releases/, deploy-history.log).
    #[arg(long, global = true)]
    pub root: Option<PathBuf>,
    /// This host's name, matched against `hosts:` in stack.yaml.
    #[arg(long, global = true)]
    pub host: Option<String>,
    /// Where stackpin keeps its own state (git mirror, quarantine, locks).
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Converge stacks now: release-create, pull, switch, up, smoke, record or revert.
    Sync(sync::Args),
    /// Show each stack's state, version, release and last change.
    Status(status::Args),
    /// Show the deploy history (the audit log).
    History(history::Args),
    /// List a stack's releases on this host.
    Releases(releases::Args),
    /// Check a desired-state repository against every rule (exit 1 on errors).
    Validate(validate::Args),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(Status::Ok) => ExitCode::SUCCESS,
        Ok(Status::Failed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<Status> {
    match cli.command {
        Command::Sync(a) => sync::run(&cli.global, a),
        Command::Status(a) => status::run(&cli.global, a),
        Command::History(a) => history::run(&cli.global, a),
        Command::Releases(a) => releases::run(&cli.global, a),
        Command::Validate(a) => validate::run(&cli.global, a),
    }
}
