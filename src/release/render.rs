//! The pure render: a stack and its host-local inputs become the files of
//! a release (the env encoding, the override with pins and fingerprints,
//! the Swarm step files) and its fingerprint. No I/O.

use super::*;

/// The shortest line of a decrypted file (not a dotenv one) that is masked
/// in output: shorter lines are syntax (`[main]`, `}`), not secrets.
const MASKED_LINE_MIN: usize = 8;

/// The shortest value of a `k = v` line of such a file that is masked on
/// its own: shorter ones (`1`, `on`, `true`) are settings, not secrets,
/// and masking them would garble every message.
const MASKED_VALUE_MIN: usize = 6;

/// What output must never show of a decrypted secret file that is not a
/// dotenv file: each line long enough to be more than syntax, and the
/// value of each `k=v`, `k = v` or `k: v` line (an ini, conf or YAML
/// secret), which a message may show without its key.
pub fn secret_file_masks(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .flat_map(|l| {
            let l = l.trim();
            let value = assigned_value(l)
                .filter(|v| v.len() >= MASKED_VALUE_MIN)
                .map(str::to_string);
            let line = (l.len() >= MASKED_LINE_MIN).then(|| l.to_string());
            [line, value]
        })
        .flatten()
        .collect()
}

/// The value of a `k=v`, `k = v` or `k: v` line, unquoted; `None` for a
/// line that is not one (a section, a comment, a bare word).
fn assigned_value(line: &str) -> Option<&str> {
    if line.starts_with('#') || line.starts_with(';') || line.starts_with('[') {
        return None;
    }
    let at = line.find(['=', ':'])?;
    let (key, value) = (line[..at].trim(), line[at + 1..].trim());
    let key_like = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' '));
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(value);
    (key_like && !value.is_empty()).then_some(value)
}

fn pinned_images(stack: &Stack) -> Vec<(String, String)> {
    stack
        .pins
        .iter()
        .map(|(svc, r)| (svc.clone(), r.pinned().unwrap_or_else(|| r.to_string())))
        .collect()
}

