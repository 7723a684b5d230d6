//! The allowed_signers parser: never panics on any text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stackpin::trust::allowed_signers::AllowedSigners;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(a) = AllowedSigners::parse(text) {
        for e in a.entries() {
            assert!(!e.principals.is_empty());
            let _ = e.validity_at(chrono_now());
        }
    }
});

fn chrono_now() -> stackpin_chrono::DateTime<stackpin_chrono::Utc> {
    stackpin_chrono::Utc::now()
}
use chrono as stackpin_chrono;
