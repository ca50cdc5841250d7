//! The evaluation report: per attack overall, balanced and per-class metrics,
//! shot groups, the worst case over the suite, and the audit; written as
//! `report.json` and `report.md`.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::audit::{AuditResult, Verdict};
use crate::error::{file_err, Result};
use crate::metrics::{balanced_accuracy, decile_groups, shot_groups, Confusion, GroupMean};
use crate::suite::{AttackOutcome, AttackSettings};

/// The evaluation report an evaluation folder holds; written last, so its presence
/// means the evaluation is complete.
pub const REPORT_FILE: &str = "report.json";
/// The report as a Markdown page.
pub const REPORT_MD_FILE: &str = "report.md";
/// The evaluated model's description (architecture, head, checkpoint integrity).
pub const MODEL_INFO_FILE: &str = "model_info.json";
/// Metrics of one attack (or of the worst case over the suite).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackReport {
    /// Name, e.g. `clean`, `pgd-20`, `worst-case`.
    pub name: String,
    /// Overall accuracy.
    #[serde(with = "crate::nan::one")]
    pub accuracy: f64,
    /// Mean recall over classes present in the test set.
    #[serde(with = "crate::nan::one")]
    pub balanced_accuracy: f64,
    /// Recall of each class, in class order.
    #[serde(with = "crate::nan::many")]
    pub per_class: Vec<f64>,
    /// Precision of each class.
    #[serde(with = "crate::nan::many")]
    pub precision: Vec<f64>,
    /// F1 of each class.
    #[serde(with = "crate::nan::many")]
    pub f1: Vec<f64>,
    /// Many / medium / few shot groups (by training count).
    pub groups: Vec<GroupMean>,
    /// Ten groups of ten classes (100-class sets only).
    pub deciles: Vec<GroupMean>,
    /// Per-example correctness after the attack.
    pub correct: Vec<bool>,
    /// Wall-clock seconds (0 for the worst case).
    pub seconds: f64,
    /// Images per second.
    pub img_per_s: f64,
}

/// A full evaluation report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The checkpoint evaluated.
    pub checkpoint: String,
    /// Data set description.
    pub data: String,
    /// Images evaluated.
    pub images: usize,
    /// Attack settings.
    pub settings: AttackSettings,
    /// Head used (e.g. `cosine s=10`, with post-hoc tau).
    pub head: String,
    /// Class names.
    pub class_names: Vec<String>,
    /// Training images per class.
    pub train_counts: Vec<usize>,
    /// One entry per attack, clean first.
    pub attacks: Vec<AttackReport>,
    /// Every example counts only if it survives every attack (clean included).
    pub worst_case: AttackReport,
    /// The audit's measurements and flags.
    pub audit: AuditResult,
}

fn attack_report(name: &str, labels: &[u32], predicted: &[u32], train_counts: &[usize], seconds: f64) -> AttackReport {
    let conf = Confusion::new(train_counts.len(), labels, predicted);
    let m = conf.class_metrics();
    AttackReport {
        name: name.to_string(),
        accuracy: conf.accuracy(),
        balanced_accuracy: balanced_accuracy(&m.recall),
        groups: shot_groups(&m.recall, train_counts),
        deciles: decile_groups(&m.recall),
        per_class: m.recall,
        precision: m.precision,
        f1: m.f1,
        correct: labels.iter().zip(predicted).map(|(l, p)| l == p).collect(),
        seconds,
        img_per_s: if seconds > 0.0 { labels.len() as f64 / seconds } else { 0.0 },
    }
}

