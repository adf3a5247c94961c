//! The metrics of an evaluation point, typed: one struct per protocol family (`token.*`,
//! `prob.*`, `gen.*`, `generation.fluency`), one enum per family to pick a metric, [`Metric`]
//! over all of them, and their intervals. Serde names are the names the files use.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::eval::interval::Interval;

pub(super) fn none(v: &Option<f64>) -> bool {
    v.is_none()
}

/// EasyEdit's token-level metrics: teacher-forced argmax accuracy on the new target (efficacy,
/// paraphrase, portability) and agreement with the unedited model's predictions (specificity,
/// EasyEdit's "locality").
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenMetrics {
    #[serde(default, skip_serializing_if = "none")]
    pub efficacy: Option<f64>,
    #[serde(default, skip_serializing_if = "none")]
    pub paraphrase: Option<f64>,
    #[serde(default, skip_serializing_if = "none")]
    pub portability: Option<f64>,
    #[serde(default, skip_serializing_if = "none")]
    pub specificity: Option<f64>,
}

/// ROME/MEMIT's CounterFact probability comparisons: the share of prompts where the new target
/// beats the true one (efficacy ES, paraphrase PS) or the neighbour keeps its answer (NS), and
/// the mean probability margins (EM, PM, NM).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbMetrics {
    #[serde(default, skip_serializing_if = "none")]
    pub em: Option<f64>,
    #[serde(default, skip_serializing_if = "none")]
    pub es: Option<f64>,
    #[serde(default, skip_serializing_if = "none")]
    pub nm: Option<f64>,
    #[serde(default, skip_serializing_if = "none")]
    pub ns: Option<f64>,
    #[serde(default, skip_serializing_if = "none")]
    pub pm: Option<f64>,
    #[serde(default, skip_serializing_if = "none")]
    pub ps: Option<f64>,
}

/// Generation metrics (`gen.*`, "The Mirage of Model Editing", ACL 2025): the model answers by
/// greedy decoding, not teacher forcing, until end-of-text, a newline or len(answer) + 8 tokens
/// ([`crate::eval::metrics::greedy_answers`]). `*_em`: the answer's first words are the target's
/// (SQuAD-normalized); `*_f1`: SQuAD token-F1 of the whole answer against the target;
/// `specificity`: the share of neighbour prompts whose generated answer is the unedited model's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GenMetrics {
    #[serde(default, skip_serializing_if = "none")]
    pub efficacy_em: Option<f64>,
    #[serde(default, skip_serializing_if = "none")]
    pub efficacy_f1: Option<f64>,
    #[serde(default, skip_serializing_if = "none")]
    pub paraphrase_em: Option<f64>,
    #[serde(default, skip_serializing_if = "none")]
    pub paraphrase_f1: Option<f64>,
    #[serde(default, skip_serializing_if = "none")]
    pub specificity: Option<f64>,
}

impl GenMetrics {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One generation metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GenMetric {
    EfficacyEm,
    EfficacyF1,
    ParaphraseEm,
    ParaphraseF1,
    Specificity,
}

impl GenMetric {
    pub const ALL: [GenMetric; 5] = [
        GenMetric::EfficacyEm,
        GenMetric::EfficacyF1,
        GenMetric::ParaphraseEm,
        GenMetric::ParaphraseF1,
        GenMetric::Specificity,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GenMetric::EfficacyEm => "efficacy_em",
            GenMetric::EfficacyF1 => "efficacy_f1",
            GenMetric::ParaphraseEm => "paraphrase_em",
            GenMetric::ParaphraseF1 => "paraphrase_f1",
            GenMetric::Specificity => "specificity",
        }
    }

    pub fn get(self, m: &GenMetrics) -> Option<f64> {
        match self {
            GenMetric::EfficacyEm => m.efficacy_em,
            GenMetric::EfficacyF1 => m.efficacy_f1,
            GenMetric::ParaphraseEm => m.paraphrase_em,
            GenMetric::ParaphraseF1 => m.paraphrase_f1,
            GenMetric::Specificity => m.specificity,
        }
    }

    pub fn slot(self, m: &mut GenMetrics) -> &mut Option<f64> {
        match self {
            GenMetric::EfficacyEm => &mut m.efficacy_em,
            GenMetric::EfficacyF1 => &mut m.efficacy_f1,
            GenMetric::ParaphraseEm => &mut m.paraphrase_em,
            GenMetric::ParaphraseF1 => &mut m.paraphrase_f1,
            GenMetric::Specificity => &mut m.specificity,
        }
    }
}

/// Free-generation metrics: ROME/MEMIT's fluency GE (n-gram entropy of sampled text, bits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationMetrics {
    #[serde(default, skip_serializing_if = "none")]
    pub fluency: Option<f64>,
}

