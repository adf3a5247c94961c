//! The protocols on a tiny random model.

use super::*;
use crate::edit::request::target_ids;
use crate::eval::bench::evaluate::{evaluate, generation_fluency, EvalOptions, Reference};
use crate::eval::bench::records::{Metric, ProbMetric, TokenMetric};
use crate::eval::metrics::target_nll;
use crate::eval::testkit::{cases, memit_bench, Memory};
use crate::model::config::Arch;
use crate::model::random::tiny_model;

/// A sequential MEMIT run over `cases` on a tiny model: the edited model and what it wrote.
fn memit_run(cases: &[EvalCase]) -> (Model, Memory) {
    memit_bench(cases, |_| {})
}

#[test]
fn every_edit_records_its_target_perplexity_on_the_unedited_model() {
    let cases = cases();
    let items: Vec<(String, String)> = cases
        .iter()
        .map(|c| (c.requests[0].filled_prompt(), c.requests[0].target.clone()))
        .collect();
    let nll_w0 = target_nll(&tiny_model(Arch::Llama, 21), &items).unwrap();
    let (model, sink) = memit_run(&cases);
    // The sequential run leaves the model edited, which scores every target differently:
    // the recorded values are the unedited model's, not the edited one's.
    let nll_edited = target_nll(&model, &items).unwrap();
    assert!(
        nll_edited.iter().zip(&nll_w0).all(|(e, w)| e != w),
        "{nll_edited:?} {nll_w0:?}"
    );
    assert_eq!(sink.records.len(), cases.len());
    for r in &sink.records {
        assert_eq!(r.target_ppl, Some(nll_w0[r.index].exp()), "{r:?}");
        let tokens = target_ids(&model, &cases[r.index].requests[0].target)
            .unwrap()
            .len();
        assert_eq!(r.target_tokens, Some(tokens as f64));
        assert_eq!(r.target_new, [cases[r.index].requests[0].target.clone()]);
    }
    let s = crate::eval::bench::summary::summarize("memit", &sink.points, &sink.records).unwrap();
    let t = s.targets.expect("target summary");
    let geometric = (nll_w0.iter().sum::<f64>() / nll_w0.len() as f64).exp();
    assert!((t.ppl - geometric).abs() <= 1e-9 * geometric, "{t:?}");
}

#[test]
fn each_case_outcome_at_the_end_adds_up_to_the_final_point() {
    let cases = cases();
    let (model, sink) = memit_run(&cases);
    let last = &sink.points.last().unwrap().metrics;
    assert_eq!(sink.cases.len(), cases.len());
    for (i, o) in sink.cases.iter().enumerate() {
        assert_eq!((o.index, o.origin.as_str()), (i, cases[i].origin.as_str()));
        assert_eq!(o.requests[0].target, cases[i].requests[0].target);
        assert_eq!(o.requests[0].prompt, cases[i].requests[0].filled_prompt());
        for score in [o.prob.es, o.prob.ps, o.prob.ns] {
            assert!([0.0, 1.0].contains(&score.unwrap()), "{o:?}");
        }
        // A neighbour is listed as changed exactly when its predictions moved.
        let spe = o.token.specificity.unwrap();
        assert_eq!(o.changed_neighbours.is_empty(), spe == 1.0, "{o:?}");
        for n in &o.changed_neighbours {
            assert_ne!(n.before, n.after, "{n:?}");
            assert_eq!(n.answer, " Rome");
        }
    }
    // Five sequential edits move the shared neighbour's prediction somewhere.
    assert!(sink.cases.iter().any(|o| !o.changed_neighbours.is_empty()));
    // One item of each kind per case: the point's means are the means of the cases'.
    for metric in [
        Metric::Token(TokenMetric::Efficacy),
        Metric::Token(TokenMetric::Paraphrase),
        Metric::Token(TokenMetric::Specificity),
        Metric::Prob(ProbMetric::Es),
        Metric::Prob(ProbMetric::Nm),
    ] {
        let per_case = sink.cases.iter().map(|o| o.value(metric).unwrap());
        let mean = per_case.sum::<f64>() / cases.len() as f64;
        let total = metric.of(last).unwrap();
        assert!((mean - total).abs() < 1e-12, "{metric:?}: {mean} {last:?}");
    }
    // The outcomes are a pure function of the model and the references, for any selection
    // of cases in any order; the unedited model changes no neighbour.
    let mut model_w0 = tiny_model(Arch::Llama, 21);
    let reference_w0 = Reference::of(&mut model_w0, &cases, false).unwrap();
    let plain = EvalOptions::default();
    let again = evaluate(&model, &cases, &reference_w0, &[0, 1, 2, 3, 4], plain).unwrap();
    assert_eq!(again.cases, sink.cases);
    let unedited = evaluate(&model_w0, &cases, &reference_w0, &[4, 1], plain).unwrap();
    assert_eq!(
        unedited.cases.iter().map(|o| o.index).collect::<Vec<_>>(),
        [4, 1]
    );
    assert!(unedited
        .cases
        .iter()
        .all(|o| o.changed_neighbours.is_empty() && o.token.specificity == Some(1.0)));
}

