//! Host powers on the real engine and compose (issue 30): the host judges
//! the model compose will actually run, interpolation included. For each
//! class of power, a host whose config grants nothing but the fixtures'
//! host network refuses the stack by field and power, no container of it
//! is ever created, a stack that ran keeps its release and the other
//! stacks converge; the matching `allow:` entry lets it run, with the power
//! visible in `docker inspect`; the host's own secrets stay out of reach
//! whatever `allow:` says. Under compose v1 and v2.

use crate::common;

use common::*;
use std::ffi::OsStr;
use std::path::Path;

/// One stack asking for one power: the `web` service's extra keys, the
/// compose file's top-level keys, `stack.yaml`'s extra lines (`env:`
/// values the compose file interpolates), the power and field refused.
struct Case {
    name: &'static str,
    service: String,
    top: String,
    extra: &'static str,
    power: &'static str,
    field: &'static str,
}

fn case(name: &'static str, service: &str, power: &'static str, field: &'static str) -> Case {
    Case {
        name,
        service: service.to_string(),
        top: String::new(),
        extra: "",
        power,
        field,
    }
}

fn cases(outside: &Path) -> Vec<Case> {
    let o = outside.display();
    vec![
        // Interpolated: the raw file shows a variable; compose's model the
        // power. The values come from `env:` (the release's .env) or from
        // the `:-` default.
        Case {
            extra: "  PRIV: \"true\"\n",
            ..case(
                "privileged",
                "    privileged: ${PRIV}\n",
                "privileged",
                "services.web.privileged",
            )
        },
        Case {
            extra: "  PIDMODE: host\n",
            ..case(
                "pid",
                "    pid: ${PIDMODE}\n",
                "host_namespace",
                "services.web.pid",
            )
        },
        Case {
            extra: "  CAP: SYS_ADMIN\n",
            ..case(
                "cap",
                "    cap_add: [\"${CAP}\"]\n",
                "cap_sys_admin",
                "services.web.cap_add[0]",
            )
        },
        case(
            "userns",
            "    userns_mode: ${U:-host}\n",
            "host_namespace",
            "services.web.userns_mode",
        ),
        Case {
            extra: "  SRC: /var/run\n",
            ..case(
                "socket",
                "    volumes: [\"${SRC}/docker.sock:/s:ro\"]\n",
                "docker_socket",
                "services.web.volumes[0]",
            )
        },
        // A named volume that is a bind of a host directory.
        Case {
            top: format!(
                "volumes:\n  hostdir: {{driver_opts: {{type: none, o: bind, device: {o}}}}}\n"
            ),
            ..case(
                "namedbind",
                "    volumes: [\"hostdir:/host\"]\n",
                "host_bind_writable",
                "volumes.hostdir.driver_opts.device",
            )
        },
        // Keys a deny-list never named, and reading the host.
        case(
            "devices",
            "    devices: [\"/dev/null:/dev/x\"]\n",
            "devices",
            "services.web.devices",
        ),
        case(
            "seccomp",
            "    security_opt: [seccomp=unconfined]\n",
            "unconfined",
            "services.web.security_opt[0]",
        ),
        case(
            "sysctl",
            "    sysctls: {kernel.msgmax: 65536}\n",
            "sysctls",
            "services.web.sysctls.kernel.msgmax",
        ),
        case(
            "caps",
            "    cap_add: [SYS_PTRACE]\n",
            "cap_sys_ptrace",
            "services.web.cap_add[0]",
        ),
        case(
            "robind",
            &format!("    volumes: [\"{o}:/h:ro\"]\n"),
            "host_bind_read",
            "services.web.volumes[0]",
        ),
        Case {
            top: format!("configs:\n  c: {{file: {o}/c.conf}}\n"),
            ..case(
                "config",
                "    configs: [c]\n",
                "host_file",
                "configs.c.file",
            )
        },
    ]
}

fn sync(h: &TestHost, flavour: Flavour, cfg: &Path) -> Output {
    let mut c = h.cmd([OsStr::new("--config"), cfg.as_os_str(), OsStr::new("sync")]);
    if flavour == Flavour::V2 {
        c.env("DOCKER_CONFIG", &Fixtures::require().compose_v2_config);
    }
    c.run()
}