impl TokenMetrics {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl ProbMetrics {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl GenerationMetrics {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// One token-level metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TokenMetric {
    Efficacy,
    Paraphrase,
    Specificity,
    Portability,
}

impl TokenMetric {
    pub const ALL: [TokenMetric; 4] = [
        TokenMetric::Efficacy,
        TokenMetric::Paraphrase,
        TokenMetric::Specificity,
        TokenMetric::Portability,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TokenMetric::Efficacy => "efficacy",
            TokenMetric::Paraphrase => "paraphrase",
            TokenMetric::Specificity => "specificity",
            TokenMetric::Portability => "portability",
        }
    }

    pub fn get(self, m: &TokenMetrics) -> Option<f64> {
        match self {
            TokenMetric::Efficacy => m.efficacy,
            TokenMetric::Paraphrase => m.paraphrase,
            TokenMetric::Specificity => m.specificity,
            TokenMetric::Portability => m.portability,
        }
    }

    pub fn slot(self, m: &mut TokenMetrics) -> &mut Option<f64> {
        match self {
            TokenMetric::Efficacy => &mut m.efficacy,
            TokenMetric::Paraphrase => &mut m.paraphrase,
            TokenMetric::Specificity => &mut m.specificity,
            TokenMetric::Portability => &mut m.portability,
        }
    }
}

/// One probability metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProbMetric {
    Es,
    Em,
    Ps,
    Pm,
    Ns,
    Nm,
}

impl ProbMetric {
    pub fn name(self) -> &'static str {
        match self {
            ProbMetric::Es => "es",
            ProbMetric::Em => "em",
            ProbMetric::Ps => "ps",
            ProbMetric::Pm => "pm",
            ProbMetric::Ns => "ns",
            ProbMetric::Nm => "nm",
        }
    }

    pub fn get(self, m: &ProbMetrics) -> Option<f64> {
        match self {
            ProbMetric::Es => m.es,
            ProbMetric::Em => m.em,
            ProbMetric::Ps => m.ps,
            ProbMetric::Pm => m.pm,
            ProbMetric::Ns => m.ns,
            ProbMetric::Nm => m.nm,
        }
    }

    pub fn slot(self, m: &mut ProbMetrics) -> &mut Option<f64> {
        match self {
            ProbMetric::Es => &mut m.es,
            ProbMetric::Em => &mut m.em,
            ProbMetric::Ps => &mut m.ps,
            ProbMetric::Pm => &mut m.pm,
            ProbMetric::Ns => &mut m.ns,
            ProbMetric::Nm => &mut m.nm,
        }
    }
}

