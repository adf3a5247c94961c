//! The user's own edit requests: JSON lines, one [`EditRequest`] object per line — `subject`,
//! `prompt` (containing the subject, or `{}` in its place), `target` (no leading space),
//! optional `ground_truth`, `paraphrases` (strings) and `neighbors` (strings or `{prompt,
//! answer}`) — exactly as `edit::request::read_jsonl` reads them. Two case-level keys are also
//! accepted on a line: `portability` (a list of `[question, answer]` pairs) and
//! `generation_prompts` (strings). Each line becomes one case with origin `<file name>:<line>`.
//!
//! Unlike `read_jsonl`, lines are decoded one by one, so a line with non-UTF-8 bytes is reported
//! (`file:line: not UTF-8 …`) and skipped like any other bad line instead of failing the file.
//! Blank lines and lines starting with `//` are ignored; a UTF-8 byte-order mark is dropped.

use serde_json::Value;

use super::{checked, EvalCase, Position, Sink};
use crate::edit::EditRequest;
use crate::error::Result;

/// Reads every line of `bytes` into `sink`, stopping when it is full.
pub(crate) fn read(bytes: &[u8], sink: &mut Sink) -> Result<()> {
    let bytes = super::without_bom(bytes);
    let name = sink.file_name();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        if sink.is_full() {
            break;
        }
        let line_no = i + 1;
        let parsed = match std::str::from_utf8(raw) {
            Ok(line) => {
                let line = line.trim();
                if line.is_empty() || line.starts_with("//") {
                    continue;
                }
                parse_line(line, format!("{name}:{line_no}"))
            }
            Err(e) => Err(format!(
                "not UTF-8 text (invalid byte at column {})",
                e.valid_up_to() + 1
            )),
        };
        sink.add(Position::Line(line_no), parsed)?;
    }
    Ok(())
}

