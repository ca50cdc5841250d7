//! A long-tailed subset and the batch pipeline: the embedded MNIST-LT test split (300
//! digits per class) cut to an exp profile with ratio 0.1 (300 down to 30 per class),
//! and one epoch of shuffled, augmented batches as candle tensors.
//!
//!     cargo run -p robal-data --example long_tail

use std::sync::Arc;

use robal_data::{load_embedded, long_tailed, Dataset, Loader, LoaderConfig, Profile, Selection, Split};

fn main() -> robal_data::Result<()> {
    let balanced = load_embedded("mnist-lt", Split::Test)?;
    let lt = long_tailed(&balanced, Profile::Exp { ratio: 0.1 }, Selection::Seeded { seed: 0 })?;
    println!("{} of {} images; per class {:?}", lt.len(), balanced.len(), lt.classes().train_counts());
    let loader = Loader::new(Arc::new(lt), LoaderConfig::train(32, 0), candle_core::Device::Cpu)?;
    for (i, batch) in loader.epoch(0).enumerate() {
        let batch = batch?;
        println!("batch {i}: images {:?}, labels {:?}", batch.images.dims(), batch.labels.dims());
    }
    Ok(())
}
