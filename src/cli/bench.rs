//! `d4s bench` (headless sequential-editing experiments) and `d4s compare`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use d4s::edit::Method;
use d4s::eval::bench::baseline::BaselineCache;
use d4s::eval::bench::checkpoint::{self, CheckpointPolicy};
use d4s::eval::bench::records::{self, DataRecord, Resumed, StatsRecord};
use d4s::eval::bench::{self, summary, table, BenchRun, GenSchedule, Protocol};
use d4s::eval::bench::{writer::RunWriter, RunConfig};
use d4s::eval::datasets::{self, EvalCase};
use d4s::eval::probes::{self, ProbeConfig, ProbeSet, Task};
use d4s::model::chat::ChatTemplateRecord;
use d4s::model::Model;

use super::cases::CaseArgs;
use super::edit::EditorArgs;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(flatten)]
    pub editor: EditorArgs,
    /// Several methods on the same edit stream, e.g. `rome,memit,d4s` (overrides --method).
    #[arg(long)]
    pub methods: Option<String>,
    #[command(flatten)]
    pub cases: CaseArgs,
    /// single, batch[:k] or sequential.
    #[arg(long, default_value = "sequential")]
    pub protocol: String,
    /// Re-evaluate all edits so far every k edits (the forgetting curve); the start and the end are
    /// always evaluated. Default: a fifth of the edits, so the curve has six points; 0: only the
    /// start and the end.
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Evaluate a fixed, seeded random sample of this many cases instead of all of them: every
    /// point scores the sampled cases edited so far (for 10,000-edit runs, where scoring every
    /// edit at every point would cost more than the edits).
    #[arg(long, value_name = "N")]
    pub eval_sample: Option<usize>,
    /// Downstream probes at every evaluation point: comma-separated (arc, arc_easy, mmlu, truthfulqa, winogrande, gsm8k, hellaswag).
    #[arg(long, default_value = "")]
    pub probes: String,
    /// Items per probe task (a seeded subset; the whole split when it has fewer). The default,
    /// 2400, gives a 95% interval of about ±2 points on a 50% accuracy (±1.96·√(0.25/2400));
    /// ARC-Easy's test split (2376) is then taken whole. `--probe-items 100` is ±10 points.
    #[arg(long, default_value_t = 2400)]
    pub probe_items: usize,
    /// Few-shot examples for the probes (default: each task's default).
    #[arg(long)]
    pub probe_shots: Option<usize>,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Repeat the run over K orders of the same edits (seeded shuffles 0..K, each in
    /// `--out/seed-k/`) and report each metric's mean ± sd over them in `--out/seeds.md`.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub seeds: usize,
    /// Evaluate MQuAKE multi-hop questions (generation; slower).
    #[arg(long)]
    pub multihop: bool,
    /// Where the `gen.*` metrics (greedy answers to every prompt, paraphrase and neighbour) are
    /// measured: `ends` (before the first and after the last edit), `every` evaluation point,
    /// or `off`.
    #[arg(long = "gen", default_value = "ends", value_name = "off|ends|every")]
    pub generation: String,
    /// Write a checkpoint every k edits (sequential and batch protocols; 0: never), so an
    /// interrupted run can be continued with --resume.
    #[arg(long, default_value_t = 25)]
    pub checkpoint_every: usize,
    /// Continue the run in --out from its last checkpoint (same command otherwise). Finished
    /// method folders are kept as they are; folders with no run yet are started.
    #[arg(long)]
    pub resume: bool,
    /// Start over in an --out folder that holds an unfinished run (its checkpoint is discarded).
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Stop after this many edits with a checkpoint written (continue later with --resume).
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Keep what a run measures on the unedited model before its first edit (the neighbours'
    /// reference answers, the targets' difficulty, point 0 with its probes) on disk, in DIR (by
    /// default `<d4s home>/baselines`), so the other settings of a sweep, the other methods and a
    /// resumed run of this build find it instead of measuring again. Safe for concurrent runs; a
    /// damaged file is measured again.
    #[arg(long, value_name = "DIR", num_args = 0..=1)]
    pub baseline_cache: Option<Option<PathBuf>>,
    /// When stderr is not a terminal (a run under nohup), write a progress line with the ETA to
    /// it at most every this many seconds (the terminal's progress bar replaces it otherwise).
    #[arg(long, default_value_t = d4s::eval::bench::writer::HEARTBEAT_SECS, value_name = "SECONDS")]
    pub progress_every: u64,
}

/// What to do with one method's run folder.
enum Start {
    Fresh,
    Resume(Box<checkpoint::Checkpoint>, checkpoint::Continuation),
    AlreadyDone,
}

/// The default `--eval-every` is a fifth of N: a resume with another N must name the original.
fn eval_every_hint(m: &checkpoint::Mismatch, a: &BenchArgs) -> &'static str {
    match m {
        checkpoint::Mismatch::Fields(f)
            if a.eval_every.is_none() && f.iter().any(|k| k == "eval_every") =>
        {
            "; without --eval-every the points are every fifth of the cases, so give the run's \
             own --eval-every to change their number"
        }
        _ => "",
    }
}

