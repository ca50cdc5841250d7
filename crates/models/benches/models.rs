//! Model throughput on this machine in images/s, for the three steps that
//! adversarial training and evaluation are made of:
//! - `infer`: eval-mode forward;
//! - `attack`: eval-mode forward + gradient w.r.t. the input (one attack step);
//! - `train`: train-mode forward, backward, SGD-momentum update.
//!
//! `cargo bench -p robal-models --bench models -- [--model NAME] [--batch 64] [--iters N]`
//! NAME: small-cnn, resnet18, wrn-34-10 (default: all three).

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use robal_models::{Arch, Classifier, HeadConfig, Mode, ModelConfig};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn time<F: FnMut() -> candle_core::Result<()>>(iters: usize, mut f: F) -> f64 {
    f().expect("warm-up step");
    let start = Instant::now();
    for _ in 0..iters {
        f().expect("step");
    }
    start.elapsed().as_secs_f64() / iters as f64
}

fn main() {
    let batch: usize = arg("--batch").and_then(|v| v.parse().ok()).unwrap_or(64);
    let only = arg("--model");
    let dev = Device::Cpu;
    println!("{:<10} {:>5} {:>12} {:>12} {:>12}", "model", "batch", "infer img/s", "attack img/s", "train img/s");
    for (name, arch, c, hw, default_iters) in [
        ("small-cnn", Arch::SmallCnn, 1, 28, 20),
        ("resnet18", Arch::ResNet18, 3, 32, 2),
        ("wrn-34-10", Arch::WideResNet { depth: 34, widen: 10, dropout: 0.0 }, 3, 32, 1),
    ] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let iters = arg("--iters").and_then(|v| v.parse().ok()).unwrap_or(default_iters);
        let config =
            ModelConfig { arch, in_channels: c, num_classes: 10, head: HeadConfig::ROBAL_EVAL, normalization: None };
        let model = Classifier::new(config, &dev, 0).expect("model");
        let x = Tensor::rand(0f32, 1.0, (batch, c, hw, hw), &dev).expect("input");
        let y = Tensor::from_vec((0..batch as u32).map(|i| i % 10).collect::<Vec<_>>(), batch, &dev).expect("labels");
        let infer = time(iters, || {
            model.forward(&x, Mode::Eval).map_err(candle_core::Error::wrap)?;
            Ok(())
        });
        let attack = time(iters, || {
            let xv = Var::from_tensor(&x)?;
            let z = model.forward(xv.as_tensor(), Mode::Eval).map_err(candle_core::Error::wrap)?;
            let loss = candle_nn::loss::cross_entropy(&z, &y)?;
            let g = loss.backward()?;
            g.get(xv.as_tensor()).expect("input gradient");
            Ok(())
        });
        let params = model.store().trainable("");
        let mut momentum: Vec<Tensor> = params.iter().map(|(_, v)| v.zeros_like().expect("zeros")).collect();
        let train = time(iters, || {
            let z = model.forward(&x, Mode::Train).map_err(candle_core::Error::wrap)?;
            let loss = candle_nn::loss::cross_entropy(&z, &y)?;
            let grads = loss.backward()?;
            for ((_, p), m) in params.iter().zip(momentum.iter_mut()) {
                if let Some(g) = grads.get(p.as_tensor()) {
                    // v <- 0.9 v + g + 2e-4 p; p <- p - 0.1 v  (detached: no graph kept across steps)
                    let g = (g.detach() + (p.as_tensor().detach() * 2e-4)?)?;
                    *m = ((&*m * 0.9)? + g)?.detach();
                    p.set(&(p.as_tensor().detach() - (&*m * 0.1)?)?)?;
                }
            }
            Ok(())
        });
        println!(
            "{name:<10} {batch:>5} {:>12.1} {:>12.1} {:>12.1}",
            batch as f64 / infer,
            batch as f64 / attack,
            batch as f64 / train
        );
    }
}