/// Any metric of an evaluation point, for the consumers that pick one (plots, tables, the TUI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    Token(TokenMetric),
    Prob(ProbMetric),
    Gen(GenMetric),
    Fluency,
    Multihop,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Token(m) => m.name(),
            Metric::Prob(m) => m.name(),
            Metric::Gen(m) => m.name(),
            Metric::Fluency => "fluency",
            Metric::Multihop => "multihop",
        }
    }

    /// The metric's name in the files, with its protocol family: `token.efficacy`, `prob.es`,
    /// `gen.efficacy_em`, `generation.fluency`, `multihop`.
    pub fn key(self) -> String {
        match self {
            Metric::Token(m) => format!("token.{}", m.name()),
            Metric::Prob(m) => format!("prob.{}", m.name()),
            Metric::Gen(m) => format!("gen.{}", m.name()),
            Metric::Fluency => "generation.fluency".into(),
            Metric::Multihop => "multihop".into(),
        }
    }

    /// The metric named by [`Metric::key`].
    pub fn from_key(key: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.key() == key)
    }

    /// How the metric is measured, as a run's `config.json` records it.
    pub fn protocol(self) -> &'static str {
        match self {
            Metric::Token(TokenMetric::Specificity) => {
                "teacher-forced argmax at the answer positions of prompt + \" \" + answer, \
                 compared with the unedited model's (EasyEdit locality)"
            }
            Metric::Token(_) => {
                "teacher-forced argmax accuracy on the answer tokens of prompt + \" \" + answer \
                 (EasyEdit)"
            }
            Metric::Prob(_) => {
                "mean token NLL of the new target against the other answer after the prompt \
                 (ROME/MEMIT CounterFact ES/PS/NS and magnitudes)"
            }
            Metric::Gen(GenMetric::Specificity) => {
                "greedy decoding from each neighbour prompt until end-of-text, a newline or \
                 len(answer) + 8 tokens; share identical to the unedited model's answer"
            }
            Metric::Gen(GenMetric::EfficacyEm | GenMetric::ParaphraseEm) => {
                "greedy decoding until end-of-text, a newline or len(target) + 8 tokens; the \
                 answer's first words equal the target's (SQuAD normalization)"
            }
            Metric::Gen(_) => {
                "greedy decoding until end-of-text, a newline or len(target) + 8 tokens; SQuAD \
                 token-F1 of the answer against the target"
            }
            Metric::Fluency => {
                "top-5 samples of 100 tokens per generation prompt; (2/3·H2 + 4/3·H3)/2 n-gram \
                 entropy in bits (ROME/MEMIT GE)"
            }
            Metric::Multihop => {
                "greedy answer (16 tokens, first line) to each MQuAKE question after a 3-shot \
                 preamble; a case is right when any question yields the answer or an alias"
            }
        }
    }

    pub fn of(self, m: &CaseMetrics) -> Option<f64> {
        match self {
            Metric::Token(t) => t.get(&m.token),
            Metric::Prob(p) => p.get(&m.prob),
            Metric::Gen(g) => g.get(&m.gen),
            Metric::Fluency => m.generation.fluency,
            Metric::Multihop => m.multihop,
        }
    }

    pub(crate) fn slot(self, m: &mut CaseMetrics) -> &mut Option<f64> {
        match self {
            Metric::Token(t) => t.slot(&mut m.token),
            Metric::Prob(p) => p.slot(&mut m.prob),
            Metric::Gen(g) => g.slot(&mut m.gen),
            Metric::Fluency => &mut m.generation.fluency,
            Metric::Multihop => &mut m.multihop,
        }
    }

    /// Every metric, in the order tables list them.
    pub const ALL: [Metric; 17] = [
        Metric::Token(TokenMetric::Efficacy),
        Metric::Token(TokenMetric::Paraphrase),
        Metric::Token(TokenMetric::Specificity),
        Metric::Token(TokenMetric::Portability),
        Metric::Prob(ProbMetric::Es),
        Metric::Prob(ProbMetric::Em),
        Metric::Prob(ProbMetric::Ps),
        Metric::Prob(ProbMetric::Pm),
        Metric::Prob(ProbMetric::Ns),
        Metric::Prob(ProbMetric::Nm),
        Metric::Gen(GenMetric::EfficacyEm),
        Metric::Gen(GenMetric::EfficacyF1),
        Metric::Gen(GenMetric::ParaphraseEm),
        Metric::Gen(GenMetric::ParaphraseF1),
        Metric::Gen(GenMetric::Specificity),
        Metric::Fluency,
        Metric::Multihop,
    ];
}

/// The 95% bootstrap interval of each metric of a point that has one
/// ([`crate::eval::interval`]): over cases for the per-edit metrics. Written keyed by
/// [`Metric::key`]; keys a later version adds are skipped when an older one reads the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Intervals(pub BTreeMap<Metric, Interval>);

impl Intervals {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, metric: Metric) -> Option<Interval> {
        self.0.get(&metric).copied()
    }
}

impl Serialize for Intervals {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let by_key: BTreeMap<String, Interval> =
            self.0.iter().map(|(m, i)| (m.key(), *i)).collect();
        by_key.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Intervals {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let by_key = BTreeMap::<String, Interval>::deserialize(d)?;
        Ok(Intervals(
            by_key
                .into_iter()
                .filter_map(|(k, i)| Some((Metric::from_key(&k)?, i)))
                .collect(),
        ))
    }
}

/// Mean metrics over a set of cases.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaseMetrics {
    pub token: TokenMetrics,
    pub prob: ProbMetrics,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multihop: Option<f64>,
    /// Measured only where the cases have generation prompts and the point samples them.
    #[serde(default, skip_serializing_if = "GenerationMetrics::is_empty")]
    pub generation: GenerationMetrics,
    /// Greedy-generation metrics, at the points that decode ([`GenMetrics`]).
    #[serde(default, skip_serializing_if = "GenMetrics::is_empty")]
    pub gen: GenMetrics,
    pub cases: usize,
    /// 95% bootstrap intervals over cases of the per-edit metrics.
    #[serde(default, skip_serializing_if = "Intervals::is_empty")]
    pub intervals: Intervals,
}

impl CaseMetrics {
    /// Case-weighted means of per-case metric sets (the single protocol's final point: each
    /// part measured right after its own edit).
    pub fn merge<'a>(parts: impl IntoIterator<Item = &'a CaseMetrics>) -> CaseMetrics {
        let mut sums: BTreeMap<Metric, (f64, usize)> = BTreeMap::new();
        let mut out = CaseMetrics::default();
        for p in parts {
            out.cases += p.cases;
            for metric in Metric::ALL {
                if let Some(v) = metric.of(p) {
                    let e = sums.entry(metric).or_default();
                    e.0 += v * p.cases as f64;
                    e.1 += p.cases;
                }
            }
        }
        for (metric, (s, n)) in sums {
            *metric.slot(&mut out) = Some(s / n.max(1) as f64);
        }
        out
    }
}
