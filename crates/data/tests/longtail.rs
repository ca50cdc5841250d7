//! Long-tailed counts (SPEC section 1 test vectors) and selections.

use robal_data::{select, Profile, Selection};

fn exp(ratio: f64, c: usize, img_max: f64) -> Vec<usize> {
    Profile::Exp { ratio }.counts(c, img_max).unwrap()
}

#[test]
fn cifar10_exp_counts_are_the_spec_vectors() {
    let r100 = exp(0.01, 10, 5000.0);
    assert_eq!(r100, [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]);
    assert_eq!(r100.iter().sum::<usize>(), 12406);
    let r50 = exp(0.02, 10, 5000.0);
    assert_eq!(r50, [5000, 3237, 2096, 1357, 878, 568, 368, 238, 154, 100]);
    assert_eq!(r50.iter().sum::<usize>(), 13996);
    let r10 = exp(0.1, 10, 5000.0);
    assert_eq!(r10, [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]);
    assert_eq!(r10.iter().sum::<usize>(), 20431);
}

#[test]
fn cifar100_exp_counts_are_the_spec_vectors() {
    let r10 = exp(0.1, 100, 500.0);
    assert_eq!(r10.iter().sum::<usize>(), 19573);
    assert_eq!(&r10[..5], &[500, 488, 477, 466, 455]);
    assert_eq!(&r10[95..], &[54, 53, 52, 51, 50]);
    let r100 = exp(0.01, 100, 500.0);
    assert_eq!(r100.iter().sum::<usize>(), 10847);
    assert_eq!(&r100[95..], &[6, 5, 5, 5, 5]);
}

#[test]
fn step_profile_keeps_half_at_img_max() {
    let c = Profile::Step { ratio: 0.01 }.counts(10, 5000.0).unwrap();
    assert_eq!(c, [5000, 5000, 5000, 5000, 5000, 50, 50, 50, 50, 50]);
    let c = Profile::Step { ratio: 0.1 }.counts(5, 100.0).unwrap();
    assert_eq!(c, [100, 100, 10, 10, 10]);
}

#[test]
fn bad_ratios_are_rejected_with_the_value() {
    for r in [0.0, -0.5, 1.5, f64::NAN] {
        let e = Profile::Exp { ratio: r }.counts(10, 5000.0).unwrap_err().to_string();
        assert!(e.contains("ratio"), "{e}");
    }
}

fn labels(per_class: usize, classes: u32) -> Vec<u32> {
    (0..per_class as u32 * classes).map(|i| (i * 7 + i / 13) % classes).collect()
}

#[test]
fn selections_have_exact_counts_and_distinct_members() {
    let l = labels(100, 10);
    let counts = exp(0.05, 10, 100.0);
    for sel in [Selection::Reference { seed: 0 }, Selection::Seeded { seed: 3 }] {
        let idx = select(&l, &counts, sel).unwrap();
        assert_eq!(idx.len(), counts.iter().sum::<usize>());
        let mut got = [0usize; 10];
        for &i in &idx {
            got[l[i] as usize] += 1;
        }
        assert_eq!(got.to_vec(), counts);
        let mut d = idx.clone();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), idx.len(), "{sel:?} repeats an index");
    }
}

#[test]
fn seeded_selection_is_deterministic_and_seed_dependent() {
    let l = labels(100, 10);
    let counts = exp(0.1, 10, 100.0);
    let a = select(&l, &counts, Selection::Seeded { seed: 1 }).unwrap();
    assert_eq!(a, select(&l, &counts, Selection::Seeded { seed: 1 }).unwrap());
    assert_ne!(a, select(&l, &counts, Selection::Seeded { seed: 2 }).unwrap());
    assert!(a.windows(2).all(|w| w[0] < w[1]), "seeded output keeps file order");
}

#[test]
fn asking_for_more_than_a_class_has_is_an_error() {
    let l = labels(10, 3);
    let e = select(&l, &[5, 11, 2], Selection::Seeded { seed: 0 }).unwrap_err().to_string();
    assert!(e.contains("class 1 has 10 examples but 11"), "{e}");
}
