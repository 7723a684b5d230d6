//! The daemon's HTTP server over real TCP on loopback: webhook
//! authentication, branch filtering, size limit and coalescing; health and
//! readiness; metrics that a Prometheus text parser accepts; the JSON API.
//! No engine needed.

use crate::common;
use chrono::Utc;
use futures_util::StreamExt;
use stackpin::history::{self, Action, Entry, Status};

use common::api_server::{BRANCH, SECRET, Server, sign};
use stackpin::server::{MAX_WEBHOOK_BYTES, Trigger};
use stackpin::status::StackStatus;
use std::collections::BTreeMap;

fn push(branch: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ref": format!("refs/heads/{branch}"),
        "before": "0000000000000000000000000000000000000000",
        "after": "1111111111111111111111111111111111111111",
        "repository": {"full_name": "acme/desired-state"},
    }))
    .unwrap()
}

async fn json(r: reqwest::Response) -> serde_json::Value {
    r.json().await.unwrap()
}

#[tokio::test]
async fn signed_push_to_the_tracked_branch_triggers_one_run() {
    let mut s = Server::start(Some(SECRET), 8).await;
    let r = s.deliver_signed("push", &push(BRANCH)).await;
    assert_eq!(r.status(), 202);
    assert_eq!(json(r).await, serde_json::json!({"accepted": true}));
    assert_eq!(s.drain(), [Trigger::Webhook]);
    assert!(
        s.metrics_text()
            .contains("stackpin_webhooks_total{outcome=\"accepted\"} 1")
    );
}

