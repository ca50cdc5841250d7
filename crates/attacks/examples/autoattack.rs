//! Standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square) on any differentiable
//! classifier: here a fixed linear model over 4x4 greyscale images with 10 classes,
//! whose inputs sit at different distances from its decision boundaries, so some
//! points break at eps 0.05 and some do not. Prints which attack broke each point.
//!
//!     cargo run --release -p robal-attacks --example autoattack

use candle_core::{Device, Tensor};
use robal_attacks::{AutoAttack, Model, Suite};

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    // Class c's weight vector: a fixed pattern over the 16 pixels.
    let w: Vec<f32> = (0..10 * 16).map(|i| ((i * 7 % 23) as f32 / 11.0 - 1.0) * 0.5).collect();
    let w = Tensor::from_vec(w, (10, 16), &dev)?;
    let model = |x: &Tensor| x.flatten_from(1)?.matmul(&w.t()?);
    // 20 images in [0, 1]; each is labelled with the model's own prediction, so every
    // point starts correctly classified and only its margin decides its robustness.
    let x: Vec<f32> = (0..20 * 16).map(|i| ((i * 37 % 101) as f32) / 100.0).collect();
    let x = Tensor::from_vec(x, (20, 1, 4, 4), &dev)?;
    let y = model.logits(&x)?.argmax(1)?;
    let result = AutoAttack::new(Suite::Standard, 0.05).evaluate(&model, &x, &y, 0)?;
    for (i, b) in result.broken_by.iter().enumerate() {
        println!("image {i:2}: {}", b.as_deref().unwrap_or("robust"));
    }
    let robust = result.robust().iter().filter(|&&r| r).count();
    println!("robust accuracy at eps 0.05: {robust}/20");
    Ok(())
}
