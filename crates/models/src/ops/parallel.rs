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
    let (threads, chunk) = (rayon::current_num_threads(), chunk.max(1));
    let n = out.len().div_ceil(chunk);
    if n >= threads || threads == 1 {
        // One contiguous run of ceil(n / threads) chunks per thread, with one scratch
        // buffer each. (Not `with_min_len(ceil(n / threads))` on the chunks: rayon then
        // refuses to split an odd count in two, and an odd batch ran on one thread.)
        let per = n.div_ceil(threads).max(1);
        out.par_chunks_mut(chunk * per).enumerate().for_each(|(t, run)| {
            let mut buf = uninit_vec(scratch);
            for (k, o) in run.chunks_mut(chunk).enumerate() {
                body(t * per + k, o, &mut buf, 1);
            }
        });
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use super::per_image;

    #[test]
    fn per_image_splits_odd_counts_over_the_threads_and_visits_each_chunk_once() {
        // 2 threads, 7 chunks of 3 entries (and 93 chunks: the batch that used to run on
        // one thread). The first chunk of each run waits until a second thread has
        // started a run: with one run per thread that happens at once; a count left in
        // one run would wait out the deadline.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for n in [7usize, 93] {
            let mut out = vec![0f32; 3 * n];
            let seen = Mutex::new(Vec::new());
            let started = AtomicUsize::new(0);
            let met = AtomicUsize::new(0);
            pool.install(|| {
                per_image(&mut out, 3, 1, |i, o, _, threads| {
                    assert_eq!(threads, 1, "one GEMM thread inside a parallel run");
                    if i.is_multiple_of(n.div_ceil(2)) {
                        started.fetch_add(1, Ordering::SeqCst);
                        let deadline = Instant::now() + Duration::from_secs(10);
                        while started.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
                            std::hint::spin_loop();
                        }
                        if started.load(Ordering::SeqCst) >= 2 {
                            met.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    o.fill(i as f32);
                    seen.lock().unwrap().push(i);
                });
            });
            assert_eq!(met.load(Ordering::SeqCst), 2, "n = {n}: the two runs did not overlap");
            let mut seen = seen.into_inner().unwrap();
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n = {n}: every chunk once");
            assert!(out.chunks(3).enumerate().all(|(i, c)| c.iter().all(|&v| v == i as f32)), "n = {n}");
        }
    }
}
