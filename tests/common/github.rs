//! A loopback stand-in for the few GitHub REST endpoints a proposal uses,
//! as GitHub documents them (API version 2022-11-28), over a real bare git
//! repository (the branches a pull request names must exist there):
//!
//! - `GET /repos/{owner}/{repo}/pulls?state&head=owner:branch&base&per_page&page`
//!   (200, a JSON array; a `Link` header with `rel="next"` while pages remain)
//! - `POST /repos/{owner}/{repo}/pulls` `{title, head, base, body}` (201; 422
//!   when `head` is not a branch or an open pull request from it exists)
//! - `PATCH /repos/{owner}/{repo}/pulls/{n}` `{title?, body?, state?, base?}` (200)
//! - `POST /repos/{owner}/{repo}/issues/{n}/comments` `{body}` (201)
//!
//! Every request must carry `Accept: application/vnd.github+json`,
//! `X-GitHub-Api-Version: 2022-11-28`, `Authorization: Bearer <token>` and
//! a `User-Agent`; a body must be JSON of exactly the documented fields.
//! Anything else is answered as GitHub would (401, 404, 422) and logged in
//! [`Forge::rejected`], which a test expects empty.

// A handler's early answer is an axum `Response`, as its handlers return.
#![allow(clippy::result_large_err)]

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A pull request as the stand-in keeps it.
#[derive(Debug, Clone)]
pub struct Pull {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub head: String,
    pub base: String,
    pub state: String,
    pub comments: Vec<String>,
}

#[derive(Default)]
struct Inner {
    /// Requests still to answer as rate limited, and when the limit resets.
    limited: u32,
    reset_in: u64,
    pulls: Vec<Pull>,
    rejected: Vec<String>,
    requests: Vec<String>,
}

#[derive(Clone)]
struct Ctx {
    inner: Arc<Mutex<Inner>>,
    owner: String,
    repo: String,
    token: String,
    git_dir: PathBuf,
    base_url: String,
}

/// The stand-in, serving until dropped with the test process.
pub struct Forge {
    ctx: Ctx,
    /// `http://ADDR:PORT`: `api_url` of a `propose:` entry.
    pub url: String,
    /// A file holding the token it accepts.
    pub token_file: PathBuf,
}

impl Forge {
    /// Serves `owner/repo` on `addr:0` over the bare repository `git_dir`,
    /// accepting `token` (written to `<dir>/forge-token`).
    pub fn start(addr: &str, owner: &str, repo: &str, git_dir: &Path, dir: &Path) -> Forge {
        let token = format!("github_pat_{}", std::process::id());
        let token_file = dir.join("forge-token");
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        let listener = std::net::TcpListener::bind(format!("{addr}:0")).unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let ctx = Ctx {
            inner: Arc::default(),
            owner: owner.into(),
            repo: repo.into(),
            token,
            git_dir: git_dir.to_path_buf(),
            base_url: url.clone(),
        };
        let app = axum::Router::new()
            .route("/repos/{owner}/{repo}/pulls", get(list).post(create))
            .route(
                "/repos/{owner}/{repo}/pulls/{number}",
                axum::routing::patch(update),
            )
            .route(
                "/repos/{owner}/{repo}/issues/{number}/comments",
                post(comment),
            )
            .fallback(fallback)
            .with_state(ctx.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(l, app).await.unwrap();
            });
        });
        Forge {
            ctx,
            url,
            token_file,
        }
    }

    pub fn pulls(&self) -> Vec<Pull> {
        self.ctx.inner.lock().unwrap().pulls.clone()
    }

    /// Requests answered with an error because they were not as GitHub
    /// documents them.
    pub fn rejected(&self) -> Vec<String> {
        self.ctx.inner.lock().unwrap().rejected.clone()
    }

    /// `METHOD path` of every request, in order.
    pub fn requests(&self) -> Vec<String> {
        self.ctx.inner.lock().unwrap().requests.clone()
    }

    /// Answers the next `n` requests as GitHub does when the primary rate
    /// limit is used up: 403, `x-ratelimit-remaining: 0` and the reset
    /// time, `secs` from now.
    pub fn rate_limit(&self, n: u32, secs: u64) {
        let mut inner = self.ctx.inner.lock().unwrap();
        inner.limited = n;
        inner.reset_in = secs;
    }

    /// Marks pull request `n` merged (GitHub closes a merged one).
    pub fn merged(&self, n: u64) {
        let mut inner = self.ctx.inner.lock().unwrap();
        if let Some(p) = inner.pulls.iter_mut().find(|p| p.number == n) {
            p.state = "closed".into();
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [("content-type", "application/json; charset=utf-8")],
        json!({"message": message, "documentation_url": "https://docs.github.com/rest", "status": status.as_u16().to_string()}).to_string(),
    )
        .into_response()
}

