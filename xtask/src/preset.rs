//! `cargo xtask preset list|show`: what a preset does, resolved.

use anyhow::Result;
use clap::{Args, Subcommand};
use robal::TrainConfig;

#[derive(Args)]
pub struct PresetArgs {
    #[command(subcommand)]
    command: PresetCommand,
}

#[derive(Subcommand)]
enum PresetCommand {
    /// The preset names in configs/.
    List,
    /// Print a preset's fully resolved config (defaults filled in) and the reference-code
    /// quirks it turns on; with --schedule, only its learning rate per epoch.
    Show {
        /// Preset name (configs/NAME.toml).
        name: String,
        /// Print one line per epoch, `epoch lr`, epochs 0-based as the trainer counts them.
        #[arg(long)]
        schedule: bool,
        /// Override a field first, as `cargo xtask train --set` does (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Print each field the preset sets with the upstream line it comes from
        /// (configs/provenance/*.tsv) instead of the resolved config.
        #[arg(long, conflicts_with_all = ["schedule", "set"])]
        sources: bool,
    },
    /// Check the provenance tables (configs/provenance/*.tsv) against the presets: every
    /// traced value equals the preset's, every field of a traced preset is traced, every
    /// paper preset is traced.
    Verify {
        /// The presets folder (default: the workspace's configs/).
        #[arg(long, value_name = "DIR")]
        configs: Option<std::path::PathBuf>,
    },
}

/// `x` with the float noise of repeated products rounded away (0.1 * 0.1 prints 0.01).
fn short(x: f64) -> String {
    let r: f64 = format!("{x:.12e}").parse().unwrap_or(x);
    if r != 0.0 && r.abs() < 1e-4 {
        format!("{r:e}")
    } else {
        format!("{r}")
    }
}

pub fn run(a: PresetArgs) -> Result<()> {
    match a.command {
        PresetCommand::List => crate::workspace::presets().iter().for_each(|p| println!("{p}")),
        PresetCommand::Verify { configs } => {
            crate::provenance::verify(&configs.unwrap_or_else(|| crate::workspace::root().join("configs")))?
        }
        PresetCommand::Show { name, sources: true, .. } => show_sources(&name)?,
        PresetCommand::Show { name, schedule, set, .. } => {
            let path = crate::workspace::preset(&name)?;
            let cfg = TrainConfig::load(&path, &set)?;
            if schedule {
                for epoch in 0..cfg.train.epochs {
                    println!("{epoch} {}", short(cfg.train.learning_rate(epoch, 0.0)));
                }
                return Ok(());
            }
            println!("# {} resolved (defaults filled in)\n", path.display());
            println!("{}", toml::to_string_pretty(&cfg)?);
            let quirks = cfg.quirks();
            if quirks.is_empty() {
                println!("# quirks: none (the clean behaviour)");
            } else {
                println!("# quirks on:");
                quirks.iter().for_each(|q| println!("#   {q}"));
            }
        }
    }
    Ok(())
}

/// Each field the preset file sets, with its source and note from the provenance tables.
fn show_sources(name: &str) -> Result<()> {
    let path = crate::workspace::preset(name)?;
    let file: toml::Table = std::fs::read_to_string(&path)?.parse()?;
    let rows = crate::provenance::rows_of(&crate::workspace::root().join("configs"), name)?;
    println!("# {}: each field and where it comes from (configs/provenance/)\n", path.display());
    for (key, value) in robal::config::toml_leaves(&file) {
        let line = format!("{key} = {value}");
        match rows.get(&key) {
            Some(r) if r.note.is_empty() => println!("{line:<48} # {}", r.source),
            Some(r) => println!("{line:<48} # {} | {}", r.source, r.note),
            None if crate::provenance::UNTRACED.contains(&key.as_str()) => {
                println!("{line:<48} # (not part of the experiment)")
            }
            None => println!("{line:<48} # NOT TRACED"),
        }
    }
    Ok(())
}
