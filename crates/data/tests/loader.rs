//! The batch pipeline: shapes, value range, determinism, resume, samplers, augmentation.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use robal_data::{AugmentRng, ClassInfo, Dataset, ImageSet, ImageShape, Loader, LoaderConfig, PadCropFlip, Sampler};

/// n images of shape 3x8x8 whose pixels encode (example, position), labels i % classes.
fn toy(n: usize, classes: usize) -> ImageSet {
    let shape = ImageShape::new(3, 8, 8);
    let pixels = (0..n * shape.numel()).map(|k| ((k / shape.numel()) * 3 + k % 251) as u8).collect();
    let labels = (0..n).map(|i| (i % classes) as u32).collect();
    let names = (0..classes).map(|c| c.to_string()).collect();
    ImageSet::new(pixels, labels, shape, ClassInfo::new(names, vec![1; classes]).unwrap()).unwrap()
}

fn collect(loader: &Loader<ImageSet>, epoch: u64) -> Vec<(Vec<f32>, Vec<u32>, Vec<usize>)> {
    loader
        .epoch(epoch)
        .map(|b| {
            let b = b.unwrap();
            (b.images.flatten_all().unwrap().to_vec1().unwrap(), b.labels.to_vec1().unwrap(), b.indices)
        })
        .collect()
}

