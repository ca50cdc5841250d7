//! The typed metrics lines against every `metrics.jsonl` committed in the repository
//! (the study runs, the docs' runs): each line parses as a record and writes back as
//! the same JSON object with the same key order, so the typed writer produces what the
//! untyped one did and every reader (curves, study timings, resume) reads old files
//! unchanged. (Not compared as bytes: serde_json's default float parser can land one
//! ulp away from the written decimal, on either path alike.)

use std::path::{Path, PathBuf};

use robal::metrics::{EpochRecord, MetricsRecord, SelectionRecord};

fn metrics_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            metrics_files(&p, out);
        } else if p.file_name().is_some_and(|n| n == "metrics.jsonl") {
            out.push(p);
        }
    }
}

#[test]
fn every_committed_metrics_line_round_trips() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for dir in ["results", "docs"] {
        metrics_files(&root.join(dir), &mut files);
    }
    assert!(files.len() >= 10, "expected the committed study runs, found {files:?}");
    let (mut epochs, mut quick) = (0, 0);
    for f in &files {
        for (i, line) in std::fs::read_to_string(f).unwrap().lines().enumerate() {
            let r: MetricsRecord =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{}:{}: {e}: {line}", f.display(), i + 1));
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(serde_json::to_value(&r).unwrap(), v, "{}:{}", f.display(), i + 1);
            assert_eq!(r.to_line().unwrap(), v.to_string(), "{}:{}", f.display(), i + 1);
            match r {
                MetricsRecord::Epoch(_) => epochs += 1,
                MetricsRecord::QuickEval { .. } => quick += 1,
                _ => {}
            }
        }
    }
    assert!(epochs > 100 && quick > 10, "{epochs} epoch lines, {quick} quick evaluations");
}

#[test]
fn each_kind_of_line_is_told_apart() {
    let epoch = r#"{"adv_batch_acc":0.5,"clean_batch_acc":null,"epoch":3,"img_per_s":100.0,"loss":1.25,"lr":0.1,"seconds":2.0}"#;
    let want = EpochRecord {
        adv_batch_acc: Some(0.5),
        clean_batch_acc: None,
        epoch: 3,
        img_per_s: 100.0,
        loss: 1.25,
        lr: 0.1,
        seconds: 2.0,
    };
    assert_eq!(serde_json::from_str::<MetricsRecord>(epoch).unwrap(), MetricsRecord::Epoch(want));
    let sel = r#"{"epoch":4,"validation_balanced_pgd":0.5}"#;
    let r: MetricsRecord = serde_json::from_str(sel).unwrap();
    assert_eq!(
        r,
        MetricsRecord::Selection(SelectionRecord {
            epoch: 4,
            validation_balanced_pgd: Some(0.5),
            ..Default::default()
        })
    );
    assert_eq!(r.to_line().unwrap(), sel);
    let stage2 = r#"{"epoch":2,"loss":0.75,"stage2":"lws"}"#;
    let r: MetricsRecord = serde_json::from_str(stage2).unwrap();
    assert!(matches!(r, MetricsRecord::Stage2 { epoch: 2, .. }), "{r:?}");
    assert_eq!(r.to_line().unwrap(), stage2);
    // A line of another shape is skipped by parse_all, not mistaken for a record.
    let text = format!("{epoch}\n{{\"epoch\":5,\"something_new\":1}}\n{sel}\n");
    let all = MetricsRecord::parse_all(&text);
    assert_eq!(all.iter().map(MetricsRecord::epoch).collect::<Vec<_>>(), [3, 4]);
    // ... but its epoch is still read, so resume can drop it with its epoch.
    assert_eq!(robal::metrics::line_epoch("{\"epoch\":5,\"something_new\":1}"), Some(5));
    assert_eq!(robal::metrics::line_epoch("{\"stage\":1}"), None);
    assert_eq!(robal::metrics::line_epoch("{\"epoch\":5,\"lo"), None);
}
