//! Every loss against values worked out by hand (or in closed form), and its
//! gradient against central finite differences.

use candle_core::{Device, Tensor, Var};
use robal::losses::{class_balanced_weights, trades_kl, LossConfig, TrainLoss};

fn z() -> Tensor {
    Tensor::new(&[[0.5f32, -0.2, 0.1], [0.3, 0.8, -0.6]], &Device::Cpu).unwrap()
}
fn y() -> Tensor {
    Tensor::new(&[0u32, 2], &Device::Cpu).unwrap()
}
const COUNTS: [usize; 3] = [100, 20, 5];

/// Cross-entropy of one row in f64.
fn ce(row: &[f64], y: usize) -> f64 {
    let m = row.iter().cloned().fold(f64::MIN, f64::max);
    let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    lse - row[y]
}

fn rows() -> Vec<Vec<f64>> {
    z().to_vec2::<f32>().unwrap().into_iter().map(|r| r.into_iter().map(|v| v as f64).collect()).collect()
}

fn loss_value(cfg: LossConfig) -> f64 {
    TrainLoss::new(cfg, &COUNTS, &Device::Cpu).unwrap().forward(&z(), &y(), None).unwrap().to_scalar::<f32>().unwrap()
        as f64
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
}

#[test]
fn cross_entropy_and_logit_adjustment() {
    let r = rows();
    close(loss_value(LossConfig::Ce), (ce(&r[0], 0) + ce(&r[1], 2)) / 2.0);
    // CE(z + tau log pi), pi = (100, 20, 5) / 125.
    let lp: Vec<f64> = COUNTS.iter().map(|&n| (n as f64 / 125.0).ln()).collect();
    let adj = |row: &[f64], tau: f64| -> Vec<f64> { row.iter().zip(&lp).map(|(v, l)| v + tau * l).collect() };
    close(
        loss_value(LossConfig::LogitAdjusted { tau: 1.0 }),
        (ce(&adj(&r[0], 1.0), 0) + ce(&adj(&r[1], 1.0), 2)) / 2.0,
    );
}

#[test]
fn robal_margin_loss_by_hand() {
    // m_c = m + tau_m log(n_c / n_min) / s = 0.2 + 0.3 ln(n_c / 5) / 10; target logit minus m_y,
    // times s, plus tau_b log pi.
    let (m, s, tau_m, tau_b) = (0.2, 10.0, 0.3, 1.5);
    let r = rows();
    let lp: Vec<f64> = COUNTS.iter().map(|&n| (n as f64 / 125.0).ln()).collect();
    let margin: Vec<f64> = COUNTS.iter().map(|&n| m + tau_m * (n as f64 / 5.0).ln() / s).collect();
    let one = |row: &[f64], yy: usize| -> f64 {
        let adj: Vec<f64> =
            (0..3).map(|c| s * (row[c] - if c == yy { margin[c] } else { 0.0 }) + tau_b * lp[c]).collect();
        ce(&adj, yy)
    };
    close(loss_value(LossConfig::RobalMargin { m, s, tau_m, tau_b }), (one(&r[0], 0) + one(&r[1], 2)) / 2.0);
}

#[test]
fn ldam_cdt_and_focal_by_hand() {
    let r = rows();
    // LDAM: m_c = 0.5 n_c^(-1/4) / 5^(-1/4); CE(10 (z - m_y onehot)).
    let q: Vec<f64> = COUNTS.iter().map(|&n| 0.5 * (n as f64).powf(-0.25) / 5f64.powf(-0.25)).collect();
    let ldam = |row: &[f64], yy: usize| {
        ce(&(0..3).map(|c| 10.0 * (row[c] - if c == yy { q[c] } else { 0.0 })).collect::<Vec<_>>(), yy)
    };
    close(loss_value(LossConfig::Ldam { max_m: 0.5, s: 10.0 }), (ldam(&r[0], 0) + ldam(&r[1], 2)) / 2.0);
    // CDT: z_c / (100 / n_c)^0.5.
    let a: Vec<f64> = COUNTS.iter().map(|&n| (100.0 / n as f64).powf(0.5)).collect();
    let cdt = |row: &[f64], yy: usize| ce(&(0..3).map(|c| row[c] / a[c]).collect::<Vec<_>>(), yy);
    close(loss_value(LossConfig::Cdt { tau: 0.5 }), (cdt(&r[0], 0) + cdt(&r[1], 2)) / 2.0);
    // Focal (sigmoid form): sum_c -(1 - p_t)^2 log p_t, p_t = sigmoid(+-z).
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    let focal = |row: &[f64], yy: usize| -> f64 {
        (0..3)
            .map(|c| {
                let pt = sig(if c == yy { row[c] } else { -row[c] });
                -(1.0 - pt).powi(2) * pt.ln()
            })
            .sum()
    };
    close(loss_value(LossConfig::Focal { gamma: 2.0 }), (focal(&r[0], 0) + focal(&r[1], 2)) / 2.0);
}

