//! A tag resolved to its digest through the registry's distribution API
//! (`HEAD /v2/<name>/manifests/<tag>`, the `Docker-Content-Digest` it
//! answers), with the credentials pulls use (see [`super::auth`]): Basic
//! when the registry asks for it, or the token its `Bearer` challenge
//! names. A multi-platform tag resolves to its index digest, as `docker
//! buildx imagetools inspect` shows it; the engine picks the host's platform
//! from the index when it pulls. Loopback registries are spoken to over
//! http, as the engine does; every other over https.

use super::auth::Credentials;
use crate::desired::image::ImageRef;

/// What a tag resolves to is asked with every manifest kind a registry may
/// hold, indexes first.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Why a tag could not be resolved: each names the image and the registry,
/// never a secret.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {image}: {why}")]
pub struct ResolveError {
    pub image: String,
    pub why: String,
    /// The registry answered, and has no such tag (an input error, not an
    /// unreachable registry).
    pub no_tag: bool,
}

/// The registry's host and the repository's path in it (Docker Hub's
/// `library/` added to an official image).
fn endpoint(image: &ImageRef) -> (String, String) {
    let registry = image.registry();
    if !["docker.io", "index.docker.io", "registry-1.docker.io"].contains(&registry) {
        return (
            registry.to_string(),
            image.repository[registry.len() + 1..].to_string(),
        );
    }
    // Docker Hub, however the reference spells it (the image module's
    // normalisation): its API is registry-1's, official images under
    // `library/`.
    let path = image.normalized_repository();
    let path = if path.contains('/') {
        path.to_string()
    } else {
        format!("library/{path}")
    };
    ("registry-1.docker.io".into(), path)
}

fn loopback(host: &str) -> bool {
    let name = host
        .rsplit_once(':')
        .filter(|(h, p)| !h.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

/// The parameters of a `WWW-Authenticate: Bearer realm=…,service=…` header.
fn bearer_params(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.strip_prefix("Bearer ")?;
    let mut out = Vec::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (k, v) = s.split_once('=')?;
        let v = v.trim_start();
        let (value, tail) = if let Some(q) = v.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = v.find(',').unwrap_or(v.len());
            (&v[..end], &v[end..])
        };
        out.push((k.trim().to_string(), value.to_string()));
        s = tail.trim_start_matches(',').trim();
    }
    Some(out)
}

/// The digest `image` (a reference with a tag) names in its registry now.
///
/// # Errors
/// The registry does not answer, refuses the credentials, has no such tag,
/// or answers without a `sha256` digest.
pub async fn resolve_tag(
    image: &ImageRef,
    creds: Option<&Credentials>,
) -> Result<String, ResolveError> {
    let tag = image.tag.as_deref().unwrap_or("latest");
    let shown = format!("{}:{tag}", image.repository);
    let err = |why: String| ResolveError {
        image: shown.clone(),
        why,
        no_tag: false,
    };
    let (host, path) = endpoint(image);
    let scheme = if loopback(&host) { "http" } else { "https" };
    let url = format!("{scheme}://{host}/v2/{path}/manifests/{tag}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| err(e.to_string()))?;
    let basic = creds.and_then(|c| Some((c.username.clone()?, c.password.clone()?)));
    let head = |auth: Option<String>| {
        let mut rq = client.head(&url).header(reqwest::header::ACCEPT, ACCEPT);
        if let Some(a) = auth {
            rq = rq.header(reqwest::header::AUTHORIZATION, a);
        }
        rq.send()
    };
    let mut resp = head(None).await.map_err(|e| err(e.to_string()))?;
    if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let auth = if let Some(params) = bearer_params(&challenge) {
            let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let realm = get("realm")
                .ok_or_else(|| err("the registry's challenge names no realm".into()))?;
            let mut token_url = reqwest::Url::parse(&realm)
                .map_err(|e| err(format!("the registry's realm `{realm}`: {e}")))?;
            token_url
                .query_pairs_mut()
                .append_pair("service", &get("service").unwrap_or_default())
                .append_pair(
                    "scope",
                    &get("scope").unwrap_or_else(|| format!("repository:{path}:pull")),
                );
            let mut rq = client.get(token_url);
            if let Some((u, p)) = &basic {
                rq = rq.basic_auth(u, Some(p));
            }
            let token: serde_json::Value = rq
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| err(format!("the token service refused: {}", e.without_url())))?
                .json()
                .await
                .map_err(|e| err(format!("the token service's answer: {e}")))?;
            let t = token["token"]
                .as_str()
                .or(token["access_token"].as_str())
                .ok_or_else(|| err("the token service answered no token".into()))?;
            format!("Bearer {t}")
        } else {
            let Some((u, p)) = &basic else {
                return Err(err(format!(
                    "{host} wants credentials and registry_auth_file has none for it"
                )));
            };
            use base64::Engine as _;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        resp = head(Some(auth)).await.map_err(|e| err(e.to_string()))?;
    }
    match resp.status() {
        s if s.is_success() => {}
        reqwest::StatusCode::NOT_FOUND => {
            return Err(ResolveError {
                no_tag: true,
                ..err(format!(
                    "{host} has no tag `{tag}` for {path} (fix: push it first, or pin a digest: `repository@sha256:…`)"
                ))
            });
        }
        reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => {
            return Err(err(format!(
                "{host} refused the credentials of registry_auth_file ({})",
                resp.status()
            )));
        }
        s => return Err(err(format!("{host} answered {s}"))),
    }
    let digest = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let hex = digest.strip_prefix("sha256:").unwrap_or_default();
    if hex.len() != 64
        || !hex
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    {
        return Err(err(format!(
            "{host} answered no sha256 Docker-Content-Digest (`{digest}`)"
        )));
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_a_reference_is_asked() {
        let at = |r: &str| endpoint(&ImageRef::parse(r).unwrap());
        assert_eq!(
            at("nginx:1.27"),
            ("registry-1.docker.io".into(), "library/nginx".into())
        );
        assert_eq!(
            at("acme/app:v1"),
            ("registry-1.docker.io".into(), "acme/app".into())
        );
        assert_eq!(
            at("127.0.0.1:5000/stackpin-test/app:v2"),
            ("127.0.0.1:5000".into(), "stackpin-test/app".into())
        );
        assert_eq!(
            at("ghcr.io/acme/odoo:18"),
            ("ghcr.io".into(), "acme/odoo".into())
        );
        assert!(loopback("127.0.0.1:5000") && loopback("localhost:5000") && loopback("localhost"));
        assert!(!loopback("ghcr.io") && !loopback("10.0.0.1:5000"));
    }

    #[test]
    fn a_bearer_challenge_is_read_as_its_parameters() {
        let p = bearer_params(
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:acme/app:pull""#,
        )
        .unwrap();
        assert_eq!(
            p,
            [
                ("realm".to_string(), "https://ghcr.io/token".to_string()),
                ("service".into(), "ghcr.io".into()),
                ("scope".into(), "repository:acme/app:pull".into())
            ]
        );
        assert_eq!(bearer_params("Basic realm=\"x\""), None);
    }
}
