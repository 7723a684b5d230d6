//! `stackpin restore STACK BACKUP-ID` and `stackpin restore STACK --list`:
//! the runbooks' level-2 recovery. Puts back a backup's release, named
//! volumes and databases, smoke-tests it and holds the stack there
//! (`crate::rollback::restore`); `stackpin resume STACK` lets git win again.

use super::rollback::{print_result, via_daemon};
use super::setup::{self, CliReporter};
use super::{Global, Status};
use crate::backup::{self, Manifest};
use crate::control::Request;
use crate::layout::Layout;

#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("what")
        .required(true)
        .args(["backup", "list"])
))]
pub struct Args {
    /// The stack to restore.
    #[arg(value_parser = crate::desired::parse_stack_name, add = super::completions::stack_names())]
    pub stack: String,
    /// The backup to restore: its id (`yyyymmddThhmmssZ`, the name of its
    /// directory under <root>/backups/<stack>/).
    #[arg(value_name = "BACKUP-ID")]
    pub backup: Option<String>,
    /// List the stack's complete backups: id, reason, the version they
    /// belong to, what they hold.
    #[arg(long)]
    pub list: bool,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<Status> {
    let cfg = setup::config(g)?;
    if a.list {
        return list(g, &cfg, &a.stack);
    }
    let id = a.backup.clone().unwrap_or_default();
    let req = Request::Restore {
        root: cfg.root.clone(),
        stack: a.stack.clone(),
        backup: id.clone(),
    };
    if let Some(status) = via_daemon(g, &cfg, &req)? {
        return Ok(status);
    }
    let rt = setup::runtime()?;
    rt.block_on(async {
        let services = setup::connect(cfg).await?;
        let reporter = CliReporter::new(g.json || g.quiet);
        let host = services.host(&reporter, setup::actor(&services.cfg));
        match crate::rollback::restore(&host, &a.stack, &id).await {
            Ok(r) => print_result(g, &r),
            Err(e) if e.is_refusal() => {
                eprintln!("error: {e}");
                Ok(Status::Failed)
            }
            Err(e) => Err(e.into()),
        }
    })
}

/// Reads the host's files only: no engine needed.
fn list(g: &Global, cfg: &crate::config::Config, stack: &str) -> anyhow::Result<Status> {
    let layout = Layout {
        root: cfg.root.clone(),
    };
    let dir = layout.backups_dir(stack);
    let mut rows: Vec<Manifest> = Vec::new();
    for id in backup::list(&dir)? {
        let path = dir.join(&id).join(backup::MANIFEST);
        match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Manifest>(&t).map_err(|e| e.to_string()))
        {
            Ok(m) => rows.push(m),
            Err(e) => eprintln!("warning: {}: {e}", path.display()),
        }
    }
    if g.json {
        super::output::json(&rows)?;
        return Ok(Status::Ok);
    }
    if rows.is_empty() {
        println!("{stack} has no backups in {}", dir.display());
        return Ok(Status::Ok);
    }
    println!(
        "{:<18} {:<11} {:<16} {:<24} {:<24} SIZE",
        "BACKUP", "REASON", "VERSION", "DATABASES", "VOLUMES"
    );
    for m in &rows {
        let names = |v: Vec<&str>| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(",")
            }
        };
        println!(
            "{:<18} {:<11} {:<16} {:<24} {:<24} {}",
            m.id,
            m.reason,
            m.version.as_deref().unwrap_or("-"),
            names(m.databases.iter().map(|d| d.database.as_str()).collect()),
            names(m.volumes.iter().map(|v| v.volume.as_str()).collect()),
            backup::human_bytes(m.bytes)
        );
    }
    Ok(Status::Ok)
}
