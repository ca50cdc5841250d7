//! Property tests: the evaluation's own files (reports, shard files) read from arbitrary
//! or damaged bytes load or fail with an error naming the file, and never panic. The
//! damaged reports start from a real one: `fixtures/report_fashion_pgd_at.json`, written
//! by `cargo xtask eval` for the Fashion-MNIST-LT PGD-AT run of seed 0
//! (`results/fashion-mnist-lt/fashion-mnist-lt-pgd-at/seed-0/eval-aa/`: clean, PGD-20 and
//! AutoAttack on 2,000 test images, with the audit).

#[path = "../../../tests/support/fuzz.rs"]
mod fuzz;

use proptest::prelude::*;
use robal_eval::{Evaluation, Report};

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
            let mut bytes = REPORT.as_bytes().to_vec();
            let i = pos.index(bytes.len());
            if cut { bytes.truncate(i) } else { bytes[i] = byte }
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

#[test]
fn the_fixture_is_a_report() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("report.json");
    std::fs::write(&p, REPORT).unwrap();
    let r = Report::load(&p).unwrap();
    assert_eq!(r.images, 2_000);
}
