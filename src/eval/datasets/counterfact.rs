//! CounterFact (Meng et al., ROME 2022) in its two published layouts (spec §5.2).
//!
//! **EasyEdit format** (`counterfact_easyedit/counterfact-{edit,train}.json` from
//! Jometeorie/KnowledgeSpread @ d1a8d1e; a JSON list, prompts already filled):
//! `case_id, prompt, target_new, subject, ground_truth, rephrase_prompt, locality_prompt,
//! locality_ground_truth` →
//! one request `{subject, prompt, target: target_new, ground_truth, paraphrases:
//! [rephrase_prompt], neighbors: [{locality_prompt, Some(locality_ground_truth)}]}`.
//! An empty `ground_truth` is read as unknown (`None`).
//!
//! **ROME/MEMIT format** (`counterfact.json`, `multi_counterfact.json`; not in the shared data,
//! tested on a fixture): `case_id, requested_rewrite{prompt (with "{}"), subject,
//! target_new{str,id}, target_true{str,id}, relation_id}, paraphrase_prompts,
//! neighborhood_prompts, attribute_prompts, generation_prompts` → one request with `prompt` =
//! `requested_rewrite.prompt` filled with the subject, `target` = `target_new.str`,
//! `ground_truth` = `target_true.str`, `paraphrases` = `paraphrase_prompts`, `neighbors` =
//! `neighborhood_prompts` each answered by `target_true.str` (their subjects share the true
//! object), and the case's `generation_prompts`. `attribute_prompts` (answered by the new
//! target; used only by ROME's older attribute score) have no slot in [`EvalCase`] and are
//! not kept.
//!
//! Origins are `<file name>#<index in the list>`.

use super::fields::Fields;
use super::{checked, fill, EvalCase};
use crate::edit::request::Probe;
use crate::edit::EditRequest;

/// One EasyEdit-format record.
pub(crate) fn from_easyedit(r: &Fields, origin: String) -> Result<EvalCase, String> {
    let ground_truth = r.str("ground_truth")?;
    let request = EditRequest {
        subject: r.str("subject")?.to_string(),
        prompt: r.str("prompt")?.to_string(),
        target: r.str("target_new")?.to_string(),
        ground_truth: (!ground_truth.trim().is_empty()).then(|| ground_truth.to_string()),
        paraphrases: vec![r.text("rephrase_prompt")?.to_string()],
        neighbors: vec![Probe {
            prompt: r.text("locality_prompt")?.to_string(),
            answer: Some(r.text("locality_ground_truth")?.to_string()),
        }],
    };
    Ok(EvalCase::single(checked(request)?, origin))
}