impl Ctx {
    /// The checks every request gets; an error answer when one fails.
    fn check(
        &self,
        what: &str,
        headers: &HeaderMap,
        owner: &str,
        repo: &str,
    ) -> Result<(), Response> {
        {
            let mut inner = self.inner.lock().unwrap();
            inner.requests.push(what.to_string());
            if inner.limited > 0 {
                inner.limited -= 1;
                let reset = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    + inner.reset_in;
                let mut r = error(StatusCode::FORBIDDEN, "API rate limit exceeded");
                let hs = r.headers_mut();
                hs.insert("x-ratelimit-limit", "5000".parse().unwrap());
                hs.insert("x-ratelimit-remaining", "0".parse().unwrap());
                hs.insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
                return Err(r);
            }
        }
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
        let reject = |status: StatusCode, why: String| {
            self.inner
                .lock()
                .unwrap()
                .rejected
                .push(format!("{what}: {why}"));
            Err(error(status, &why))
        };
        if h("authorization") != format!("Bearer {}", self.token) {
            return reject(StatusCode::UNAUTHORIZED, "Bad credentials".into());
        }
        if h("accept") != "application/vnd.github+json" {
            return reject(
                StatusCode::BAD_REQUEST,
                format!("Accept is {:?}", h("accept")),
            );
        }
        if h("x-github-api-version") != "2022-11-28" {
            return reject(
                StatusCode::BAD_REQUEST,
                format!("X-GitHub-Api-Version is {:?}", h("x-github-api-version")),
            );
        }
        if h("user-agent").is_empty() {
            return reject(StatusCode::FORBIDDEN, "no User-Agent".into());
        }
        if owner != self.owner || repo != self.repo {
            return reject(StatusCode::NOT_FOUND, "Not Found".into());
        }
        Ok(())
    }

    /// A JSON object body with only `allowed` fields and every `required`.
    fn body(
        &self,
        what: &str,
        text: &str,
        allowed: &[&str],
        required: &[&str],
    ) -> Result<serde_json::Map<String, Value>, Response> {
        let reject = |why: String| {
            self.inner
                .lock()
                .unwrap()
                .rejected
                .push(format!("{what}: {why}"));
            Err(error(StatusCode::UNPROCESSABLE_ENTITY, &why))
        };
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text) else {
            return reject("Problems parsing JSON".into());
        };
        if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
            return reject(format!("unexpected field {k}"));
        }
        if let Some(k) = required.iter().find(|k| !m.contains_key(**k)) {
            return reject(format!("missing field {k}"));
        }
        if let Some((k, _)) = m.iter().find(|(_, v)| !v.is_string()) {
            return reject(format!("{k} is not a string"));
        }
        Ok(m)
    }

    fn branch_exists(&self, branch: &str) -> bool {
        std::process::Command::new("git")
            .arg("--git-dir")
            .arg(&self.git_dir)
            .args(["rev-parse", "--verify", "-q"])
            .arg(format!("refs/heads/{branch}"))
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn json_of(&self, p: &Pull) -> Value {
        let html = format!(
            "https://github.com/{}/{}/pull/{}",
            self.owner, self.repo, p.number
        );
        json!({
            "url": format!("{}/repos/{}/{}/pulls/{}", self.base_url, self.owner, self.repo, p.number),
            "html_url": html,
            "number": p.number,
            "state": p.state,
            "title": p.title,
            "body": p.body,
            "head": {"ref": p.head, "label": format!("{}:{}", self.owner, p.head)},
            "base": {"ref": p.base, "label": format!("{}:{}", self.owner, p.base)},
        })
    }
}

async fn list(
    State(ctx): State<Ctx>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let what = format!("GET /repos/{owner}/{repo}/pulls");
    if let Err(r) = ctx.check(&what, &headers, &owner, &repo) {
        return r;
    }
    let state = q.get("state").map_or("open", String::as_str);
    let per_page: usize = q.get("per_page").and_then(|s| s.parse().ok()).unwrap_or(30);
    let page: usize = q.get("page").and_then(|s| s.parse().ok()).unwrap_or(1);
    if !(1..=100).contains(&per_page) || page == 0 {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "per_page or page out of range",
        );
    }
    let head = q.get("head").map(|h| match h.split_once(':') {
        Some((o, b)) => (o.to_string(), b.to_string()),
        None => (String::new(), h.clone()),
    });
    let all: Vec<Value> = ctx
        .inner
        .lock()
        .unwrap()
        .pulls
        .iter()
        .filter(|p| state == "all" || p.state == state)
        .filter(|p| {
            head.as_ref()
                .is_none_or(|(o, b)| *o == ctx.owner && *b == p.head)
        })
        .filter(|p| q.get("base").is_none_or(|b| *b == p.base))
        .map(|p| ctx.json_of(p))
        .collect();
    let pages = all.len().div_ceil(per_page).max(1);
    let items: Vec<Value> = all
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let mut resp = (StatusCode::OK, Value::Array(items).to_string()).into_response();
    if page < pages {
        let mut next: Vec<String> = q
            .iter()
            .filter(|(k, _)| *k != "page")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        next.push(format!("page={}", page + 1));
        let link = format!(
            "<{}/repos/{owner}/{repo}/pulls?{}>; rel=\"next\", <{}/repos/{owner}/{repo}/pulls?page={pages}>; rel=\"last\"",
            ctx.base_url,
            next.join("&"),
            ctx.base_url
        );
        resp.headers_mut().insert("link", link.parse().unwrap());
    }
    resp
}

