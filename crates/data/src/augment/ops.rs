//! The image operations of AutoAugment, RandAugment and TrivialAugment on u8 CHW images,
//! computed as Pillow computes them (torchvision's PIL path: NEAREST, fill 0).
//! `crates/data/tests/augment.rs` checks each against Pillow's own output.

use crate::image::ImageShape;

/// One operation with its (signed) magnitude, as torchvision's `_apply_op` receives it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    /// No change.
    Identity,
    /// x_in = x + m y (shear angle atan(m), about the top-left corner).
    ShearX(f64),
    /// y_in = y + m x.
    ShearY(f64),
    /// Shift right by int(m) pixels.
    TranslateX(f64),
    /// Shift down by int(m) pixels.
    TranslateY(f64),
    /// Rotate counter-clockwise by m degrees about the centre (w/2, h/2).
    Rotate(f64),
    /// Blend with black by factor 1 + m.
    Brightness(f64),
    /// Blend with the image's grey version by factor 1 + m.
    Color(f64),
    /// Blend with the grey level of the mean luminance by factor 1 + m.
    Contrast(f64),
    /// Blend with the 3x3 smoothed image ([1 1 1; 1 5 1; 1 1 1] / 13) by factor 1 + m.
    Sharpness(f64),
    /// Keep the top int(m) bits.
    Posterize(f64),
    /// Invert pixels >= m.
    Solarize(f64),
    /// Stretch each channel's [min, max] to [0, 255].
    AutoContrast,
    /// Equalise each channel's histogram.
    Equalize,
    /// 255 - v.
    Invert,
}

/// Apply `op` to the CHW image `src` of `shape`.
pub fn apply(op: Op, src: &[u8], shape: ImageShape) -> Vec<u8> {
    match op {
        Op::Identity => src.to_vec(),
        Op::ShearX(m) => affine(src, shape, inverse_affine([0.0, 0.0], 0.0, [0.0, 0.0], [m.atan().to_degrees(), 0.0])),
        Op::ShearY(m) => affine(src, shape, inverse_affine([0.0, 0.0], 0.0, [0.0, 0.0], [0.0, m.atan().to_degrees()])),
        Op::TranslateX(m) => translate(src, shape, m.trunc(), 0.0),
        Op::TranslateY(m) => translate(src, shape, 0.0, m.trunc()),
        Op::Rotate(m) => rotate(src, shape, m),
        Op::Brightness(m) => blend(&vec![0; src.len()], src, (1.0 + m) as f32),
        Op::Color(m) => blend(&grey(src, shape), src, (1.0 + m) as f32),
        Op::Contrast(m) => {
            let mean = mean_luminance(src, shape);
            blend(&vec![mean; src.len()], src, (1.0 + m) as f32)
        }
        Op::Sharpness(m) => blend(&smooth(src, shape), src, (1.0 + m) as f32),
        Op::Posterize(m) => {
            let mask = !((1u16 << (8 - (m.trunc() as i64).clamp(1, 8) as u16)) - 1) as u8;
            src.iter().map(|&v| v & mask).collect()
        }
        Op::Solarize(t) => src.iter().map(|&v| if (v as f64) < t { v } else { 255 - v }).collect(),
        Op::AutoContrast => per_channel_lut(src, shape, autocontrast_lut),
        Op::Equalize => per_channel_lut(src, shape, equalize_lut),
        Op::Invert => src.iter().map(|&v| 255 - v).collect(),
    }
}

/// torchvision's `_get_inverse_affine_matrix`: output -> input coordinates
/// [a, b, c, d, e, f] (x_in = a x + b y + c, y_in = d x + e y + f), angles in degrees.
fn inverse_affine(center: [f64; 2], angle: f64, translate: [f64; 2], shear: [f64; 2]) -> [f64; 6] {
    let rot = angle.to_radians();
    let (sx, sy) = (shear[0].to_radians(), shear[1].to_radians());
    let a = (rot - sy).cos() / sy.cos();
    let b = -(rot - sy).cos() * sx.tan() / sy.cos() - rot.sin();
    let c = (rot - sy).sin() / sy.cos();
    let d = -(rot - sy).sin() * sx.tan() / sy.cos() + rot.cos();
    let mut m = [d, -b, 0.0, -c, a, 0.0];
    let [cx, cy] = center;
    let [tx, ty] = translate;
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty);
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty);
    m[2] += cx;
    m[5] += cy;
    m
}

/// Pillow's 16.16 fixed point: floor(v * 65536 + 0.5).
fn fix(v: f64) -> i64 {
    (v * 65536.0 + 0.5).floor() as i64
}