/// One ROME/MEMIT-format record.
pub(crate) fn from_rome(r: &Fields, origin: String) -> Result<EvalCase, String> {
    let rw = r.obj("requested_rewrite")?;
    let subject = rw.str("subject")?;
    let truth = rw.obj("target_true")?.text("str")?;
    let request = EditRequest {
        subject: subject.to_string(),
        prompt: fill(rw.str("prompt")?, subject, "requested_rewrite.prompt")?,
        target: rw.obj("target_new")?.str("str")?.to_string(),
        ground_truth: Some(truth.to_string()),
        paraphrases: r.texts("paraphrase_prompts")?,
        neighbors: r
            .texts("neighborhood_prompts")?
            .into_iter()
            .map(|prompt| Probe {
                prompt,
                answer: Some(truth.to_string()),
            })
            .collect(),
    };
    Ok(EvalCase {
        generation_prompts: r.opt_texts("generation_prompts")?,
        ..EvalCase::single(checked(request)?, origin)
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::fixture;
    use super::super::{load, DatasetKind};
    use super::*;

    /// Two records in the ROME layout (case 0 of counterfact.json, abridged), then bad ones.
    const ROME: &str = r#"[
{"case_id": 0, "pararel_idx": 2796,
 "requested_rewrite": {"prompt": "The mother tongue of {} is", "relation_id": "P103",
   "target_new": {"str": "English", "id": "Q1860"}, "target_true": {"str": "French", "id": "Q150"},
   "subject": "Danielle Darrieux"},
 "paraphrase_prompts": ["Shayna does this and Yossel goes still and dies. Danielle Darrieux, a native", "An album was recorded for Capitol Nashville but never released. Danielle Darrieux spoke the language"],
 "neighborhood_prompts": ["The mother tongue of L\u00e9on Blum is", "Michel Rocard is a native speaker of"],
 "attribute_prompts": ["J.\u00a0R.\u00a0R. Tolkien is a native speaker of"],
 "generation_prompts": ["Danielle Darrieux's mother tongue is", "Where Danielle Darrieux is from, people speak the language of"]},
{"case_id": 1,
 "requested_rewrite": {"prompt": "{} is affiliated with the religion", "relation_id": "P140",
   "target_new": {"str": "Islam", "id": "Q432"}, "target_true": {"str": "Christianity", "id": "Q5043"},
   "subject": "Edwin of Northumbria"},
 "paraphrase_prompts": ["Edwin of Northumbria follows"], "neighborhood_prompts": ["Paul is affiliated with the religion"]},
{"case_id": 2, "requested_rewrite": {"prompt": "{} plays {}", "subject": "X",
   "target_new": {"str": "a"}, "target_true": {"str": "b"}},
 "paraphrase_prompts": [], "neighborhood_prompts": []},
{"case_id": 3, "requested_rewrite": {"prompt": "{} plays", "subject": "X",
   "target_new": {"str": "a"}, "target_true": "b"},
 "paraphrase_prompts": [], "neighborhood_prompts": []},
{"case_id": 4, "requested_rewrite": {"prompt": "{} plays", "subject": "X",
   "target_new": {"str": "a"}, "target_true": {"str": "b"}},
 "neighborhood_prompts": []},
{"case_id": 5, "requested_rewrite": {"prompt": "Y plays", "subject": "X",
   "target_new": {"str": "a"}, "target_true": {"str": "b"}},
 "paraphrase_prompts": [], "neighborhood_prompts": []}
]"#;

    #[test]
    fn rome_records_map_to_filled_requests() {
        let (_d, p) = fixture("counterfact.json", ROME.as_bytes());
        let l = load(&p, None, false, None).unwrap();
        assert_eq!(l.kind, DatasetKind::CounterfactRome);
        assert_eq!(l.cases.len(), 2);
        let c = &l.cases[0];
        let r = &c.requests[0];
        assert_eq!(r.prompt, "The mother tongue of Danielle Darrieux is");
        assert_eq!(r.subject, "Danielle Darrieux");
        assert_eq!(
            (r.target.as_str(), r.ground_truth.as_deref()),
            ("English", Some("French"))
        );
        assert_eq!(r.paraphrases.len(), 2);
        assert_eq!(r.neighbors[0].prompt, "The mother tongue of Léon Blum is");
        assert!(r
            .neighbors
            .iter()
            .all(|n| n.answer.as_deref() == Some("French")));
        assert_eq!(c.generation_prompts.len(), 2);
        assert_eq!(c.origin, "counterfact.json#0");
        assert!(l.cases[1].generation_prompts.is_empty());
        let expect = [
            "counterfact.json#2: field `requested_rewrite.prompt` has 2 `{}` placeholders",
            "counterfact.json#3: field `requested_rewrite.target_true` is a string, expected an object",
            "counterfact.json#4: missing field `paraphrase_prompts`",
            "counterfact.json#5: the prompt \"Y plays\" does not contain the subject \"X\"",
        ];
        assert_eq!(l.skipped.len(), expect.len(), "{:#?}", l.skipped);
        for (got, want) in l.skipped.iter().zip(expect) {
            assert!(got.ends_with(want), "{got:?} should end with {want:?}");
        }
        let e = load(&p, None, true, None).unwrap_err().to_string();
        assert!(e.ends_with(expect[0]), "{e}");
    }

    fn easyedit_record(fields: &[(&str, &str)]) -> String {
        let mut m = serde_json::json!({
            "case_id": 7, "prompt": "The mother tongue of Danielle Darrieux is", "target_new": "English",
            "subject": "Danielle Darrieux", "ground_truth": "French",
            "rephrase_prompt": "Where Danielle Darrieux is from, people speak the language of",
            "locality_prompt": "Michel Rocard is a native speaker of", "locality_ground_truth": "French"
        });
        for (k, v) in fields {
            if v.is_empty() && k.starts_with('-') {
                m.as_object_mut().unwrap().remove(&k[1..]);
            } else {
                m[*k] = serde_json::from_str(v).unwrap();
            }
        }
        m.to_string()
    }

    #[test]
    fn easyedit_records_map_field_by_field() {
        let text = format!("[{}]", easyedit_record(&[]));
        let (_d, p) = fixture("counterfact-edit.json", text.as_bytes());
        let l = load(&p, Some(DatasetKind::CounterfactEasyEdit), true, None).unwrap();
        let r = &l.cases[0].requests[0];
        assert_eq!(r.prompt, "The mother tongue of Danielle Darrieux is");
        assert_eq!(
            (r.target.as_str(), r.ground_truth.as_deref()),
            ("English", Some("French"))
        );
        assert_eq!(
            r.paraphrases,
            vec!["Where Danielle Darrieux is from, people speak the language of".to_string()]
        );
        assert_eq!(
            r.neighbors,
            vec![Probe {
                prompt: "Michel Rocard is a native speaker of".into(),
                answer: Some("French".into())
            }]
        );
        assert!(l.cases[0].portability.is_empty() && l.cases[0].multi_hop.is_none());
    }

    #[test]
    fn easyedit_bad_records_in_both_modes() {
        let records = [
            easyedit_record(&[]),
            easyedit_record(&[("-target_new", "")]),
            easyedit_record(&[("target_new", r#""   ""#)]),
            easyedit_record(&[("subject", r#""Michel Rocard""#)]),
            easyedit_record(&[("ground_truth", "42")]),
            easyedit_record(&[("locality_prompt", r#""""#)]),
            "\"just text\"".to_string(),
            easyedit_record(&[("ground_truth", r#""""#)]),
        ];
        let text = format!("[{}]", records.join(",\n"));
        let (_d, p) = fixture("cf.json", text.as_bytes());
        let l = load(&p, None, false, None).unwrap();
        assert_eq!(l.cases.len(), 2);
        assert_eq!(l.cases[1].origin, "cf.json#7");
        assert_eq!(l.cases[1].requests[0].ground_truth, None);
        let expect = [
            "cf.json#1: missing field `target_new`",
            "cf.json#2: the target is empty",
            "cf.json#3: the prompt \"The mother tongue of Danielle Darrieux is\" does not contain the subject \"Michel Rocard\"",
            "cf.json#4: field `ground_truth` is a number, expected a string",
            "cf.json#5: field `locality_prompt` is empty",
            "cf.json#6: the record is a string, expected an object",
        ];
        assert_eq!(l.skipped.len(), expect.len(), "{:#?}", l.skipped);
        for (got, want) in l.skipped.iter().zip(expect) {
            assert!(got.ends_with(want), "{got:?} should end with {want:?}");
        }
        let e = load(&p, None, true, None).unwrap_err().to_string();
        assert!(e.ends_with(expect[0]), "{e}");
    }
}
