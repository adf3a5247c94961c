//! `d4s` / `d4s tui`: the terminal UI.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use d4s::edit::Method;
use d4s::model::Model;
use d4s::session::Runner;
use d4s::tui::{self, App, Effect};
use d4s::worker::{self, Command, WorkerOptions};

use super::edit::EditorArgs;
use super::GlobalArgs;

#[derive(Args, Debug, Clone)]
pub struct TuiArgs {
    #[command(flatten)]
    pub editor: EditorArgs,
    /// A/B mode: two or three methods (e.g. `d4s,alphaedit`) edit every fact, each in its own
    /// copy of the edited layers; every pane shows them side by side. Replaces --method.
    #[arg(long, value_delimiter = ',', value_name = "M1,M2[,M3]")]
    pub methods: Vec<String>,
    /// Session name (default: timestamp + method; in A/B mode each method journals to
    /// `<name>-<method>`).
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
    /// Probe items for `b` (bisect): 500 give a 95% interval of about ±4 points at 50%, so a
    /// drop of 0.05 is above the noise.
    #[arg(long, default_value_t = 500)]
    pub bisect_items: usize,
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
    let methods = a.lane_methods()?;
    let model = super::load_model(g)?;
    let runners = runners(a, &methods, model)?;
    let data_dir = a
        .data_dir
        .clone()
        .or_else(d4s::eval::probes::default_data_dir);
    let (probes, probes_unavailable) =
        super::probes::worker_probes(&a.probes, a.probe_items, data_dir.clone());
    let scorer = super::probes::worker_scorer(a.bisect_items, data_dir.clone());
    let worker = worker::spawn_lanes(
        runners,
        WorkerOptions {
            eval_every: a.eval_every,
            probes,
            probes_unavailable,
            data_dir,
            scorer,
        },
    );
    let initial = a
        .deck
        .iter()
        .map(|d| Effect::Send(Command::LoadDeck(d.clone())))
        .collect();
    let app = tui::run(worker, App::default(), initial)?;
    let journals: Vec<String> = app
        .lanes
        .iter()
        .filter_map(|l| l.session.as_ref())
        .map(|s| s.display().to_string())
        .collect();
    println!(
        "{} edits landed{}",
        app.edits_done(),
        match journals.len() {
            0 => String::new(),
            1 => format!("; session journaled in {}", journals[0]),
            _ => format!("; sessions journaled in {}", journals.join(", ")),
        }
    );
    if a.frame_stats {
        eprintln!(
            "frame render time: last {:.2} ms, worst {:.2} ms",
            app.frame_ms.0, app.frame_ms.1
        );
    }
    Ok(())
}

/// Most methods A/B mode runs side by side (the panes split three ways at most).
const MAX_LANES: usize = 3;

impl TuiArgs {
    /// The lanes' methods: `--methods` (two or three, distinct), else `--method` alone.
    pub fn lane_methods(&self) -> Result<Vec<Method>> {
        if self.methods.is_empty() {
            return Ok(vec![self.editor.method()?]);
        }
        let methods = self
            .methods
            .iter()
            .map(|m| m.trim().parse::<Method>())
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if !(2..=MAX_LANES).contains(&methods.len()) {
            bail!(
                "--methods takes two or three methods to compare (got {}); for one, use --method",
                methods.len()
            );
        }
        for (i, m) in methods.iter().enumerate() {
            if methods[..i].contains(m) {
                bail!("--methods names {} twice", m.label());
            }
        }
        Ok(methods)
    }
}

/// One runner per lane, each on its own copy of the model (untouched weights shared), with
/// sibling statistics caches (the matrices held once) and, unless `--no-session`, a journal
/// each.
fn runners(a: &TuiArgs, methods: &[Method], model: Model) -> Result<Vec<Runner>> {
    let stats = a.editor.stats()?;
    let ab = methods.len() > 1;
    let mut runners = Vec::new();
    for &method in methods {
        let hp = a
            .editor
            .hparams_for(method, &model)
            .with_context(|| format!("hyperparameters of {}", method.label()))?;
        let mut runner =
            Runner::new(model.clone(), hp, stats.sibling()).with_targets(a.editor.targets());
        if !a.no_session {
            let name = match (&a.session, ab) {
                (Some(name), false) => name.clone(),
                (Some(name), true) => format!("{name}-{}", method.name()),
                (None, _) => d4s::session::journal::default_name(method),
            };
            runner.start_session(&a.sessions_dir, &name)?;
        }
        runners.push(runner);
    }
    Ok(runners)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command};
    use super::*;

    fn lanes(argv: &[&str]) -> Result<Vec<Method>> {
        let cli = Cli::try_parse_from(argv).map_err(|e| anyhow::anyhow!("{e}"))?;
        match cli.command {
            Some(Command::Tui(a)) => a.lane_methods(),
            other => panic!("not the TUI: {other:?}"),
        }
    }

    #[test]
    fn methods_names_two_or_three_distinct_lanes_and_method_one() {
        assert_eq!(lanes(&["d4s", "tui"]).unwrap(), [Method::D4s]);
        assert_eq!(
            lanes(&["d4s", "tui", "--method", "memit"]).unwrap(),
            [Method::Memit]
        );
        assert_eq!(
            lanes(&["d4s", "tui", "--methods", "d4s,alphaedit"]).unwrap(),
            [Method::D4s, Method::AlphaEdit]
        );
        assert_eq!(
            lanes(&["d4s", "tui", "--methods", "d4s, memit,rome"]).unwrap(),
            [Method::D4s, Method::Memit, Method::Rome]
        );
        for (argv, why) in [
            (&["d4s", "tui", "--methods", "d4s"][..], "two or three"),
            (
                &["d4s", "tui", "--methods", "d4s,memit,rome,pmet"][..],
                "two or three",
            ),
            (
                &["d4s", "tui", "--methods", "d4s,d4s"][..],
                "names D4S twice",
            ),
            (&["d4s", "tui", "--methods", "d4s,nope"][..], "nope"),
        ] {
            let e = lanes(argv).unwrap_err().to_string();
            assert!(e.contains(why), "{argv:?}: {e}");
        }
    }
}
