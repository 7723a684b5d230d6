//! [`TestHost`]: one test's host (root, desired-state repository, state
//! dir, names, ports), what it asks the engine, and what it cleans up.

use super::*;

/// The `-c` options of every git the tests run: a fixed identity, no
/// signing, `main` as the first branch.
pub const GIT_TEST_CONFIG: [&str; 10] = [
    "-c",
    "user.name=test",
    "-c",
    "user.email=test@example.com",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "tag.gpgsign=false",
    "-c",
    "init.defaultBranch=main",
];

/// One test's host: root, desired-state repo, state dir, names and ports.
pub struct TestHost {
    tmp: tempfile::TempDir,
    prefix: String,
    stacks: Mutex<Vec<String>>,
    ports: Mutex<Vec<PortClaim>>,
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost::new()
    }
}

impl TestHost {
    pub fn new() -> TestHost {
        let tmp = tempfile::Builder::new()
            .prefix("stackpin-test.")
            .tempdir()
            .expect("failed to create the test's temp dir");
        for d in ["root", "repo", "state"] {
            std::fs::create_dir_all(tmp.path().join(d)).expect("failed to create test dirs");
        }
        std::fs::write(tmp.path().join(GRANTS_FILE), FIXTURE_GRANTS)
            .expect("failed to write the test host's config");
        TestHost {
            tmp,
            prefix: unique_prefix(),
            stacks: Mutex::new(Vec::new()),
            ports: Mutex::new(Vec::new()),
        }
    }

    /// The real components; see [`Fixtures::require`].
    pub fn fixtures(&self) -> Fixtures {
        Fixtures::require()
    }

    pub fn tmp(&self) -> &Path {
        self.tmp.path()
    }

