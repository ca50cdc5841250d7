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
        PresetCommand::Show { name, schedule, set } => {
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
