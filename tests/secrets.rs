//! Secrets in git, encrypted with age (issue 15): the files are encrypted
//! with Debian's `age` command (`scripts/setup.d/age.sh`) to a recipient
//! that `age-keygen` made, and decrypted by the host with the identity file
//! its config names. The container sees the plaintext; the release holds it
//! owner-only; no output, history line or API answer ever holds it; a file
//! the host cannot decrypt stops only its own stack.

use crate::common;

use common::{Fixtures, StackFixture, TestHost};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The directory holding `age` and `age-keygen`.
fn age_bin() -> Option<PathBuf> {
    let found = std::env::var_os("STACKPIN_TEST_AGE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .find(|d| d.join("age").is_file() && d.join("age-keygen").is_file())
            })
        });
    common::required_under_ci(
        found,
        "age is missing: scripts/setup.d/age.sh installs Debian's `age` package",
    )
}

/// Makes an identity file with `age-keygen`; returns the recipient.
fn keygen(bin: &Path, file: &Path) -> String {
    let out = Command::new(bin.join("age-keygen"))
        .arg("-o")
        .arg(file)
        .output()
        .expect("age-keygen runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin.join("age-keygen"))
        .arg("-y")
        .arg(file)
        .output()
        .expect("age-keygen -y runs");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `age -r RECIPIENT [-a] -o OUT` with `plain` on stdin.
fn encrypt(bin: &Path, recipient: &str, armor: bool, plain: &str, out: &Path) {
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut cmd = Command::new(bin.join("age"));
    cmd.args(["-r", recipient]);
    if armor {
        cmd.arg("-a");
    }
    let mut child = cmd
        .arg("-o")
        .arg(out)
        .stdin(Stdio::piped())
        .spawn()
        .expect("age runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(plain.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "age -o {}", out.display());
}

const COMPOSE: &str = "services:\n  web:\n    image: stackpin-test/app\n    network_mode: host\n    stop_grace_period: 1s\n    environment:\n      PORT: ${PORT}\n      APP_TOKEN: ${APP_TOKEN}\n    volumes:\n      - ./config/site.conf:/etc/site.conf:ro\n      - ./config/secret.ini:/etc/secret.ini:ro\n";

/// A stack whose compose file reads `APP_TOKEN` (from `app.env.age`) and
/// mounts `config/secret.ini` (from `config/secret.ini.age`).
fn write_stack(h: &TestHost, f: &Fixtures, s: &str, port: u16) {
    StackFixture::new(s, &f.v1, port, "v1")
        .extra("secrets: [app.env.age, config/secret.ini.age]\n")
        .write(h);
    h.write(format!("stacks/{s}/compose.yaml"), COMPOSE);
}

fn host_config(h: &TestHost, identity: Option<&Path>) -> PathBuf {
    let cfg = h.tmp().join("config.yaml");
    // An empty config is refused: say something harmless instead.
    let text = identity
        .map(|p| format!("age_identity_file: {}\n", p.display()))
        .unwrap_or_else(|| "concurrency: 1\n".into());
    common::write_config(&cfg, text).unwrap();
    cfg
}

fn in_container(h: &TestHost, s: &str, script: &str) -> String {
    let c = h.containers(s);
    let web = c.iter().find(|c| c.service == "web").expect("web runs");
    h.docker(["exec", &web.id, "sh", "-c", script])
        .run()
        .ok()
        .stdout()
}

#[test]
fn age_secrets_reach_the_container_owner_only_and_never_show_their_values() {
    let Some(bin) = age_bin() else { return };
    let h = TestHost::new();
    let f = Fixtures::require();
    let key = h.tmp().join("host.key");
    let recipient = keygen(&bin, &key);
    let s = h.stack("vault");
    let port = h.free_port();
    write_stack(&h, &f, &s, port);
    let token = format!("tok-{}", h.prefix());
    let password = format!("pw-{}-long", h.prefix());
    let ini = format!("[db]\npassword = {password}\n");
    let dir = h.repo().join(format!("stacks/{s}"));
    encrypt(
        &bin,
        &recipient,
        true,
        &format!("APP_TOKEN={token}\n"),
        &dir.join("app.env.age"),
    );
    encrypt(
        &bin,
        &recipient,
        false,
        &ini,
        &dir.join("config/secret.ini.age"),
    );
    h.commit("a stack with secrets in git");
    let cfg = host_config(&h, Some(&key));
    let run = |args: &[&str]| {
        let mut c = h.cmd(["--config".as_ref(), cfg.as_os_str()]);
        c.args(args);
        c.run()
    };
    let never_shown = |what: &str, text: &str| {
        for secret in [token.as_str(), password.as_str()] {
            assert!(!text.contains(secret), "{what} shows a secret: {text}");
        }
    };

    let out = run(&["sync"]).ok();
    never_shown("sync", &format!("{}{}", out.stdout(), out.stderr()));
    h.serves(port, "stackpin-test-app v1");
    assert_eq!(in_container(&h, &s, "printf %s \"$APP_TOKEN\""), token);
    assert_eq!(in_container(&h, &s, "cat /etc/secret.ini"), ini);

    let release = h.link_target(&s).expect("the stack has a release");
    for (file, plain) in [
        ("app.env", format!("APP_TOKEN={token}\n")),
        ("config/secret.ini", ini.clone()),
    ] {
        let meta = std::fs::metadata(release.join(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file}");
        assert_eq!(std::fs::read_to_string(release.join(file)).unwrap(), plain);
        assert!(
            !release.join(format!("{file}.age")).exists(),
            "no ciphertext in the release"
        );
    }
    never_shown("history", &h.history());
    never_shown("status", &run(&["status", "--json"]).ok().stdout());
    never_shown("history --json", &run(&["history", "--json"]).ok().stdout());

    // Re-encrypting the same plaintexts gives new files: nothing to do.
    encrypt(
        &bin,
        &recipient,
        false,
        &format!("APP_TOKEN={token}\n"),
        &dir.join("app.env.age"),
    );
    encrypt(
        &bin,
        &recipient,
        true,
        &ini,
        &dir.join("config/secret.ini.age"),
    );
    h.commit("re-encrypted, same secrets");
    run(&["plan", "--detailed-exitcode", &s]).code(0);

    // A rotated secret redeploys; plan says so without the value.
    let rotated = format!("[db]\npassword = {password}-rotated\n");
    encrypt(
        &bin,
        &recipient,
        false,
        &rotated,
        &dir.join("config/secret.ini.age"),
    );
    h.commit("rotate the database password");
    let plan = run(&["plan", "--detailed-exitcode", &s]).code(2);
    let text = plan.stdout();
    assert!(
        text.contains("Secret file config/secret.ini differs")
            && text.contains("content not shown"),
        "{text}"
    );
    never_shown("plan", &text);
    never_shown("plan --json", &run(&["plan", "--json", &s]).ok().stdout());
    let out = run(&["sync"]).ok();
    never_shown("sync", &format!("{}{}", out.stdout(), out.stderr()));
    assert_eq!(in_container(&h, &s, "cat /etc/secret.ini"), rotated);
    h.assert_consistent(&s);
}

#[test]
fn a_secret_this_host_cannot_decrypt_stops_only_its_stack() {
    let Some(bin) = age_bin() else { return };
    let h = TestHost::new();
    let f = Fixtures::require();
    let key = h.tmp().join("host.key");
    let recipient = keygen(&bin, &key);
    let other = keygen(&bin, &h.tmp().join("other-host.key"));
    let (bad, good) = (h.stack("foreign"), h.stack("plain"));
    let (bad_port, good_port) = (h.free_port(), h.free_port());
    write_stack(&h, &f, &bad, bad_port);
    let dir = h.repo().join(format!("stacks/{bad}"));
    // One file for this host, one encrypted to another host only.
    encrypt(
        &bin,
        &recipient,
        false,
        "APP_TOKEN=x\n",
        &dir.join("app.env.age"),
    );
    encrypt(
        &bin,
        &other,
        false,
        "[db]\npassword = p\n",
        &dir.join("config/secret.ini.age"),
    );
    StackFixture::new(&good, &f.v1, good_port, "v1").write(&h);
    h.commit("one stack encrypted to the wrong host");

    let cfg = host_config(&h, Some(&key));
    let out = h
        .cmd(["--config".as_ref(), cfg.as_os_str(), "sync".as_ref()])
        .run()
        .code(1);
    let text = format!("{}{}", out.stdout(), out.stderr());
    assert!(
        text.contains(&format!(
            "stacks/{bad}/config/secret.ini.age cannot be decrypted with {}",
            key.display()
        )) && text.contains("not encrypted to this host's recipient"),
        "{text}"
    );
    h.serves(good_port, "stackpin-test-app v1");
    assert!(h.link_target(&bad).is_none(), "nothing changed for {bad}");
    assert!(h.containers(&bad).is_empty());

    // Without an identity: the same stack, a clear error naming the key to set.
    let cfg = host_config(&h, None);
    let out = h
        .cmd([
            "--config".as_ref(),
            cfg.as_os_str(),
            "sync".as_ref(),
            bad.as_ref(),
        ])
        .run()
        .code(1);
    assert!(
        format!("{}{}", out.stdout(), out.stderr())
            .contains("set `age_identity_file:` in the host config"),
        "{}",
        out.report()
    );
    // plan on a machine without the identity (an approver's) still shows
    // the rest and names what is missing here.
    let out = h
        .cmd([
            "--config".as_ref(),
            cfg.as_os_str(),
            "plan".as_ref(),
            bad.as_ref(),
        ])
        .run();
    let text = out.stdout();
    assert!(
        text.contains(&format!(
            "missing here (host-local): an age identity for stacks/{bad}/app.env.age"
        )) && text.contains("+++ b/compose.yaml"),
        "{}",
        out.report()
    );
}
