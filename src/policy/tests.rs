use super::*;
use crate::config::{FileConfig, PolicyRule, TrustConfig};

fn rule(stacks: &[&str], signed_by: Option<&str>, promote: Option<&str>) -> PolicyRule {
    PolicyRule {
        stacks: stacks.iter().map(|s| s.to_string()).collect(),
        signed_by: signed_by.map(String::from),
        promote_from: promote.map(PromoteFrom::stack),
        break_glass_by: None,
    }
}

fn policy(rules: Vec<PolicyRule>) -> HostPolicy {
    HostPolicy {
        rules,
        ..HostPolicy::default()
    }
}

#[test]
fn every_matching_rule_applies_and_the_first_gate_wins() {
    let p = policy(vec![
        rule(&["*"], Some("ops"), None),
        rule(
            &["odoo18-prod*", "!odoo18-prod-sandbox"],
            Some("approvers"),
            Some("odoo18-staging"),
        ),
        rule(&["odoo18-production"], None, Some("other")),
    ]);
    let e = p.effective("odoo18-production");
    assert_eq!(e.signed_by, ["ops", "approvers"]);
    assert_eq!(e.break_glass_by, ["ops", "approvers"]);
    assert_eq!(e.promote_from, Some(PromoteFrom::stack("odoo18-staging")));
    assert_eq!(e.rules, [0, 1, 2]);
    assert!(e.protects());

    let sandbox = p.effective("odoo18-prod-sandbox");
    assert_eq!(sandbox.signed_by, ["ops"], "a negated pattern excludes");
    assert_eq!(sandbox.promote_from, None);
}

#[test]
fn a_stack_no_rule_names_is_not_protected() {
    let p = policy(vec![rule(&["prod-*"], Some("approvers"), None)]);
    let e = p.effective("staging-web");
    assert!(!e.protects());
    assert!(e.rules.is_empty());
    // Case matters: stack names are directory names.
    assert!(!p.effective("PROD-web").protects());
}

#[test]
fn break_glass_by_overrides_signed_by() {
    let mut r = rule(&["prod"], Some("developers"), Some("stg"));
    r.break_glass_by = Some("approvers".into());
    let e = policy(vec![r]).effective("prod");
    assert_eq!(e.signed_by, ["developers"]);
    assert_eq!(e.break_glass_by, ["approvers"]);
}

#[test]
fn load_refuses_undefined_sets_and_empty_rules_by_field() {
    let file = FileConfig {
        policy: vec![rule(&["prod"], Some("approvers"), None)],
        ..FileConfig::default()
    };
    let err = HostPolicy::load(&file).unwrap_err().to_string();
    assert!(
        err.contains("policy[0].signed_by names signer set `approvers`"),
        "{err}"
    );
    assert!(err.contains("add it under `signers:`"), "{err}");

    let file = FileConfig {
        policy: vec![rule(&[], None, Some("stg"))],
        ..FileConfig::default()
    };
    let err = HostPolicy::load(&file).unwrap_err().to_string();
    assert!(err.contains("policy[0].stacks is empty"), "{err}");

    let file = FileConfig {
        verifiers: [("stg".to_string(), "staging-hosts".to_string())].into(),
        ..FileConfig::default()
    };
    let err = HostPolicy::load(&file).unwrap_err().to_string();
    assert!(
        err.contains("verifiers.stg names signer set `staging-hosts`"),
        "{err}"
    );

    let file = FileConfig {
        signers: [(
            "approvers".to_string(),
            TrustConfig {
                allowed_signers: Some("/nonexistent/allowed_signers".into()),
                openpgp_keys: vec![],
            },
        )]
        .into(),
        ..FileConfig::default()
    };
    let err = HostPolicy::load(&file).unwrap_err().to_string();
    assert!(
        err.contains("`approvers`") && err.contains("/nonexistent/allowed_signers"),
        "{err}"
    );
}

#[test]
fn verifiers_are_found_by_source_pattern() {
    let mut p = policy(vec![]);
    p.signers
        .insert("stg-hosts".into(), crate::trust::Policy::default());
    p.verifiers = vec![("*-staging".into(), "stg-hosts".into())];
    assert_eq!(
        p.verifiers_of("odoo18-staging").map(|v| v.0),
        Some("stg-hosts")
    );
    assert!(p.verifiers_of("odoo18-production").is_none());
}

fn stack_with(compose: &str, extra: &str) -> crate::desired::Stack {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("stacks/edge");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("stack.yaml"),
        format!(
            "images: {{web: \"app@sha256:{}\"}}\n{extra}",
            "a".repeat(64)
        ),
    )
    .unwrap();
    std::fs::write(d.join("compose.yaml"), compose).unwrap();
    let st = crate::desired::load(&crate::desired::DirTree::new(dir.path()));
    st.stacks
        .get("edge")
        .cloned()
        .unwrap_or_else(|| panic!("{:#?}", st.findings))
}

#[test]
fn host_powers_are_refused_unless_allowed_for_the_stack() {
    let s = stack_with(
        "services:\n  web:\n    image: app\n    volumes: [\"/var/run/docker.sock:/var/run/docker.sock:ro\"]\n",
        "env_files: [/etc/stackpin/secrets/edge.env, /root/.ssh/id_ed25519]\n",
    );
    let mut p = policy(vec![]);
    p.secret_dirs = Some(vec!["/etc/stackpin/secrets".into()]);
    let r = p.refusals(&s);
    assert_eq!(r.len(), 2, "{r:#?}");
    assert!(
        r[0].starts_with("stacks/edge/compose.yaml: services.web.volumes[0]:"),
        "{}",
        r[0]
    );
    assert!(r[0].contains("power `docker_socket`"), "{}", r[0]);
    assert!(
        r[1].contains("env_files[1]: /root/.ssh/id_ed25519 is outside"),
        "{}",
        r[1]
    );

    p.allow = vec![crate::config::AllowRule {
        stacks: vec!["edge*".into()],
        powers: vec!["docker_socket".into()],
        reason: "reads labels".into(),
    }];
    assert_eq!(
        p.refusals(&s).len(),
        1,
        "the allowed power is no longer refused"
    );
    // `..` cannot climb out of a secret directory.
    let s = stack_with(
        "services:\n  web: {image: app}\n",
        "env_files: [/etc/stackpin/secrets/../../shadow]\n",
    );
    assert_eq!(p.refusals(&s).len(), 1);
}

#[test]
fn allow_rules_need_stacks_a_known_power_and_a_reason() {
    let mk = |powers: &[&str], reason: &str| FileConfig {
        allow: vec![crate::config::AllowRule {
            stacks: vec!["edge".into()],
            powers: powers.iter().map(|s| s.to_string()).collect(),
            reason: reason.into(),
        }],
        ..FileConfig::default()
    };
    let e = HostPolicy::load(&mk(&["root"], "x"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown power `root`"), "{e}");
    let e = HostPolicy::load(&mk(&["privileged"], " "))
        .unwrap_err()
        .to_string();
    assert!(e.contains("reason is empty"), "{e}");
    let p = HostPolicy::load(&mk(&["privileged"], "x")).unwrap();
    assert_eq!(p.secret_dirs, Some(vec![DEFAULT_SECRET_DIR.into()]));
}
