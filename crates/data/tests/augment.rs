//! AutoAugment / RandAugment / TrivialAugment: every op against Pillow's output
//! (fixtures/augment_ops.json, made by fixtures/make_pil_fixtures.py with Pillow 13.0.0),
//! the magnitude tables against torchvision's values, and the policies' op statistics
//! over many draws.

use rand::SeedableRng;
use robal_data::augment::{self, magnitude, op, OpKind, Policy, Space, CIFAR10_POLICY, SAMPLED_OPS};
use robal_data::{AugmentRng, ImageShape, PadCropFlip};

const SHAPE: ImageShape = ImageShape::new(3, 32, 32);

fn fixtures() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/augment_ops.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn bytes(v: &serde_json::Value) -> Vec<u8> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u8).collect()
}

fn op_of(name: &str, m: f64) -> augment::Op {
    let kind = match name {
        "Identity" => OpKind::Identity,
        "ShearX" => OpKind::ShearX,
        "ShearY" => OpKind::ShearY,
        "TranslateX" => OpKind::TranslateX,
        "TranslateY" => OpKind::TranslateY,
        "Rotate" => OpKind::Rotate,
        "Brightness" => OpKind::Brightness,
        "Color" => OpKind::Color,
        "Contrast" => OpKind::Contrast,
        "Sharpness" => OpKind::Sharpness,
        "Posterize" => OpKind::Posterize,
        "Solarize" => OpKind::Solarize,
        "AutoContrast" => OpKind::AutoContrast,
        "Equalize" => OpKind::Equalize,
        "Invert" => OpKind::Invert,
        other => panic!("unknown op {other}"),
    };
    op(kind, m)
}

