use d4s::edit::{new_editor, EditContext, EditControl, EditRequest, HParams, Method, StatsCache, StatsConfig};
use d4s::eval::metrics::token_accuracy;
use d4s::model::{load, ModelSpec};
fn main() {
    let mut model = load::load(&ModelSpec::Default, &Default::default()).unwrap();
    let file = std::env::var("CF").unwrap_or("../shared/data/counterfact_easyedit/counterfact-edit.json".into()); let off: usize = std::env::var("OFF").ok().and_then(|x| x.parse().ok()).unwrap_or(0); let recs: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap(); let recs = recs[off..].to_vec();
    let reqs: Vec<EditRequest> = recs[..std::env::var("N").ok().and_then(|x| x.parse().ok()).unwrap_or(20)].iter().map(|r| EditRequest::new(r["subject"].as_str().unwrap(), r["prompt"].as_str().unwrap(), r["target_new"].as_str().unwrap())).collect();
    let method: Method = std::env::args().nth(1).unwrap().parse().unwrap();
    for lam in std::env::args().skip(2).map(|a| a.parse::<f64>().unwrap()) {
        let mut hp = HParams::defaults(method, &model.config);
        hp.mom2_update_weight = lam;
        for kv in std::env::var("HP").unwrap_or_default().split(',').filter(|x| !x.is_empty()) { hp = hp.with_overrides(&[kv.to_string()]).unwrap(); }
        let t = std::time::Instant::now();
        let mut accs = vec![];
        let mut stats = StatsCache::new(StatsConfig { corpus: d4s::edit::CorpusSpec::parse(&std::env::var("CORPUS").unwrap_or("model".into())).unwrap(), ..Default::default() });
        for r in &reqs {
            model.reset_edits();
            let mut ed = new_editor(hp.clone());
            let mut cx = EditContext { stats: &mut stats, ctl: EditControl::default() };
            let o = ed.apply(&mut model, &mut cx, std::slice::from_ref(r)).unwrap();
            eprint!("p{:.2} ", o.targets[0].prob_final);
            accs.extend(token_accuracy(&model, &[(r.filled_prompt(), r.target.clone())]).unwrap());
        }
        println!("{method} λ={lam}: rewrite {:.3} in {:.0} s {:?}", accs.iter().sum::<f64>() / accs.len() as f64, t.elapsed().as_secs_f64(), accs);
    }
}
