//! `d4s edit`: apply edits from the command line and show what changed.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use d4s::edit::request::read_jsonl;
use d4s::edit::{
    CorpusSpec, EditControl, EditRequest, HParams, Method, Probe, Progress, StatsCache,
    StatsConfig, TargetCache,
};
use d4s::eval::predict::{continuations, top_next};
use d4s::model::Model;
use d4s::session::Runner;

/// Options shared by every command that edits (edit, bench, replay, TUI).
#[derive(Args, Debug, Clone)]
pub struct EditorArgs {
    /// Editing method: d4s, rome, memit, pmet, alphaedit, ft-l, ft-m, grace, ultraedit, encore.
    #[arg(long, default_value = "d4s")]
    pub method: String,
    /// Hyperparameter file: our TOML/JSON, or an EasyEdit hparams YAML.
    #[arg(long)]
    pub hparams: Option<PathBuf>,
    /// Override one hyperparameter, e.g. `--set layers=[3,4,5] --set v_lr=0.2`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Corpus for the key statistics C: `model` (text sampled from the model; the default), a
    /// text file, a folder of .txt, or `file.json[l]#field`.
    #[arg(long, default_value = "model")]
    pub stats_corpus: String,
    /// Token budget of the statistics (default: 10 × d_ff; BENCHMARKS.md measures how few give
    /// the same edits).
    #[arg(long)]
    pub stats_tokens: Option<usize>,
    /// Keep the targets optimized on the unedited model on disk (in DIR, by default
    /// `<d4s home>/targets`), so a rerun, a sweep or another method finds them instead of
    /// optimizing again. Safe for concurrent runs; a damaged file is recomputed.
    // `Some(None)`: the flag without a DIR. An empty default value would not do: clap's path
    // parser refuses an empty path, so the bare flag failed to parse.
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    pub target_cache: Option<Option<PathBuf>>,
}

impl EditorArgs {
    pub fn method(&self) -> Result<Method> {
        Ok(self.method.parse::<Method>()?)
    }

    pub fn hparams_for(&self, method: Method, model: &Model) -> Result<HParams> {
        let mut hp = HParams::defaults(method, &model.config);
        if let Some(p) = &self.hparams {
            hp = hp.load_file(p, &model.config)?;
        }
        let hp = hp.with_overrides(&self.overrides)?;
        hp.validate(&model.config)?;
        Ok(hp)
    }

    /// The target cache these options ask for: in memory, or also on disk.
    pub fn targets(&self) -> TargetCache {
        match &self.target_cache {
            None => TargetCache::new(),
            Some(None) => TargetCache::persistent(d4s::edit::target_cache::disk::default_dir()),
            Some(Some(dir)) => TargetCache::persistent(dir.clone()),
        }
    }

    pub fn stats(&self) -> Result<StatsCache> {
        Ok(StatsCache::new(StatsConfig {
            corpus: CorpusSpec::parse(&self.stats_corpus)?,
            tokens: self.stats_tokens,
            ..Default::default()
        }))
    }
}

#[derive(Args, Debug)]
pub struct EditArgs {
    #[command(flatten)]
    pub editor: EditorArgs,
    /// The subject of the fact (must occur in the prompt).
    #[arg(long)]
    pub subject: Option<String>,
    /// The prompt the target should follow, e.g. "The Eiffel Tower is located in the city of".
    #[arg(long)]
    pub prompt: Option<String>,
    /// The new target, e.g. "Rome".
    #[arg(long)]
    pub target: Option<String>,
    /// Paraphrases of the prompt (should now give the target too).
    #[arg(long = "paraphrase")]
    pub paraphrases: Vec<String>,
    /// Unrelated prompts (should not change).
    #[arg(long = "neighbor")]
    pub neighbors: Vec<String>,
    /// Edit requests as JSONL (subject, prompt, target, optional ground_truth, paraphrases, neighbors).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Stop at the first bad line of --file instead of skipping it (bench's --strict).
    #[arg(long)]
    pub strict: bool,
    /// Apply the requests one step after another instead of as one batch.
    #[arg(long)]
    pub sequential: bool,
    /// Requests per step with --sequential.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Write the edited model (Hugging Face layout) to this directory.
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Journal the edits as a session (optionally named; default: timestamp + method).
    #[arg(long, num_args = 0..=1, default_missing_value = "")]
    pub session: Option<String>,
    /// Where sessions live.
    #[arg(long, default_value = "sessions")]
    pub sessions_dir: PathBuf,
}

pub fn progress_bar() -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}").expect("valid template"),
    );
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}

