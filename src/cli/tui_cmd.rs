//! `d4s` / `d4s tui`: the terminal UI.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use d4s::session::Runner;
use d4s::tui::{self, App, Effect};
use d4s::worker::{self, Command, WorkerOptions};

use super::edit::EditorArgs;
use super::GlobalArgs;

#[derive(Args, Debug, Clone)]
pub struct TuiArgs {
    #[command(flatten)]
    pub editor: EditorArgs,
    /// Session name (default: timestamp + method).
    #[arg(long)]
    pub session: Option<String>,
    /// Where sessions live.
    #[arg(long, default_value = "sessions")]
    pub sessions_dir: PathBuf,
    /// Do not journal this run.
    #[arg(long)]
    pub no_session: bool,
    /// Downstream probes to offer with `p` (comma-separated; `none` to disable).
    #[arg(long, default_value = "arc_easy,mmlu,truthfulqa,winogrande")]
    pub probes: String,
    /// Items per probe task.
    #[arg(long, default_value_t = 50)]
    pub probe_items: usize,
    /// Data directory for probes and `counterfact:N` decks (default: $D4S_DATA or ../shared/data).
    #[arg(long = "data-dir")]
    pub data_dir: Option<PathBuf>,
    /// Deck to queue at start (e.g. `demo`).
    #[arg(long)]
    pub deck: Option<String>,
    /// Re-evaluate all edits every N edits (0 = automatic cadence).
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    /// Print frame render times on exit.
    #[arg(long)]
    pub frame_stats: bool,
}

impl Default for TuiArgs {
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct W {
            #[command(flatten)]
            a: TuiArgs,
        }
        W::parse_from(["d4s"]).a
    }
}

pub fn run(g: &GlobalArgs, a: &TuiArgs) -> Result<()> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!("the d4s TUI needs an interactive terminal; for scripts use a subcommand (see `d4s --help`)");
    }
    let model = super::load_model(g)?;
    let method = a.editor.method()?;
    let hp = a.editor.hparams_for(method, &model)?;
    let stats = a.editor.stats()?;
    let mut runner = Runner::new(model, hp, stats).with_targets(a.editor.targets());
    if !a.no_session {
        let name = a
            .session
            .clone()
            .unwrap_or_else(|| d4s::session::journal::default_name(method));
        runner.start_session(&a.sessions_dir, &name)?;
    }
    let data_dir = a
        .data_dir
        .clone()
        .or_else(d4s::eval::probes::default_data_dir);
    let (probes, probes_unavailable) =
        super::probes::worker_probes(&a.probes, a.probe_items, data_dir.clone());
    let worker = worker::spawn(
        runner,
        WorkerOptions {
            eval_every: a.eval_every,
            probes,
            probes_unavailable,
            data_dir,
        },
    );
    let initial = a
        .deck
        .iter()
        .map(|d| Effect::Send(Command::LoadDeck(d.clone())))
        .collect();
    let app = tui::run(worker, App::default(), initial)?;
    println!(
        "{} edits landed{}",
        app.edits_done(),
        app.session
            .as_ref()
            .map(|s| format!("; session journaled in {}", s.display()))
            .unwrap_or_default()
    );
    if a.frame_stats {
        eprintln!(
            "frame render time: last {:.2} ms, worst {:.2} ms",
            app.frame_ms.0, app.frame_ms.1
        );
    }
    Ok(())
}
