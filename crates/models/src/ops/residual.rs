//! relu(a + b) — the end of a ResNet unit — in one pass forward and backward
//! (candle's add + relu take five passes and four temporaries in backward):
//! y = max(a + b, 0), da = db = dy · [y > 0].

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{f32_slice, op_err, with_f32};

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

/// y = u + v, then max(y, 0) when `relu`.
pub(super) fn sum(u: &[f32], v: &[f32], relu: bool) -> Vec<f32> {
    let mut y = vec![0f32; u.len()];
    y.par_chunks_mut(CHUNK).zip(u.par_chunks(CHUNK).zip(v.par_chunks(CHUNK))).for_each(|(y, (a, b))| {
        if relu {
            y.iter_mut().zip(a.iter().zip(b)).for_each(|(y, (a, b))| *y = (a + b).max(0.0));
        } else {
            y.iter_mut().zip(a.iter().zip(b)).for_each(|(y, (a, b))| *y = a + b);
        }
    });
    y
}

/// The backward pass of a ReLU in place on its gradient: g <- g [y > 0].
pub(super) fn mask_positive(g: &mut [f32], y: &[f32]) {
    g.par_chunks_mut(CHUNK).zip(y.par_chunks(CHUNK)).for_each(|(g, y)| {
        g.iter_mut().zip(y).for_each(|(g, &y)| *g = if y > 0.0 { *g } else { 0.0 });
    });
}

struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "robal-add-relu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        if l1.dims() != l2.dims() {
            return Err(op_err(format!("add_relu: shapes {:?} and {:?} differ", l1.dims(), l2.dims())));
        }
        Ok((CpuStorage::F32(sum(f32_slice(s1, l1)?, f32_slice(s2, l2)?, true)), l1.shape().clone()))
    }

    fn bwd(&self, a: &Tensor, b: &Tensor, y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = with_f32(y, |ys| {
            with_f32(dy, |dys| {
                let mut g = dys.to_vec();
                mask_positive(&mut g, ys);
                Ok(g)
            })
        })?;
        let g = Tensor::from_vec(g, y.shape(), y.device())?;
        Ok((a.track_op().then(|| g.clone()), b.track_op().then_some(g)))
    }
}

/// relu(a + b) for tensors of the same shape, differentiable in both; f32 CPU tensors
/// use the fused kernel, others candle's ops.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !super::kernels_apply(a) || b.dtype() != a.dtype() || a.dims() != b.dims() {
        return (a + b)?.relu();
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
}