#[tokio::test]
async fn bad_or_missing_signatures_are_401_and_trigger_nothing() {
    let mut s = Server::start(Some(SECRET), 8).await;
    let body = push(BRANCH);
    let wrong_secret = s
        .deliver("push", &body, Some(sign(b"other-secret", &body)))
        .await;
    assert_eq!(wrong_secret.status(), 401);
    let mut tampered = body.clone();
    tampered.push(b' ');
    let r = s
        .deliver("push", &tampered, Some(sign(SECRET, &body)))
        .await;
    assert_eq!(r.status(), 401);
    let r = s.deliver("push", &body, None).await;
    assert_eq!(r.status(), 401);
    let r = s
        .deliver("push", &body, Some("sha256=not-hex".into()))
        .await;
    assert_eq!(r.status(), 401);
    // Not even a ping is answered without a valid signature.
    let r = s.deliver("ping", b"{\"zen\":\"x\"}", None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(s.drain(), []);
    assert!(
        s.metrics_text()
            .contains("stackpin_webhooks_total{outcome=\"unauthorized\"} 5")
    );
}

#[tokio::test]
async fn other_branches_and_events_are_ignored() {
    let mut s = Server::start(Some(SECRET), 8).await;
    let r = s.deliver_signed("push", &push("feature/x")).await;
    assert_eq!(r.status(), 202);
    let v = json(r).await;
    assert_eq!(v["accepted"], false);
    assert!(
        v["ignored"]
            .as_str()
            .unwrap()
            .contains("refs/heads/feature/x"),
        "{v}"
    );
    // `refs/heads/main-2` must not match a prefix test.
    let r = s.deliver_signed("push", &push("main-2")).await;
    assert_eq!(json(r).await["accepted"], false);
    let r = s.deliver_signed("issues", b"{\"action\":\"opened\"}").await;
    assert_eq!(r.status(), 202);
    assert_eq!(json(r).await["accepted"], false);
    assert_eq!(s.drain(), []);
}

#[tokio::test]
async fn ping_answers_with_zen() {
    let mut s = Server::start(Some(SECRET), 8).await;
    let r = s
        .deliver_signed(
            "ping",
            b"{\"zen\":\"Keep it logically awesome.\",\"hook_id\":1}",
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        json(r).await,
        serde_json::json!({"ok": true, "zen": "Keep it logically awesome."})
    );
    assert_eq!(s.drain(), []);
}

#[tokio::test]
async fn unparsable_signed_json_is_400() {
    let mut s = Server::start(Some(SECRET), 8).await;
    for body in [&b"{not json"[..], b"{\"no_ref\":1}", b"[]"] {
        let r = s.deliver_signed("push", body).await;
        assert_eq!(r.status(), 400, "{}", String::from_utf8_lossy(body));
    }
    assert_eq!(s.drain(), []);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let mut s = Server::start(Some(SECRET), 8).await;
    let mut body = push(BRANCH);
    body.resize(MAX_WEBHOOK_BYTES + 1, b' ');
    let r = s.deliver_signed("push", &body).await;
    assert_eq!(r.status(), 413);
    // Exactly at the limit is still read (and, being valid JSON, accepted).
    body.truncate(MAX_WEBHOOK_BYTES);
    let r = s.deliver_signed("push", &body).await;
    assert_eq!(r.status(), 202);
    assert_eq!(s.drain(), [Trigger::Webhook]);
    assert!(
        s.metrics_text()
            .contains("stackpin_webhooks_total{outcome=\"too_large\"} 1")
    );
}

#[tokio::test]
async fn without_a_secret_the_webhook_is_404() {
    let mut s = Server::start(None, 8).await;
    let body = push(BRANCH);
    let r = s.deliver("push", &body, Some(sign(SECRET, &body))).await;
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("webhook not configured"));
    assert_eq!(s.drain(), []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_deliveries_coalesces_into_one_queued_run() {
    let mut s = Server::start(Some(SECRET), 1).await;
    let body = push(BRANCH);
    let sig = sign(SECRET, &body);
    let statuses: Vec<u16> = futures_util::stream::iter(0..1000)
        .map(|_| {
            let (s, body, sig) = (&s, &body, sig.clone());
            async move { s.deliver("push", body, Some(sig)).await.status().as_u16() }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(statuses.len(), 1000);
    assert!(statuses.iter().all(|&c| c == 202), "{statuses:?}");
    assert_eq!(s.drain(), [Trigger::Webhook]);
    assert!(
        s.metrics_text()
            .contains("stackpin_webhooks_total{outcome=\"accepted\"} 1000")
    );
}

#[tokio::test]
async fn healthz_and_readyz() {
    let s = Server::start(Some(SECRET), 8).await;
    let r = s.get("/healthz").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap().trim(), "ok");

    let r = s.get("/readyz").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.unwrap().trim(), "never fetched");

    s.state.snapshot.write().unwrap().last_fetch_ok = Some(Utc::now());
    let r = s.get("/readyz").await;
    assert_eq!(r.status(), 200);

    {
        let mut snap = s.state.snapshot.write().unwrap();
        snap.last_fetch_ok = Some(Utc::now() - chrono::Duration::seconds(301));
        snap.last_fetch_error = Some("failed to fetch: connection refused".into());
    }
    let r = s.get("/readyz").await;
    assert_eq!(r.status(), 503);
    let text = r.text().await.unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("last fetch failed: failed to fetch: connection refused; stale since "),
        "{text}"
    );
}

/// One parsed sample line.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict-enough parser of the Prometheus / OpenMetrics text format:
/// `# HELP|TYPE|UNIT name …` and `# EOF` comments, and samples
/// `name{label="value",…} value` with escaped label values. Panics on
/// anything else, on a sample whose family has no `# TYPE`, and on lines
/// after `# EOF`.
fn parse_exposition(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    let mut eof = false;
    let is_name = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in text.lines() {
        assert!(!eof, "line after # EOF: {line:?}");
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().unwrap_or_default();
            assert!(is_name(name), "bad metric name in {line:?}");
            match kind {
                "TYPE" => {
                    let t = parts.next().unwrap_or_default();
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "info",
                            "unknown"
                        ]
                        .contains(&t),
                        "{line:?}"
                    );
                    types.insert(name.to_string(), t.to_string());
                }
                "HELP" | "UNIT" => {}
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        assert!(!line.starts_with('#'), "bad comment {line:?}");
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("{line:?}"));
        let name = &line[..name_end];
        assert!(is_name(name), "bad sample name in {line:?}");
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            loop {
                let (start, c) = chars.next().unwrap_or_else(|| panic!("{line:?}"));
                if c == '}' {
                    rest = &r[start + 1..];
                    break;
                }
                let eq = r[start..].find('=').unwrap_or_else(|| panic!("{line:?}")) + start;
                let key = &r[start..eq];
                assert!(is_name(key), "bad label name in {line:?}");
                while chars.peek().is_some_and(|&(i, _)| i <= eq) {
                    chars.next();
                }
                assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line:?}");
                let mut value = String::new();
                loop {
                    match chars.next().unwrap_or_else(|| panic!("{line:?}")).1 {
                        '"' => break,
                        '\\' => match chars.next().unwrap().1 {
                            'n' => value.push('\n'),
                            c @ ('\\' | '"') => value.push(c),
                            c => panic!("bad escape \\{c} in {line:?}"),
                        },
                        c => value.push(c),
                    }
                }
                labels.insert(key.to_string(), value);
                if chars.peek().is_some_and(|&(_, c)| c == ',') {
                    chars.next();
                }
            }
        }
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value not a float in {line:?}"));
        let family = ["_total", "_bucket", "_sum", "_count", "_created"]
            .iter()
            .find_map(|sfx| name.strip_suffix(sfx).filter(|f| types.contains_key(*f)))
            .unwrap_or(name);
        assert!(types.contains_key(family), "no # TYPE for {line:?}");
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    assert!(eof, "no # EOF");
    (types, samples)
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text() {
    let s = Server::start(Some(SECRET), 8).await;
    let m = &s.state.metrics;
    m.record_run("success");
    m.record_run("noop");
    m.observe_converge("web", 4.2);
    m.observe_smoke("web", 0.7);
    m.set_stack_state("web", stackpin::outcome::State::Converged);
    m.set_last_success("web", 1_769_767_200);
    m.set_counts(1, 0, 2);
    m.fetch_error();
    m.set_last_fetch(1_769_767_201);
    m.webhook("ignored");

    // What Prometheus sends: OpenMetrics first.
    let r = s
        .client
        .get(s.url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        ct.starts_with("application/openmetrics-text; version=1.0.0"),
        "{ct}"
    );
    let text = r.text().await.unwrap();
    let (types, samples) = parse_exposition(&text);
    assert_eq!(types["stackpin_sync_runs"], "counter");
    assert_eq!(types["stackpin_converge_duration_seconds"], "histogram");
    assert_eq!(types["stackpin_stack_state"], "gauge");
    let find = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
            .value
    };
    assert_eq!(
        find("stackpin_sync_runs_total", &[("result", "success")]),
        1.0
    );
    assert_eq!(
        find(
            "stackpin_converge_duration_seconds_bucket",
            &[("stack", "web"), ("le", "5.0")]
        ),
        1.0
    );
    assert_eq!(
        find(
            "stackpin_converge_duration_seconds_bucket",
            &[("stack", "web"), ("le", "2.0")]
        ),
        0.0
    );
    assert_eq!(
        find(
            "stackpin_converge_duration_seconds_sum",
            &[("stack", "web")]
        ),
        4.2
    );
    assert_eq!(
        find("stackpin_smoke_duration_seconds_count", &[("stack", "web")]),
        1.0
    );
    assert_eq!(
        find(
            "stackpin_stack_state",
            &[("stack", "web"), ("state", "Converged")]
        ),
        1.0
    );
    let states: f64 = samples
        .iter()
        .filter(|s| s.name == "stackpin_stack_state")
        .map(|s| s.value)
        .sum();
    assert_eq!(states, 1.0);
    assert_eq!(
        find(
            "stackpin_last_success_timestamp_seconds",
            &[("stack", "web")]
        ),
        1_769_767_200.0
    );
    assert_eq!(find("stackpin_stacks", &[("condition", "blocked")]), 2.0);
    assert_eq!(find("stackpin_fetch_errors_total", &[]), 1.0);
    assert_eq!(
        find("stackpin_last_fetch_success_timestamp_seconds", &[]),
        1_769_767_201.0
    );
    assert_eq!(
        find("stackpin_webhooks_total", &[("outcome", "ignored")]),
        1.0
    );
}

