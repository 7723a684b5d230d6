//! Commit signature policy against real signatures: commits signed by git
//! itself with `ssh-keygen` keys and `gpg` keys in temporary homes, checked
//! with `stackpin::trust::verify_commit`.
//!
//! Needs `git`, `ssh-keygen` (Debian: openssh-client) and `gpg`/`gpgconf`
//! (Debian: gnupg). No Docker.

use chrono::Utc;
use stackpin::trust::allowed_signers::AllowedSigners;
use stackpin::trust::{Policy, Verdict, load_policy, openpgp, verify_commit};
use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;

/// A git repository and a home for keys, removed on drop.
struct Fixture {
    dir: TempDir,
    gnupg_started: std::cell::Cell<bool>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = Fixture {
            dir,
            gnupg_started: std::cell::Cell::new(false),
        };
        std::fs::create_dir(f.repo_path()).unwrap();
        f.git(&["init", "-q", "-b", "main"]);
        f
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn repo_path(&self) -> PathBuf {
        self.path().join("repo")
    }

    fn gnupg_home(&self) -> PathBuf {
        self.path().join("gnupg")
    }

    fn repo(&self) -> git2::Repository {
        git2::Repository::open(self.repo_path()).expect("open repo")
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(self.repo_path())
            .env("HOME", self.path())
            .env("GNUPGHOME", self.gnupg_home())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("GPG_AGENT_INFO");
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> String {
        let mut cmd = self.command(program, args);
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("failed to run {program} (is it installed?): {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    fn git(&self, args: &[&str]) -> String {
        self.run("git", args)
    }

    fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Generates an unencrypted SSH key; returns the private key path and the
    /// public key line.
    fn ssh_key(&self, name: &str, kind: &str, bits: &str) -> (PathBuf, String) {
        let key = self.path().join(name);
        let key_str = key.to_str().unwrap();
        self.run(
            "ssh-keygen",
            &[
                "-q", "-t", kind, "-b", bits, "-N", "", "-C", name, "-f", key_str,
            ],
        );
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        (key, public.trim().to_string())
    }

    fn commit_unsigned(&self, message: &str) -> String {
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.head()
    }

    fn commit_ssh(&self, key: &Path, message: &str) -> String {
        let signing_key = format!("user.signingkey={}", key.display());
        self.git(&[
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing_key,
            "commit",
            "-q",
            "--allow-empty",
            "-S",
            "-m",
            message,
        ]);
        self.head()
    }

    /// Writes a commit whose gpgsig is `ssh-keygen -Y sign -n <namespace>`
    /// over the payload of a fresh unsigned commit.
    fn commit_ssh_manual(&self, key: &Path, namespace: &str, message: &str) -> String {
        let unsigned = self.commit_unsigned(message);
        let payload = self.git(&["cat-file", "commit", &unsigned]);
        let file = self.path().join(format!("payload-{namespace}"));
        std::fs::write(&file, &payload).unwrap();
        self.run(
            "ssh-keygen",
            &[
                "-q",
                "-Y",
                "sign",
                "-n",
                namespace,
                "-f",
                key.to_str().unwrap(),
                file.to_str().unwrap(),
            ],
        );
        let sig = std::fs::read_to_string(file.with_extension("sig")).unwrap_or_else(|_| {
            std::fs::read_to_string(format!("{}.sig", file.display())).unwrap()
        });
        let oid = self
            .repo()
            .commit_signed(&payload, &sig, None)
            .expect("commit_signed");
        oid.to_string()
    }

    /// Rewrites a signed commit with another message but the same gpgsig.
    fn tamper(&self, commit: &str) -> String {
        let repo = self.repo();
        let oid = git2::Oid::from_str(commit).unwrap();
        let (sig, data) = repo.extract_signature(&oid, None).expect("signed commit");
        let data = std::str::from_utf8(&data).unwrap();
        let sig = std::str::from_utf8(&sig).unwrap();
        let forged = data.replace("original message", "forged message");
        assert_ne!(forged, data, "the payload holds the message");
        repo.commit_signed(&forged, sig, None)
            .expect("commit_signed")
            .to_string()
    }

    /// Generates an OpenPGP key without passphrase in this fixture's
    /// GNUPGHOME; returns its fingerprint.
    fn gpg_key(&self, uid: &str, algo: &str) -> String {
        let home = self.gnupg_home();
        if !home.exists() {
            std::fs::create_dir(&home).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        self.gnupg_started.set(true);
        self.run(
            "gpg",
            &[
                "--batch",
                "--quiet",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--quick-gen-key",
                uid,
                algo,
                "sign",
                "never",
            ],
        );
        self.gpg_fingerprint(uid)
    }

    fn gpg_fingerprint(&self, uid: &str) -> String {
        let listing = self.run("gpg", &["--batch", "--with-colons", "--list-keys", uid]);
        listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|l| l.split(':').find(|f| !f.is_empty()))
            .expect("fingerprint")
            .to_string()
    }

    fn gpg_add_signing_subkey(&self, fingerprint: &str, algo: &str) {
        self.run(
            "gpg",
            &[
                "--batch",
                "--quiet",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--quick-add-key",
                fingerprint,
                algo,
                "sign",
                "never",
            ],
        );
    }

    /// Exports the armored public key to a file and returns its path.
    fn gpg_export(&self, fingerprint: &str) -> PathBuf {
        let armored = self.run("gpg", &["--batch", "--armor", "--export", fingerprint]);
        let path = self.path().join(format!("{fingerprint}.asc"));
        std::fs::write(&path, armored).unwrap();
        path
    }

    fn commit_gpg(&self, fingerprint: &str, message: &str) -> String {
        let signing_key = format!("user.signingkey={fingerprint}!");
        self.git(&[
            "-c",
            "gpg.format=openpgp",
            "-c",
            "gpg.program=gpg",
            "-c",
            &signing_key,
            "commit",
            "-q",
            "--allow-empty",
            "-S",
            "-m",
            message,
        ]);
        self.head()
    }

    fn verify(&self, commit: &str, policy: &Policy) -> Verdict {
        verify_commit(&self.repo(), commit, policy, Utc::now())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if self.gnupg_started.get() {
            // Stop the gpg-agent this fixture started (it lives in our GNUPGHOME).
            let _ = self.command("gpgconf", &["--kill", "all"]).output();
        }
    }
}

fn ssh_policy(allowed_signers: &str) -> Policy {
    Policy {
        allowed_signers: Some(AllowedSigners::parse(allowed_signers).expect("allowed_signers")),
        openpgp: vec![],
    }
}

fn untrusted(verdict: &Verdict) -> &str {
    match verdict {
        Verdict::Untrusted { why } => why,
        other => panic!("expected Untrusted, got {other:?}"),
    }
}

fn assert_trusted(verdict: &Verdict, signer: &str, method: &'static str) {
    let expected = Verdict::Trusted {
        signer: signer.to_string(),
        method,
    };
    assert_eq!(verdict, &expected);
}

#[test]
fn ssh_signatures_from_listed_keys_are_trusted() {
    let f = Fixture::new();
    let keys = [
        ("ed", "ed25519", "256", "ed@example.com"),
        ("rsa", "rsa", "3072", "rsa@example.com"),
        ("ecdsa", "ecdsa", "256", "ecdsa@example.com"),
    ];
    let mut allowed = String::from("# stackpin test signers\n\n");
    let mut signed = Vec::new();
    for (name, kind, bits, principal) in keys {
        let (key, public) = f.ssh_key(name, kind, bits);
        allowed.push_str(&format!("{principal} namespaces=\"git\" {public}\n"));
        signed.push((
            f.commit_ssh(&key, &format!("signed with {kind}")),
            principal,
        ));
    }
    let file = f.path().join("allowed_signers");
    std::fs::write(&file, &allowed).unwrap();
    let policy = load_policy(&stackpin::config::TrustConfig {
        allowed_signers: Some(file.clone()),
        openpgp_keys: vec![],
    })
    .expect("policy loads");

    for (commit, principal) in &signed {
        assert_trusted(&f.verify(commit, &policy), principal, "ssh");
        // The same file satisfies git itself.
        let allowed_file = format!("gpg.ssh.allowedSignersFile={}", file.display());
        f.git(&["-c", &allowed_file, "verify-commit", commit]);
    }
    // A revision name works as well as an id.
    assert_trusted(&f.verify("HEAD", &policy), "ecdsa@example.com", "ssh");
}

#[test]
fn ssh_signature_from_unlisted_key_is_untrusted() {
    let f = Fixture::new();
    let (_, listed) = f.ssh_key("listed", "ed25519", "256");
    let (other, other_public) = f.ssh_key("other", "ed25519", "256");
    let commit = f.commit_ssh(&other, "signed by a stranger");
    let policy = ssh_policy(&format!("ops@example.com namespaces=\"git\" {listed}\n"));

    let verdict = f.verify(&commit, &policy);
    let fingerprint = ssh_key::PublicKey::from_openssh(&other_public)
        .unwrap()
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    assert!(fingerprint.starts_with("SHA256:"));
    assert_eq!(
        untrusted(&verdict),
        format!("signing key {fingerprint} is not in allowed_signers")
    );
}

#[test]
fn ssh_signer_outside_its_validity_window_is_untrusted() {
    let f = Fixture::new();
    let (key, public) = f.ssh_key("k", "ed25519", "256");
    let commit = f.commit_ssh(&key, "signed");

    let expired = ssh_policy(&format!(
        "old@example.com namespaces=\"git\",valid-before=\"20200101\" {public}\n"
    ));
    assert_eq!(
        untrusted(&f.verify(&commit, &expired)),
        "signer old@example.com is not valid after 2020-01-01T00:00:00Z"
    );

    let future = ssh_policy(&format!(
        "new@example.com valid-after=\"29990101Z\",namespaces=\"git\" {public}\n"
    ));
    let why = untrusted(&f.verify(&commit, &future)).to_string();
    assert!(
        why.starts_with("signer new@example.com is not yet valid"),
        "{why}"
    );

    // A current entry for the same key wins over an expired one.
    let rotated = ssh_policy(&format!(
        "old@example.com valid-before=\"20200101\" {public}\n\
         cur@example.com valid-after=\"20200101\" {public}\n"
    ));
    assert_trusted(&f.verify(&commit, &rotated), "cur@example.com", "ssh");
}

#[test]
fn ssh_namespaces_are_enforced() {
    let f = Fixture::new();
    let (key, public) = f.ssh_key("k", "ed25519", "256");
    let policy = ssh_policy(&format!("dev@example.com namespaces=\"git\" {public}\n"));

    // Made by hand with `ssh-keygen -Y sign -n git`: trusted, like git's own.
    let manual = f.commit_ssh_manual(&key, "git", "manual git namespace");
    assert_trusted(&f.verify(&manual, &policy), "dev@example.com", "ssh");

    // A file signature pasted into a commit must not count.
    let file_ns = f.commit_ssh_manual(&key, "file", "file namespace");
    assert_eq!(
        untrusted(&f.verify(&file_ns, &policy)),
        "signature namespace \"file\" is not \"git\""
    );

    // The key is listed, but only for files.
    let git_signed = f.commit_ssh(&key, "signed for git");
    let files_only = ssh_policy(&format!("dev@example.com namespaces=\"file\" {public}\n"));
    assert_eq!(
        untrusted(&f.verify(&git_signed, &files_only)),
        "namespace \"git\" not allowed for dev@example.com"
    );

    // No namespaces option: every namespace, git included.
    let any = ssh_policy(&format!("dev@example.com {public}\n"));
    assert_trusted(&f.verify(&git_signed, &any), "dev@example.com", "ssh");
}

#[test]
fn tampered_ssh_commit_has_a_bad_signature() {
    let f = Fixture::new();
    let (key, public) = f.ssh_key("k", "ed25519", "256");
    let commit = f.commit_ssh(&key, "original message");
    let policy = ssh_policy(&format!("dev@example.com namespaces=\"git\" {public}\n"));
    assert!(f.verify(&commit, &policy).is_trusted());

    let forged = f.tamper(&commit);
    assert_ne!(forged, commit);
    assert_eq!(untrusted(&f.verify(&forged, &policy)), "bad signature");
}

#[test]
fn unsigned_and_unconfigured() {
    let f = Fixture::new();
    let (key, public) = f.ssh_key("k", "ed25519", "256");
    let unsigned = f.commit_unsigned("no signature");
    let policy = ssh_policy(&format!("dev@example.com {public}\n"));
    assert_eq!(untrusted(&f.verify(&unsigned, &policy)), "unsigned commit");

    let signed = f.commit_ssh(&key, "signed");
    assert_eq!(
        untrusted(&f.verify(&signed, &Policy::default())),
        "no SSH allowed_signers configured"
    );
    let why = untrusted(&f.verify("0123456789abcdef0123456789abcdef01234567", &policy)).to_string();
    assert!(why.starts_with("commit 0123456789abcdef"), "{why}");
}

#[test]
fn openpgp_ed25519_signature_is_trusted() {
    let f = Fixture::new();
    let fpr = f.gpg_key("Test <t@example.com>", "ed25519");
    let stranger = f.gpg_key("Stranger <s@example.com>", "ed25519");
    let exported = f.gpg_export(&fpr);

    let policy = load_policy(&stackpin::config::TrustConfig {
        allowed_signers: None,
        openpgp_keys: vec![exported],
    })
    .expect("policy loads");
    assert_eq!(policy.openpgp.len(), 1);
    assert_eq!(policy.openpgp[0].fingerprint, fpr);
    assert_eq!(
        policy.openpgp[0].user_id.as_deref(),
        Some("Test <t@example.com>")
    );

    let signed = f.commit_gpg(&fpr, "original message");
    assert_trusted(
        &f.verify(&signed, &policy),
        "Test <t@example.com>",
        "openpgp",
    );

    let unsigned = f.commit_unsigned("unsigned");
    assert_eq!(untrusted(&f.verify(&unsigned, &policy)), "unsigned commit");

    let by_stranger = f.commit_gpg(&stranger, "stranger");
    assert_eq!(
        untrusted(&f.verify(&by_stranger, &policy)),
        format!(
            "signed by unknown OpenPGP key {}",
            &stranger[stranger.len() - 16..]
        )
    );

    let forged = f.tamper(&signed);
    assert_eq!(untrusted(&f.verify(&forged, &policy)), "bad signature");

    // Only SSH configured: an OpenPGP signature is not trusted.
    let (_, public) = f.ssh_key("k", "ed25519", "256");
    assert_eq!(
        untrusted(&f.verify(&signed, &ssh_policy(&format!("a {public}\n")))),
        "no OpenPGP keys configured"
    );
}

#[test]
fn openpgp_rsa_key_with_signing_subkey_is_trusted() {
    let f = Fixture::new();
    let primary = f.gpg_key("Merge Bot <bot@example.com>", "rsa2048");
    let other = f.gpg_key("Other <o@example.com>", "rsa2048");
    // Signed by the primary RSA key first, then by a newer ed25519 subkey
    // (gpg picks the newest signing subkey unless told `KEY!`).
    let by_primary = f.commit_gpg(&primary, "rsa primary");
    f.gpg_add_signing_subkey(&primary, "ed25519");

    // Two keys in one file, as two armor blocks.
    let a = std::fs::read_to_string(f.gpg_export(&other)).unwrap();
    let b = std::fs::read_to_string(f.gpg_export(&primary)).unwrap();
    let keys = f.path().join("keys.asc");
    std::fs::write(&keys, format!("{a}\n{b}")).unwrap();
    let loaded = openpgp::load_keys(&keys).expect("keys load");
    assert_eq!(loaded.len(), 2);
    let policy = Policy {
        allowed_signers: None,
        openpgp: loaded,
    };

    assert_trusted(
        &f.verify(&by_primary, &policy),
        "Merge Bot <bot@example.com>",
        "openpgp",
    );
    let signing_key = format!("user.signingkey={primary}");
    f.git(&[
        "-c",
        "gpg.program=gpg",
        "-c",
        &signing_key,
        "commit",
        "-q",
        "--allow-empty",
        "-S",
        "-m",
        "by subkey",
    ]);
    let by_subkey = f.head();
    let repo = f.repo();
    let (sig, _) = repo
        .extract_signature(&git2::Oid::from_str(&by_subkey).unwrap(), None)
        .unwrap();
    let status = f.git(&[
        "-c",
        "gpg.program=gpg",
        "log",
        "-1",
        "--format=%GK",
        &by_subkey,
    ]);
    let signed_by = status.trim();
    assert_eq!(signed_by.len(), 16, "git reports the signing key id");
    assert_ne!(
        signed_by,
        &primary[primary.len() - 16..],
        "signed by the subkey"
    );
    assert!(
        std::str::from_utf8(&sig)
            .unwrap()
            .contains("BEGIN PGP SIGNATURE")
    );
    assert_trusted(
        &f.verify(&by_subkey, &policy),
        "Merge Bot <bot@example.com>",
        "openpgp",
    );
}
