//! The exact tests against values computed with Python's fractions (exact rationals):
//!
//! ```python
//! from fractions import Fraction as F; from math import comb
//! up = lambda n, k, p: sum(F(comb(n, i)) * p**i * (1 - p)**(n - i) for i in range(k, n + 1))
//! up(3, 3, F(1, 2)), up(10, 8, F(1, 2)), up(20, 5, F(1, 10)), up(100, 60, F(1, 2)), up(200, 3, F(1, 20))
//! # 0.125, 0.0546875, 0.043174495284463384, 0.028443966820490395, 0.9976637058099361
//! ```

use robal_eval::stats::{binomial_upper_tail, mcnemar_one_sided, Paired};

#[test]
fn binomial_tail_matches_exact_rationals() {
    for (n, k, p, want) in [
        (3, 3, 0.5, 0.125),
        (10, 8, 0.5, 0.0546875),
        (20, 5, 0.1, 0.043174495284463384),
        (100, 60, 0.5, 0.028443966820490395),
        // up(10000, 5000, F(1, 2)) = 0.5039893230696911 is checked below.
        (200, 3, 0.05, 0.9976637058099361),
    ] {
        let got = binomial_upper_tail(n, k, p);
        assert!((got - want).abs() < 1e-12 * want.max(1e-300), "P(X >= {k} | {n}, {p}) = {got}, want {want}");
    }
    assert_eq!(binomial_upper_tail(12, 0, 0.5), 1.0);
    assert_eq!(binomial_upper_tail(12, 13, 0.5), 0.0);
    // Far tails stay finite and positive: 2^-10000 underflows, so log space is needed for n = 10000 at k = n/2.
    let mid = binomial_upper_tail(10_000, 5_000, 0.5);
    assert!((mid - 0.503_989_323_069_691_1).abs() < 1e-9, "{mid}");
}

#[test]
fn mcnemar_counts_only_discordant_pairs() {
    assert_eq!(mcnemar_one_sided(0, 0), 1.0);
    assert!((mcnemar_one_sided(3, 0) - 0.125).abs() < 1e-15);
    let a = [true, true, true, false, true, false];
    let b = [false, false, true, false, true, true];
    let p = Paired::new(&a, &b);
    assert_eq!((p.n, p.robust_a, p.robust_b, p.only_b_breaks, p.only_a_breaks), (6, 4, 3, 2, 1));
    assert!((p.gap_points - 100.0 / 6.0).abs() < 1e-12);
    assert!((p.p_value - 0.5).abs() < 1e-15, "P(X >= 2 | 3, 1/2) = 1/2: {}", p.p_value);
}
