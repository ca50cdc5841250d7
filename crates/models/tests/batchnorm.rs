//! BatchNorm's train/eval semantics against a hand computation in f64.

use candle_core::{Device, Tensor};
use robal_models::{BatchNorm2d, Mode, ParamStore};

/// x[n][c][h][w] for N=3, C=2, H=2, W=2 from a fixed formula.
fn input() -> (Vec<f32>, Tensor) {
    let v: Vec<f32> =
        (0..24).map(|i| ((i * 37 % 17) as f32 - 8.0) / 4.0 + if (i / 4) % 2 == 1 { 3.0 } else { 0.0 }).collect();
    let t = Tensor::from_vec(v.clone(), (3, 2, 2, 2), &Device::Cpu).unwrap();
    (v, t)
}

fn channel(v: &[f32], c: usize) -> Vec<f64> {
    (0..3).flat_map(|n| (0..4).map(move |k| v[n * 8 + c * 4 + k] as f64)).collect()
}

#[test]
fn train_mode_normalises_with_batch_stats_and_updates_running_stats_unbiased() {
    let store = ParamStore::new(Device::Cpu, 0);
    let bn = BatchNorm2d::new(&store.root(), 2).unwrap();
    let (v, x) = input();
    let y: Vec<f32> = bn.forward(&x, Mode::Train).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let rm: Vec<f32> = bn.running_mean().to_vec1().unwrap();
    let rv: Vec<f32> = bn.running_var().to_vec1().unwrap();
    for c in 0..2 {
        let xs = channel(&v, c);
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        for nn in 0..3 {
            for k in 0..4 {
                let i = nn * 8 + c * 4 + k;
                let want = (v[i] as f64 - mean) / (var + 1e-5).sqrt();
                assert!((y[i] as f64 - want).abs() < 1e-5, "y[{i}]");
            }
        }
        assert!((rm[c] as f64 - 0.1 * mean).abs() < 1e-6);
        assert!((rv[c] as f64 - (0.9 + 0.1 * var * n / (n - 1.0))).abs() < 1e-6, "unbiased running variance");
    }
}

#[test]
fn eval_mode_uses_running_stats_and_changes_nothing() {
    let store = ParamStore::new(Device::Cpu, 0);
    let bn = BatchNorm2d::new(&store.root(), 2).unwrap();
    let (v, x) = input();
    bn.forward(&x, Mode::Train).unwrap();
    let (rm, rv): (Vec<f32>, Vec<f32>) = (bn.running_mean().to_vec1().unwrap(), bn.running_var().to_vec1().unwrap());
    let y: Vec<f32> = bn.forward(&x, Mode::Eval).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    for (i, &yi) in y.iter().enumerate() {
        let c = (i / 4) % 2;
        let want = (v[i] as f64 - rm[c] as f64) / (rv[c] as f64 + 1e-5).sqrt();
        assert!((yi as f64 - want).abs() < 1e-5);
    }
    assert_eq!(bn.running_mean().to_vec1::<f32>().unwrap(), rm);
    assert_eq!(bn.running_var().to_vec1::<f32>().unwrap(), rv);
}
