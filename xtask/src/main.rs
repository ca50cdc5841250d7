//! `cargo xtask`: robal-rs's task runner.

mod data;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "robal-rs tasks: data sets, training, evaluation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Download data sets, rebuild the embedded set, describe a data set.
    Data(data::DataArgs),
    /// Train a preset (default: RoBal on the embedded MNIST-LT) and evaluate it.
    Train(train::TrainArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Data(args) => data::run(args),
        Command::Train(args) => train::run(args),
    }
}
