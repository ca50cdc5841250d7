//! Batch pipeline throughput: images/s delivered as f32 NCHW tensors, with and
//! without training augmentation (pad-crop-flip; AutoAugment, RandAugment(2, 8) and
//! TrivialAugment before it), for CIFAR-shaped (3x32x32) and MNIST-LT images.
//!
//! `cargo bench -p robal-data --bench pipeline`. The consumer does no work, so
//! this is the rate at which the pipeline alone can feed a model.

use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use robal_data::cifar::CIFAR_SHAPE;
use robal_data::{load_embedded, ClassInfo, Dataset, ImageSet, Loader, LoaderConfig, PadCropFlip, Policy, Split};

/// 10,000 CIFAR-shaped images with pseudo-random pixels (a fixed LCG).
fn cifar_like() -> ImageSet {
    let n = 10_000;
    let mut state = 12345u32;
    let pixels = (0..n * CIFAR_SHAPE.numel())
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect();
    let labels = (0..n).map(|i| (i % 10) as u32).collect();
    let names = (0..10).map(|c| c.to_string()).collect();
    ImageSet::new(pixels, labels, CIFAR_SHAPE, ClassInfo::new(names, vec![5000; 10]).expect("metadata"))
        .expect("set")
        .with_augmentation(PadCropFlip::CIFAR)
}

fn measure<D: Dataset + 'static>(name: &str, set: Arc<D>, batch: usize, augment: bool, epochs: u64) {
    let cfg = LoaderConfig { augment, ..LoaderConfig::train(batch, 0) };
    let loader = Loader::new(set, cfg, Device::Cpu).expect("loader");
    // One warm-up epoch (thread pool start, page faults), then timed epochs.
    loader.epoch(0).for_each(|b| drop(b.expect("batch")));
    let start = Instant::now();
    let mut images = 0usize;
    for e in 1..=epochs {
        for b in loader.epoch(e) {
            images += b.expect("batch").indices.len();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name:<10} batch {batch:>3}  augment {:<3}  {:>9.0} img/s  ({images} images in {secs:.2} s, {} rayon threads)",
        if augment { "on" } else { "off" },
        images as f64 / secs,
        rayon::current_num_threads()
    );
}

fn main() {
    let cifar = Arc::new(cifar_like());
    for batch in [64, 256] {
        for augment in [true, false] {
            measure("cifar", cifar.clone(), batch, augment, 20);
        }
    }
    for (name, policy) in [
        ("cifar+aa", Policy::AutoAugmentCifar10),
        ("cifar+ra", Policy::rand_augment(2, 8)),
        ("cifar+ta", Policy::TrivialAugmentWide),
    ] {
        measure(name, Arc::new(cifar_like().with_policy(Some(policy))), 128, true, 3);
    }
    let mnist = Arc::new(load_embedded("mnist-lt", Split::Train).expect("embedded set"));
    measure("mnist-lt", mnist, 64, true, 20);
}