#[test]
fn eval_loader_yields_every_example_once_in_order_scaled_to_unit_range() {
    let set = Arc::new(toy(10, 3));
    let loader = Loader::new(set.clone(), LoaderConfig::eval(4), Device::Cpu).unwrap();
    assert_eq!(loader.num_batches(), 3);
    let batches: Vec<_> = loader.epoch(0).map(|b| b.unwrap()).collect();
    assert_eq!(batches.iter().map(|b| b.images.dims()[0]).collect::<Vec<_>>(), [4, 4, 2]);
    assert_eq!(batches[0].images.dims(), &[4, 3, 8, 8]);
    assert_eq!(batches[0].labels.dtype(), candle_core::DType::U32);
    let all: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
    let img: Vec<f32> = batches[2].images.get(1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let want: Vec<f32> = set.image(9).iter().map(|&p| p as f32 / 255.0).collect();
    assert_eq!(img, want);
}

#[test]
fn drop_last_and_shuffle_visit_a_permutation() {
    let set = Arc::new(toy(10, 3));
    let cfg = LoaderConfig { augment: false, ..LoaderConfig::train(4, 9) };
    let loader = Loader::new(set, cfg, Device::Cpu).unwrap();
    assert_eq!(loader.num_batches(), 2);
    let order = loader.order(0);
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    assert_ne!(order, loader.order(1), "each epoch has its own order");
    let seen: Vec<usize> = collect(&loader, 0).into_iter().flat_map(|b| b.2).collect();
    assert_eq!(seen, order[..8]);
}

#[test]
fn same_seed_same_batches_and_resume_mid_epoch_is_identical() {
    let set = Arc::new(toy(50, 5).with_augmentation(PadCropFlip::CIFAR));
    let cfg = LoaderConfig::train(8, 42);
    let a = Loader::new(set.clone(), cfg, Device::Cpu).unwrap();
    let b = Loader::new(set.clone(), LoaderConfig { prefetch: 5, ..cfg }, Device::Cpu).unwrap();
    let ea = collect(&a, 3);
    assert_eq!(ea, collect(&b, 3), "prefetch depth and threads do not change batches");
    assert_ne!(ea, collect(&a, 4));
    let resumed: Vec<Vec<usize>> = a.epoch_from(3, 2).map(|b| b.unwrap().indices).collect();
    let expected: Vec<Vec<usize>> = ea[2..].iter().map(|b| b.2.clone()).collect();
    assert_eq!(resumed, expected);
    let first_resumed = a.epoch_from(3, 2).next().unwrap().unwrap();
    let v: Vec<f32> = first_resumed.images.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(v, ea[2].0, "augmentation of a resumed batch is identical");
}

#[test]
fn class_balanced_sampler_draws_classes_uniformly() {
    // 1000 examples, class c has a share proportional to 2^-c (c = 0..4).
    let mut labels = Vec::new();
    for (c, n) in [516usize, 258, 129, 65, 32].iter().enumerate() {
        labels.extend(std::iter::repeat_n(c as u32, *n));
    }
    let shape = ImageShape::new(1, 2, 2);
    let names = (0..5).map(|c| c.to_string()).collect();
    let set =
        ImageSet::new(vec![0; labels.len() * 4], labels, shape, ClassInfo::new(names, vec![1; 5]).unwrap()).unwrap();
    let cfg = LoaderConfig { sampler: Sampler::ClassBalanced, ..LoaderConfig::train(100, 1) };
    let loader = Loader::new(Arc::new(set), cfg, Device::Cpu).unwrap();
    let mut counts = [0usize; 5];
    for e in 0..10 {
        for i in loader.order(e) {
            counts[loader.dataset().labels()[i] as usize] += 1;
        }
    }
    // 10,000 draws, 2,000 expected per class, binomial sd = 40: allow 5 sd.
    for c in counts {
        assert!((c as i64 - 2000).abs() < 200, "{counts:?}");
    }
}

/// Brute force: the augmented image must equal some shift (dy, dx) in [-pad, pad]^2
/// of the zero-padded original, flipped or not.
fn matches_some_shift(
    src: &[u8],
    out: &[u8],
    shape: ImageShape,
    pad: isize,
    allow_flip: bool,
) -> Option<(isize, isize, bool)> {
    let (h, w) = (shape.height as isize, shape.width as isize);
    for flip in [false, true] {
        if flip && !allow_flip {
            continue;
        }
        for dy in -pad..=pad {
            for dx in -pad..=pad {
                let ok = (0..shape.channels as isize).all(|c| {
                    (0..h).all(|y| {
                        (0..w).all(|x| {
                            let xs = if flip { w - 1 - x } else { x } + dx;
                            let ys = y + dy;
                            let v = if ys < 0 || ys >= h || xs < 0 || xs >= w {
                                0
                            } else {
                                src[(c * h * w + ys * w + xs) as usize]
                            };
                            out[(c * h * w + y * w + x) as usize] == v
                        })
                    })
                });
                if ok {
                    return Some((dy, dx, flip));
                }
            }
        }
    }
    None
}

#[test]
fn pad_crop_flip_is_a_shift_and_flip_and_covers_all_offsets() {
    let shape = ImageShape::new(3, 6, 7);
    let src: Vec<u8> = (0..shape.numel()).map(|k| (k % 250 + 1) as u8).collect();
    let mut seen = std::collections::HashSet::new();
    let mut out = vec![0u8; shape.numel()];
    for s in 0..3000u64 {
        let mut rng = AugmentRng::seed_from_u64(s);
        PadCropFlip::CIFAR.apply(&src, shape, &mut rng, &mut out);
        let found = matches_some_shift(&src, &out, shape, 4, true).expect("output is a padded shift");
        seen.insert(found);
    }
    assert_eq!(seen.len(), 9 * 9 * 2, "every offset and both flips occur");
    let mut rng = AugmentRng::seed_from_u64(5);
    PadCropFlip { pad: 2, flip: false, reflect: false }.apply(&src, shape, &mut rng, &mut out);
    assert!(matches_some_shift(&src, &out, shape, 2, false).is_some());
}

#[test]
fn bad_options_are_rejected() {
    let set = Arc::new(toy(3, 2));
    let e = Loader::new(set, LoaderConfig::eval(0), Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("batch size"), "{e}");
}

#[test]
fn batches_are_valid_candle_input() {
    let set = Arc::new(toy(6, 2));
    let loader = Loader::new(set, LoaderConfig::eval(6), Device::Cpu).unwrap();
    let b = loader.epoch(0).next().unwrap().unwrap();
    let m: f32 = b.images.mean_all().unwrap().to_scalar().unwrap();
    assert!(m > 0.0 && m < 1.0);
    let onehot = Tensor::eye(2, candle_core::DType::F32, &Device::Cpu).unwrap().index_select(&b.labels, 0).unwrap();
    assert_eq!(onehot.dims(), &[6, 2]);
}

#[test]
fn class_aware_sampler_runs_class_and_member_rounds_across_epochs() {
    // Classes of 7, 3 and 1 examples (labels given per index) and one empty class.
    let labels: Vec<u32> = [0, 1, 0, 0, 2, 0, 1, 0, 0, 1, 0].to_vec();
    let shape = ImageShape::new(1, 2, 2);
    let names = (0..4).map(|c| c.to_string()).collect();
    let set =
        ImageSet::new(vec![0; labels.len() * 4], labels.clone(), shape, ClassInfo::new(names, vec![1; 4]).unwrap())
            .unwrap();
    let cfg = LoaderConfig { sampler: Sampler::ClassAware, ..LoaderConfig::train(4, 9) };
    let loader = Loader::new(Arc::new(set), cfg, Device::Cpu).unwrap();
    // The code's epoch: max_c n_c * C = 7 * 3 (the empty class does not count); 21 / 4 -> 5 batches.
    assert_eq!(loader.epoch_len(), 21);
    assert_eq!(loader.num_batches(), 5);
    let stream: Vec<usize> = (0..4).flat_map(|e| loader.order(e)).collect();
    assert_eq!(stream.len(), 84);
    // Every aligned round of 3 draws holds each non-empty class once.
    for round in stream.chunks(3) {
        let mut classes: Vec<u32> = round.iter().map(|&i| labels[i]).collect();
        classes.sort();
        assert_eq!(classes, [0, 1, 2], "{round:?}");
    }
    // Each class's draws, over the epochs in sequence, come in rounds that visit every
    // member once (the rounds run on across epoch boundaries).
    for c in 0..3u32 {
        let members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        let draws: Vec<usize> = stream.iter().copied().filter(|&i| labels[i] == c).collect();
        assert_eq!(draws.len(), 28);
        for round in draws.chunks(members.len()).filter(|r| r.len() == members.len()) {
            let mut r = round.to_vec();
            r.sort();
            assert_eq!(r, members, "class {c}");
        }
    }
    // Each epoch on its own is the same as in the sequence (resume), epochs differ, seeds differ.
    assert_eq!(loader.order(2), stream[42..63]);
    assert_ne!(loader.order(0), loader.order(1));
    let other = Loader::new(
        loader.dataset().clone(),
        LoaderConfig { sampler: Sampler::ClassAware, ..LoaderConfig::train(4, 10) },
        Device::Cpu,
    )
    .unwrap();
    assert_ne!(other.order(0), loader.order(0));
    // The batches follow the order, the last partial one dropped.
    let got: Vec<usize> = loader.epoch(1).flat_map(|b| b.unwrap().indices).collect();
    assert_eq!(got, stream[21..41]);
}
