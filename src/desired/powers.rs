//! Host powers: what a container may do to its host, by allow-list.
//!
//! The anchor is the Kubernetes Pod Security Standards' **baseline**
//! profile, translated to compose: everything a service may do without a
//! grant is listed here, and every other setting that reaches past the
//! container is a named power that only the host's `allow:` grants (see
//! `crate::policy`). A service key stackpin has not classified is refused
//! until someone does, not passed through.
//!
//! The judgement runs on a model ([`Model`]): the raw compose file (what
//! `validate` and `plan` see, before interpolation) or the model compose
//! itself resolved from the release (`config --format json` under v2,
//! `config` under v1: interpolated, `extends` and `include` merged, paths
//! absolute), which is what the release stage judges before anything
//! reaches the engine. On the raw model a security-relevant value that is
//! interpolated is not guessed at: it is reported in
//! [`Judgement::interpolated`] and judged on compose's model.
//!
//! Pure: paths are resolved (symlinks followed) by the caller's
//! [`Model::resolve`] function; everything else is found from the model.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

/// Every power with a fixed name, as written in the host config's
/// `allow: [{powers: […]}]`; capabilities are `cap_<name>` (see
/// [`is_known`]).
pub const KINDS: &[&str] = &[
    "privileged",
    "host_namespace",
    "host_network",
    "other_container",
    "devices",
    "unconfined",
    "sysctls",
    "host_bind_read",
    "host_bind_writable",
    "volume_driver",
    "host_file",
    "docker_socket",
    "runtime",
];

/// Power names of earlier versions, and what replaced each.
pub const RENAMED: &[(&str, &str)] = &[
    (
        "interpolated_bind",
        "host_bind_writable (binds are judged after interpolation)",
    ),
    ("env_file_outside", "host_file"),
];

/// The capabilities a container may add without a grant: the Pod Security
/// Standards' baseline set (Docker's default set less NET_RAW).
pub const BASELINE_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Every Linux capability (capabilities(7)); `cap_<lowercase>` names the
/// power of adding one outside the baseline, `cap_all` of `ALL`.
pub const LINUX_CAPS: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// The sysctls the baseline allows (they are namespaced and cannot reach
/// other containers or the host).
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ping_group_range",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_syncookies",
];

/// Where the Docker engine's socket lives; a bind of it, or of a directory
/// that holds it, hands the container the engine.
pub const DOCKER_SOCKETS: &[&str] = &["/var/run/docker.sock", "/run/docker.sock"];

/// Service keys that give no power beyond the baseline whatever their
/// value (or whose power is judged through another key: `volumes`,
/// `env_file`, `configs`, `secrets` refer to what is checked elsewhere).
const PLAIN_KEYS: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "cap_drop",
    "command",
    "configs",
    "container_name",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpu_shares",
    "cpus",
    "cpuset",
    "credential_spec",
    "depends_on",
    "deploy",
    "develop",
    "dns",
    "dns_opt",
    "dns_search",
    "domainname",
    "entrypoint",
    "environment",
    "expose",
    "extends",
    "external_links",
    "extra_hosts",
    "group_add",
    "healthcheck",
    "hostname",
    "image",
    "init",
    "isolation",
    "labels",
    "links",
    "logging",
    "mac_address",
    "mem_limit",
    "mem_reservation",
    "mem_swappiness",
    "memswap_limit",
    "models",
    "networks",
    "oom_kill_disable",
    "oom_score_adj",
    "pids_limit",
    "platform",
    "ports",
    "profiles",
    "pull_policy",
    "read_only",
    "restart",
    "scale",
    "secrets",
    "shm_size",
    "stdin_open",
    "stop_grace_period",
    "stop_signal",
    "storage_opt",
    "tmpfs",
    "tty",
    "ulimits",
    "user",
    "working_dir",
];

/// Service keys judged here (each has a rule below).
const JUDGED_KEYS: &[&str] = &[
    "privileged",
    "pid",
    "ipc",
    "uts",
    "userns_mode",
    "cgroup",
    "cgroup_parent",
    "network_mode",
    "volumes_from",
    "cap_add",
    "devices",
    "device_cgroup_rules",
    "gpus",
    "security_opt",
    "sysctls",
    "volumes",
    "env_file",
    "label_file",
    "runtime",
    "use_api_socket",
    "post_start",
    "pre_stop",
];

