use d4s::edit::{new_editor, EditContext, EditControl, EditRequest, HParams, Method, StatsCache, StatsConfig};
use d4s::edit::keys::bare_activations;
use d4s::eval::metrics::token_accuracy;
use d4s::eval::predict::top_next;
use d4s::model::{load, ModelSpec, Site};
fn main() {
    let mut model = load::load(&ModelSpec::Default, &Default::default()).unwrap();
    let recs: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read("../shared/data/counterfact_easyedit/counterfact-train.json").unwrap()).unwrap();
    let idx: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let r = &recs[idx];
    let req = EditRequest::new(r["subject"].as_str().unwrap(), r["prompt"].as_str().unwrap(), r["target_new"].as_str().unwrap());
    println!("{}", req.describe());
    let h0 = bare_activations(&model, std::slice::from_ref(&req), &[(8, Site::BlockOut)]).unwrap()[0][0].clone();
    for (method, mode) in [(Method::Memit, "once"), (Method::D4s, "once"), (Method::D4s, "per_layer")] {
        model.reset_edits();
        let mut hp = HParams::defaults(method, &model.config);
        hp = hp.with_overrides(&[format!("d4s_residual_mode=\"{mode}\"")]).unwrap();
        let mut ed = new_editor(hp);
        let mut stats = StatsCache::new(StatsConfig::default());
        let mut cx = EditContext { stats: &mut stats, ctl: EditControl::default() };
        let out = ed.apply(&mut model, &mut cx, std::slice::from_ref(&req)).unwrap();
        let h1 = bare_activations(&model, std::slice::from_ref(&req), &[(8, Site::BlockOut)]).unwrap()[0][0].clone();
        let acc = token_accuracy(&model, &[(req.filled_prompt(), req.target.clone())]).unwrap()[0];
        let top = top_next(&model, &[req.filled_prompt()], 3).unwrap();
        let d: Vec<f64> = h1.iter().zip(&h0).map(|(a, b)| a - b).collect();
        println!("{method} {mode}: acc {acc} p_final {:.3} |h1-h0| {:.2} top {:?} layers {:?}", out.targets[0].prob_final, d.iter().map(|x| x*x).sum::<f64>().sqrt(), top[0].iter().map(|p| (p.token.clone(), (p.prob*100.0).round()/100.0)).collect::<Vec<_>>(), out.layers.iter().map(|l| (l.delta_fro*100.0).round()/100.0).collect::<Vec<_>>());
    }
}
