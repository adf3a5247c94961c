//! Wiring of the downstream probes into the worker.

use std::path::PathBuf;

use d4s::error::Result;
use d4s::eval::probes::{self, ProbeConfig, ProbeSet, Task};
use d4s::model::Model;

use d4s::worker::{ProbeRunner, ProbeScorer};

/// A probe runner for the worker (tasks prepared on first use, then reused), or why there is none.
pub fn worker_probes(
    spec: &str,
    items: usize,
    data_dir: Option<PathBuf>,
) -> (Option<ProbeRunner>, Option<String>) {
    if spec.trim() == "none" || spec.trim().is_empty() {
        return (None, Some("probes disabled (--probes none)".into()));
    }
    let tasks: std::result::Result<Vec<Task>, _> =
        spec.split(',').map(|s| s.trim().parse::<Task>()).collect();
    let tasks = match tasks {
        Ok(t) => t,
        Err(e) => return (None, Some(format!("no probes: {e}"))),
    };
    let Some(data_dir) = data_dir else {
        return (
            None,
            Some("no probe data: pass --data-dir or set D4S_DATA (e.g. ../shared/data)".into()),
        );
    };
    if !data_dir.is_dir() {
        return (
            None,
            Some(format!(
                "no probe data: {} does not exist",
                data_dir.display()
            )),
        );
    }
    let cfg = ProbeConfig {
        data_dir,
        limit: Some(items),
        ..Default::default()
    };
    let mut prepared: Option<Vec<ProbeSet>> = None;
    let runner: ProbeRunner = Box::new(move |model: &Model| {
        if prepared.is_none() {
            prepared = Some(
                tasks
                    .iter()
                    .map(|&t| probes::prepare(t, &cfg, model))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        let sets = prepared.as_ref().expect("prepared above");
        sets.iter().map(|s| s.run(model, None)).collect()
    });
    (Some(runner), None)
}

/// A scorer for the worker's bisection: each task prepared on first use (with `items` items, a
/// seeded subset), then reused; `None` without probe data.
pub fn worker_scorer(items: usize, data_dir: Option<PathBuf>) -> Option<ProbeScorer> {
    let data_dir = data_dir.filter(|d| d.is_dir())?;
    let cfg = ProbeConfig {
        data_dir,
        limit: Some(items),
        ..Default::default()
    };
    let mut prepared: std::collections::HashMap<Task, ProbeSet> = Default::default();
    Some(Box::new(move |task: Task, model: &Model| {
        let set = match prepared.entry(task) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(probes::prepare(task, &cfg, model)?)
            }
        };
        Ok(set.run(model, None)?.headline().1)
    }))
}