/// Decides, from what the folder holds and the flags, whether to start, continue or skip a run;
/// refuses to throw away an unfinished run unless told to.
fn plan_start(dir: &std::path::Path, config: &RunConfig, a: &BenchArgs) -> Result<Start> {
    let has_run = dir.join("config.json").is_file();
    // The metadata decides; the tensors (141 MiB for D4S on the default model) are read only to
    // resume, and then now, so a damaged file is reported before any method's run starts.
    let meta = checkpoint::load_meta(dir)
        .with_context(|| format!("reading the checkpoint in {}", dir.display()))?;
    if !a.resume {
        if let (Some((_, meta)), false) = (&meta, a.overwrite) {
            bail!(
                "{} holds an unfinished run (checkpoint after {} of {} edits): add --resume to \
                 continue it, or --overwrite to start over",
                dir.display(),
                meta.edits,
                config.planned_edits()
            );
        }
        return Ok(Start::Fresh);
    }
    match meta {
        Some((_, meta)) => {
            let continuation =
                checkpoint::continuation(&meta.identity, &config.identity(), meta.edits).map_err(
                    |m| {
                        anyhow!(
                            "cannot resume the run in {}: {m}{} (start it over with --overwrite, \
                             or use another --out)",
                            dir.display(),
                            eval_every_hint(&m, a)
                        )
                    },
                )?;
            let ck = checkpoint::load(dir)
                .with_context(|| format!("reading the checkpoint in {}", dir.display()))?
                .context("the checkpoint disappeared while it was being read")?;
            Ok(Start::Resume(Box::new(ck), continuation))
        }
        None if !has_run => Ok(Start::Fresh),
        None if dir.join("summary.json").is_file() => {
            let done = records::load_config(dir)?;
            if let Ok(checkpoint::Continuation::Replanned { from, to }) =
                checkpoint::continuation(&done.identity(), &config.identity(), 0)
            {
                bail!(
                    "{} holds a finished run of {from} edits, and a finished run keeps no \
                     checkpoint, so it cannot go on to {to}: start it over with --overwrite or use \
                     another --out (to lengthen a run later, stop it before its end: --stop-after)",
                    dir.display()
                );
            }
            let diff = checkpoint::identity_differences(&done.identity(), &config.identity());
            if !diff.is_empty() {
                bail!(
                    "{} holds a finished run whose {} differ from this command's (use another \
                     --out, or run without --resume to replace it)",
                    dir.display(),
                    diff.join(", ")
                );
            }
            Ok(Start::AlreadyDone)
        }
        None => bail!(
            "{} holds a run without a checkpoint (started without checkpoints, or stopped before \
             the first one): run the command without --resume to start it over",
            dir.display()
        ),
    }
}

#[derive(Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    pub bench: BenchArgs,
    /// One axis of the grid, `key=v1,v2,…` (any `--set` key; repeat for more axes, which
    /// multiply; commas inside brackets belong to the value: `layers=[3,4],[4,5]`).
    #[arg(long = "grid", required = true, value_name = "KEY=V1,V2,…")]
    pub grid: Vec<String>,
    /// How the best setting is chosen: `avg` (mean of token efficacy, paraphrase and
    /// specificity), `prob` (mean of ES, PS, NS) or `gen` (mean of the greedy-generation
    /// efficacy, paraphrase and neighbour metrics).
    #[arg(long, default_value = "avg")]
    pub criterion: String,
}

