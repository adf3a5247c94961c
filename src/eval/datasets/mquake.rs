//! MQuAKE (Zhong et al. 2023) in its original schema (spec §5.3): `mquake/MQuAKE-hard.json`
//! (Alanzxd/memit_for_mquake @ 890e204, 429 cases with 4 rewrites each); MQuAKE-CF-3k, -CF
//! and -T share the schema.
//!
//! Fields: `case_id, requested_rewrite[{prompt (with "{}"), relation_id, subject,
//! target_new{str,id}, target_true{str,id}, question}], questions[3], answer, answer_alias,
//! new_answer, new_answer_alias, single_hops, new_single_hops[{question, cloze, answer,
//! answer_alias}], orig` → one case with
//! - one request per rewrite: `prompt` = the rewrite's prompt filled with its subject, `target` =
//!   `target_new.str`, `ground_truth` = `target_true.str`, `paraphrases` = [the rewrite's
//!   `question`], no neighbours (MQuAKE has no locality prompts);
//! - `multi_hop` = `{questions, answer: new_answer, aliases: new_answer_alias}` (the original
//!   protocol: correct if any of the questions is answered with the new answer or an alias);
//! - `portability` = `new_single_hops` as (question, answer): the single-hop facts of the
//!   chain after the edits.
//!
//! The pre-edit `answer`, `single_hops` and `orig` are not used. Origins are
//! `<file name>#<index in the list>`.

use super::fields::Fields;
use super::{checked, fill, EvalCase, MultiHop};
use crate::edit::EditRequest;

/// One MQuAKE record.
pub(crate) fn from_record(r: &Fields, origin: String) -> Result<EvalCase, String> {
    let rewrites = r.objects("requested_rewrite")?;
    if rewrites.is_empty() {
        return Err("field `requested_rewrite` is an empty list".into());
    }
    let requests = rewrites
        .iter()
        .enumerate()
        .map(|(i, rw)| request(rw).map_err(|e| prefix(i, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let multi_hop = MultiHop {
        questions: r.texts("questions")?,
        answer: r.text("new_answer")?.to_string(),
        aliases: r.opt_texts("new_answer_alias")?,
    };
    let portability = r
        .objects("new_single_hops")?
        .iter()
        .map(|h| {
            Ok((
                h.text("question")?.to_string(),
                h.text("answer")?.to_string(),
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(EvalCase {
        requests,
        portability,
        multi_hop: Some(multi_hop),
        generation_prompts: vec![],
        origin,
    })
}

/// Messages from [`EditRequest::validate`] do not name the rewrite; field messages already do.
fn prefix(i: usize, e: String) -> String {
    if e.contains("requested_rewrite[") {
        e
    } else {
        format!("requested_rewrite[{i}]: {e}")
    }
}

fn request(rw: &Fields) -> Result<EditRequest, String> {
    let subject = rw.str("subject")?;
    let request = EditRequest {
        subject: subject.to_string(),
        prompt: fill(rw.str("prompt")?, subject, "prompt")?,
        target: rw.obj("target_new")?.str("str")?.to_string(),
        ground_truth: Some(rw.obj("target_true")?.text("str")?.to_string()),
        paraphrases: vec![rw.text("question")?.to_string()],
        neighbors: vec![],
    };
    checked(request)
}

#[cfg(test)]
mod tests {
    use super::super::tests::fixture;
    use super::super::{load, DatasetKind};
    use serde_json::{json, Value};

    fn rewrite(prompt: &str, subject: &str, new: &str, old: &str, q: &str) -> Value {
        json!({"prompt": prompt, "relation_id": "P1", "target_new": {"str": new, "id": "Q1"},
               "target_true": {"str": old, "id": "Q2"}, "subject": subject, "question": q})
    }

    fn record(edit: impl FnOnce(&mut Value)) -> String {
        let mut v = json!({
            "case_id": 7417,
            "requested_rewrite": [
                rewrite("{} was performed by", "Hey Jude", "Madonna", "The Beatles", "Who performed Hey Jude?"),
                rewrite("{} is a citizen of", "Narendra Modi", "Australia", "India", "What is the country of citizenship of Narendra Modi?")
            ],
            "questions": ["Q1?", "Q2?", "Q3?"],
            "answer": "English", "answer_alias": ["en"],
            "new_answer": "Arabic", "new_answer_alias": ["ar", "Arabic language"],
            "single_hops": [],
            "new_single_hops": [
                {"question": "Who performed Hey Jude?", "cloze": "Hey Jude was performed by", "answer": "Madonna", "answer_alias": []}
            ],
            "orig": {}
        });
        edit(&mut v);
        v.to_string()
    }

    #[test]
    fn maps_rewrites_multi_hop_and_single_hops() {
        let text = format!("[{}]", record(|_| {}));
        let (_d, p) = fixture("MQuAKE-hard.json", text.as_bytes());
        let l = load(&p, None, true, None).unwrap();
        assert_eq!(l.kind, DatasetKind::Mquake);
        let c = &l.cases[0];
        assert_eq!(c.requests.len(), 2);
        let r = &c.requests[0];
        assert_eq!(r.prompt, "Hey Jude was performed by");
        assert_eq!(
            (r.target.as_str(), r.ground_truth.as_deref()),
            ("Madonna", Some("The Beatles"))
        );
        assert_eq!(r.paraphrases, vec!["Who performed Hey Jude?".to_string()]);
        assert!(r.neighbors.is_empty());
        let m = c.multi_hop.as_ref().unwrap();
        assert_eq!((m.questions.len(), m.answer.as_str()), (3, "Arabic"));
        assert_eq!(
            m.aliases,
            vec!["ar".to_string(), "Arabic language".to_string()]
        );
        assert_eq!(
            c.portability,
            vec![("Who performed Hey Jude?".to_string(), "Madonna".to_string())]
        );
        assert_eq!(c.origin, "MQuAKE-hard.json#0");
    }

    #[test]
    fn bad_records_in_both_modes() {
        let records = [
            record(|_| {}),
            record(|v| v["requested_rewrite"][1]["target_new"]["str"] = "".into()),
            record(|v| v["requested_rewrite"][0]["prompt"] = "Let It Be was performed by".into()),
            record(|v| v["requested_rewrite"] = json!([])),
            record(|v| {
                v.as_object_mut().unwrap().remove("new_answer");
            }),
            record(|v| v["new_single_hops"][0]["answer"] = json!(5)),
            record(|v| v["requested_rewrite"][1]["target_new"] = json!("Australia")),
        ];
        let text = format!("[{}]", records.join(",\n"));
        let (_d, p) = fixture("mq.json", text.as_bytes());
        let l = load(&p, None, false, None).unwrap();
        assert_eq!(l.cases.len(), 1);
        let expect = [
            "mq.json#1: requested_rewrite[1]: the target is empty",
            "mq.json#2: requested_rewrite[0]: the prompt \"Let It Be was performed by\" does not contain the subject \"Hey Jude\"",
            "mq.json#3: field `requested_rewrite` is an empty list",
            "mq.json#4: missing field `new_answer`",
            "mq.json#5: field `new_single_hops[0].answer` is a number, expected a string",
            "mq.json#6: field `requested_rewrite[1].target_new` is a string, expected an object",
        ];
        assert_eq!(l.skipped.len(), expect.len(), "{:#?}", l.skipped);
        for (got, want) in l.skipped.iter().zip(expect) {
            assert!(got.ends_with(want), "{got:?} should end with {want:?}");
        }
        let e = load(&p, None, true, None).unwrap_err().to_string();
        assert!(e.ends_with(expect[0]), "{e}");
    }
}
