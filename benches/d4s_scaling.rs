//! Does a D4S edit get dearer as the history grows? Edit #10 against edit #1,000 on the default
//! model, side by side in one run (issue: "#1,000 within 1.2× of #10 in time and memory").
//!
//! `RAYON_NUM_THREADS=1 cargo bench --bench d4s_scaling` (needs `../shared/data` for the facts).
//!
//! Two D4S editors share the model (D4S re-bases on W0 inside every edit, so neither sees the
//! other's weights): `short` holds 9 real CounterFact edits, `long` holds 999 — the recorded terms
//! of the same 9 edits, cycled (an edit reads the history only through the fixed-size sums, so the
//! values do not change the work). Each round applies the same new fact to `short` (its edit #10)
//! and to `long` (its edit #1,000), timing both, and undoes each exactly afterwards so both stay
//! at their history length. Prints a Markdown table.

use std::path::PathBuf;
use std::time::Instant;

use d4s::edit::d4s::D4s;
use d4s::edit::{
    EditContext, EditControl, EditOutcome, EditRequest, EditTerms, Editor, HParams, Method,
    StatsCache, StatsConfig, Timings, UndoRecord,
};
use d4s::eval::datasets;
use d4s::model::{load, Model, ModelSpec};

const SHORT: usize = 9;
const LONG: usize = 999;
const ROUNDS: usize = 5;

fn facts(n: usize) -> Option<Vec<EditRequest>> {
    let root = std::env::var_os("D4S_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let path = root.join("data/counterfact_easyedit/counterfact-edit.json");
    if !path.exists() {
        eprintln!("SKIP: {} is not present", path.display());
        return None;
    }
    let loaded = datasets::load(&path, None, true, Some(n)).expect("CounterFact loads");
    Some(loaded.cases.into_iter().flat_map(|c| c.requests).collect())
}

fn apply(model: &mut Model, stats: &mut StatsCache, d4s: &mut D4s, r: &EditRequest) -> EditOutcome {
    let mut cx = EditContext {
        stats,
        targets: None,
        target_group: None,
        ctl: EditControl::default(),
    };
    d4s.apply(model, &mut cx, std::slice::from_ref(r))
        .expect("D4S edit")
}

fn undo(model: &mut Model, stats: &mut StatsCache, d4s: &mut D4s, record: &UndoRecord) {
    let mut cx = EditContext {
        stats,
        targets: None,
        target_group: None,
        ctl: EditControl::default(),
    };
    d4s.undo(model, &mut cx, record).expect("D4S undo");
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let Some(reqs) = facts(SHORT + ROUNDS) else {
        return;
    };
    let mut model = load::load(&ModelSpec::Default, &Default::default()).expect("default model");
    let mut stats = StatsCache::new(StatsConfig::default());
    let hp = HParams::defaults(Method::D4s, &model.config);

    let mut short = D4s::new(hp.clone());
    let mut history: Vec<EditTerms> = Vec::new();
    for r in &reqs[..SHORT] {
        match apply(&mut model, &mut stats, &mut short, r).undo {
            UndoRecord::Terms(t) => history.push(t),
            other => panic!("D4S returned {other:?}"),
        }
    }
    let mut long = D4s::new(hp);
    let cycled: Vec<EditTerms> = history.iter().cycle().take(LONG).cloned().collect();
    {
        let mut cx = EditContext {
            stats: &mut stats,
            targets: None,
            target_group: None,
            ctl: EditControl::default(),
        };
        long.restore_history(&mut model, &mut cx, &cycled)
            .expect("restore");
    }
    assert_eq!((short.n_edits(), long.n_edits()), (SHORT, LONG));
    drop(cycled);

    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into());
    let mut rows: Vec<(&str, Vec<f64>, Vec<Timings>)> =
        vec![("#10", vec![], vec![]), ("#1000", vec![], vec![])];
    for r in &reqs[SHORT..] {
        for (slot, editor) in [&mut short, &mut long].into_iter().enumerate() {
            let t = Instant::now();
            let outcome = apply(&mut model, &mut stats, editor, r);
            rows[slot].1.push(t.elapsed().as_secs_f64());
            rows[slot].2.push(outcome.timings.clone());
            undo(&mut model, &mut stats, editor, &outcome.undo);
        }
    }
    println!("threads = {threads}; {ROUNDS} rounds, medians; state = S and A over the 5 edited layers (f64)");
    println!("| edit | wall (s) | target (s) | keys (s) | solve (s) | state (MiB) |");
    println!("|---|---|---|---|---|---|");
    let states = [short.state_bytes(), long.state_bytes()];
    for ((name, wall, timings), state) in rows.iter().zip(states) {
        let m = |f: fn(&Timings) -> f64| median(timings.iter().map(f).collect());
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} |",
            median(wall.clone()),
            m(|t| t.target),
            m(|t| t.keys),
            m(|t| t.solve),
            state as f64 / (1 << 20) as f64
        );
    }
    let ratio = median(rows[1].1.clone()) / median(rows[0].1.clone());
    println!(
        "\ntime ratio #1000 / #10 = {ratio:.3}; state bytes equal: {}; process RSS {:.0} MiB",
        states[0] == states[1],
        d4s::util::resident_memory().unwrap_or(0) as f64 / (1 << 20) as f64
    );
}