/// Renders a stack into the content of a release. Pure.
///
/// - the stack's files are copied as authored;
/// - [`OVERRIDE_FILE`] sets `services.<svc>.image` to the pinned reference of
///   every pin, so the digests win over the compose file's `image:`;
/// - `.env` sets `COMPOSE_PROJECT_NAME=<stack>` and
///   `COMPOSE_FILE=<compose>:stackpin.override.yaml` (so `docker compose ps`
///   works by hand in `<root>/stacks/<stack>`), then the `env:` values in
///   order, then the variables of the decrypted `*.env` secrets, then those
///   of the stack's `env_files` (read by the caller, in order; a later file
///   wins, and an env file wins over `env:`);
/// - each decrypted secret is a file of the release under its name without
///   `.age` (mode 0600, listed in [`Rendered::secret_files`]); the encrypted
///   file is not copied, so re-encrypting the same plaintext changes nothing.
///
/// `.env` values are written unquoted when they hold nothing special, which
/// every compose reads the same (docker-compose v1 before 1.26 does not
/// unquote at all). Others are single-quoted (literal in compose v2 and in
/// v1's python-dotenv: no escapes, no `$` interpolation) unless they hold a
/// `'`, `\` or newline; then double-quoted with `\\`, `\"`, `\n`, `\r`, which
/// both read back the same, and a `$` in such a value is refused because the
/// two interpolate it differently.
///
/// The fingerprint is sha256 over length-prefixed records of: every file
/// path and bytes (sorted, decrypted secrets included), the non-secret part
/// of `.env`, the pins, and for each env file its path and the sha256 of its
/// bytes: rotating a secret changes it. The commit is not
/// part of it: a commit that changes nothing else does not redeploy.
///
/// # Errors
/// A stack file named like a file stackpin writes, a path that is not plain
/// relative, an env file line that does not parse, a reserved or invalid
/// key, or a value that cannot be written safely. Errors name the file, line
/// and key, never the value.
pub fn render(stack: &Stack, host: &Secrets, commit: Option<&str>) -> Result<Rendered, Error> {
    let mut files = BTreeMap::new();
    let mut secret_paths = BTreeSet::new();
    // The encrypted files are not copied: their plaintext is.
    let plain = stack
        .files
        .iter()
        .filter(|(p, _)| !stack.spec.secrets.contains(p));
    let decrypted = host.decrypted.iter().map(|(p, b)| (p, b, true));
    for (path, bytes, secret) in plain.map(|(p, b)| (p, b, false)).chain(decrypted) {
        check_rel_path(&stack.name, path)?;
        if secret && (files.contains_key(path) || !secret_paths.insert(path.clone())) {
            return Err(Error::ReservedFile {
                stack: stack.name.clone(),
                file: path.clone(),
                fix: "a secret decrypts to a file that exists already: rename one of them",
            });
        }
        // The smoke spec is the one reserved file the caller adds itself
        // (a stack file of that name is refused when the stack loads).
        if let Some((_, fix)) = crate::desired::RESERVED_FILES
            .iter()
            .find(|(name, _)| *name == path.as_str() && *name != crate::smoke::SPEC_FILE)
        {
            return Err(Error::ReservedFile {
                stack: stack.name.clone(),
                file: path.clone(),
                fix,
            });
        }
        files.insert(path.clone(), bytes.clone());
    }
    let pins = pinned_images(stack);
    let env_values: BTreeMap<String, String> = stack
        .spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Dotenv sources of secret variables: the decrypted `*.env` secrets,
    // then the host's env files (a later one wins).
    let secret_files: Vec<(String, Vec<u8>)> = host
        .decrypted
        .iter()
        .filter(|(p, _)| crate::desired::secret_is_dotenv(p))
        .map(|(p, b)| {
            (
                format!("stacks/{}/{p}{}", stack.name, crate::desired::AGE_SUFFIX),
                b.clone(),
            )
        })
        .chain(host.env_files.iter().cloned())
        .collect();
    let secret_files = secret_files.as_slice();
    let services = service_fingerprints(stack, &pins, &files, &env_values, secret_files);
    files.insert(
        OVERRIDE_FILE.to_string(),
        override_yaml(stack, &pins, &services, None).into_bytes(),
    );
    let compose_file = if stack.compose.resolved {
        // `include`, `extends` or `profiles` were resolved: the release runs
        // the resolved model, the one validation checked and plan shows.
        let rel = match stack.compose_file.rsplit_once('/') {
            Some((d, _)) => format!("{d}/{}", crate::desired::resolve::RESOLVED_FILE),
            None => crate::desired::resolve::RESOLVED_FILE.to_string(),
        };
        if files.contains_key(&rel) {
            return Err(Error::ReservedFile {
                stack: stack.name.clone(),
                file: rel,
                fix: "stackpin writes the resolved compose model there: rename the file",
            });
        }
        let yaml = serde_saphyr::to_string(&stack.compose.value).map_err(|e| Error::Resolved {
            stack: stack.name.clone(),
            reason: e.to_string(),
        })?;
        files.insert(
            rel.clone(),
            format!(
                "# Written by stackpin: {} with include, extends and profiles resolved.\n# This is what runs; the release keeps the files it was made from.\n{yaml}",
                stack.compose_file
            )
            .into_bytes(),
        );
        rel
    } else {
        stack.compose_file.clone()
    };
    let swarm_steps = swarm_steps(stack, &pins, &services, &mut files)?;
    let compose_files = vec![compose_file, OVERRIDE_FILE.to_string()];

    // Secret variables, merged: later files win, first position kept.
    let mut secrets: IndexMap<String, String> = IndexMap::new();
    for (path, bytes) in secret_files {
        for (key, value) in parse_env_file(path, bytes)? {
            if RESERVED_KEYS.contains(&key.as_str()) {
                return Err(Error::EnvValue {
                    stack: stack.name.clone(),
                    key,
                    reason: format!("in {path} is set by stackpin itself; remove it"),
                });
            }
            secrets.insert(key, value);
        }
    }

    let env_line = |key: &str, value: &str| -> Result<String, Error> {
        encode_env_value(value)
            .map(|v| format!("{key}={v}\n"))
            .map_err(|reason| Error::EnvValue {
                stack: stack.name.clone(),
                key: key.to_string(),
                reason: reason.0,
            })
    };
    let mut public =
        String::from("# Written by stackpin; do not edit: the release is immutable.\n");
    public.push_str(&env_line("COMPOSE_PROJECT_NAME", &stack.name)?);
    public.push_str(&env_line("COMPOSE_FILE", &compose_files.join(":"))?);
    let mut env_file = public.clone();
    for (key, value) in &stack.spec.env {
        if RESERVED_KEYS.contains(&key.as_str()) {
            return Err(Error::EnvValue {
                stack: stack.name.clone(),
                key: format!("env.{key}"),
                reason: "is set by stackpin itself; remove it from stack.yaml".into(),
            });
        }
        let line = env_line(key, value)?;
        public.push_str(&line);
        if !secrets.contains_key(key) {
            env_file.push_str(&line);
        }
    }
    for (key, value) in &secrets {
        env_file.push_str(&env_line(key, value)?);
    }

    let file_lines = host
        .decrypted
        .iter()
        .filter(|(p, _)| !crate::desired::secret_is_dotenv(p))
        .flat_map(|(_, b)| secret_file_masks(b));
    let mut secret_values: Vec<String> = secrets
        .into_values()
        .chain(file_lines)
        .filter(|v| !v.is_empty())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    secret_values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));

    let fingerprint = fingerprint(&files, &public, &pins, secret_files);
    Ok(Rendered {
        files,
        env_file,
        secret_values,
        secret_files: secret_paths,
        fingerprint,
        compose_files,
        commit: commit.map(str::to_string),
        services,
        swarm_steps,
    })
}

