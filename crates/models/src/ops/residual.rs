//! relu(a + b) — the end of a ResNet unit — in one pass forward and backward
//! (candle's add + relu take five passes and four temporaries in backward):
//! y = max(a + b, 0), da = db = dy · [y > 0].

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{f32_slice, op_err, with_f32};

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "robal-add-relu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        if l1.dims() != l2.dims() {
            return Err(op_err(format!("add_relu: shapes {:?} and {:?} differ", l1.dims(), l2.dims())));
        }
        let (a, b) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let mut y = vec![0f32; a.len()];
        y.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK))).for_each(|(y, (a, b))| {
            y.iter_mut().zip(a.iter().zip(b)).for_each(|(y, (a, b))| *y = (a + b).max(0.0));
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, a: &Tensor, b: &Tensor, y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = with_f32(y, |ys| {
            with_f32(dy, |dys| {
                let mut g = vec![0f32; ys.len()];
                g.par_chunks_mut(CHUNK).zip(ys.par_chunks(CHUNK).zip(dys.par_chunks(CHUNK))).for_each(|(g, (y, d))| {
                    g.iter_mut().zip(y.iter().zip(d)).for_each(|(g, (&y, &d))| *g = if y > 0.0 { d } else { 0.0 });
                });
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