/// `d4s sweep`: one bench run per setting of the grid, on a training split, then the table,
/// the frontier and the best setting.
pub fn sweep(model: &mut Model, a: &SweepArgs, command_line: &str) -> Result<()> {
    use d4s::eval::bench::sweep::{self, Criterion, SweepRow};
    let criterion: Criterion = a.criterion.parse()?;
    if a.bench.methods.is_some() || a.bench.seeds > 1 {
        bail!("a sweep tunes one --method; --methods and --seeds are for bench");
    }
    let method = a.bench.editor.method()?;
    let data_dir = a.bench.cases.data_dir();
    let name = a.bench.cases.data.as_deref().unwrap_or("counterfact-train");
    let path = datasets::resolve(name, data_dir.as_deref())?;
    sweep::refuse_evaluation_data(&path, data_dir.as_deref())?;
    let settings = sweep::grid(&a.grid)?;
    // Every setting is checked before the first run, so a typo fails now, not hours in.
    let runs: Vec<(sweep::Setting, BenchArgs)> = settings
        .into_iter()
        .map(|setting| {
            let mut args = a.bench.clone();
            args.editor.overrides.extend(sweep::overrides(&setting));
            args.editor
                .hparams_for(method, model)
                .with_context(|| format!("setting {}", sweep::overrides(&setting).join(" ")))?;
            args.cases.data = Some(path.display().to_string());
            args.out = a.bench.out.join(sweep::folder_name(&setting));
            Ok((setting, args))
        })
        .collect::<Result<_>>()?;
    let total = runs.len();
    let mut rows = Vec::new();
    for (k, (setting, args)) in runs.into_iter().enumerate() {
        println!(
            "setting {} of {total}: {} → {}",
            k + 1,
            sweep::overrides(&setting).join(" "),
            args.out.display()
        );
        run(model, &args, command_line)?;
        let loaded = records::load_run(&args.out)?;
        match summary::summarize(method.name(), &loaded.points, &loaded.records) {
            Some(s) if s.edits >= loaded.config.planned_edits() => rows.push(SweepRow {
                setting,
                dir: args.out.clone(),
                summary: s,
            }),
            _ => {
                println!(
                    "the sweep stopped before every setting finished; continue with the same \
                     command and --resume"
                );
                return Ok(());
            }
        }
    }
    let (md, _) = sweep::report(&a.bench.out, method.name(), &rows, criterion)?;
    println!("\n{md}");
    println!(
        "wrote {}, {} and {}",
        a.bench.out.join("sweep.md").display(),
        a.bench.out.join("sweep.csv").display(),
        a.bench.out.join("frontier.svg").display()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Run folders written by `d4s bench`.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Also write compare.md and the overlaid plots into this folder (without it, the table is
    /// only printed).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn parse_probes(spec: &str) -> Result<Vec<Task>> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "none")
        .map(|s| Ok(s.parse::<Task>()?))
        .collect()
}

/// The evaluation cadence a run uses: `--eval-every k`, none for 0 (only the ends), and by
/// default a fifth of the edits. (With only the ends evaluated every curve was a straight line.)
fn eval_every(asked: Option<usize>, edits: usize) -> Option<usize> {
    match asked {
        Some(0) => None,
        Some(k) => Some(k),
        None => Some((edits / 5).max(1)),
    }
}

pub fn run(model: &mut Model, a: &BenchArgs, command_line: &str) -> Result<()> {
    let methods: Vec<Method> = match &a.methods {
        Some(list) => list
            .split(',')
            .map(|m| m.trim().parse::<Method>())
            .collect::<Result<_, _>>()?,
        None => vec![a.editor.method()?],
    };
    if methods.is_empty() {
        bail!("no method given");
    }
    let protocol: Protocol = a.protocol.parse()?;
    let generation: GenSchedule = a.generation.parse()?;
    let loaded = a.cases.load(model, "counterfact", a.editor_seed())?;
    let data_dir = loaded.data_dir.clone();
    let cases = loaded.cases;
    let tasks = parse_probes(&a.probes)?;
    let probe_cfg = ProbeConfig {
        data_dir: data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("../shared/data")),
        limit: Some(a.probe_items),
        shots: a.probe_shots,
        ..Default::default()
    };
    let probe_sets: Vec<ProbeSet> = tasks
        .iter()
        .map(|&t| probes::prepare(t, &probe_cfg, model))
        .collect::<Result<_, _>>()?;
    let plan = Plan {
        methods,
        protocol,
        generation,
        path: loaded.path,
        sha256: loaded.sha256,
        kind: loaded.kind,
        skipped: loaded.skipped,
        tasks,
        probe_cfg,
        probe_sets,
        chat_template: loaded.chat_template,
    };
    if a.seeds <= 1 {
        run_methods(model, a, &plan, &cases, &a.out, None, command_line)?;
        return Ok(());
    }
    let mut seed_dirs = Vec::new();
    for seed in 0..a.seeds as u64 {
        let out = a.out.join(format!("seed-{seed}"));
        println!(
            "order {} of {}: edits shuffled with seed {seed} → {}",
            seed + 1,
            a.seeds,
            out.display()
        );
        let (_, stopped) = run_methods(
            model,
            a,
            &plan,
            &datasets::shuffled(&cases, seed),
            &out,
            Some(seed),
            command_line,
        )?;
        if stopped {
            println!("stopped before every order ran; continue with the same command and --resume");
            return Ok(());
        }
        seed_dirs.push(out);
    }
    let md = bench::seeds::write(&a.out, &plan.method_names(), &seed_dirs)?;
    println!("\n{md}");
    Ok(())
}

/// What every method's run of a command shares: the data, the schedule and the probes.
struct Plan {
    methods: Vec<Method>,
    protocol: Protocol,
    generation: GenSchedule,
    path: PathBuf,
    sha256: String,
    kind: String,
    skipped: usize,
    tasks: Vec<Task>,
    probe_cfg: ProbeConfig,
    probe_sets: Vec<ProbeSet>,
    chat_template: Option<ChatTemplateRecord>,
}

impl Plan {
    fn method_names(&self) -> Vec<String> {
        self.methods.iter().map(|m| m.name().to_string()).collect()
    }
}

/// Runs every method of the plan on `cases` into `out` (one folder per method when there are
/// several); returns the run folders and whether a run stopped before its end.
fn run_methods(
    model: &mut Model,
    a: &BenchArgs,
    plan: &Plan,
    cases: &[EvalCase],
    out: &std::path::Path,
    order_seed: Option<u64>,
    command_line: &str,
) -> Result<(Vec<PathBuf>, bool)> {
    let Plan {
        methods,
        protocol,
        generation,
        path,
        tasks,
        probe_cfg,
        probe_sets,
        ..
    } = plan;
    let (protocol, generation) = (*protocol, *generation);
    let several = methods.len() > 1;
    let checkpointing = a.checkpoint_every > 0 && protocol != Protocol::Single;
    if a.stop_after.is_some() && !checkpointing {
        bail!("--stop-after needs checkpoints (a sequential or batch protocol and --checkpoint-every > 0)");
    }
    let interrupt = if checkpointing {
        stop_on_ctrl_c()
    } else {
        None
    };
    let mut run_dirs = Vec::new();
    let mut stopped = false;
    // Every method's folder is checked before any run starts, so a refusal (an unfinished run,
    // other settings) comes now and not after hours of another method's edits.
    let mut plans = Vec::new();
    for &method in methods {
        let hp = a.editor.hparams_for(method, model)?;
        let stats = a.editor.stats()?;
        let dir = bench::method_dir(out, method.name(), several);
        let config = RunConfig {
            d4s_version: env!("CARGO_PKG_VERSION").into(),
            started: d4s::util::now(),
            model: model.record(),
            method: method.name().into(),
            hparams: serde_json::to_value(&hp)?,
            data: DataRecord {
                path: path.clone(),
                sha256: plan.sha256.clone(),
                kind: plan.kind.clone(),
                n: cases.len(),
                skipped: plan.skipped,
                mqd: a.cases.mqd.clone(),
                order_seed,
            },
            protocol,
            eval_every: eval_every(a.eval_every, cases.len()),
            eval_sample: a.eval_sample,
            probes: tasks.iter().map(|t| t.name().to_string()).collect(),
            probe_config: probe_cfg.clone(),
            stats: StatsRecord {
                config: stats.config.clone().pinned(model.config.d_ff),
                corpus_id: stats.corpus_id()?,
            },
            seed: hp.seed,
            threads: std::env::var("RAYON_NUM_THREADS")
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(1),
            command: command_line.into(),
            resumed: vec![],
            generation: Some(generation),
            chat_template: plan.chat_template.clone(),
            metric_protocols: records::metric_protocols(),
        };
        let start = plan_start(&dir, &config, a)?;
        plans.push((method, hp, stats, dir, config, start));
    }
    // Shared by the methods: on the unedited model MEMIT, D4S and AlphaEdit optimize the same
    // targets, so under the single-edit protocol only the first of them pays for each record's.
    let mut targets = a.editor.targets();
    // Targets the runs found and did not optimize (not those a run optimized ahead itself).
    let mut reused = 0;
    for (method, hp, mut stats, dir, config, start) in plans {
        if let Start::AlreadyDone = start {
            println!(
                "{}: already complete in {} (kept as it is)",
                method.label(),
                dir.display()
            );
            run_dirs.push(dir);
            continue;
        }
        let pb = ProgressBar::new(cases.len() as u64);
        pb.set_style(
            ProgressStyle::with_template(
                "{prefix:>10} [{bar:30}] {pos}/{len} edits, {elapsed} elapsed, ETA {eta} — {msg}",
            )
            .expect("valid")
            .progress_chars("=> "),
        );
        pb.set_prefix(method.label());
        let (mut writer, resume) = match start {
            Start::Resume(ck, continuation) => {
                let writer = RunWriter::resume(&dir, ck.meta.edits, Some(pb.clone()))?;
                record_resume(&dir, &ck.meta, &config, continuation, command_line)?;
                if let checkpoint::Continuation::Replanned { from, to } = continuation {
                    d4s::util::say(
                        &pb,
                        format!(
                            "{}: the run planned {from} edits; it now goes on to {to}",
                            method.label()
                        ),
                    );
                }
                d4s::util::say(
                    &pb,
                    format!(
                        "{}: continuing {} from its checkpoint after {} of {} edits",
                        method.label(),
                        dir.display(),
                        ck.meta.edits,
                        cases.len()
                    ),
                );
                pb.set_position(ck.meta.edits as u64);
                pb.reset_eta();
                (writer, Some(*ck))
            }
            _ => {
                checkpoint::remove(&dir)?;
                (RunWriter::create(&dir, &config, Some(pb.clone()))?, None)
            }
        };
        writer.set_heartbeat(std::time::Duration::from_secs(a.progress_every));
        let spec = BenchRun {
            hparams: hp,
            protocol,
            eval_every: eval_every(a.eval_every, cases.len()),
            eval_sample: a.eval_sample,
            probes: probe_sets,
            multihop: a.multihop,
            generation,
            stats: &mut stats,
            targets: Some(&mut targets),
            checkpoint: checkpointing.then(|| CheckpointPolicy {
                dir: dir.clone(),
                every: a.checkpoint_every,
            }),
            identity: config.identity(),
            resume,
            stop_after: a.stop_after,
            interrupt: interrupt.clone(),
            baseline: a.baseline_cache.as_ref().map(|dir| {
                BaselineCache::new(dir.clone().unwrap_or_else(bench::baseline::default_dir))
            }),
        };
        let outcome = bench::run(model, cases, spec, &mut writer)
            .with_context(|| format!("{} run", method.label()))?;
        pb.finish_and_clear();
        model.reset_edits();
        if outcome.baseline_reused {
            println!(
                "{}: the unedited model's measurement (neighbour references, target difficulty, \
                 point 0) came from the baseline cache, as this build measured it for another run",
                method.label()
            );
        }
        if !outcome.complete {
            let done = writer.records.len();
            let interrupted = interrupt.as_ref().is_some_and(|f| f.load(Ordering::SeqCst));
            summary::plot_run(&dir, method.name(), &writer.points, &writer.records)?;
            println!(
                "{}: stopped after {done} of {} edits; the checkpoint is in {}. Continue with the \
                 same command and --resume.",
                method.label(),
                cases.len(),
                checkpoint::path(&dir).display()
            );
            stopped = true;
            run_dirs.push(dir);
            if interrupted {
                break;
            }
            continue;
        }
        checkpoint::remove(&dir)?;
        reused += writer
            .records
            .iter()
            .map(|r| r.targets_reused)
            .sum::<usize>();
        match summary::finish_run(&dir, method.name(), &writer.points, &writer.records)? {
            Some(s) => println!(
                "{}: {} edits — efficacy {:.3}, paraphrase {}, specificity {}, post-edit p {}, {} rejected → {}",
                method.label(),
                s.edits,
                s.efficacy.unwrap_or(f64::NAN),
                s.paraphrase.map_or("–".into(), |v| format!("{v:.3}")),
                s.specificity.map_or("–".into(), |v| format!("{v:.3}")),
                s.post_edit_prob.map_or("–".into(), |v| format!("{v:.3}")),
                s.rejected,
                dir.display()
            ),
            None => println!("{}: no evaluation points", method.label()),
        }
        run_dirs.push(dir);
    }
    if reused > 0 {
        println!(
            "{reused} targets of the unedited model came from the target cache, optimized by an \
             earlier method of this command (MEMIT, D4S and AlphaEdit pose the same ones), an \
             earlier run or `d4s targets`: bit-identical, and their time is not in these runs'"
        );
    }
    if several && !stopped {
        let (md, _) = table::compare(&run_dirs, out)?;
        println!("\n{md}");
    }
    Ok((run_dirs, stopped))
}

/// Ctrl-C (or SIGTERM) once: finish the current edit, write a checkpoint and stop; twice: quit
/// at once (the last periodic checkpoint stays). Returns the flag the run watches.
#[cfg(unix)]
fn stop_on_ctrl_c() -> Option<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // The conditional shutdown first: it fires on a signal that finds the flag already set.
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag)).ok()?;
        signal_hook::flag::register(sig, Arc::clone(&flag)).ok()?;
    }
    // Say so at once; the run itself only looks at the flag between edits.
    let watched = Arc::clone(&flag);
    std::thread::spawn(move || loop {
        if watched.load(Ordering::SeqCst) {
            eprintln!(
                "\nstopping after the current edit with a checkpoint (Ctrl-C again quits now)"
            );
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    });
    Some(flag)
}