/// Whether `name` is a power an `allow:` rule may grant.
pub fn is_known(name: &str) -> bool {
    KINDS.contains(&name)
        || name == "cap_all"
        || name
            .strip_prefix("cap_")
            .is_some_and(|c| LINUX_CAPS.contains(&c.to_ascii_uppercase().as_str()))
}

/// One power a model asks for: its name, the field and what it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Power {
    pub kind: String,
    pub field: String,
    pub what: String,
}

/// What [`judge`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Judgement {
    /// Powers a grant may open, in file order.
    pub powers: Vec<Power>,
    /// What no grant opens: the host's own secrets (the field, and why).
    pub forbidden: Vec<(String, String)>,
    /// Service keys stackpin has not classified (refused until it does).
    pub unknown: Vec<String>,
    /// Security-relevant fields whose value is interpolated: judged on the
    /// model compose resolves (raw models only).
    pub interpolated: Vec<String>,
}

/// Which model is judged, and how its paths are read.
pub struct Model<'a> {
    pub value: &'a Value,
    /// The directory relative paths are relative to: the release (compose
    /// resolved them against it), or for a raw model a stand-in.
    pub base: &'a Path,
    /// Whether `value` is compose's own resolved model (no interpolation
    /// left) rather than the file as written.
    pub resolved: bool,
    /// A path as the host sees it (symlinks followed when it exists); the
    /// identity for pure tests.
    pub resolve: &'a dyn Fn(&Path) -> PathBuf,
    /// The host's own secret files and directories, never mountable (path,
    /// what it is).
    pub protected: &'a [(PathBuf, String)],
}

impl Model<'_> {
    fn interpolated(&self, s: &str) -> bool {
        !self.resolved && s.replace("$$", "").contains('$')
    }
}

/// Where a host path points, judged against the release.
enum Place {
    /// Inside the release directory.
    Inside,
    /// The host's filesystem outside the release (resolved path).
    Host(PathBuf),
    /// Interpolated in a raw model: not known yet.
    Unknown,
}

/// `a/./b/../c` -> `a/c`, lexically; `..` above the root stays at the root.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c.as_os_str()),
        }
    }
    out
}

fn place(m: &Model<'_>, src: &str) -> Place {
    if m.interpolated(src) {
        return Place::Unknown;
    }
    if src.starts_with('~') {
        // The daemon's home directory.
        return Place::Host(PathBuf::from(src));
    }
    let base = normalize(m.base);
    let joined = normalize(&base.join(src));
    if !joined.starts_with(&base) {
        return Place::Host((m.resolve)(&joined));
    }
    // Inside by name: still outside if a symlink leads out.
    let real = (m.resolve)(&joined);
    let real_base = (m.resolve)(&base);
    if real.starts_with(&real_base) || real == joined {
        Place::Inside
    } else {
        Place::Host(real)
    }
}

/// Whether `a` is `b`, or one holds the other.
fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

struct Judge<'m, 'a> {
    m: &'m Model<'a>,
    services: BTreeSet<String>,
    out: Judgement,
}

impl Judge<'_, '_> {
    fn power(&mut self, kind: impl Into<String>, field: String, what: String) {
        self.out.powers.push(Power {
            kind: kind.into(),
            field,
            what,
        });
    }

    fn interp(&mut self, field: String) {
        self.out.interpolated.push(field);
    }

