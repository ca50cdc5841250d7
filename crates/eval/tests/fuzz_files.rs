//! Property tests: the evaluation's own files (reports, shard files, saved progress) read
//! from arbitrary or damaged bytes load or fail with an error naming the file, and never
//! panic; the sealed ones (progress, shards) load only as exactly what was written. The
//! damaged reports start from a real one: `fixtures/report_fashion_pgd_at.json`, written
//! by `cargo xtask eval` for the Fashion-MNIST-LT PGD-AT run of seed 0
//! (30 epochs: `results/fashion-mnist-lt-30-epochs/fashion-mnist-lt-pgd-at/seed-0/eval-aa/`: clean, PGD-20 and
//! AutoAttack on 2,000 test images, with the audit).

#[path = "../../../tests/support/fuzz.rs"]
mod fuzz;

use proptest::prelude::*;
use robal_eval::parts::{State, StateKey};
use robal_eval::{AttackOutcome, AttackSettings, AttackSpec, AuditResult, Evaluation, Report, Shard};

/// A saved evaluation in progress as `cargo xtask eval` writes it: 2,000 images, clean
/// and PGD done, AutoAttack a quarter of the way (pseudo-random predictions).
fn progress() -> (State, Evaluation) {
    let labels: Vec<u32> = (0..2000u32).map(|i| i / 200).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut outcome = |spec: AttackSpec, n: usize| {
        let predicted: Vec<u32> = labels[..n]
            .iter()
            .map(|&y| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x.is_multiple_of(3) {
                    (y + 1 + (x % 9) as u32) % 10
                } else {
                    y
                }
            })
            .collect();
        let correct = predicted.iter().zip(&labels).map(|(p, y)| p == y).collect();
        AttackOutcome { spec, name: format!("{spec:?}"), predicted, correct, seconds: 12.345678, broken_by: Vec::new() }
    };
    let outcomes = vec![
        outcome(AttackSpec::Clean, 2000),
        outcome(AttackSpec::Pgd, 2000),
        outcome(AttackSpec::AutoAttackPaper, 512),
    ];
    let key = StateKey {
        model: "3f".repeat(32),
        data: "fashion-mnist-lt test split (2000 of 10000 images, evenly spaced)".into(),
        attacks: vec![AttackSpec::Clean, AttackSpec::Pgd, AttackSpec::AutoAttackPaper],
        settings: AttackSettings { eps: 0.1, ..AttackSettings::default() },
        batch: 128,
        shard: Shard::default(),
        labels: labels.clone(),
    };
    let eval = Evaluation {
        checkpoint: "results/run/model.safetensors".into(),
        model: key.model.clone(),
        data: key.data.clone(),
        head: "fc".into(),
        settings: key.settings,
        attacks: key.attacks.clone(),
        batch: 128,
        class_names: (0..10).map(|c| format!("class {c}")).collect(),
        train_counts: vec![6000, 3884, 2515, 1628, 1054, 682, 442, 286, 185, 120],
        total_images: 2000,
        shard: Shard::default(),
        labels,
        outcomes: outcomes[..2].to_vec(),
        audit: AuditResult::default(),
        audit_config: None,
    };
    (State { key, outcomes }, eval)
}

/// `bytes` with one byte replaced, or cut there.
fn damage(bytes: Vec<u8>, pos: prop::sample::Index, byte: u8, cut: bool) -> Vec<u8> {
    let i = pos.index(bytes.len());
    fuzz::damaged(bytes, i, byte, cut)
}

const REPORT: &str = include_str!("fixtures/report_fashion_pgd_at.json");

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz::cases(64), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_neither_a_report_nor_a_shard(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
        fuzz::within(move || -> Result<(), TestCaseError> {
            let tmp = tempfile::tempdir().unwrap();
            let p = tmp.path().join("report.json");
            std::fs::write(&p, &bytes).unwrap();
            if let Err(e) = Report::load(&p) {
                prop_assert!(e.to_string().contains("report.json"), "{}", e);
            }
            let s = tmp.path().join("shard-0-of-2.json");
            std::fs::write(&s, &bytes).unwrap();
            if let Err(e) = Evaluation::load(&s) {
                prop_assert!(e.to_string().contains("shard-0-of-2.json"), "{}", e);
            }
            Ok(())
        })?;
    }

    #[test]
    fn damaged_reports_load_or_name_the_file(
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        fuzz::within(move || -> Result<(), TestCaseError> {
            let bytes = damage(REPORT.as_bytes().to_vec(), pos, byte, cut);
            let tmp = tempfile::tempdir().unwrap();
            let p = tmp.path().join("report.json");
            std::fs::write(&p, &bytes).unwrap();
            match Report::load(&p) {
                Ok(r) => prop_assert!(!r.attacks.is_empty()),
                Err(e) => prop_assert!(e.to_string().contains("report.json"), "{}", e),
            }
            Ok(())
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz::cases(64), ..ProptestConfig::default() })]

    #[test]
    fn damaged_progress_and_shard_files_are_refused_or_unchanged(
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        fuzz::within(move || -> Result<(), TestCaseError> {
            let tmp = tempfile::tempdir().unwrap();
            let (state, eval) = progress();
            let p = tmp.path().join("eval_state.json");
            state.save(&p).unwrap();
            std::fs::write(&p, damage(std::fs::read(&p).unwrap(), pos, byte, cut)).unwrap();
            match State::load(&p, &state.key) {
                Ok(loaded) => prop_assert_eq!(loaded.as_ref(), Some(&state)),
                Err(e) => prop_assert!(e.to_string().contains("eval_state.json"), "{}", e),
            }
            let s = tmp.path().join("shard-1-of-2.json");
            eval.save(&s).unwrap();
            std::fs::write(&s, damage(std::fs::read(&s).unwrap(), pos, byte, cut)).unwrap();
            match Evaluation::load(&s) {
                Ok(loaded) => prop_assert_eq!(serde_json::to_value(&loaded).unwrap(), serde_json::to_value(&eval).unwrap()),
                Err(e) => prop_assert!(e.to_string().contains("shard-1-of-2.json"), "{}", e),
            }
            Ok(())
        })?;
    }
}

/// The sealed files load back as written, and a change inside a number (still valid
/// JSON, the kind of damage a parser cannot see) is refused by the digest.
#[test]
fn sealed_files_round_trip_and_a_changed_digit_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, _) = progress();
    let p = tmp.path().join("eval_state.json");
    state.save(&p).unwrap();
    assert_eq!(State::load(&p, &state.key).unwrap(), Some(state.clone()));
    let text = std::fs::read_to_string(&p).unwrap();
    let changed = text.replacen("12.345678", "12.345679", 1);
    assert_ne!(changed, text);
    std::fs::write(&p, changed).unwrap();
    let e = State::load(&p, &state.key).unwrap_err().to_string();
    assert!(e.contains("eval_state.json") && e.contains("does not match its sha256"), "{e}");
}

#[test]
fn the_fixture_is_a_report() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("report.json");
    std::fs::write(&p, REPORT).unwrap();
    let r = Report::load(&p).unwrap();
    assert_eq!(r.images, 2_000);
}
