//! The runbooks' stack shape, for real (issue 12): an nginx router that
//! resolves its upstream once (an `upstream` block) and is reloaded by an
//! `update.reload` hook, the app replaced start-first, PostgreSQL with its
//! data in a named volume and Redis, all from the project's Debian test
//! images, under compose v2 (production's). Rows written through the router
//! before an upgrade are there after it and after a refused release, the
//! pre-deploy backup is a real `pg_dump` taken inside the database
//! container, and it restores with `pg_restore` into a new database.

use crate::common;

use common::{Fixtures, Flavour, TestHost, Traffic};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// At least this many requests go through the router during each converge.
const REQUESTS: u64 = 1000;

/// A router that resolves `app` when it (re)loads its config, not per
/// request: without the reload hook it would keep the old container's
/// address after a replacement.
const NGINX_CONF: &str = r#"worker_processes 1;
error_log /dev/stderr warn;
pid /tmp/nginx.pid;
events {}
http {
    access_log off;
    upstream app {
        server app:8000 max_fails=1 fail_timeout=10s;
    }
    server {
        listen 80;
        location / {
            proxy_pass http://app;
            proxy_next_upstream error timeout http_502;
            proxy_connect_timeout 1s;
        }
    }
}
"#;

struct Shop<'h> {
    h: &'h TestHost,
    f: Fixtures,
    stack: String,
    port: u16,
    /// The app mounts a named volume `filestore` at /filestore (an Odoo
    /// filestore's place) and backups archive it.
    filestore: bool,
}