#[test]
fn the_single_protocol_reports_each_case_right_after_its_own_edit() {
    let cases = cases();
    let (model, sink) = memit_bench(&cases, |r| r.protocol = Protocol::Single);
    // One point, at the end; the model is reset after the run.
    assert_eq!(sink.points.len(), 1);
    assert_eq!(model.touched_layers(), Vec::<usize>::new());
    let last = &sink.points[0].metrics;
    assert_eq!(last.cases, cases.len());
    assert_eq!(
        sink.cases.iter().map(|o| o.index).collect::<Vec<_>>(),
        (0..cases.len()).collect::<Vec<_>>()
    );
    // Each case is one item of each kind: the merged means are the cases' means.
    for metric in [
        Metric::Token(TokenMetric::Efficacy),
        Metric::Token(TokenMetric::Specificity),
        Metric::Prob(ProbMetric::Es),
    ] {
        let per_case = sink.cases.iter().map(|o| o.value(metric).unwrap());
        let mean = per_case.sum::<f64>() / cases.len() as f64;
        let total = metric.of(last).unwrap();
        assert!((mean - total).abs() < 1e-12, "{metric:?}: {mean} {last:?}");
    }
}

#[test]
fn fluency_is_measured_before_the_first_and_after_the_last_edit_when_prompts_exist() {
    let mut cases = cases();
    for c in &mut cases[..3] {
        c.generation_prompts = vec![format!("{} is", c.requests[0].subject)];
    }
    let (model, sink) = memit_run(&cases);
    let ge: Vec<Option<f64>> = sink
        .points
        .iter()
        .map(|p| p.metrics.generation.fluency)
        .collect();
    assert_eq!(sink.points.len(), 4, "points 0, 2, 4 and the end");
    assert!(ge[1].is_none() && ge[2].is_none(), "{ge:?}");
    for g in [ge[0], ge[3]] {
        // ~100 byte-level tokens of a random model: varied text, a few bits of entropy.
        let g = g.expect("fluency at point 0 and at the end");
        assert!(g > 1.0 && g < 10.0, "{g}");
    }
    // Deterministic: the same model and prompts give the same value.
    let again = generation_fluency(&model, &cases.iter().collect::<Vec<_>>()).unwrap();
    assert_eq!(again, ge[3]);
    // Cases without generation prompts have no fluency, and cost nothing.
    let plain = crate::eval::testkit::cases();
    assert_eq!(
        generation_fluency(&model, &plain.iter().collect::<Vec<_>>()).unwrap(),
        None
    );
    // The summary and the compare table carry it.
    let s = crate::eval::bench::summary::summarize("memit", &sink.points, &sink.records).unwrap();
    assert_eq!(s.fluency, ge[3]);
    let md = crate::eval::bench::table::markdown(&[("run".into(), s)]);
    assert!(md.contains("| GE |"), "{md}");
}

