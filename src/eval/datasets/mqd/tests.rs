use super::*;

const LANGS: [&str; 6] = ["English", "French", "German", "Dutch", "Spanish", "Italian"];

/// CounterFact-like cases: the same relation for all, plus one zsRE-like question.
fn cases() -> Vec<EvalCase> {
    let mut out: Vec<EvalCase> = (0..12)
        .map(|i| {
            let subject = format!("Person {i}");
            let mut r = EditRequest::new(
                &subject,
                &format!("The mother tongue of {subject} is"),
                LANGS[i % 6],
            );
            r.ground_truth = Some(LANGS[(i + 1) % 6].into());
            r.paraphrases = vec![format!("{subject} was born speaking")];
            r.neighbors = vec![
                Probe {
                    prompt: format!("Person {} is a native speaker of", i + 100),
                    answer: Some(LANGS[(i + 1) % 6].into()),
                },
                Probe {
                    prompt: "Unanswered".into(),
                    answer: None,
                },
            ];
            EvalCase::single(r, format!("cf.json#{i}"))
        })
        .collect();
    let mut q = EditRequest::new(
        "UniFirst",
        "What is the product made by UniFirst?",
        "unmanned aircraft",
    );
    q.ground_truth = Some("uniform".into());
    q.paraphrases = vec!["What will be the product of UniFirst?".into()];
    q.neighbors = vec![Probe {
        prompt: "nq question: who plays the cat in the hat movie".into(),
        answer: Some("Mike Myers".into()),
    }];
    let mut c = EvalCase::single(q, "zsre.json#0");
    c.portability = vec![("Q?".into(), "A".into())];
    out.push(c);
    out
}

fn options_of(prompt: &str) -> Vec<(String, String)> {
    prompt
        .lines()
        .filter_map(|l| {
            let (letter, text) = l.split_once(". ")?;
            LETTERS
                .contains(&letter)
                .then(|| (letter.to_string(), text.to_string()))
        })
        .collect()
}

#[test]
fn true_false_asserts_the_new_target() {
    let out = mqd(&cases(), QuestionType::TrueFalse, 0);
    assert_eq!(out.len(), 13);
    let r = &out[0].requests[0];
    assert_eq!(
        r.prompt,
        "True or false: The mother tongue of Person 0 is English.\nAnswer:"
    );
    assert_eq!(
        (r.target.as_str(), r.ground_truth.as_deref()),
        ("True", Some("False"))
    );
    assert_eq!(
        r.paraphrases,
        vec!["True or false: Person 0 was born speaking English.\nAnswer:".to_string()]
    );
    assert_eq!(r.neighbors.len(), 1, "unanswered neighbours are dropped");
    assert_eq!(
        r.neighbors[0].prompt,
        "True or false: Person 100 is a native speaker of French.\nAnswer:"
    );
    assert_eq!(r.neighbors[0].answer.as_deref(), Some("True"));
    assert_eq!(out[0].origin, "cf.json#0/mqd-tf");
    let z = &out[12];
    assert_eq!(
        z.requests[0].prompt,
        "True or false: the answer to \"What is the product made by UniFirst?\" is unmanned aircraft.\nAnswer:"
    );
    assert_eq!(
        z.requests[0].neighbors[0].prompt,
        "True or false: the answer to \"Who plays the cat in the hat movie?\" is Mike Myers.\nAnswer:"
    );
    assert!(z.portability.is_empty());
    for c in &out {
        for r in &c.requests {
            r.validate().unwrap();
            assert!(r.prompt.contains(&r.subject));
        }
    }
}