    /// A value that is interpolated in a raw model: noted, `true` returned.
    fn skip_interp(&mut self, field: &str, v: &Value) -> bool {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Array(_) | Value::Object(_) => v.to_string(),
            _ => return false,
        };
        if self.m.interpolated(&s) {
            self.interp(field.to_string());
            return true;
        }
        false
    }

    /// A host path the container reaches (a bind, a file compose reads):
    /// the host's secrets are forbidden, the Docker socket is its own power,
    /// anything else outside the release is `outside` (kind, what).
    fn host_path(
        &mut self,
        field: &str,
        src: &str,
        writable: bool,
        outside: (&str, String),
    ) -> bool {
        let host = match place(self.m, src) {
            Place::Unknown => {
                self.interp(field.to_string());
                return false;
            }
            Place::Inside => {
                if writable {
                    self.power(
                        "host_bind_writable",
                        field.to_string(),
                        format!("the writable bind \"{src}\" lets the container change the release's files on the host (they must stay immutable)"),
                    );
                }
                return true;
            }
            Place::Host(p) => p,
        };
        for (p, what) in self.m.protected {
            let p = (self.m.resolve)(p);
            if overlaps(&host, &p) {
                self.out.forbidden.push((
                    field.to_string(),
                    format!(
                        "\"{src}\" reaches {} ({what}), which no container may read: the host's own secrets cannot be granted by `allow:`",
                        p.display()
                    ),
                ));
                return false;
            }
        }
        let sock = host
            .file_name()
            .is_some_and(|n| n == "docker.sock" || n == "containerd.sock" || n == "podman.sock")
            || DOCKER_SOCKETS.iter().any(|s| {
                Path::new(s).starts_with(&host) || (self.m.resolve)(Path::new(s)).starts_with(&host)
            });
        if sock {
            self.power(
                "docker_socket",
                field.to_string(),
                format!(
                    "\"{src}\" hands the container the container engine's socket, even read-only"
                ),
            );
            return false;
        }
        let (kind, what) = outside;
        self.power(kind, field.to_string(), what);
        false
    }

    fn service(&mut self, name: &str, svc: &Value) {
        let Some(map) = svc.as_object() else {
            return;
        };
        for (key, v) in map {
            let field = format!("services.{name}.{key}");
            if key.starts_with("x-") || PLAIN_KEYS.contains(&key.as_str()) {
                if key == "deploy" {
                    self.deploy(&field, v);
                }
                continue;
            }
            if !JUDGED_KEYS.contains(&key.as_str()) {
                self.out.unknown.push(field);
                continue;
            }
            if v.is_null() {
                continue;
            }
            match key.as_str() {
                "privileged" => self.privileged(&field, v),
                "pid" | "ipc" | "uts" | "userns_mode" | "cgroup" | "network_mode" => {
                    self.namespace(key, &field, v)
                }
                "cgroup_parent" => {
                    if !self.skip_interp(&field, v) {
                        self.power("host_namespace", field, format!("`cgroup_parent: {}` places the container in a cgroup of the host's choosing, outside the engine's", show(v)));
                    }
                }
                "volumes_from" => self.volumes_from(&field, v),
                "cap_add" => self.caps(&field, v),
                "devices" | "device_cgroup_rules" => {
                    if !is_empty(v) && !self.skip_interp(&field, v) {
                        self.power(
                            "devices",
                            field,
                            format!("`{key}` gives the container the host's devices"),
                        );
                    }
                }
                "gpus" => {
                    if !self.skip_interp(&field, v) {
                        self.power(
                            "devices",
                            field,
                            "`gpus` gives the container the host's GPUs".into(),
                        );
                    }
                }
                "security_opt" => self.security_opt(&field, v),
                "sysctls" => self.sysctls(&field, v),
                "volumes" => self.volumes(&field, v),
                "env_file" | "label_file" => self.files(&field, key, v),
                "runtime" => {
                    if v.as_str() != Some("runc") && !self.skip_interp(&field, v) {
                        self.power(
                            "runtime",
                            field,
                            format!("`runtime: {}` runs the container with another OCI runtime of the host", show(v)),
                        );
                    }
                }
                "use_api_socket" => {
                    if truthy(v) {
                        self.power(
                            "docker_socket",
                            field,
                            "`use_api_socket` hands the container the Docker engine's API".into(),
                        );
                    }
                }
                "post_start" | "pre_stop" => {
                    for (i, hook) in v.as_array().into_iter().flatten().enumerate() {
                        if let Some(p) = hook.get("privileged") {
                            self.privileged(&format!("{field}[{i}].privileged"), p);
                        }
                    }
                }
                _ => unreachable!("every judged key has a rule"),
            }
        }
    }

    fn privileged(&mut self, field: &str, v: &Value) {
        if self.skip_interp(field, v) || !truthy(v) {
            return;
        }
        self.power(
            "privileged",
            field.to_string(),
            "`privileged: true` gives the container every device and capability of the host".into(),
        );
    }

    fn namespace(&mut self, key: &str, field: &str, v: &Value) {
        if self.skip_interp(field, v) {
            return;
        }
        let s = show(v);
        if s == "host" {
            let (kind, what) = if key == "network_mode" {
                (
                    "host_network",
                    "the host's network stack (its loopback services and interfaces)",
                )
            } else {
                ("host_namespace", "the host's namespace")
            };
            self.power(
                kind,
                field.to_string(),
                format!("`{key}: host` shares {what}"),
            );
        } else if let Some(c) = s.strip_prefix("container:") {
            self.power(
                "other_container",
                field.to_string(),
                format!("`{key}: {s}` joins container `{c}`, which is not part of this stack"),
            );
        } else if let Some(svc) = s.strip_prefix("service:")
            && !self.services.contains(svc)
        {
            self.power(
                "other_container",
                field.to_string(),
                format!("`{key}: {s}` names a service this stack does not define"),
            );
        }
    }

    fn volumes_from(&mut self, field: &str, v: &Value) {
        for (i, e) in v.as_array().into_iter().flatten().enumerate() {
            let f = format!("{field}[{i}]");
            if self.skip_interp(&f, e) {
                continue;
            }
            let s = show(e);
            let source = s
                .strip_prefix("container:")
                .map(|c| (true, c))
                .unwrap_or((false, s.as_str()));
            let name = source.1.split(':').next().unwrap_or_default();
            if source.0 || !self.services.contains(name) {
                self.power(
                    "other_container",
                    f,
                    format!(
                        "`volumes_from: {s}` mounts the volumes of a container outside this stack"
                    ),
                );
            }
        }
    }

    fn caps(&mut self, field: &str, v: &Value) {
        let list: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        for (i, c) in list.into_iter().enumerate() {
            let f = format!("{field}[{i}]");
            if self.skip_interp(&f, c) {
                continue;
            }
            let s = show(c);
            let bare = s.trim().to_ascii_uppercase();
            let bare = bare.strip_prefix("CAP_").unwrap_or(&bare).to_string();
            if BASELINE_CAPS.contains(&bare.as_str()) {
                continue;
            }
            let kind = format!("cap_{}", bare.to_ascii_lowercase());
            let what = if bare == "ALL" {
                "`cap_add: ALL` gives the container every capability: root on the host".to_string()
            } else if LINUX_CAPS.contains(&bare.as_str()) {
                format!("`cap_add: {s}` is a capability outside the baseline set")
            } else {
                format!("`cap_add: {s}` is not a capability stackpin knows; remove it")
            };
            self.power(kind, f, what);
        }
    }

    fn security_opt(&mut self, field: &str, v: &Value) {
        for (i, o) in v.as_array().into_iter().flatten().enumerate() {
            let f = format!("{field}[{i}]");
            if self.skip_interp(&f, o) {
                continue;
            }
            let s = show(o);
            let norm = s.replacen(':', "=", 1);
            let (k, val) = norm.split_once('=').unwrap_or((norm.as_str(), ""));
            let fine = match k {
                "no-new-privileges" => true,
                "apparmor" => !val.is_empty() && val != "unconfined",
                "label" => val.starts_with("level:") || val.starts_with("level="),
                _ => false,
            };
            if !fine {
                self.power(
                    "unconfined",
                    f,
                    format!("`security_opt: {s}` loosens the container's confinement (seccomp, AppArmor, SELinux)"),
                );
            }
        }
    }

    fn sysctls(&mut self, field: &str, v: &Value) {
        let names: Vec<(String, String)> = match v {
            Value::Object(m) => m
                .keys()
                .map(|k| (k.clone(), format!("{field}.{k}")))
                .collect(),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let s = show(e);
                    (
                        s.split('=').next().unwrap_or_default().trim().to_string(),
                        format!("{field}[{i}]"),
                    )
                })
                .collect(),
            _ => vec![(show(v), field.to_string())],
        };
        for (name, f) in names {
            if self.m.interpolated(&name) {
                self.interp(f);
            } else if !SAFE_SYSCTLS.contains(&name.as_str()) {
                self.power(
                    "sysctls",
                    f,
                    format!("sysctl `{name}` is outside the baseline's safe set"),
                );
            }
        }
    }

    fn volumes(&mut self, field: &str, v: &Value) {
        for (i, e) in v.as_array().into_iter().flatten().enumerate() {
            let f = format!("{field}[{i}]");
            let Some(mount) = mount_of(e) else {
                continue;
            };
            match mount.kind {
                MountKind::Bind => self.bind(&f, &mount.source, mount.read_only),
                MountKind::Volume => {
                    // A named volume: judged where it is defined.
                }
                MountKind::Other(t) => {
                    self.power(
                        "host_bind_read",
                        f,
                        format!("a `{t}` mount reaches the host outside the release"),
                    );
                }
                MountKind::Plain => {}
            }
        }
    }

    fn bind(&mut self, field: &str, src: &str, read_only: bool) {
        let outside = if read_only {
            (
                "host_bind_read",
                format!(
                    "the bind \"{src}\" lets the container read the host's files (read-only binds included)"
                ),
            )
        } else {
            (
                "host_bind_writable",
                format!("the writable bind \"{src}\" lets the container change the host"),
            )
        };
        self.host_path(field, src, !read_only, outside);
    }

    fn files(&mut self, field: &str, key: &str, v: &Value) {
        let list: Vec<(String, &Value)> = match v {
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, e)| (format!("{field}[{i}]"), e))
                .collect(),
            other => vec![(field.to_string(), other)],
        };
        for (f, e) in list {
            let Some(path) = e.as_str().or_else(|| e.get("path").and_then(Value::as_str)) else {
                continue;
            };
            if self.m.interpolated(path) {
                // Compose reads it at `config` time and hands only its
                // contents on: an unknown path is judged outside.
                self.power(
                    "host_file",
                    f,
                    format!("`{key}: {path}` takes its path from a variable, so it may read any file of the host; write the path out"),
                );
                continue;
            }
            self.host_path(
                &f,
                path,
                false,
                (
                    "host_file",
                    format!("`{key}: {path}` reads a file of the host outside the release"),
                ),
            );
        }
    }

    fn deploy(&mut self, field: &str, v: &Value) {
        let devices = v
            .pointer("/resources/reservations/devices")
            .filter(|d| !is_empty(d));
        if devices.is_some() {
            self.power(
                "devices",
                format!("{field}.resources.reservations.devices"),
                "device reservations give the container the host's devices".into(),
            );
        }
    }

    fn top_level(&mut self) {
        let v = self.m.value;
        for (name, def) in v
            .get("volumes")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let field = format!("volumes.{name}");
            if def.get("external").is_some_and(truthy) {
                continue;
            }
            if let Some(d) = def.get("driver").and_then(Value::as_str)
                && d != "local"
            {
                self.power(
                    "volume_driver",
                    format!("{field}.driver"),
                    format!("volume driver `{d}` is a plugin of the host's choosing"),
                );
            }
            let Some(opts) = def.get("driver_opts").and_then(Value::as_object) else {
                continue;
            };
            let get = |k: &str| opts.get(k).map(show).unwrap_or_default();
            let o = get("o");
            let is_bind = o
                .split(',')
                .any(|x| x.trim() == "bind" || x.trim() == "rbind");
            let t = get("type");
            if is_bind {
                let ro = o.split(',').any(|x| x.trim() == "ro");
                let dev = get("device");
                self.bind(&format!("{field}.driver_opts.device"), &dev, ro);
            } else if !(t == "tmpfs" || (t.is_empty() && get("device").is_empty())) {
                self.power(
                    "volume_driver",
                    format!("{field}.driver_opts"),
                    format!(
                        "driver_opts mount `{t}` from `{}` on the host",
                        get("device")
                    ),
                );
            }
        }
        for top in ["configs", "secrets"] {
            for (name, def) in v.get(top).and_then(Value::as_object).into_iter().flatten() {
                if let Some(file) = def.get("file").and_then(Value::as_str) {
                    let field = format!("{top}.{name}.file");
                    self.host_path(
                        &field,
                        file,
                        false,
                        ("host_file", format!("`{top}.{name}.file: {file}` reads a file of the host outside the release")),
                    );
                }
            }
        }
        for (name, def) in v
            .get("networks")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let real = def.get("name").and_then(Value::as_str).unwrap_or(name);
            let driver = def.get("driver").and_then(Value::as_str).unwrap_or("");
            if real == "host" || matches!(driver, "host" | "macvlan" | "ipvlan") {
                self.power(
                    "host_network",
                    format!("networks.{name}"),
                    format!("network `{real}` (driver `{driver}`) puts the containers on the host's network"),
                );
            }
        }
    }
}

