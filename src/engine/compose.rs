//! The compose CLI: `docker compose` (v2, a docker plugin) or `docker-compose`
//! (v1). Both take the same subset of arguments stackpin uses; the project
//! name is always passed explicitly (`-p` and `COMPOSE_PROJECT_NAME`) so it
//! never depends on the directory's name.

use super::{CommandLog, Docker, Engine as _, Error, Project};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Why a compose implementation does not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotRunnable(pub String);

impl From<String> for NotRunnable {
    fn from(s: String) -> NotRunnable {
        NotRunnable(s)
    }
}

impl From<&str> for NotRunnable {
    fn from(s: &str) -> NotRunnable {
        NotRunnable(s.to_string())
    }
}

/// How much of a command's output a [`CommandLog`] keeps (the tail).
pub const LOG_OUTPUT_CAP: usize = 64 * 1024;
/// The largest model `config` may print (more is refused, not cut).
pub const MODEL_OUTPUT_CAP: usize = 16 * 1024 * 1024;
/// How much of a failed command's output an [`Error::Compose`] carries.
pub const ERROR_OUTPUT_CAP: usize = 4 * 1024;

/// Which compose implementation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComposeCmd {
    /// `docker compose`
    V2,
    /// `docker-compose`
    V1,
}

impl ComposeCmd {
    /// Resolves the `compose` setting: `auto` tries `docker compose version`
    /// then `docker-compose version`; `docker compose` and `docker-compose`
    /// (also `v2` / `v1`) name one and check that it runs. Blocking.
    ///
    /// # Errors
    /// [`Error::ComposeNotFound`] for an unknown setting or when no candidate
    /// runs.
    pub fn detect(setting: &str) -> Result<ComposeCmd, Error> {
        Self::detect_version(setting).map(|(c, _)| c)
    }

    /// [`ComposeCmd::detect`], with the first line the chosen one's
    /// `version` printed (`Docker Compose version v2.40.3`). Blocking.
    ///
    /// # Errors
    /// As [`ComposeCmd::detect`].
    pub fn detect_version(setting: &str) -> Result<(ComposeCmd, String), Error> {
        let normalized = setting.split_whitespace().collect::<Vec<_>>().join(" ");
        let candidates: &[ComposeCmd] = match normalized.as_str() {
            "" | "auto" => &[ComposeCmd::V2, ComposeCmd::V1],
            "docker compose" | "v2" => &[ComposeCmd::V2],
            "docker-compose" | "v1" => &[ComposeCmd::V1],
            _ => {
                return Err(Error::ComposeNotFound {
                    setting: setting.to_string(),
                    detail: "unknown setting (use auto, \"docker compose\" or \"docker-compose\")"
                        .into(),
                });
            }
        };
        let mut tried = Vec::new();
        for c in candidates {
            match c.version() {
                Ok(v) => {
                    tracing::debug!(compose = c.display(), version = %v, "found compose");
                    return Ok((*c, v));
                }
                Err(why) => tried.push(format!("`{} version` {why}", c.display())),
            }
        }
        Err(Error::ComposeNotFound {
            setting: setting.to_string(),
            detail: tried.join("; "),
        })
    }