/// An AlphaEdit run logs its projector's rank per edited layer with every edit and in the
/// summary: the number of eigenvalues of the layer's C below the threshold.
#[test]
fn an_alphaedit_run_records_its_projector_ranks() {
    use crate::edit::linalg::symmetric_eigen;
    use crate::edit::{EditControl, Method};
    use crate::eval::testkit::{hparams, spec, stats};
    let cases = cases();
    let stats_dir = tempfile::tempdir().unwrap();
    let layers = hparams(Method::AlphaEdit).layers;
    let mut fresh = tiny_model(Arch::Llama, 21);
    let spectra: Vec<Vec<f64>> = stats(stats_dir.path())
        .second_moments(&mut fresh, &layers, &EditControl::default())
        .unwrap()
        .iter()
        .map(|c| symmetric_eigen(c.as_ref().as_ref()).unwrap().0)
        .collect();
    // A threshold inside the first layer's spectrum, so its rank is neither 0 nor d_ff.
    let threshold = spectra[0][spectra[0].len() / 2];
    let expected: Vec<usize> = spectra
        .iter()
        .map(|v| v.iter().filter(|&&x| x < threshold).count())
        .collect();
    assert!(
        expected[0] > 0 && expected[0] < fresh.config.d_ff,
        "{expected:?}"
    );

    let mut st = stats(stats_dir.path());
    let mut model = tiny_model(Arch::Llama, 21);
    let mut sink = Memory::default();
    let mut run = spec(Method::AlphaEdit, &mut st, None, None, None);
    run.hparams.nullspace_threshold = threshold;
    crate::eval::bench::run(&mut model, &cases, run, &mut sink).unwrap();
    let accepted: Vec<_> = sink
        .records
        .iter()
        .filter(|r| r.rejected.is_none())
        .collect();
    assert!(!accepted.is_empty());
    for r in accepted {
        assert_eq!(r.projector_rank, expected, "{r:?}");
    }
    let s =
        crate::eval::bench::summary::summarize("alphaedit", &sink.points, &sink.records).unwrap();
    assert_eq!(s.projector_rank, expected);
}

/// Each edit records the target's probability on the model right after it landed: with one
/// case, that is the final model's, exactly; and it is higher than on the unedited model.
#[test]
fn every_edit_records_its_target_probability_on_the_edited_model() {
    let cases = cases()[..1].to_vec();
    let items: Vec<(String, String)> = cases[0]
        .requests
        .iter()
        .map(|r| (r.filled_prompt(), r.target.clone()))
        .collect();
    let p = |m: &Model| {
        let nll = target_nll(m, &items).unwrap();
        nll.iter().map(|l| (-l).exp()).sum::<f64>() / nll.len() as f64
    };
    let before = p(&tiny_model(Arch::Llama, 21));
    let (model, sink) = memit_run(&cases);
    let after = p(&model);
    assert_eq!(sink.records.len(), 1);
    assert_eq!(sink.records[0].prob_post, Some(after));
    assert!(after > before, "{before} → {after}");
    let s = crate::eval::bench::summary::summarize("memit", &sink.points, &sink.records).unwrap();
    assert_eq!(s.post_edit_prob, Some(after));
}

#[test]
fn generation_metrics_decode_at_the_ends_and_every_point_has_intervals() {
    use crate::eval::bench::records::GenMetric;
    use crate::eval::bench::GenSchedule;
    use crate::eval::metrics::{exact_match, greedy_answers};
    let cases = cases();
    let (model, sink) = memit_bench(&cases, |r| r.generation = GenSchedule::Ends);
    let (first, last) = (&sink.points[0], sink.points.last().unwrap());
    // Between the ends no point decodes.
    assert!(sink.points.len() > 2);
    for p in &sink.points[1..sink.points.len() - 1] {
        assert!(p.metrics.gen.is_empty(), "{p:?}");
    }
    // On the unedited model every neighbour's answer is, by definition, unchanged.
    assert_eq!(first.metrics.gen.specificity, Some(1.0));
    for metric in GenMetric::ALL {
        let v = Metric::Gen(metric).of(&last.metrics).unwrap();
        assert!((0.0..=1.0).contains(&v), "{metric:?} {v}");
    }
    // Each case's answers are the edited model's greedy answers, and its exact match scores them.
    let asked: Vec<(String, String)> = cases
        .iter()
        .map(|c| (c.requests[0].filled_prompt(), c.requests[0].target.clone()))
        .collect();
    let said = greedy_answers(&model, &asked).unwrap();
    for (o, (answer, (_, target))) in sink.cases.iter().zip(said.iter().zip(&asked)) {
        assert_eq!(&o.answers[0], answer);
        assert_eq!(o.gen.efficacy_em, Some(exact_match(answer, target)));
    }
    // Five cases: every per-edit metric of every point has an interval around its mean.
    for p in &sink.points {
        for (metric, ci) in &p.metrics.intervals.0 {
            let m = metric.of(&p.metrics).unwrap();
            assert!(
                ci.lo <= m + 1e-12 && m <= ci.hi + 1e-12,
                "{metric:?} {m} {ci:?}"
            );
        }
        assert!(p
            .metrics
            .intervals
            .get(Metric::Token(TokenMetric::Efficacy))
            .is_some());
    }
    // Every point after the first splits the edits so far by age; the last holds one tenth per
    // case here, in edit order.
    assert!(first.retention.is_empty());
    let ages = &last.retention;
    assert_eq!(ages.len(), cases.len());
    for (d, o) in ages.iter().zip(&sink.cases) {
        assert_eq!((d.first, d.edits), (o.index, 1));
        assert_eq!(d.efficacy, o.token.efficacy);
    }
    // The intervals survive the trip through metrics.jsonl.
    let line = serde_json::to_string(last).unwrap();
    assert!(line.contains("\"token.efficacy\":{\"lo\":"), "{line}");
    let back: EvalPoint = serde_json::from_str(&line).unwrap();
    assert_eq!(&back, last);
}

