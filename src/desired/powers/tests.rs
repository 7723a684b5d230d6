use super::*;

/// Every finding of a raw service `web` (plus `other`, a second service
/// for `service:` references) as `kind@field`, `forbidden@field`,
/// `unknown@field` or `interpolated@field`.
fn found_in(yaml: &str, resolved: bool, protected: &[(PathBuf, String)]) -> Vec<String> {
    let value: Value = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
    let j = judge(&Model {
        value: &value,
        base: Path::new("/srv/releases/stacks/s/r1"),
        resolved,
        resolve: &|p| p.to_path_buf(),
        protected,
    });
    let mut out: Vec<String> = j
        .powers
        .iter()
        .map(|p| format!("{}@{}", p.kind, p.field))
        .collect();
    out.extend(j.forbidden.iter().map(|(f, _)| format!("forbidden@{f}")));
    out.extend(j.unknown.iter().map(|f| format!("unknown@{f}")));
    out.extend(j.interpolated.iter().map(|f| format!("interpolated@{f}")));
    out
}

fn service(body: &str) -> String {
    format!("services:\n  other: {{image: app}}\n  web:\n    image: app\n{body}")
}

const W: &str = "services.web";

#[test]
fn every_power_literal_is_found_by_name() {
    // (the service's extra lines, what must be found)
    let table: &[(&str, &[&str])] = &[
        (
            "    privileged: true\n",
            &["privileged@services.web.privileged"],
        ),
        (
            "    privileged: \"yes\"\n",
            &["privileged@services.web.privileged"],
        ),
        ("    pid: host\n", &["host_namespace@services.web.pid"]),
        ("    ipc: host\n", &["host_namespace@services.web.ipc"]),
        ("    uts: host\n", &["host_namespace@services.web.uts"]),
        (
            "    userns_mode: host\n",
            &["host_namespace@services.web.userns_mode"],
        ),
        (
            "    cgroup: host\n",
            &["host_namespace@services.web.cgroup"],
        ),
        (
            "    cgroup_parent: /\n",
            &["host_namespace@services.web.cgroup_parent"],
        ),
        (
            "    network_mode: host\n",
            &["host_network@services.web.network_mode"],
        ),
        (
            "    network_mode: container:db\n",
            &["other_container@services.web.network_mode"],
        ),
        (
            "    pid: container:db\n",
            &["other_container@services.web.pid"],
        ),
        (
            "    ipc: container:db\n",
            &["other_container@services.web.ipc"],
        ),
        (
            "    network_mode: service:ghost\n",
            &["other_container@services.web.network_mode"],
        ),
        (
            "    volumes_from: [container:db]\n",
            &["other_container@services.web.volumes_from[0]"],
        ),
        (
            "    volumes_from: [\"db:ro\"]\n",
            &["other_container@services.web.volumes_from[0]"],
        ),
        (
            "    cap_add: [SYS_ADMIN]\n",
            &["cap_sys_admin@services.web.cap_add[0]"],
        ),
        (
            "    cap_add: [CAP_SYS_MODULE]\n",
            &["cap_sys_module@services.web.cap_add[0]"],
        ),
        ("    cap_add: [ALL]\n", &["cap_all@services.web.cap_add[0]"]),
        (
            "    cap_add: [SYS_PTRACE, DAC_READ_SEARCH, SYS_RAWIO, NET_ADMIN, NET_RAW]\n",
            &[
                "cap_sys_ptrace@services.web.cap_add[0]",
                "cap_dac_read_search@services.web.cap_add[1]",
                "cap_sys_rawio@services.web.cap_add[2]",
                "cap_net_admin@services.web.cap_add[3]",
                "cap_net_raw@services.web.cap_add[4]",
            ],
        ),
        (
            "    devices: [\"/dev/sda:/dev/sda\"]\n",
            &["devices@services.web.devices"],
        ),
        (
            "    device_cgroup_rules: [\"c 1:3 mr\"]\n",
            &["devices@services.web.device_cgroup_rules"],
        ),
        ("    gpus: all\n", &["devices@services.web.gpus"]),
        (
            "    deploy: {resources: {reservations: {devices: [{capabilities: [gpu]}]}}}\n",
            &["devices@services.web.deploy.resources.reservations.devices"],
        ),
        (
            "    security_opt: [seccomp=unconfined]\n",
            &["unconfined@services.web.security_opt[0]"],
        ),
        (
            "    security_opt: [\"apparmor:unconfined\"]\n",
            &["unconfined@services.web.security_opt[0]"],
        ),
        (
            "    security_opt: [label=disable]\n",
            &["unconfined@services.web.security_opt[0]"],
        ),
        (
            "    security_opt: [systempaths=unconfined]\n",
            &["unconfined@services.web.security_opt[0]"],
        ),
        (
            "    sysctls: {kernel.core_pattern: x}\n",
            &["sysctls@services.web.sysctls.kernel.core_pattern"],
        ),
        (
            "    sysctls: [\"net.ipv4.ip_forward=1\"]\n",
            &["sysctls@services.web.sysctls[0]"],
        ),
        (
            "    volumes: [\"/:/host:ro\"]\n",
            &["docker_socket@services.web.volumes[0]"],
        ),
        (
            "    volumes: [\"/etc/ssl/certs:/certs:ro\"]\n",
            &["host_bind_read@services.web.volumes[0]"],
        ),
        (
            "    volumes: [\"~/.ssh:/k:ro\"]\n",
            &["host_bind_read@services.web.volumes[0]"],
        ),
        (
            "    volumes: [\"/srv/data:/data\"]\n",
            &["host_bind_writable@services.web.volumes[0]"],
        ),
        (
            "    volumes: [\"../../x:/x:ro\"]\n",
            &["host_bind_read@services.web.volumes[0]"],
        ),
        (
            "    volumes: [\"./data:/data\"]\n",
            &["host_bind_writable@services.web.volumes[0]"],
        ),
        (
            "    volumes: [{type: bind, source: /srv, target: /srv, read_only: true}]\n",
            &["host_bind_read@services.web.volumes[0]"],
        ),
        (
            "    volumes: [\"/var/run/docker.sock:/var/run/docker.sock:ro\"]\n",
            &["docker_socket@services.web.volumes[0]"],
        ),
        (
            "    volumes: [\"/run:/run\"]\n",
            &["docker_socket@services.web.volumes[0]"],
        ),
        (
            "    use_api_socket: true\n",
            &["docker_socket@services.web.use_api_socket"],
        ),
        (
            "    env_file: /etc/shadow\n",
            &["host_file@services.web.env_file"],
        ),
        (
            "    env_file: [{path: ../../../etc/x, required: false}]\n",
            &["host_file@services.web.env_file[0]"],
        ),
        (
            "    label_file: /etc/labels\n",
            &["host_file@services.web.label_file"],
        ),
        ("    runtime: nvidia\n", &["runtime@services.web.runtime"]),
        (
            "    post_start: [{command: id, privileged: true}]\n",
            &["privileged@services.web.post_start[0].privileged"],
        ),
        (
            "    enviroment: {A: b}\n",
            &["unknown@services.web.enviroment"],
        ),
        (
            "    provider: {type: x}\n",
            &["unknown@services.web.provider"],
        ),
    ];
    for (body, want) in table {
        let got = found_in(&service(body), false, &[]);
        assert_eq!(&got, want, "{body}");
        // Every power found is one an `allow:` rule can name.
        for g in &got {
            let kind = g.split('@').next().unwrap();
            assert!(
                kind == "unknown" || is_known(kind),
                "{kind} is not a known power"
            );
        }
    }
}

