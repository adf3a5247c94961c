//! The dataset loaders on the real files of `../shared/data` (see its README for provenance,
//! counts and example records). Skipped with a message when the folder is absent; a failure
//! under `CI=true`.

mod common;

use std::path::Path;

use d4s::eval::datasets::{load, mqd, resolve, DatasetKind, Loaded, QuestionType};

fn load_shared(rel: &str) -> Option<Loaded> {
    let path = common::shared(rel)?;
    Some(load(&path, None, false, None).expect("the shared file loads"))
}

#[test]
fn counterfact_edit_has_10000_cases_and_no_bad_record() {
    let Some(l) = load_shared("data/counterfact_easyedit/counterfact-edit.json") else {
        return;
    };
    assert_eq!(l.kind, DatasetKind::CounterfactEasyEdit);
    assert!(l.sha256.starts_with("20c225e6299b3c5b"), "{}", l.sha256);
    assert_eq!(
        (l.cases.len(), l.skipped.len()),
        (10_000, 0),
        "{:?}",
        l.skipped
    );
    let c = &l.cases[0];
    let r = &c.requests[0];
    assert_eq!(r.prompt, "The mother tongue of Danielle Darrieux is");
    assert_eq!(r.subject, "Danielle Darrieux");
    assert_eq!(r.target, "English");
    assert_eq!(r.ground_truth.as_deref(), Some("French"));
    assert_eq!(
        r.paraphrases,
        vec!["Where Danielle Darrieux is from, people speak the language of".to_string()]
    );
    assert_eq!(
        r.neighbors[0].prompt,
        "Michel Rocard is a native speaker of"
    );
    assert_eq!(r.neighbors[0].answer.as_deref(), Some("French"));
    assert_eq!(c.origin, "counterfact-edit.json#0");
    let last = &l.cases[9_999].requests[0];
    assert_eq!(
        (last.subject.as_str(), last.target.as_str()),
        ("Subair", "composer")
    );
    // Strict mode agrees: there is nothing to refuse.
    let strict = load(&l.path, None, true, None).unwrap();
    assert_eq!(strict.cases, l.cases);
}

#[test]
fn counterfact_train_has_10000_cases() {
    let Some(l) = load_shared("data/counterfact_easyedit/counterfact-train.json") else {
        return;
    };
    assert!(l.sha256.starts_with("bb40e12c7b740d68"), "{}", l.sha256);
    assert_eq!(
        (l.cases.len(), l.skipped.len()),
        (10_000, 0),
        "{:?}",
        l.skipped
    );
}

#[test]
fn zsre_portability_file_has_837_cases_with_portability() {
    let Some(l) = load_shared("data/zsre/zsre_mend_eval_portability_gpt4.json") else {
        return;
    };
    assert_eq!(l.kind, DatasetKind::Zsre);
    assert_eq!(
        (l.cases.len(), l.skipped.len()),
        (837, 0),
        "{:?}",
        l.skipped
    );
    assert!(l.cases.iter().all(|c| c.portability.len() == 1));
    // " MAT-49" and 11 other `alt` values are published with a leading space.
    assert!(l
        .cases
        .iter()
        .all(|c| c.requests[0].target == c.requests[0].target.trim()));
    let c = &l.cases[0];
    let r = &c.requests[0];
    assert_eq!(r.subject, "IAAF Combined Events Challenge");
    assert_eq!(
        r.prompt,
        "When was the inception of IAAF Combined Events Challenge?"
    );
    assert_eq!(
        (r.target.as_str(), r.ground_truth.as_deref()),
        ("2006", Some("1998"))
    );
    assert_eq!(
        r.paraphrases[0],
        "When was the IAAF Combined Events Challenge launched?"
    );
    assert_eq!(
        r.neighbors[0].prompt,
        "nq question: what is the name of the last episode of spongebob"
    );
    assert_eq!(r.neighbors[0].answer.as_deref(), Some("The String"));
    assert_eq!(c.portability[0].1, "Athletics");
}

/// Records 534 and 723 of the train subset have `"alt": ""` — nothing to edit towards — so
/// 998 of the 1,000 records are usable.
#[test]
fn zsre_train_1k_has_998_usable_cases_and_two_empty_targets() {
    let Some(l) = load_shared("data/zsre/zsre_mend_train-1k.json") else {
        return;
    };
    assert!(l.sha256.starts_with("09dbb446f4afa1e5"), "{}", l.sha256);
    assert_eq!(l.cases.len(), 998);
    assert_eq!(l.skipped.len(), 2, "{:?}", l.skipped);
    assert!(l.skipped[0].ends_with("zsre_mend_train-1k.json#534: the target is empty"));
    assert!(l.skipped[1].ends_with("zsre_mend_train-1k.json#723: the target is empty"));
    let r = &l.cases[0].requests[0];
    assert_eq!(
        (r.subject.as_str(), r.prompt.as_str()),
        ("UniFirst", "What is the product made by UniFirst?")
    );
    assert_eq!(
        (r.target.as_str(), r.ground_truth.as_deref()),
        ("unmanned aircraft", Some("uniform"))
    );
    assert!(l.cases.iter().all(|c| c.portability.is_empty()));
    let e = load(&l.path, None, true, None).unwrap_err().to_string();
    assert!(
        e.ends_with("zsre_mend_train-1k.json#534: the target is empty"),
        "{e}"
    );
}