#[test]
fn sequential_k_edits_k_cases_per_step_and_keeps_the_rest_for_the_last() {
    let steps = |p: &str, n| super::stream_steps(p.parse().unwrap(), n);
    assert_eq!(
        steps("sequential:3", 7),
        vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]
    );
    assert_eq!(steps("sequential", 2), vec![vec![0], vec![1]]);
    assert_eq!(steps("batch", 3), vec![vec![0, 1, 2]]);
}

#[test]
fn an_eval_sample_is_a_fixed_subset_of_its_size_and_keeps_the_order() {
    let s = EvalSample::draw(100, Some(10));
    assert_eq!(s, EvalSample::draw(100, Some(10)), "seeded: the same draw");
    let all: Vec<usize> = (0..100).collect();
    let picked = s.of(&all);
    assert_eq!(picked.len(), 10);
    assert!(picked.windows(2).all(|w| w[0] < w[1]), "{picked:?}");
    assert_ne!(
        picked,
        (0..10).collect::<Vec<_>>(),
        "a random draw, not a prefix"
    );
    // The edits so far hold the sampled cases among them.
    let first_half: Vec<usize> = (0..50).collect();
    let early = s.of(&first_half);
    assert!(early.iter().all(|ci| picked.contains(ci) && *ci < 50));
    // No size, or one at least the case count: every case.
    for size in [None, Some(100), Some(500)] {
        assert_eq!(EvalSample::draw(100, size).of(&all), all);
    }
}

#[test]
fn a_sampled_run_evaluates_only_the_sampled_cases_at_every_point() {
    let cases = cases();
    let (_, sink) = memit_bench(&cases, |r| r.eval_sample = Some(2));
    let sample = EvalSample::draw(cases.len(), Some(2)).of(&(0..cases.len()).collect::<Vec<_>>());
    assert_eq!(sample.len(), 2);
    let last = sink.points.last().unwrap();
    assert_eq!(last.edits, cases.len());
    assert_eq!(last.metrics.cases, 2);
    let evaluated: Vec<usize> = sink.cases.iter().map(|o| o.index).collect();
    assert_eq!(evaluated, sample);
    for p in &sink.points {
        // Point 0, the unedited model, scores every sampled case; later points the edited ones.
        let upto = if p.edits == 0 { cases.len() } else { p.edits };
        let due = sample.iter().filter(|&&ci| ci < upto).count();
        assert_eq!(p.metrics.cases, due, "point after {} edits", p.edits);
    }
}

/// A bench run of `method` over `cases` with targets optimized `batch` cases ahead, through
/// `targets` (a fresh cache is a fresh process's): the final weights of its edited layers, and
/// what it wrote.
fn ahead_run(
    method: crate::edit::Method,
    cases: &[EvalCase],
    batch: usize,
    targets: &mut TargetCache,
    configure: impl FnOnce(&mut BenchRun),
) -> (Vec<Vec<f32>>, Memory, bool) {
    use crate::eval::testkit::{spec, stats};
    let stats_dir = tempfile::tempdir().unwrap();
    let mut st = stats(stats_dir.path());
    let mut model = tiny_model(Arch::Llama, 21);
    let mut sink = Memory::default();
    let mut run = spec(method, &mut st, None, None, None);
    run.hparams.target_batch = batch;
    run.targets = Some(targets);
    configure(&mut run);
    let layers = run.hparams.layers.clone();
    let out = super::run(&mut model, cases, run, &mut sink).unwrap();
    let weights = layers
        .iter()
        .map(|&l| {
            let w = model.edit_weight(l).unwrap();
            w.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        })
        .collect();
    (weights, sink, out.complete)
}

