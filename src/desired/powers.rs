//! Settings in a compose file that give a container power over the host:
//! with push access to the desired state they would be a way onto the host,
//! so a host runs them only for the stacks its own config allows (an
//! allow-list with a reason, see `crate::policy`). Pure: found from the
//! parsed compose file alone.

use super::compose::Compose;
use serde::Serialize;
use serde_json::Value;

/// Every kind, as written in the host config's `allow: [{powers: […]}]`.
pub const KINDS: &[&str] = &[
    "privileged",
    "host_namespace",
    "cap_sys_admin",
    "docker_socket",
    "host_bind_writable",
    "interpolated_bind",
    "env_file_outside",
];

/// One such setting: its kind, the YAML path and what it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Power {
    pub kind: &'static str,
    pub field: String,
    pub what: String,
}

/// The host powers the compose file asks for, in file order.
pub fn of(compose: &Compose) -> Vec<Power> {
    let mut out = Vec::new();
    for (name, svc) in compose.services() {
        let Some(svc) = svc.as_object() else {
            continue;
        };
        let at = |key: &str| format!("services.{name}.{key}");
        let mut push =
            |kind: &'static str, field: String, what: String| out.push(Power { kind, field, what });
        if svc.get("privileged").and_then(Value::as_bool) == Some(true) {
            push(
                "privileged",
                at("privileged"),
                "`privileged: true` gives the container every device and capability of the host"
                    .into(),
            );
        }
        for key in ["pid", "ipc", "uts", "userns_mode"] {
            if svc.get(key).and_then(Value::as_str) == Some("host") {
                push(
                    "host_namespace",
                    at(key),
                    format!("`{key}: host` shares the host's {key} namespace"),
                );
            }
        }
        if let Some(caps) = svc.get("cap_add").and_then(Value::as_array) {
            for (i, c) in caps.iter().enumerate() {
                let c = c.as_str().unwrap_or_default();
                let bare = c.trim_start_matches("CAP_");
                if bare.eq_ignore_ascii_case("SYS_ADMIN") || bare.eq_ignore_ascii_case("ALL") {
                    push(
                        "cap_sys_admin",
                        format!("services.{name}.cap_add[{i}]"),
                        format!("`cap_add: {c}` is nearly root on the host"),
                    );
                }
            }
        }
        if let Some(vols) = svc.get("volumes").and_then(Value::as_array) {
            for (i, v) in vols.iter().enumerate() {
                if let Some((kind, what)) = volume_power(v) {
                    push(kind, format!("services.{name}.volumes[{i}]"), what);
                }
            }
        }
        for f in env_files(svc.get("env_file")) {
            if f.starts_with('/') || f.starts_with('~') || f.contains("${") {
                push(
                    "env_file_outside",
                    at("env_file"),
                    format!("`env_file: {f}` reads a file outside the release"),
                );
            }
        }
    }
    out
}

fn env_files(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().or_else(|| x.get("path").and_then(Value::as_str)))
            .collect(),
        _ => Vec::new(),
    }
}

/// (source, read-only, is a bind) of a short or long volume entry.
fn volume_parts(v: &Value) -> Option<(String, bool, bool)> {
    match v {
        Value::String(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            if parts.len() < 2 {
                return None;
            }
            let ro = parts
                .get(2)
                .is_some_and(|m| m.split(',').any(|o| o == "ro"));
            let src = parts[0];
            let bind = src.starts_with('.')
                || src.starts_with('/')
                || src.starts_with('~')
                || src.starts_with("${");
            Some((src.to_string(), ro, bind))
        }
        Value::Object(m) => {
            let src = m
                .get("source")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let ro = m.get("read_only").and_then(Value::as_bool).unwrap_or(false);
            let bind = m.get("type").and_then(Value::as_str) == Some("bind");
            Some((src, ro, bind))
        }
        _ => None,
    }
}

fn volume_power(v: &Value) -> Option<(&'static str, String)> {
    let (src, ro, bind) = volume_parts(v)?;
    if !bind {
        return None;
    }
    if src.trim_end_matches('/').ends_with("docker.sock") {
        return Some((
            "docker_socket",
            format!("mounting \"{src}\" hands the container the Docker engine, even read-only"),
        ));
    }
    if ro {
        return None;
    }
    if src.contains("${") {
        return Some((
            "interpolated_bind",
            format!("the writable bind \"{src}\" takes its host path from a variable"),
        ));
    }
    if src.starts_with('/') || src.starts_with('~') {
        return Some((
            "host_bind_writable",
            format!("the writable bind \"{src}\" lets the container change the host"),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compose(yaml: &str) -> Compose {
        Compose {
            value: serde_saphyr::from_str(yaml).unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn finds_each_kind_and_nothing_in_a_plain_service() {
        let c = compose(
            "services:
  plain:
    image: app
    network_mode: host
    volumes: [\"./config/a.conf:/a.conf:ro\", \"data:/data\", \"/etc/ssl/certs:/certs:ro\"]
    env_file: [./app.env]
  evil:
    image: app
    privileged: true
    pid: host
    cap_add: [NET_ADMIN, SYS_ADMIN]
    env_file: /etc/shadow
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock:ro
      - /:/host
      - ./${X}:/data
      - {type: bind, source: /srv, target: /srv}
",
        );
        let got: Vec<(&str, String)> = of(&c).into_iter().map(|p| (p.kind, p.field)).collect();
        assert_eq!(
            got,
            [
                ("privileged", "services.evil.privileged".to_string()),
                ("host_namespace", "services.evil.pid".to_string()),
                ("cap_sys_admin", "services.evil.cap_add[1]".to_string()),
                ("docker_socket", "services.evil.volumes[0]".to_string()),
                ("host_bind_writable", "services.evil.volumes[1]".to_string()),
                ("interpolated_bind", "services.evil.volumes[2]".to_string()),
                ("host_bind_writable", "services.evil.volumes[3]".to_string()),
                ("env_file_outside", "services.evil.env_file".to_string()),
            ]
        );
        assert!(got.iter().all(|(k, _)| KINDS.contains(k)));
    }
}