    /// The first line `<cmd> version` prints, or why it did not work.
    fn version(self) -> Result<String, NotRunnable> {
        let (program, lead) = self.program();
        let out = std::process::Command::new(program)
            .args(lead)
            .arg("version")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("could not run: {e}"))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(NotRunnable::from(format!(
                "failed ({}){}",
                out.status,
                super::last_line(&stderr)
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string())
    }

    /// The program and the arguments that precede the compose arguments.
    pub fn program(self) -> (&'static str, &'static [&'static str]) {
        match self {
            ComposeCmd::V2 => ("docker", &["compose"]),
            ComposeCmd::V1 => ("docker-compose", &[]),
        }
    }

    /// `docker compose` or `docker-compose`.
    pub fn display(self) -> &'static str {
        match self {
            ComposeCmd::V2 => "docker compose",
            ComposeCmd::V1 => "docker-compose",
        }
    }

    /// `docker compose (Docker Compose version v2.40.3)`: which one, and
    /// what its `version` said (see [`ComposeCmd::detect_version`]).
    pub fn describe(self, version: &str) -> String {
        format!("{} ({version})", self.display())
    }

    /// The full argument list after the program: `-p <project>
    /// --project-directory <dir of the first file> [--env-file <dir>/.env]
    /// -f f… args…`. Both are explicit so that a compose file in a
    /// subdirectory (`compose: sub/compose.yaml`) still gets the release's
    /// `.env` (compose would look next to the file), and relative paths stay
    /// relative to the compose file, as `validate` checks them — with v1 and
    /// v2 alike.
    pub fn args(self, project: &str, dir: &Path, files: &[String], args: &[&str]) -> Vec<String> {
        let (_, lead) = self.program();
        let mut out: Vec<String> = lead.iter().map(|s| s.to_string()).collect();
        out.extend(["-p".to_string(), project.to_string()]);
        let first_dir = files
            .first()
            .and_then(|f| Path::new(f).parent())
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| dir.join(p))
            .unwrap_or_else(|| dir.to_path_buf());
        out.extend([
            "--project-directory".to_string(),
            first_dir.display().to_string(),
        ]);
        let env = dir.join(".env");
        if env.is_file() {
            out.extend(["--env-file".to_string(), env.display().to_string()]);
        }
        for f in files {
            out.extend(["-f".to_string(), f.clone()]);
        }
        out.extend(args.iter().map(|s| s.to_string()));
        out
    }
}

impl Docker {
    /// Runs `<compose> -p <project> -f <file>… <args…>` in the project's
    /// directory and returns what it printed (stdout and stderr interleaved
    /// by line), masked. Relative files are relative to that directory;
    /// compose also reads its `.env`. The child is killed if the returned
    /// future is dropped (e.g. by a timeout).
    ///
    /// # Errors
    /// [`Error::Spawn`] when the program cannot be started,
    /// [`Error::Compose`] (with the masked command and output tail) when it
    /// exits non-zero.
    pub async fn compose(&self, p: Project<'_>, args: &[&str]) -> Result<CommandLog, Error> {
        let (program, _) = self.compose.program();
        let argv = self.compose.args(p.name, p.dir, p.files, args);
        let env = [("COMPOSE_PROJECT_NAME".to_string(), p.name.to_string())];
        self.run_cli(program, &argv, p.dir, &env).await
    }

    /// Runs `program argv…` in `dir` with `env` added, as [`Docker::compose`]
    /// says (output masked, kept in an unlinked file, own process group,
    /// killed if the future is dropped).
    pub(super) async fn run_cli(
        &self,
        program: &str,
        argv: &[String],
        dir: &Path,
        env: &[(String, String)],
    ) -> Result<CommandLog, Error> {
        self.run_cli_split(program, argv, dir, env, false)
            .await
            .map(|(log, _)| log)
    }

    /// `<compose> config` for `p`: the model compose will run, as it
    /// prints it (JSON under v2, YAML under v1), parsed. The log keeps
    /// only what it printed on stderr (warnings).
    ///
    /// # Errors
    /// As [`Docker::compose`]; [`Error::Compose`] also when the output is
    /// larger than [`MODEL_OUTPUT_CAP`] or cannot be parsed.
    pub async fn config_model(
        &self,
        p: Project<'_>,
    ) -> Result<(CommandLog, serde_json::Value), Error> {
        let (program, _) = self.compose.program();
        let args: &[&str] = match self.compose {
            ComposeCmd::V2 => &["config", "--format", "json"],
            ComposeCmd::V1 => &["config"],
        };
        let argv = self.compose.args(p.name, p.dir, p.files, args);
        let env = [("COMPOSE_PROJECT_NAME".to_string(), p.name.to_string())];
        let (log, out) = self
            .run_cli_split(program, &argv, p.dir, &env, true)
            .await?;
        let out = out.unwrap_or_default();
        let bad = |why: String| Error::Compose {
            command: log.command.clone(),
            code: log.code,
            output: why,
        };
        if out.len() >= MODEL_OUTPUT_CAP {
            return Err(bad(format!(
                "its model is larger than {} MiB",
                MODEL_OUTPUT_CAP >> 20
            )));
        }
        let model: serde_json::Value = match self.compose {
            ComposeCmd::V2 => serde_json::from_str(&out)
                .map_err(|e| bad(format!("its JSON model cannot be read: {e}")))?,
            ComposeCmd::V1 => serde_saphyr::from_str(&out)
                .map_err(|e| bad(format!("its YAML model cannot be read: {e}")))?,
        };
        Ok((log, model))
    }

