//! Backups (issue 6 item 3): pre-deploy backups that block a deploy when they
//! fail, `stackpin backup` by hand and `--all`, retention, and the secret URL
//! never showing. Two paths, each against the real thing it can reach:
//! - `url_file`: the host's real `pg_dump` against a real PostgreSQL server
//!   (`scripts/setup.d/postgres.sh`), and the dump restored with `pg_restore`;
//! - `container`: `pg_dump` run inside a container through the engine's exec
//!   API. The fixture images are busybox and have no pg_dump, so the stack
//!   installs a tiny shell script as `pg_dump`: it proves the exec streaming
//!   path end to end (argv, stdout into the file, exit code, stderr tail), not
//!   PostgreSQL itself, which the `url_file` test covers.

use crate::common;

use common::{Fixtures, TestHost, parse_env_file};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The throwaway server of `scripts/setup.d/postgres.sh`, from the
/// environment or else from `target/test-postgres.env`.
struct Pg {
    /// `postgresql://postgres@127.0.0.1:PORT` (trust auth).
    url: String,
    /// `/usr/lib/postgresql/NN/bin`.
    bin: PathBuf,
    /// A database with `items(id, name)` holding three rows.
    db: String,
}

impl Pg {
    fn require() -> Pg {
        let get = |vars: &std::collections::BTreeMap<String, String>, k: &str| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .or_else(|| vars.get(k).cloned())
        };
        let mut vars = Default::default();
        if std::env::var_os("STACKPIN_TEST_PG_URL").is_none() {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "the harness did not start PostgreSQL (STACKPIN_TEST_PG_URL is not set); \
                     run the tests with scripts/test.sh"
                );
            }
            let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-postgres.env");
            vars = std::fs::read_to_string(&file)
                .map(|t| parse_env_file(&t))
                .unwrap_or_else(|_| {
                    panic!(
                        "this test needs a PostgreSQL server and {} does not exist; run \
                         `bash scripts/setup.d/postgres.sh` first (or the suite with scripts/test.sh)",
                        file.display()
                    )
                });
        }
        let need = |k: &str| {
            get(&vars, k).unwrap_or_else(|| panic!("{k} is not set (scripts/setup.d/postgres.sh)"))
        };
        Pg {
            url: need("STACKPIN_TEST_PG_URL"),
            bin: PathBuf::from(need("STACKPIN_TEST_PG_BIN")),
            db: get(&vars, "STACKPIN_TEST_PG_DB").unwrap_or_else(|| "stackpin_test".into()),
        }
    }

    fn psql(&self, h: &TestHost, db: &str, sql: &str) -> String {
        let mut c = Command::new(self.bin.join("psql"));
        c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg(format!("{}/{db}", self.url))
            .args(["-c", sql]);
        h.command(c).run().ok().stdout()
    }
}

const SLEEPER: &str = "    image: stackpin-test/app\n    stop_grace_period: 1s\n";

/// A one-service stack (service `db`) of the fixture image.
fn write_stack(h: &TestHost, stack: &str, f: &Fixtures, version: &str, spec: &str, compose: &str) {
    h.write(
        format!("stacks/{stack}/stack.yaml"),
        format!(
            "environment: test\nversion: {version}\nimages:\n  db: {}\nenv_files: []\n{spec}smoke:\n  timeout: 20s\n  checks:\n    - containers: {{}}\n",
            f.v1
        ),
    );
    h.write(
        format!("stacks/{stack}/compose.yaml"),
        format!("services:\n  db:\n{SLEEPER}{compose}"),
    );
    h.write(
        format!("stacks/{stack}/config/version.txt"),
        format!("{version}\n"),
    );
}

