//! Exact tests on per-example outcomes, for the audit's verdicts.
//!
//! Two evaluations of the same examples (attack A and attack B) are compared by their
//! discordant pairs: `b` examples robust under A but broken by B, `c` the reverse.
//! If A and B were equally strong, each discordant example would be equally likely
//! to fall either way, so `b ~ Binomial(b + c, 1/2)`: the exact one-sided McNemar test.

use serde::{Deserialize, Serialize};

/// Upper tail of the binomial distribution, `P(X >= k)` for `X ~ Binomial(n, p)`:
/// `sum_{i=k}^{n} C(n, i) p^i (1 - p)^(n - i)`, summed in log space (exact to
/// double rounding for any `n`).
pub fn binomial_upper_tail(n: usize, k: usize, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    // log C(n, i), built up from log C(n, 0) = 0.
    let mut log_c = 0.0f64;
    let mut terms = Vec::with_capacity(n - k + 1);
    for i in 1..=n {
        log_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        if i >= k {
            terms.push(log_c + i as f64 * lp + (n - i) as f64 * lq);
        }
    }
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()).exp().min(1.0)
}

/// Exact one-sided McNemar p-value: the chance of `b` or more of `b + c` discordant
/// examples falling B's way if A and B were equally strong, `P(X >= b)`, `X ~ Bin(b + c, 1/2)`.
pub fn mcnemar_one_sided(b: usize, c: usize) -> f64 {
    binomial_upper_tail(b + c, b, 0.5)
}

/// Two evaluations of the same examples compared example by example: is B stronger
/// than A (lower robust accuracy)?
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    /// Examples compared.
    pub n: usize,
    /// Robust under A.
    pub robust_a: usize,
    /// Robust under B.
    pub robust_b: usize,
    /// Robust under A, broken by B (`b`).
    pub only_b_breaks: usize,
    /// Robust under B, broken by A (`c`).
    pub only_a_breaks: usize,
    /// Robust accuracy of A minus that of B, in points: `100 (b - c) / n`.
    pub gap_points: f64,
    /// [`mcnemar_one_sided`]`(b, c)`: how likely a gap this large is if A and B were equally strong.
    pub p_value: f64,
}

impl Paired {
    /// Compare per-example robust flags of A and B (equal lengths).
    pub fn new(robust_a: &[bool], robust_b: &[bool]) -> Self {
        let n = robust_a.len().min(robust_b.len());
        let (a, b) = (&robust_a[..n], &robust_b[..n]);
        let only_b = a.iter().zip(b).filter(|(x, y)| **x && !**y).count();
        let only_a = a.iter().zip(b).filter(|(x, y)| !**x && **y).count();
        Self {
            n,
            robust_a: a.iter().filter(|&&v| v).count(),
            robust_b: b.iter().filter(|&&v| v).count(),
            only_b_breaks: only_b,
            only_a_breaks: only_a,
            gap_points: 100.0 * (only_b as f64 - only_a as f64) / n.max(1) as f64,
            p_value: mcnemar_one_sided(only_b, only_a),
        }
    }

    /// B is stronger than A at significance `alpha` and by more than `min_gap` points.
    pub fn b_stronger(&self, alpha: f64, min_gap: f64) -> bool {
        self.p_value < alpha && self.gap_points > min_gap
    }

    /// `b/c discordant of n, gap +x.x points, p = ...` for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} of {} examples broken only by the second, {} only by the first: gap {:+.1} points, one-sided exact McNemar p = {:.2e}",
            self.only_b_breaks, self.n, self.only_a_breaks, self.gap_points, self.p_value
        )
    }
}