pub fn describe_progress(p: &Progress) -> String {
    match p {
        Progress::Phase(ph) => format!("{ph:?}"),
        Progress::TargetStep {
            step,
            of,
            loss,
            prob,
        } => format!(
            "target step {}/{of}: loss {loss:.3}, p(target) {prob:.3}",
            step + 1
        ),
        Progress::Tokens { done, total } => format!("statistics: {done}/{total} tokens"),
        Progress::Warning(w) => format!("warning: {w}"),
    }
}

/// Runs one step through a runner (journaled if it has a session) with a spinner showing the
/// phase; returns the mean final target probability. A step of one fact is handed the facts
/// queued behind it (`upcoming`, in order), whose targets may be optimized with its own in one
/// pass ([`Runner::apply_queued`]).
pub fn apply_runner_step(
    runner: &mut Runner,
    requests: &[EditRequest],
    upcoming: &[EditRequest],
    label: &str,
) -> Result<f64> {
    let pb = progress_bar();
    let label = label.to_string();
    let report = |p: Progress| match p {
        Progress::Warning(w) => d4s::util::say(&pb, format!("warning: {w}")),
        p => pb.set_message(format!("{label}: {}", describe_progress(&p))),
    };
    let ctl = EditControl {
        cancel: None,
        progress: Some(&report),
    };
    let out = match requests {
        [request] => runner.apply_queued(request, upcoming, ctl),
        _ => runner.apply(requests, ctl),
    };
    pb.finish_and_clear();
    let (_, outcome) = out?;
    Ok(outcome.targets.iter().map(|t| t.prob_final).sum::<f64>()
        / outcome.targets.len().max(1) as f64)
}

fn requests_from(args: &EditArgs) -> Result<Vec<EditRequest>> {
    if let Some(f) = &args.file {
        if args.subject.is_some() || args.prompt.is_some() || args.target.is_some() {
            bail!("give either --file or --subject/--prompt/--target, not both");
        }
        // Like bench: bad lines are skipped and named, unless --strict.
        let (reqs, skipped) = read_jsonl(f, args.strict)?;
        for s in &skipped {
            eprintln!("skipped: {s}");
        }
        if reqs.is_empty() {
            bail!("{}: no usable edit requests", f.display());
        }
        return Ok(reqs);
    }
    let (Some(subject), Some(prompt), Some(target)) = (&args.subject, &args.prompt, &args.target)
    else {
        bail!("an edit needs --subject, --prompt and --target (or --file facts.jsonl)");
    };
    let mut r = EditRequest::new(subject, prompt, target);
    r.paraphrases = args.paraphrases.clone();
    r.neighbors = args
        .neighbors
        .iter()
        .map(|p| Probe {
            prompt: p.clone(),
            answer: None,
        })
        .collect();
    r.validate()?;
    Ok(vec![r])
}

/// The prompts shown before and after: each request's prompt, first paraphrase and neighbour.
fn display_prompts(requests: &[EditRequest]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for r in requests.iter().take(5) {
        out.push(("prompt".to_string(), r.filled_prompt()));
        if let Some(p) = r.paraphrases.first() {
            out.push(("paraphrase".to_string(), p.clone()));
        }
        if let Some(n) = r.neighbors.first() {
            out.push(("neighbour".to_string(), n.prompt.clone()));
        }
    }
    out
}

fn show_predictions(model: &Model, prompts: &[(String, String)]) -> Result<Vec<String>> {
    let texts: Vec<String> = prompts.iter().map(|(_, p)| p.clone()).collect();
    let tops = top_next(model, &texts, 3)?;
    let conts = continuations(model, &texts, 6)?;
    Ok(tops
        .iter()
        .zip(&conts)
        .map(|(top, cont)| {
            let t: Vec<String> = top
                .iter()
                .map(|p| format!("{:?} {:.2}", p.token, p.prob))
                .collect();
            format!(
                "{} … [{}]",
                cont.trim_end().replace('\n', "⏎"),
                t.join(", ")
            )
        })
        .collect())
}