    /// [`Docker::run_cli`]; with `split`, stdout goes to a file of its own
    /// and is returned (up to [`MODEL_OUTPUT_CAP`] bytes) beside the log.
    async fn run_cli_split(
        &self,
        program: &str,
        argv: &[String],
        dir: &Path,
        env: &[(String, String)],
        split: bool,
    ) -> Result<(CommandLog, Option<String>), Error> {
        let command = self.mask(&shell_line(program, argv));
        let started = Instant::now();

        // Output goes to a file, not a pipe: if stackpin dies mid-command,
        // compose must not die of a broken pipe at its next line (between
        // stopping a container and creating its successor); it finishes,
        // and the next run's recovery waits for it. The file is unlinked at
        // once: nothing is left behind, whoever ends first.
        let spawn_err = |source| Error::Spawn {
            command: command.clone(),
            source,
        };
        let mut log = output_file().map_err(spawn_err)?;
        let mut stdout_file = if split {
            Some(output_file().map_err(spawn_err)?)
        } else {
            None
        };
        let (out, err) = (
            match &stdout_file {
                Some(f) => f.try_clone().map_err(spawn_err)?,
                None => log.try_clone().map_err(spawn_err)?,
            },
            log.try_clone().map_err(spawn_err)?,
        );
        let mut child = tokio::process::Command::new(program)
            .args(argv)
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            // Plain output: no colours or cursor tricks in logs.
            .env("COMPOSE_ANSI", "never")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            // Its own process group: a signal meant for stackpin (a
            // terminal's Ctrl-C) does not cut compose off mid-operation,
            // and an orphan left by a crash can be found and stopped as a
            // whole (see `orphans_in`).
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_err)?;
        let status = child.wait().await.map_err(spawn_err)?;
        let stdout = stdout_file.as_mut().map(|f| read_tail(f, MODEL_OUTPUT_CAP));
        let output = self.mask(&read_tail(&mut log, LOG_OUTPUT_CAP));
        let log = CommandLog {
            command,
            code: status.code(),
            output,
            duration: started.elapsed(),
        };
        tracing::info!(
            command = %log.command,
            code = ?log.code,
            duration = %humantime::format_duration(round_ms(log.duration)),
            "{program} {}",
            if status.success() { "succeeded" } else { "failed" }
        );
        if !status.success() {
            tracing::debug!(output = %log.output, "compose output");
            return Err(Error::Compose {
                command: log.command,
                code: log.code,
                output: tail(&log.output, ERROR_OUTPUT_CAP).to_string(),
            });
        }
        Ok((log, stdout))
    }
}

/// A new, already unlinked file for a command's output (stdout and stderr
/// interleaved as written), owner-only.
fn output_file() -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("stackpin-compose-{}-{n}.log", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

/// The last `max` bytes of what was written to `f`, as text.
fn read_tail(f: &mut std::fs::File, max: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max as u64);
    let mut bytes = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_ok() {
        let _ = f.read_to_end(&mut bytes);
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    tail(&text, max).to_string()
}

/// The last `max` bytes of `s`, cut at a character boundary.
fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// A command line a person can paste into a shell.
fn shell_line(program: &str, args: &[String]) -> String {
    let mut out = program.to_string();
    for a in args {
        out.push(' ');
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c))
        {
            out.push_str(a);
        } else {
            out.push('\'');
            out.push_str(&a.replace('\'', r"'\''"));
            out.push('\'');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_always_name_the_project_and_files() {
        let files = vec!["compose.yaml".to_string(), "override.yaml".to_string()];
        assert_eq!(
            ComposeCmd::V2.args("web", Path::new("/srv/stacks/web"), &files, &["up", "-d"]),
            [
                "compose",
                "-p",
                "web",
                "--project-directory",
                "/srv/stacks/web",
                "-f",
                "compose.yaml",
                "-f",
                "override.yaml",
                "up",
                "-d"
            ]
        );
        assert_eq!(
            ComposeCmd::V1.args("web", Path::new("/r"), &[], &["down"]),
            ["-p", "web", "--project-directory", "/r", "down"]
        );
    }

    #[test]
    fn unknown_setting_is_refused_without_running_anything() {
        let e = ComposeCmd::detect("podman-compose").unwrap_err();
        assert!(matches!(e, Error::ComposeNotFound { .. }), "{e}");
        assert!(e.to_string().contains("podman-compose"), "{e}");
    }

    #[test]
    fn shell_line_quotes_what_needs_it() {
        let args: Vec<String> = ["-p", "web", "-f", "my file.yaml", "it's"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            shell_line("docker-compose", &args),
            r"docker-compose -p web -f 'my file.yaml' 'it'\''s'"
        );
    }

    #[test]
    fn tail_cuts_at_char_boundary() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("aé", 1), "");
    }
}

