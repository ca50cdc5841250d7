//! Time one convolution layer's three kernels (forward, input gradient, weight
//! gradient) against candle's own ops, on a layer shape of your choice:
//!
//! `cargo run --release -p robal-models --example conv_layer -- [N C H O k stride pad] [--no-candle]`
//! (default: 64 64 32 64 3 1 1, a WideResNet-16-4 block-1 layer at batch 64).

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use robal_models::ops::conv2d;

fn ms(f: &mut dyn FnMut() -> candle_core::Result<()>) -> candle_core::Result<f64> {
    f()?;
    let (start, mut n) = (Instant::now(), 0);
    while n < 3 || start.elapsed().as_secs_f64() < 1.0 {
        f()?;
        n += 1;
    }
    Ok(1e3 * start.elapsed().as_secs_f64() / n as f64)
}

fn main() -> candle_core::Result<()> {
    let a: Vec<usize> = std::env::args().skip(1).filter_map(|s| s.parse().ok()).collect();
    let [n, c, h, o, k, stride, pad] = <[usize; 7]>::try_from(a).unwrap_or([64, 64, 32, 64, 3, 1, 1]);
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::rand(0f32, 1.0, (n, c, h, h), &dev)?)?;
    let w = Var::from_tensor(&(Tensor::rand(0f32, 1.0, (o, c, k, k), &dev)? - 0.5)?)?;
    println!("x ({n}, {c}, {h}, {h}), w ({o}, {c}, {k}, {k}), stride {stride}, padding {pad}");
    let sides: &[bool] = if std::env::args().any(|a| a == "--no-candle") { &[false] } else { &[false, true] };
    for &candle in sides {
        // robal-rs's kernel, or candle's own conv2d.
        let conv = |x: &Tensor, w: &Tensor, stride: usize, pad: usize| {
            if candle {
                x.conv2d(w, pad, stride, 1, 1)
            } else {
                conv2d(x, w, stride, pad)
            }
        };
        let fwd = ms(&mut || conv(x.as_tensor(), w.as_tensor(), stride, pad).map(|_| ()))?;
        // Forward + input gradient only (frozen weight), forward + weight gradient only
        // (frozen input), and forward + backward of a loss that needs no gradient kernel
        // (the cost of autograd's own bookkeeping, subtracted from both).
        let (wf, xf) = (w.as_tensor().detach(), x.as_tensor().detach());
        let r = Tensor::rand(0f32, 1.0, conv(&xf, &wf, stride, pad)?.shape(), &dev)?;
        let r = Var::from_tensor(&r)?;
        let step =
            |x: &Tensor, w: &Tensor| (conv(x, w, stride, pad)? * r.as_tensor())?.sum_all()?.backward().map(|_| ());
        let base = ms(&mut || step(&xf, &wf))?;
        let input = ms(&mut || step(x.as_tensor(), &wf))?;
        let weight = ms(&mut || step(&xf, w.as_tensor()))?;
        println!(
            "{:<12} forward {fwd:7.1} ms   input gradient {:7.1} ms   weight gradient {:7.1} ms",
            if candle { "candle ops" } else { "robal-models" },
            input - base,
            weight - base
        );
    }
    Ok(())
}