impl<'h> Shop<'h> {
    /// `shop` at app v1, committed and synced.
    fn deployed(h: &'h TestHost, f: &Fixtures, filestore: bool) -> Shop<'h> {
        let shop = Shop {
            h,
            f: f.clone(),
            stack: h.stack("shop"),
            port: h.free_port(),
            filestore,
        };
        shop.write(&f.web_app_v1);
        h.commit("v1");
        let out = shop.sync().ok();
        assert!(out.stdout().contains("deployed"), "{}", out.report());
        shop
    }

    fn write(&self, app: &str) {
        let s = &self.stack;
        self.h.write(
            format!("stacks/{s}/stack.yaml"),
            format!(
                "images:\n  router: {router}\n  app: {app}\n  db: {db}\n  cache: {cache}\n\
                 update:\n  drain: 2s\n  services:\n    app: {{order: start-first}}\n\
                 \x20 reload:\n    - {{service: router, command: [nginx, -s, reload]}}\n\
                 backup:\n  postgres: [{{container: db, user: postgres, databases: [shop]}}]\n{volumes}\
                 smoke:\n  timeout: 60s\n  checks:\n\
                 \x20   - containers: {{}}\n\
                 \x20   - http: {{url: \"http://127.0.0.1:{port}/web/db\"}}\n\
                 \x20   - http: {{service: app, port: 8000, path: /web/health}}\n",
                router = self.f.web_router,
                db = self.f.web_db,
                cache = self.f.web_cache,
                port = self.port,
                volumes = if self.filestore {
                    "  volumes: [filestore]\n  keep: {last: 3, daily: 7, weekly: 4}\n"
                } else {
                    ""
                },
            ),
        );
        self.h.write(
            format!("stacks/{s}/compose.yaml"),
            format!(
                r#"services:
  router:
    image: stackpin-test/web
    ports: ["127.0.0.1:{port}:80"]
    volumes: ["./config/nginx.conf:/etc/nginx/nginx.conf:ro"]
    depends_on: [app]
  app:
    image: stackpin-test/web
    environment: {{DB_HOST: db, DB_NAME: shop, DB_USER: postgres, REDIS_HOST: cache}}
    volumes: [{app_volumes}]
    stop_grace_period: 5s
    depends_on: [db, cache]
    healthcheck:
      test: ["CMD", "python3", "/app/app.py", "health"]
      interval: 1s
      timeout: 5s
      retries: 3
      start_period: 5s
  db:
    image: stackpin-test/web
    environment: {{POSTGRES_DB: shop}}
    volumes: ["pgdata:/var/lib/postgresql/data"]
    healthcheck:
      test: ["CMD", "pg_isready", "-U", "postgres", "-h", "127.0.0.1"]
      interval: 1s
      timeout: 5s
      retries: 30
  cache:
    image: stackpin-test/web
    healthcheck:
      test: ["CMD", "redis-cli", "ping"]
      interval: 1s
      timeout: 5s
      retries: 30
volumes:
  pgdata: {{}}
{more_volumes}"#,
                port = self.port,
                app_volumes = if self.filestore {
                    "\"filestore:/filestore\""
                } else {
                    ""
                },
                more_volumes = if self.filestore {
                    "  filestore: {}\n"
                } else {
                    ""
                },
            ),
        );
        self.h
            .write(format!("stacks/{s}/config/nginx.conf"), NGINX_CONF);
    }

    fn sync(&self) -> common::Output {
        self.h.cmd_with(Flavour::V2, ["sync"]).run()
    }

    /// Commits `app`, syncs while requests go through the router; the
    /// sync's output and how many requests failed.
    fn upgrade_under_traffic(&self, app: &str, msg: &str) -> (common::Output, usize) {
        self.write(app);
        self.h.commit(msg);
        let traffic = Traffic::start(self.port, "/version");
        let out = self.sync();
        let report = traffic.stop(REQUESTS);
        println!(
            "{msg}: {} requests, {} failed {:?}, answers {:?}",
            report.total,
            report.failed(),
            report.failures,
            report.bodies
        );
        assert!(report.total as u64 >= REQUESTS, "{report:?}");
        (out, report.failed())
    }

    /// The rows of `notes`, read through the router and the app.
    fn notes(&self, put: Option<&str>) -> String {
        let path = match put {
            Some(p) => format!("/web/db?put={p}"),
            None => "/web/db".to_string(),
        };
        match self.h.http_get_status(self.port, &path) {
            Some((200, body)) => body,
            other => panic!("GET {path} through the router: {other:?}"),
        }
    }

    fn ids(&self) -> BTreeMap<String, String> {
        self.h
            .containers(&self.stack)
            .into_iter()
            .filter(|c| c.is_running())
            .map(|c| (c.service.clone(), c.id.clone()))
            .collect()
    }

    /// `psql -tA -c sql` inside the database container.
    fn psql(&self, db: &str, sql: &str) -> String {
        self.h
            .docker([
                "exec",
                self.ids()["db"].as_str(),
                "psql",
                "-U",
                "postgres",
                "-d",
                db,
                "-tA",
                "-c",
                sql,
            ])
            .run()
            .ok()
            .stdout()
    }

    /// The pre-deploy dumps of `shop`, oldest first.
    fn dumps(&self) -> Vec<PathBuf> {
        let dir = self.h.root().join("backups").join(&self.stack);
        let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("shop.dump"))
            .filter(|p| p.is_file())
            .collect();
        out.sort();
        out
    }
}

