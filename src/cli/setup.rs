//! Shared setup for the commands that act on a host: the effective config,
//! the desired state and the stage printer. The engine, policies and
//! notifier come from [`crate::startup`], shared with the daemon.

use super::Global;
use crate::config::{self, Config};
use crate::desired::{self, DesiredState, DirTree, GitTree};
use crate::host::Reporter;
use crate::outcome::StageRecord;
pub use crate::startup::Services;
use anyhow::{Context as _, bail};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Whether a config file was named (`--config` or `STACKPIN_CONFIG`), not
/// only defaulted: a named one must exist.
pub fn config_is_explicit() -> bool {
    std::env::var_os("STACKPIN_CONFIG").is_some()
        || std::env::args().any(|a| a == "--config" || a.starts_with("--config="))
}

/// Resolves flags over the config file over defaults.
pub fn config(g: &Global) -> anyhow::Result<Config> {
    let file = config::load_file(&g.config, config_is_explicit())?;
    let repo_cfg = file.repo.clone().unwrap_or_default();
    Ok(Config {
        host: g
            .host
            .clone()
            .or(file.host.clone())
            .unwrap_or_else(config::system_hostname),
        root: g
            .root
            .clone()
            .or(file.root.clone())
            .unwrap_or_else(|| PathBuf::from("/srv")),
        state_dir: g
            .state_dir
            .clone()
            .or(file.state_dir.clone())
            .unwrap_or_else(|| PathBuf::from("/var/lib/stackpin")),
        repo: g.repo.clone().or(repo_cfg.url.clone()),
        branch: g.branch.clone().or(repo_cfg.branch.clone()),
        repo_path: repo_cfg.path.clone().unwrap_or_else(|| ".".into()),
        compose: file.compose.clone().unwrap_or_else(|| "auto".into()),
        min_disk_free_percent: file.min_disk_free_percent.unwrap_or(20),
        control_socket: g
            .control_socket
            .clone()
            .or(file.control_socket.clone())
            .unwrap_or_else(|| PathBuf::from(crate::control::DEFAULT_SOCKET)),
        config_file: Some(g.config.clone()),
        file,
    })
}

/// Loads the desired state from the configured repository: a git repository
/// is read at its branch's commit (not the work tree), a plain directory as is.
/// Bad input, such as an unknown stack name: the command exits 1, as for any
/// refusal, not 2 (the environment failed).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Refuses a stack name that is neither in the desired state (valid or
/// not; `desired` when it could be read) nor on this host, naming the
/// nearest known one.
///
/// # Errors
/// [`BadInput`] for the first unknown name.
pub fn known_stacks(
    cfg: &Config,
    desired: Option<&DesiredState>,
    stacks: &[String],
) -> Result<(), BadInput> {
    let layout = crate::layout::Layout::new(cfg.root.clone());
    crate::host::check_known_all(&layout, desired, stacks).map_err(|e| BadInput(e.0))
}

pub fn load_desired(cfg: &Config) -> anyhow::Result<DesiredState> {
    load(cfg, Fetch::No)
}

/// Whether a one-shot command fetches a remote repository before it reads
/// it (a local repository is always read as it is now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// Read the commit the daemon's mirror last fetched.
    No,
    /// Fetch first; a failed fetch is the command's error (`--fetch`).
    Yes,
    /// Fetch first; when that fails, read the last fetched commit with a
    /// warning, as the daemon does (`sync` without a daemon).
    OrLast,
}

/// How long a one-shot command's fetch may take (the daemon's default).
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The `--fetch` flag of the commands that read the desired state.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct FetchArg {
    /// With a remote repo.url, fetch it into this host's mirror first (under
    /// the daemon's lock) instead of reading the commit the daemon last
    /// fetched.
    #[arg(long)]
    pub fetch: bool,
}

impl FetchArg {
    pub fn mode(self) -> Fetch {
        if self.fetch { Fetch::Yes } else { Fetch::No }
    }
}

/// A request the running daemon refused: bad input (exit 1) when the daemon
/// says so, else an error of the environment (exit 2).
pub fn daemon_refused(resp: &crate::control::Response) -> anyhow::Error {
    let e = resp.error.clone().unwrap_or_default();
    if resp.bad_input {
        BadInput(e).into()
    } else {
        anyhow::anyhow!("the daemon refused: {e}")
    }
}

/// Loads the desired state: a local git repository at its branch's commit
/// (not the work tree), a plain directory as is, a remote repository from
/// the daemon's mirror under the state dir (the same commit the daemon
/// converges to), fetched first as `fetch` says. `source` of the result
/// says what was read, commit included.
pub fn load(cfg: &Config, fetch: Fetch) -> anyhow::Result<DesiredState> {
    let Some(repo) = &cfg.repo else {
        bail!("no desired-state repository: pass --repo PATH or set repo.url in the config file");
    };
    if crate::source::is_remote(repo) {
        return load_remote(cfg, fetch);
    }
    let path = Path::new(repo.strip_prefix("file://").unwrap_or(repo));
    if !path.exists() {
        bail!("desired-state repository {} does not exist", path.display());
    }
    let base = cfg.repo_path.as_str();
    if let Ok(r) = git2::Repository::open(path) {
        drop(r);
        let rev = cfg
            .branch
            .as_ref()
            .map(|b| format!("refs/heads/{b}"))
            .unwrap_or_else(|| "HEAD".into());
        let tree = GitTree::open(path, &rev, base)
            .with_context(|| format!("failed to read {rev} of {}", path.display()))?;
        let mut st = desired::load(&tree);
        st.commit = Some(tree.commit_id());
        st.subject = tree.subject();
        st.repo_path = Some(path.to_path_buf());
        st.base = tree.base().to_string();
        st.source = format!(
            "{} {rev} at {}",
            path.display(),
            crate::desired::short_id(&tree.commit_id())
        );
        return Ok(st);
    }
    let dir = if base == "." {
        path.to_path_buf()
    } else {
        path.join(base)
    };
    let mut st = desired::load(&DirTree::new(&dir));
    st.source = format!("{} (a directory, not a git repository)", dir.display());
    Ok(st)
}