/// Without an OpenMetrics `Accept` (curl, promtool's users) the classic
/// text format, which Prometheus' own `promtool check metrics` accepts
/// without a complaint: every series has help text, counters end in
/// `_total`, the build and the newest backup are there.
#[tokio::test]
async fn metrics_in_the_classic_format_pass_promtool() {
    let Some(promtool) = promtool() else { return };
    let s = Server::start(Some(SECRET), 8).await;
    let m = &s.state.metrics;
    m.record_run("success");
    m.observe_converge("web", 4.2);
    m.observe_smoke("web", 0.7);
    m.set_stack_state("web", stackpin::outcome::State::Converged);
    m.set_last_success("web", 1_769_767_200);
    m.set_last_backup("web", 1_769_767_100);
    m.set_counts(1, 0, 2);
    m.fetch_error();
    m.webhook("ignored");
    m.record_result(
        "web",
        stackpin::outcome::Outcome::RolledBack,
        Some(stackpin::outcome::Reason::RolledBack),
    );
    let r = s.get("/metrics").await;
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = r.text().await.unwrap();
    for want in [
        "stackpin_build_info{version=",
        "stackpin_backup_last_success_timestamp_seconds{stack=\"web\"} 1769767100",
        "# TYPE stackpin_stack_results_total counter",
        "stackpin_stack_results_total{stack=\"web\",outcome=\"rolled_back\",reason=\"RolledBack\"} 1",
    ] {
        assert!(text.contains(want), "{want}\n{text}");
    }
    let (ok, said) = promtool_check(&promtool, &text);
    assert!(ok && said.trim().is_empty(), "promtool: {said}\n{text}");
    // The OpenMetrics text, fed to promtool as it is, is what it complained
    // about (help text missing for the `_total` series): the check can fail.
    let (ok, said) = promtool_check(&promtool, &s.metrics_text());
    assert!(
        !ok || !said.trim().is_empty(),
        "promtool found nothing to say about the OpenMetrics text"
    );
}

