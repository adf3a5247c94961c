//! `d4s sweep`: a grid of hyperparameter settings, one bench run each on a *training* split, the
//! table of their final numbers, the efficacy–specificity frontier, and the best setting under
//! a stated [`Criterion`]. Tuning on the file the results are reported on would flatter every
//! method, so [`refuse_evaluation_data`] stops a sweep pointed at an evaluation file.

use std::path::{Path, PathBuf};

use super::records::{GenMetric, Metric, ProbMetric, TokenMetric};
use super::summary::Summary;
use super::table::with_ci;
use crate::error::{Error, Result};
use crate::eval::plots::{render, LineChart, Series};
use crate::util;

/// One setting of the grid: `(key, value)` overrides, in the order the axes were given.
pub type Setting = Vec<(String, String)>;

/// The settings of a grid given as `key=v1,v2,…` axes (commas inside brackets belong to the
/// value, so `layers=[3,4],[4,5]` has two values): their Cartesian product, first axis slowest.
pub fn grid(axes: &[String]) -> Result<Vec<Setting>> {
    if axes.is_empty() {
        return Err(Error::Input(
            "no --grid given (e.g. --grid lambda=1000,4000,16000)".into(),
        ));
    }
    let mut settings: Vec<Setting> = vec![vec![]];
    for axis in axes {
        let (key, values) = axis
            .split_once('=')
            .ok_or_else(|| Error::Input(format!("--grid {axis:?}: expected key=v1,v2,…")))?;
        let key = key.trim();
        let values = split_values(values);
        if key.is_empty() || values.is_empty() || values.iter().any(String::is_empty) {
            return Err(Error::Input(format!(
                "--grid {axis:?}: expected key=v1,v2,… with no empty value"
            )));
        }
        if settings[0].iter().any(|(k, _)| k == key) {
            return Err(Error::Input(format!("--grid names {key:?} twice")));
        }
        settings = settings
            .into_iter()
            .flat_map(|s| {
                values.iter().map(move |v| {
                    let mut s = s.clone();
                    s.push((key.to_string(), v.clone()));
                    s
                })
            })
            .collect();
    }
    Ok(settings)
}

/// Splits on commas outside brackets.
fn split_values(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut depth = 0i32;
    for c in s.chars() {
        match c {
            '[' | '(' | '{' => depth += 1,
            ']' | ')' | '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(String::new());
                continue;
            }
            _ => {}
        }
        out.last_mut().expect("one").push(c);
    }
    out.into_iter().map(|v| v.trim().to_string()).collect()
}

/// A setting as `key=value` overrides (what `--set` takes).
pub fn overrides(setting: &Setting) -> Vec<String> {
    setting.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// A setting's folder name: `lambda=4000_layers=[3,4]` with anything a file system might
/// mind replaced by `-`.
pub fn folder_name(setting: &Setting) -> String {
    overrides(setting)
        .join("_")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "=._-+".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Refuses a data file that is one of the evaluation files (by name or by content hash):
/// settings must be chosen on a training split.
pub fn refuse_evaluation_data(path: &Path, data_dir: Option<&Path>) -> Result<()> {
    const EVALUATION: [&str; 3] = ["counterfact", "zsre", "mquake"];
    let hash = util::sha256_file(path)?;
    for name in EVALUATION {
        let Ok(eval) = super::super::datasets::resolve(name, data_dir) else {
            continue;
        };
        let same_name = eval.file_name() == path.file_name();
        if same_name || util::sha256_file(&eval)? == hash {
            return Err(Error::Input(format!(
                "{} is the {name} evaluation file: sweep on a training split (counterfact-train, \
                 zsre-train or a file of your own) and report on the evaluation file",
                path.display()
            )));
        }
    }
    Ok(())
}

/// How the best setting is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criterion {
    /// The mean of token efficacy, paraphrase and specificity at the end (the D4S tables' Avg).
    Avg,
    /// The mean of ES, PS and NS (ROME/MEMIT's probability scores).
    Prob,
    /// The mean of greedy-generation efficacy EM, paraphrase EM and neighbour specificity.
    Gen,
}

impl std::str::FromStr for Criterion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "avg" => Ok(Criterion::Avg),
            "prob" => Ok(Criterion::Prob),
            "gen" => Ok(Criterion::Gen),
            other => Err(Error::Input(format!(
                "unknown criterion {other:?} (avg, prob, gen)"
            ))),
        }
    }
}

