//! Heads and boundary adjustment against hand-worked values and their properties.

use candle_core::{Device, Tensor};
use robal_models::{Arch, Classifier, FcBias, HeadConfig, Mode, ModelConfig, ParamStore, TensorKind};

fn head(config: HeadConfig, w: &[f32], b: Option<&[f32]>, dim: usize) -> robal_models::Head {
    let store = ParamStore::new(Device::Cpu, 0);
    let classes = w.len() / dim;
    let h = robal_models::Head::new(&store.root(), config, dim, classes).unwrap();
    let mut state = store.state();
    state.insert("weight".into(), Tensor::from_slice(w, (classes, dim), &Device::Cpu).unwrap());
    if let Some(b) = b {
        state.insert("bias".into(), Tensor::from_slice(b, classes, &Device::Cpu).unwrap());
    }
    store.load_state(&state).unwrap();
    h
}

fn logits(h: &robal_models::Head, f: &[f32], dim: usize) -> Vec<Vec<f32>> {
    let f = Tensor::from_slice(f, (f.len() / dim, dim), &Device::Cpu).unwrap();
    h.forward(&f).unwrap().to_vec2().unwrap()
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-5 * (1.0 + b.abs())
}

#[test]
fn cosine_head_hand_worked() {
    // f = (3, 4): f/||f|| = (0.6, 0.8). w_0 = (1, 0): ||w|| = 1; w_1 = (0, 2): ||w|| = 2.
    // gamma = 0.5, s = 10: z_0 = 10 * 0.6 * 1/1.5 = 4; z_1 = 10 * 0.8 * 2/2.5 = 6.4.
    let h = head(HeadConfig::Cosine { scale: 10.0, gamma: 0.5, bias: false }, &[1.0, 0.0, 0.0, 2.0], None, 2);
    let z = logits(&h, &[3.0, 4.0], 2);
    assert!(close(z[0][0], 4.0) && close(z[0][1], 6.4), "{z:?}");
}

#[test]
fn cosine_head_is_invariant_to_feature_scale() {
    let w: Vec<f32> = (0..15).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
    let h = head(HeadConfig::Cosine { scale: 10.0, gamma: 0.03125, bias: false }, &w, None, 5);
    let f = [0.3f32, -1.2, 2.0, 0.7, 0.1];
    let base = logits(&h, &f, 5);
    for a in [1e-3f32, 0.5, 7.0, 1e4] {
        let scaled: Vec<f32> = f.iter().map(|v| v * a).collect();
        let z = logits(&h, &scaled, 5);
        for (x, y) in z[0].iter().zip(&base[0]) {
            assert!(close(*x, *y), "scale {a}: {z:?} vs {base:?}");
        }
    }
}

#[test]
fn scaling_a_weight_row_changes_its_logit_only_through_gamma() {
    // z_c(a w_c) = z_c(w_c) * a (||w_c|| + gamma) / (a ||w_c|| + gamma); other logits unchanged.
    let gamma = 0.25f32;
    let w = [1.0f32, 2.0, 2.0, -1.0, 0.5, 0.0];
    let f = [0.4f32, -0.3, 0.9];
    let base = logits(&head(HeadConfig::Cosine { scale: 1.0, gamma: gamma as f64, bias: false }, &w, None, 3), &f, 3);
    for a in [0.1f32, 3.0, 50.0] {
        let mut w2 = w;
        w2[..3].iter_mut().for_each(|v| *v *= a);
        let z = logits(&head(HeadConfig::Cosine { scale: 1.0, gamma: gamma as f64, bias: false }, &w2, None, 3), &f, 3);
        let norm = 3.0f32; // ||(1, 2, 2)||
        assert!(close(z[0][0], base[0][0] * a * (norm + gamma) / (a * norm + gamma)), "a = {a}");
        assert!(close(z[0][1], base[0][1]));
    }
    // gamma = 0: fully invariant.
    let z0 = logits(&head(HeadConfig::Cosine { scale: 1.0, gamma: 0.0, bias: false }, &w, None, 3), &f, 3);
    let w3: Vec<f32> = w.iter().enumerate().map(|(i, v)| if i < 3 { v * 9.0 } else { *v }).collect();
    let z3 = logits(&head(HeadConfig::Cosine { scale: 1.0, gamma: 0.0, bias: false }, &w3, None, 3), &f, 3);
    assert!(close(z0[0][0], z3[0][0]));
}

