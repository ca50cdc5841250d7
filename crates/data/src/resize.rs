//! Pillow's bilinear resize of u8 images (`Image.resize((w, h), BILINEAR)`), the op
//! torchvision's `transforms.Resize((h, w))` runs on PIL images: TAET's notebook trains
//! on CIFAR images resized from 32 to 224 px.

use rayon::prelude::*;

use crate::error::{invalid, Result};
use crate::image::ImageShape;

/// Fractional bits of Pillow's fixed-point coefficients for 8-bit images (32 - 8 - 2).
const PRECISION_BITS: u32 = 22;

/// The taps of one output coordinate: first input index and fixed-point weights.
struct Taps {
    first: usize,
    weights: Vec<i32>,
}

/// Pillow's coefficients for resizing a length `n_in` to `n_out` with the triangle
/// filter: scale s = n_in / n_out, support r = max(s, 1); output i is centred at
/// c = (i + 1/2) s in input coordinates and reads inputs j in
/// \[trunc(c - r + 1/2), trunc(c + r + 1/2)) (clipped to the image) with weight
/// max(0, 1 - |(j - c + 1/2) / max(s, 1)|), normalised to sum 1, then rounded to
/// round(w 2^22).
fn taps(n_in: usize, n_out: usize) -> Vec<Taps> {
    let scale = n_in as f64 / n_out as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale;
    (0..n_out)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let first = ((center - support + 0.5) as i64).max(0) as usize;
            let last = ((center + support + 0.5) as i64).min(n_in as i64) as usize;
            let raw: Vec<f64> = (first..last)
                .map(|j| {
                    let t = ((j as f64 - center + 0.5) / filter_scale).abs();
                    if t < 1.0 {
                        1.0 - t
                    } else {
                        0.0
                    }
                })
                .collect();
            let total: f64 = raw.iter().sum();
            let weights = raw
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    (0.5 + w * f64::from(1u32 << PRECISION_BITS)) as i32
                })
                .collect();
            Taps { first, weights }
        })
        .collect()
}

/// One fixed-point dot product, rounded and clipped to u8 as Pillow does.
fn tap(values: impl Iterator<Item = u8>, weights: &[i32]) -> u8 {
    let mut acc: i64 = 1 << (PRECISION_BITS - 1);
    // Weights first: `values` may be an unbounded lazy map that must not be read past them.
    for (&w, v) in weights.iter().zip(values) {
        acc += i64::from(v) * i64::from(w);
    }
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `src` (u8 CHW of `shape`) resized to `height` x `width` as Pillow's bilinear resize:
/// a horizontal pass rounded to u8, then a vertical pass, each channel on its own.
pub fn resize_bilinear(src: &[u8], shape: ImageShape, height: usize, width: usize) -> Result<Vec<u8>> {
    if src.len() != shape.numel() {
        return Err(invalid("resize", format!("{} bytes for an image of shape {shape:?}", src.len())));
    }
    if height == 0 || width == 0 {
        return Err(invalid("resize", format!("target size {height} x {width}: expected at least 1 x 1")));
    }
    let (h, w) = (shape.height, shape.width);
    let horizontal = taps(w, width);
    let vertical = taps(h, height);
    let mut out = vec![0u8; shape.channels * height * width];
    let mut rows = vec![0u8; h * width];
    for c in 0..shape.channels {
        let plane = &src[c * h * w..(c + 1) * h * w];
        // Pillow skips a pass whose size does not change.
        if width != w {
            for y in 0..h {
                for (x, t) in horizontal.iter().enumerate() {
                    rows[y * width + x] = tap(plane[y * w + t.first..].iter().copied(), &t.weights);
                }
            }
        } else {
            rows.copy_from_slice(plane);
        }
        let dst = &mut out[c * height * width..(c + 1) * height * width];
        for (y, t) in vertical.iter().enumerate() {
            for x in 0..width {
                dst[y * width + x] = if height != h {
                    tap((t.first..).map(|r| rows[r * width + x]), &t.weights)
                } else {
                    rows[y * width + x]
                };
            }
        }
    }
    Ok(out)
}

/// Every image of `pixels` (n images of `shape`, u8 CHW, one after another) resized,
/// in parallel.
pub fn resize_all(pixels: &[u8], shape: ImageShape, height: usize, width: usize) -> Result<Vec<u8>> {
    let out_numel = shape.channels * height * width;
    let mut out = vec![0u8; pixels.len() / shape.numel().max(1) * out_numel];
    out.par_chunks_mut(out_numel).zip(pixels.par_chunks(shape.numel())).try_for_each(|(dst, src)| -> Result<()> {
        dst.copy_from_slice(&resize_bilinear(src, shape, height, width)?);
        Ok(())
    })?;
    Ok(out)
}
