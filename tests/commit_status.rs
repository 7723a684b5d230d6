//! Commit statuses (issue 15): after a converge the host posts what it made
//! of the commit to the desired-state repository. A local HTTP receiver
//! stands in for GitHub and checks every request as GitHub documents
//! `POST /repos/{owner}/{repo}/statuses/{sha}`: the path with the full
//! commit id, `Accept: application/vnd.github+json`, `Authorization: Bearer`,
//! `X-GitHub-Api-Version: 2022-11-28`, a `User-Agent`, and a JSON body of
//! exactly `state`, `target_url`, `description` (at most 140 characters)
//! and `context`.

use crate::common;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{Fixtures, StackFixture, TestHost};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
struct Seen {
    owner: String,
    repo: String,
    sha: String,
    headers: HeaderMap,
    body: serde_json::Value,
}

type Log = Arc<Mutex<Vec<Seen>>>;

async fn statuses(
    State(log): State<Log>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    log.lock().unwrap().push(Seen {
        owner,
        repo,
        sha: sha.clone(),
        headers,
        body: body.clone(),
    });
    // What GitHub answers: 201 and the status created.
    (
        StatusCode::CREATED,
        serde_json::json!({"id": 1, "state": body["state"], "context": body["context"], "url": format!("/statuses/{sha}")}).to_string(),
    )
}

/// A receiver on 127.0.0.1:0 in its own thread; its base URL and log.
fn receiver() -> (String, Log) {
    let log: Log = Arc::default();
    let app = axum::Router::new()
        .route("/repos/{owner}/{repo}/statuses/{sha}", post(statuses))
        .with_state(log.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    (format!("http://{}", rx.recv().unwrap()), log)
}

fn header<'a>(s: &'a Seen, name: &str) -> &'a str {
    s.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// Checks one request as GitHub's documentation describes it.
#[track_caller]
fn assert_github_request(s: &Seen, sha: &str, token: &str) {
    assert_eq!(
        (s.owner.as_str(), s.repo.as_str()),
        ("acme", "desired-state")
    );
    assert_eq!(s.sha, sha, "the full commit id");
    assert_eq!(header(s, "accept"), "application/vnd.github+json");
    assert_eq!(header(s, "authorization"), format!("Bearer {token}"));
    assert_eq!(header(s, "x-github-api-version"), "2022-11-28");
    assert!(header(s, "user-agent").starts_with("stackpin/"), "{s:?}");
    assert!(header(s, "content-type").starts_with("application/json"));
    let mut keys: Vec<&String> = s.body.as_object().expect("a JSON object").keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["context", "description", "state", "target_url"],
        "{}",
        s.body
    );
    assert!(
        ["error", "failure", "pending", "success"].contains(&s.body["state"].as_str().unwrap()),
        "{}",
        s.body
    );
    assert!(s.body["description"].as_str().unwrap().chars().count() <= 140);
}

#[test]
fn a_converge_posts_its_outcome_as_a_commit_status_once() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let (api, log) = receiver();
    let token = format!("ghp_{}", h.prefix());
    std::fs::write(h.tmp().join("token"), format!("{token}\n")).unwrap();
    let cfg = h.tmp().join("config.yaml");
    common::write_config(
        &cfg,
        format!(
            "github_status:\n  repo: acme/desired-state\n  token_file: {}\n  api_url: {api}\n  target_url: http://web-1.example/\n",
            h.tmp().join("token").display()
        ),
    )
    .unwrap();
    let s = h.stack("shop");
    let port = h.free_port();
    let sync = || {
        let out = h
            .cmd(["--config".as_ref(), cfg.as_os_str(), "sync".as_ref()])
            .run();
        assert!(
            !format!("{}{}", out.stdout(), out.stderr()).contains(&token),
            "the token is in no output"
        );
        out
    };

    StackFixture::new(&s, &f.v1, port, "v1").write(&h);
    let a = h.commit("v1");
    assert_eq!(a.len(), 40, "h.commit gives the full id");
    sync().ok();
    {
        let seen = log.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:#?}");
        assert_github_request(&seen[0], &a, &token);
        assert_eq!(
            seen[0].body,
            serde_json::json!({
                "state": "success",
                "target_url": "http://web-1.example/",
                "description": "deployed v1",
                "context": format!("stackpin/test-host/{s}"),
            })
        );
    }

    // A release that fails smoke: rolled back, a failure on its commit.
    StackFixture::new(&s, &f.broken, port, "bad").write(&h);
    let b = h.commit("bad");
    sync().code(1);
    {
        let seen = log.lock().unwrap();
        assert_eq!(seen.len(), 2, "{seen:#?}");
        assert_github_request(&seen[1], &b, &token);
        assert_eq!(seen[1].body["state"], "failure");
        let d = seen[1].body["description"].as_str().unwrap();
        assert!(d.starts_with("rolled back:"), "{d}");
    }
    h.serves(port, "stackpin-test-app v1");

    // Nothing new (the failed release is quarantined): nothing posted.
    sync().ok();
    assert_eq!(log.lock().unwrap().len(), 2);
}