/// The prefix of the step files of a Swarm stack's release.
pub const SWARM_STEP_PREFIX: &str = "stackpin.swarm-step-";

/// For a Swarm stack whose services `depends_on` others, one
/// [`crate::engine::swarm::Step`] per level of
/// [`crate::desired::swarm::levels`] but the last (the whole stack is
/// deployed after them): two files beside the compose file,
/// `stackpin.swarm-step-<n>.yaml` (the compose model with only the level's
/// services, without their `depends_on`: the services they name are not in
/// the file) and `stackpin.swarm-step-<n>.override.yaml` (their pins, as in
/// [`OVERRIDE_FILE`]). `docker stack deploy` resolves relative paths from
/// the first file's directory, so `configs: {file: ./x}` reads the same
/// file as the whole stack's deploy. None for other stacks. Pure.
fn swarm_steps(
    stack: &Stack,
    pins: &[(String, String)],
    services: &BTreeMap<String, String>,
    files: &mut BTreeMap<String, Vec<u8>>,
) -> Result<Vec<crate::engine::swarm::Step>, Error> {
    if !stack.spec.engine.is_swarm() {
        return Ok(Vec::new());
    }
    let err = |reason: String| Error::SwarmSteps {
        stack: stack.name.clone(),
        reason,
    };
    let levels = crate::desired::swarm::levels(&stack.compose)
        .map_err(|cycle| err(format!("depends_on forms a cycle: {cycle}")))?;
    let dir = match stack.compose_file.rsplit_once('/') {
        Some((d, _)) => format!("{d}/"),
        None => String::new(),
    };
    let mut steps = Vec::new();
    for (i, level) in levels
        .iter()
        .take(levels.len().saturating_sub(1))
        .enumerate()
    {
        let compose = format!("{dir}{SWARM_STEP_PREFIX}{}.yaml", i + 1);
        let pinned = format!("{dir}{SWARM_STEP_PREFIX}{}.override.yaml", i + 1);
        for f in [&compose, &pinned] {
            if files.contains_key(f) {
                return Err(Error::ReservedFile {
                    stack: stack.name.clone(),
                    file: f.clone(),
                    fix: "stackpin writes the deploy steps of depends_on there: rename the file",
                });
            }
        }
        let mut model = stack.compose.value.clone();
        if let Some(svcs) = model
            .get_mut("services")
            .and_then(serde_json::Value::as_object_mut)
        {
            svcs.retain(|name, _| level.contains(name));
            for def in svcs.values_mut() {
                if let Some(d) = def.as_object_mut() {
                    d.remove("depends_on");
                }
            }
        }
        let yaml = serde_saphyr::to_string(&model).map_err(|e| err(e.to_string()))?;
        files.insert(
            compose.clone(),
            format!(
                "# Written by stackpin: step {} of the deploy of {}, the services the next steps depend on.\n{yaml}",
                i + 1,
                stack.compose_file
            )
            .into_bytes(),
        );
        files.insert(
            pinned.clone(),
            override_yaml(stack, pins, services, Some(level)).into_bytes(),
        );
        steps.push(crate::engine::swarm::Step {
            services: level.clone(),
            files: vec![compose, pinned],
            wait_secs: stack.smoke_timeout.as_secs(),
        });
    }
    Ok(steps)
}

pub(super) fn check_rel_path(stack: &str, path: &str) -> Result<(), Error> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && !path.contains('\0')
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(Error::BadPath {
            stack: stack.to_string(),
            file: path.to_string(),
        })
    }
}

/// The label holding a service's fingerprint (see [`service_fingerprints`]).
pub use crate::engine::SERVICE_FINGERPRINT_LABEL;

