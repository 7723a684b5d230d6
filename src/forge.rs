//! Where pull requests are opened: a [`Forge`] finds, opens, updates and
//! closes the one pull request of a branch. [`GitHub`] speaks GitHub's REST
//! API as documented (version `2022-11-28`): `GET /repos/{owner}/{repo}/pulls`
//! (filtered by `head` and `base`, paginated by its `Link` header),
//! `POST /repos/{owner}/{repo}/pulls`, `PATCH /repos/{owner}/{repo}/pulls/{n}`
//! and `POST /repos/{owner}/{repo}/issues/{n}/comments`. The token is read
//! from its file at every call (a rotated one needs no restart) and never
//! logged; a rate-limited answer is an error that names when to try again,
//! and the caller tries at its next run.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// GitHub's public API.
pub const GITHUB_API: &str = "https://api.github.com";
/// The REST API version the requests are written against.
pub const API_VERSION: &str = "2022-11-28";
const TIMEOUT: Duration = Duration::from_secs(15);
/// Pages of a list followed at most (100 pull requests each).
const MAX_PAGES: usize = 10;

/// A pull request as the forge reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PullRequest {
    pub number: u64,
    pub html_url: String,
    pub state: String,
}

/// Why a forge call failed. Never holds the token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: the token file {}: {why}", path.display())]
    Token {
        what: String,
        path: PathBuf,
        why: String,
    },
    #[error("{what}: {url}: {why}")]
    Http {
        what: String,
        url: String,
        why: String,
    },
    #[error("{what}: {url} answered {status}: {message}")]
    Status {
        what: String,
        url: String,
        status: u16,
        message: String,
    },
    #[error("{what}: rate limited by {url}; waiting until {}", until.format("%Y-%m-%dT%H:%M:%SZ"))]
    RateLimited {
        what: String,
        url: String,
        until: chrono::DateTime<chrono::Utc>,
    },
    #[error("failed to build the HTTP client: {0}")]
    Client(String),
}

/// The calls a proposal makes. Each is one request (a list follows its
/// pages).
pub trait Forge: Send + Sync {
    /// The open pull request from `head` (a branch of the repository)
    /// into `base`, if any.
    fn find_open(&self, head: &str, base: &str) -> Result<Option<PullRequest>, Error>;
    fn create(&self, head: &str, base: &str, title: &str, body: &str)
    -> Result<PullRequest, Error>;
    fn update(&self, number: u64, title: &str, body: &str) -> Result<PullRequest, Error>;
    /// Comments on the pull request, then closes it.
    fn close(&self, number: u64, comment: &str) -> Result<(), Error>;
    /// `owner/name` and where, for messages.
    fn describe(&self) -> String;
}

/// GitHub (or GitHub Enterprise at `api_url`).
pub struct GitHub {
    api: String,
    owner: String,
    repo: String,
    token_file: PathBuf,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field("api", &self.api)
            .field("repository", &format!("{}/{}", self.owner, self.repo))
            .finish_non_exhaustive()
    }
}

/// A token from its file, trimmed; `hint` says what to write when the file
/// is empty. The error never holds the token.
///
/// # Errors
/// The file cannot be read or is empty.
pub fn read_token(path: &std::path::Path, hint: &str) -> Result<String, String> {
    let t = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let t = t.trim();
    if t.is_empty() {
        return Err(format!("is empty; {hint}"));
    }
    Ok(t.to_string())
}

/// The HTTP client of the forge calls: no proxy from the environment,
/// bounded, with stackpin's User-Agent (GitHub refuses requests without
/// one).
///
/// # Errors
/// The TLS backend cannot be set up.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("stackpin/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// What a pull request token needs, for messages.
pub const PR_TOKEN_HINT: &str =
    "write a token allowed to write pull requests (fine-grained: \"Pull requests: write\")";

/// `owner/name`, each part as GitHub allows it.
pub fn parse_repository(s: &str) -> Option<(String, String)> {
    let valid = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    match s.split_once('/') {
        Some((o, n)) if valid(o) && valid(n) => Some((o.to_string(), n.to_string())),
        _ => None,
    }
}