#[test]
fn top_level_definitions_that_reach_the_host() {
    let table: &[(&str, &[&str])] = &[
        (
            "volumes:\n  hostroot: {driver_opts: {type: none, o: bind, device: /}}\n",
            &["docker_socket@volumes.hostroot.driver_opts.device"],
        ),
        (
            "volumes:\n  etc: {driver_opts: {type: none, o: \"bind,ro\", device: /etc}}\n",
            &["host_bind_read@volumes.etc.driver_opts.device"],
        ),
        (
            "volumes:\n  n: {driver_opts: {type: nfs, o: \"addr=10.0.0.1\", device: \":/x\"}}\n",
            &["volume_driver@volumes.n.driver_opts"],
        ),
        (
            "volumes:\n  p: {driver: rexray}\n",
            &["volume_driver@volumes.p.driver"],
        ),
        (
            "configs:\n  c: {file: /etc/passwd}\n",
            &["host_file@configs.c.file"],
        ),
        (
            "secrets:\n  s: {file: ../../k}\n",
            &["host_file@secrets.s.file"],
        ),
        (
            "networks:\n  outside: {external: true, name: host}\n",
            &["host_network@networks.outside"],
        ),
        (
            "networks:\n  mac: {driver: macvlan}\n",
            &["host_network@networks.mac"],
        ),
    ];
    for (top, want) in table {
        let yaml = format!("services:\n  web: {{image: app}}\n{top}");
        assert_eq!(&found_in(&yaml, false, &[]), want, "{top}");
    }
}

