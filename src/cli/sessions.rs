//! `d4s sessions`, `replay`, `resume`, `export`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use d4s::edit::{HParams, Method, StatsCache};
use d4s::eval::probes::{self, ProbeConfig, Task};
use d4s::model::{load, Model, ModelSpec};
use d4s::session::bisect as bisection;
use d4s::session::export::export_hf;
use d4s::session::journal::{self, Event};
use d4s::session::replay::{pending_requests, Runner};
use d4s::session::snapshot::{self, Snapshot};
use d4s::session::table::replay_table;

use super::{device, GlobalArgs};

pub fn list(dir: &Path) -> Result<()> {
    let rows = journal::list(dir)?;
    if rows.is_empty() {
        println!("no sessions under {}", dir.display());
        return Ok(());
    }
    println!(
        "{:<32} {:<36} {:<20} {:>6}  last change",
        "name", "model", "methods", "edits"
    );
    for r in rows {
        match r {
            Ok(s) => println!(
                "{:<32} {:<36} {:<20} {:>6}  {}",
                s.name,
                s.model,
                s.methods
                    .iter()
                    .map(|m| m.name())
                    .collect::<Vec<_>>()
                    .join(","),
                s.edits,
                s.last_change
            ),
            Err(e) => println!("(unreadable) {e}"),
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The session directory, e.g. sessions/20261125-101500-d4s.
    pub session: PathBuf,
    /// Stop after this many applied steps.
    #[arg(long)]
    pub until: Option<usize>,
    /// Replay the same fact stream with another method (A/B comparison).
    #[arg(long)]
    pub method: Option<String>,
    /// Load the model even if its sha256 differs from the session's.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct BisectArgs {
    /// The session directory.
    pub session: PathBuf,
    /// The probe whose fall is looked for: arc_easy, arc, mmlu, truthfulqa, winogrande, gsm8k or
    /// hellaswag.
    #[arg(long)]
    pub probe: String,
    /// How far below the unedited model's score counts as fallen (absolute, e.g. 0.05).
    #[arg(long, default_value_t = 0.05)]
    pub drop: f64,
    /// Probe items (a seeded subset; 500 give a 95% interval of about ±4 points at 50%: choose a
    /// drop above the noise).
    #[arg(long, default_value_t = 500)]
    pub probe_items: usize,
    /// Data root for the probe (default: $D4S_DATA or ../shared/data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Load the model even if its sha256 differs from the session's.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ResumeArgs {
    pub session: PathBuf,
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The session to export (or `--unedited`).
    #[arg(required_unless_present = "unedited")]
    pub session: Option<PathBuf>,
    /// Export the model as loaded, with no edits (`--model`, else the default model): the
    /// dequantized default model as a Hugging Face directory for other tools, e.g. the peer
    /// comparison in `benches/peer/`.
    #[arg(long, conflicts_with_all = ["session", "delta_only"])]
    pub unedited: bool,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Write only the edited matrices' ΔW (delta.safetensors + delta.json).
    #[arg(long)]
    pub delta_only: bool,
    #[arg(long)]
    pub force: bool,
}

/// Loads the session's base model (or `--model`), refusing a different sha256 unless forced.
fn base_model(g: &GlobalArgs, meta: &journal::SessionMeta, force: bool) -> Result<Model> {
    let spec_str = g.model.clone().unwrap_or_else(|| meta.model.spec.clone());
    let spec = ModelSpec::parse(&spec_str, g.revision.clone())?;
    let device = device(&g.device)?;
    let recorded = meta.model.precision;
    let precision = match g.dtype {
        Some(p) if p != recorded => {
            eprintln!(
                "warning: the session was recorded in {recorded} and runs in {p} (--dtype): \
                 its edits will not reproduce bit for bit"
            );
            p
        }
        _ => recorded,
    };
    let opts = load::LoadOptions {
        device,
        precision: Some(precision),
        tokenizer: g.tokenizer.clone(),
        verbose: true,
    };
    let model = load::load(&spec, &opts)
        .with_context(|| format!("cannot load the session's model {spec}"))?;
    if model.info.sha256 != meta.model.sha256 {
        let msg = format!(
            "the model's sha256 {} differs from the session's {} ({}); the edits would not mean the same thing",
            model.info.sha256, meta.model.sha256, meta.model.name
        );
        if !force {
            bail!("{msg}. Pass --force to use it anyway");
        }
        eprintln!("warning: {msg} (--force)");
    }
    Ok(model)
}

fn runner_for(model: Model, meta: &journal::SessionMeta, method: Option<Method>) -> Result<Runner> {
    let hp = match method {
        Some(m) if m != meta.method => HParams::defaults(m, &model.config),
        _ => meta.hparams.clone(),
    };
    let stats = StatsCache::new(meta.stats.clone().as_recorded(model.config.d_ff));
    Ok(Runner::new(model, hp, stats))
}

pub fn replay(g: &GlobalArgs, a: &ReplayArgs) -> Result<()> {
    let meta = journal::read_meta(&a.session)?;
    let loaded = journal::read_journal(&a.session.join("journal.jsonl"))?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let method = a.method.as_deref().map(str::parse::<Method>).transpose()?;
    let model = base_model(g, &meta, a.force)?;
    // Asking for the session's own method is a plain replay only when it never switched.
    let switched = loaded
        .events
        .iter()
        .any(|e| matches!(e, Event::Method { .. }));
    let verify = method.is_none_or(|m| m == meta.method && !switched);
    let mut runner = runner_for(model, &meta, method)?;
    let note = if verify {
        ""
    } else {
        " — A/B: every step with this method, no bit check"
    };
    eprintln!("replaying {} on {}{note}", meta.name, meta.model.name);
    let table = replay_table(&mut runner, &loaded.events, a.until, verify)?;
    let methods: Vec<&str> = table.methods().iter().map(|m| m.label()).collect();
    println!(
        "{} ({} on {}){note}",
        meta.name,
        methods.join(" → "),
        meta.model.name
    );
    println!("{table}");
    let report = table.report;
    if verify {
        if report.mismatches.is_empty() {
            println!("weights: bit-identical to the original run at every step");
        } else {
            println!("weights differ from the journal at steps {:?} (different machine, build or statistics?)", report.mismatches);
        }
    }
    Ok(())
}

pub fn bisect(g: &GlobalArgs, a: &BisectArgs) -> Result<()> {
    let meta = journal::read_meta(&a.session)?;
    let loaded = journal::read_journal(&a.session.join("journal.jsonl"))?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let task: Task = a.probe.parse()?;
    let data_dir = a
        .data_dir
        .clone()
        .or_else(d4s::eval::probes::default_data_dir)
        .context("no probe data: pass --data-dir or set D4S_DATA (e.g. ../shared/data)")?;
    let base = base_model(g, &meta, a.force)?;
    let cfg = ProbeConfig {
        data_dir,
        limit: Some(a.probe_items),
        ..Default::default()
    };
    let set = probes::prepare(task, &cfg, &base)?;
    eprintln!(
        "bisecting {} ({} applied steps) on {task}: first step more than {} below the unedited model",
        meta.name,
        bisection::applied_steps(&loaded.events),
        a.drop
    );
    let stats = StatsCache::new(meta.stats.clone().as_recorded(base.config.d_ff));
    let found = bisection::bisect_session(&a.session, &base, &stats, a.drop, |k, model| {
        let score = set.run(model, None)?.headline().1;
        eprintln!("  after {k:>5} steps: {score:.3}");
        Ok(score)
    })?;
    let mut measured = found.bisection.measured.clone();
    measured.sort_by_key(|&(k, _)| k);
    println!("{:>6}  {:>8}  {:>8}", "steps", task.to_string(), "change");
    for (k, score) in &measured {
        println!(
            "{k:>6}  {score:>8.3}  {:>+8.3}",
            score - found.bisection.baseline
        );
    }
    match found.culprit {
        Some(c) => println!(
            "first fall beyond {}: after applied step {} (journal step {}): {}",
            a.drop, c.k, c.step, c.fact
        ),
        None => println!(
            "no prefix fell more than {} below the unedited model's {:.3}",
            a.drop, found.bisection.baseline
        ),
    }
    Ok(())
}

/// Opens a session and restores its state into a runner attached to it.
fn restored(g: &GlobalArgs, dir: &Path, force: bool) -> Result<(Runner, Vec<Event>)> {
    let (session, loaded) = journal::Session::open(dir)?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let model = base_model(g, &session.meta, force)?;
    let mut runner = runner_for(model, &session.meta, None)?;
    runner.session = Some(session);
    let report = runner
        .restore(&loaded.events)
        .context("restoring the session")?;
    eprintln!("restored {} steps ({} undone)", report.steps, report.undos);
    Ok((runner, loaded.events))
}

pub fn resume(g: &GlobalArgs, a: &ResumeArgs) -> Result<()> {
    let (mut runner, events) = restored(g, &a.session, a.force)?;
    let pending = pending_requests(&events);
    if pending.is_empty() {
        println!(
            "{}: nothing pending; the session is up to date ({} live steps)",
            a.session.display(),
            runner.history.len()
        );
        return Ok(());
    }
    println!(
        "{}: {} pending request(s)",
        a.session.display(),
        pending.len()
    );
    for (i, r) in pending.iter().enumerate() {
        let out = super::edit::apply_runner_step(
            &mut runner,
            std::slice::from_ref(r),
            &pending[i + 1..],
            &format!("{}/{}", i + 1, pending.len()),
        );
        match out {
            Ok(p) => println!("  applied: {} (p(target) {p:.3})", r.describe()),
            Err(e) => println!("  rejected: {} — {e:#}", r.describe()),
        }
    }
    if let Err(e) = snapshot::write(&a.session, &runner.model) {
        eprintln!("warning: could not write the weight snapshot ({e})");
    }
    Ok(())
}

/// The session's edited model for export: its base with the snapshot's weights when that is
/// current (no edit is recomputed), the base itself when the journal holds no edits, and
/// otherwise a restore of the journal (after which a snapshot is written for next time).
fn edited_weights(g: &GlobalArgs, dir: &Path, force: bool) -> Result<Model> {
    let meta = journal::read_meta(dir)?;
    let loaded = journal::read_journal(&dir.join("journal.jsonl"))?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let mut model = base_model(g, &meta, force)?;
    if bisection::applied_steps(&loaded.events) == 0 {
        eprintln!("the session holds no edits: exporting its base model");
        return Ok(model);
    }
    match snapshot::install(dir, &mut model, &loaded.events)? {
        Snapshot::Installed => {
            eprintln!("installed the session's weight snapshot (no edit recomputed)");
            return Ok(model);
        }
        Snapshot::Unusable(why) => {
            eprintln!("no usable weight snapshot ({why}): restoring the journal")
        }
    }
    drop(model);
    let (runner, _) = restored(g, dir, force)?;
    if let Err(e) = snapshot::write(dir, &runner.model) {
        eprintln!("warning: could not write the weight snapshot ({e}); the export goes on");
    }
    Ok(runner.model)
}

pub fn export(g: &GlobalArgs, a: &ExportArgs) -> Result<()> {
    let Some(session) = &a.session else {
        let model = super::load_model(g)?;
        export_hf(&model, &a.out, false)?;
        println!(
            "exported the unedited {} to {}",
            model.info.name,
            a.out.display()
        );
        return Ok(());
    };
    let model = edited_weights(g, session, a.force)?;
    export_hf(&model, &a.out, a.delta_only)?;
    println!("exported {} to {}", session.display(), a.out.display());
    Ok(())
}