#[test]
fn zero_feature_gives_zero_cosine_logits_not_nan() {
    let h = head(HeadConfig::ROBAL_EVAL, &[1.0, 0.0, 0.0, 1.0], None, 2);
    assert_eq!(logits(&h, &[0.0, 0.0], 2), vec![vec![0.0, 0.0]]);
}

#[test]
fn fc_tau_norm_and_lws_hand_worked() {
    let w = [3.0f32, 4.0, 0.0, 2.0]; // ||w_0|| = 5, ||w_1|| = 2
    let b = [0.5f32, -1.0];
    let f = [1.0f32, 1.0];
    let fc = logits(&head(HeadConfig::FC, &w, Some(&b), 2), &f, 2);
    assert_eq!(fc, vec![vec![7.5, 1.0]]);
    // tau = 1: w_0/5 . f = 1.4, w_1/2 . f = 1.
    let tn = logits(&head(HeadConfig::TauNorm { tau: 1.0, bias: true }, &w, Some(&b), 2), &f, 2);
    assert!(close(tn[0][0], 1.4 + 0.5) && close(tn[0][1], 1.0 - 1.0), "{tn:?}");
    let t0 = logits(&head(HeadConfig::TauNorm { tau: 0.0, bias: true }, &w, Some(&b), 2), &f, 2);
    assert_eq!(t0, fc, "tau = 0 is the FC head");
    // PostNorm (`bias: False`): the same weights, the trained bias kept in the state, not added.
    let pn = logits(&head(HeadConfig::TauNorm { tau: 1.0, bias: false }, &w, Some(&b), 2), &f, 2);
    assert!(close(pn[0][0], 1.4) && close(pn[0][1], 1.0), "{pn:?}");
    let lws = logits(&head(HeadConfig::LWS, &w, Some(&b), 2), &f, 2);
    assert_eq!(lws, fc, "gains start at 1");
    // PostNorm's LWS (bias: False): g (W f) = (7, 2) with the gains at 1.
    let lws_nb = logits(&head(HeadConfig::Lws { bias: false }, &w, Some(&b), 2), &f, 2);
    assert_eq!(lws_nb, vec![vec![7.0, 2.0]]);
}

fn small(head: HeadConfig) -> Classifier {
    let config = ModelConfig { arch: Arch::SmallCnn, in_channels: 1, num_classes: 3, head, normalization: None };
    Classifier::new(config, &Device::Cpu, 5).unwrap()
}

#[test]
fn posthoc_adjustment_subtracts_tau_log_prior() {
    let mut m = small(HeadConfig::ROBAL_EVAL);
    let x = Tensor::rand(0f32, 1.0, (2, 1, 28, 28), &Device::Cpu).unwrap();
    let plain: Vec<Vec<f32>> = m.forward(&x, Mode::Eval).unwrap().to_vec2().unwrap();
    let e = m.set_posthoc(Some(1.5)).unwrap_err().to_string();
    assert!(e.contains("needs the training counts"), "{e}");
    m.set_class_counts(vec![600, 300, 100]).unwrap();
    m.set_posthoc(Some(1.5)).unwrap();
    let adj: Vec<Vec<f32>> = m.forward(&x, Mode::Eval).unwrap().to_vec2().unwrap();
    let prior = [0.6f64, 0.3, 0.1];
    for (r, row) in adj.iter().enumerate() {
        for c in 0..3 {
            let want = plain[r][c] as f64 - 1.5 * prior[c].ln();
            assert!((row[c] as f64 - want).abs() < 1e-5, "row {r} class {c}");
        }
    }
    m.set_posthoc(None).unwrap();
    assert_eq!(m.forward(&x, Mode::Eval).unwrap().to_vec2::<f32>().unwrap(), plain);
    assert!(m.set_class_counts(vec![1, 0, 3]).is_err());
}

#[test]
fn heads_swap_on_a_trained_backbone() {
    let mut m = small(HeadConfig::FC);
    let x = Tensor::rand(0f32, 1.0, (2, 1, 28, 28), &Device::Cpu).unwrap();
    let fc: Vec<Vec<f32>> = m.forward(&x, Mode::Eval).unwrap().to_vec2().unwrap();
    m.replace_head(HeadConfig::LWS, true).unwrap();
    assert_eq!(m.forward(&x, Mode::Eval).unwrap().to_vec2::<f32>().unwrap(), fc, "LWS starts as the FC head");
    assert_eq!(m.store().trainable("head.").len(), 3, "weight, bias, gains");
    m.replace_head(HeadConfig::TauNorm { tau: 0.0, bias: true }, true).unwrap();
    assert_eq!(m.forward(&x, Mode::Eval).unwrap().to_vec2::<f32>().unwrap(), fc);
    let backbone_before = m.store().trainable("backbone.").len();
    m.replace_head(HeadConfig::ROBAL_EVAL, false).unwrap();
    assert_eq!(m.store().trainable("backbone.").len(), backbone_before);
    assert_eq!(m.config().head, HeadConfig::ROBAL_EVAL);
    assert!(m.replace_head(HeadConfig::FC, true).is_err(), "cosine weights are not FC weights");
}

