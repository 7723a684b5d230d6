//! Inputs found by `scripts/fuzz.sh`, kept as regression tests (one per
//! finding, named after it). Each input is split like the fuzz target splits
//! it and the invariant it broke is checked.

use stackpin::desired::{self, MemTree};

fn load_split(data: &[u8]) -> desired::DesiredState {
    let mut parts = data.splitn(3, |b| *b == 0);
    let mut t = MemTree::default();
    t.0.insert(
        "stacks/fz/stack.yaml".into(),
        parts.next().unwrap_or_default().to_vec(),
    );
    t.0.insert(
        "stacks/fz/compose.yaml".into(),
        parts.next().unwrap_or_default().to_vec(),
    );
    t.0.insert("stacks/fz/config/a.conf".into(), b"x".to_vec());
    if let Some(v) = parts.next() {
        t.0.insert("verified/fz.yaml".into(), v.to_vec());
    }
    desired::load(&t)
}

/// desired_load, first finding: a malformed `verified/fz.yaml` next to a
/// valid stack. The finding belongs to the repository, names the verified
/// file, and must not set the stack aside (the fuzz target's own invariant
/// was wrong; the product was right — kept so it stays right).
#[test]
fn a_bad_verified_file_does_not_invalidate_its_stack() {
    let data = include_bytes!("fuzz_regressions/desired_load-verified-file-error.bin");
    let st = load_split(data);
    assert!(st.stacks.contains_key("fz"), "{:#?}", st.findings);
    let errs: Vec<_> = st.errors().collect();
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].file, "verified/fz.yaml");
    assert!(
        errs[0].message.contains("unknown field `services`"),
        "{}",
        errs[0].message
    );
    assert_eq!(errs[0].stack, None);
}