#[test]
fn data_survives_upgrades_and_refused_releases_and_the_backup_restores() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let shop = Shop::deployed(&h, &f, false);
    h.serves_path(shop.port, "/version", "v1");
    assert_eq!(shop.notes(Some("before-upgrade")), "before-upgrade\n");
    let session = |h: &TestHost| h.http_get_status(shop.port, "/web/session");
    assert_eq!(session(&h), Some((200, "1\n".into())), "redis counts");
    let first = shop.ids();
    assert_eq!(first.len(), 4, "{first:?}");

    // A start-first upgrade behind a router that resolves once: the hook
    // reloads it while old and new both serve, and again after `up`.
    let (out, failed) = shop.upgrade_under_traffic(&f.web_app_v2, "app v2");
    let out = out.ok();
    assert!(out.stdout().contains("deployed"), "{}", out.report());
    assert_eq!(failed, 0, "start-first upgrade behind a reloaded router");
    assert!(
        out.stderr().contains("reload") && out.stderr().contains("reloaded router"),
        "the reload stage is its own line: {}",
        out.report()
    );
    h.serves_path(shop.port, "/version", "v2");
    let second = shop.ids();
    assert_ne!(second["app"], first["app"]);
    for kept in ["router", "db", "cache"] {
        assert_eq!(second[kept], first[kept], "{kept} kept running");
    }
    assert_eq!(shop.notes(None), "before-upgrade\n", "the row survived");
    assert_eq!(
        session(&h),
        Some((200, "2\n".into())),
        "redis kept its data"
    );
    let dumps = shop.dumps();
    assert_eq!(dumps.len(), 1, "one pre-deploy backup: {dumps:?}");

    // A release that never becomes healthy is refused before it serves;
    // the data written in between is there after the revert.
    assert_eq!(
        shop.notes(Some("after-upgrade")),
        "before-upgrade\nafter-upgrade\n"
    );
    let (out, failed) = shop.upgrade_under_traffic(&f.web_app_500, "app 500");
    let out = out.code(1);
    assert!(out.stdout().contains("rolled-back"), "{}", out.report());
    assert_eq!(failed, 0, "refused release");
    assert_eq!(shop.ids(), second, "nothing was touched");
    assert_eq!(shop.notes(None), "before-upgrade\nafter-upgrade\n");
    let dumps = shop.dumps();
    assert_eq!(dumps.len(), 2, "a backup before each deploy: {dumps:?}");

    // The first backup is a real pg_dump of the database as it was before
    // the upgrade: restored into a new database, it has that row only.
    let dump = std::fs::read(&dumps[0]).unwrap();
    assert!(
        dump.starts_with(b"PGDMP"),
        "a pg_dump custom-format archive"
    );
    shop.psql("postgres", "CREATE DATABASE restored");
    h.docker([
        "exec",
        "-i",
        shop.ids()["db"].as_str(),
        "pg_restore",
        "-U",
        "postgres",
        "-d",
        "restored",
        "--no-owner",
    ])
    .stdin(dump)
    .run()
    .ok();
    assert_eq!(
        shop.psql("restored", "SELECT body FROM notes ORDER BY id"),
        "before-upgrade\n"
    );
    let history = h.history();
    assert!(
        history.contains("| backup |") && history.contains("| rollback |"),
        "{history}"
    );
}

impl Shop<'_> {
    /// `sh -c script` in the app container; its stdout.
    fn app_sh(&self, script: &str) -> String {
        self.h
            .docker(["exec", self.ids()["app"].as_str(), "sh", "-c", script])
            .run()
            .ok()
            .stdout()
    }

    fn restore<const N: usize>(&self, args: [&str; N]) -> common::Output {
        let mut all = vec!["restore", self.stack.as_str()];
        all.extend(args);
        self.h.cmd_with(Flavour::V2, all).run()
    }
}