#[cfg(not(unix))]
fn stop_on_ctrl_c() -> Option<Arc<AtomicBool>> {
    None
}

/// Notes in `config.json` that the run was continued (when, from which point, how), and the
/// number of cases it now plans.
fn record_resume(
    dir: &std::path::Path,
    ck: &checkpoint::CheckpointMeta,
    now: &RunConfig,
    continuation: checkpoint::Continuation,
    command_line: &str,
) -> Result<()> {
    let mut config = records::load_config(dir)?;
    let planned_before = match continuation {
        checkpoint::Continuation::Same => None,
        checkpoint::Continuation::Replanned { from, .. } => Some(from),
    };
    config.data.n = now.data.n;
    config.data.skipped = now.data.skipped;
    config.resumed.push(Resumed {
        at: d4s::util::now(),
        after_edits: ck.edits,
        command: command_line.into(),
        planned_before,
    });
    d4s::util::write_atomic(
        &dir.join("config.json"),
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )?;
    Ok(())
}

/// The seed of the MQD question types' random choices (shared by `bench` and `targets`).
pub const EDITOR_SEED: u64 = 42;

impl BenchArgs {
    fn editor_seed(&self) -> u64 {
        EDITOR_SEED
    }
}

pub fn compare(a: &CompareArgs) -> Result<()> {
    let Some(out) = &a.out else {
        println!("{}", table::compare_table(&a.runs)?);
        println!("(add --out DIR to write compare.md and the overlaid plots)");
        return Ok(());
    };
    let (md, files) = table::compare(&a.runs, out)?;
    println!("{md}");
    println!(
        "wrote {}",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::eval_every;

    #[test]
    fn the_default_evaluation_cadence_draws_a_curve() {
        assert_eq!(eval_every(None, 100), Some(20), "six points: 0, 20, …, 100");
        assert_eq!(eval_every(None, 3), Some(1));
        assert_eq!(eval_every(Some(7), 100), Some(7));
        assert_eq!(eval_every(Some(0), 100), None, "0: only the ends");
    }
}