/// Pillow's AFFINE transform with NEAREST on a general matrix (its fixed-point path):
/// the output pixel (x, y) takes the input pixel at floor of the matrix applied to
/// (x + 0.5, y + 0.5), or 0 outside the image.
fn affine(src: &[u8], shape: ImageShape, m: [f64; 6]) -> Vec<u8> {
    if m[1] == 0.0 && m[3] == 0.0 {
        return scale_affine(src, shape, m);
    }
    let (h, w) = (shape.height, shape.width);
    let plane = h * w;
    let mut out = vec![0u8; src.len()];
    let (a0, a1, a3, a4) = (fix(m[0]), fix(m[1]), fix(m[3]), fix(m[4]));
    let mut xo = fix(m[2] + m[1] * 0.5 + m[0] * 0.5);
    let mut yo = fix(m[5] + m[4] * 0.5 + m[3] * 0.5);
    for y in 0..h {
        let (mut xx, mut yy) = (xo, yo);
        for x in 0..w {
            let (xin, yin) = (xx >> 16, yy >> 16);
            if xin >= 0 && (xin as usize) < w && yin >= 0 && (yin as usize) < h {
                let s = yin as usize * w + xin as usize;
                for c in 0..shape.channels {
                    out[c * plane + y * w + x] = src[c * plane + s];
                }
            }
            xx += a0;
            yy += a3;
        }
        xo += a1;
        yo += a4;
    }
    out
}

/// Pillow's AFFINE path for matrices without rotation or shear (ImagingScaleAffine).
fn scale_affine(src: &[u8], shape: ImageShape, m: [f64; 6]) -> Vec<u8> {
    let (h, w) = (shape.height, shape.width);
    let plane = h * w;
    let coord = |v: f64| if v < 0.0 { -1 } else { v as i64 };
    let mut xin = vec![-1i64; w];
    let mut xo = m[2] + m[0] * 0.5;
    for slot in xin.iter_mut() {
        *slot = coord(xo);
        xo += m[0];
    }
    let mut out = vec![0u8; src.len()];
    let mut yo = m[5] + m[4] * 0.5;
    for y in 0..h {
        let yi = coord(yo);
        yo += m[4];
        if yi < 0 || yi as usize >= h {
            continue;
        }
        for (x, &xi) in xin.iter().enumerate() {
            if xi >= 0 && (xi as usize) < w {
                for c in 0..shape.channels {
                    out[c * plane + y * w + x] = src[c * plane + yi as usize * w + xi as usize];
                }
            }
        }
    }
    out
}

fn translate(src: &[u8], shape: ImageShape, tx: f64, ty: f64) -> Vec<u8> {
    let center = [shape.width as f64 * 0.5, shape.height as f64 * 0.5];
    affine(src, shape, inverse_affine(center, 0.0, [tx, ty], [0.0, 0.0]))
}

/// Pillow's `Image.rotate(angle, NEAREST, expand=False)`: exact transposes at multiples
/// of 90 degrees (square images), else an affine map about (w/2, h/2).
fn rotate(src: &[u8], shape: ImageShape, angle: f64) -> Vec<u8> {
    let angle = angle.rem_euclid(360.0);
    let (h, w) = (shape.height, shape.width);
    let plane = h * w;
    let transposed = |f: &dyn Fn(usize, usize) -> (usize, usize)| {
        let mut out = vec![0u8; src.len()];
        for c in 0..shape.channels {
            for y in 0..h {
                for x in 0..w {
                    let (sx, sy) = f(x, y);
                    out[c * plane + y * w + x] = src[c * plane + sy * w + sx];
                }
            }
        }
        out
    };
    if angle == 0.0 {
        return src.to_vec();
    }
    if angle == 180.0 {
        return transposed(&|x, y| (w - 1 - x, h - 1 - y));
    }
    if w == h && angle == 90.0 {
        return transposed(&|x, y| (w - 1 - y, x));
    }
    if w == h && angle == 270.0 {
        return transposed(&|x, y| (y, h - 1 - x));
    }
    let r = -angle.to_radians();
    let round15 = |v: f64| (v * 1e15).round() / 1e15;
    let (cos, sin) = (round15(r.cos()), round15(r.sin()));
    let mut m = [cos, sin, 0.0, -sin, cos, 0.0];
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    m[2] = m[0] * -cx + m[1] * -cy + m[2] + cx;
    m[5] = m[3] * -cx + m[4] * -cy + m[5] + cy;
    affine(src, shape, m)
}

/// Pillow's `Image.blend(a, b, alpha)`: a + alpha (b - a) in float32, truncated to u8
/// (clipped to [0, 255] when alpha is outside [0, 1]).
fn blend(a: &[u8], b: &[u8], alpha: f32) -> Vec<u8> {
    let inside = (0.0..=1.0).contains(&alpha);
    a.iter()
        .zip(b)
        .map(|(&p, &q)| {
            let t = p as i32 as f32 + alpha * (q as i32 - p as i32) as f32;
            if inside {
                t as u8
            } else if t <= 0.0 {
                0
            } else if t >= 255.0 {
                255
            } else {
                t as u8
            }
        })
        .collect()
}

