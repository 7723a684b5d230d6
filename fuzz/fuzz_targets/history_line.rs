//! The history line parser: never panics, and what it parses formats back to
//! a line that parses to the same entry.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stackpin::history::Entry;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(e) = Entry::parse(line) {
        let again = Entry::parse(&e.format()).expect("a formatted entry must parse");
        assert_eq!(again, e);
    }
});
