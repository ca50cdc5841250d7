//! Attacks on linear classifiers, where the L-inf worst case is known in closed form:
//! a point of class y can be pushed to class j inside the eps-ball (box ignored) iff
//! z_y - z_j <= eps * ||w_y - w_j||_1. Inputs stay far from the box edges so the box
//! never binds, and points within 5% of the threshold are left out.
//!
//! With two classes every untargeted loss (CE, CW margin) is a monotone function of
//! z_y - z_j, so untargeted attacks must be exact. With more classes the untargeted
//! maximiser over the ball need not be misclassified (ascent can settle on the vertex
//! of one wrong class while another was the breakable one); there the attacks that try
//! each target in turn (APGD-T, FAB-T, AutoAttack) must be exact, and every attack
//! must still never claim an unbreakable point.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use robal_attacks::{
    Apgd, ApgdLoss, Attack, AutoAttack, FabTargeted, Fgsm, Mim, Norm, Pgd, RandomStart, ScaledLogits, Square, Suite,
};

const D: usize = 3 * 4 * 4;

struct Case {
    w: Tensor,
    b: Tensor,
    x: Tensor,
    y: Tensor,
    eps: f64,
    breakable: Vec<bool>,
}

/// Random linear model with k classes (weight rows centred, so margins come from the
/// input, not from sum(w)), inputs in [0.3, 0.7], labels = clean predictions. Each
/// point's critical radius is eps_c = min_j (z_y - z_j) / ||w_y - w_j||_1; the case's
/// eps is their median, so about half the points are breakable. Points within 5% of
/// eps are left out.
fn case(seed: u64, n: usize, k: usize) -> Case {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut w: Vec<f32> = (0..k * D).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    for row in w.chunks_mut(D) {
        let mean = row.iter().sum::<f32>() / D as f32;
        row.iter_mut().for_each(|v| *v -= mean);
    }
    let b: Vec<f32> = (0..k).map(|_| rng.random_range(-0.05f32..0.05)).collect();
    let mut pool = Vec::new();
    for _ in 0..3 * n {
        let x: Vec<f32> = (0..D).map(|_| rng.random_range(0.3f32..0.7)).collect();
        let z: Vec<f64> =
            (0..k).map(|c| b[c] as f64 + (0..D).map(|d| (w[c * D + d] * x[d]) as f64).sum::<f64>()).collect();
        let y = (0..k).max_by(|&a, &c| z[a].total_cmp(&z[c])).unwrap();
        let eps_c = (0..k)
            .filter(|&j| j != y)
            .map(|j| (z[y] - z[j]) / (0..D).map(|d| (w[y * D + d] - w[j * D + d]).abs() as f64).sum::<f64>())
            .fold(f64::INFINITY, f64::min);
        pool.push((x, y as u32, eps_c));
    }
    let mut radii: Vec<f64> = pool.iter().map(|p| p.2).collect();
    radii.sort_by(f64::total_cmp);
    let eps = radii[radii.len() / 2];
    assert!(eps < 0.25, "eps {eps} would let the box bind");
    let (mut xs, mut ys, mut breakable) = (Vec::new(), Vec::new(), Vec::new());
    for (x, y, eps_c) in pool.into_iter().filter(|p| (p.2 / eps - 1.0).abs() >= 0.05).take(n) {
        xs.extend(x);
        ys.push(y);
        breakable.push(eps_c < eps);
    }
    let dev = Device::Cpu;
    Case {
        w: Tensor::from_vec(w, (k, D), &dev).unwrap(),
        b: Tensor::from_vec(b, k, &dev).unwrap(),
        x: Tensor::from_vec(xs, (n, 3, 4, 4), &dev).unwrap(),
        y: Tensor::from_vec(ys, n, &dev).unwrap(),
        eps,
        breakable,
    }
}

impl Case {
    fn model(&self) -> impl Fn(&Tensor) -> candle_core::Result<Tensor> + '_ {
        move |x: &Tensor| x.flatten_from(1)?.matmul(&self.w.t()?)?.broadcast_add(&self.b)
    }
}

fn assert_in_ball_and_box(adv: &Tensor, x: &Tensor, eps: f64, what: &str) {
    let d: f32 = (adv - x).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    assert!(d as f64 <= eps + 1e-6, "{what}: left the eps-ball ({d})");
    let lo: f32 = adv.min_all().unwrap().to_scalar().unwrap();
    let hi: f32 = adv.max_all().unwrap().to_scalar().unwrap();
    assert!(lo >= 0.0 && hi <= 1.0, "{what}: left the box");
}