/// `promtool check metrics` on `text`: whether it exited 0, and what it said.
fn promtool_check(promtool: &std::path::Path, text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// `promtool`, from `STACKPIN_TEST_PROMTOOL` or the PATH; under CI a
/// missing one fails the test (scripts/setup.d/promtool.sh installs it).
fn promtool() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("STACKPIN_TEST_PROMTOOL")
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let p = std::path::Path::new("/usr/bin/promtool");
            p.exists().then(|| p.to_path_buf())
        });
    common::required_under_ci(
        found,
        "promtool is missing: scripts/setup.d/promtool.sh installs it (apt-get install prometheus)",
    )
}

#[test]
fn the_test_parser_rejects_garbage() {
    for bad in [
        "x 1\n# EOF\n",
        "# TYPE x gauge\nx one\n# EOF\n",
        "# TYPE x gauge\nx{a=\"1} 1\n# EOF\n",
        "# TYPE x gauge\nx 1\n",
        "# TYPE x gauge\n# EOF\nx 1\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| parse_exposition(bad)).is_err(),
            "{bad:?} parsed"
        );
    }
    let (_, s) = parse_exposition("# TYPE x gauge\nx{a=\"q\\\"\\n\",b=\"\"} -1.5e3\n# EOF\n");
    assert_eq!(s[0].labels["a"], "q\"\n");
    assert_eq!(s[0].value, -1500.0);
}

