//! The collapse watch: the signs of a model collapsing under sequential edits (the paper's
//! subject), judged as edits land and probes come back, so the status bar can turn amber or red
//! and name the edit that did it.
//!
//! Three signs, each against the run so far:
//! - an edit's update ‖ΔW‖_F (over its layers) jumps against the median of the earlier edits';
//! - the efficacy of the newest edits falls against that of the earlier ones;
//! - a probe falls below its baseline by more than the two results' intervals.

use crate::eval::probes::ProbeResult;

/// Earlier edits needed before a jump or a fall is judged (a median of fewer says little).
const HISTORY: usize = 5;
/// ‖ΔW‖ against the earlier edits' median: amber from 3×, red from 10×.
const JUMP: (f64, f64) = (3.0, 10.0);
/// The newest edits whose efficacy is compared with the earlier ones'.
const RECENT: usize = 5;
/// Efficacy fall of the newest edits against the earlier ones: amber from 0.3, red from 0.6.
const FALL: (f64, f64) = (0.3, 0.6);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Amber,
    Red,
}

/// The most severe sign seen, in words that name the edit or probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub severity: Severity,
    pub message: String,
}

/// What the watch has seen of the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollapseWatch {
    /// (queue id, ‖ΔW‖_F over the edit's layers, efficacy right after it landed), in order.
    edits: Vec<(u64, f64, f64)>,
    pub alert: Option<Alert>,
}

fn grade(value: f64, (amber, red): (f64, f64)) -> Option<Severity> {
    if value >= red {
        Some(Severity::Red)
    } else if value >= amber {
        Some(Severity::Amber)
    } else {
        None
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

impl CollapseWatch {
    /// Raises the alert to `severity` (an alert never softens until [`CollapseWatch::clear`]).
    fn raise(&mut self, severity: Severity, message: String) {
        if self.alert.as_ref().is_none_or(|a| severity >= a.severity) {
            self.alert = Some(Alert { severity, message });
        }
    }

    /// An edit landed: `layer_deltas` are its per-layer ‖ΔW‖_F, `efficacy` its own right after.
    pub fn landed(&mut self, id: u64, layer_deltas: &[(usize, f64)], efficacy: Option<f64>) {
        let norm = layer_deltas.iter().map(|(_, d)| d * d).sum::<f64>().sqrt();
        let earlier: Vec<f64> = self.edits.iter().map(|e| e.1).collect();
        if earlier.len() >= HISTORY {
            let m = median(earlier);
            if let Some(s) = (m > 0.0).then(|| grade(norm / m, JUMP)).flatten() {
                self.raise(
                    s,
                    format!("edit #{id}: ‖ΔW‖ {:.1}× the run's median", norm / m),
                );
            }
        }
        self.edits.push((id, norm, efficacy.unwrap_or(f64::NAN)));
        self.judge_efficacy(id);
    }

    fn judge_efficacy(&mut self, id: u64) {
        let eff: Vec<f64> = self
            .edits
            .iter()
            .map(|e| e.2)
            .filter(|e| !e.is_nan())
            .collect();
        if eff.len() < HISTORY + RECENT {
            return;
        }
        let (before, recent) = eff.split_at(eff.len() - RECENT);
        let fall = mean(before) - mean(recent);
        if let Some(s) = grade(fall, FALL) {
            self.raise(
                s,
                format!(
                    "edit #{id}: the last {RECENT} edits' efficacy {:.2} against {:.2} before",
                    mean(recent),
                    mean(before)
                ),
            );
        }
    }

    /// Probe results came back after `edits` edits; `baseline` are the first ones.
    pub fn probes(&mut self, edits: usize, results: &[ProbeResult], baseline: &[ProbeResult]) {
        for r in results {
            let Some(b) = baseline.iter().find(|b| b.task == r.task) else {
                continue;
            };
            let drop = b.headline().1 - r.headline().1;
            // Beyond the two intervals: the fall is more than the items' noise.
            let noise = r.headline_interval().map_or(0.0, |i| i.half_width())
                + b.headline_interval().map_or(0.0, |i| i.half_width());
            if drop > 0.0 && noise > 0.0 {
                if let Some(s) = grade(drop / noise, (1.0, 2.0)) {
                    self.raise(
                        s,
                        format!(
                            "{} fell {drop:.2} by edit {edits} (intervals ±{noise:.2} together)",
                            r.task
                        ),
                    );
                }
            }
        }
    }

    /// An edit was taken back: it no longer counts.
    pub fn undone(&mut self, id: u64) {
        self.edits.retain(|e| e.0 != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady(watch: &mut CollapseWatch, n: u64) {
        for id in 1..=n {
            watch.landed(id, &[(4, 1.0), (8, 1.0 + 0.01 * id as f64)], Some(1.0));
        }
    }

    #[test]
    fn a_steady_run_raises_nothing() {
        let mut w = CollapseWatch::default();
        steady(&mut w, 20);
        assert_eq!(w.alert, None);
    }

    #[test]
    fn a_jump_in_the_update_norm_names_the_edit_amber_then_red() {
        let mut w = CollapseWatch::default();
        steady(&mut w, 6);
        w.landed(7, &[(4, 4.0), (8, 4.0)], Some(1.0));
        let a = w.alert.clone().unwrap();
        assert_eq!(a.severity, Severity::Amber);
        assert!(a.message.starts_with("edit #7: ‖ΔW‖"), "{a:?}");
        w.landed(8, &[(4, 20.0), (8, 20.0)], Some(1.0));
        let a = w.alert.clone().unwrap();
        assert_eq!(a.severity, Severity::Red);
        assert!(a.message.starts_with("edit #8"), "{a:?}");
        // A later amber sign does not soften a red alert.
        w.landed(9, &[(4, 4.0), (8, 4.0)], Some(1.0));
        assert_eq!(w.alert.unwrap().severity, Severity::Red);
    }

    #[test]
    fn falling_efficacy_of_new_edits_is_flagged() {
        let mut w = CollapseWatch::default();
        steady(&mut w, 10);
        for id in 11..=15 {
            w.landed(id, &[(4, 1.0), (8, 1.0)], Some(0.2));
        }
        let a = w.alert.unwrap();
        assert_eq!(a.severity, Severity::Red);
        assert!(a.message.contains("efficacy 0.20 against 1.00"), "{a:?}");
    }
}