fn load_remote(cfg: &Config, fetch: Fetch) -> anyhow::Result<DesiredState> {
    use crate::source::{GitSource, SourceConfig};
    let sc = SourceConfig::from_config(cfg, FETCH_TIMEOUT).context("no repository")?;
    let url = crate::source::strip_credentials(&sc.url);
    let mirror = GitSource::mirror_in(&cfg.state_dir);
    let src = match fetch {
        Fetch::No => GitSource::open_existing(sc, &cfg.state_dir).with_context(|| {
            format!(
                "{url} is a remote repository and this host has not fetched it yet ({} does not \
                 exist): pass --fetch to fetch it now, or start `stackpin daemon`",
                mirror.display()
            )
        })?,
        Fetch::Yes | Fetch::OrLast => GitSource::new(sc, &cfg.state_dir)?,
    };
    if fetch != Fetch::No {
        match src.fetch() {
            Ok(_) => {}
            // Logged (one-shot commands show warnings on stderr).
            Err(e) if fetch == Fetch::OrLast && src.last_fetched().is_some() => {
                tracing::warn!("{e}; reading the commit fetched last");
            }
            // These name the URL already ("failed to fetch URL: …").
            Err(
                e @ (crate::source::Error::Fetch { .. } | crate::source::Error::Timeout { .. }),
            ) => {
                return Err(e.into());
            }
            Err(e) => return Err(e).with_context(|| format!("failed to fetch {url}")),
        }
    }
    let Some(commit) = src.last_fetched() else {
        bail!(
            "{url}: this host's mirror {} holds no fetched commit of branch {} yet: pass \
             --fetch, or wait for the daemon's first fetch",
            mirror.display(),
            src.config().branch
        );
    };
    let mut st = src.load(&commit)?;
    let when = src
        .fetched_at()
        .map(|t| {
            format!(
                ", fetched {}",
                chrono::DateTime::<chrono::Utc>::from(t)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        })
        .unwrap_or_default();
    st.source = format!(
        "{url} {} at {} (this host's mirror{when})",
        src.config().branch,
        crate::desired::short_id(&commit)
    );
    Ok(st)
}

/// Says on stderr what the desired state was read from (not with --json or
/// --quiet, whose output is for programs).
pub fn say_what_was_read(g: &Global, st: &DesiredState) {
    if !g.json && !g.quiet {
        eprintln!("desired state: {}", st.source);
    }
}

/// Prints each stage as a line on stderr (hidden with --json).
pub struct CliReporter {
    pub quiet: bool,
    pub tty: bool,
}

impl CliReporter {
    pub fn new(quiet: bool) -> Self {
        CliReporter {
            quiet,
            tty: std::io::stderr().is_terminal(),
        }
    }
}

/// How many of a failed stage's output lines the terminal shows (all of
/// it is in `--json` and the API).
const OUTPUT_LINES: usize = 40;

/// The last `n` lines of `output`, a first line saying how many were left
/// out when some were.
fn output_tail(output: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = output.lines().collect();
    let skip = lines.len().saturating_sub(n);
    let mut out = Vec::with_capacity(n + 1);
    if skip > 0 {
        out.push(format!("({skip} earlier lines in `sync --json`)"));
    }
    out.extend(lines[skip..].iter().map(|l| l.to_string()));
    out
}

impl Reporter for CliReporter {
    fn stage(&self, stack: &str, s: &StageRecord) {
        if self.quiet {
            return;
        }
        let mark = if s.ok { "ok " } else { "FAIL" };
        let secs = s.millis as f64 / 1000.0;
        eprintln!(
            "  {stack:<24} {:<10} {mark:<4} {secs:>6.1}s  {}",
            s.name.as_str(),
            s.detail
        );
        if let Some(output) = s.output.as_deref().filter(|_| !s.ok) {
            for line in output_tail(output, OUTPUT_LINES) {
                eprintln!("      | {line}");
            }
        }
    }

    fn pull_progress(&self, stack: &str, line: &str) {
        if !self.quiet && self.tty {
            eprint!(
                "\r\x1b[2K  {stack:<24} pull       {}",
                line.chars().take(80).collect::<String>()
            );
        }
    }
}

/// Connects to the engine and loads policies and the notifier.
pub async fn connect(cfg: Config) -> anyhow::Result<Services> {
    Ok(Services::connect(cfg, false).await?)
}

/// The actor a one-shot command records in current.json.
pub fn actor(cfg: &Config) -> String {
    format!("stackpin@{}", cfg.host)
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

/// The control socket a running daemon listens on.
pub fn control_socket(cfg: &Config) -> PathBuf {
    cfg.control_socket.clone()
}

#[cfg(test)]
mod tests {
    use super::output_tail;

    #[test]
    fn a_long_output_shows_its_last_lines_and_says_how_many_it_left_out() {
        let text: String = (1..=5).map(|i| format!("line {i}\n")).collect();
        assert_eq!(
            output_tail(&text, 2),
            ["(3 earlier lines in `sync --json`)", "line 4", "line 5"]
        );
        assert_eq!(output_tail("only\n", 2), ["only"]);
    }
}
