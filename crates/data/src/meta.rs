//! Class metadata: names, training counts, prior and shot groups (SPEC section 1).

use crate::error::{invalid, Result};

/// Shot group of a class by its training count: many (> 100), medium (20..=100), few (< 20).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShotGroup {
    /// More than 100 training images.
    Many,
    /// 20 to 100 training images.
    Medium,
    /// Fewer than 20 training images.
    Few,
}

impl ShotGroup {
    /// The group of a class with `n` training images.
    pub fn of_count(n: usize) -> Self {
        if n > 100 {
            Self::Many
        } else if n >= 20 {
            Self::Medium
        } else {
            Self::Few
        }
    }

    /// Lower-case name used in reports: `many`, `medium`, `few`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Many => "many",
            Self::Medium => "medium",
            Self::Few => "few",
        }
    }

    /// Every group, head first.
    pub const ALL: [ShotGroup; 3] = [Self::Many, Self::Medium, Self::Few];

    /// The classes of each group (by `train_counts`) and their mean recall, for every
    /// group with at least one class: `(group, classes, mean)`, where the mean is over the
    /// classes with a recall ([`mean_present`]: a NaN recall, a class absent from the test
    /// set, is left out; NaN when none is present). The one place the trainer's quick
    /// evaluation and robal-eval's reports compute shot-group accuracy.
    pub fn means(recall: &[f64], train_counts: &[usize]) -> Vec<(ShotGroup, Vec<usize>, f64)> {
        Self::ALL
            .into_iter()
            .filter_map(|g| {
                let classes: Vec<usize> =
                    (0..train_counts.len()).filter(|&c| Self::of_count(train_counts[c]) == g).collect();
                let mean = mean_present(classes.iter().map(|&c| recall.get(c).copied().unwrap_or(f64::NAN)));
                (!classes.is_empty()).then_some((g, classes, mean))
            })
            .collect()
    }
}

/// Mean of the values that are not NaN, in order (sum / count); NaN if there are none.
pub fn mean_present(values: impl IntoIterator<Item = f64>) -> f64 {
    let (s, n) = values.into_iter().filter(|v| !v.is_nan()).fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        s / n as f64
    }
}

/// Names and training counts of the classes of a data set.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassInfo {
    names: Vec<String>,
    train_counts: Vec<usize>,
}

impl ClassInfo {
    /// Build from class names and training counts `n_c` (same length, every count > 0).
    pub fn new(names: Vec<String>, train_counts: Vec<usize>) -> Result<Self> {
        if names.len() != train_counts.len() {
            return Err(invalid(
                "class metadata",
                format!("{} names but {} training counts", names.len(), train_counts.len()),
            ));
        }
        if names.is_empty() {
            return Err(invalid("class metadata", "no classes"));
        }
        if let Some(c) = train_counts.iter().position(|&n| n == 0) {
            return Err(invalid(
                "class metadata",
                format!("class {c} ({}) has no training images; the prior log(pi_c) would be -inf", names[c]),
            ));
        }
        Ok(Self { names, train_counts })
    }

    /// Number of classes C.
    pub fn num_classes(&self) -> usize {
        self.names.len()
    }

    /// Class names in label order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Training counts n_c in label order.
    pub fn train_counts(&self) -> &[usize] {
        &self.train_counts
    }

    /// Prior pi_c = n_c / sum_k n_k.
    pub fn prior(&self) -> Vec<f64> {
        let total: usize = self.train_counts.iter().sum();
        self.train_counts.iter().map(|&n| n as f64 / total as f64).collect()
    }

    /// Imbalance ratio n_min / n_max.
    pub fn imbalance_ratio(&self) -> f64 {
        let max = self.train_counts.iter().copied().max().unwrap_or(1);
        let min = self.train_counts.iter().copied().min().unwrap_or(1);
        min as f64 / max as f64
    }

    /// Shot group of every class.
    pub fn shot_groups(&self) -> Vec<ShotGroup> {
        self.train_counts.iter().map(|&n| ShotGroup::of_count(n)).collect()
    }

    /// Classes of one shot group, in label order.
    pub fn classes_in(&self, group: ShotGroup) -> Vec<usize> {
        (0..self.num_classes()).filter(|&c| ShotGroup::of_count(self.train_counts[c]) == group).collect()
    }
}

/// Count the labels of each class `0..num_classes`.
pub fn count_labels(labels: &[u32], num_classes: usize) -> Vec<usize> {
    let mut counts = vec![0; num_classes];
    for &l in labels {
        if let Some(c) = counts.get_mut(l as usize) {
            *c += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shot_group_boundaries() {
        assert_eq!(ShotGroup::of_count(101), ShotGroup::Many);
        assert_eq!(ShotGroup::of_count(100), ShotGroup::Medium);
        assert_eq!(ShotGroup::of_count(20), ShotGroup::Medium);
        assert_eq!(ShotGroup::of_count(19), ShotGroup::Few);
        assert_eq!(ShotGroup::of_count(1), ShotGroup::Few);
    }

    #[test]
    fn prior_and_groups_of_a_hand_worked_example() {
        let names = ["a", "b", "c", "d"].map(String::from).to_vec();
        let info = ClassInfo::new(names, vec![500, 100, 50, 10]).unwrap();
        assert_eq!(info.prior(), vec![500.0 / 660.0, 100.0 / 660.0, 50.0 / 660.0, 10.0 / 660.0]);
        assert_eq!(info.imbalance_ratio(), 0.02);
        assert_eq!(info.classes_in(ShotGroup::Many), [0]);
        assert_eq!(info.classes_in(ShotGroup::Medium), [1, 2]);
        assert_eq!(info.classes_in(ShotGroup::Few), [3]);
    }

    #[test]
    fn group_means_of_a_hand_worked_example() {
        // counts 500 150 | 50 30 | 5 4: many {0, 1}, medium {2, 3}, few {4, 5}; class 2 and
        // both few classes have no test image (NaN recall).
        let recall = [1.0, 0.5, f64::NAN, 0.25, f64::NAN, f64::NAN];
        let g = ShotGroup::means(&recall, &[500, 150, 50, 30, 5, 4]);
        assert_eq!(g.len(), 3);
        assert_eq!((g[0].0, g[0].1.as_slice(), g[0].2), (ShotGroup::Many, &[0, 1][..], 0.75));
        assert_eq!((g[1].0, g[1].1.as_slice(), g[1].2), (ShotGroup::Medium, &[2, 3][..], 0.25));
        assert_eq!((g[2].0, g[2].1.as_slice()), (ShotGroup::Few, &[4, 5][..]));
        assert!(g[2].2.is_nan(), "no few class present: NaN, not 0");
        // A group without classes is absent.
        let g = ShotGroup::means(&[0.5, 1.0], &[200, 300]);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].2, 0.75);
        assert!(mean_present([]).is_nan());
    }

    #[test]
    fn inconsistent_metadata_is_rejected() {
        let e = ClassInfo::new(vec!["a".into(), "b".into()], vec![3, 0]).unwrap_err().to_string();
        assert!(e.contains("class 1 (b) has no training images"), "{e}");
        let e = ClassInfo::new(vec!["a".into()], vec![3, 4]).unwrap_err().to_string();
        assert!(e.contains("1 names but 2 training counts"), "{e}");
        assert_eq!(count_labels(&[0, 2, 2, 9], 3), [1, 0, 2]);
    }
}
