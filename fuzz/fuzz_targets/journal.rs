//! The session journal parser must never panic, whatever the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = d4s::session::journal::parse_journal(data, "fuzz");
});