impl Criterion {
    fn metrics(self) -> [Metric; 3] {
        match self {
            Criterion::Avg => [
                Metric::Token(TokenMetric::Efficacy),
                Metric::Token(TokenMetric::Paraphrase),
                Metric::Token(TokenMetric::Specificity),
            ],
            Criterion::Prob => [
                Metric::Prob(ProbMetric::Es),
                Metric::Prob(ProbMetric::Ps),
                Metric::Prob(ProbMetric::Ns),
            ],
            Criterion::Gen => [
                Metric::Gen(GenMetric::EfficacyEm),
                Metric::Gen(GenMetric::ParaphraseEm),
                Metric::Gen(GenMetric::Specificity),
            ],
        }
    }

    /// The criterion's value for a run: the mean of its three metrics (`None` if one is
    /// missing).
    pub fn score(self, s: &Summary) -> Option<f64> {
        let v: Option<Vec<f64>> = self.metrics().iter().map(|&m| s.value(m)).collect();
        v.map(|v| v.iter().sum::<f64>() / 3.0)
    }

    pub fn describe(self) -> String {
        let names: Vec<String> = self.metrics().iter().map(|m| m.key()).collect();
        format!(
            "the highest mean of {} after the last edit; ties go to the smaller largest ‖W‖₁ \
             growth",
            names.join(", ")
        )
    }
}

/// One finished setting.
pub struct SweepRow {
    pub setting: Setting,
    pub dir: PathBuf,
    pub summary: Summary,
}

/// Which rows are on the efficacy–specificity Pareto frontier (no other row is at least as
/// good on both and better on one).
pub fn pareto(rows: &[SweepRow]) -> Vec<bool> {
    let xy = |r: &SweepRow| {
        (
            r.summary.efficacy.unwrap_or(f64::NAN),
            r.summary.specificity.unwrap_or(f64::NAN),
        )
    };
    rows.iter()
        .map(|r| {
            let (x, y) = xy(r);
            x.is_finite()
                && y.is_finite()
                && !rows.iter().any(|o| {
                    let (ox, oy) = xy(o);
                    ox >= x && oy >= y && (ox > x || oy > y)
                })
        })
        .collect()
}

/// The best row under the criterion (`None` when no row has its metrics).
pub fn best(rows: &[SweepRow], criterion: Criterion) -> Option<usize> {
    let growth = |r: &SweepRow| {
        let g = r.summary.max_growth();
        if g.is_finite() {
            g
        } else {
            f64::INFINITY
        }
    };
    (0..rows.len())
        .filter_map(|i| criterion.score(&rows[i].summary).map(|s| (i, s)))
        .max_by(|&(i, a), &(j, b)| {
            a.total_cmp(&b)
                .then_with(|| growth(&rows[j]).total_cmp(&growth(&rows[i])))
        })
        .map(|(i, _)| i)
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{:.1}", 100.0 * x))
}