/// Complete backups of `stack` (ids, oldest first) and whether any `.tmp-*`
/// is left.
fn backups(h: &TestHost, stack: &str) -> (Vec<String>, bool) {
    let dir = h.root().join("backups").join(stack);
    let mut ids = Vec::new();
    let mut tmp = false;
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            tmp = true;
        } else if e.path().join("manifest.json").is_file() {
            ids.push(name);
        }
    }
    ids.sort();
    (ids, tmp)
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `sha256sum -c` in the backup dir, as an operator would check it.
fn verify_sha256(h: &TestHost, dir: &Path, file: &str) {
    let mut c = Command::new("sha256sum");
    c.current_dir(dir).args(["-c", &format!("{file}.sha256")]);
    h.command(c)
        .run()
        .ok()
        .stdout_contains(&format!("{file}: OK"));
}

/// The installed fake `pg_dump`: the service copies the read-only mounted
/// script into place and makes it executable (release files carry no
/// execute bit), then sleeps.
fn fake_pg_dump_compose() -> String {
    "    command: [\"/bin/sh\", \"-c\", \"mkdir -p /usr/local/bin && cat /etc/fake/pg_dump > /usr/local/bin/pg_dump && busybox chmod 755 /usr/local/bin/pg_dump && exec sleep 100000\"]\n    volumes:\n      - ./config/pg_dump:/etc/fake/pg_dump:ro\n".to_string()
}

const GOOD_DUMP: &str =
    "#!/bin/sh\nprintf 'PGDMP-fake %s' \"$*\"\necho 'pg_dump: dumping contents' >&2\n";
const FAILING_DUMP: &str = "#!/bin/sh\necho 'pg_dump: error: connection to server on socket failed: FATAL:  database \"appdb\" does not exist' >&2\nexit 1\n";