/// Pillow's RGB -> L: (19595 R + 38470 G + 7471 B + 0x8000) >> 16 (1 channel: itself).
fn luminance(src: &[u8], shape: ImageShape) -> Vec<u8> {
    let plane = shape.height * shape.width;
    if shape.channels < 3 {
        return src[..plane].to_vec();
    }
    (0..plane)
        .map(|i| {
            let (r, g, b) = (src[i] as u32, src[plane + i] as u32, src[2 * plane + i] as u32);
            ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8
        })
        .collect()
}

/// The luminance repeated in every channel (Pillow's `convert("L").convert("RGB")`).
fn grey(src: &[u8], shape: ImageShape) -> Vec<u8> {
    luminance(src, shape).repeat(shape.channels)
}

/// int(mean luminance + 0.5), the grey level of Pillow's Contrast.
fn mean_luminance(src: &[u8], shape: ImageShape) -> u8 {
    let l = luminance(src, shape);
    let sum: u64 = l.iter().map(|&v| v as u64).sum();
    (sum as f64 / l.len() as f64 + 0.5) as u8
}

/// Pillow's SMOOTH filter (3x3 [1 1 1; 1 5 1; 1 1 1] / 13) with the border pixels kept.
fn smooth(src: &[u8], shape: ImageShape) -> Vec<u8> {
    let (h, w) = (shape.height, shape.width);
    let plane = h * w;
    let mut out = src.to_vec();
    if h < 3 || w < 3 {
        return out;
    }
    let k =
        [1.0f32 / 13.0, 1.0 / 13.0, 1.0 / 13.0, 1.0 / 13.0, 5.0 / 13.0, 1.0 / 13.0, 1.0 / 13.0, 1.0 / 13.0, 1.0 / 13.0];
    for c in 0..shape.channels {
        let p = &src[c * plane..(c + 1) * plane];
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                let mut s = 0f32;
                for (dy, row) in k.chunks(3).enumerate() {
                    let base = (y + dy - 1) * w + x - 1;
                    s += p[base] as f32 * row[0] + p[base + 1] as f32 * row[1] + p[base + 2] as f32 * row[2];
                }
                out[c * plane + y * w + x] = if s <= 0.0 {
                    0
                } else if s >= 255.0 {
                    255
                } else {
                    (s + 0.5) as u8
                };
            }
        }
    }
    out
}

fn histogram(p: &[u8]) -> [usize; 256] {
    let mut h = [0usize; 256];
    for &v in p {
        h[v as usize] += 1;
    }
    h
}

fn per_channel_lut(src: &[u8], shape: ImageShape, lut: fn(&[usize; 256]) -> [u8; 256]) -> Vec<u8> {
    let plane = shape.height * shape.width;
    let mut out = Vec::with_capacity(src.len());
    for c in 0..shape.channels {
        let p = &src[c * plane..(c + 1) * plane];
        let table = lut(&histogram(p));
        out.extend(p.iter().map(|&v| table[v as usize]));
    }
    out
}

fn identity_lut() -> [u8; 256] {
    let mut t = [0u8; 256];
    for (i, v) in t.iter_mut().enumerate() {
        *v = i as u8;
    }
    t
}

/// Pillow's `ImageOps.autocontrast` (cutoff 0): lo, hi = first and last used level,
/// v -> clip(int(v 255 / (hi - lo) - lo 255 / (hi - lo))).
fn autocontrast_lut(h: &[usize; 256]) -> [u8; 256] {
    let lo = h.iter().position(|&n| n > 0);
    let hi = h.iter().rposition(|&n| n > 0);
    let (Some(lo), Some(hi)) = (lo, hi) else { return identity_lut() };
    if hi <= lo {
        return identity_lut();
    }
    let scale = 255.0 / (hi - lo) as f64;
    let offset = -(lo as f64) * scale;
    let mut t = [0u8; 256];
    for (i, v) in t.iter_mut().enumerate() {
        *v = ((i as f64 * scale + offset) as i64).clamp(0, 255) as u8;
    }
    t
}

/// Pillow's `ImageOps.equalize` (Pillow 13): step = (sum of used-level counts - the last
/// used level's count) // 255; lut[i] = (step / 2 + counts below i) // step.
fn equalize_lut(h: &[usize; 256]) -> [u8; 256] {
    let used: Vec<usize> = h.iter().copied().filter(|&n| n > 0).collect();
    if used.len() <= 1 {
        return identity_lut();
    }
    let step = (used.iter().sum::<usize>() - used[used.len() - 1]) / 255;
    if step == 0 {
        return identity_lut();
    }
    let mut t = [0u8; 256];
    let mut n = step / 2;
    for (i, v) in t.iter_mut().enumerate() {
        *v = (n / step).min(255) as u8;
        n += h[i];
    }
    t
}
