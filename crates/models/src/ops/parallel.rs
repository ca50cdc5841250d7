//! How the convolution kernels (im2col + GEMM and Winograd) split work over threads,
//! and their scratch buffers.

use rayon::prelude::*;

/// Run `body(index, out_chunk, scratch, gemm_threads)` for every chunk of `out` (an
/// image, or a group of images): chunks in parallel when there are at least as many as
/// threads, else one by one with a multi-threaded GEMM.
pub(super) fn per_image(
    out: &mut [f32],
    chunk: usize,
    scratch: usize,
    body: impl Fn(usize, &mut [f32], &mut [f32], usize) + Sync,
) {
    let threads = rayon::current_num_threads();
    let n = out.len().div_ceil(chunk.max(1));
    if n >= threads || threads == 1 {
        // One contiguous run of images per thread: one scratch buffer each, not one per
        // rayon split.
        out.par_chunks_mut(chunk)
            .enumerate()
            .with_min_len(n.div_ceil(threads))
            .for_each_init(|| uninit_vec(scratch), |buf, (i, o)| body(i, o, buf, 1));
    } else {
        let mut buf = uninit_vec(scratch);
        for (i, o) in out.chunks_mut(chunk).enumerate() {
            body(i, o, &mut buf, threads);
        }
    }
}

/// Σ_k share(images_k, gemm_threads) over a fixed split of the images 0..n into one
/// contiguous run per thread, computed in parallel and summed in order: the result
/// does not depend on how rayon schedules the work, so training is reproducible (bit
/// for bit, for a given number of threads). `gemm_threads` is what each share may use.
pub(super) fn sum_over_shares(
    n: usize,
    len: usize,
    share: impl Fn(std::ops::Range<usize>, usize) -> Vec<f32> + Sync,
) -> Vec<f32> {
    let threads = rayon::current_num_threads();
    let groups = threads.min(n).max(1);
    let per = n.div_ceil(groups);
    let gemm_threads = if groups == 1 { threads } else { 1 };
    let partials: Vec<Vec<f32>> =
        (0..groups).into_par_iter().map(|k| share(k * per..((k + 1) * per).min(n), gemm_threads)).collect();
    let mut parts = partials.into_iter();
    let mut total = parts.next().unwrap_or_else(|| vec![0f32; len]);
    for p in parts {
        total.iter_mut().zip(&p).for_each(|(t, v)| *t += v);
    }
    total
}

/// A buffer that is fully written before it is read (skips zeroing the output of
/// every op; fresh pages still fault in once).
pub(super) fn uninit_vec(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: f32 has no invalid bit patterns; every caller overwrites all n entries
    // before reading any (im2col writes every entry, matmul without accumulate too).
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(n)
    };
    v
}
