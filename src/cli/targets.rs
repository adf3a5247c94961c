//! `d4s targets`: optimize a run's targets before the run, into the target cache on disk, so that
//! several processes (or machines sharing the cache folder) can share the work of a long run.

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use d4s::edit::{new_editor, TargetCache};
use d4s::eval::bench::ahead::{fill, Share};
use d4s::eval::bench::Protocol;
use d4s::model::Model;

use super::cases::CaseArgs;
use super::edit::EditorArgs;

#[derive(Args, Debug)]
pub struct TargetsArgs {
    #[command(flatten)]
    pub editor: EditorArgs,
    #[command(flatten)]
    pub cases: CaseArgs,
    /// The protocol of the run the targets are for: `sequential` (D4S, whose targets are all the
    /// unedited model's) or `single` (any MEMIT-style method).
    #[arg(long, default_value = "sequential")]
    pub protocol: String,
    /// This process's share of the work, `i/k`: chunks i, i+k, i+2k, … of `target_batch` cases.
    /// Start k processes with 0/k … (k−1)/k side by side; the run then finds every target.
    #[arg(long, default_value = "0/1", value_name = "I/K")]
    pub share: String,
}

pub fn run(model: &mut Model, a: &TargetsArgs) -> Result<()> {
    let method = a.editor.method()?;
    let hp = a.editor.hparams_for(method, model)?;
    let protocol: Protocol = a.protocol.parse()?;
    let share: Share = a.share.parse()?;
    match protocol {
        Protocol::Single => {}
        Protocol::Sequential if new_editor(hp.clone()).targets_on_unedited_model() => {}
        Protocol::Sequential => bail!(
            "{}'s targets in a stream depend on the edits before them, so they cannot be \
             optimized ahead; `d4s targets` fills D4S's, or any MEMIT-style method's for \
             `--protocol single`",
            method.label()
        ),
        Protocol::Batch { .. } => bail!(
            "a step of several facts optimizes its own facts in batches and reads nothing ahead"
        ),
    }
    if hp.target_batch < 2 {
        bail!("target_batch is 1: a run optimizes each target at its own step, nothing is ahead");
    }
    let cases = a
        .cases
        .load(model, "counterfact", super::bench::EDITOR_SEED)?
        .cases;
    // The point is to keep them: the default folder unless another is named.
    let mut targets = match &a.editor.target_cache {
        Some(_) => a.editor.targets(),
        None => TargetCache::persistent(d4s::edit::target_cache::disk::default_dir()),
    };
    let mut stats = a.editor.stats()?;
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix:>10} [{bar:30}] {pos}/{len} chunks, {elapsed} elapsed, ETA {eta}",
        )
        .expect("valid")
        .progress_chars("=> "),
    );
    pb.set_prefix(method.label());
    let report = fill(
        model,
        &cases,
        &hp,
        &mut stats,
        &mut targets,
        share,
        |done, total| {
            pb.set_length(total as u64);
            pb.set_position(done as u64);
        },
    )?;
    pb.finish_and_clear();
    println!(
        "{}: {} chunks of {} cases (share {}/{}): {} targets optimized, {} already kept → {}",
        method.label(),
        report.chunks,
        hp.target_batch,
        share.index,
        share.of,
        report.optimized,
        report.found,
        targets
            .disk_dir()
            .map_or("memory".into(), |d| d.display().to_string())
    );
    Ok(())
}