impl Report {
    /// Assemble a report from the suite's outcomes. The worst case takes, for each
    /// example, the prediction of the first attack that fooled it (else the label).
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        checkpoint: &str,
        data: &str,
        head: &str,
        settings: AttackSettings,
        class_names: Vec<String>,
        train_counts: Vec<usize>,
        labels: &[u32],
        outcomes: &[AttackOutcome],
        audit: AuditResult,
    ) -> Self {
        let attacks: Vec<AttackReport> =
            outcomes.iter().map(|o| attack_report(&o.name, labels, &o.predicted, &train_counts, o.seconds)).collect();
        let worst: Vec<u32> = (0..labels.len())
            .map(|i| outcomes.iter().map(|o| o.predicted[i]).find(|&p| p != labels[i]).unwrap_or(labels[i]))
            .collect();
        let worst_case = attack_report("worst-case", labels, &worst, &train_counts, 0.0);
        Self {
            checkpoint: checkpoint.to_string(),
            data: data.to_string(),
            images: labels.len(),
            settings,
            head: head.to_string(),
            class_names,
            train_counts,
            attacks,
            worst_case,
            audit,
        }
    }

    /// A RobustBench-style model card (`model_info.json`): clean and AutoAttack
    /// accuracy in percent as strings with two decimals, the threat model, eps, the
    /// number of test points and the attack version. `autoattack_acc` is the standard
    /// AutoAttack when it ran, else the paper's APGD-CE + APGD-T subset (named in
    /// `attack`), else absent; balanced (class-mean) figures beside them.
    pub fn model_info(&self) -> serde_json::Value {
        let clean = self.attacks.first();
        let aa = ["autoattack", "aa-apgd-ce-t"].iter().find_map(|n| self.attacks.iter().find(|a| a.name == *n));
        let two = |v: f64| format!("{:.2}", 100.0 * v);
        let eps_255 = self.settings.eps * 255.0;
        serde_json::json!({
            "name": self.checkpoint,
            "dataset": self.data,
            "threat_model": "Linf",
            "eps": if (eps_255 - eps_255.round()).abs() < 1e-6 { format!("{}/255", eps_255.round()) } else { format!("{}", self.settings.eps) },
            "number_test_points": self.images,
            "clean_acc": clean.map(|c| two(c.accuracy)),
            "autoattack_acc": aa.map(|a| two(a.accuracy)),
            "balanced_clean_acc": clean.map(|c| two(c.balanced_accuracy)),
            "balanced_autoattack_acc": aa.map(|a| two(a.balanced_accuracy)),
            "attack": aa.map(|a| if a.name == "autoattack" { "AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square)" } else { "AutoAttack subset APGD-CE + APGD-T (the RoBal paper's)" }),
            "attack_version": format!("robal-eval {} {}", env!("CARGO_PKG_VERSION"), aa.map(|a| if a.name == "autoattack" { "standard" } else { "apgd-ce-t" }).unwrap_or("none")),
            "head": self.head,
            "worst_case_acc": two(self.worst_case.accuracy),
        })
    }

    /// Read a `report.json` ([`REPORT_FILE`]).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| file_err(path, format!("cannot read report: {e}")))?;
        serde_json::from_str(&text).map_err(|e| file_err(path, format!("not a robal-eval report.json: {e}")))
    }

    /// Write `report.md`, `model_info.json` and then `report.json` into `dir`, each
    /// atomically: `report.json` comes last, so its presence means the others are there.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        robal_data::write_atomic(&dir.join(REPORT_MD_FILE), self.markdown().as_bytes())?;
        let info = serde_json::to_string_pretty(&self.model_info()).map_err(|e| file_err(dir, e))?;
        robal_data::write_atomic(&dir.join(MODEL_INFO_FILE), info.as_bytes())?;
        let json = serde_json::to_string_pretty(self).map_err(|e| file_err(dir, e))?;
        robal_data::write_atomic(&dir.join(REPORT_FILE), json.as_bytes())?;
        Ok(())
    }

    fn rows(&self) -> impl Iterator<Item = &AttackReport> {
        self.attacks.iter().chain(std::iter::once(&self.worst_case))
    }

    /// The paper-style summary table (one row per attack; overall, balanced and group
    /// accuracies in percent), as Markdown.
    pub fn summary_table(&self) -> String {
        let groups: Vec<String> = self.worst_case.groups.iter().map(|g| g.name.clone()).collect();
        let mut s = format!("| attack | overall | balanced | {} | img/s |\n", groups.join(" | "));
        let _ = writeln!(s, "|---|---:|---:|{}---:|", "---:|".repeat(groups.len()));
        for r in self.rows() {
            let g: Vec<String> = r.groups.iter().map(|g| pct(g.mean)).collect();
            let speed = if r.img_per_s > 0.0 { format!("{:.1}", r.img_per_s) } else { "-".into() };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {speed} |",
                r.name,
                pct(r.accuracy),
                pct(r.balanced_accuracy),
                g.join(" | ")
            );
        }
        s
    }

    /// The whole report as Markdown: summary, audit, groups of ten, per-class table.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "# Evaluation of {}\n\n{} images of {}; head {}; eps {:.4} ({}/255), {} steps of {:.4}, random start {}, seed {}.\n\n",
            self.checkpoint,
            self.images,
            self.data,
            self.head,
            self.settings.eps,
            (self.settings.eps * 255.0 * 100.0).round() / 100.0,
            self.settings.steps,
            self.settings.step_size,
            if self.settings.random_start { "uniform" } else { "off" },
            self.settings.seed
        );
        s.push_str(&self.summary_table());
        s.push_str("\n## Audit\n\n");
        if self.audit.flags.is_empty() {
            let _ = writeln!(s, "No check fired ({} images in the sweeps).", self.audit.images);
        }
        for f in &self.audit.flags {
            let _ = writeln!(s, "- **{}** ({}): {}", f.check, verdict_word(f.severity), f.message);
        }
        if !self.audit.checks.is_empty() {
            s.push_str("\n| check | verdict | p-value | measured |\n|---|---|---:|---|\n");
            for c in &self.audit.checks {
                let p = c.p_value.map(|p| format!("{p:.2e}")).unwrap_or_else(|| "-".into());
                let _ = writeln!(
                    s,
                    "| {} | {} | {p} | {} |",
                    c.check,
                    verdict_word(c.verdict),
                    c.message.replace('|', "/")
                );
            }
        }
        if !self.audit.scale_sweep.is_empty() {
            let sweep: Vec<String> =
                self.audit.scale_sweep.iter().map(|(f, _, r)| format!("x{f:e}: {}", pct(*r))).collect();
            let _ = writeln!(s, "\nPGD robust accuracy by logit factor: {}.", sweep.join(", "));
            let steps: Vec<String> = self.audit.steps_sweep.iter().map(|(k, r)| format!("{k}: {}", pct(*r))).collect();
            let _ = writeln!(s, "By PGD steps: {}.", steps.join(", "));
            let eps: Vec<String> =
                self.audit.eps_sweep.iter().map(|(e, r)| format!("{:.1}/255: {}", e * 255.0, pct(*r))).collect();
            let _ = writeln!(s, "By eps: {}.", eps.join(", "));
            let _ = writeln!(s, "Examples with a zero input gradient: {}.", pct(self.audit.zero_grad_share));
        }
        if !self.worst_case.deciles.is_empty() {
            s.push_str("\n## Groups of ten classes (recall, %)\n\n| attack |");
            for g in &self.worst_case.deciles {
                let _ = write!(s, " {} |", g.name);
            }
            let _ = writeln!(s, "\n|---|{}", "---:|".repeat(self.worst_case.deciles.len()));
            for r in self.rows() {
                let v: Vec<String> = r.deciles.iter().map(|g| pct(g.mean)).collect();
                let _ = writeln!(s, "| {} | {} |", r.name, v.join(" | "));
            }
        }
        s.push_str("\n## Per class (recall / precision / F1, %)\n\n| class | train |");
        for r in self.rows() {
            let _ = write!(s, " {} |", r.name);
        }
        let _ = writeln!(s, "\n|---|---:|{}", "---|".repeat(self.attacks.len() + 1));
        for (c, name) in self.class_names.iter().enumerate() {
            let _ = write!(s, "| {c} {name} | {} |", self.train_counts.get(c).copied().unwrap_or(0));
            for r in self.rows() {
                let _ = write!(s, " {} / {} / {} |", pct(r.per_class[c]), pct(r.precision[c]), pct(r.f1[c]));
            }
            s.push('\n');
        }
        s
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Info => "info",
        Verdict::Warning => "warning",
    }
}

/// A fraction as a percentage with one decimal, `-` for NaN.
pub fn pct(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{:.1}", 100.0 * v)
    }
}