/// Writes `sweep.md`, `sweep.csv` and `frontier.{svg,png}` into `out`; returns the table and
/// the best row.
pub fn report(
    out: &Path,
    method: &str,
    rows: &[SweepRow],
    criterion: Criterion,
) -> Result<(String, Option<usize>)> {
    util::ensure_dir(out)?;
    let front = pareto(rows);
    let best = best(rows, criterion);
    let mut md = format!(
        "| setting ({method}) | Eff. | Par. | Spe. | Avg. | ES | PS | NS | gen EM | gen Spe. | \
         score | max ‖W‖₁ growth | s/edit | frontier |\n|{}\n",
        "---|".repeat(14)
    );
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let failed = |e: ::csv::Error| Error::Input(format!("sweep.csv: {e}"));
    w.write_record([
        "setting",
        "efficacy",
        "paraphrase",
        "specificity",
        "es",
        "ps",
        "ns",
        "gen_efficacy_em",
        "gen_specificity",
        "score",
        "max_l1_growth",
        "seconds_per_edit",
        "pareto",
        "best",
        "dir",
    ])
    .map_err(failed)?;
    for (i, r) in rows.iter().enumerate() {
        let s = &r.summary;
        let name = overrides(&r.setting).join(" ");
        let mark = if best == Some(i) { " ★" } else { "" };
        let score = criterion.score(s);
        let cell = |m: Metric| with_ci(s.value(m), s.intervals.get(m));
        md.push_str(&format!(
            "| {name}{mark} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | ×{:.4} | {} | {} |\n",
            cell(Metric::Token(TokenMetric::Efficacy)),
            cell(Metric::Token(TokenMetric::Paraphrase)),
            cell(Metric::Token(TokenMetric::Specificity)),
            pct(s.avg),
            cell(Metric::Prob(ProbMetric::Es)),
            cell(Metric::Prob(ProbMetric::Ps)),
            cell(Metric::Prob(ProbMetric::Ns)),
            cell(Metric::Gen(GenMetric::EfficacyEm)),
            cell(Metric::Gen(GenMetric::Specificity)),
            pct(score),
            s.max_growth(),
            s.seconds_per_edit.map_or("–".into(), |x| format!("{x:.1}")),
            if front[i] { "✓" } else { "" }
        ));
        let f = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.6}"));
        w.write_record([
            name,
            f(s.efficacy),
            f(s.paraphrase),
            f(s.specificity),
            f(s.es),
            f(s.ps),
            f(s.ns),
            f(s.gen.efficacy_em),
            f(s.gen.specificity),
            f(score),
            format!("{:.6}", s.max_growth()),
            f(s.seconds_per_edit),
            front[i].to_string(),
            (best == Some(i)).to_string(),
            r.dir.display().to_string(),
        ])
        .map_err(failed)?;
    }
    md.push_str(&format!(
        "\nScore and ★: {}. Frontier: not beaten on both token efficacy and specificity by \
         another setting. Rates ×100; ±: half the width of the 95% bootstrap interval over \
         cases.\n",
        criterion.describe()
    ));
    match best {
        Some(i) => md.push_str(&format!(
            "\nBest setting: `{}` ({}).\n",
            overrides(&rows[i].setting).join(" "),
            rows[i].dir.display()
        )),
        None => md.push_str("\nNo setting has every metric of the criterion.\n"),
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::Input(format!("sweep.csv: {e}")))?;
    util::write_atomic(&out.join("sweep.csv"), &bytes)?;
    util::write_atomic(&out.join("sweep.md"), md.as_bytes())?;
    frontier_plot(out, method, rows, &front)?;
    Ok((md, best))
}

