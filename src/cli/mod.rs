//! Command-line interface: argument parsing and one module per subcommand.
//! Exit codes: 0 ok, 1 refused or failed (bad input included, such as an
//! unknown stack name), 2 unexpected (the command itself could not run).

mod backup;
mod completions;
mod daemon;
mod history;
mod hold;
mod manfiles;
mod output;
mod pin;
mod plan;
mod releases;
mod restore;
mod rollback;
pub mod setup;
mod status;
mod sync;
mod validate;
mod verify;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// What a command concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Refused or failed: bad input, a failed converge, a gate refusal.
    Failed,
    /// `plan --detailed-exitcode` found changes to make (exit 2).
    Changes,
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
    /// Where the daemon keeps the desired state's git mirror and its publishing
    /// clone (the host's records are under the root's releases/.stackpin).
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
    /// The running daemon's control socket (default /run/stackpin/control.sock).
    #[arg(long, global = true, env = "STACKPIN_CONTROL_SOCKET")]
    pub control_socket: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr; no stage lines.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Colours: `auto` on a terminal unless NO_COLOR is set, `always`, `never`.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = clap::ColorChoice::Auto)]
    pub color: clap::ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the GitOps loop: fetch, converge, serve webhooks, metrics and the control socket.
    Daemon(daemon::Args),
    /// Converge stacks now: release-create, pull, switch, up, smoke, record or revert.
    Sync(sync::Args),
    /// What a sync would change and why: actions, gate verdicts, file and image diffs.
    #[command(visible_alias = "diff")]
    Plan(plan::Args),
    /// Stop and unlink stacks that left the desired state (releases and backups are kept).
    Prune(sync::PruneArgs),
    /// Show each stack's state, version, release and last change.
    Status(status::Args),
    /// Show the deploy history (the audit log).
    History(history::Args),
    /// List a stack's releases on this host.
    Releases(releases::Args),
    /// Go back to a kept release and hold the stack there (or --list them).
    Rollback(rollback::Args),
    /// Hold a stack: syncs leave it as it is until `resume`.
    Hold(hold::HoldArgs),
    /// Lift a hold: the next sync converges the stack to git.
    Resume(hold::ResumeArgs),
    /// Check a desired-state repository against every rule (exit 1 on errors).
    Validate(validate::Args),
    /// Write a digest pin into a stack's stack.yaml (a tag is resolved in the registry); --commit it.
    Pin(pin::Args),
    /// Record by hand that a release on this host is verified (default: the current one).
    Verify(verify::Args),
    /// Back up a stack's databases and running release now; prints the backup directory.
    Backup(backup::Args),
    /// Put a backup back: its release, volumes and databases; smoke; hold (or --list backups).
    Restore(restore::Args),
    /// Print a shell completion script (bash, zsh, fish) to stdout.
    Completions(completions::Args),
    /// Write the man pages (stackpin.1, one per command, the two file formats in section 5) into a directory.
    Man(completions::ManArgs),
}

/// Logs go to stderr: text or JSON, `RUST_LOG` wins over the defaults
/// (info for the daemon, warnings for one-shot commands); coloured when
/// stderr is (`color`).
fn init_logging(g: &Global, daemon: bool, color: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (g.quiet, g.verbose, daemon) {
        (true, _, _) => "error",
        (_, 0, false) => "warn",
        (_, 0, true) | (_, 1, _) => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("stackpin={default},warn")));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match g.log_format {
        LogFormat::Json => b.json().try_init(),
        LogFormat::Text => b.with_ansi(color).try_init(),
    };
}

pub fn main() -> ExitCode {
    completions::answer_if_asked();
    crate::desired::tree::init_git_cache();
    let cli = parse();
    let daemon = matches!(cli.command, Command::Daemon(_));
    if !daemon {
        restore_sigpipe();
    }
    let color = output::init_color(cli.global.color);
    init_logging(&cli.global, daemon, color);
    match run(cli) {
        Ok(Status::Ok) => ExitCode::SUCCESS,
        Ok(Status::Failed) => ExitCode::from(1),
        Ok(Status::Changes) => ExitCode::from(2),
        Err(e) => {
            eprintln!("{}", output::lead(&format!("error: {e:#}"), true));
            if e.downcast_ref::<setup::BadInput>().is_some() {
                ExitCode::from(1)
            } else {
                ExitCode::from(2)
            }
        }
    }
}

/// The arguments. `--version` (not `-V`) also says which compose `auto`
/// picks here and what it reports, found only when asked (it runs
/// `docker compose version`).
fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let mut cmd = Cli::command();
    if std::env::args_os().any(|a| a == "--version") {
        // Asked for once per process: leaking it is what `&'static` costs.
        cmd = cmd.long_version(&*Box::leak(long_version().into_boxed_str()));
    }
    let matches = cmd.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn long_version() -> String {
    let compose = match crate::engine::ComposeCmd::detect_version("auto") {
        Ok((c, v)) => c.describe(&v),
        Err(e) => format!("none found ({e})"),
    };
    format!(
        "{}\ncompose (auto, prefers v2; the config's `compose:` may name one): {compose}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The version of every `--json` shape. Bumped when a field changes
/// meaning or goes away (adding one does not bump it).
pub const JSON_SCHEMA_VERSION: u64 = 1;

/// A one-shot command whose reader went away (`stackpin history | head -1`)
/// ends quietly, as any Unix filter does, instead of panicking in
/// `println!`: Rust ignores SIGPIPE, so the write would fail with EPIPE.
/// The daemon keeps ignoring it (a client closing a socket is an error to
/// handle, not a reason to die).
fn restore_sigpipe() {
    // SAFETY: setting a signal's disposition to its default, before any
    // thread that could race on it exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

pub fn run(cli: Cli) -> anyhow::Result<Status> {
    match cli.command {
        Command::Daemon(a) => daemon::run(&cli.global, a),
        Command::Hold(a) => hold::hold(&cli.global, a),
        Command::Resume(a) => hold::resume(&cli.global, a),
        Command::Sync(a) => sync::run(&cli.global, a),
        Command::Prune(a) => sync::prune(&cli.global, a),
        Command::Plan(a) => plan::run(&cli.global, a),
        Command::Status(a) => status::run(&cli.global, a),
        Command::History(a) => history::run(&cli.global, a),
        Command::Releases(a) => releases::run(&cli.global, a),
        Command::Rollback(a) => rollback::run(&cli.global, a),
        Command::Restore(a) => restore::run(&cli.global, a),
        Command::Validate(a) => validate::run(&cli.global, a),
        Command::Pin(a) => pin::run(&cli.global, a),
        Command::Verify(a) => verify::run(&cli.global, a),
        Command::Backup(a) => backup::run(&cli.global, a),
        Command::Completions(a) => completions::run(a),
        Command::Man(a) => completions::man(a),
    }
}