/// One line: an edit request plus the optional case-level keys.
fn parse_line(line: &str, origin: String) -> std::result::Result<EvalCase, String> {
    let mut value: Value = serde_json::from_str(line).map_err(|e| {
        // serde_json appends " at line 1 column N"; on a single line only the column matters.
        let msg = e.to_string();
        let msg = msg
            .rsplit_once(" at line ")
            .map_or(msg.as_str(), |(m, _)| m);
        format!("invalid JSON at column {}: {msg}", e.column())
    })?;
    let Value::Object(map) = &mut value else {
        return Err(format!(
            "the line is {}, expected an object",
            super::fields::type_name(&value)
        ));
    };
    let portability = match map.remove("portability") {
        None | Some(Value::Null) => vec![],
        Some(v) => serde_json::from_value::<Vec<(String, String)>>(v)
            .map_err(|e| format!("field `portability` must be [question, answer] pairs: {e}"))?,
    };
    let generation_prompts = match map.remove("generation_prompts") {
        None | Some(Value::Null) => vec![],
        Some(v) => serde_json::from_value::<Vec<String>>(v)
            .map_err(|e| format!("field `generation_prompts` must be strings: {e}"))?,
    };
    let request: EditRequest = serde_json::from_value(value).map_err(|e| e.to_string())?;
    Ok(EvalCase {
        portability,
        generation_prompts,
        ..EvalCase::single(checked(request)?, origin)
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::fixture;
    use super::super::{load, DatasetKind};
    use crate::edit::request::Probe;

    const GOOD: &str = r#"{"subject": "Eiffel Tower", "prompt": "The Eiffel Tower is in", "target": "Rome", "ground_truth": "Paris", "paraphrases": ["Where is the Eiffel Tower? It is in"], "neighbors": ["The Louvre is in", {"prompt": "Big Ben is in", "answer": "London"}], "portability": [["Which river flows through the Eiffel Tower's city?", "Tiber"]]}"#;

    #[test]
    fn reads_requests_and_case_level_keys() {
        let text = format!("// my edits\n\n{GOOD}\r\n{{\"subject\": \"X\", \"prompt\": \"{{}} is\", \"target\": \"y\", \"generation_prompts\": [\"X\"]}}\n");
        let (_d, p) = fixture("mine.jsonl", text.as_bytes());
        let l = load(&p, None, true, None).unwrap();
        assert_eq!(l.kind, DatasetKind::UserJsonl);
        assert_eq!(l.cases.len(), 2);
        let c = &l.cases[0];
        assert_eq!(c.origin, "mine.jsonl:3");
        let r = &c.requests[0];
        assert_eq!(
            (r.subject.as_str(), r.target.as_str()),
            ("Eiffel Tower", "Rome")
        );
        assert_eq!(r.ground_truth.as_deref(), Some("Paris"));
        assert_eq!(
            r.neighbors[0],
            Probe {
                prompt: "The Louvre is in".into(),
                answer: None
            }
        );
        assert_eq!(r.neighbors[1].answer.as_deref(), Some("London"));
        assert_eq!(c.portability[0].1, "Tiber");
        assert_eq!(l.cases[1].origin, "mine.jsonl:4");
        assert_eq!(l.cases[1].generation_prompts, vec!["X".to_string()]);
    }

    #[test]
    fn bad_lines_are_reported_by_line_and_skipped_or_fatal_when_strict() {
        let mut bytes = Vec::new();
        let lines: [&[u8]; 8] = [
            GOOD.as_bytes(),
            br#"{"subject": "A", "prompt": "A is", "target": "  "}"#,
            br#"{"subject": "Louvre", "prompt": "The Eiffel Tower is in", "target": "Rome"}"#,
            br#"{"subject": "A", "prompt": "A is"}"#,
            br#"{"subject": 3, "prompt": "A is", "target": "b"}"#,
            br#"{"subject": "A", "prompt": "A is", "target": "b""#,
            b"{\"subject\": \"A\", \"prompt\": \"A is\", \"target\": \"b\xff\"}",
            br#"["A", "A is", "b"]"#,
        ];
        for l in lines {
            bytes.extend_from_slice(l);
            bytes.push(b'\n');
        }
        let (_d, p) = fixture("e.jsonl", &bytes);
        let l = load(&p, None, false, None).unwrap();
        assert_eq!(l.cases.len(), 1);
        let expect = [
            "e.jsonl:2: the target is empty",
            "e.jsonl:3: the prompt \"The Eiffel Tower is in\" does not contain the subject \"Louvre\"",
            "e.jsonl:4: missing field `target`",
            "e.jsonl:5: invalid type: integer `3`, expected a string",
            "e.jsonl:6: invalid JSON at column",
            "e.jsonl:7: not UTF-8 text (invalid byte at column",
            "e.jsonl:8: the line is a list, expected an object",
        ];
        assert_eq!(l.skipped.len(), expect.len(), "{:#?}", l.skipped);
        for (got, want) in l.skipped.iter().zip(expect) {
            assert!(got.contains(want), "{got:?} should contain {want:?}");
        }
        let e = load(&p, None, true, None).unwrap_err().to_string();
        assert!(e.contains("e.jsonl:2: the target is empty"), "{e}");
    }

    #[test]
    fn unknown_keys_and_malformed_case_keys_are_reported() {
        let text = r#"{"subject": "A", "prompt": "A is", "target": "b", "oops": 1}
{"subject": "A", "prompt": "A is", "target": "b", "portability": ["q"]}
{"subject": "A", "prompt": "A is", "target": "b"}"#;
        let (_d, p) = fixture("k.jsonl", text.as_bytes());
        let l = load(&p, None, false, None).unwrap();
        assert_eq!(l.cases.len(), 1);
        assert!(
            l.skipped[0].contains("k.jsonl:1: unknown field `oops`"),
            "{:?}",
            l.skipped
        );
        assert!(
            l.skipped[1].contains("k.jsonl:2: field `portability`"),
            "{:?}",
            l.skipped
        );
    }

    #[test]
    fn limit_stops_reading_lines() {
        let text = format!("{GOOD}\n{GOOD}\nnot json\n");
        let (_d, p) = fixture("l.jsonl", text.as_bytes());
        let l = load(&p, None, true, Some(2)).unwrap();
        assert_eq!((l.cases.len(), l.skipped.len()), (2, 0));
        assert_eq!(load(&p, None, false, None).unwrap().skipped.len(), 1);
    }
}