/// Each service's fingerprint: sha256 over what it runs from the release —
/// its compose definition as authored, its pinned image, the bytes of every
/// stack file or directory it bind-mounts (relative sources), of its relative
/// `env_file`s and `configs:`/`secrets:` files, and the values of the
/// variables its definition interpolates (a secret's as its sha256). Set as
/// a label by the override, it is part of compose's own config hash, so with
/// the stable project directory compose recreates a service exactly when
/// its fingerprint changes: a digest bump of one service recreates that
/// service only; a change to the router's config file, the router only.
pub fn service_fingerprints(
    stack: &Stack,
    pins: &[(String, String)],
    files: &BTreeMap<String, Vec<u8>>,
    env: &BTreeMap<String, String>,
    secret_files: &[(String, Vec<u8>)],
) -> BTreeMap<String, String> {
    let mut secrets: BTreeMap<String, String> = BTreeMap::new();
    for (path, bytes) in secret_files {
        if let Ok(vars) = parse_env_file(path, bytes) {
            for (k, v) in vars {
                secrets.insert(k, format!("sha256:{:x}", Sha256::digest(v.as_bytes())));
            }
        }
    }
    let all_sources = service_sources(stack);
    let mut out = BTreeMap::new();
    for (name, def) in stack.compose.services() {
        let mut h = Sha256::new();
        let mut put = |tag: &[u8], bytes: &[u8]| {
            h.update(tag);
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        put(b"service", name.as_bytes());
        put(b"definition", &serde_json::to_vec(def).unwrap_or_default());
        if let Some((_, pin)) = pins.iter().find(|(s, _)| s == name) {
            put(b"image", pin.as_bytes());
        }
        let sources = all_sources.get(name).cloned().unwrap_or_default();
        for (path, bytes) in files_under(files, &sources) {
            put(b"file", path.as_bytes());
            put(b"bytes", bytes);
        }
        let text = serde_json::to_string(def).unwrap_or_default();
        for (k, v) in env.iter().chain(secrets.iter()) {
            if text.contains(&format!("${{{k}")) || text.contains(&format!("${k}")) {
                put(b"var", k.as_bytes());
                put(b"value", secrets.get(k).unwrap_or(v).as_bytes());
            }
        }
        out.insert(name.to_string(), format!("{:x}", h.finalize()));
    }
    out
}

/// The stack files and directories each service reads from the release
/// (relative to the stack directory): its relative bind sources, relative
/// `env_file`s and `configs:`/`secrets:` files.
pub fn service_sources(stack: &Stack) -> BTreeMap<String, BTreeSet<String>> {
    use serde_json::Value;
    let compose_dir = Path::new(&stack.compose_file)
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let resolve = |src: &str| -> Option<String> {
        let joined = if compose_dir.is_empty() {
            src.to_string()
        } else {
            format!("{compose_dir}/{src}")
        };
        crate::desired::paths::normalize_rel(&joined).ok()
    };
    let top = &stack.compose.value;
    let mut out = BTreeMap::new();
    for (name, def) in stack.compose.services() {
        let mut sources: BTreeSet<String> = BTreeSet::new();
        for v in def
            .get("volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let src = match v {
                Value::String(s) => s.split(':').next().unwrap_or_default().to_string(),
                Value::Object(m) => m
                    .get("source")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                _ => continue,
            };
            if src.starts_with('.') {
                sources.extend(resolve(&src));
            }
        }
        match def.get("env_file") {
            Some(Value::String(f)) => sources.extend(resolve(f)),
            Some(Value::Array(list)) => {
                for f in list {
                    if let Some(f) = f.as_str().or_else(|| f.get("path").and_then(Value::as_str)) {
                        sources.extend(resolve(f));
                    }
                }
            }
            _ => {}
        }
        for key in ["configs", "secrets"] {
            for r in def.get(key).and_then(Value::as_array).into_iter().flatten() {
                let Some(n) = r
                    .as_str()
                    .or_else(|| r.get("source").and_then(Value::as_str))
                else {
                    continue;
                };
                if let Some(f) = top
                    .pointer(&format!("/{key}/{n}/file"))
                    .and_then(Value::as_str)
                {
                    sources.extend(resolve(f));
                }
            }
        }
        out.insert(name.to_string(), sources);
    }
    out
}

/// The files of `files` that are one of `sources` or inside one of them.
pub fn files_under<'a>(
    files: &'a BTreeMap<String, Vec<u8>>,
    sources: &'a BTreeSet<String>,
) -> impl Iterator<Item = (&'a String, &'a Vec<u8>)> + 'a {
    files.iter().filter(move |(path, _)| {
        sources
            .iter()
            .any(|src| *path == src || path.starts_with(&format!("{src}/")))
    })
}

