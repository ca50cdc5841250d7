//! Long-tailed training subsets (SPEC section 1, the LDAM-DRW construction).

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::dataset::{Dataset, ImageSet};
use crate::error::{invalid, Result};
use crate::numpy_generator::NumpyGenerator;
use crate::numpy_rng::NumpyLegacyRng;

/// How a profile's real-valued counts img_max r^(c/(C-1)) become integers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CountRounding {
    /// Truncation, `int(x)` (LDAM-DRW, the RoBal reference, RobustLT).
    #[default]
    Floor,
    /// MCAT's `exp_decay_counts`: Python's `round` (half to even), then at least 1 and
    /// never more than the class before.
    HalfEven,
}

/// How the per-class counts fall from the head to the tail.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Profile {
    /// n_c = floor(img_max * r^(c/(C-1))).
    Exp {
        /// Ratio r = n_min / n_max in (0, 1].
        ratio: f64,
    },
    /// The first floor(C/2) classes keep img_max, the rest floor(img_max * r).
    Step {
        /// Ratio r = n_min / n_max in (0, 1].
        ratio: f64,
    },
}

impl Profile {
    /// The ratio r of the profile.
    pub fn ratio(&self) -> f64 {
        match *self {
            Self::Exp { ratio } | Self::Step { ratio } => ratio,
        }
    }

    /// Per-class counts for `num_classes` classes and `img_max` (= N_train / C, as a
    /// float, as in the reference). Computed in f64 exactly as the reference's Python.
    pub fn counts(&self, num_classes: usize, img_max: f64) -> Result<Vec<usize>> {
        self.counts_rounded(num_classes, img_max, CountRounding::Floor)
    }

    /// [`Profile::counts`] with the real values rounded as `rounding` says.
    pub fn counts_rounded(&self, num_classes: usize, img_max: f64, rounding: CountRounding) -> Result<Vec<usize>> {
        let r = self.ratio();
        if !(r > 0.0 && r <= 1.0) {
            return Err(invalid("imbalance ratio", format!("{r} is outside (0, 1]")));
        }
        if num_classes == 0 {
            return Err(invalid("number of classes", "0"));
        }
        if img_max.is_nan() || img_max < 1.0 {
            return Err(invalid("img_max", format!("{img_max} is below 1")));
        }
        let real: Vec<f64> = match *self {
            Self::Exp { .. } => (0..num_classes)
                .map(|c| {
                    let e = if num_classes == 1 { 0.0 } else { c as f64 / (num_classes as f64 - 1.0) };
                    img_max * r.powf(e)
                })
                .collect(),
            Self::Step { .. } => {
                let head = num_classes / 2;
                (0..num_classes).map(|c| if c < head { img_max } else { img_max * r }).collect()
            }
        };
        Ok(match rounding {
            CountRounding::Floor => real.iter().map(|&x| x as usize).collect(),
            CountRounding::HalfEven => {
                let mut counts: Vec<usize> = real.iter().map(|&x| (x.round_ties_even() as usize).max(1)).collect();
                for i in 1..counts.len() {
                    counts[i] = counts[i].min(counts[i - 1]).max(1);
                }
                counts
            }
        })
    }
}

/// Which images of each class a long-tailed subset keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// The reference code's choice, bit-for-bit: numpy's legacy MT19937 seeded once
    /// with `seed` (0 in the paper); for each class in order, shuffle that class's
    /// indices (file order) in place and keep the first n_c. Output is class by class.
    Reference {
        /// The numpy seed (0 reproduces the paper's subset).
        seed: u32,
    },
    /// numpy's `Generator` (`default_rng(seed)`), one for all classes: for each class in
    /// order, shuffle its indices (file order) and keep the first n_c. RobustLT's
    /// `_generate_splits` (its train and validation parts together) and MCAT's
    /// `stratified_subsample_indices` choose their images so. Output is class by class.
    NumpyGenerator {
        /// The `default_rng` seed (RobustLT 102-104, MCAT 0).
        seed: u64,
    },
    /// Our own: each class's indices shuffled by a ChaCha8 stream derived from
    /// `seed` and the class, first n_c kept, output sorted by original index.
    Seeded {
        /// Seed of the selection.
        seed: u64,
    },
}

/// Indices of a long-tailed subset of `labels` with `counts[c]` examples of class c.
///
/// Errors when a class has fewer examples than asked for.
pub fn select(labels: &[u32], counts: &[usize], selection: Selection) -> Result<Vec<usize>> {
    let per_class = indices_by_class(labels, counts.len())?;
    for (c, (idx, &n)) in per_class.iter().zip(counts).enumerate() {
        if idx.len() < n {
            return Err(invalid(
                "long-tailed counts",
                format!("class {c} has {} examples but {n} were asked for", idx.len()),
            ));
        }
    }
    let mut out = Vec::with_capacity(counts.iter().sum());
    match selection {
        Selection::Reference { seed } => {
            let mut rng = NumpyLegacyRng::new(seed);
            for (mut idx, &n) in per_class.into_iter().zip(counts) {
                rng.shuffle(&mut idx);
                out.extend_from_slice(&idx[..n]);
            }
        }
        Selection::NumpyGenerator { seed } => {
            let mut rng = NumpyGenerator::new(seed);
            for (mut idx, &n) in per_class.into_iter().zip(counts) {
                rng.shuffle(&mut idx);
                out.extend_from_slice(&idx[..n]);
            }
        }
        Selection::Seeded { seed } => {
            for (c, (mut idx, &n)) in per_class.into_iter().zip(counts).enumerate() {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(c as u64);
                idx.shuffle(&mut rng);
                out.extend_from_slice(&idx[..n]);
            }
            out.sort_unstable();
        }
    }
    Ok(out)
}

fn indices_by_class(labels: &[u32], num_classes: usize) -> Result<Vec<Vec<usize>>> {
    let mut per_class = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        per_class
            .get_mut(l as usize)
            .ok_or_else(|| invalid("labels", format!("example {i} has label {l}, expected 0..{num_classes}")))?
            .push(i);
    }
    Ok(per_class)
}

/// A long-tailed training subset of a balanced set, with its class metadata set to
/// the subset's counts. `img_max` is len / C as in the reference.
pub fn long_tailed(set: &ImageSet, profile: Profile, selection: Selection) -> Result<ImageSet> {
    long_tailed_rounded(set, profile, CountRounding::Floor, selection)
}

/// [`long_tailed`] with the counts rounded as `rounding` says.
pub fn long_tailed_rounded(
    set: &ImageSet,
    profile: Profile,
    rounding: CountRounding,
    selection: Selection,
) -> Result<ImageSet> {
    let c = set.classes().num_classes();
    let counts = profile.counts_rounded(c, set.len() as f64 / c as f64, rounding)?;
    let idx = select(set.labels(), &counts, selection)?;
    set.subset(&idx)?.counted_as_training()
}