fn check_exact(attack: &dyn Attack, c: &Case) {
    let eps = c.eps;
    let m = c.model();
    let r = attack.run(&m, &c.x, &c.y, 7).unwrap();
    assert_in_ball_and_box(&r.adv, &c.x, eps, &attack.name());
    let n_break = c.breakable.iter().filter(|&&b| b).count();
    assert!(n_break > 10 && n_break < c.breakable.len() - 10, "the case must mix both kinds ({n_break})");
    for (i, (&s, &b)) in r.success.iter().zip(&c.breakable).enumerate() {
        assert_eq!(s, b, "{}: point {i} breakable={b} but success={s}", attack.name());
    }
}

#[test]
fn untargeted_attacks_are_exact_on_binary_linear_models() {
    let c = case(1, 96, 2);
    let eps = c.eps;
    check_exact(&Fgsm { eps }, &c);
    check_exact(&Pgd::linf(eps, eps / 10.0, 50), &c);
    check_exact(&Pgd::cw(eps, eps / 10.0, 50, 50.0), &c);
    check_exact(&Mim { eps, step_size: eps / 10.0, steps: 20, decay: 1.0, random_start: RandomStart::Off }, &c);
    check_exact(&Apgd::standard(Norm::Linf, eps, ApgdLoss::Ce), &c);
}

#[test]
fn targeted_suites_are_exact_on_multiclass_linear_models() {
    let c = case(1, 96, 4);
    let eps = c.eps;
    check_exact(&Apgd::standard(Norm::Linf, eps, ApgdLoss::TargetedDlr { targets: 9 }), &c);
    check_exact(&FabTargeted::standard(eps), &c);
    check_exact(&AutoAttack::new(Suite::Standard, eps), &c);
    check_exact(&AutoAttack::new(Suite::ApgdCeT, eps), &c);
}

#[test]
fn untargeted_attacks_on_multiclass_models_break_nearly_all_and_claim_nothing_false() {
    let c = case(6, 96, 4);
    let eps = c.eps;
    let m = c.model();
    let n_break = c.breakable.iter().filter(|&&b| b).count();
    for a in [
        Box::new(Pgd::linf(eps, eps / 10.0, 50)) as Box<dyn Attack>,
        Box::new(Pgd::cw(eps, eps / 10.0, 50, 50.0)),
        Box::new(Apgd::standard(Norm::Linf, eps, ApgdLoss::Ce)),
        Box::new(Apgd::standard(Norm::Linf, eps, ApgdLoss::Dlr)),
    ] {
        let r = a.run(&m, &c.x, &c.y, 2).unwrap();
        assert_in_ball_and_box(&r.adv, &c.x, c.eps, &a.name());
        let mut found = 0;
        for (i, (&s, &b)) in r.success.iter().zip(&c.breakable).enumerate() {
            assert!(!s || b, "{}: claims unbreakable point {i}", a.name());
            found += s as usize;
        }
        assert!(found * 10 >= n_break * 9, "{}: broke {found} of {n_break}", a.name());
    }
}

#[test]
fn weaker_attacks_never_claim_an_unbreakable_point() {
    let c = case(2, 64, 4);
    let eps = c.eps;
    let m = c.model();
    let attacks: Vec<Box<dyn Attack>> = vec![
        Box::new(Fgsm { eps }),
        Box::new(Mim { eps, step_size: eps / 4.0, steps: 20, decay: 1.0, random_start: RandomStart::Off }),
        Box::new(Square { queries: 300, ..Square::standard(eps) }),
        Box::new(Pgd { norm: Norm::L2, ..Pgd::linf(eps, eps / 4.0, 20) }),
    ];
    for a in attacks {
        let r = a.run(&m, &c.x, &c.y, 3).unwrap();
        for (i, (&s, &b)) in r.success.iter().zip(&c.breakable).enumerate() {
            assert!(!s || b, "{}: claims unbreakable point {i}", a.name());
        }
        if a.name() != "pgd-20" {
            assert_in_ball_and_box(&r.adv, &c.x, c.eps, &a.name());
        }
    }
}