#[test]
fn prior_bias_init_is_the_focal_papers_log_odds() {
    // Counts 600, 300, 100 (N = 1000): pi = 0.6, 0.3, 0.1; b = -log((1 - pi)/pi) by hand:
    // -log(0.4/0.6) = 0.405465, -log(0.7/0.3) = -0.847298, -log(0.9/0.1) = -2.197225.
    let m = small(HeadConfig::Fc { bias: FcBias::Prior });
    m.init_prior_bias(&[600, 300, 100]).unwrap();
    let b: Vec<f32> = m.store().state()["head.bias"].to_vec1().unwrap();
    for (got, want) in b.iter().zip([0.405465f32, -0.847298, -2.197225]) {
        assert!(close(*got, want), "{b:?}");
    }
    // The bias is still trained.
    assert!(m.store().trainable("head.").iter().any(|(n, _)| n == "head.bias"));
    // Counts that leave a class empty, or the wrong number of them, are refused.
    assert!(m.init_prior_bias(&[600, 0, 100]).is_err());
    assert!(m.init_prior_bias(&[600, 300]).unwrap_err().to_string().contains("2 class counts"));
}

#[test]
fn frozen_random_bias_is_a_buffer_drawn_like_torch_linear() {
    // Dot_Classifier: nn.Linear's bias, U(-1/sqrt(d), 1/sqrt(d)), requires_grad = False.
    let m = small(HeadConfig::Fc { bias: FcBias::FrozenRandom });
    let trainable: Vec<String> = m.store().trainable("head.").into_iter().map(|(n, _)| n).collect();
    assert_eq!(trainable, ["head.weight"], "only the weight is trained");
    let buffers: Vec<String> = m.store().vars(TensorKind::Buffer).into_iter().map(|(n, _)| n).collect();
    assert!(buffers.contains(&"head.bias".to_string()), "{buffers:?}");
    let d = m.store().state()["head.weight"].dim(1).unwrap();
    let b: Vec<f32> = m.store().state()["head.bias"].to_vec1().unwrap();
    let bound = 1.0 / (d as f32).sqrt();
    assert!(b.iter().all(|v| v.abs() <= bound) && b.iter().any(|v| v.abs() > bound / 10.0), "{b:?}, bound {bound}");
    // The logits add it: z = W f + b.
    let x = Tensor::rand(0f32, 1.0, (2, 1, 28, 28), &Device::Cpu).unwrap();
    let f = m.features(&x, Mode::Eval).unwrap();
    let w = &m.store().state()["head.weight"];
    let want: Vec<Vec<f32>> =
        f.matmul(&w.t().unwrap()).unwrap().broadcast_add(&m.store().state()["head.bias"]).unwrap().to_vec2().unwrap();
    assert_eq!(m.forward(&x, Mode::Eval).unwrap().to_vec2::<f32>().unwrap(), want);
}

#[test]
fn head_options_parse_with_defaults_and_keep_old_files_readable() {
    let parse = |s: &str| serde_json::from_str::<HeadConfig>(s).unwrap();
    assert_eq!(parse(r#"{"kind":"fc"}"#), HeadConfig::FC);
    assert_eq!(parse(r#"{"kind":"fc","bias":"prior"}"#), HeadConfig::Fc { bias: FcBias::Prior });
    assert_eq!(parse(r#"{"kind":"fc","bias":"frozen-random"}"#), HeadConfig::Fc { bias: FcBias::FrozenRandom });
    assert_eq!(
        parse(r#"{"kind":"tau-norm","tau":1.0}"#),
        HeadConfig::TauNorm { tau: 1.0, bias: true },
        "a tau-norm head adds its bias unless told"
    );
    // The defaults serialise as before (checkpoint digests of existing runs stay valid).
    assert_eq!(serde_json::to_string(&HeadConfig::FC).unwrap(), r#"{"kind":"fc"}"#);
    assert_eq!(
        serde_json::to_string(&HeadConfig::TauNorm { tau: 1.0, bias: true }).unwrap(),
        r#"{"kind":"tau-norm","tau":1.0}"#
    );
}
