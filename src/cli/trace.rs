//! `d4s trace`: causal tracing of one fact, to choose edit layers (see `d4s::eval::trace`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use d4s::eval::trace::{causal_trace, CausalTrace, Restored, TraceOptions};
use d4s::model::Model;

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// The subject whose embeddings are corrupted, e.g. "The Eiffel Tower".
    #[arg(long)]
    pub subject: String,
    /// The prompt, containing the subject (or `{}` for it), e.g. "{} is located in the city of".
    #[arg(long)]
    pub prompt: String,
    /// The answer whose probability is traced (default: the model's top next token).
    #[arg(long)]
    pub target: Option<String>,
    /// Noise draws averaged per cell.
    #[arg(long, default_value_t = TraceOptions::default().samples)]
    pub samples: usize,
    /// Noise standard deviation, in units of the embeddings' standard deviation.
    #[arg(long, default_value_t = TraceOptions::default().noise)]
    pub noise: f64,
    /// Layers restored together for MLP and attention outputs.
    #[arg(long, default_value_t = TraceOptions::default().window)]
    pub window: usize,
    #[arg(long, default_value_t = TraceOptions::default().seed)]
    pub seed: u64,
    /// Folder for trace.json, trace.csv and the heatmaps trace.svg / trace.png.
    #[arg(long, default_value = "trace")]
    pub out: PathBuf,
}

pub fn run(model: &Model, a: &TraceArgs) -> Result<()> {
    let options = TraceOptions {
        samples: a.samples,
        noise: a.noise,
        window: a.window,
        seed: a.seed,
    };
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template("tracing {bar:30} {pos}/{len} restored layers {elapsed}")
            .expect("valid template"),
    );
    let trace = causal_trace(
        model,
        &a.subject,
        &a.prompt,
        a.target.as_deref(),
        options,
        &mut |done, total| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        },
    )?;
    pb.finish_and_clear();
    let mut out = std::io::stdout().lock();
    print_trace(&trace, &mut out)?;
    let files = trace
        .write(&a.out)
        .with_context(|| format!("cannot write the trace to {}", a.out.display()))?;
    for f in files {
        writeln!(out, "wrote {}", f.display())?;
    }
    Ok(())
}

/// The summary table: per layer, the indirect effect of each restored site at the subject's
/// last token (where editors read keys) and at the prompt's last token.
pub fn print_trace(t: &CausalTrace, out: &mut impl Write) -> Result<()> {
    let subject_last = t.subject_last();
    let last = t.tokens.len() - 1;
    writeln!(out, "prompt      {}", t.prompt)?;
    writeln!(
        out,
        "subject     {:?} = tokens {}..{} of {}",
        t.subject,
        t.subject_tokens.start,
        t.subject_tokens.end,
        t.tokens.len()
    )?;
    writeln!(
        out,
        "answer      {:?}: p clean {:.4}, corrupted {:.4} (noise {} × σ {:.4}, {} draws)",
        t.answer, t.p_clean, t.p_corrupted, t.options.noise, t.sigma, t.options.samples
    )?;
    writeln!(
        out,
        "indirect effect IE = p(restored) − p(corrupted); MLP and attention restore {} layers centred on the row's layer",
        t.options.window
    )?;
    writeln!(
        out,
        "\n        ── at the subject's last token {:>10?} ──   ── at the last token {:>10?} ──",
        t.tokens[subject_last], t.tokens[last]
    )?;
    writeln!(
        out,
        "layer   hidden      MLP    attention            hidden      MLP    attention"
    )?;
    for l in 0..t.n_layers() {
        let ie = |r: Restored, i: usize| t.indirect_effect(r, i, l).unwrap_or(f64::NAN);
        writeln!(
            out,
            "{l:>5} {:>8.4} {:>8.4} {:>11.4}          {:>8.4} {:>8.4} {:>11.4}",
            ie(Restored::HiddenState, subject_last),
            ie(Restored::Mlp, subject_last),
            ie(Restored::Attention, subject_last),
            ie(Restored::HiddenState, last),
            ie(Restored::Mlp, last),
            ie(Restored::Attention, last),
        )?;
    }
    if let Some((layer, ie)) = t.peak(Restored::Mlp, subject_last) {
        let near: Vec<usize> = (0..t.n_layers())
            .filter(|&l| {
                t.indirect_effect(Restored::Mlp, subject_last, l)
                    .unwrap_or(0.0)
                    >= 0.9 * ie
            })
            .collect();
        writeln!(
            out,
            "\nThe MLP effect at the subject's last token peaks at layer {layer} (IE {ie:.4}); within 10 % of \
             the peak at layers {near:?}. Edit there: `--set layers=[{layer}]` for ROME, a span of these \
             for MEMIT, D4S, AlphaEdit. One fact is one sample: trace several before choosing."
        )?;
    }
    Ok(())
}