/// The fingerprint label of each service, as a release's override file
/// sets it (see [`service_fingerprints`]); empty for a release made before
/// the label existed.
///
/// # Errors
/// The override file exists but cannot be read or parsed.
pub fn read_service_fingerprints(dir: &Path) -> Result<BTreeMap<String, String>, String> {
    let path = dir.join(OVERRIDE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("failed to read {}: {e}", path.display())),
    };
    let v: serde_json::Value = serde_saphyr::from_str(&text)
        .map_err(|e| format!("failed to parse {}: {e}", path.display()))?;
    Ok(v.get("services")
        .and_then(serde_json::Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(svc, def)| {
            let fp = def
                .get("labels")?
                .get(SERVICE_FINGERPRINT_LABEL)?
                .as_str()?;
            Some((svc.clone(), fp.to_string()))
        })
        .collect())
}

/// The override, as YAML built by hand: keys and values are JSON strings,
/// which are valid double-quoted YAML scalars for every YAML parser compose
/// has used. A top-level `version:` of the compose file is repeated, since
/// docker-compose v1 refuses files of mixed versions. Each service (each of
/// `only`, when given) gets its pinned image and its
/// [`SERVICE_FINGERPRINT_LABEL`].
fn override_yaml(
    stack: &Stack,
    pins: &[(String, String)],
    services: &BTreeMap<String, String>,
    only: Option<&[String]>,
) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut out = String::from(
        "# Written by stackpin: every service runs the image digest pinned in stack.yaml.\n",
    );
    match stack.compose.value.get("version") {
        Some(serde_json::Value::String(v)) => out.push_str(&format!("version: {}\n", q(v))),
        Some(serde_json::Value::Number(n)) => {
            out.push_str(&format!("version: {}\n", q(&n.to_string())))
        }
        _ => {}
    }
    if pins.is_empty() && services.is_empty() {
        out.push_str("services: {}\n");
        return out;
    }
    out.push_str("services:\n");
    let listed = |svc: &str| only.is_none_or(|o| o.iter().any(|x| x == svc));
    for (svc, _) in stack.compose.services().filter(|(s, _)| listed(s)) {
        out.push_str(&format!("  {}:\n", q(svc)));
        if let Some((_, pinned)) = pins.iter().find(|(s, _)| s == svc) {
            out.push_str(&format!("    image: {}\n", q(pinned)));
        }
        if let Some(fp) = services.get(svc) {
            out.push_str(&format!(
                "    labels:\n      {}: {}\n",
                q(SERVICE_FINGERPRINT_LABEL),
                q(fp)
            ));
        }
        if stack.spec.engine.is_swarm() {
            // JSON is YAML (flow style).
            out.push_str(&format!(
                "    deploy:\n      update_config: {}\n",
                crate::desired::swarm::update_config(&stack.spec, svc)
            ));
        }
    }
    out
}

fn fingerprint(
    files: &BTreeMap<String, Vec<u8>>,
    public_env: &str,
    pins: &[(String, String)],
    secret_files: &[(String, Vec<u8>)],
) -> String {
    let mut h = Sha256::new();
    let mut put = |tag: &[u8], bytes: &[u8]| {
        h.update(tag);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    put(b"stackpin-release", b"1");
    for (path, bytes) in files {
        put(b"path", path.as_bytes());
        put(b"data", bytes);
    }
    put(b"env", public_env.as_bytes());
    let sorted: BTreeMap<&str, &str> = pins.iter().map(|(s, p)| (s.as_str(), p.as_str())).collect();
    for (svc, pinned) in sorted {
        put(b"service", svc.as_bytes());
        put(b"pin", pinned.as_bytes());
    }
    for (path, bytes) in secret_files {
        put(b"secret-file", path.as_bytes());
        put(b"secret-sha256", &Sha256::digest(bytes));
    }
    hex::encode(h.finalize())
}

/// [`crate::dotenv::parse`], its error naming the file.
fn parse_env_file(path: &str, bytes: &[u8]) -> Result<Vec<(String, String)>, Error> {
    crate::dotenv::parse(bytes).map_err(|e| Error::EnvFile {
        path: path.to_string(),
        line: e.line,
        reason: e.reason,
    })
}

/// Writes a value so compose v1 and v2 read back exactly `value`.
pub(super) fn encode_env_value(value: &str) -> Result<String, EnvValueError> {
    if value.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    let plain = |c: char| !c.is_whitespace() && !c.is_control() && !"#'\"\\$`".contains(c);
    if value.chars().all(plain) {
        return Ok(value.to_string());
    }
    if !value.contains(['\'', '\\', '\n', '\r']) {
        return Ok(format!("'{value}'"));
    }
    if value.contains('$') {
        return Err("contains `$` together with a quote, backslash or newline, which docker compose v1 and v2 read differently in .env; change the value".into());
    }
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}