#[test]
fn the_safe_forms_stay_accepted() {
    let safe = "    cap_add: [NET_BIND_SERVICE, CHOWN, CAP_SETUID]
    cap_drop: [ALL]
    read_only: true
    tmpfs: [/tmp]
    user: \"1000\"
    network_mode: service:other
    pid: service:other
    ipc: shareable
    volumes_from: [other]
    security_opt: [no-new-privileges:true, \"apparmor=docker-default\", \"label=level:s0:c100,c200\"]
    sysctls: {net.ipv4.ip_unprivileged_port_start: 0}
    runtime: runc
    privileged: false
    env_file: [./app.env, {path: ./opt.env, required: false}]
    volumes:
      - ./config/a.conf:/a.conf:ro
      - ./:/code:ro
      - .:/code2:ro
      - {type: bind, source: ./site, target: /site, read_only: true}
      - data:/data
      - /anonymous
      - {type: tmpfs, target: /run}
    x-anything: {privileged: true}
";
    let yaml = format!(
        "{}volumes:\n  data: {{}}\n  ram: {{driver_opts: {{type: tmpfs, device: tmpfs, o: size=10m}}}}\n  ext: {{external: true}}\nconfigs:\n  c: {{file: ./c.conf}}\n  e: {{environment: X}}\nsecrets:\n  s: {{file: ./s.txt}}\n",
        service(safe)
    );
    assert_eq!(found_in(&yaml, false, &[]), Vec::<String>::new());
}

#[test]
fn interpolated_values_are_left_to_compose_and_named() {
    for form in ["${V}", "${V:-host}", "$V", "${V-true}"] {
        let body = format!(
            "    privileged: \"{form}\"\n    pid: \"{form}\"\n    cap_add: [\"{form}\"]\n    userns_mode: \"{form}\"\n    security_opt: [\"{form}\"]\n    volumes: [\"{form}:/x:ro\"]\n"
        );
        let got = found_in(&service(&body), false, &[]);
        assert_eq!(
            got,
            [
                format!("interpolated@{W}.privileged"),
                format!("interpolated@{W}.pid"),
                format!("interpolated@{W}.cap_add[0]"),
                format!("interpolated@{W}.userns_mode"),
                format!("interpolated@{W}.security_opt[0]"),
                format!("interpolated@{W}.volumes[0]"),
            ],
            "{form}"
        );
    }
    // An env_file whose path is a variable: compose reads it before any
    // model shows it, so it is judged outside at once.
    assert_eq!(
        found_in(&service("    env_file: [\"${F}\"]\n"), false, &[]),
        [format!("host_file@{W}.env_file[0]")]
    );
    // `$$` is a literal dollar, not interpolation.
    assert_eq!(
        found_in(&service("    volumes: [\"./a$$b:/x:ro\"]\n"), false, &[]),
        Vec::<String>::new()
    );
}

#[test]
fn compose_resolved_models_are_judged_as_they_are() {
    // As `config --format json` prints it under v2: absolute paths, long
    // volume syntax, interpolated values.
    let v2 = r#"{"services": {"web": {"image": "app", "privileged": true, "pid": "host",
        "cap_add": ["SYS_ADMIN"], "command": null, "entrypoint": null,
        "networks": {"default": null},
        "volumes": [
          {"type": "bind", "source": "/srv/releases/stacks/s/r1/config", "target": "/c", "read_only": true, "bind": {"create_host_path": true}},
          {"type": "bind", "source": "/etc", "target": "/h", "read_only": true},
          {"type": "volume", "source": "data", "target": "/d", "volume": {}}]}},
      "volumes": {"data": {"name": "s_data"}},
      "secrets": {"s1": {"name": "s_s1", "file": "/srv/releases/stacks/s/r1/a.env"}},
      "name": "s"}"#;
    assert_eq!(
        found_in(v2, true, &[]),
        [
            format!("privileged@{W}.privileged"),
            format!("host_namespace@{W}.pid"),
            format!("cap_sys_admin@{W}.cap_add[0]"),
            format!("host_bind_read@{W}.volumes[1]"),
        ]
    );
    // As v1's `config` prints it: short syntax, absolute paths.
    let v1 = "services:\n  web:\n    image: app\n    volumes:\n    - /srv/releases/stacks/s/r1/config:/c:ro\n    - /etc:/h:ro\n    - data:/d:rw\nversion: '3.9'\n";
    assert_eq!(
        found_in(v1, true, &[]),
        [format!("host_bind_read@{W}.volumes[1]")]
    );
    // A resolved model has no interpolation left: `$` is literal.
    assert_eq!(
        found_in("services:\n  web: {image: app, pid: \"$X\"}\n", true, &[]),
        Vec::<String>::new()
    );
}

