//! The batch pipeline: examples drawn by a sampler, augmented and converted to
//! f32 NCHW tensors in \[0, 1\] on rayon worker threads, one batch ahead of the model.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::dataset::{AugmentRng, Dataset};
use crate::error::{invalid, Result};

/// Order in which an epoch visits the data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampler {
    /// Index order 0..len.
    Sequential,
    /// A permutation of 0..len, fresh each epoch.
    Shuffle,
    /// len draws with replacement; each draw picks a class uniformly (among classes
    /// with examples), then an example of that class uniformly.
    ClassBalanced,
    /// The RoBal reference's `ClassAwareSampler` (and Decoupling's): an epoch is
    /// max_c n_c * C draws; classes come in rounds of C, each class once per round in a
    /// fresh random order; a class's examples come in rounds too (each once per round,
    /// reshuffled every round). Both kinds of round run on across epochs, as the code's
    /// iterators live as long as the sampler.
    ClassAware,
}

/// Options of a [`Loader`].
#[derive(Clone, Copy, Debug)]
pub struct LoaderConfig {
    /// Examples per batch.
    pub batch_size: usize,
    /// Visiting order.
    pub sampler: Sampler,
    /// Drop the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Apply the data set's training augmentation.
    pub augment: bool,
    /// Seed of orders and augmentation; epoch e of a seed is always the same.
    pub seed: u64,
    /// Batches prepared ahead of the consumer (at least 1).
    pub prefetch: usize,
}

impl LoaderConfig {
    /// Training defaults: shuffled, augmented, last partial batch dropped.
    pub fn train(batch_size: usize, seed: u64) -> Self {
        Self { batch_size, sampler: Sampler::Shuffle, drop_last: true, augment: true, seed, prefetch: 2 }
    }

    /// Evaluation defaults: index order, no augmentation, every example once.
    pub fn eval(batch_size: usize) -> Self {
        Self { batch_size, sampler: Sampler::Sequential, drop_last: false, augment: false, seed: 0, prefetch: 2 }
    }
}

/// One batch: `images` f32 (B, C, H, W) in \[0, 1\], `labels` u32 (B,), and the data
/// set indices the examples came from.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Images, f32 NCHW in \[0, 1\].
    pub images: Tensor,
    /// Labels, u32.
    pub labels: Tensor,
    /// Data set index of each example.
    pub indices: Vec<usize>,
}

/// Yields [`Batch`]es of a data set on a device.
pub struct Loader<D: Dataset + 'static> {
    dataset: Arc<D>,
    config: LoaderConfig,
    device: Device,
}

/// SplitMix64 finaliser: decorrelates (seed, epoch, position) into one stream seed.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn stream(seed: u64, domain: u64, epoch: u64, position: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed ^ mix(domain ^ mix(epoch))));
    rng.set_stream(position);
    rng
}

const ORDER: u64 = 1;
const AUGMENT: u64 = 2;