#[test]
fn l2_pgd_stays_in_the_l2_ball_and_matches_the_l2_closed_form() {
    // L2: breakable towards j iff z_y - z_j <= eps2 * ||w_y - w_j||_2; binary so that
    // the untargeted attack is exact. eps2 = median critical radius, ambiguous points skipped.
    let c = case(3, 64, 2);
    let m = c.model();
    let (w, b): (Vec<Vec<f32>>, Vec<f32>) = (c.w.to_vec2().unwrap(), c.b.to_vec1().unwrap());
    let xs: Vec<Vec<f32>> = c.x.flatten_from(1).unwrap().to_vec2().unwrap();
    let ys: Vec<u32> = c.y.to_vec1().unwrap();
    let radius: Vec<f64> = xs
        .iter()
        .zip(&ys)
        .map(|(x, &y)| {
            let (y, j) = (y as usize, 1 - y as usize);
            let z = |k: usize| b[k] as f64 + (0..D).map(|d| (w[k][d] * x[d]) as f64).sum::<f64>();
            (z(y) - z(j)) / (0..D).map(|d| ((w[y][d] - w[j][d]) as f64).powi(2)).sum::<f64>().sqrt()
        })
        .collect();
    let mut sorted = radius.clone();
    sorted.sort_by(f64::total_cmp);
    let eps2 = sorted[sorted.len() / 2];
    let r = Pgd { norm: Norm::L2, ..Pgd::linf(eps2, eps2 / 8.0, 60) }.run(&m, &c.x, &c.y, 1).unwrap();
    let d = (&r.adv - &c.x).unwrap().flatten_from(1).unwrap().sqr().unwrap().sum(1).unwrap().sqrt().unwrap();
    let dmax: f32 = d.max_all().unwrap().to_scalar().unwrap();
    assert!(dmax as f64 <= eps2 * (1.0 + 1e-5), "{dmax} > {eps2}");
    let mut checked = 0;
    for (i, &rad) in radius.iter().enumerate() {
        if (rad / eps2 - 1.0).abs() < 0.05 {
            continue;
        }
        assert_eq!(r.success[i], rad < eps2, "point {i}");
        checked += 1;
    }
    assert!(checked > 40, "{checked}");
}

#[test]
fn attacks_are_deterministic_for_a_seed() {
    let c = case(4, 32, 4);
    let eps = c.eps;
    let m = c.model();
    for a in [
        Box::new(Pgd::linf(eps, 0.01, 10)) as Box<dyn Attack>,
        Box::new(Apgd { steps: 20, ..Apgd::standard(Norm::Linf, eps, ApgdLoss::Ce) }),
    ] {
        let (r1, r2) = (a.run(&m, &c.x, &c.y, 11).unwrap(), a.run(&m, &c.x, &c.y, 11).unwrap());
        assert_eq!(
            r1.adv.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            r2.adv.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        assert_eq!(r1.success, r2.success);
    }
}

#[test]
fn dlr_and_cw_ignore_logit_scale_while_ce_pgd_degrades() {
    let c = case(5, 96, 4);
    let eps = c.eps;
    let m = c.model();
    let count = |v: &[bool]| v.iter().filter(|&&s| s).count();
    let apgd_dlr = Apgd::standard(Norm::Linf, eps, ApgdLoss::Dlr);
    let cw = Pgd::cw(eps, eps / 10.0, 50, 50.0);
    for attack in [&apgd_dlr as &dyn Attack, &cw] {
        let base = attack.run(&m, &c.x, &c.y, 5).unwrap().success;
        for scale in [1000.0, 0.001] {
            let scaled = ScaledLogits { model: &m, scale };
            assert_eq!(
                attack.run(&scaled, &c.x, &c.y, 5).unwrap().success,
                base,
                "{} at logit scale {scale}",
                attack.name()
            );
        }
    }
    // CE saturates at scale 1000: the softmax gradient underflows to exactly zero on
    // confidently classified points, and PGD cannot move. (Binary, where CE-PGD is exact.)
    let c = case(5, 96, 2);
    let eps = c.eps;
    let m = c.model();
    let pgd = Pgd::linf(eps, eps / 10.0, 50);
    let base = count(&pgd.run(&m, &c.x, &c.y, 5).unwrap().success);
    let hot = count(&pgd.run(&ScaledLogits { model: &m, scale: 1000.0 }, &c.x, &c.y, 5).unwrap().success);
    assert_eq!(base, count(&c.breakable));
    assert!(hot < base, "CE-PGD at logit scale 1000 should break fewer points: {hot} vs {base}");
}