pub fn run(model: Model, args: &EditArgs) -> Result<()> {
    let requests = requests_from(args)?;
    let method = args.editor.method()?;
    let hp = args.editor.hparams_for(method, &model)?;
    let stats = args.editor.stats()?;
    let mut runner = Runner::new(model, hp.clone(), stats).with_targets(args.editor.targets());
    if let Some(name) = &args.session {
        let name = if name.is_empty() {
            d4s::session::journal::default_name(method)
        } else {
            name.clone()
        };
        runner.start_session(&args.sessions_dir, &name)?;
        runner
            .session
            .as_mut()
            .expect("started")
            .record_requested(&requests)?;
        println!("journaling to {}", args.sessions_dir.join(&name).display());
    }
    println!(
        "{} on {} — layers {:?}, {} request(s){}",
        method.label(),
        runner.model.info.name,
        hp.layers,
        requests.len(),
        if args.sequential {
            format!(", sequential in steps of {}", args.batch_size)
        } else {
            String::new()
        }
    );
    let prompts = display_prompts(&requests);
    let before = show_predictions(&runner.model, &prompts)?;
    let t0 = std::time::Instant::now();
    let step_len = if args.sequential {
        args.batch_size.max(1)
    } else {
        requests.len()
    };
    let steps: Vec<&[EditRequest]> = requests.chunks(step_len).collect();
    for (i, step) in steps.iter().enumerate() {
        let label = format!("step {}/{}", i + 1, steps.len());
        // The requests after this step (the steps are consecutive chunks of `requests`).
        let upcoming = &requests[(i * step_len + step.len()).min(requests.len())..];
        let p = apply_runner_step(&mut runner, step, upcoming, &label)
            .with_context(|| format!("edit step {} ({})", i + 1, step[0].describe()))?;
        if steps.len() > 1 {
            println!("  step {:>3}: p(target) {p:.3}", i + 1);
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    if let Some(session) = &runner.session {
        if let Err(e) = d4s::session::snapshot::write(&session.dir, &runner.model) {
            eprintln!("warning: could not write the weight snapshot ({e}); export will replay");
        }
    }
    let after = show_predictions(&runner.model, &prompts)?;
    println!();
    for (((kind, prompt), b), a) in prompts.iter().zip(&before).zip(&after) {
        println!("{kind:<10} {prompt}");
        println!("  before   {b}");
        println!("  after    {a}");
    }
    if let Some(last) = runner.history.last() {
        let out = &last.outcome;
        println!();
        if !out.layers.is_empty() {
            println!("layer   ‖ΔW‖_F (step)   ‖W−W0‖₁/n   ‖W‖₁/n");
            for l in &out.layers {
                println!(
                    "{:>5}   {:>12.4e}   {:>10.3e}   {:.5}",
                    l.layer,
                    l.delta_fro,
                    l.total_l1 / l.numel as f64,
                    l.weight_l1 / l.numel as f64
                );
            }
        }
        for (r, t) in last.requests.iter().zip(&out.targets).take(5) {
            println!(
                "p(target | prompt): {:.3} → {:.3} ({} steps) — {}",
                t.prob_initial,
                t.prob_final,
                t.steps,
                r.describe()
            );
        }
        let tm = &out.timings;
        println!(
            "time: {elapsed:.1} s total (last step: statistics {:.1} s, templates {:.1} s, target {:.1} s, keys {:.1} s, solve {:.1} s)",
            tm.statistics, tm.templates, tm.target, tm.keys, tm.solve
        );
    }
    if let Some(dir) = &args.save {
        d4s::session::export::export_hf(&runner.model, dir, false)?;
        println!("saved the edited model to {}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::{CommandFactory, Parser};

    use super::super::{Cli, Command};
    use super::EditorArgs;

    fn editor_args(argv: &[&str]) -> EditorArgs {
        let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        match cli.command {
            Some(Command::Edit(a)) => a.editor,
            Some(Command::Bench(a)) => a.editor,
            Some(Command::Sweep(a)) => a.bench.editor,
            Some(Command::Tui(a)) => a.editor,
            other => panic!("not an editing command: {other:?}"),
        }
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_bare_target_cache_flag_means_the_default_folder_in_every_command() {
        let default = d4s::edit::target_cache::disk::default_dir();
        let cases: [&[&str]; 5] = [
            &["d4s", "edit", "--target-cache", "--subject", "x"],
            &["d4s", "bench", "--target-cache", "--out", "o"],
            &["d4s", "bench", "--out", "o", "--target-cache"],
            &[
                "d4s",
                "sweep",
                "--grid",
                "l2=1,2",
                "--target-cache",
                "--out",
                "o",
            ],
            &["d4s", "tui", "--target-cache"],
        ];
        for argv in cases {
            let targets = editor_args(argv).targets();
            assert_eq!(targets.disk_dir(), Some(default.as_path()), "{argv:?}");
        }
    }

    #[test]
    fn a_target_cache_folder_is_used_and_no_flag_keeps_targets_in_memory() {
        let with_dir = editor_args(&["d4s", "bench", "--target-cache", "runs/tc", "--out", "o"]);
        assert_eq!(with_dir.targets().disk_dir(), Some(Path::new("runs/tc")));
        let without = editor_args(&["d4s", "bench", "--out", "o"]);
        assert_eq!(without.targets().disk_dir(), None);
    }
}