#[test]
fn class_balanced_weights_and_weighted_mean() {
    // beta = 0.9: raw w_c = 0.1 / (1 - 0.9^n_c); rescaled to sum 3.
    let w = class_balanced_weights(&COUNTS, 0.9);
    let raw: Vec<f64> = COUNTS.iter().map(|&n| 0.1 / (1.0 - 0.9f64.powi(n as i32))).collect();
    let s: f64 = raw.iter().sum();
    for (a, b) in w.iter().zip(&raw) {
        close(*a, b * 3.0 / s);
    }
    close(w.iter().sum(), 3.0);
    let r = rows();
    let l = TrainLoss::new(LossConfig::Ce, &COUNTS, &Device::Cpu).unwrap();
    let got = l.forward(&z(), &y(), Some(&w)).unwrap().to_scalar::<f32>().unwrap() as f64;
    close(got, (w[0] * ce(&r[0], 0) + w[2] * ce(&r[1], 2)) / (w[0] + w[2]));
}

#[test]
fn trades_kl_by_hand_and_zero_on_equal_inputs() {
    let adv = Tensor::new(&[[0.1f32, 0.0, 0.2], [0.3, 0.5, 0.0]], &Device::Cpu).unwrap();
    let sm = |row: &[f64]| -> Vec<f64> {
        let e: Vec<f64> = row.iter().map(|v| v.exp()).collect();
        let t: f64 = e.iter().sum();
        e.iter().map(|v| v / t).collect()
    };
    let (rn, ra): (Vec<Vec<f64>>, Vec<Vec<f64>>) = (
        rows(),
        adv.to_vec2::<f32>().unwrap().into_iter().map(|r| r.into_iter().map(|v| v as f64).collect()).collect(),
    );
    let mut want = 0.0;
    for i in 0..2 {
        let (p, q) = (sm(&rn[i]), sm(&ra[i]));
        want += (0..3).map(|c| p[c] * (p[c].ln() - (q[c] + 1e-12).ln())).sum::<f64>();
    }
    close(trades_kl(&z(), &adv).unwrap().to_scalar::<f32>().unwrap() as f64, want / 2.0);
    assert!(trades_kl(&z(), &z()).unwrap().to_scalar::<f32>().unwrap().abs() < 1e-6);
}

#[test]
fn gradients_match_finite_differences() {
    let configs = [
        LossConfig::Ce,
        LossConfig::Focal { gamma: 2.0 },
        LossConfig::Ldam { max_m: 0.5, s: 10.0 },
        LossConfig::LogitAdjusted { tau: 1.0 },
        LossConfig::Cdt { tau: 0.5 },
        LossConfig::RobalMargin { m: 0.2, s: 10.0, tau_m: 0.3, tau_b: 1.5 },
    ];
    let w = class_balanced_weights(&COUNTS, 0.99);
    for cfg in configs {
        let loss = TrainLoss::new(cfg.clone(), &COUNTS, &Device::Cpu).unwrap();
        for weights in [None, Some(w.as_slice())] {
            let zv = Var::from_tensor(&z()).unwrap();
            let g = loss.forward(zv.as_tensor(), &y(), weights).unwrap().backward().unwrap();
            let g: Vec<Vec<f32>> = g.get(zv.as_tensor()).unwrap().to_vec2().unwrap();
            let base: Vec<Vec<f32>> = z().to_vec2().unwrap();
            for r in 0..2 {
                for c in 0..3 {
                    let f = |delta: f32| -> f64 {
                        let mut v = base.clone();
                        v[r][c] += delta;
                        let t = Tensor::new(v, &Device::Cpu).unwrap();
                        loss.forward(&t, &y(), weights).unwrap().to_scalar::<f32>().unwrap() as f64
                    };
                    let fd = (f(1e-3) - f(-1e-3)) / 2e-3;
                    assert!(
                        (fd - g[r][c] as f64).abs() < 5e-3 * (1.0 + fd.abs()),
                        "{cfg:?} w={}: d/dz[{r}][{c}] fd {fd} vs {}",
                        weights.is_some(),
                        g[r][c]
                    );
                }
            }
        }
    }
    // TRADES KL w.r.t. the adversarial logits.
    let nat = z();
    let adv = Var::from_tensor(&Tensor::new(&[[0.1f32, 0.0, 0.2], [0.3, 0.5, 0.0]], &Device::Cpu).unwrap()).unwrap();
    let g: Vec<Vec<f32>> =
        trades_kl(&nat, adv.as_tensor()).unwrap().backward().unwrap().get(adv.as_tensor()).unwrap().to_vec2().unwrap();
    let base: Vec<Vec<f32>> = adv.as_tensor().to_vec2().unwrap();
    for r in 0..2 {
        for c in 0..3 {
            let f = |d: f32| {
                let mut v = base.clone();
                v[r][c] += d;
                trades_kl(&nat, &Tensor::new(v, &Device::Cpu).unwrap()).unwrap().to_scalar::<f32>().unwrap() as f64
            };
            let fd = (f(1e-3) - f(-1e-3)) / 2e-3;
            assert!((fd - g[r][c] as f64).abs() < 5e-3, "KL d/dz_adv[{r}][{c}]: {fd} vs {}", g[r][c]);
        }
    }
}
