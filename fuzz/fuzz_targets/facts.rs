//! The fact parsers (a JSONL line, the TUI's quick form) must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(r) = serde_json::from_str::<d4s::edit::EditRequest>(text) {
            let _ = r.validate();
            let _ = r.template();
            let _ = r.filled_prompt();
        }
        let _ = d4s::tui::app::parse_quick(text);
    }
});
