//! Percentile-bootstrap 95% intervals, for every edit metric (over cases) and every probe (over
//! items).
//!
//! A mean over items whose items come in clusters (a case's paraphrases and neighbours) is
//! resampled by cluster: each of `B` resamples draws `n` clusters with replacement and takes the
//! ratio `Σ sums / Σ counts`, so the interval is around the very mean the tables report (an
//! item-weighted mean) while honouring that a case's items are not independent. The 2.5th and
//! 97.5th percentiles of the resampled means are the interval (Efron & Tibshirani, ch. 13).
//!
//! The resampling RNG has a fixed seed: the same values give the same interval, so a run folder
//! is reproducible byte for byte.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Bootstrap resamples: enough that the percentile ends move by well under a point between
/// seeds for the few hundred to few thousand clusters a run has.
pub const RESAMPLES: usize = 1000;
const SEED: u64 = 0x0d45_b007;

/// A 95% interval `[lo, hi]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    /// Half the width: the "±" of a table.
    pub fn half_width(&self) -> f64 {
        (self.hi - self.lo) / 2.0
    }
}

/// One cluster's items of a metric: their sum and how many there are.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    pub sum: f64,
    pub count: usize,
}

impl Tally {
    pub fn add(&mut self, v: f64) {
        self.sum += v;
        self.count += 1;
    }
}

/// The item-weighted mean of clusters and its cluster-bootstrap interval. Clusters without
/// items do not count; `None` when no cluster has any, and no interval with a single cluster
/// (a resample of one cluster is itself).
pub fn clustered_mean(tallies: &[Tally]) -> Option<(f64, Option<Interval>)> {
    let live: Vec<Tally> = tallies.iter().copied().filter(|t| t.count > 0).collect();
    let (sum, count) = live
        .iter()
        .fold((0.0, 0), |(s, n), t| (s + t.sum, n + t.count));
    if count == 0 {
        return None;
    }
    let mean = sum / count as f64;
    if live.len() < 2 {
        return Some((mean, None));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut means: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            let (s, n) = (0..live.len()).fold((0.0, 0), |(s, n), _| {
                let t = live[rng.random_range(0..live.len())];
                (s + t.sum, n + t.count)
            });
            s / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    Some((mean, Some(percentiles(&means))))
}

/// The mean of independent items and its bootstrap interval.
pub fn mean(values: &[f64]) -> Option<(f64, Option<Interval>)> {
    let tallies: Vec<Tally> = values.iter().map(|&v| Tally { sum: v, count: 1 }).collect();
    clustered_mean(&tallies)
}

/// The 2.5th and 97.5th percentiles of sorted values (nearest rank).
fn percentiles(sorted: &[f64]) -> Interval {
    let at =
        |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
    Interval {
        lo: at(0.025),
        hi: at(0.975),
    }
}

/// Mean and sample standard deviation of a few runs' values (`--seeds`): `None` for no values,
/// a zero deviation for one.
pub fn mean_sd(values: &[f64]) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let m = values.iter().sum::<f64>() / n;
    if values.len() == 1 {
        return Some((m, 0.0));
    }
    let var = values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0);
    Some((m, var.sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_coin_of_400_flips_has_the_textbook_interval() {
        // p = 0.5, n = 400: normal approximation ±1.96·√(p(1−p)/n) = ±0.049.
        let flips: Vec<f64> = (0..400).map(|i| f64::from(i % 2 == 0)).collect();
        let (m, ci) = mean(&flips).unwrap();
        let ci = ci.unwrap();
        assert_eq!(m, 0.5);
        assert!(ci.lo < 0.5 && ci.hi > 0.5, "{ci:?}");
        assert!(
            (ci.half_width() - 0.049).abs() < 0.008,
            "half width {}",
            ci.half_width()
        );
        // Reproducible: the same data give the same interval.
        assert_eq!(mean(&flips).unwrap().1.unwrap(), ci);
    }

    #[test]
    fn clusters_widen_the_interval_and_keep_the_item_weighted_mean() {
        // 50 cases of 10 perfectly correlated items each against 500 independent items with
        // the same values: the same mean, and the clustered interval is far wider (about √10).
        let cases: Vec<Tally> = (0..50)
            .map(|i| Tally {
                sum: if i % 2 == 0 { 10.0 } else { 0.0 },
                count: 10,
            })
            .collect();
        let items: Vec<f64> = (0..500).map(|i| f64::from((i / 10) % 2 == 0)).collect();
        let (m_c, ci_c) = clustered_mean(&cases).unwrap();
        let (m_i, ci_i) = mean(&items).unwrap();
        assert_eq!(m_c, m_i);
        let ratio = ci_c.unwrap().half_width() / ci_i.unwrap().half_width();
        assert!((2.4..4.2).contains(&ratio), "ratio {ratio}");
        // Unequal clusters: the mean weighs items, not clusters.
        let uneven = [
            Tally { sum: 3.0, count: 3 },
            Tally { sum: 0.0, count: 1 },
            Tally::default(),
        ];
        assert_eq!(clustered_mean(&uneven).unwrap().0, 0.75);
    }

    #[test]
    fn degenerate_inputs_have_no_interval() {
        assert_eq!(mean(&[]), None);
        assert_eq!(clustered_mean(&[Tally::default()]), None);
        assert_eq!(mean(&[0.3]), Some((0.3, None)));
        let constant = mean(&[1.0; 20]).unwrap().1.unwrap();
        assert_eq!((constant.lo, constant.hi), (1.0, 1.0));
        assert_eq!(mean_sd(&[]), None);
        assert_eq!(mean_sd(&[2.0]), Some((2.0, 0.0)));
        let (m, sd) = mean_sd(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((m, sd), (2.0, 1.0));
    }
}