async fn create(
    State(ctx): State<Ctx>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    headers: HeaderMap,
    text: String,
) -> Response {
    let what = format!("POST /repos/{owner}/{repo}/pulls");
    if let Err(r) = ctx.check(&what, &headers, &owner, &repo) {
        return r;
    }
    let m = match ctx.body(
        &what,
        &text,
        &[
            "title",
            "head",
            "base",
            "body",
            "draft",
            "maintainer_can_modify",
        ],
        &["head", "base"],
    ) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (head, base) = (s("head"), s("base"));
    if !ctx.branch_exists(&head) || !ctx.branch_exists(&base) {
        ctx.inner
            .lock()
            .unwrap()
            .rejected
            .push(format!("{what}: no branch {head} or {base}"));
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
    }
    let mut inner = ctx.inner.lock().unwrap();
    if inner
        .pulls
        .iter()
        .any(|p| p.state == "open" && p.head == head && p.base == base)
    {
        inner
            .rejected
            .push(format!("{what}: a pull request already exists for {head}"));
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
    }
    let pull = Pull {
        number: inner.pulls.len() as u64 + 1,
        title: s("title"),
        body: s("body"),
        head,
        base,
        state: "open".into(),
        comments: Vec::new(),
    };
    inner.pulls.push(pull.clone());
    (StatusCode::CREATED, ctx.json_of(&pull).to_string()).into_response()
}

async fn update(
    State(ctx): State<Ctx>,
    UrlPath((owner, repo, number)): UrlPath<(String, String, u64)>,
    headers: HeaderMap,
    text: String,
) -> Response {
    let what = format!("PATCH /repos/{owner}/{repo}/pulls/{number}");
    if let Err(r) = ctx.check(&what, &headers, &owner, &repo) {
        return r;
    }
    let m = match ctx.body(&what, &text, &["title", "body", "state", "base"], &[]) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mut inner = ctx.inner.lock().unwrap();
    let Some(p) = inner.pulls.iter_mut().find(|p| p.number == number) else {
        drop(inner);
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    if let Some(t) = m.get("title").and_then(Value::as_str) {
        p.title = t.into();
    }
    if let Some(b) = m.get("body").and_then(Value::as_str) {
        p.body = b.into();
    }
    if let Some(st) = m.get("state").and_then(Value::as_str) {
        if st != "open" && st != "closed" {
            return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
        }
        p.state = st.into();
    }
    let p = p.clone();
    drop(inner);
    (StatusCode::OK, ctx.json_of(&p).to_string()).into_response()
}

async fn comment(
    State(ctx): State<Ctx>,
    UrlPath((owner, repo, number)): UrlPath<(String, String, u64)>,
    headers: HeaderMap,
    text: String,
) -> Response {
    let what = format!("POST /repos/{owner}/{repo}/issues/{number}/comments");
    if let Err(r) = ctx.check(&what, &headers, &owner, &repo) {
        return r;
    }
    let m = match ctx.body(&what, &text, &["body"], &["body"]) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let mut inner = ctx.inner.lock().unwrap();
    let Some(p) = inner.pulls.iter_mut().find(|p| p.number == number) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let body = m["body"].as_str().unwrap_or_default().to_string();
    p.comments.push(body.clone());
    (
        StatusCode::CREATED,
        json!({"id": p.comments.len(), "body": body}).to_string(),
    )
        .into_response()
}

async fn fallback(
    State(ctx): State<Ctx>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    let what = format!("{method} {}", uri.path());
    let mut inner = ctx.inner.lock().unwrap();
    inner.requests.push(what.clone());
    inner
        .rejected
        .push(format!("{what}: not an endpoint stackpin uses"));
    error(StatusCode::NOT_FOUND, "Not Found")
}