#[tokio::test]
async fn api_serves_stacks_and_history_as_json() {
    let s = Server::start(Some(SECRET), 8).await;
    {
        let mut snap = s.state.snapshot.write().unwrap();
        snap.commit = Some("19b9b98".into());
        snap.last_fetch_ok = Some(Utc::now());
        snap.stacks.push(StackStatus {
            stack: "web".into(),
            state: stackpin::outcome::State::Converged,
            sync: Default::default(),
            health: Default::default(),
            version: Some("v1".into()),
            release: Some("20260130T100000Z-v1".into()),
            digest: Some("1db6436ca7e0".into()),
            last_change: None,
            reason: "up to date".into(),
            code: None,
            held: false,
            quarantined: false,
        });
    }
    let r = s.get("/api/v1/stacks").await;
    assert_eq!(r.status(), 200);
    let v = json(r).await;
    assert_eq!(v["commit"], "19b9b98");
    assert!(v["last_fetch_ok"].is_string(), "{v}");
    assert!(v["last_fetch_error"].is_null(), "{v}");
    assert_eq!(v["stacks"][0]["stack"], "web");
    assert_eq!(v["stacks"][0]["state"], "converged");

    let p = &s.state.history_path;
    let r = s.get("/api/v1/history").await;
    assert_eq!(
        json(r).await,
        serde_json::json!([]),
        "a missing log is empty"
    );
    history::append(
        p,
        &Entry::now(
            "web",
            "production",
            Action::Deploy,
            "v1",
            Status::Success,
            "",
        ),
    )
    .unwrap();
    history::append(
        p,
        &Entry::now(
            "api",
            "production",
            Action::Rollback,
            "v0",
            Status::Failed,
            "smoke failed",
        ),
    )
    .unwrap();
    let v = json(s.get("/api/v1/history").await).await;
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["stack"], "web");
    assert_eq!(arr[1]["stack"], "api", "newest last");
    assert_eq!(arr[1]["notes"], "smoke failed");

    let v = json(s.get("/api/v1/history?stack=web").await).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["version"], "v1");
    let v = json(s.get("/api/v1/history?limit=1").await).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["stack"], "api");
    let r = s.get("/api/v1/history?limit=lots").await;
    assert_eq!(r.status(), 400);
}

/// `schemathesis`, from `STACKPIN_TEST_SCHEMATHESIS`; under CI a missing one
/// fails the test (scripts/setup.d/schemathesis.sh installs it).
fn schemathesis() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("STACKPIN_TEST_SCHEMATHESIS")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_file());
    common::required_under_ci(
        found,
        "schemathesis is missing: scripts/setup.d/schemathesis.sh installs it (PyPI)",
    )
}

/// The API answers as `/api/v1/openapi.json` says, for whatever schemathesis
/// generates from it (all its checks: status codes, content types, response
/// schemas, rejection of invalid input, 405 for other methods), over a
/// snapshot with a row in every state and a history with every action.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_keeps_its_openapi_contract_under_schemathesis() {
    let Some(st) = schemathesis() else { return };
    let s = Server::start(Some(SECRET), 8).await;
    {
        use stackpin::outcome::{Reason, State};
        let mut snap = s.state.snapshot.write().unwrap();
        snap.commit = Some("19b9b98".into());
        snap.last_fetch_ok = Some(Utc::now());
        snap.last_fetch_error = Some("timed out".into());
        for (i, state) in State::ALL.into_iter().enumerate() {
            let full = i % 2 == 0;
            snap.stacks.push(StackStatus {
                stack: format!("s{i}"),
                state,
                sync: stackpin::outcome::SyncStatus::ALL[i % 7],
                health: stackpin::outcome::Health::ALL[i % 5],
                version: full.then(|| "v1".into()),
                release: full.then(|| "v1__20260130T100000Z".into()),
                digest: full.then(|| "1db6436ca7e0".into()),
                last_change: full.then(|| "2026-01-30T10:00:00Z".into()),
                reason: "why".into(),
                code: full.then_some(Reason::SmokeFailed),
                held: state == State::Held,
                quarantined: !full,
            });
        }
    }
    for (i, action) in Action::ALL.into_iter().enumerate() {
        let status = Status::ALL[i % Status::ALL.len()].clone();
        history::append(
            &s.state.history_path,
            &Entry::now("s0", "production", action, "v1", status, "notes"),
        )
        .unwrap();
    }
    let out = tokio::process::Command::new(st)
        .arg("run")
        .arg(s.url("/api/v1/openapi.json"))
        .args(["--checks", "all", "--max-time", "30", "--workers", "1"])
        .args(["--phases", "examples,coverage,fuzzing"])
        // Generation slows down when the suite loads both cores; that says
        // nothing about the API.
        .args(["--suppress-health-check", "too_slow"])
        .env("SCHEMATHESIS_HOOKS", "")
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("schemathesis runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found problems:\n{said}");
    // Every operation but the document itself (schemathesis leaves out the
    // schema's own URL) was generated for.
    let ops = said
        .split_once("Operations:")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok());
    assert_eq!(ops, Some(5), "operations tested:\n{said}");
    assert!(said.contains("Fuzzing"), "{said}");
}
