//! The daemon's read-only status page (SPEC §6), `GET /`: one row per stack
//! and the recent history, rendered on the server from the same data as
//! `/api/v1/stacks` (the published [`Snapshot`]) and `/api/v1/history` (the
//! audit log). Plain HTML with inline CSS: no script, no build step, no
//! external request; it reloads itself every [`REFRESH_SECS`] seconds.
//!
//! Every value on the page is escaped with [`escape`]: stack names, reasons
//! and history notes come from git and from operators. The response also
//! carries a Content-Security-Policy that forbids scripts altogether.

use crate::history::Entry;
use crate::status::{Snapshot, StackStatus};
use chrono::{DateTime, Utc};
use std::fmt::Write as _;

/// How often the page reloads itself.
pub const REFRESH_SECS: u32 = 10;

/// How many history lines the page shows, newest first.
pub const HISTORY_ROWS: usize = 50;

/// `s` safe as HTML text and as a quoted attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The colour of a sync status or a health, as the state pill of the same
/// meaning has it (a fixed set, so no user text reaches a class).
fn axis_class(word: &str) -> &'static str {
    match word {
        "Synced" | "Healthy" => "st-converged",
        "OutOfSync" | "Progressing" => "st-progressing",
        "Degraded" => "st-failed",
        "Quarantined" => "st-rolledback",
        "Blocked" => "st-blocked",
        "Held" => "st-held",
        _ => "st-absent",
    }
}

/// The CSS class of a state (a fixed set, so no user text reaches a class).
fn state_class(state: &str) -> &'static str {
    match state {
        "Converged" => "st-converged",
        "Progressing" => "st-progressing",
        "Failed" => "st-failed",
        "RolledBack" => "st-rolledback",
        "Blocked" => "st-blocked",
        "Held" => "st-held",
        "Drifted" => "st-drifted",
        "Absent" => "st-absent",
        _ => "st-unknown",
    }
}

fn status_class(status: &str) -> &'static str {
    match status {
        "success" => "ok",
        "failed" | "fail" => "bad",
        "refused" => "warn",
        _ => "",
    }
}

