use d4s::edit::target::*;
use d4s::edit::{EditControl, EditRequest};
use d4s::model::{load, ModelSpec, Site};
fn main() {
    let m = load::load(&ModelSpec::Default, &Default::default()).unwrap();
    let req = EditRequest::new("Danielle Darrieux", "The mother tongue of Danielle Darrieux is", "English");
    let ctx: Vec<String> = vec!["{}".into(), "The-I-A. {}".into(), "Therefore, the maximum number. {}".into(), "Because-131. {}".into(), "I-year return of. {}".into(), "You, and the \". {}".into()];
    for layer in [8usize, 5] {
        let p = TargetProblem::for_request(&m, &req, &ctx, Lookup::SubjectLast, layer, vec![SiteSpec { site: Site::MlpOut, reference: Site::BlockOut, init: None, regularized: true }], true).unwrap();
        println!("rows {:?}", p.rows.iter().map(|r| r.len()).collect::<Vec<_>>());
        println!("lookup {:?} target {:?}", p.lookup, p.target);
        let params = TargetParams { steps: 10, lr: 0.5, weight_decay: 1e-3, clamp_norm_factor: Some(4.0), kl_factor: 0.0625, stop_loss: None, stop_prob: None, pmet_schedule: false, nll_factor: 1.0 };
        for pc in [true] {
            let t = std::time::Instant::now();
            let r = optimize(&m, &p, &params, OptimOptions { prefix_cache: pc, record_trajectory: false }, &EditControl::default()).unwrap();
            println!("layer {layer} prefix_cache {pc}: {:.3} s for {} steps, p {:.3}", t.elapsed().as_secs_f64(), r.steps_run, r.prob_final);
        }
    }
}