/// The runbooks' level-2 recovery (issue 15 part 6): a backup of the
/// database and of a named volume, taken on v1; v2 deployed and the data
/// damaged; `stackpin restore` brings back v1, its rows and its files,
/// smoke-tests it and holds the stack. A wrong id and a damaged backup
/// are refused before anything changes.
#[test]
fn restore_brings_back_the_release_its_rows_and_its_files() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let shop = Shop::deployed(&h, &f, true);
    assert_eq!(shop.notes(Some("kept")), "kept\n");
    shop.app_sh("mkdir -p /filestore/ab && echo one > /filestore/ab/a.txt");

    let out = h
        .cmd_with(Flavour::V2, ["backup", shop.stack.as_str()])
        .run()
        .ok();
    let dir = PathBuf::from(out.stdout().trim());
    let id = dir.file_name().unwrap().to_string_lossy().into_owned();
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"volume\": \"filestore\""), "{manifest}");
    assert!(
        dir.join("volume-filestore.tar.sha256").is_file(),
        "a checksum beside the archive"
    );

    // v2, then damage: a row that must go, a file deleted, one added.
    shop.write(&f.web_app_v2);
    h.commit("app v2");
    let out = shop.sync().ok();
    assert!(out.stdout().contains("deployed"), "{}", out.report());
    h.serves_path(shop.port, "/version", "v2");
    assert_eq!(shop.notes(Some("lost")), "kept\nlost\n");
    shop.app_sh("rm -rf /filestore/ab && echo two > /filestore/b.txt");

    // The list shows both backups: the manual one and the pre-deploy one.
    let list = shop.restore(["--list"]).ok().stdout();
    assert!(list.contains(&id) && list.contains("filestore"), "{list}");
    assert!(list.contains("pre-deploy"), "{list}");

    // Refusals change nothing.
    let before = shop.ids();
    let out = shop.restore(["20000101T000000Z"]).code(1);
    assert!(
        out.stderr().contains("no backup `20000101T000000Z`") && out.stderr().contains(&id),
        "names the backups there are: {}",
        out.report()
    );
    let ids_now = backups_of(&h, &shop.stack);
    let damaged = ids_now.last().unwrap().clone();
    assert_ne!(damaged, id);
    let dump = h
        .root()
        .join("backups")
        .join(&shop.stack)
        .join(&damaged)
        .join("shop.dump");
    let mut perms = std::fs::metadata(&dump).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&dump, perms).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&dump)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"x"))
        .unwrap();
    let out = shop.restore([damaged.as_str()]).code(1);
    assert!(out.stderr().contains("checksum"), "{}", out.report());
    assert_eq!(shop.ids(), before, "a refused restore touched nothing");
    assert_eq!(shop.notes(None), "kept\nlost\n");

    // The restore.
    let out = shop.restore([id.as_str()]).ok();
    assert!(
        out.stdout().contains(&format!("backup {id}")) && out.stdout().contains("held"),
        "{}",
        out.report()
    );
    for stage in ["stop", "restore", "smoke"] {
        assert!(
            out.stderr().contains(stage),
            "the {stage} stage is reported: {}",
            out.report()
        );
    }
    h.serves_path(shop.port, "/version", "v1");
    assert_eq!(shop.notes(None), "kept\n", "the rows of the backup, only");
    assert_eq!(shop.app_sh("cat /filestore/ab/a.txt"), "one\n");
    assert_eq!(
        shop.app_sh("ls /filestore"),
        "ab\n",
        "the volume holds what the backup holds, nothing more"
    );
    let history = h.history();
    assert!(
        history.lines().any(|l| l.contains("| restore |")
            && l.contains("| success |")
            && l.contains(&format!("backup {id}"))),
        "{history}"
    );
    let status = h
        .cmd_with(Flavour::V2, ["status", shop.stack.as_str()])
        .run()
        .ok();
    assert!(status.stdout().contains("held"), "{}", status.report());
    // The next sync leaves it where the operator put it.
    let out = shop.sync().ok();
    assert!(!out.stdout().contains("deployed"), "{}", out.report());
    h.serves_path(shop.port, "/version", "v1");

    // Killed once the data is back but before anything started: the next
    // run does not guess (no release is known to fit partly restored
    // data); it says so, the stack stays held, and the restore run again
    // finishes the job.
    shop.notes(Some("after-restore"));
    let out = h
        .cmd_with(Flavour::V2, ["restore", shop.stack.as_str(), id.as_str()])
        .env("STACKPIN_FAULT", "restore-after-data")
        .run();
    assert!(
        out.stderr()
            .contains("fault injected at restore-after-data"),
        "{}",
        out.report()
    );
    let out = shop.sync();
    assert!(
        out.stdout().contains("interrupted restore") && out.stdout().contains("stays held"),
        "{}",
        out.report()
    );
    let status = h
        .cmd_with(Flavour::V2, ["status", shop.stack.as_str()])
        .run();
    assert!(status.stdout().contains("held"), "{}", status.report());
    assert!(
        h.history()
            .lines()
            .any(|l| l.contains("| restore |") && l.contains("| failed |")),
        "{}",
        h.history()
    );
    shop.restore([id.as_str()]).ok();
    h.serves_path(shop.port, "/version", "v1");
    assert_eq!(shop.notes(None), "kept\n", "restored again");
}

/// Complete backups of `stack`, oldest first.
fn backups_of(h: &TestHost, stack: &str) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(h.root().join("backups").join(stack))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    ids.sort();
    ids
}