impl GitHub {
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(
        api_url: &str,
        owner: &str,
        repo: &str,
        token_file: PathBuf,
    ) -> Result<GitHub, Error> {
        let client = http_client(TIMEOUT).map_err(|e| Error::Client(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Client(e.to_string()))?;
        Ok(GitHub {
            api: api_url.trim_end_matches('/').to_string(),
            owner: owner.to_string(),
            repo: repo.to_string(),
            token_file,
            client,
            rt,
        })
    }

    fn token(&self, what: &str) -> Result<String, Error> {
        read_token(&self.token_file, PR_TOKEN_HINT).map_err(|why| Error::Token {
            what: what.to_string(),
            path: self.token_file.clone(),
            why,
        })
    }

    fn repo_url(&self, rest: &str) -> String {
        format!("{}/repos/{}/{}{rest}", self.api, self.owner, self.repo)
    }

    /// One request; its JSON and the `Link` header's next page.
    fn call(
        &self,
        what: &str,
        method: reqwest::Method,
        url: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(serde_json::Value, Option<String>), Error> {
        let token = self.token(what)?;
        self.rt.block_on(async {
            let mut req = self
                .client
                .request(method, url)
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", API_VERSION)
                .bearer_auth(token);
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(|e| Error::Http {
                what: what.to_string(),
                url: url.to_string(),
                why: e.without_url().to_string(),
            })?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let text = resp.text().await.unwrap_or_default();
            if let Some(until) = rate_limited(status.as_u16(), &headers, chrono::Utc::now()) {
                return Err(Error::RateLimited {
                    what: what.to_string(),
                    url: url.to_string(),
                    until,
                });
            }
            if !status.is_success() {
                let message = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .unwrap_or_else(|| text.chars().take(200).collect());
                return Err(Error::Status {
                    what: what.to_string(),
                    url: url.to_string(),
                    status: status.as_u16(),
                    message,
                });
            }
            let next = headers
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
            let json = if text.trim().is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_str(&text).map_err(|e| Error::Http {
                    what: what.to_string(),
                    url: url.to_string(),
                    why: format!("the answer is not JSON: {e}"),
                })?
            };
            Ok((json, next))
        })
    }

    fn pull(&self, what: &str, v: serde_json::Value, url: &str) -> Result<PullRequest, Error> {
        serde_json::from_value(v).map_err(|e| Error::Http {
            what: what.to_string(),
            url: url.to_string(),
            why: format!("the answer is not a pull request: {e}"),
        })
    }
}

impl Forge for GitHub {
    fn find_open(&self, head: &str, base: &str) -> Result<Option<PullRequest>, Error> {
        let what = "failed to list the open pull requests";
        let mut url = Some(self.repo_url(&format!(
            "/pulls?state=open&head={}:{head}&base={base}&per_page=100",
            self.owner
        )));
        let mut pages = 0;
        while let Some(u) = url.take() {
            pages += 1;
            let (v, next) = self.call(what, reqwest::Method::GET, &u, None)?;
            let list: Vec<PullRequest> = serde_json::from_value(v).map_err(|e| Error::Http {
                what: what.to_string(),
                url: u.clone(),
                why: format!("the answer is not a list of pull requests: {e}"),
            })?;
            if let Some(pr) = list.into_iter().find(|p| p.state == "open") {
                return Ok(Some(pr));
            }
            if pages < MAX_PAGES {
                url = next;
            }
        }
        Ok(None)
    }

    fn create(
        &self,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<PullRequest, Error> {
        let what = "failed to open the pull request";
        let url = self.repo_url("/pulls");
        let (v, _) = self.call(
            what,
            reqwest::Method::POST,
            &url,
            Some(serde_json::json!({"title": title, "head": head, "base": base, "body": body})),
        )?;
        self.pull(what, v, &url)
    }

    fn update(&self, number: u64, title: &str, body: &str) -> Result<PullRequest, Error> {
        let what = "failed to update the pull request";
        let url = self.repo_url(&format!("/pulls/{number}"));
        let (v, _) = self.call(
            what,
            reqwest::Method::PATCH,
            &url,
            Some(serde_json::json!({"title": title, "body": body})),
        )?;
        self.pull(what, v, &url)
    }

    fn close(&self, number: u64, comment: &str) -> Result<(), Error> {
        let url = self.repo_url(&format!("/issues/{number}/comments"));
        self.call(
            "failed to comment on the pull request",
            reqwest::Method::POST,
            &url,
            Some(serde_json::json!({"body": comment})),
        )?;
        let url = self.repo_url(&format!("/pulls/{number}"));
        self.call(
            "failed to close the pull request",
            reqwest::Method::PATCH,
            &url,
            Some(serde_json::json!({"state": "closed"})),
        )?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("{}/{} on {}", self.owner, self.repo, self.api)
    }
}

/// When a rate-limited answer says to try again: GitHub answers 403 or 429
/// with `retry-after` (seconds) for a secondary limit, or with
/// `x-ratelimit-remaining: 0` and `x-ratelimit-reset` (epoch seconds) for
/// the primary one; a 429 without either waits a minute. `None`: not rate
/// limited (a plain 403 is a refusal).
pub fn rate_limited(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    if status != 403 && status != 429 {
        return None;
    }
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(secs) = h("retry-after").and_then(|s| s.trim().parse::<i64>().ok()) {
        return Some(now + chrono::Duration::seconds(secs));
    }
    if h("x-ratelimit-remaining") == Some("0") {
        return Some(
            h("x-ratelimit-reset")
                .and_then(|s| s.trim().parse::<i64>().ok())
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                .unwrap_or(now + chrono::Duration::seconds(60)),
        );
    }
    (status == 429).then(|| now + chrono::Duration::seconds(60))
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn links_and_limits_read_as_github_sends_them() {
        let link = "<https://api.github.com/repositories/1/pulls?page=2>; rel=\"next\", <https://api.github.com/repositories/1/pulls?page=5>; rel=\"last\"";
        assert_eq!(
            next_link(link).as_deref(),
            Some("https://api.github.com/repositories/1/pulls?page=2")
        );
        assert_eq!(
            next_link("<https://x/?page=1>; rel=\"prev\", <https://x/?page=1>; rel=\"first\""),
            None
        );
        let now = chrono::DateTime::from_timestamp(1798675000, 0).unwrap();
        let at = |t| chrono::DateTime::from_timestamp(t, 0);
        let mut h = HeaderMap::new();
        assert_eq!(rate_limited(403, &h, now), None, "a plain 403 is a refusal");
        assert_eq!(rate_limited(429, &h, now), at(1798675060));
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("x-ratelimit-reset", HeaderValue::from_static("1798675200"));
        assert_eq!(rate_limited(403, &h, now), at(1798675200));
        assert_eq!(rate_limited(200, &h, now), None);
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("30"));
        assert_eq!(rate_limited(429, &h, now), at(1798675030));
        assert_eq!(
            parse_repository("acme/desired-state"),
            Some(("acme".into(), "desired-state".into()))
        );
        assert_eq!(parse_repository("acme"), None);
        assert_eq!(parse_repository("acme/a b"), None);
    }
}