const CSS: &str = r#"
:root{color-scheme:light;--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);background:#fff}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:.4rem 1.5rem;padding:14px 24px;border-bottom:1px solid var(--line);background:var(--bg)}
header h1{margin:0;font-size:20px}
header .meta{color:var(--muted)}
main{padding:8px 24px 32px}
h2{font-size:16px;margin:22px 0 8px}
.counts{display:flex;flex-wrap:wrap;gap:6px;margin-top:14px}
.banner{margin:14px 0 0;padding:8px 12px;border-radius:6px;border:1px solid}
.banner.bad{background:#ffebe9;border-color:#ff818266;color:#82071e}
.banner.warn{background:#fff8c5;border-color:#d4a72c66;color:#4d2d00}
.wrap{overflow-x:auto;border:1px solid var(--line);border-radius:6px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;vertical-align:top;padding:6px 10px;border-bottom:1px solid var(--line)}
tr:last-child td{border-bottom:0}
th{background:var(--bg);font-weight:600;white-space:nowrap}
td.reason,td.notes{max-width:520px;overflow-wrap:anywhere}
code,.mono{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace}
.nowrap{white-space:nowrap}
.muted{color:var(--muted)}
.state{display:inline-block;padding:1px 9px;border-radius:999px;font-weight:600;font-size:12.5px;color:#fff;white-space:nowrap}
.st-converged{background:#1a7f37}.st-progressing{background:#0969da}.st-failed{background:#cf222e}
.st-rolledback{background:#bc4c00}.st-blocked{background:#8250df}.st-held{background:#59636e}
.st-drifted{background:#9a6700}.st-absent{background:#afb8c1;color:#1f2328}.st-unknown{background:#818b98}
.badge{display:inline-block;margin:0 4px 2px 0;padding:0 7px;border-radius:4px;font-size:12px;border:1px solid;white-space:nowrap}
.badge.held{color:#59636e;border-color:#59636e}
.badge.quarantined{color:#bc4c00;border-color:#bc4c00}
td.ok{color:#1a7f37;font-weight:600}td.bad{color:#cf222e;font-weight:600}td.warn{color:#9a6700;font-weight:600}
footer{padding:0 24px 24px;color:var(--muted)}
footer a{color:#0969da}
"#;

/// The whole page. `history` is in file order (oldest first), as
/// [`crate::history::read`] returns it; the page shows the newest
/// [`HISTORY_ROWS`] first. `history_error` replaces the history table. Pure.
pub fn render(
    snap: &Snapshot,
    history: &[Entry],
    history_error: Option<&str>,
    now: DateTime<Utc>,
) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>stackpin status</title><style>{CSS}</style></head><body>\n"
    );

    header(&mut h, snap, now);

    // Counts per state, in the order of SPEC §6.
    h.push_str("<div class=\"counts\" id=\"counts\">");
    for st in crate::outcome::State::ALL {
        let n = snap.stacks.iter().filter(|r| r.state == st).count();
        let s = st.as_str();
        if n > 0 {
            let _ = write!(
                h,
                "<span class=\"state {}\">{} {n}</span>",
                state_class(s),
                escape(s)
            );
        }
    }
    h.push_str("</div>\n");

    h.push_str("<h2>Stacks</h2>");
    if snap.stacks.is_empty() {
        h.push_str("<p class=\"muted\" id=\"no-stacks\">No stacks on this host yet.</p>");
    } else {
        h.push_str(
            "<div class=\"wrap\"><table id=\"stacks\"><thead><tr><th>Stack</th><th>State</th>\
             <th>Sync</th><th>Health</th><th>Version</th><th>Digest</th><th>Release</th><th>Last change</th><th>Reason</th>\
             </tr></thead><tbody>\n",
        );
        for r in &snap.stacks {
            stack_row(&mut h, r);
        }
        h.push_str("</tbody></table></div>\n");
    }

    history_table(&mut h, history, history_error);
    h.push_str(
        "</main><footer>JSON: <a href=\"/api/v1/stacks\">/api/v1/stacks</a> · \
         <a href=\"/api/v1/history\">/api/v1/history</a> · metrics: <a href=\"/metrics\">/metrics</a>\
         </footer></body></html>\n",
    );
    h
}

/// The header (what the reconciler last saw) and its banners.
fn header(h: &mut String, snap: &Snapshot, now: DateTime<Utc>) {
    h.push_str("<header><h1>stackpin</h1>");
    let host = &snap.host;
    if !host.name.is_empty() {
        let _ = write!(
            h,
            "<span class=\"meta\" id=\"host\">host <strong>{}</strong>",
            escape(&host.name)
        );
        if !host.labels.is_empty() {
            let _ = write!(h, " ({})", escape(&host.labels.join(", ")));
        }
        let _ = write!(
            h,
            " · stackpin {} · <span title=\"{}\">{}</span></span>",
            escape(&host.version),
            escape(&host.engine),
            escape(host.engine.split(" (").next().unwrap_or_default())
        );
    }
    match &snap.commit {
        Some(c) => {
            let _ = write!(
                h,
                "<span class=\"meta\">desired state <code title=\"{}\">{}</code></span>",
                escape(c),
                escape(&c.chars().take(12).collect::<String>())
            );
        }
        None => h.push_str("<span class=\"meta\">desired state not fetched yet</span>"),
    }
    if let Some(t) = snap.last_fetch_ok {
        let _ = write!(
            h,
            "<span class=\"meta\">last fetch {}</span>",
            t.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    let _ = write!(
        h,
        "<span class=\"meta\">page {} · reloads every {REFRESH_SECS}s</span></header>\n<main>",
        now.format("%Y-%m-%d %H:%M:%S UTC")
    );
    if let Some(e) = &snap.last_fetch_error {
        let _ = write!(
            h,
            "<p class=\"banner bad\" id=\"fetch-error\"><strong>Fetch failed:</strong> {} \
             — the host keeps what it runs.</p>",
            escape(e)
        );
    }
    if let Some(f) = &snap.forced_push {
        let _ = write!(
            h,
            "<p class=\"banner warn\" id=\"forced-push\"><strong>Force-push:</strong> {}</p>",
            escape(f)
        );
    }
}

/// The newest history lines, or why they could not be read.
fn history_table(h: &mut String, history: &[Entry], history_error: Option<&str>) {
    let _ = write!(
        h,
        "<h2>History <span class=\"muted\">(newest first, last {HISTORY_ROWS})</span></h2>"
    );
    if let Some(e) = history_error {
        let _ = write!(
            h,
            "<p class=\"banner bad\" id=\"history-error\">{}</p>",
            escape(e)
        );
    } else if history.is_empty() {
        h.push_str("<p class=\"muted\" id=\"no-history\">No deploys recorded yet.</p>");
    } else {
        h.push_str(
            "<div class=\"wrap\"><table id=\"history\"><thead><tr><th>Time (UTC)</th><th>Stack</th>\
             <th>Env</th><th>Action</th><th>Version</th><th>Status</th><th>Notes</th></tr></thead><tbody>\n",
        );
        for e in history.iter().rev().take(HISTORY_ROWS) {
            let _ = writeln!(
                h,
                "<tr><td class=\"nowrap mono\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td class=\"mono\">{}</td><td class=\"{}\">{}</td><td class=\"notes\">{}</td></tr>",
                e.time.format(crate::history::TIME_FORMAT),
                escape(&e.stack),
                escape(&e.env),
                escape(e.action.as_str()),
                escape(&e.version),
                status_class(e.status.as_str()),
                escape(e.status.as_str()),
                escape(&e.notes),
            );
        }
        h.push_str("</tbody></table></div>\n");
    }
}

fn stack_row(h: &mut String, r: &StackStatus) {
    let dash = || "<span class=\"muted\">–</span>".to_string();
    let opt = |v: &Option<String>, class: &str| match v {
        Some(v) if !v.is_empty() => format!("<span class=\"{class}\">{}</span>", escape(v)),
        _ => dash(),
    };
    let mut badges = String::new();
    if r.held {
        badges.push_str("<span class=\"badge held\">held</span>");
    }
    if r.quarantined {
        badges.push_str("<span class=\"badge quarantined\">quarantined</span>");
    }
    let _ = writeln!(
        h,
        "<tr data-stack=\"{stack}\" data-state=\"{key}\"><td><strong>{stack}</strong></td>\
         <td><span class=\"state {class}\">{state}</span></td>\
         <td><span class=\"state {sync_class}\" data-sync=\"{sync}\">{sync}</span></td>\
         <td><span class=\"state {health_class}\" data-health=\"{health}\">{health}</span></td>\
         <td>{version}</td><td>{digest}</td>\
         <td class=\"nowrap\">{release}</td><td>{last}</td><td class=\"reason\">{badges}{reason}</td></tr>",
        stack = escape(&r.stack),
        state = escape(r.state.as_str()),
        key = r.state.key(),
        class = state_class(r.state.as_str()),
        sync = r.sync.as_str(),
        sync_class = axis_class(r.sync.as_str()),
        health = r.health.as_str(),
        health_class = axis_class(r.health.as_str()),
        version = opt(&r.version, "mono"),
        digest = opt(&r.digest, "mono"),
        release = opt(&r.release, "mono"),
        last = opt(&r.last_change, ""),
        reason = escape(&r.reason),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_matters() {
        assert_eq!(
            escape(r#"<script>alert('x')</script>&"#),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;"
        );
        assert_eq!(escape("\"a\""), "&quot;a&quot;");
    }

    #[test]
    fn renders_rows_and_escapes_user_text() {
        let snap = Snapshot {
            stacks: vec![StackStatus {
                stack: "<img src=x onerror=alert(1)>".into(),
                state: crate::outcome::State::Failed,
                sync: Default::default(),
                health: Default::default(),
                version: Some("v1".into()),
                release: None,
                digest: None,
                last_change: None,
                reason: "r & <i>".into(),
                code: None,
                held: true,
                quarantined: false,
            }],
            ..Default::default()
        };
        let h = render(&snap, &[], None, Utc::now());
        assert!(!h.contains("<img src=x"), "{h}");
        assert!(!h.contains("<b>") && !h.contains("<i>"));
        assert!(h.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(h.contains("<span class=\"badge held\">held</span>"));
        assert!(h.contains("http-equiv=\"refresh\" content=\"10\""));
        assert!(h.contains("No deploys recorded yet."));
    }

    /// Every page says which host it is, escaped like everything else.
    #[test]
    fn the_header_names_the_host_its_labels_and_versions() {
        let snap = Snapshot {
            host: crate::status::HostInfo {
                name: "web-1<b>".into(),
                labels: vec!["role=app".into(), "region=tyo".into()],
                version: "0.1.0".into(),
                engine: "docker compose (Docker Compose version v2.40.3)".into(),
            },
            ..Default::default()
        };
        let h = render(&snap, &[], None, Utc::now());
        assert!(
            h.contains("host <strong>web-1&lt;b&gt;</strong> (role=app, region=tyo) · stackpin 0.1.0 · <span title=\"docker compose (Docker Compose version v2.40.3)\">docker compose</span>"),
            "{h}"
        );
        let bare = render(&Snapshot::default(), &[], None, Utc::now());
        assert!(!bare.contains("id=\"host\""), "{bare}");
    }
}