    /// The host root passed as `--root` (stands for `/srv`).
    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    /// The desired-state git repository passed as `--repo`.
    pub fn repo(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    /// The state dir passed as `--state-dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// This host's unique prefix, `sp` + 6 hex digits.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A stack (= compose project) name unique to this test, e.g.
    /// `sp1a2b3c-web`. Its containers, networks and volumes are removed when
    /// the host drops.
    pub fn stack(&self, name: &str) -> String {
        let stack = format!("{}-{}", self.prefix, name);
        let mut stacks = self.stacks.lock().unwrap();
        if !stacks.contains(&stack) {
            stacks.push(stack.clone());
        }
        stack
    }

    /// A free port on 127.0.0.1 that no other test holds, claimed for this
    /// host's life (see [`claim_port`]).
    pub fn free_port(&self) -> u16 {
        let claim = claim_port("127.0.0.1");
        let port = claim.port;
        self.ports.lock().unwrap().push(claim);
        port
    }

    // ---- desired-state repository ----

    /// Writes `contents` to `rel` under the repo, creating parent dirs.
    pub fn write(&self, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> &Self {
        write_file(&self.repo().join(rel), contents.as_ref());
        self
    }

    /// Removes a file or a directory tree under the repo.
    pub fn remove(&self, rel: impl AsRef<Path>) -> &Self {
        let path = self.repo().join(rel);
        let res = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        res.unwrap_or_else(|e| panic!("failed to remove {}: {e}", path.display()));
        self
    }

    /// Commits everything in the repo (on branch `main`, initialised on first
    /// use) and returns the commit's sha.
    pub fn commit(&self, msg: &str) -> String {
        if !self.repo().join(".git").exists() {
            self.git(["init", "-q", "-b", "main"]);
        }
        self.git(["add", "-A"]);
        self.git(["commit", "-q", "--allow-empty", "-m", msg]);
        self.git(["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Runs git in the repo with a fixed identity and no signing; returns
    /// stdout, panics on failure.
    pub fn git<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("git");
        cmd.current_dir(self.repo())
            .args(GIT_TEST_CONFIG)
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1");
        self.command(cmd).run().ok().stdout()
    }

    // ---- the binary under test ----

    /// The global arguments [`TestHost::cmd`] puts before the subcommand.
    pub fn global_args(&self) -> Vec<OsString> {
        vec![
            "--root".into(),
            self.root().into(),
            "--repo".into(),
            self.repo().into(),
            "--host".into(),
            "test-host".into(),
            "--state-dir".into(),
            self.state_dir().into(),
        ]
    }

    /// Writes the host config `<tmp>/name`: [`FIXTURE_GRANTS`], then
    /// `body` (which must not have an `allow:` of its own: add its rules
    /// with [`TestHost::config_with_grants`]). Returns its path.
    pub fn config(&self, name: &str, body: &str) -> PathBuf {
        self.config_with_grants(name, body, "")
    }

    /// [`TestHost::config`] with more `allow:` rules (YAML list items,
    /// `  - {stacks: [...], powers: [...], reason: "..."}` lines).
    pub fn config_with_grants(&self, name: &str, body: &str, grants: &str) -> PathBuf {
        let path = self.tmp().join(name);
        std::fs::write(&path, format!("{FIXTURE_GRANTS}{grants}{body}"))
            .expect("failed to write a host config");
        path
    }

    /// `stackpin <global args> ARGS…` against this host.
    pub fn cmd<I, S>(&self, args: I) -> TestCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.cmd_raw(self.global_args());
        cmd.args(args);
        cmd
    }

    /// `stackpin --config cfg [--json] daemon --check-config`.
    pub fn check_config(&self, cfg: &Path, json: bool) -> TestCommand {
        let mut args: Vec<&OsStr> = vec!["--config".as_ref(), cfg.as_os_str()];
        if json {
            args.push("--json".as_ref());
        }
        args.extend([OsStr::new("daemon"), OsStr::new("--check-config")]);
        self.cmd_raw(args)
    }

    /// `stackpin daemon` for this host: its root, state dir and host name,
    /// the config file `cfg`, the repository `repo` (a path or URL) and the
    /// control socket `socket`. Spawn it (and stop it) as the test needs.
    pub fn daemon_cmd(&self, cfg: &Path, repo: &OsStr, socket: &Path) -> TestCommand {
        self.cmd_raw([
            "--config".as_ref(),
            cfg.as_os_str(),
            "--root".as_ref(),
            self.root().as_os_str(),
            "--repo".as_ref(),
            repo,
            "--host".as_ref(),
            "test-host".as_ref(),
            "--state-dir".as_ref(),
            self.state_dir().as_os_str(),
            "--control-socket".as_ref(),
            socket.as_os_str(),
            "daemon".as_ref(),
        ])
    }

    /// [`TestHost::cmd`] under the compose `flavour`: a config file that
    /// selects it, and for v2 `DOCKER_CONFIG` pointing at the fixtures'
    /// plugin directory.
    pub fn cmd_with<I, S>(&self, flavour: Flavour, args: I) -> TestCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let cfg = self.config(
            &format!("config-{flavour:?}.yaml"),
            &format!("compose: \"{}\"\n", flavour.setting()),
        );
        let mut c = self.cmd([OsStr::new("--config"), cfg.as_os_str()]);
        c.args(args);
        if let Flavour::V2 = flavour {
            c.env("DOCKER_CONFIG", &Fixtures::require().compose_v2_config);
        }
        c
    }

    /// `stackpin ARGS…` without the global arguments.
    pub fn cmd_raw<I, S>(&self, args: I) -> TestCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(STACKPIN);
        cmd.args(args).current_dir(self.tmp()).env("NO_COLOR", "1");
        without_developer_env(&mut cmd);
        // Not for `validate` (see `TestCommand::spawn`).
        cmd.env("STACKPIN_CONFIG", self.tmp().join(GRANTS_FILE));
        // `auto` finds v2 where DOCKER_CONFIG holds the plugin.
        if Flavour::default_for_tests() == Flavour::V2 {
            cmd.env("DOCKER_CONFIG", &Fixtures::require().compose_v2_config);
        }
        self.command(cmd)
    }

    /// Any command, with this host's failure report.
    pub fn command(&self, cmd: Command) -> TestCommand {
        TestCommand {
            cmd,
            root: self.root(),
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    // ---- engine ----

    /// `docker ARGS…`.
    pub fn docker<I, S>(&self, args: I) -> TestCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("docker");
        cmd.args(args);
        self.command(cmd)
    }

    /// The compose implementation from the fixtures, run in `dir` with
    /// project `project`.
    pub fn compose<I, S>(&self, dir: impl AsRef<Path>, project: &str, args: I) -> TestCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.fixtures().compose_command();
        cmd.current_dir(dir).args(["-p", project]).args(args);
        self.command(cmd)
    }

    /// Every container (running or not) of compose project `project`, found
    /// by label (v1 and v2 name containers differently).
    pub fn containers(&self, project: &str) -> Vec<ContainerInfo> {
        let ids = container_ids(&format!("label=com.docker.compose.project={project}"));
        if ids.is_empty() {
            return Vec::new();
        }
        let out = self
            .docker(["container", "inspect"])
            .args(&ids)
            .run()
            .ok()
            .json();
        let mut list: Vec<ContainerInfo> = out
            .as_array()
            .expect("docker inspect prints an array")
            .iter()
            .map(ContainerInfo::from_inspect)
            .collect();
        for c in &mut list {
            c.repo_digests = self.repo_digests(&c.image_id);
        }
        list.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
        list
    }

    /// `RepoDigests` of a local image (id or reference); empty if unknown.
    pub fn repo_digests(&self, image: &str) -> Vec<String> {
        let out = self
            .docker([
                "image",
                "inspect",
                "--format",
                "{{json .RepoDigests}}",
                image,
            ])
            .run();
        if !out.success() {
            return Vec::new();
        }
        serde_json::from_str(out.stdout().trim()).unwrap_or_default()
    }

    /// True when the engine has a local image for `image`.
    pub fn image_exists(&self, image: &str) -> bool {
        self.docker(["image", "inspect", image]).run().success()
    }

    // ---- polling ----

    /// The body of `GET http://127.0.0.1:PORT/PATH` when it answers 2xx.
    pub fn http_get(&self, port: u16, path: &str) -> Option<String> {
        http_get(port, path)
            .filter(|(status, _)| (200..300).contains(status))
            .map(|(_, body)| body)
    }

    /// Status and body of `GET http://127.0.0.1:PORT/PATH`, if it answers.
    pub fn http_get_status(&self, port: u16, path: &str) -> Option<(u16, String)> {
        http_get(port, path)
    }

    /// Polls [`TestHost::http_get`] until it answers 2xx or `timeout` passes.
    pub fn wait_http(&self, port: u16, path: &str, timeout: Duration) -> Option<String> {
        wait_for(timeout, || self.http_get(port, path))
    }

    // ---- inspection ----

    /// A recursive listing of the root: paths, modes, symlink targets.
    pub fn root_listing(&self) -> String {
        listing(&self.root())
    }

    /// Reads a file under the root, panicking with the listing if it is not
    /// there.
    pub fn read_root(&self, rel: impl AsRef<Path>) -> String {
        let path = self.root().join(rel);
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "failed to read {}: {e}\n--- root ---\n{}",
                path.display(),
                self.root_listing()
            )
        })
    }

    /// `status --json`'s two axes of `stack`: its sync status and its
    /// health (`("synced", "healthy")`).
    pub fn axes(&self, stack: &str) -> (String, String) {
        let rows = self.cmd(["--json", "status", stack]).run().ok().json();
        let row = &rows[0];
        let word = |k: &str| row[k].as_str().unwrap_or_default().to_string();
        (word("sync"), word("health"))
    }

    /// The audit log, `<root>/deploy-history.log` (empty when missing).
    pub fn history(&self) -> String {
        std::fs::read_to_string(self.root().join("deploy-history.log")).unwrap_or_default()
    }

    /// Where `<root>/stacks/<stack>` points, if it is a link.
    pub fn link_target(&self, stack: &str) -> Option<PathBuf> {
        std::fs::read_link(self.root().join("stacks").join(stack)).ok()
    }

    /// The names under `<root>/releases/stacks/<stack>/`, sorted.
    pub fn release_dirs(&self, stack: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root().join("releases/stacks").join(stack))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The `version` of `<root>/releases/current/<stack>.json`.
    pub fn current_version(&self, stack: &str) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&self.read_root(format!("releases/current/{stack}.json")))
                .unwrap();
        v["version"].as_str().unwrap_or_default().to_string()
    }

    /// Panics unless `stack`'s link names a complete release (it has its
    /// `release.json`), no temp release dir is left and no journal.
    #[track_caller]
    pub fn assert_consistent(&self, stack: &str) {
        let target = self
            .link_target(stack)
            .unwrap_or_else(|| panic!("no link for {stack}\n{}", self.root_listing()));
        assert!(
            target.join("release.json").is_file(),
            "link points at an incomplete release {}\n{}",
            target.display(),
            self.root_listing()
        );
        for d in self.release_dirs(stack) {
            assert!(
                !d.starts_with(".tmp"),
                "temp release left behind: {d}\n{}",
                self.root_listing()
            );
        }
        assert!(
            !self
                .root()
                .join("releases/.stackpin/journal")
                .join(format!("{stack}.json"))
                .exists(),
            "journal not cleared\n{}",
            self.root_listing()
        );
    }

    /// Waits (up to 20 s) until `GET /` on `port` answers `want` (trimmed);
    /// panics with the last answer, the history and the root listing.
    #[track_caller]
    pub fn serves(&self, port: u16, want: &str) {
        self.serves_path(port, "/", want)
    }

    /// [`TestHost::serves`] for `GET path`.
    #[track_caller]
    pub fn serves_path(&self, port: u16, path: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = None;
        while Instant::now() < deadline {
            last = self.http_get(port, path);
            if last.as_deref().map(str::trim) == Some(want) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "port {port} should serve {want:?}, last got {last:?}\n--- history ---\n{}\n--- root ---\n{}",
            self.history(),
            self.root_listing()
        );
    }

    // ---- remotes ----

    /// A bare clone of the repo at `<tmp>/remote.git`, added as `origin`, so
    /// that commits reach a "remote" only when [`TestHost::push`]ed.
    pub fn bare_remote(&self) -> PathBuf {
        let remote = self.tmp().join("remote.git");
        let mut clone = Command::new("git");
        clone
            .args(["clone", "-q", "--bare"])
            .arg(self.repo())
            .arg(&remote);
        self.command(clone).run().ok();
        self.git(["remote", "add", "origin", remote.to_str().unwrap()]);
        remote
    }

    /// `git daemon` serving the bare repositories under the temp dir (such
    /// as [`TestHost::bare_remote`]'s `remote.git`) read-only on loopback:
    /// a real network remote, `git://127.0.0.1:PORT/remote.git`.
    pub fn git_daemon(&self) -> GitDaemon {
        GitDaemon::serve(self.tmp(), false)
    }

    // ---- signing ----

    /// A fresh ed25519 key `<tmp>/<name>` and an allowed_signers file
    /// `<tmp>/<name>.allowed` listing it as `principal` for `namespaces`
    /// (`git`, `stackpin-verified`, …).
    pub fn ssh_signer(&self, name: &str, principal: &str, namespaces: &str) -> SshSigner {
        let key = self.tmp().join(name);
        let mut c = Command::new("ssh-keygen");
        c.args(["-q", "-t", "ed25519", "-N", "", "-C", principal, "-f"])
            .arg(&key);
        self.command(c).run().ok();
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let allowed = self.tmp().join(format!("{name}.allowed"));
        std::fs::write(
            &allowed,
            format!(
                "{principal} namespaces=\"{namespaces}\" {}\n",
                public.trim()
            ),
        )
        .unwrap();
        SshSigner { key, allowed }
    }

    /// The SSH signature of a verified entry of `source` by `key`, made by
    /// `ssh-keygen -Y sign` as a staging host's marker signature.
    pub fn sign_marker(
        &self,
        key: &Path,
        entry: &stackpin::desired::spec::VerifiedEntry,
        source: &str,
    ) -> String {
        let payload = self.tmp().join(format!("marker-{}", entry.version));
        std::fs::write(&payload, entry.signed_bytes(source)).unwrap();
        // ssh-keygen does not overwrite an earlier signature of the same
        // version (another entry of one release).
        let _ = std::fs::remove_file(payload.with_extension("sig"));
        let mut sign = Command::new("ssh-keygen");
        sign.args(["-q", "-Y", "sign", "-n", "stackpin-verified", "-f"])
            .arg(key)
            .arg(&payload);
        self.command(sign).run().ok();
        std::fs::read_to_string(payload.with_extension("sig")).unwrap()
    }

    /// Commits everything in the repo, signed with the SSH key `key`.
    pub fn commit_signed(&self, key: &Path, msg: &str) -> String {
        if !self.repo().join(".git").exists() {
            self.git(["init", "-q", "-b", "main"]);
        }
        self.git(["add", "-A"]);
        let signing = format!("user.signingkey={}", key.display());
        self.git([
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing,
            "commit",
            "-q",
            "--allow-empty",
            "-S",
            "-m",
            msg,
        ]);
        self.git(["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Pushes `main` to `origin` (forced: rewriting its history).
    pub fn push(&self, force: bool) {
        if force {
            self.git(["push", "-q", "--force", "origin", "main"]);
        } else {
            self.git(["push", "-q", "origin", "main"]);
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let stacks = std::mem::take(&mut *self.stacks.lock().unwrap_or_else(|e| e.into_inner()));
        for stack in &stacks {
            remove_project(stack);
        }
        make_writable(self.tmp.path());
        if std::env::var_os("STACKPIN_KEEP_TMP").is_some() {
            self.tmp.disable_cleanup(true);
            eprintln!("STACKPIN_KEEP_TMP: kept {}", self.tmp.path().display());
        }
    }
}

/// Removes the containers, networks and volumes of a compose project.
/// Best effort: a missing engine is not a reason to panic in drop.
pub fn remove_project(project: &str) {
    let label = format!("label=com.docker.compose.project={project}");
    let ids = container_ids(&label);
    if !ids.is_empty() {
        quiet(Command::new("docker").args(["rm", "-f", "-v"]).args(&ids));
    }
    for kind in ["network", "volume"] {
        let out = quiet(Command::new("docker").args([kind, "ls", "-q", "--filter", &label]));
        let names: Vec<&str> = out.split_whitespace().collect();
        if !names.is_empty() {
            quiet(Command::new("docker").args([kind, "rm"]).args(&names));
        }
    }
}

fn container_ids(filter: &str) -> Vec<String> {
    quiet(Command::new("docker").args(["ps", "-a", "-q", "--no-trunc", "--filter", filter]))
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Stdout of a command, or "" if it fails to run.
fn quiet(cmd: &mut Command) -> String {
    cmd.stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// A container as the engine reports it.
#[derive(Clone, Debug)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    /// `com.docker.compose.service`.
    pub service: String,
    /// The image id (`sha256:…`).
    pub image_id: String,
    /// `RepoDigests` of that image.
    pub repo_digests: Vec<String>,
    /// `running`, `exited`, `restarting`, `created`, …
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or `None` without a healthcheck.
    pub health: Option<String>,
    pub exit_code: i64,
    pub labels: BTreeMap<String, String>,
}

impl ContainerInfo {
    fn from_inspect(v: &serde_json::Value) -> ContainerInfo {
        let s = |p: &str| {
            v.pointer(p)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let labels: BTreeMap<String, String> = v
            .pointer("/Config/Labels")
            .and_then(|l| l.as_object())
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        ContainerInfo {
            id: s("/Id"),
            name: s("/Name").trim_start_matches('/').to_string(),
            service: labels
                .get("com.docker.compose.service")
                .cloned()
                .unwrap_or_default(),
            image_id: s("/Image"),
            repo_digests: Vec::new(),
            state: s("/State/Status"),
            health: v
                .pointer("/State/Health/Status")
                .and_then(|x| x.as_str())
                .map(String::from),
            exit_code: v
                .pointer("/State/ExitCode")
                .and_then(|x| x.as_i64())
                .unwrap_or(0),
            labels,
        }
    }

    pub fn is_running(&self) -> bool {
        self.state == "running"
    }

    /// True when the container's image was pulled as `pinned`
    /// (`repo@sha256:…`).
    pub fn runs_digest(&self, pinned: &str) -> bool {
        self.repo_digests.iter().any(|d| d == pinned)
    }
}

fn write_file(path: &Path, contents: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("failed to create {}: {e}", parent.display()));
    }
    std::fs::write(path, contents)
        .unwrap_or_else(|e| panic!("failed to write {}: {e}", path.display()));
}

/// `path/ (mode)`, `path -> target`, `path (mode, N bytes)`, one per line,
/// sorted, relative to `root`.
pub fn listing(root: &Path) -> String {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|e| format!("<{e}>"));
                let dangling = if path.exists() { "" } else { " (dangling)" };
                out.push(format!("{rel} -> {target}{dangling}"));
            } else if meta.is_dir() {
                out.push(format!("{rel}/ ({mode:o})"));
                walk(root, &path, out);
            } else {
                out.push(format!("{rel} ({mode:o}, {} bytes)", meta.len()));
            }
        }
    }
    if !root.exists() {
        return format!("<{} does not exist>", root.display());
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    const MAX: usize = 400;
    if out.len() > MAX {
        let more = out.len() - MAX;
        out.truncate(MAX);
        out.push(format!("… {more} more entries"));
    }
    if out.is_empty() {
        "<empty>".to_string()
    } else {
        out.join("\n")
    }
}

/// Adds u+w to every directory below `dir` (the product makes release dirs
/// read-only) so that the temp dir can be removed. Never follows symlinks.
fn make_writable(dir: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mut perms = meta.permissions();
    if perms.mode() & 0o700 != 0o700 {
        perms.set_mode(perms.mode() | 0o700);
        let _ = std::fs::set_permissions(dir, perms);
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            make_writable(&e.path());
        }
    }
}

/// `sp` + 6 hex digits, different per process, time and call.
fn unique_prefix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64 finaliser: spread every input bit over the 24 we keep.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    format!("sp{:06x}", x & 0xff_ffff)
}
