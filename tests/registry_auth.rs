//! Pulls from a registry that demands credentials (issue 15): a second
//! registry on loopback with htpasswd (bcrypt) authentication
//! (`scripts/setup.d/auth-registry.sh`), one image pushed to it by digest.
//! Credentials come from a Docker `config.json` named by the host config's
//! `registry_auth_file`: `auths` as `docker login` writes them, or a
//! `credHelpers` helper. Right ones deploy; missing or wrong ones fail the
//! pull naming the registry, leave the host untouched, and no output ever
//! holds the password.

use crate::common;

use common::{StackFixture, TestHost};
use std::os::unix::fs::PermissionsExt;

struct Private {
    registry: String,
    image: String,
    user: String,
    password: String,
}

fn private() -> Option<Private> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let found = (|| {
        Some(Private {
            registry: var("STACKPIN_TEST_AUTH_REGISTRY")?,
            image: var("STACKPIN_TEST_AUTH_IMAGE")?,
            user: var("STACKPIN_TEST_AUTH_USER")?,
            password: var("STACKPIN_TEST_AUTH_PASSWORD")?,
        })
    })();
    common::required_under_ci(
        found,
        "STACKPIN_TEST_AUTH_* are unset: scripts/setup.d/auth-registry.sh starts the registry",
    )
}

/// A host config whose `registry_auth_file` is the Docker config the test
/// then writes: (that file, the host config).
fn auth_config(h: &TestHost) -> (std::path::PathBuf, std::path::PathBuf) {
    let docker_config = h.tmp().join("docker-config.json");
    let host_config = h.tmp().join("config.yaml");
    common::write_config(
        &host_config,
        format!("registry_auth_file: {}\n", docker_config.display()),
    )
    .unwrap();
    (docker_config, host_config)
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

#[test]
fn registry_credentials_pull_and_refused_ones_change_nothing() {
    let Some(p) = private() else { return };
    let h = TestHost::new();
    // A copy left by an earlier run would make every pull a no-op.
    h.docker(["rmi", "-f", &p.image]).run();
    let s = h.stack("private");
    let port = h.free_port();
    StackFixture::new(&s, &p.image, port, "v1")
        .without_site_conf()
        .write(&h);
    h.commit("a stack pinned to a private image");
    let (docker_config, host_config) = auth_config(&h);
    let sync = || {
        h.cmd([
            "--config".as_ref(),
            host_config.as_os_str(),
            "sync".as_ref(),
        ])
        .run()
    };
    let untouched = |what: &str| {
        assert!(
            h.link_target(&s).is_none(),
            "{what}: a release was linked\n{}",
            h.root_listing()
        );
        assert!(
            h.release_dirs(&s).is_empty(),
            "{what}: a release dir was left\n{}",
            h.root_listing()
        );
    };

    // No entry for the registry: anonymous, refused, and said so.
    std::fs::write(
        &docker_config,
        r#"{"auths": {"other.example": {"auth": "eDp5"}}}"#,
    )
    .unwrap();
    let out = sync();
    assert_eq!(out.status_code(), Some(1), "{}", out.report());
    assert!(
        out.stdout().contains("pull failed: web"),
        "{}",
        out.report()
    );
    assert!(
        out.stdout()
            .contains(&format!("no credentials for {}", p.registry)),
        "{}",
        out.report()
    );
    untouched("no credentials");

    // Wrong password: refused, the registry and the file named, the
    // password never printed.
    let wrong = "wrong-password-4d1f9c";
    std::fs::write(
        &docker_config,
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{}"}}}}}}"#,
            p.registry,
            basic(&p.user, wrong)
        ),
    )
    .unwrap();
    let out = sync();
    assert_eq!(out.status_code(), Some(1), "{}", out.report());
    assert!(
        out.stdout().contains(&format!(
            "the registry {} refused the credentials from {}",
            p.registry,
            docker_config.display()
        )),
        "{}",
        out.report()
    );
    assert!(!out.stdout().contains(wrong) && !out.stderr().contains(wrong));
    assert!(!h.history().contains(wrong));
    untouched("wrong password");

    // A credential helper on the PATH answers (as `docker login` with
    // `credHelpers` sets it up): the stack deploys.
    let bin = h.tmp().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-stackpintest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n[ \"$server\" = '{}' ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{}\",\"Secret\":\"{}\"}}' \"$server\"\n",
            p.registry, p.user, p.password
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        &docker_config,
        format!(
            r#"{{"auths": {{"{}": {{}}}}, "credHelpers": {{"{}": "stackpintest"}}}}"#,
            p.registry, p.registry
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = h
        .cmd([
            "--config".as_ref(),
            host_config.as_os_str(),
            "sync".as_ref(),
        ])
        .env("PATH", &path)
        .run()
        .ok();
    let out = out.stdout_contains("deployed");
    assert!(!out.stdout().contains(&p.password) && !out.stderr().contains(&p.password));
    h.serves(port, "stackpin-test-app v1");
    h.assert_consistent(&s);
    assert!(!h.history().contains(&p.password));
}

/// `stackpin pin` resolves a tag of the private registry with the same
/// credentials as the pulls (issue 34): without them it says whom to ask,
/// with a wrong password it is refused, and neither writes the file.
#[test]
fn pin_resolves_a_private_tag_with_the_pull_credentials() {
    let Some(p) = private() else { return };
    let h = TestHost::new();
    let s = h.stack("private");
    let port = h.free_port();
    let (repo, digest) = p.image.split_once('@').unwrap();
    let other = format!("{repo}@sha256:{}", "0".repeat(64));
    StackFixture::new(&s, &other, port, "v1")
        .without_site_conf()
        .write(&h);
    let file = h.repo().join("stacks").join(&s).join("stack.yaml");
    let before = std::fs::read_to_string(&file).unwrap();
    let (docker_config, host_config) = auth_config(&h);
    let tag = format!("{repo}:v1");
    let pin = || {
        h.cmd([
            "--config".as_ref(),
            host_config.as_os_str(),
            "--json".as_ref(),
            "pin".as_ref(),
            s.as_ref(),
            "web".as_ref(),
            tag.as_ref(),
            "--dir".as_ref(),
            h.repo().as_os_str(),
        ])
        .run()
    };

    std::fs::write(&docker_config, r#"{"auths": {}}"#).unwrap();
    let out = pin();
    assert_eq!(out.status_code(), Some(2), "{}", out.report());
    assert!(
        out.stderr()
            .contains(&format!("{} wants credentials", p.registry)),
        "{}",
        out.report()
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);

    let wrong = "wrong-password-4d1f9c";
    let auths = |password: &str| {
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{}"}}}}}}"#,
            p.registry,
            basic(&p.user, password)
        )
    };
    std::fs::write(&docker_config, auths(wrong)).unwrap();
    let out = pin();
    assert_eq!(out.status_code(), Some(2), "{}", out.report());
    assert!(
        out.stderr().contains("refused the credentials"),
        "{}",
        out.report()
    );
    assert!(!out.stderr().contains(wrong));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);

    std::fs::write(&docker_config, auths(&p.password)).unwrap();
    let out = pin().ok().json();
    assert_eq!(out["pins"][0]["new"], format!("{repo}@{digest}"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        before.replacen(&other, &p.image, 1)
    );
}
