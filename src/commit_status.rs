//! Commit statuses on the desired-state repository (`github_status:` in the
//! host config): after a run, each stack whose converge did something gets
//! a status on the commit it converged to, with the context
//! `stackpin/<host>/<stack>`, so the PR that bumped a digest shows, next to
//! its checks, what every host made of it: `success` (deployed), `failure`
//! (rolled back, failed, refused by the signature policy) or `pending`
//! (waiting for staging to verify the digests). GitHub's REST API
//! (`POST /repos/{owner}/{repo}/statuses/{sha}`) as documented; the
//! decision ([`status_of`]) is pure.

use crate::config::GithubStatusConfig;
use crate::outcome::{Outcome, Reason, StackResult};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// GitHub's public API.
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// The longest description GitHub keeps.
pub const MAX_DESCRIPTION: usize = 140;
/// The REST API version the requests are written against.
pub const API_VERSION: &str = "2022-11-28";
const TIMEOUT: Duration = Duration::from_secs(10);

/// `github_status:` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "github_status.repo: {0:?} is not `owner/name`; write the desired-state repository as on GitHub, e.g. acme/desired-state"
    )]
    Repo(String),
    #[error(
        "github_status.api_url: {0:?} is not an http(s) URL; leave it out for github.com, or write https://HOST/api/v3 for GitHub Enterprise"
    )]
    ApiUrl(String),
    #[error("github_status.target_url: {0:?} is not an http(s) URL")]
    TargetUrl(String),
    #[error("github_status.token_file {}: {why}", path.display())]
    Token { path: PathBuf, why: String },
    #[error("failed to build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// One status, as GitHub's API takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitStatus {
    /// `success`, `failure`, `error` or `pending`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_url: Option<String>,
    pub description: String,
    /// `stackpin/<host>/<stack>`.
    pub context: String,
}

/// The status a stack's result gives, or None when the run did nothing to
/// report (unchanged, skipped, a dry run, pruned). Pure.
pub fn status_of(host: &str, r: &StackResult, target_url: Option<&str>) -> Option<CommitStatus> {
    let version = r.version.as_deref().unwrap_or("?");
    let (state, description) = match r.outcome {
        Outcome::Deployed => ("success", format!("deployed {version}")),
        Outcome::Healed => ("success", format!("healed {version}")),
        Outcome::Recovered => ("success", format!("recovered: {}", r.message)),
        Outcome::RolledBack => ("failure", format!("rolled back: {}", r.message)),
        Outcome::Failed => ("failure", format!("failed: {}", r.message)),
        Outcome::Blocked if r.reason == Some(Reason::Unverified) => {
            ("pending", format!("waiting for the gate: {}", r.message))
        }
        Outcome::Blocked => ("failure", format!("refused: {}", r.message)),
        Outcome::Unchanged | Outcome::Skipped | Outcome::Planned | Outcome::Removed => return None,
    };
    Some(CommitStatus {
        state,
        target_url: target_url.map(str::to_string),
        description: truncate(&description, MAX_DESCRIPTION),
        context: format!("stackpin/{host}/{}", r.stack),
    })
}

/// At most `max` characters, the last one `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut out: String = one_line.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Posts statuses for one host; remembers what it posted, so that a stack
/// that stays blocked run after run is reported once per commit.
pub struct Poster {
    endpoint: String,
    token_file: PathBuf,
    target_url: Option<String>,
    client: reqwest::Client,
    posted: Mutex<BTreeMap<String, (String, CommitStatus)>>,
}

