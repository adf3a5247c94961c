//! `d4s bench --seeds K`: the same edits in K shuffled orders, and each metric's mean ± sample
//! standard deviation over the orders (`seeds.md`, `seeds.json`). The spread says how much a
//! number depends on which edits happen to come first; it is not an interval over cases (each
//! run's summary has those).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::records::{load_run, GenMetric, Metric, ProbMetric, TokenMetric};
use super::summary::{summarize, Summary};
use crate::error::{Error, Result};
use crate::eval::interval::mean_sd;
use crate::util;

/// The metrics the seeds table lists, in its column order.
const COLUMNS: [Metric; 9] = [
    Metric::Token(TokenMetric::Efficacy),
    Metric::Token(TokenMetric::Paraphrase),
    Metric::Token(TokenMetric::Specificity),
    Metric::Prob(ProbMetric::Es),
    Metric::Prob(ProbMetric::Ps),
    Metric::Prob(ProbMetric::Ns),
    Metric::Gen(GenMetric::EfficacyEm),
    Metric::Gen(GenMetric::ParaphraseEm),
    Metric::Gen(GenMetric::Specificity),
];

/// One value's spread over the orders.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub mean: f64,
    pub sd: f64,
    /// Orders that measured it.
    pub n: usize,
}

/// Per method, per value name (a metric's key, `post_edit_prob`, `max_l1_growth`,
/// `probe.<task>`): the spread over the orders.
pub type Spreads = BTreeMap<String, BTreeMap<String, Spread>>;

/// The values of one finished run that the seeds table aggregates.
fn values(s: &Summary) -> Vec<(String, Option<f64>)> {
    let mut v: Vec<(String, Option<f64>)> =
        COLUMNS.iter().map(|m| (m.key(), s.value(*m))).collect();
    v.push(("post_edit_prob".into(), s.post_edit_prob));
    let g = s.max_growth();
    v.push(("max_l1_growth".into(), g.is_finite().then_some(g)));
    for p in &s.probes {
        v.push((format!("probe.{}", p.task), p.end));
    }
    v
}

/// Reads each order's run of each method (`seed_dir/<method>` when there are several) and
/// aggregates them.
pub fn spreads(methods: &[String], seed_dirs: &[PathBuf]) -> Result<Spreads> {
    let mut out = Spreads::new();
    for method in methods {
        let mut collected: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for dir in seed_dirs {
            let dir = super::method_dir(dir, method, methods.len() > 1);
            let run = load_run(&dir)?;
            let s = summarize(method, &run.points, &run.records).ok_or_else(|| {
                Error::Input(format!(
                    "{}: the run has no evaluation point",
                    dir.display()
                ))
            })?;
            for (name, v) in values(&s) {
                collected.entry(name).or_default().extend(v);
            }
        }
        let row = collected
            .into_iter()
            .filter_map(|(name, xs)| {
                let (mean, sd) = mean_sd(&xs)?;
                Some((
                    name,
                    Spread {
                        mean,
                        sd,
                        n: xs.len(),
                    },
                ))
            })
            .collect();
        out.insert(method.clone(), row);
    }
    Ok(out)
}

/// The Markdown table of the spreads: rates ×100, the growth as a factor.
pub fn markdown(spreads: &Spreads, orders: usize) -> String {
    let probes: Vec<String> = {
        let mut p: Vec<String> = spreads
            .values()
            .flat_map(|r| r.keys().filter(|k| k.starts_with("probe.")).cloned())
            .collect();
        p.sort();
        p.dedup();
        p
    };
    let names: Vec<String> = COLUMNS
        .iter()
        .map(|m| m.key())
        .chain(["post_edit_prob".to_string()])
        .chain(probes.iter().cloned())
        .collect();
    let mut md = format!("| method (mean ± sd over {orders} orders) |");
    for n in &names {
        md.push_str(&format!(" {n} |"));
    }
    md.push_str(" max ‖W‖₁ growth |\n|---|");
    md.push_str(&"---|".repeat(names.len() + 1));
    md.push('\n');
    for (method, row) in spreads {
        md.push_str(&format!("| {method} |"));
        for n in &names {
            let cell = row.get(n).map_or("–".to_string(), |s| {
                format!("{:.1} ± {:.1}", 100.0 * s.mean, 100.0 * s.sd)
            });
            md.push_str(&format!(" {cell} |"));
        }
        let g = row.get("max_l1_growth").map_or("–".to_string(), |s| {
            format!("×{:.4} ± {:.4}", s.mean, s.sd)
        });
        md.push_str(&format!(" {g} |\n"));
    }
    md
}

/// Writes `seeds.json` and `seeds.md` into `out`; returns the table.
pub fn write(out: &Path, methods: &[String], seed_dirs: &[PathBuf]) -> Result<String> {
    let s = spreads(methods, seed_dirs)?;
    let md = markdown(&s, seed_dirs.len());
    util::ensure_dir(out)?;
    util::write_atomic(
        &out.join("seeds.json"),
        serde_json::to_string_pretty(&s)
            .expect("serializable")
            .as_bytes(),
    )?;
    util::write_atomic(&out.join("seeds.md"), md.as_bytes())?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::bench::run::BenchSink;
    use crate::eval::bench::writer::RunWriter;
    use crate::eval::testkit::{point, record, run_config};

    #[test]
    fn the_spread_over_orders_is_the_mean_and_sample_sd_of_each_runs_final_value() {
        let root = tempfile::tempdir().unwrap();
        let mut dirs = Vec::new();
        for (k, eff) in [0.5, 0.7, 0.9].into_iter().enumerate() {
            let dir = root.path().join(format!("seed-{k}"));
            let mut w = RunWriter::create(&dir, &run_config(), None).unwrap();
            w.edit(&record(0)).unwrap();
            let mut p = point(1);
            p.metrics.token.efficacy = Some(eff);
            w.point(&p).unwrap();
            dirs.push(dir);
        }
        let md = write(root.path(), &["d4s".into()], &dirs).unwrap();
        let s: Spreads =
            serde_json::from_slice(&std::fs::read(root.path().join("seeds.json")).unwrap())
                .unwrap();
        let e = s["d4s"]["token.efficacy"];
        assert!(
            (e.mean - 0.7).abs() < 1e-12 && (e.sd - 0.2).abs() < 1e-12,
            "{e:?}"
        );
        assert_eq!(e.n, 3);
        assert!(md.contains("| d4s | 70.0 ± 20.0 |"), "{md}");
        assert!(md.contains("over 3 orders"), "{md}");
        // A missing run is an error naming it, not a silent gap.
        let err = write(root.path(), &["d4s".into()], &[root.path().join("nope")]).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
