//! Properties of the attacks on a small random conv net (robal-models' SmallCnn on
//! 12x12 inputs, and a 20-step APGD suite, to keep the test fast on CPU).

use candle_core::{Device, Tensor};
use robal_attacks::{Apgd, ApgdLoss, Attack, AutoAttack, Fgsm, Mim, Norm, Pgd, RandomStart, Square, Suite};
use robal_models::{Arch, Classifier, HeadConfig, Mode, ModelConfig};

fn setup() -> (Classifier, Tensor, Tensor) {
    let config = ModelConfig {
        arch: Arch::SmallCnn,
        in_channels: 1,
        num_classes: 10,
        head: HeadConfig::FC,
        normalization: None,
    };
    let model = Classifier::new(config, &Device::Cpu, 4).unwrap();
    // Give BatchNorm non-trivial running statistics first.
    model.forward(&Tensor::rand(0f32, 1.0, (32, 1, 12, 12), &Device::Cpu).unwrap(), Mode::Train).unwrap();
    let x = Tensor::rand(0f32, 1.0, (12, 1, 12, 12), &Device::Cpu).unwrap();
    // Labels: the model's own predictions for most points (so it is "accurate"), a few wrong.
    let pred: Vec<u32> = model.forward(&x, Mode::Eval).unwrap().argmax(1).unwrap().to_vec1().unwrap();
    let y: Vec<u32> = pred.iter().enumerate().map(|(i, &p)| if i % 4 == 3 { (p + 1) % 10 } else { p }).collect();
    (model, x, Tensor::from_vec(y, 12, &Device::Cpu).unwrap())
}

fn robust(success: &[bool]) -> usize {
    success.iter().filter(|&&s| !s).count()
}

#[test]
fn robust_accuracy_is_bounded_monotone_and_the_model_is_untouched() {
    let (model, x, y) = setup();
    let before = model
        .store()
        .state()
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect::<Vec<_>>();
    let f = |x: &Tensor| model.forward(x, Mode::Eval).map_err(candle_core::Error::wrap);
    let clean = robust(&robal_attacks::model::misclassified(&f, &x, &y.to_vec1().unwrap()).unwrap());
    assert_eq!(clean, 9, "3 of 12 labels are wrong on purpose");
    let mut last = clean;
    for eps in [0.0, 0.03, 0.1] {
        let apgd = |loss| Apgd { steps: 20, ..Apgd::standard(Norm::Linf, eps, loss) };
        let aa = AutoAttack {
            attacks: vec![Box::new(apgd(ApgdLoss::Ce)), Box::new(apgd(ApgdLoss::TargetedDlr { targets: 3 }))],
            suite: Suite::ApgdCeT,
        };
        let res = aa.evaluate(&f, &x, &y, 0).unwrap();
        let r_aa = res.robust().iter().filter(|&&r| r).count();
        assert!(r_aa <= last, "robust accuracy rose with eps: {r_aa} > {last} at {eps}");
        last = r_aa;
        if eps == 0.0 {
            assert_eq!(r_aa, clean, "at eps 0 robust = clean");
        }
        let ce = apgd(ApgdLoss::Ce).run(&f, &x, &y, 0).unwrap();
        assert!(r_aa <= robust(&ce.success), "AutoAttack above its APGD-CE part");
        // Same seed: AutoAttack's APGD-CE stage is the standalone run, so its robust set is a subset.
        for (i, &r) in res.robust().iter().enumerate() {
            assert!(!r || !ce.success[i], "point {i} robust under AutoAttack but broken by its APGD-CE part");
        }
        for (i, b) in res.broken_by.iter().enumerate() {
            if i % 4 == 3 {
                assert_eq!(b.as_deref(), Some("clean"), "wrongly labelled points are broken by 'clean'");
            }
        }
        for attack in [
            Box::new(Fgsm { eps }) as Box<dyn Attack>,
            Box::new(Pgd::linf(eps, eps / 4.0, 10)),
            Box::new(Pgd::cw(eps, eps / 4.0, 10, 50.0)),
            Box::new(Mim { eps, step_size: eps / 4.0, steps: 10, decay: 1.0, random_start: RandomStart::Uniform }),
            Box::new(Square { queries: 100, ..Square::standard(eps) }),
        ] {
            let r = attack.run(&f, &x, &y, 1).unwrap();
            assert!(robust(&r.success) <= clean, "{}: robust above clean", attack.name());
            let d: f32 = (&r.adv - &x).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
            assert!(d as f64 <= eps + 1e-6, "{} left the ball", attack.name());
            let (lo, hi): (f32, f32) =
                (r.adv.min_all().unwrap().to_scalar().unwrap(), r.adv.max_all().unwrap().to_scalar().unwrap());
            assert!(lo >= 0.0 && hi <= 1.0);
            // success flags agree with the model's predictions on the returned images
            let check = robal_attacks::model::misclassified(&f, &r.adv, &y.to_vec1().unwrap()).unwrap();
            assert_eq!(check, r.success, "{}", attack.name());
        }
    }
    let after = model
        .store()
        .state()
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect::<Vec<_>>();
    assert!(before == after, "an attack changed parameters or BatchNorm statistics");
}
