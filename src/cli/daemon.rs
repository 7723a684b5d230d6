//! `stackpin daemon [--check-config]`: the GitOps loop, or a check of the
//! effective configuration with secrets masked.

use super::setup;
use super::{Global, Status};
use crate::daemon;
use crate::source::strip_credentials;
use anyhow::Context as _;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Validate the configuration, print the effective settings (secrets masked) and exit.
    #[arg(long)]
    pub check_config: bool,
    /// HTTP listen address (overrides http.listen), e.g. 127.0.0.1:9750.
    #[arg(long)]
    pub listen: Option<String>,
    /// Poll interval (overrides repo.poll_interval), e.g. 60s.
    #[arg(long)]
    pub poll_interval: Option<String>,
}

fn read_secret(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let s = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read the secret file {}", path.display()))?;
    Ok(s.trim_end_matches(['\n', '\r']).as_bytes().to_vec())
}

pub fn options(a: &Args, cfg: &crate::config::Config) -> anyhow::Result<daemon::Options> {
    let file = &cfg.file;
    let poll = a
        .poll_interval
        .clone()
        .or_else(|| file.repo.as_ref().and_then(|r| r.poll_interval.clone()))
        .unwrap_or_else(|| "60s".into());
    let poll_interval = humantime::parse_duration(&poll)
        .with_context(|| format!("poll interval \"{poll}\" is not a duration (write e.g. 60s)"))?;
    if poll_interval < Duration::from_secs(1) {
        anyhow::bail!("poll interval must be at least 1s");
    }
    let http = file.http.clone().unwrap_or_default();
    let webhook_secret = match &http.github_secret_file {
        Some(p) => Some(read_secret(p)?),
        None => None,
    };
    Ok(daemon::Options {
        poll_interval,
        listen: a.listen.clone().or(http.listen),
        webhook_secret,
        control_socket: setup::control_socket(cfg),
        control_socket_group: file.control_socket_group.clone(),
        concurrency: file.concurrency.unwrap_or(2).max(1),
        fetch_timeout: Duration::from_secs(60),
    })
}

/// What the host enforces for each stack of the desired state, when it can
/// be read here (a local repository, or the daemon's mirror is not read:
/// `plan` on the host shows the same per stack).
fn effective_policy(
    cfg: &crate::config::Config,
    policy: &crate::policy::HostPolicy,
) -> serde_json::Value {
    match setup::load_desired(cfg) {
        Ok(desired) => {
            let mut out = serde_json::Map::new();
            for name in desired.stacks.keys().chain(desired.invalid.iter()) {
                let e = policy.effective(name);
                let commit_gate = desired
                    .stacks
                    .get(name)
                    .and_then(|s| s.spec.promote_from.clone());
                out.insert(
                    name.clone(),
                    serde_json::json!({
                        "signed_by": e.signed_by,
                        "promote_from": e.promote_from.as_ref().map(|h| h.lengthened_by(commit_gate.as_ref())).or(commit_gate.clone()),
                        "gate_from": if e.promote_from.is_some() { "host" } else if commit_gate.is_some() { "commit" } else { "none" },
                        "break_glass_by": e.break_glass_by,
                        "rules": e.rules,
                    }),
                );
            }
            serde_json::Value::Object(out)
        }
        Err(e) => {
            // The message may quote the repository URL: never its credentials.
            let mut why = format!("{e:#}");
            if let Some(url) = &cfg.repo {
                why = why.replace(url.as_str(), &strip_credentials(url));
            }
            serde_json::json!(format!("not shown: {why}"))
        }
    }
}

/// `--check-config` for a person: the settings one per line (a list or a
/// map said by its size; `--json` shows it whole), then each start check.
fn print_summary(shown: &serde_json::Value, checks: &[crate::daemon::StartCheck]) {
    use serde_json::Value;
    if let Value::Object(map) = shown {
        for (k, v) in map {
            let said = match v {
                Value::Null => continue,
                Value::String(s) => s.clone(),
                Value::Array(a) if a.is_empty() => continue,
                Value::Object(o) if o.is_empty() => continue,
                Value::Array(a) => format!("{} entries (--json shows them)", a.len()),
                Value::Object(o) => format!("{} keys (--json shows them)", o.len()),
                other => other.to_string(),
            };
            if k != "checks" {
                println!("{k}: {said}");
            }
        }
    }
    println!();
    let mut t = super::output::Table::new(&["CHECK", "RESULT", "DETAIL"]).toned(&[1]);
    for c in checks {
        t.row([
            c.what,
            if c.ok { "ok" } else { "FAILED" },
            c.detail.as_str(),
        ]);
    }
    t.print();
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<Status> {
    let cfg = setup::config(g)?;
    let opts = options(&a, &cfg)?;
    if a.check_config {
        let mut shown = serde_json::json!({
            "host": cfg.host,
            "root": cfg.root,
            "state_dir": cfg.state_dir,
            "repo": cfg.repo.as_deref().map(strip_credentials),
            "branch": cfg.branch.clone().unwrap_or_else(|| "main".into()),
            "repo_path": cfg.repo_path,
            "compose": cfg.compose,
            "min_disk_free_percent": cfg.min_disk_free_percent,
            "poll_interval": humantime::format_duration(opts.poll_interval).to_string(),
            "http_listen": opts.listen,
            "webhook_secret": opts.webhook_secret.as_ref().map(|_| "*** (from http.github_secret_file)"),
            "control_socket": opts.control_socket,
            "control_socket_group": opts.control_socket_group,
            "concurrency": opts.concurrency,
        });
        if let Some(r) = &cfg.file.repo {
            shown["ssh_key_file"] = serde_json::json!(r.ssh_key_file);
            shown["known_hosts_file"] = serde_json::json!(r.known_hosts_file);
            shown["token_file"] = serde_json::json!(r.token_file);
        }
        shown["notify"] = serde_json::to_value(&cfg.file.notify)?;
        shown["signers"] = serde_json::to_value(&cfg.file.signers)?;
        shown["policy"] = serde_json::to_value(&cfg.file.policy)?;
        shown["verifiers"] = serde_json::to_value(&cfg.file.verifiers)?;
        // A policy that does not load is one of the checks below.
        shown["effective_policy"] = match crate::policy::HostPolicy::load(&cfg.file) {
            Ok(policy) => effective_policy(&cfg, &policy),
            Err(e) => serde_json::json!(format!("not shown: {e}")),
        };
        shown["verified"] = serde_json::to_value(&cfg.file.verified)?;
        if cfg.repo.is_none() {
            anyhow::bail!(
                "no desired-state repository: set repo.url in the config file or pass --repo"
            );
        }
        // What the daemon checks at start, checked the same way: a config
        // it refuses does not pass here.
        let checks = setup::runtime()?.block_on(daemon::start_checks(&cfg, &opts));
        shown["checks"] = serde_json::to_value(&checks)?;
        if g.json {
            super::output::json(&shown)?;
        } else {
            print_summary(&shown, &checks);
        }
        let failed: Vec<_> = checks.iter().filter(|c| !c.ok).collect();
        for c in &failed {
            eprintln!("error: {}: {}", c.what, c.detail);
        }
        return Ok(if failed.is_empty() {
            Status::Ok
        } else {
            Status::Failed
        });
    }
    let rt = setup::runtime()?;
    rt.block_on(daemon::run(cfg, opts))?;
    Ok(Status::Ok)
}