#[test]
fn every_op_matches_pillow_pixel_for_pixel() {
    let f = fixtures();
    let images: Vec<Vec<u8>> = f["images"].as_array().unwrap().iter().map(bytes).collect();
    let mut failures = Vec::new();
    let (mut compared, mut changed) = (0, 0);
    for case in f["cases"].as_array().unwrap() {
        let name = case["op"].as_str().unwrap();
        let m = case["magnitude"].as_f64().unwrap();
        for (img, want) in images.iter().zip(case["outputs"].as_array().unwrap()) {
            let got = augment::apply(op_of(name, m), img, SHAPE);
            let want = bytes(want);
            compared += 1;
            changed += usize::from(&want != img);
            let wrong = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            if wrong > 0 {
                failures.push(format!("{name}({m}): {wrong} of {} values differ", want.len()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(compared, 86, "43 cases on 2 images");
    assert!(changed >= 75, "the fixtures exercise the ops ({changed} of 86 outputs differ from the input)");
}

#[test]
fn magnitudes_are_torchvisions() {
    // RandAugment at M = 8 of 31 bins (METHODS.md section 7): shear .08, translate 3 px at
    // W 32 (int of 3.87), 7 at W 64, rotate 8, enhance .24, 7 bits, threshold 187.
    let m = |k, s: ImageShape| magnitude(k, Space::Standard, 31, 8, s).0;
    let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    close(m(OpKind::ShearX, SHAPE), 0.08);
    assert_eq!(m(OpKind::TranslateX, SHAPE).trunc(), 3.0);
    assert_eq!(m(OpKind::TranslateY, ImageShape::new(3, 64, 64)).trunc(), 7.0);
    close(m(OpKind::Rotate, SHAPE), 8.0);
    close(m(OpKind::Brightness, SHAPE), 0.24);
    assert_eq!(m(OpKind::Posterize, SHAPE), 7.0);
    assert_eq!(m(OpKind::Solarize, SHAPE), 187.0);
    // AutoAugment's 10 bins: shear .3 i / 9, posterize 8 - round(i / 2.25), solarize 255 (1 - i / 9).
    let a = |k, i| magnitude(k, Space::Standard, 10, i, SHAPE);
    close(a(OpKind::ShearY, 8).0, 0.3 * 8.0 / 9.0);
    assert_eq!(a(OpKind::Posterize, 7).0, 5.0);
    assert!((a(OpKind::Solarize, 2).0 - 255.0 * 7.0 / 9.0).abs() < 1e-4);
    close(a(OpKind::TranslateX, 9).0, 150.0 / 331.0 * 32.0);
    assert!(a(OpKind::Rotate, 2).1 && !a(OpKind::Solarize, 2).1, "signed ops");
    // TrivialAugmentWide: rotate up to 135, translate up to 32 px, posterize 8 - round(i / 5).
    let w = |k, i| magnitude(k, Space::Wide, 31, i, SHAPE).0;
    close(w(OpKind::Rotate, 30), 135.0);
    close(w(OpKind::TranslateX, 30), 32.0);
    close(w(OpKind::ShearX, 30), 0.99);
    assert_eq!(w(OpKind::Posterize, 30), 2.0);
    assert_eq!(w(OpKind::Posterize, 12), 6.0);
}

fn kind(o: &augment::Op) -> usize {
    use augment::Op::*;
    match o {
        Identity => 0,
        ShearX(_) => 1,
        ShearY(_) => 2,
        TranslateX(_) => 3,
        TranslateY(_) => 4,
        Rotate(_) => 5,
        Brightness(_) => 6,
        Color(_) => 7,
        Contrast(_) => 8,
        Sharpness(_) => 9,
        Posterize(_) => 10,
        Solarize(_) => 11,
        AutoContrast => 12,
        Equalize => 13,
        Invert => 14,
    }
}

/// |count - n p| within 5 standard deviations of a binomial.
fn near(count: usize, n: usize, p: f64, what: &str) {
    let sd = (n as f64 * p * (1.0 - p)).sqrt().max(1.0);
    assert!((count as f64 - n as f64 * p).abs() < 5.0 * sd, "{what}: {count} of {n}, expected {:.0}", n as f64 * p);
}

#[test]
fn policies_draw_ops_with_the_right_frequencies_and_signs() {
    let n = 20_000;
    let mut rng = AugmentRng::seed_from_u64(7);
    // RandAugment(2, 8): 2 ops per image, each of the 14 with probability 1/14; signed
    // ops negative half the time.
    let mut counts = [0usize; 15];
    let (mut neg, mut signed) = (0, 0);
    for _ in 0..n {
        let ops = Policy::rand_augment(2, 8).draw(SHAPE, &mut rng);
        assert_eq!(ops.len(), 2);
        for o in &ops {
            counts[kind(o)] += 1;
            if let augment::Op::Rotate(m) = o {
                signed += 1;
                neg += usize::from(*m < 0.0);
                assert!((m.abs() - 8.0).abs() < 1e-5);
            }
        }
    }
    for (i, &c) in counts[..14].iter().enumerate() {
        near(c, 2 * n, 1.0 / 14.0, &format!("RandAugment op {:?}", SAMPLED_OPS[i]));
    }
    assert_eq!(counts[14], 0, "RandAugment never inverts");
    near(neg, signed, 0.5, "negative rotations");
    // AutoAugment CIFAR-10: op k of the policy appears with probability sum over
    // sub-policies of p / 25.
    let mut expected = [0f64; 15];
    for sub in CIFAR10_POLICY {
        for (k, p, _) in sub {
            let o = op(k, 1.0);
            expected[kind(&o)] += p / 25.0;
        }
    }
    let mut counts = [0usize; 15];
    for _ in 0..n {
        for o in Policy::AutoAugmentCifar10.draw(SHAPE, &mut rng) {
            counts[kind(&o)] += 1;
        }
    }
    for k in 0..15 {
        near(counts[k], n, expected[k], &format!("AutoAugment op {k}"));
    }
    // TrivialAugmentWide: one op, uniform over 14, magnitudes spread over 31 bins.
    let mut counts = [0usize; 15];
    let mut rotations = std::collections::BTreeSet::new();
    for _ in 0..n {
        let ops = Policy::TrivialAugmentWide.draw(SHAPE, &mut rng);
        assert_eq!(ops.len(), 1);
        counts[kind(&ops[0])] += 1;
        if let augment::Op::Rotate(m) = ops[0] {
            rotations.insert((m.abs() * 1000.0).round() as i64);
        }
    }
    for &c in &counts[..14] {
        near(c, n, 1.0 / 14.0, "TrivialAugment op");
    }
    assert_eq!(rotations.len(), 31, "every bin of the wide rotation range is drawn");
}

#[test]
fn reflect_padding_mirrors_without_repeating_the_edge() {
    // A crop of a 4x4 image starting 2 pixels right of its left edge (no vertical shift)
    // reads x = 2, 3, then the mirror x = 2, 1 (numpy/torch 'reflect'): 3 4 3 2 on row 0.
    let shape = ImageShape::new(1, 4, 4);
    let src: Vec<u8> = (1..=16).collect(); // 0 can only come from zero padding
    let mut hits = 0;
    for seed in 0..200 {
        let mut rng = AugmentRng::seed_from_u64(seed);
        let mut out = vec![0u8; 16];
        PadCropFlip { pad: 2, flip: false, reflect: true }.apply(&src, shape, &mut rng, &mut out);
        assert!(out.iter().all(|&v| v > 0), "reflect padding writes no zeros");
        if out[..4] == [3, 4, 3, 2] {
            hits += 1;
        }
    }
    assert!(hits > 0, "the mirrored crop occurs");
}

#[test]
fn random_rotation_draws_uniform_angles_and_rotates_as_pillow() {
    // The rotation itself is Pillow's rotate (checked pixel for pixel above at 8, -30 and
    // 13.3 degrees); here: the angle's distribution, and that the op applied is the drawn one.
    let r = augment::RandomRotation { degrees: 15.0 };
    let mut rng = AugmentRng::seed_from_u64(7);
    let mut angles: Vec<f64> = (0..20_000).map(|_| r.angle(&mut rng)).collect();
    angles.sort_by(f64::total_cmp);
    let mean = angles.iter().sum::<f64>() / angles.len() as f64;
    // U(-15, 15): sd 8.66, so the mean of 20,000 has sd 0.061; quartiles at -7.5 and 7.5.
    assert!(mean.abs() < 0.3, "mean {mean}");
    assert!(angles[0] >= -15.0 && angles[angles.len() - 1] < 15.0);
    assert!(angles[0] < -14.9 && angles[angles.len() - 1] > 14.9, "the whole range is reached");
    for (q, want) in [(0.25, -7.5), (0.5, 0.0), (0.75, 7.5)] {
        let got = angles[(q * angles.len() as f64) as usize];
        assert!((got - want).abs() < 0.4, "quantile {q}: {got} vs {want}");
    }
    let img: Vec<u8> = (0..SHAPE.numel()).map(|i| (i * 37 % 251) as u8).collect();
    let mut a = AugmentRng::seed_from_u64(3);
    let angle = r.angle(&mut a.clone());
    assert_eq!(r.apply(&img, SHAPE, &mut a), augment::apply(augment::Op::Rotate(angle), &img, SHAPE));
    assert_eq!(augment::RandomRotation { degrees: 0.0 }.apply(&img, SHAPE, &mut a), img, "0 degrees: unchanged");
}

#[test]
fn image_sets_rotate_after_crop_and_flip() {
    // torchvision's order: RandomCrop, RandomHorizontalFlip, RandomRotation.
    let names = (0..2).map(|c| c.to_string()).collect();
    let img: Vec<u8> = (0..SHAPE.numel()).map(|i| (i * 11 % 253) as u8).collect();
    let set =
        robal_data::ImageSet::new(img.clone(), vec![0], SHAPE, robal_data::ClassInfo::new(names, vec![1, 1]).unwrap())
            .unwrap()
            .with_augmentation(PadCropFlip::CIFAR)
            .with_rotation(Some(augment::RandomRotation { degrees: 15.0 }));
    for seed in 0..5 {
        let mut out = vec![0u8; SHAPE.numel()];
        let mut rng = AugmentRng::seed_from_u64(seed);
        let mut twin = rng.clone();
        robal_data::Dataset::write_example(&set, 0, Some(&mut rng), &mut out).unwrap();
        let mut cropped = vec![0u8; SHAPE.numel()];
        PadCropFlip::CIFAR.apply(&img, SHAPE, &mut twin, &mut cropped);
        let want = augment::RandomRotation { degrees: 15.0 }.apply(&cropped, SHAPE, &mut twin);
        assert_eq!(out, want, "seed {seed}");
    }
}
