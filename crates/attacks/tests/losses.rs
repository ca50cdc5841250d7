//! Each attack objective: hand-worked values and gradients against finite differences.

use candle_core::{Device, Tensor, Var};
use robal_attacks::Loss;

fn z() -> Tensor {
    Tensor::new(&[[2.0f32, 1.0, 0.5, -1.0, 0.0], [0.1, 0.3, -0.2, 0.9, 0.4]], &Device::Cpu).unwrap()
}

fn y() -> Tensor {
    Tensor::new(&[0u32, 3], &Device::Cpu).unwrap()
}

fn t() -> Tensor {
    Tensor::new(&[2u32, 1], &Device::Cpu).unwrap()
}

fn values(loss: &Loss) -> Vec<f32> {
    loss.per_example(&z(), &y()).unwrap().to_vec1().unwrap()
}

#[test]
fn hand_worked_values() {
    let lse0 = [2.0f64, 1.0, 0.5, -1.0, 0.0].iter().map(|v| v.exp()).sum::<f64>().ln();
    let v = values(&Loss::CrossEntropy);
    assert!((v[0] as f64 - (lse0 - 2.0)).abs() < 1e-5);
    // CW: -(max(z_y - max_other + kappa, 0)): row 0: 2 - 1 + 0 = 1 -> -1; row 1: 0.9 - 0.4 = 0.5 -> -0.5.
    let close = |a: Vec<f32>, b: [f32; 2]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
    assert!(close(values(&Loss::CwMargin { kappa: 0.0 }), [-1.0, -0.5]));
    // kappa = -0.75: row 0: 1 - 0.75 = 0.25; row 1: 0.5 - 0.75 < 0 -> clamped to 0.
    assert!(close(values(&Loss::CwMargin { kappa: -0.75 }), [-0.25, 0.0]));
    // DLR row 0: sorted 2, 1, 0.5: -(2 - 1) / (2 - 0.5) = -2/3. Row 1: sorted 0.9, 0.4, 0.3: -(0.5)/(0.6).
    let d = values(&Loss::Dlr);
    assert!((d[0] + 2.0 / 3.0).abs() < 1e-5 && (d[1] + 0.5 / 0.6).abs() < 1e-5, "{d:?}");
    // Targeted DLR row 0 (t = 2): -(2 - 0.5) / (2 - (0.5 + 0)/2) = -1.5/1.75.
    let td = values(&Loss::TargetedDlr { targets: t() });
    assert!((td[0] + 1.5 / 1.75).abs() < 1e-5, "{td:?}");
    // Row 1 (t = 1): sorted 0.9, 0.4, 0.3, 0.1: -(0.9 - 0.3) / (0.9 - 0.2) = -0.6/0.7.
    assert!((td[1] + 0.6 / 0.7).abs() < 1e-5, "{td:?}");
    let tce = values(&Loss::TargetedCrossEntropy { targets: t() });
    assert!((tce[0] as f64 - (0.5 - lse0)).abs() < 1e-5);
}

#[test]
fn scale_invariance_of_dlr_and_its_failure_for_ce() {
    let z1000 = (z() * 1000.0).unwrap();
    let d1 = Loss::Dlr.per_example(&z(), &y()).unwrap().to_vec1::<f32>().unwrap();
    let d2 = Loss::Dlr.per_example(&z1000, &y()).unwrap().to_vec1::<f32>().unwrap();
    for (a, b) in d1.iter().zip(&d2) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn gradients_match_finite_differences() {
    let dev = Device::Cpu;
    let losses = [
        Loss::CrossEntropy,
        Loss::TargetedCrossEntropy { targets: t() },
        Loss::CwMargin { kappa: 50.0 },
        Loss::Dlr,
        Loss::TargetedDlr { targets: t() },
    ];
    for loss in &losses {
        let zv = Var::from_tensor(&z()).unwrap();
        let g = loss.per_example(zv.as_tensor(), &y()).unwrap().sum_all().unwrap().backward().unwrap();
        let g: Vec<Vec<f32>> = g.get(zv.as_tensor()).unwrap().to_vec2().unwrap();
        let base: Vec<Vec<f32>> = z().to_vec2().unwrap();
        for r in 0..2 {
            for k in 0..5 {
                let h = 1e-3f32;
                let mut p = base.clone();
                p[r][k] += h;
                let mut m = base.clone();
                m[r][k] -= h;
                let f = |v: Vec<Vec<f32>>| -> f64 {
                    let t = Tensor::new(v, &dev).unwrap();
                    loss.per_example(&t, &y()).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64
                };
                let fd = (f(p) - f(m)) / (2.0 * h as f64);
                assert!((fd - g[r][k] as f64).abs() < 2e-3, "{}: d/dz[{r}][{k}] fd {fd} vs {}", loss.name(), g[r][k]);
            }
        }
    }
}