#[test]
fn container_exec_backup_blocks_a_deploy_when_it_fails() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("exec");
    let backup = "backup:\n  postgres: [{container: db, user: app, databases: [appdb]}]\n";
    let compose = fake_pg_dump_compose();

    // v1: a first deploy has nothing to back up.
    write_stack(&h, &s, &f, "v1", backup, &compose);
    h.write(format!("stacks/{s}/config/pg_dump"), GOOD_DUMP);
    h.commit("v1");
    h.cmd(["sync"])
        .run()
        .ok()
        .stdout_contains("deployed")
        .stderr_contains("skipped: first deploy");
    assert!(backups(&h, &s).0.is_empty(), "{}", h.root_listing());

    // v2 (whose own pg_dump fails): the backup runs in v1's container.
    write_stack(&h, &s, &f, "v2", backup, &compose);
    h.write(format!("stacks/{s}/config/pg_dump"), FAILING_DUMP);
    h.commit("v2");
    h.cmd(["sync"]).run().ok().stdout_contains("deployed");
    let (ids, tmp) = backups(&h, &s);
    assert_eq!(ids.len(), 1, "{}", h.root_listing());
    assert!(!tmp, "{}", h.root_listing());
    let dir = h.root().join("backups").join(&s).join(&ids[0]);
    assert_eq!(
        std::fs::read_to_string(dir.join("appdb.dump")).unwrap(),
        "PGDMP-fake -Fc -U app appdb",
        "stdout only, byte for byte (stderr is not in the dump)"
    );
    verify_sha256(&h, &dir, "appdb.dump");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("appdb.dump")), 0o600);
    assert_eq!(mode(&dir.join("release/.env")), 0o600);
    assert!(dir.join("release/compose.yaml").is_file());
    assert_eq!(
        std::fs::read_to_string(dir.join("release/config/version.txt")).unwrap(),
        "v1\n",
        "the release that ran is copied, not the new one"
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["stack"], s.as_str());
    assert_eq!(m["reason"], "pre-deploy");
    assert_eq!(m["version"], "v1");
    assert!(m["release_id"].as_str().unwrap().starts_with("v1__"), "{m}");
    assert_eq!(m["databases"][0]["database"], "appdb");
    assert_eq!(m["databases"][0]["source"], "container db");
    assert_eq!(m["databases"][0]["bytes"], 27);
    let hist = h.history();
    assert!(
        hist.contains(&format!(
            "| {s} | test | backup | v1 | success | pre-deploy: 1 database(s)"
        )),
        "{hist}"
    );

    // v3: v2's pg_dump fails, so the deploy is blocked; nothing changes.
    let before = h.link_target(&s).expect("the stack is linked");
    let containers = h.containers(&s);
    write_stack(&h, &s, &f, "v3", backup, &compose);
    h.commit("v3");
    let out = h.cmd(["sync"]).run().code(1).stdout_contains("FAILED");
    assert!(
        out.stdout().contains("backup failed") && out.stdout().contains("appdb"),
        "{out:?}"
    );
    assert_eq!(
        h.link_target(&s).expect("the stack is linked"),
        before,
        "the host must stay on v2"
    );
    let after = h.containers(&s);
    assert_eq!(
        containers
            .iter()
            .map(|c| (&c.id, &c.state))
            .collect::<Vec<_>>(),
        after.iter().map(|c| (&c.id, &c.state)).collect::<Vec<_>>(),
        "containers untouched"
    );
    let (ids, tmp) = backups(&h, &s);
    assert_eq!(
        ids.len(),
        1,
        "a failed backup leaves nothing\n{}",
        h.root_listing()
    );
    assert!(!tmp, "{}", h.root_listing());
    let hist = h.history();
    assert!(
        hist.contains(&format!(
            "| {s} | test | backup | v2 | failed | pre-deploy: database `appdb` (container db): pg_dump exited with code 1: pg_dump: error: connection to server on socket failed: FATAL:  database \"appdb\" does not exist"
        )),
        "{hist}"
    );
    assert!(
        hist.contains(&format!(
            "| {s} | test | deploy | v3 | failed | backup failed: "
        )),
        "{hist}"
    );
    let rels = std::fs::read_dir(h.root().join("releases/stacks").join(&s))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("v3"))
        .count();
    assert_eq!(rels, 0, "no release is created after a failed backup");

    // `required: false`: the failure is recorded and the deploy goes on.
    write_stack(
        &h,
        &s,
        &f,
        "v3",
        &format!("{backup}  required: false\n"),
        &compose,
    );
    h.commit("v3, backup not required");
    h.cmd(["sync"]).run().ok().stdout_contains("deployed");
    assert!(
        h.link_target(&s)
            .expect("the stack is linked")
            .to_string_lossy()
            .contains("v3__")
    );
    let hist = h.history();
    assert_eq!(
        hist.matches(&format!("| {s} | test | backup | v2 | failed |"))
            .count(),
        2,
        "{hist}"
    );
    assert!(
        hist.lines().any(
            |l| l.contains(&format!("| {s} | test | deploy | v3 | success | "))
                && l.contains("; backup failed (not required): ")
        ),
        "{hist}"
    );
}