fn line_of(out: &Output, stack: &str) -> String {
    out.stdout()
        .lines()
        .filter(|l| l.contains(stack))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The fixture app as stack `s`; `c.extra` lands right after `env:`'s
/// PORT line, inside `env:`.
fn write(h: &TestHost, f: &Fixtures, s: &str, port: u16, version: &str, c: &Case) {
    StackFixture::new(s, &f.v1, port, version)
        .without_site_conf()
        .extra(c.extra)
        .service(&c.service)
        .top_level(&c.top)
        .write(h);
}

fn powers_judged_on_what_compose_runs(flavour: Flavour) {
    let h = TestHost::new();
    let f = Fixtures::require();
    let outside = h.tmp().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("c.conf"), "x\n").unwrap();
    let cfg = h.config(
        "host.yaml",
        &format!("compose: \"{}\"\n", flavour.setting()),
    );
    let plain_case = case("plain", "", "", "");

    // `privileged` first runs a clean release, which it must keep.
    let plain = h.stack("plain");
    let plain_port = h.free_port();
    let kept = h.stack("privileged");
    let kept_port = h.free_port();
    write(&h, &f, &plain, plain_port, "v1", &plain_case);
    write(&h, &f, &kept, kept_port, "v1", &plain_case);
    h.commit("two plain stacks");
    sync(&h, flavour, &cfg).ok();
    h.serves(kept_port, "stackpin-test-app v1");

    let mut stacks = Vec::new();
    for c in cases(&outside) {
        let s = if c.name == "privileged" {
            kept.clone()
        } else {
            h.stack(c.name)
        };
        let port = if c.name == "privileged" {
            kept_port
        } else {
            h.free_port()
        };
        write(&h, &f, &s, port, "v2", &c);
        stacks.push((s, port, c));
    }
    StackFixture::new(&plain, &f.v2, plain_port, "v2")
        .without_site_conf()
        .write(&h);
    h.commit("every class of host power; plain to v2");

    let out = sync(&h, flavour, &cfg).code(1);
    for (s, _, c) in &stacks {
        let line = line_of(&out, s);
        assert!(
            line.contains("refused by this host")
                && line.contains(&format!("stacks/{s}/compose.yaml"))
                && line.contains(&format!("{}:", c.field))
                && line.contains(&format!("power `{}`", c.power))
                && line.contains(&format!("allow: [{{stacks: [{s}], powers: [{}]", c.power)),
            "{}: want {} at {}:\n{line}\n{}",
            c.name,
            c.power,
            c.field,
            out.report()
        );
        if *s == kept {
            assert_eq!(
                h.current_version(s),
                "v1",
                "the refused stack keeps its release"
            );
            h.serves(kept_port, "stackpin-test-app v1");
        } else {
            assert!(
                h.containers(s).is_empty(),
                "{}: a container was created",
                c.name
            );
            assert!(h.link_target(s).is_none(), "{}: it was switched", c.name);
        }
    }
    // Nothing the engine ran has the powers: the one container of `kept`
    // is its clean v1.
    let kept_containers = h.containers(&kept);
    assert_eq!(kept_containers.len(), 1);
    let inspect = h
        .docker(["container", "inspect", &kept_containers[0].id])
        .run()
        .ok()
        .json();
    assert_eq!(inspect[0]["HostConfig"]["Privileged"], false);
    h.serves(plain_port, "stackpin-test-app v2");
    // Refused once in history, not at every run.
    sync(&h, flavour, &cfg).code(1);
    let history = h.history();
    let blocked = history
        .lines()
        .filter(|l| l.contains(&kept) && l.contains("refused"))
        .count();
    assert_eq!(blocked, 1, "{history}");

    // The host's operator grants three of them, each for its stack, with
    // a reason: they run, with the power. (Not `privileged`: a sandboxed
    // engine may be unable to start such a container at all.)
    let grant = |c: &str| {
        let (s, _, case) = stacks.iter().find(|(_, _, x)| x.name == c).unwrap();
        format!(
            "  - {{stacks: [{s}], powers: [{}], reason: \"the test grants it\"}}\n",
            case.power
        )
    };
    let granted = h.config_with_grants(
        "granted.yaml",
        &format!("compose: \"{}\"\n", flavour.setting()),
        &format!("{}{}{}", grant("devices"), grant("cap"), grant("robind")),
    );
    let out = sync(&h, flavour, &granted);
    for (s, port, c) in &stacks {
        let line = line_of(&out, s);
        let inspect = || {
            let cs = h.containers(s);
            assert_eq!(cs.len(), 1, "{}: {}", c.name, out.report());
            h.docker(["container", "inspect", &cs[0].id])
                .run()
                .ok()
                .json()
        };
        match c.name {
            "devices" => {
                h.serves(*port, "stackpin-test-app v1");
                let devices = inspect()[0]["HostConfig"]["Devices"].to_string();
                assert!(devices.contains("/dev/x"), "{devices}");
            }
            "cap" => {
                let cap = inspect()[0]["HostConfig"]["CapAdd"].to_string();
                assert!(cap.contains("SYS_ADMIN"), "{cap}");
            }
            "robind" => {
                let mounts = inspect()[0]["Mounts"].to_string();
                assert!(mounts.contains(&*outside.to_string_lossy()), "{mounts}");
            }
            _ => {
                assert!(line.contains("refused by this host"), "{}: {line}", c.name);
                if *s == kept {
                    assert_eq!(h.current_version(s), "v1");
                } else {
                    assert!(h.containers(s).is_empty(), "{}: {line}", c.name);
                }
            }
        }
    }
}

#[test]
fn host_powers_under_compose_v1() {
    powers_judged_on_what_compose_runs(Flavour::V1);
}

#[test]
fn host_powers_under_compose_v2() {
    powers_judged_on_what_compose_runs(Flavour::V2);
}

/// The host's own secrets (here its state directory) cannot be mounted,
/// read-only and granted `host_bind_read` included; a symlink in the
/// release that leads there does not open it either.
#[test]
fn the_hosts_secrets_stay_out_of_reach_whatever_allow_says() {
    let h = TestHost::new();
    let f = Fixtures::require();
    let s = h.stack("thief");
    let port = h.free_port();
    StackFixture::new(&s, &f.v1, port, "v1")
        .without_site_conf()
        .service(&format!(
            "    volumes: [\"{}:/stolen:ro\"]\n",
            h.state_dir().display()
        ))
        .write(&h);
    h.commit("mount the host's state");
    let cfg = h.config_with_grants(
        "host.yaml",
        "",
        &format!(
            "  - {{stacks: [{s}], powers: [host_bind_read], reason: \"the test grants it\"}}\n"
        ),
    );
    let out = h
        .cmd([OsStr::new("--config"), cfg.as_os_str(), OsStr::new("sync")])
        .run()
        .code(1);
    let line = line_of(&out, &s);
    assert!(
        line.contains("stackpin's state directory")
            && line.contains("no container may read")
            && line.contains("services.web.volumes[0]"),
        "{}",
        out.report()
    );
    assert!(h.containers(&s).is_empty());
}
