use super::*;

/// Writes `content` to a fresh file called `name` in a temporary directory.
pub(crate) fn fixture(name: &str, content: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    (dir, path)
}

const EASYEDIT: &str = r#"[
 {"case_id": 0, "prompt": "The mother tongue of Danielle Darrieux is", "target_new": "English",
  "subject": "Danielle Darrieux", "ground_truth": "French",
  "rephrase_prompt": "Where Danielle Darrieux is from, people speak the language of",
  "locality_prompt": "Michel Rocard is a native speaker of", "locality_ground_truth": "French"}
]"#;

#[test]
fn detects_each_format_from_the_first_record() {
    let cases = [
        (
            r#"[{"requested_rewrite": [], "questions": []}]"#,
            DatasetKind::Mquake,
        ),
        (
            r#"[{"requested_rewrite": {}}]"#,
            DatasetKind::CounterfactRome,
        ),
        (r#"[{"src": "q", "alt": "a"}]"#, DatasetKind::Zsre),
        (EASYEDIT, DatasetKind::CounterfactEasyEdit),
    ];
    for (text, kind) in cases {
        let list = parse_list(Path::new("x.json"), text.as_bytes()).unwrap();
        assert_eq!(
            detect_list(Path::new("x.json"), &list.records).unwrap(),
            kind
        );
    }
    let e = detect_list(Path::new("x.json"), &[serde_json::json!({"foo": 1})]).unwrap_err();
    assert!(e.to_string().contains("[foo]"), "{e}");
    assert_eq!(
        kind_from_extension_or_shape(Path::new("a.JSONL"), b"["),
        Some(DatasetKind::UserJsonl)
    );
    assert_eq!(
        kind_from_extension_or_shape(Path::new("a.json"), b"\n {\"subject\": 1}"),
        Some(DatasetKind::UserJsonl)
    );
    assert_eq!(
        kind_from_extension_or_shape(Path::new("a.json"), b" ["),
        None
    );
}

#[test]
fn load_detects_hashes_and_names_the_origin() {
    let (_d, p) = fixture("counterfact-edit.json", EASYEDIT.as_bytes());
    let l = load(&p, None, true, None).unwrap();
    assert_eq!(l.kind, DatasetKind::CounterfactEasyEdit);
    assert_eq!(l.sha256, crate::util::sha256_hex(EASYEDIT.as_bytes()));
    assert_eq!(l.cases.len(), 1);
    assert_eq!(l.cases[0].origin, "counterfact-edit.json#0");
    assert!(l.skipped.is_empty());
}

#[test]
fn invalid_json_in_a_list_names_the_record_in_both_modes() {
    let text = r#"[{"src": "When was X founded?", "alt": "1900"},
 {"src": "oops" "alt": 3}]"#;
    let (_d, p) = fixture("z.json", text.as_bytes());
    for strict in [false, true] {
        let e = load(&p, None, strict, None).unwrap_err().to_string();
        assert!(e.contains("z.json#1: invalid JSON"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }
}

#[test]
fn non_utf8_bytes_in_a_list_skip_only_their_record() {
    let mut bytes = EASYEDIT.trim_end_matches(']').to_string().into_bytes();
    bytes.extend_from_slice(b",\n{\"case_id\": 1, \"prompt\": \"Paris is in\", \"target_new\": \"R\xffome\", \"subject\": \"Paris\", \"ground_truth\": \"France\", \"rephrase_prompt\": \"Paris lies in\", \"locality_prompt\": \"Lyon is in\", \"locality_ground_truth\": \"France\"}]");
    let (_d, p) = fixture("cf.json", &bytes);
    let l = load(&p, None, false, None).unwrap();
    assert_eq!(l.cases.len(), 1);
    assert_eq!(l.skipped.len(), 1);
    assert!(
        l.skipped[0].ends_with("cf.json#1: not UTF-8 text (invalid bytes in this record)"),
        "{:?}",
        l.skipped
    );
    let e = load(&p, None, true, None).unwrap_err().to_string();
    assert!(e.contains("cf.json#1: not UTF-8"), "{e}");
}

#[test]
fn wrong_top_level_and_empty_files_are_errors() {
    let (_d, p) = fixture("a.json", b"[]");
    assert!(load(&p, None, false, None)
        .unwrap_err()
        .to_string()
        .contains("no records"));
    let zsre = Some(DatasetKind::Zsre);
    assert!(load(&p, zsre, false, None)
        .unwrap_err()
        .to_string()
        .contains("no records"));
    assert!(load(&p, zsre, false, Some(0)).unwrap().cases.is_empty());
    let (_d, p) = fixture("b.json", b"\"text\"");
    let e = load(&p, None, false, None).unwrap_err().to_string();
    assert!(e.contains("expected a JSON list"), "{e}");
    let (_d, p) = fixture("c.json", b"[1, 2]");
    assert!(load(&p, None, false, None).is_err());
    let missing = Path::new("/nonexistent/d4s/x.json");
    assert!(load(missing, None, false, None)
        .unwrap_err()
        .to_string()
        .contains("x.json"));
}

#[test]
fn a_wrong_explicit_kind_reports_the_first_problem() {
    let (_d, p) = fixture("cf.json", EASYEDIT.as_bytes());
    let e = load(&p, Some(DatasetKind::Zsre), false, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("none of its 1 records could be used as zsre"),
        "{e}"
    );
    assert!(e.contains("cf.json#0: missing field `src`"), "{e}");
}

#[test]
fn limit_keeps_the_first_good_cases_and_stops_reading() {
    let rec = |i: usize, target: &str| {
        format!(
            r#"{{"case_id": {i}, "prompt": "S{i} is in", "target_new": "{target}", "subject": "S{i}", "ground_truth": "g", "rephrase_prompt": "S{i} lies in", "locality_prompt": "T is in", "locality_ground_truth": "g"}}"#
        )
    };
    let text = format!(
        "[{}]",
        [
            rec(0, "a"),
            rec(1, " "),
            rec(2, "b"),
            rec(3, ""),
            rec(4, "c")
        ]
        .join(",")
    );
    let (_d, p) = fixture("cf.json", text.as_bytes());
    let l = load(&p, None, false, Some(2)).unwrap();
    assert_eq!(l.cases.len(), 2);
    assert_eq!(l.cases[1].origin, "cf.json#2");
    // Only the bad record before the second good one was examined.
    assert_eq!(l.skipped.len(), 1);
    assert!(
        l.skipped[0].ends_with("cf.json#1: the target is empty"),
        "{:?}",
        l.skipped
    );
    let all = load(&p, None, false, None).unwrap();
    assert_eq!((all.cases.len(), all.skipped.len()), (3, 2));
    assert!(load(&p, None, false, Some(0)).unwrap().cases.is_empty());
    // Strict fails on the first bad record even with a limit that reaches past it.
    assert!(load(&p, None, true, Some(2)).is_err());
    assert_eq!(load(&p, None, true, Some(1)).unwrap().cases.len(), 1);
}

#[test]
fn kinds_round_trip_through_their_names() {
    for k in DatasetKind::ALL {
        assert_eq!(k.name().parse::<DatasetKind>().unwrap(), k);
    }
    let e = "csv".parse::<DatasetKind>().unwrap_err().to_string();
    assert!(
        e.contains("counterfact-easyedit") && e.contains("jsonl"),
        "{e}"
    );
}

#[test]
fn resolve_maps_names_paths_and_explains_failures() {
    let dir = tempfile::tempdir().unwrap();
    let rel = "zsre/zsre_mend_train-1k.json";
    std::fs::create_dir_all(dir.path().join("zsre")).unwrap();
    std::fs::write(dir.path().join(rel), "[]").unwrap();
    let root = Some(dir.path());
    assert_eq!(resolve("zsre-train", root).unwrap(), dir.path().join(rel));
    assert_eq!(resolve("ZSRE-TRAIN", root).unwrap(), dir.path().join(rel));
    assert_eq!(resolve(rel, root).unwrap(), dir.path().join(rel));
    let abs = dir.path().join(rel);
    assert_eq!(resolve(abs.to_str().unwrap(), None).unwrap(), abs);
    let e = resolve("mquake", root).unwrap_err().to_string();
    assert!(
        e.contains("MQuAKE-hard.json") && e.contains("does not exist"),
        "{e}"
    );
    let e = resolve("nope", root).unwrap_err().to_string();
    assert!(e.contains(&dir.path().display().to_string()), "{e}");
    for (name, _) in NAMES {
        assert!(e.contains(name), "{e}");
    }
}

#[test]
fn fill_accepts_filled_and_single_placeholder_templates() {
    assert_eq!(fill("{} is in", "Paris", "p").unwrap(), "Paris is in");
    assert_eq!(fill("Paris is in", "Paris", "p").unwrap(), "Paris is in");
    assert_eq!(
        fill("{} and {}", "A", "requested_rewrite.prompt").unwrap_err(),
        "field `requested_rewrite.prompt` has 2 `{}` placeholders"
    );
}

#[test]
fn seeded_shuffles_are_reproducible_permutations() {
    let cases: Vec<EvalCase> = (0..20)
        .map(|i| {
            EvalCase::single(
                crate::edit::EditRequest::new(&format!("S{i}"), "{} is in", "Rome"),
                format!("#{i}"),
            )
        })
        .collect();
    let order = |seed| -> Vec<String> {
        shuffled(&cases, seed)
            .into_iter()
            .map(|c| c.origin)
            .collect()
    };
    assert_eq!(order(0), order(0));
    assert_ne!(order(0), order(1));
    let mut sorted = order(1);
    sorted.sort();
    let mut all: Vec<String> = cases.iter().map(|c| c.origin.clone()).collect();
    all.sort();
    assert_eq!(sorted, all);
}

#[test]
fn a_chat_template_renders_every_edit_and_evaluation_prompt() {
    let t = crate::model::chat::ChatTemplate::new(
        "{% for m in messages %}<u>{{ m['content'] }}</u>{% endfor %}<a>",
        "test",
        "",
        "",
    )
    .unwrap();
    let mut r = crate::edit::EditRequest::new("Eiffel Tower", "{} is in", "Rome");
    r.paraphrases = vec!["Where is the Eiffel Tower?".into()];
    r.neighbors = vec![crate::edit::Probe {
        prompt: "Paris is in".into(),
        answer: Some("France".into()),
    }];
    let mut c = EvalCase::single(r, "#0");
    c.portability = vec![("Q?".into(), "A".into())];
    c.generation_prompts = vec!["Tell me".into()];
    let t_case = c.with_chat_template(&t).unwrap();
    let r = &t_case.requests[0];
    assert_eq!(r.filled_prompt(), "<u>Eiffel Tower is in</u><a>");
    assert_eq!(r.paraphrases[0], "<u>Where is the Eiffel Tower?</u><a>");
    assert_eq!(r.neighbors[0].prompt, "<u>Paris is in</u><a>");
    assert_eq!(r.neighbors[0].answer.as_deref(), Some("France"));
    assert_eq!(r.target, "Rome");
    assert_eq!(t_case.portability[0], ("<u>Q?</u><a>".into(), "A".into()));
    assert_eq!(t_case.generation_prompts[0], "<u>Tell me</u><a>");
}