#[test]
fn anchors_are_judged_where_they_land() {
    let yaml = "x-evil: &evil\n  privileged: true\n  cap_add: [SYS_ADMIN]\nservices:\n  web:\n    <<: *evil\n    image: app\n";
    let got = found_in(yaml, false, &[]);
    assert_eq!(
        got,
        [
            format!("privileged@{W}.privileged"),
            format!("cap_sys_admin@{W}.cap_add[0]"),
        ]
    );
}

#[test]
fn the_hosts_secrets_are_forbidden_whatever_holds_them() {
    let protected = vec![
        (
            PathBuf::from("/etc/stackpin/keys/marker"),
            "the marker signing key".to_string(),
        ),
        (
            PathBuf::from("/var/lib/stackpin"),
            "stackpin's state directory".to_string(),
        ),
    ];
    for (body, field) in [
        (
            "    volumes: [\"/etc/stackpin/keys/marker:/k:ro\"]\n",
            "volumes[0]",
        ),
        ("    volumes: [\"/etc/stackpin:/k:ro\"]\n", "volumes[0]"),
        ("    volumes: [\"/:/host:ro\"]\n", "volumes[0]"),
        (
            "    volumes: [\"/var/lib/stackpin/history.log:/h:ro\"]\n",
            "volumes[0]",
        ),
        ("    env_file: /etc/stackpin/keys/marker\n", "env_file"),
    ] {
        assert_eq!(
            found_in(&service(body), false, &protected),
            [format!("forbidden@{W}.{field}")],
            "{body}"
        );
    }
    let got = found_in(
        "services:\n  web: {image: app}\nsecrets:\n  k: {file: /etc/stackpin/keys/marker}\n",
        true,
        &protected,
    );
    assert_eq!(got, ["forbidden@secrets.k.file"]);
}

#[test]
fn a_symlink_out_of_the_release_is_judged_where_it_leads() {
    let value: Value =
        serde_saphyr::from_str(&service("    volumes: [\"./config:/c:ro\"]\n")).unwrap();
    let resolve = |p: &Path| {
        if p.ends_with("config") {
            PathBuf::from("/etc/stackpin")
        } else {
            p.to_path_buf()
        }
    };
    let protected = vec![(
        PathBuf::from("/etc/stackpin"),
        "the host's config".to_string(),
    )];
    let j = judge(&Model {
        value: &value,
        base: Path::new("/srv/releases/stacks/s/r1"),
        resolved: true,
        resolve: &resolve,
        protected: &protected,
    });
    assert_eq!(j.forbidden.len(), 1, "{j:#?}");
    assert!(j.forbidden[0].1.contains("the host's config"), "{j:#?}");
}

#[test]
fn grantable_names() {
    for k in KINDS {
        assert!(is_known(k));
    }
    assert!(is_known("cap_sys_admin"));
    assert!(is_known("cap_all"));
    assert!(!is_known("cap_sys_admn"));
    assert!(!is_known("root"));
}
