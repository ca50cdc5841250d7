//! Attack throughput in images/s on this machine.
//!
//! `cargo bench -p robal-attacks --bench attacks -- [--model NAME] [--batch N] [--attack NAME]`
//! Models: small-cnn (28x28x1), resnet18, wrn-34-10 (32x32x3), randomly initialised and
//! evaluated on their own predictions (so every point starts correctly classified).
//! Attacks: fgsm, pgd-20, mim-20, cw-20, apgd-ce, apgd-t, fab-t, square, aa (standard
//! AutoAttack). Suites stop early on points already broken, so their rate depends on
//! how robust the model is: a random net is not, which flatters AutoAttack's figure.

use std::time::Instant;

use candle_core::{Device, Tensor};
use robal_attacks::{
    Apgd, ApgdLoss, Attack, AutoAttack, FabTargeted, Fgsm, Mim, Norm, Pgd, RandomStart, Square, Suite,
};
use robal_models::{Arch, Classifier, HeadConfig, Mode, ModelConfig};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let eps = 8.0 / 255.0;
    let alpha = 2.0 / 255.0;
    let only_model = arg("--model");
    let only_attack = arg("--attack");
    let attacks: Vec<(&str, Box<dyn Attack>)> = vec![
        ("fgsm", Box::new(Fgsm { eps })),
        ("pgd-20", Box::new(Pgd::linf(eps, alpha, 20))),
        ("mim-20", Box::new(Mim { eps, step_size: alpha, steps: 20, decay: 1.0, random_start: RandomStart::Off })),
        ("cw-20", Box::new(Pgd::cw(eps, alpha, 20, 50.0))),
        ("apgd-ce", Box::new(Apgd::standard(Norm::Linf, eps, ApgdLoss::Ce))),
        ("apgd-t", Box::new(Apgd::standard(Norm::Linf, eps, ApgdLoss::TargetedDlr { targets: 9 }))),
        ("fab-t", Box::new(FabTargeted::standard(eps))),
        ("square", Box::new(Square::standard(eps))),
        ("aa", Box::new(AutoAttack::new(Suite::Standard, eps))),
    ];
    println!("{:<10} {:>5} {:<8} {:>10} {:>9} {:>8}", "model", "batch", "attack", "img/s", "seconds", "robust");
    for (name, arch, c, hw, default_batch) in [
        ("small-cnn", Arch::SmallCnn, 1, 28, 64),
        ("resnet18", Arch::ResNet18, 3, 32, 4),
        ("wrn-34-10", Arch::WideResNet { depth: 34, widen: 10, dropout: 0.0 }, 3, 32, 2),
    ] {
        if only_model.as_deref().is_some_and(|m| m != name) {
            continue;
        }
        let batch: usize = arg("--batch").and_then(|v| v.parse().ok()).unwrap_or(default_batch);
        let config =
            ModelConfig { arch, in_channels: c, num_classes: 10, head: HeadConfig::ROBAL_EVAL, normalization: None };
        let model = Classifier::new(config, &Device::Cpu, 0).expect("model");
        let f = |x: &Tensor| model.forward(x, Mode::Eval).map_err(candle_core::Error::wrap);
        let x = Tensor::rand(0f32, 1.0, (batch, c, hw, hw), &Device::Cpu).expect("input");
        let y = model.forward(&x, Mode::Eval).expect("logits").argmax(1).expect("argmax");
        for (attack_name, attack) in &attacks {
            if only_attack.as_deref().is_some_and(|a| a != *attack_name) {
                continue;
            }
            let start = Instant::now();
            let r = attack.run(&f, &x, &y, 0).expect("attack");
            let secs = start.elapsed().as_secs_f64();
            let robust = r.success.iter().filter(|&&s| !s).count();
            println!(
                "{name:<10} {batch:>5} {attack_name:<8} {:>10.2} {secs:>9.2} {robust:>4}/{batch}",
                batch as f64 / secs
            );
        }
    }
}