/// Per edit: (targets found that the run did not optimize, targets it optimized ahead).
fn sources(sink: &Memory) -> Vec<(usize, usize)> {
    sink.records
        .iter()
        .map(|r| (r.targets_reused, r.targets_ahead))
        .collect()
}

/// Edits whose target the run optimized ahead, as 0/1 per edit.
fn ahead(sink: &Memory) -> Vec<usize> {
    sources(sink).iter().map(|&(_, a)| a).collect()
}

#[test]
fn d4s_optimizes_a_chunk_of_targets_ahead_and_a_resume_mid_chunk_changes_no_bit() {
    use crate::edit::Method::D4s;
    use crate::eval::bench::checkpoint::{load, CheckpointPolicy};
    let cases = cases();
    // Chunks of four cases: the first step of a chunk optimizes its four targets in one pass,
    // the next three find theirs; the fifth case is a chunk of one.
    let (straight, sink, complete) = ahead_run(D4s, &cases, 4, &mut TargetCache::new(), |_| {});
    assert!(complete);
    assert_eq!(sources(&sink), [(0, 0), (0, 1), (0, 1), (0, 1), (0, 0)]);

    // Stopped after two edits, inside the first chunk, and resumed by a fresh process whose
    // cache is empty: it optimizes the same chunk again and lands the same bits.
    let run_dir = tempfile::tempdir().unwrap();
    let policy = CheckpointPolicy {
        dir: run_dir.path().to_path_buf(),
        every: 1,
    };
    let (_, first, complete) = ahead_run(D4s, &cases, 4, &mut TargetCache::new(), |r| {
        r.checkpoint = Some(policy.clone());
        r.stop_after = Some(2);
    });
    assert!(!complete);
    assert_eq!(ahead(&first), [0, 1]);
    let ck = load(run_dir.path()).unwrap().expect("a checkpoint");
    let (resumed, second, complete) = ahead_run(D4s, &cases, 4, &mut TargetCache::new(), |r| {
        r.checkpoint = Some(policy.clone());
        r.resume = Some(ck);
    });
    assert!(complete);
    assert_eq!(ahead(&second), [0, 1, 0]);
    assert_eq!(resumed, straight, "the resumed run's weights differ");
    let probs =
        |s: &Memory| -> Vec<Option<f64>> { s.records.iter().map(|r| r.prob_final).collect() };
    let mut both = probs(&first);
    both.extend(probs(&second));
    assert_eq!(both, probs(&sink));

    // One target per pass (the opt-out) optimizes each fact when it comes.
    let (_, alone, _) = ahead_run(D4s, &cases, 1, &mut TargetCache::new(), |_| {});
    assert_eq!(sources(&alone), [(0, 0); 5]);
}

#[test]
fn targets_are_optimized_ahead_only_where_they_are_the_unedited_models() {
    use crate::edit::Method;
    let cases = cases();
    // MEMIT's targets in a stream depend on the edits before them: each is its own.
    let (_, sink, _) = ahead_run(Method::Memit, &cases, 4, &mut TargetCache::new(), |_| {});
    assert_eq!(sources(&sink), [(0, 0); 5]);
    // The single protocol starts every case from W0: MEMIT's chunk is optimized ahead too, and
    // a second run through the same cache finds every target, each counted as reused (its
    // seconds leave the optimization out) rather than as optimized ahead.
    let mut shared = TargetCache::new();
    let single = |r: &mut BenchRun| r.protocol = Protocol::Single;
    let (_, sink, _) = ahead_run(Method::Memit, &cases, 4, &mut shared, single);
    assert_eq!(ahead(&sink), [0, 1, 1, 1, 0]);
    let (_, again, _) = ahead_run(Method::Memit, &cases, 4, &mut shared, single);
    assert_eq!(sources(&again), [(1, 0); 5]);
    // Steps of several facts batch their own facts and read nothing ahead.
    let (_, sink, _) = ahead_run(Method::D4s, &cases, 4, &mut TargetCache::new(), |r| {
        r.protocol = Protocol::Batch { size: 2 }
    });
    assert_eq!(sources(&sink), [(0, 0); 5]);
}
