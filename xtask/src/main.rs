//! `cargo xtask`: robal-rs's task runner.

mod bench;
mod data;
mod eval;
mod fuzz;
mod gpu_check;
mod preset;
mod provenance;
mod study;
mod train;
mod workspace;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// A caching allocator: with glibc's, every large activation buffer goes back to the
/// OS when freed and is page-faulted (and cleared by the kernel) again at the next
/// step; mimalloc keeps and reuses it (+35% on a WRN-16-4 attack step here).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// List presets, or show one resolved (config, quirks, learning-rate schedule).
    Preset(preset::PresetArgs),
    /// Train a preset (default: RoBal on the embedded MNIST-LT) and evaluate it.
    Train(train::TrainArgs),
    /// Evaluate a checkpoint: attack suite, per-class metrics, robustness audit, report and plots.
    Eval(Box<eval::EvalArgs>),
    /// Combine the shard files of a `--shard K/N` evaluation into one report and audit.
    Merge(eval::MergeArgs),
    /// Put several evaluated runs side by side (paper-style tables) and draw comparison plots;
    /// given a study plan (.toml), aggregate its runs over seeds (mean ± sd) with plots.
    Report(eval::ReportArgs),
    /// Run a study plan (presets x seeds, each trained and evaluated, resumable), here or as a
    /// Slurm array job plus a merge job.
    Study(study::StudyArgs),
    /// Run every reader's property tests at N cases each (default 10,000), each case under a
    /// time limit.
    Fuzz(fuzz::FuzzArgs),
    /// Images/s and peak memory of the attack, train and infer steps, beside PyTorch.
    Bench(bench::BenchArgs),
    /// Compare CUDA against the CPU (logits, input gradients, a training step, PGD-20), then bench.
    GpuCheck(gpu_check::GpuCheckArgs),
}

fn main() -> Result<()> {
    // A write past a file-size limit (`ulimit -f`, a quota) then fails with EFBIG, which
    // every writer reports naming its file, and the atomic writes leave the last good
    // files in place; by default SIGXFSZ would kill the process mid-write without a word.
    // SAFETY: setting a signal's disposition to SIG_IGN at start-up, before any thread
    // exists, has no preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    match Cli::parse().command {
        Command::Data(args) => data::run(args),
        Command::Preset(args) => preset::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(*args),
        Command::Merge(args) => eval::merge(args),
        Command::Report(args) => eval::report(args),
        Command::Study(args) => study::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Bench(args) => bench::run(args),
        Command::GpuCheck(args) => gpu_check::run(args),
    }
}
