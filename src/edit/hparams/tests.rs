use super::*;
use crate::model::random::tiny_config;
use crate::model::Arch;

fn smollm_like() -> ModelConfig {
    let mut c = tiny_config(Arch::Llama);
    c.n_layers = 30;
    c
}

#[test]
fn defaults_follow_the_reference_settings() {
    let c = smollm_like();
    let m = HParams::defaults(Method::Memit, &c);
    assert_eq!(m.layers, vec![4, 5, 6, 7, 8]);
    // λ scales with d_ff (96 here): 15000 × 96 / 11008.
    assert_eq!(m.mom2_update_weight, (15000.0f64 * 96.0 / 11008.0).round());
    let mut smollm = c.clone();
    smollm.d_ff = 1536;
    assert_eq!(
        HParams::defaults(Method::D4s, &smollm).mom2_update_weight,
        4000.0
    );
    let mut llama7b = c.clone();
    llama7b.d_ff = 11008;
    llama7b.n_layers = 32;
    assert_eq!(
        HParams::defaults(Method::D4s, &llama7b).mom2_update_weight,
        15000.0
    );
    let r = HParams::defaults(Method::Rome, &c);
    assert_eq!(r.layers, vec![5]);
    assert!(!r.mom2_adjustment);
    for method in Method::ALL {
        HParams::defaults(method, &c).validate(&c).unwrap();
        HParams::defaults(method, &tiny_config(Arch::Gpt2))
            .validate(&tiny_config(Arch::Gpt2))
            .unwrap();
    }
}

#[test]
fn easyedit_yaml_maps_and_conflicts() {
    let c = smollm_like();
    let yaml = "alg_name: MEMIT\nlayers: [4, 5, 6]\nv_lr: 5e-1\nv_loss_layer: 29\nmom2_update_weight: 20000\n\
                rewrite_module_tmp: model.layers.{}.mlp.down_proj\nstats_dir: ./stats\nfact_token: subject_last\n";
    let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
    let hp = HParams::defaults(Method::Memit, &c)
        .from_easyedit(v, &c)
        .unwrap();
    assert_eq!(hp.layers, vec![4, 5, 6]);
    assert_eq!(hp.v_lr, 0.5);
    assert_eq!(hp.mom2_update_weight, 20000.0);
    // Another method's file, another loss layer, another module: errors that say why.
    for (yaml, needle) in [
        ("alg_name: ROME\n", "ROME"),
        ("v_loss_layer: 12\n", "v_loss_layer"),
        (
            "rewrite_module_tmp: transformer.h.{}.mlp.c_proj\n",
            "rewrite_module_tmp",
        ),
        ("v_lr: fast\n", "v_lr"),
    ] {
        let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
        let e = HParams::defaults(Method::Memit, &c)
            .from_easyedit(v, &c)
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{yaml}: {e}");
    }
}

#[test]
fn overrides_and_validation() {
    let c = smollm_like();
    let hp = HParams::defaults(Method::D4s, &c)
        .with_overrides(&["layers=[3,4]".into(), "v_lr=0.2".into()])
        .unwrap();
    assert_eq!(hp.layers, vec![3, 4]);
    assert!(HParams::defaults(Method::D4s, &c)
        .with_overrides(&["nope=1".into()])
        .is_err());
    let mut bad = hp.clone();
    bad.layers = vec![31];
    assert!(bad
        .validate(&c)
        .unwrap_err()
        .to_string()
        .contains("does not exist"));
    bad.layers = vec![5, 4];
    assert!(bad.validate(&c).is_err());
    let mut rome = HParams::defaults(Method::Rome, &c);
    rome.layers = vec![4, 5];
    assert!(rome.validate(&c).is_err());
}
