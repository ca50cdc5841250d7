//! Property tests: configs built from arbitrary text and arbitrary `--set` overrides
//! parse or fail with an error naming their origin, and never panic.

#[path = "../../../tests/support/fuzz.rs"]
mod fuzz;

use proptest::prelude::*;
use robal::TrainConfig;

const DEFAULT: &str = include_str!("../../../configs/mnist-lt-robal.toml");

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz::cases(256), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_is_rejected_naming_the_file(text in "\\PC{0,300}") {
        fuzz::within(move || -> Result<(), TestCaseError> {
            if let Err(e) = TrainConfig::from_toml(&text, "fuzz.toml", &[]) {
                prop_assert!(e.to_string().contains("fuzz.toml"), "{}", e);
            }
            Ok(())
        })?;
    }

    #[test]
    fn arbitrary_overrides_parse_or_name_the_problem(
        key in prop::sample::select(vec![
            "train.epochs", "train.mode", "train.lr", "data.name", "data.policy", "attack.eps", "attack.random_start",
            "attack.class_budget", "awp", "reat", "model.head", "loss", "train.reweight", "data.validation", "eval.steps",
            "train.bn_passes", "train.harl_weights", "train.lr_rule", "etf", "etf.weight", "no.such.key", "train",
        ]),
        value in prop_oneof![
            "-?[0-9]{1,12}(\\.[0-9]{0,6})?".prop_map(|s| s),
            "\"[a-z-]{0,12}\"".prop_map(|s| s),
            Just("nan".to_string()), Just("inf".to_string()), Just("[]".to_string()), Just("{}".to_string()),
            Just("{ kind = \"rand-augment\", n = 0, m = 99 }".to_string()),
            Just("{ gamma = -1e300 }".to_string()), Just("[1e308, -1e308, 0]".to_string()),
            "\\PC{0,20}".prop_map(|s| s),
        ],
    ) {
        fuzz::within(move || -> Result<(), TestCaseError> {
            let o = format!("{key}={value}");
            match TrainConfig::from_toml(DEFAULT, "mnist-lt-robal.toml", std::slice::from_ref(&o)) {
                Ok(cfg) => prop_assert!(cfg.validate().is_ok()),
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(msg.contains("mnist-lt-robal.toml") || msg.contains("--set"), "{}: {}", o, msg);
                }
            }
            Ok(())
        })?;
    }
}