#[test]
fn multiple_choice_letters_point_at_the_right_options() {
    let input = cases();
    let out = mqd(&input, QuestionType::MultipleChoice, 7);
    assert_eq!(out.len(), input.len());
    for (c, orig) in out.iter().zip(&input) {
        let (r, o) = (&c.requests[0], &orig.requests[0]);
        r.validate().unwrap();
        assert!(r.prompt.contains(&r.subject) && r.prompt.ends_with("\nAnswer:"));
        let opts = options_of(&r.prompt);
        assert_eq!(opts.len(), 4, "{}", r.prompt);
        let keys: HashSet<_> = opts.iter().map(|(_, t)| key(t)).collect();
        assert_eq!(keys.len(), 4, "options are distinct: {}", r.prompt);
        let pick = |l: &str| opts.iter().find(|(x, _)| x == l).unwrap().1.clone();
        assert_eq!(pick(&r.target), o.target);
        // The true answer is always one of the distractors, and ground_truth points at it.
        assert_eq!(
            pick(r.ground_truth.as_deref().unwrap()),
            o.ground_truth.clone().unwrap()
        );
        // Paraphrases keep the options and so the letter.
        for p in &r.paraphrases {
            assert_eq!(options_of(p), opts);
        }
        for n in &r.neighbors {
            let nopts = options_of(&n.prompt);
            let letter = n.answer.as_deref().unwrap();
            let answer = &nopts.iter().find(|(x, _)| x == letter).unwrap().1;
            assert_eq!(Some(answer), o.neighbors[0].answer.as_ref());
            assert!(
                nopts.iter().any(|(_, t)| t == &o.target),
                "the new target is offered to neighbours"
            );
        }
    }
    let first = &out[0].requests[0].prompt;
    assert!(first.starts_with("Which option best completes the sentence \"The mother tongue of Person 0 is ___\"?\nA. "), "{first}");
    // Same-template distractors: CounterFact-like cases only get languages.
    for c in &out[..12] {
        for (_, t) in options_of(&c.requests[0].prompt) {
            assert!(LANGS.contains(&t.as_str()), "{t}");
        }
    }
    assert!(out[12].requests[0]
        .prompt
        .starts_with("What is the product made by UniFirst?\nA. "));
}

#[test]
fn multiple_choice_is_deterministic_in_the_seed() {
    let input = cases();
    let a = mqd(&input, QuestionType::MultipleChoice, 1);
    assert_eq!(a, mqd(&input, QuestionType::MultipleChoice, 1));
    let b = mqd(&input, QuestionType::MultipleChoice, 2);
    assert_ne!(a, b);
    let order = |v: &[EvalCase]| {
        v.iter()
            .map(|c| options_of(&c.requests[0].prompt))
            .collect::<Vec<_>>()
    };
    assert_ne!(order(&a), order(&b), "another seed reorders the options");
}

#[test]
fn cases_without_any_distractor_are_left_out() {
    let only = vec![EvalCase::single(
        EditRequest::new("X", "X is in", "Rome"),
        "o#0",
    )];
    assert!(mqd(&only, QuestionType::MultipleChoice, 0).is_empty());
    let two = vec![
        only[0].clone(),
        EvalCase::single(EditRequest::new("Y", "Y is in", "Oslo"), "o#1"),
    ];
    let out = mqd(&two, QuestionType::MultipleChoice, 0);
    assert_eq!(out.len(), 2);
    assert_eq!(options_of(&out[0].requests[0].prompt).len(), 2);
}

#[test]
fn directly_generated_keeps_the_case() {
    let input = cases();
    let out = mqd(&input, QuestionType::DirectlyGenerated, 0);
    assert_eq!(out.len(), input.len());
    assert_eq!(out[12].requests, input[12].requests);
    assert_eq!(out[12].portability, input[12].portability);
    assert_eq!(out[12].origin, "zsre.json#0/mqd-dg");
}

#[test]
fn question_types_parse_by_name_and_short_form() {
    for q in QuestionType::ALL {
        assert_eq!(q.name().parse::<QuestionType>().unwrap(), q);
        assert_eq!(q.short().parse::<QuestionType>().unwrap(), q);
    }
    assert!("yes-no".parse::<QuestionType>().is_err());
    assert_eq!(
        as_question("nq question: who is it"),
        Some("Who is it?".into())
    );
    assert_eq!(as_question("nq question:"), None);
    assert_eq!(as_question("Paris is in"), None);
}
