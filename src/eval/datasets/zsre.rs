//! zsRE in MEND/EasyEdit format (spec §5.1): `zsre/zsre_mend_eval_portability_gpt4.json`
//! (EasyEdit fork shariqahn/EasyEdit @ 216a4cd, first 837 records) and
//! `zsre/zsre_mend_train-1k.json` (Jometeorie/KnowledgeSpread @ d1a8d1e).
//!
//! Fields: `subject, src, pred, rephrase, alt, answers[], loc, loc_ans, cond`, optional
//! `portability {"Recalled Relation", "New Question", "New Answer"}` →
//! one request `{subject, prompt: src, target: alt, ground_truth: answers[0], paraphrases:
//! [rephrase], neighbors: [{loc, Some(loc_ans)}]}` and `portability = [(New Question, New
//! Answer)]`. This is the EasyEdit/D4S mapping (the edit goes towards `alt`, not towards the
//! gold answer as in MEMIT's own zsRE evaluation). `pred` and `cond` are not used. `loc` keeps
//! its `"nq question: "` prefix, as EasyEdit feeds it to the model.
//!
//! `src` is a question, and the edit needs the subject's last token inside it, so a record
//! whose subject does not occur in `src` is reported. An empty `answers` list means the gold
//! answer is unknown. Two records of the train-1k file have an empty `alt` and are skipped.
//! Origins are `<file name>#<index in the list>`.

use super::fields::Fields;
use super::{checked, EvalCase};
use crate::edit::request::Probe;
use crate::edit::EditRequest;

/// One zsRE record.
pub(crate) fn from_record(r: &Fields, origin: String) -> Result<EvalCase, String> {
    let subject = r.str("subject")?;
    let prompt = r.str("src")?;
    let target = r.str("alt")?;
    let request = EditRequest {
        subject: subject.to_string(),
        prompt: prompt.to_string(),
        target: target.to_string(),
        ground_truth: r.texts("answers")?.into_iter().next(),
        paraphrases: vec![r.text("rephrase")?.to_string()],
        neighbors: vec![Probe {
            prompt: r.text("loc")?.to_string(),
            answer: Some(r.text("loc_ans")?.to_string()),
        }],
    };
    let portability = match r.opt_obj("portability")? {
        Some(p) => vec![(
            p.text("New Question")?.to_string(),
            p.text("New Answer")?.to_string(),
        )],
        None => vec![],
    };
    Ok(EvalCase {
        portability,
        ..EvalCase::single(checked(request)?, origin)
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::fixture;
    use super::super::{load, DatasetKind};

    fn record(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v = serde_json::json!({
            "subject": "IAAF Combined Events Challenge",
            "src": "When was the inception of IAAF Combined Events Challenge?",
            "pred": "2011",
            "rephrase": "When was the IAAF Combined Events Challenge launched?",
            "alt": "2006",
            "answers": ["1998"],
            "loc": "nq question: what is the name of the last episode of spongebob",
            "loc_ans": "The String",
            "cond": "2011 >> 2006 || When was the inception of IAAF Combined Events Challenge?",
            "portability": {
                "Recalled Relation": "(IAAF Combined Events Challenge, event type, athletics)",
                "New Question": "What type of sports event is the IAAF Combined Events Challenge?",
                "New Answer": "Athletics"
            }
        });
        edit(&mut v);
        v.to_string()
    }

    #[test]
    fn maps_the_easyedit_fields() {
        // 22 published `alt` values start with a space; the target convention has none.
        let text = format!("[{}]", record(|v| v["alt"] = " 2006".into()));
        let (_d, p) = fixture("zsre_eval.json", text.as_bytes());
        let l = load(&p, None, true, None).unwrap();
        assert_eq!(l.kind, DatasetKind::Zsre);
        let c = &l.cases[0];
        let r = &c.requests[0];
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
        assert_eq!(r.neighbors[0].answer.as_deref(), Some("The String"));
        assert!(r.neighbors[0].prompt.starts_with("nq question: "));
        assert_eq!(
            c.portability,
            vec![(
                "What type of sports event is the IAAF Combined Events Challenge?".to_string(),
                "Athletics".to_string()
            )]
        );
        assert_eq!(c.origin, "zsre_eval.json#0");
    }

    #[test]
    fn bad_records_in_both_modes() {
        let records = [
            record(|v| {
                v.as_object_mut().unwrap().remove("portability");
            }),
            record(|v| v["alt"] = "".into()),
            record(|v| v["subject"] = "Diamond League".into()),
            record(|v| v["answers"] = "1998".into()),
            record(|v| v["answers"] = serde_json::json!(["1998", 1])),
            record(|v| {
                v.as_object_mut().unwrap().remove("rephrase");
            }),
            record(|v| v["portability"] = serde_json::json!({"New Question": "Q?"})),
            record(|v| v["answers"] = serde_json::json!([])),
        ];
        let text = format!("[{}]", records.join(",\n"));
        let (_d, p) = fixture("z.json", text.as_bytes());
        let l = load(&p, None, false, None).unwrap();
        assert_eq!(l.cases.len(), 2);
        assert!(l.cases[0].portability.is_empty());
        assert_eq!(l.cases[1].requests[0].ground_truth, None);
        let expect = [
            "z.json#1: the target is empty",
            "z.json#2: the prompt \"When was the inception of IAAF Combined Events Challenge?\" does not contain the subject \"Diamond League\"",
            "z.json#3: field `answers` is a string, expected a list",
            "z.json#4: field `answers[1]` is a number, expected a string",
            "z.json#5: missing field `rephrase`",
            "z.json#6: missing field `portability.New Answer`",
        ];
        assert_eq!(l.skipped.len(), expect.len(), "{:#?}", l.skipped);
        for (got, want) in l.skipped.iter().zip(expect) {
            assert!(got.ends_with(want), "{got:?} should end with {want:?}");
        }
        let e = load(&p, None, true, None).unwrap_err().to_string();
        assert!(e.ends_with(expect[0]), "{e}");
    }
}