impl std::fmt::Debug for Poster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poster")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Poster {
    /// The poster of `github_status:`, its settings checked (the token is
    /// read at each post, so a rotated one needs no restart).
    ///
    /// # Errors
    /// A repository that is not `owner/name`, a URL that is not http(s).
    pub fn new(c: &GithubStatusConfig) -> Result<Poster, Error> {
        if crate::forge::parse_repository(&c.repo).is_none() {
            return Err(Error::Repo(c.repo.clone()));
        }
        let http = |u: &str| u.starts_with("https://") || u.starts_with("http://");
        let api = c.api_url.as_deref().unwrap_or(DEFAULT_API_URL);
        if !http(api) {
            return Err(Error::ApiUrl(api.to_string()));
        }
        if let Some(t) = c.target_url.as_deref().filter(|t| !http(t)) {
            return Err(Error::TargetUrl(t.to_string()));
        }
        let client = crate::forge::http_client(TIMEOUT).map_err(Error::Client)?;
        Ok(Poster {
            endpoint: format!("{}/repos/{}/statuses", api.trim_end_matches('/'), c.repo),
            token_file: c.token_file.clone(),
            target_url: c.target_url.clone(),
            client,
            posted: Mutex::new(BTreeMap::new()),
        })
    }

    /// The token, checked (`daemon --check-config`).
    ///
    /// # Errors
    /// The file cannot be read or is empty.
    pub fn token(&self) -> Result<String, Error> {
        crate::forge::read_token(
            &self.token_file,
            "write a token with the `repo:status` scope (or a fine-grained token with \"Commit statuses: write\")",
        )
        .map_err(|why| Error::Token {
            path: self.token_file.clone(),
            why,
        })
    }

    /// Posts the status of every result of a run on `commit`, each through
    /// `mask` (secret values never leave the host). Failures are logged,
    /// never fatal: the converge is done. Returns how many were posted.
    pub async fn post_run(
        &self,
        host: &str,
        commit: Option<&str>,
        results: &[StackResult],
        mask: &dyn Fn(&str) -> String,
    ) -> usize {
        let Some(sha) = commit else {
            return 0;
        };
        let mut sent = 0;
        for r in results {
            let Some(mut status) = status_of(host, r, self.target_url.as_deref()) else {
                continue;
            };
            status.description = mask(&status.description);
            let key = status.context.clone();
            let unchanged = self
                .posted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&key)
                .is_some_and(|(s, st)| s == sha && *st == status);
            if unchanged {
                continue;
            }
            match self.post(sha, &status).await {
                Ok(()) => {
                    sent += 1;
                    self.posted
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(key, (sha.to_string(), status));
                }
                Err(why) => {
                    tracing::warn!(stack = %r.stack, commit = sha, "commit status not posted: {why}");
                }
            }
        }
        sent
    }

    async fn post(&self, sha: &str, status: &CommitStatus) -> Result<(), String> {
        let token = self.token().map_err(|e| e.to_string())?;
        let resp = self
            .client
            .post(format!("{}/{sha}", self.endpoint))
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
            .bearer_auth(token)
            .json(status)
            .send()
            .await
            .map_err(|e| format!("{}: {e}", self.endpoint))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            let code = resp.status();
            let body = resp.text().await.unwrap_or_default();
            Err(format!(
                "{} answered {code}: {}",
                self.endpoint,
                truncate(&body, 200)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: Outcome, reason: Option<Reason>, message: &str) -> StackResult {
        let mut r = StackResult::new("shop", outcome, reason, message.to_string());
        r.version = Some("v2".into());
        r
    }

    #[test]
    fn each_outcome_gives_the_state_an_approver_expects() {
        let s = |o, reason, m: &str| status_of("web-1", &result(o, reason, m), None);
        let ok = s(Outcome::Deployed, None, "deployed").unwrap();
        assert_eq!(
            (ok.state, ok.description.as_str()),
            ("success", "deployed v2")
        );
        assert_eq!(ok.context, "stackpin/web-1/shop");
        let rb = s(
            Outcome::RolledBack,
            Some(Reason::SmokeFailed),
            "smoke failed; v1 runs again",
        )
        .unwrap();
        assert_eq!(
            (rb.state, rb.description.as_str()),
            ("failure", "rolled back: smoke failed; v1 runs again")
        );
        let gate = s(
            Outcome::Blocked,
            Some(Reason::Unverified),
            "not verified in shop-staging",
        )
        .unwrap();
        assert_eq!(gate.state, "pending");
        let sig = s(Outcome::Blocked, Some(Reason::Untrusted), "unsigned").unwrap();
        assert_eq!(sig.state, "failure");
        for o in [
            Outcome::Unchanged,
            Outcome::Skipped,
            Outcome::Planned,
            Outcome::Removed,
        ] {
            assert_eq!(s(o, None, ""), None, "{o:?}");
        }
        let long = s(Outcome::Failed, None, &"x ".repeat(200)).unwrap();
        assert_eq!(long.description.chars().count(), MAX_DESCRIPTION);
        assert!(long.description.ends_with('…'));
    }

    #[test]
    fn settings_are_checked() {
        let c = |repo: &str, api: Option<&str>| GithubStatusConfig {
            repo: repo.into(),
            token_file: "/nonexistent".into(),
            api_url: api.map(str::to_string),
            target_url: None,
        };
        assert!(Poster::new(&c("acme/desired-state", None)).is_ok());
        assert!(matches!(Poster::new(&c("acme", None)), Err(Error::Repo(_))));
        assert!(matches!(
            Poster::new(&c("a/b/c", None)),
            Err(Error::Repo(_))
        ));
        assert!(matches!(
            Poster::new(&c("a/b", Some("ftp://x"))),
            Err(Error::ApiUrl(_))
        ));
        let e = Poster::new(&c("a/b", None)).unwrap().token().unwrap_err();
        assert!(
            e.to_string()
                .contains("github_status.token_file /nonexistent"),
            "{e}"
        );
    }
}