impl<D: Dataset + 'static> Loader<D> {
    /// A loader over `dataset` producing tensors on `device`.
    pub fn new(dataset: Arc<D>, config: LoaderConfig, device: Device) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(invalid("batch size", "0; expected at least 1"));
        }
        if dataset.is_empty() {
            return Err(invalid("data set", "it has no examples"));
        }
        Ok(Self { dataset, config: LoaderConfig { prefetch: config.prefetch.max(1), ..config }, device })
    }

    /// The data set.
    pub fn dataset(&self) -> &Arc<D> {
        &self.dataset
    }

    /// The options.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Members of each class that has examples, in index order.
    fn class_members(&self) -> Vec<Vec<usize>> {
        let mut by_class = vec![Vec::new(); self.dataset.classes().num_classes()];
        for (i, &l) in self.dataset.labels().iter().enumerate() {
            by_class[l as usize].push(i);
        }
        by_class.retain(|v| !v.is_empty());
        by_class
    }

    /// Examples an epoch visits: the data set's size, or max_c n_c * C for
    /// [`Sampler::ClassAware`].
    pub fn epoch_len(&self) -> usize {
        match self.config.sampler {
            Sampler::ClassAware => {
                let by_class = self.class_members();
                by_class.iter().map(Vec::len).max().unwrap_or(0) * by_class.len()
            }
            _ => self.dataset.len(),
        }
    }

    /// Data set indices visited in `epoch`, in order (before batching).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let n = self.dataset.len();
        let mut rng = stream(self.config.seed, ORDER, epoch, 0);
        match self.config.sampler {
            Sampler::ClassAware => class_aware_order(&self.class_members(), self.config.seed, epoch),
            Sampler::Sequential => (0..n).collect(),
            Sampler::Shuffle => {
                let mut idx: Vec<usize> = (0..n).collect();
                idx.shuffle(&mut rng);
                idx
            }
            Sampler::ClassBalanced => {
                let by_class = self.class_members();
                (0..n)
                    .map(|_| {
                        let members = &by_class[rng.random_range(0..by_class.len())];
                        members[rng.random_range(0..members.len())]
                    })
                    .collect()
            }
        }
    }

    /// Batches per epoch.
    pub fn num_batches(&self) -> usize {
        let (n, b) = (self.epoch_len(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The batches of `epoch`.
    pub fn epoch(&self, epoch: u64) -> Batches {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from batch `start` on: identical to skipping `start`
    /// batches of [`Loader::epoch`] (for resuming a run mid-epoch).
    pub fn epoch_from(&self, epoch: u64, start: usize) -> Batches {
        let order = self.order(epoch);
        let (b, nb) = (self.config.batch_size, self.num_batches());
        let chunks: Vec<(usize, Vec<usize>)> =
            (start..nb).map(|k| (k * b, order[k * b..((k + 1) * b).min(order.len())].to_vec())).collect();
        let (tx, rx) = sync_channel(self.config.prefetch);
        let (dataset, config, device) = (self.dataset.clone(), self.config, self.device.clone());
        std::thread::spawn(move || {
            for (first, indices) in chunks {
                let batch = make_batch(&*dataset, &config, &device, epoch, first, indices);
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    break;
                }
            }
        });
        Batches { rx, remaining: nb.saturating_sub(start) }
    }
}

/// Endless rounds over `items`: each round visits every item once, in a fresh order.
struct Rounds {
    items: Vec<usize>,
    next: usize,
}

impl Rounds {
    fn new(items: Vec<usize>) -> Self {
        let next = items.len();
        Self { items, next }
    }

    fn draw(&mut self, rng: &mut ChaCha8Rng) -> usize {
        if self.next == self.items.len() {
            self.items.shuffle(rng);
            self.next = 0;
        }
        self.next += 1;
        self.items[self.next - 1]
    }
}

/// [`Sampler::ClassAware`]'s `epoch`: the rounds are one stream from epoch 0 on (seeded
/// by `seed` alone), replayed up to `epoch` so that any epoch can be produced on its own
/// (a resumed run gets the order the uninterrupted one had).
fn class_aware_order(by_class: &[Vec<usize>], seed: u64, epoch: u64) -> Vec<usize> {
    const CLASS_AWARE: u64 = 3;
    let per_epoch = by_class.iter().map(Vec::len).max().unwrap_or(0) * by_class.len();
    let mut rng = stream(seed, CLASS_AWARE, 0, 0);
    let mut classes = Rounds::new((0..by_class.len()).collect());
    let mut members: Vec<Rounds> = by_class.iter().map(|m| Rounds::new(m.clone())).collect();
    let mut order = vec![0; per_epoch];
    for _ in 0..=epoch {
        for slot in order.iter_mut() {
            let c = classes.draw(&mut rng);
            *slot = members[c].draw(&mut rng);
        }
    }
    order
}

/// Build one batch on the rayon pool. Example at epoch position p gets the
/// augmentation stream (seed, epoch, p), so results do not depend on threading.
fn make_batch<D: Dataset>(
    dataset: &D,
    config: &LoaderConfig,
    device: &Device,
    epoch: u64,
    first: usize,
    indices: Vec<usize>,
) -> Result<Batch> {
    let shape = dataset.shape();
    let numel = shape.numel();
    let mut images = vec![0f32; indices.len() * numel];
    images.par_chunks_mut(numel).zip(indices.par_iter()).enumerate().try_for_each_init(
        || vec![0u8; numel],
        |scratch, (k, (dst, &i))| -> Result<()> {
            let mut rng: Option<AugmentRng> =
                config.augment.then(|| stream(config.seed, AUGMENT, epoch, (first + k) as u64));
            dataset.write_example(i, rng.as_mut(), scratch)?;
            for (d, &s) in dst.iter_mut().zip(scratch.iter()) {
                *d = f32::from(s) / 255.0;
            }
            Ok(())
        },
    )?;
    let labels: Vec<u32> = indices.iter().map(|&i| dataset.labels()[i]).collect();
    let b = indices.len();
    let images =
        Tensor::from_vec(images, (b, shape.channels, shape.height, shape.width), &Device::Cpu)?.to_device(device)?;
    let labels = Tensor::from_vec(labels, b, &Device::Cpu)?.to_device(device)?;
    Ok(Batch { images, labels, indices })
}

/// Iterator over the batches of one epoch; stops at the first error.
pub struct Batches {
    rx: Receiver<Result<Batch>>,
    remaining: usize,
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        match self.rx.recv() {
            Ok(item) => {
                self.remaining = if item.is_err() { 0 } else { self.remaining - 1 };
                Some(item)
            }
            Err(_) => None,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}
