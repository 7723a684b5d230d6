//! stack.yaml + compose loading: the input is split at the first NUL into a
//! stack.yaml and a compose.yaml (and, after a second NUL, a verified file),
//! loaded from memory through the same code path as a real repository.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stackpin::desired::{self, MemTree};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == 0);
    let stack = parts.next().unwrap_or_default().to_vec();
    let compose = parts.next().unwrap_or_default().to_vec();
    let verified = parts.next().map(|v| v.to_vec());
    let mut t = MemTree::default();
    t.0.insert("stacks/fz/stack.yaml".into(), stack);
    t.0.insert("stacks/fz/compose.yaml".into(), compose);
    t.0.insert("stacks/fz/config/a.conf".into(), b"x".to_vec());
    if let Some(v) = verified {
        t.0.insert("verified/fz.yaml".into(), v);
    }
    let st = desired::load(&t);
    // Invariants: a stack is either valid or set aside, never both; every
    // error names a file.
    assert!(!(st.stacks.contains_key("fz") && st.invalid.contains("fz")));
    for f in &st.findings {
        assert!(!f.file.is_empty());
    }
    // A valid stack has no error of its own (a bad verified/ file is a
    // repository-level finding and does not invalidate the stack).
    if st.stacks.contains_key("fz") {
        assert!(st.errors().all(|f| f.stack.as_deref() != Some("fz")));
        let _ = st.order();
    }
});
