//! `stackpin hold STACK --reason R` and `stackpin resume STACK`.

use super::setup::{self, Services};
use super::{Global, Status};
use crate::control::{self, Request};
use crate::host::LogReporter;

#[derive(Debug, clap::Args)]
pub struct HoldArgs {
    #[arg(value_parser = crate::desired::parse_stack_name, add = super::completions::stack_names())]
    pub stack: String,
    /// Why the stack is held (shown in status and history).
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    #[arg(value_parser = crate::desired::parse_stack_name, add = super::completions::stack_names())]
    pub stack: String,
}

/// What `hold` and `resume` did: the message, or with `--json` one object
/// (`{"schema_version": 1, "stack", "action", "message", "at"}`, the time
/// in RFC 3339 UTC).
fn say(g: &Global, action: &str, stack: &str, message: &str) -> anyhow::Result<()> {
    if g.json {
        let v = serde_json::json!({
            "stack": stack,
            "action": action,
            "message": message,
            "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        super::output::json(&v)
    } else {
        println!("{message}");
        Ok(())
    }
}

/// The daemon's answer to `req`, when one runs (`None`: act here).
fn via_daemon(cfg: &crate::config::Config, req: Request) -> anyhow::Result<Option<String>> {
    let Some(resp) = control::call(&setup::control_socket(cfg), &req)? else {
        return Ok(None);
    };
    match resp.error {
        Some(_) => Err(setup::daemon_refused(&resp)),
        None => Ok(Some(resp.message.unwrap_or_default())),
    }
}

pub fn hold(g: &Global, a: HoldArgs) -> anyhow::Result<Status> {
    let cfg = setup::config(g)?;
    if a.reason.trim().is_empty() {
        anyhow::bail!("--reason must say why the stack is held");
    }
    if let Some(message) = via_daemon(
        &cfg,
        Request::Hold {
            root: cfg.root.clone(),
            stack: a.stack.clone(),
            reason: a.reason.clone(),
        },
    )? {
        say(g, "hold", &a.stack, &message)?;
        return Ok(Status::Ok);
    }
    // A hold only writes files: no engine needed.
    let services = Services::offline(cfg, "not needed to hold a stack")?;
    let host = services.host(&LogReporter, setup::actor(&services.cfg));
    let desired = setup::load_desired(&services.cfg).ok();
    host.check_known(desired.as_ref(), std::slice::from_ref(&a.stack))
        .map_err(|e| setup::BadInput(e.to_string()))?;
    let message = host.hold_stack(&a.stack, &a.reason, None)?;
    say(g, "hold", &a.stack, &message)?;
    Ok(Status::Ok)
}

pub fn resume(g: &Global, a: ResumeArgs) -> anyhow::Result<Status> {
    let cfg = setup::config(g)?;
    if let Some(message) = via_daemon(
        &cfg,
        Request::Resume {
            root: cfg.root.clone(),
            stack: a.stack.clone(),
        },
    )? {
        say(g, "resume", &a.stack, &message)?;
        return Ok(Status::Ok);
    }
    let services = Services::offline(cfg, "not needed to resume a stack")?;
    let host = services.host(&LogReporter, setup::actor(&services.cfg));
    let desired = setup::load_desired(&services.cfg).ok();
    host.check_known(desired.as_ref(), std::slice::from_ref(&a.stack))
        .map_err(|e| setup::BadInput(e.to_string()))?;
    let message = host.resume_stack(&a.stack)?;
    say(g, "resume", &a.stack, &message)?;
    Ok(Status::Ok)
}