#[test]
fn url_backup_restores_and_never_shows_the_url() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let pg = Pg::require();
    let s = h.stack("pg");
    // Trust auth ignores the password; it is there to prove it never shows.
    let secret_url = pg.url.replacen("://postgres@", "://postgres:secretpw@", 1);
    assert_ne!(secret_url, pg.url, "unexpected URL form {}", pg.url);
    let url_file = h.tmp().join("db.url");
    std::fs::write(&url_file, format!("{secret_url}\n")).unwrap();
    let pg_dump = pg.bin.join("pg_dump");
    let spec = |dbs: &str| {
        format!(
            "backup:\n  postgres: [{{url_file: {}, databases: [{dbs}]}}]\n  keep: 2\n",
            url_file.display()
        )
    };
    let mut outputs = String::new();
    let mut run = |args: &[&str]| {
        let mut c = h.cmd(args);
        c.env("STACKPIN_PG_DUMP", &pg_dump);
        let out = c.run();
        outputs.push_str(&out.stdout());
        outputs.push_str(&out.stderr());
        out
    };

    write_stack(&h, &s, &f, "v1", &spec(&pg.db), "");
    h.commit("v1");
    run(&["sync"]).ok();
    write_stack(&h, &s, &f, "v2", &spec(&pg.db), "");
    h.commit("v2");
    run(&["sync"]).ok().stdout_contains("deployed");

    let (ids, _) = backups(&h, &s);
    assert_eq!(ids.len(), 1, "{}", h.root_listing());
    let dir = h.root().join("backups").join(&s).join(&ids[0]);
    let dump = format!("{}.dump", pg.db);
    verify_sha256(&h, &dir, &dump);
    assert!(
        std::fs::read(dir.join(&dump))
            .unwrap()
            .starts_with(b"PGDMP"),
        "a custom-format dump"
    );

    // Restore into a fresh database: every row is there.
    let fresh = format!("restore_{}", h.prefix());
    pg.psql(&h, "postgres", &format!("CREATE DATABASE {fresh}"));
    let mut restore = Command::new(pg.bin.join("pg_restore"));
    restore
        .args(["--no-owner", "--exit-on-error", "-d"])
        .arg(format!("{}/{fresh}", pg.url))
        .arg(dir.join(&dump));
    h.command(restore).run().ok();
    let rows = pg.psql(&h, &fresh, "SELECT id, name FROM items ORDER BY id");
    pg.psql(&h, "postgres", &format!("DROP DATABASE {fresh}"));
    assert_eq!(
        rows.trim(),
        "1|alpha\n2|beta\n3|gamma | with a pipe",
        "restored rows"
    );

    // By hand, then as the timer runs it; `keep: 2` leaves the newest two.
    let out = run(&["backup", &s]).ok();
    let manual = PathBuf::from(out.stdout().trim());
    assert!(manual.join("manifest.json").is_file(), "{out:?}");
    let out = run(&["backup", "--all", "--reason", "scheduled"]).ok();
    let scheduled = PathBuf::from(out.stdout().trim());
    let (ids, tmp) = backups(&h, &s);
    assert!(!tmp);
    assert_eq!(
        ids.iter()
            .map(|i| h.root().join("backups").join(&s).join(i))
            .collect::<Vec<_>>(),
        vec![manual, scheduled.clone()],
        "retention keeps the 2 newest\n{}",
        h.root_listing()
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(scheduled.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["reason"], "scheduled");
    assert_eq!(m["version"], "v2");

    // A database that does not exist: exit 1, the db and pg_dump's words
    // named, nothing left behind.
    write_stack(
        &h,
        &s,
        &f,
        "v2",
        &spec(&format!("{}, no_such_db", pg.db)),
        "",
    );
    h.commit("a missing database");
    let out = run(&["backup", &s]).code(1);
    assert!(
        out.stderr().contains("no_such_db") && out.stderr().contains("does not exist"),
        "{out:?}"
    );
    let (after, tmp) = backups(&h, &s);
    assert_eq!(after, ids, "a failed backup leaves nothing");
    assert!(!tmp);

    let hist = h.history();
    assert!(
        hist.contains(&format!("| {s} | test | backup | v2 | success | manual: ")),
        "{hist}"
    );
    assert!(
        hist.contains(&format!(
            "| {s} | test | backup | v2 | success | scheduled: "
        )),
        "{hist}"
    );
    assert!(
        hist.contains(&format!(
            "| {s} | test | backup | v2 | failed | manual: database `no_such_db`"
        )),
        "{hist}"
    );
    // The URL is a secret: not in any output, history or manifest.
    let mut manifests = String::new();
    for id in &ids {
        manifests.push_str(
            &std::fs::read_to_string(
                h.root()
                    .join("backups")
                    .join(&s)
                    .join(id)
                    .join("manifest.json"),
            )
            .unwrap(),
        );
    }
    for text in [&outputs, &hist, &manifests] {
        assert!(!text.contains("secretpw"), "the password leaked:\n{text}");
        assert!(!text.contains(&pg.url), "the URL leaked:\n{text}");
    }
}

#[test]
fn backup_by_hand_refuses_a_stack_without_backup() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("plain");
    write_stack(&h, &s, &f, "v1", "", "");
    h.commit("v1");
    h.cmd(["backup", &s])
        .run()
        .code(1)
        .stderr_contains("has no `backup:`");
}