#[test]
fn mquake_hard_has_429_cases_of_four_rewrites() {
    let Some(l) = load_shared("data/mquake/MQuAKE-hard.json") else {
        return;
    };
    assert_eq!(l.kind, DatasetKind::Mquake);
    assert!(l.sha256.starts_with("fc78dc7bec4625d3"), "{}", l.sha256);
    assert_eq!(
        (l.cases.len(), l.skipped.len()),
        (429, 0),
        "{:?}",
        l.skipped
    );
    for c in &l.cases {
        assert_eq!(c.requests.len(), 4, "{}", c.origin);
        assert_eq!(c.portability.len(), 4, "{}", c.origin);
        assert_eq!(
            c.multi_hop.as_ref().unwrap().questions.len(),
            3,
            "{}",
            c.origin
        );
    }
    let c = &l.cases[0];
    let r = &c.requests[0];
    assert_eq!(r.prompt, "Hey Jude was performed by");
    assert_eq!(
        (r.target.as_str(), r.ground_truth.as_deref()),
        ("Madonna", Some("The Beatles"))
    );
    assert_eq!(r.paraphrases, vec!["Who performed Hey Jude?".to_string()]);
    assert_eq!(
        c.requests[3].prompt,
        "The official language of Australia is"
    );
    let m = c.multi_hop.as_ref().unwrap();
    assert_eq!(m.answer, "Arabic");
    assert!(m.aliases.contains(&"Arabic language".to_string()));
    assert_eq!(
        c.portability[0],
        ("Who performed Hey Jude?".to_string(), "Madonna".to_string())
    );
}

#[test]
fn short_names_resolve_under_the_shared_data_folder() {
    let Some(data) = common::shared("data") else {
        return;
    };
    for (name, count) in [
        ("counterfact", 10_000),
        ("counterfact-train", 10_000),
        ("zsre", 837),
        ("zsre-train", 998),
        ("mquake", 429),
    ] {
        let path = resolve(name, Some(&data)).unwrap();
        assert!(path.starts_with(&data), "{name} → {}", path.display());
        let l = load(&path, None, false, Some(count + 1)).unwrap();
        assert_eq!(l.cases.len(), count, "{name}");
    }
    let e = resolve("multi_counterfact", Some(&data))
        .unwrap_err()
        .to_string();
    assert!(e.contains("known names"), "{e}");
    let limited = load(
        &resolve("counterfact", Some(&data)).unwrap(),
        None,
        true,
        Some(5),
    )
    .unwrap();
    assert_eq!(limited.cases.len(), 5);
    assert_eq!(limited.cases[4].origin, "counterfact-edit.json#4");
    assert!(resolve("counterfact", Some(Path::new("/nonexistent/d4s-data"))).is_err());
}

#[test]
fn mqd_question_types_from_real_counterfact_and_zsre_facts() {
    let (Some(cf), Some(zsre)) = (
        load_shared("data/counterfact_easyedit/counterfact-edit.json"),
        load_shared("data/zsre/zsre_mend_eval_portability_gpt4.json"),
    ) else {
        return;
    };
    for facts in [&cf.cases[..2_000], &zsre.cases[..]] {
        for q in QuestionType::ALL {
            let out = mqd(facts, q, 42);
            assert_eq!(
                out.len(),
                facts.len(),
                "{q}: every real fact yields a question"
            );
            for (c, f) in out.iter().zip(facts) {
                for r in &c.requests {
                    r.validate().unwrap();
                    assert!(r.prompt.contains(&r.subject), "{}", r.prompt);
                }
                let r = &c.requests[0];
                match q {
                    QuestionType::TrueFalse => assert_eq!(r.target, "True"),
                    QuestionType::MultipleChoice => {
                        let line = format!("\n{}. {}\n", r.target, f.requests[0].target);
                        assert!(
                            r.prompt.contains(&line),
                            "{} should offer {line:?}",
                            r.prompt
                        );
                    }
                    QuestionType::DirectlyGenerated => assert_eq!(r, &f.requests[0]),
                }
            }
            assert_eq!(out, mqd(facts, q, 42), "{q} is deterministic");
        }
    }
}