/// What a service's volume entry mounts.
struct Mount {
    kind: MountKind,
    source: String,
    read_only: bool,
}

enum MountKind {
    Bind,
    Volume,
    /// tmpfs, anonymous volumes, images: nothing of the host.
    Plain,
    /// Another type that reaches the host (npipe).
    Other(String),
}

fn mount_of(e: &Value) -> Option<Mount> {
    match e {
        Value::String(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            if parts.len() < 2 {
                return Some(Mount {
                    kind: MountKind::Plain,
                    source: String::new(),
                    read_only: false,
                });
            }
            let src = parts[0];
            let read_only = parts
                .get(2)
                .is_some_and(|m| m.split(',').any(|o| o == "ro"));
            let bind = src.starts_with('.')
                || src.starts_with('/')
                || src.starts_with('~')
                || src.starts_with('$');
            Some(Mount {
                kind: if bind {
                    MountKind::Bind
                } else {
                    MountKind::Volume
                },
                source: src.to_string(),
                read_only,
            })
        }
        Value::Object(m) => {
            let source = m.get("source").map(show).unwrap_or_default();
            let read_only = m.get("read_only").is_some_and(truthy);
            let kind = match m.get("type").and_then(Value::as_str).unwrap_or("volume") {
                "bind" => MountKind::Bind,
                "volume" if source.is_empty() => MountKind::Plain,
                "volume" => MountKind::Volume,
                "tmpfs" | "image" | "cluster" => MountKind::Plain,
                other => MountKind::Other(other.to_string()),
            };
            Some(Mount {
                kind,
                source,
                read_only,
            })
        }
        _ => None,
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether a flag is on: anything but false, `"false"`, `"no"`, `"0"`,
/// `"off"` and null (compose and YAML 1.1 spell it many ways).
fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Null => false,
        Value::String(s) => !matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "false" | "no" | "0" | "off" | ""
        ),
        Value::Number(n) => n.as_f64() != Some(0.0),
        _ => true,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// Every power, forbidden path and unclassified key of `m`.
pub fn judge(m: &Model<'_>) -> Judgement {
    let services: BTreeSet<String> = m
        .value
        .get("services")
        .and_then(Value::as_object)
        .map(|s| s.keys().cloned().collect())
        .unwrap_or_default();
    let mut j = Judge {
        m,
        services,
        out: Judgement::default(),
    };
    if let Some(svcs) = m.value.get("services").and_then(Value::as_object) {
        for (name, svc) in svcs {
            j.service(name, svc);
        }
    }
    j.top_level();
    j.out
}

/// The stand-in directory a raw model's relative paths are judged against.
pub const RAW_BASE: &str = "/release";

/// [`judge`] on a raw compose file: relative paths against a stand-in
/// release, no symlinks followed, no host secrets known.
pub fn of_raw(value: &Value) -> Judgement {
    judge(&Model {
        value,
        base: Path::new(RAW_BASE),
        resolved: false,
        resolve: &|p| p.to_path_buf(),
        protected: &[],
    })
}

#[cfg(test)]
mod tests;