/// The frontier as a line under each setting's marked point (efficacy, specificity), with a
/// whisker for the specificity's interval.
fn frontier_plot(out: &Path, method: &str, rows: &[SweepRow], front: &[bool]) -> Result<()> {
    let at = |r: &SweepRow| Some((r.summary.efficacy?, r.summary.specificity?));
    let mut frontier: Vec<(f64, f64)> = rows
        .iter()
        .zip(front)
        .filter(|(_, &f)| f)
        .filter_map(|(r, _)| at(r))
        .collect();
    frontier.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut series = vec![Series {
        label: "efficacy–specificity frontier".into(),
        points: frontier,
        ..Default::default()
    }];
    series.extend(rows.iter().filter_map(|r| {
        let (x, y) = at(r)?;
        let spe = r
            .summary
            .intervals
            .get(Metric::Token(TokenMetric::Specificity));
        Some(Series {
            label: overrides(&r.setting).join(" "),
            points: vec![(x, y)],
            band: spe.map(|i| vec![(x, i.lo, i.hi)]).unwrap_or_default(),
        })
    }));
    let n = rows.first().map_or(0, |r| r.summary.edits);
    render(
        &LineChart {
            title: format!("{method} sweep after {n} edits: efficacy vs specificity"),
            x_label: "token efficacy".into(),
            y_label: "token specificity (whisker: 95% interval)".into(),
            series,
            y_range: None,
            log_y: false,
        },
        &out.join("frontier"),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::bench::summary::summarize;
    use crate::eval::testkit::{point, record};

    #[test]
    fn a_grid_is_the_product_of_its_axes_and_brackets_keep_their_commas() {
        let g = grid(&["lambda=1000,4000".into(), "layers=[3,4],[4,5]".into()]).unwrap();
        assert_eq!(g.len(), 4);
        assert_eq!(overrides(&g[1]), ["lambda=1000", "layers=[4,5]"]);
        assert_eq!(folder_name(&g[1]), "lambda=1000_layers=-4-5-");
        for bad in ["lambda", "lambda=", "=1", "lambda=1,,2"] {
            assert!(grid(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(grid(&[]).is_err());
        assert!(grid(&["a=1".into(), "a=2".into()]).is_err());
    }

    fn row(setting: &str, eff: f64, spe: f64, par: f64) -> SweepRow {
        let mut p = point(10);
        p.metrics.token.efficacy = Some(eff);
        p.metrics.token.specificity = Some(spe);
        p.metrics.token.paraphrase = Some(par);
        SweepRow {
            setting: vec![("lambda".into(), setting.into())],
            dir: PathBuf::from(setting),
            summary: summarize("d4s", &[point(0), p], &[record(0)]).unwrap(),
        }
    }

    #[test]
    fn the_frontier_and_the_best_setting_follow_the_stated_criterion() {
        let rows = vec![
            row("1", 1.0, 0.5, 0.5),
            row("2", 0.9, 0.75, 0.3),
            row("3", 0.8, 0.8, 0.9),
            row("4", 0.7, 0.7, 0.1),
        ];
        assert_eq!(pareto(&rows), [true, true, true, false]);
        // Avg: (0.8 + 0.9 + 0.8) / 3 is the highest.
        assert_eq!(best(&rows, Criterion::Avg), Some(2));
        // No probability scores: no best.
        assert_eq!(best(&rows, Criterion::Prob), None);
        let dir = tempfile::tempdir().unwrap();
        let (md, b) = report(dir.path(), "d4s", &rows, Criterion::Avg).unwrap();
        assert_eq!(b, Some(2));
        assert!(md.contains("| lambda=3 ★ |"), "{md}");
        assert!(md.contains("Best setting: `lambda=3`"), "{md}");
        assert!(
            md.contains("token.efficacy, token.paraphrase, token.specificity"),
            "{md}"
        );
        let csv = std::fs::read_to_string(dir.path().join("sweep.csv")).unwrap();
        assert_eq!(csv.lines().count(), 5);
        assert!(dir.path().join("frontier.svg").is_file());
    }

    #[test]
    fn an_evaluation_file_is_refused_by_name_and_by_content() {
        let data = tempfile::tempdir().unwrap();
        let cf = data.path().join("counterfact_easyedit");
        std::fs::create_dir_all(&cf).unwrap();
        std::fs::write(cf.join("counterfact-edit.json"), "[1]").unwrap();
        std::fs::write(cf.join("counterfact-train.json"), "[2]").unwrap();
        let copy = data.path().join("mine.json");
        std::fs::write(&copy, "[1]").unwrap();
        let root = Some(data.path());
        assert!(refuse_evaluation_data(&cf.join("counterfact-train.json"), root).is_ok());
        let err = refuse_evaluation_data(&cf.join("counterfact-edit.json"), root).unwrap_err();
        assert!(err.to_string().contains("training split"), "{err}");
        assert!(refuse_evaluation_data(&copy, root).is_err());
    }
}