/// Compose commands still running for `project` (`-p <project>` in their
/// arguments), and `docker stack deploy|rm … <project>` (a Swarm stack's),
/// by pid: what a stackpin that died mid-converge left behind
/// (the compose CLI keeps working when its parent is SIGKILLed, and for
/// `docker compose` the plugin process too). Read from `/proc`; the
/// caller's own children are not excluded, so call it while holding the
/// stack's lock, before starting any. Pure over `procs`.
pub fn orphans_in(procs: &[(u32, Vec<String>)], project: &str) -> Vec<u32> {
    procs
        .iter()
        .filter(|(_, argv)| {
            let base = |a: &String| a.rsplit('/').next().unwrap_or(a).to_string();
            // v1 is a Python script: `python3 /usr/bin/docker-compose …`.
            let compose = argv.iter().take(2).any(|a| base(a) == "docker-compose")
                || (argv.first().map(base).as_deref() == Some("docker")
                    && argv.iter().any(|a| a == "compose"));
            let stack = argv.first().map(base).as_deref() == Some("docker")
                && argv
                    .windows(2)
                    .any(|w| w[0] == "stack" && (w[1] == "deploy" || w[1] == "rm"))
                && argv.last().is_some_and(|a| a == project);
            stack || (compose && argv.windows(2).any(|w| w[0] == "-p" && w[1] == project))
        })
        .map(|(pid, _)| *pid)
        .collect()
}

/// Every process's argv from `/proc` (those that cannot be read are left
/// out: they ended, or are not ours to see).
pub fn processes() -> Vec<(u32, Vec<String>)> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let argv: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            (!argv.is_empty()).then_some((pid, argv))
        })
        .collect()
}

#[cfg(test)]
mod orphan_tests {
    use super::orphans_in;

    #[test]
    fn finds_compose_v1_and_v2_of_that_project_only() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let procs = vec![
            (
                10,
                v(&["/usr/bin/docker-compose", "-p", "shop", "up", "-d"]),
            ),
            (11, v(&["docker", "compose", "-p", "shop", "up", "-d"])),
            (
                12,
                v(&[
                    "/usr/libexec/docker/cli-plugins/docker-compose",
                    "compose",
                    "-p",
                    "shop",
                    "up",
                ]),
            ),
            (13, v(&["docker-compose", "-p", "shop-2", "up"])),
            (14, v(&["vim", "-p", "shop"])),
            (15, v(&["docker", "ps", "-p", "shop"])),
            (
                16,
                v(&[
                    "/usr/bin/python3",
                    "/usr/bin/docker-compose",
                    "-p",
                    "shop",
                    "up",
                ]),
            ),
        ];
        assert_eq!(orphans_in(&procs, "shop"), vec![10, 11, 12, 16]);
    }

    #[test]
    fn finds_a_swarm_stacks_deploy_and_rm() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let procs = vec![
            (
                20,
                v(&[
                    "docker",
                    "stack",
                    "deploy",
                    "--prune",
                    "-c",
                    "compose.yaml",
                    "shop",
                ]),
            ),
            (21, v(&["/usr/bin/docker", "stack", "rm", "shop"])),
            (
                22,
                v(&["docker", "stack", "deploy", "-c", "shop", "shop-2"]),
            ),
            (23, v(&["docker", "stack", "ps", "shop"])),
            (24, v(&["docker", "service", "rm", "shop"])),
        ];
        assert_eq!(orphans_in(&procs, "shop"), vec![20, 21]);
    }
}
