//! ResNet-18 and PreAct-ResNet-18 in their CIFAR form (3x3 stem, no max-pool), and
//! ResNet-18/50 in their ImageNet form (7x7 stride-2 stem + 3x3 max-pool).
//! Tensor names follow the common PyTorch definitions (kuangliu's CIFAR models,
//! torchvision's ImageNet models).

use candle_core::Tensor;

use crate::error::Result;
use crate::layers::{global_avg_pool, BatchNorm2d, Conv2d, ConvInput, Mode};
use crate::ops::{Tape, ValueId};
use crate::store::StorePath;

#[derive(Clone, Debug)]
enum Unit {
    /// conv-BN-ReLU-conv-BN + (1x1 conv-BN) shortcut, ReLU after the sum.
    Basic { c1: Conv2d, b1: BatchNorm2d, c2: Conv2d, b2: BatchNorm2d, short: Option<(Conv2d, BatchNorm2d)> },
    /// 1x1-3x3-1x1 bottleneck, expansion 4, stride on the 3x3 (torchvision v1.5).
    Bottleneck {
        c1: Conv2d,
        b1: BatchNorm2d,
        c2: Conv2d,
        b2: BatchNorm2d,
        c3: Conv2d,
        b3: BatchNorm2d,
        short: Option<(Conv2d, BatchNorm2d)>,
    },
    /// BN-ReLU-conv, BN-ReLU-conv; the shortcut conv sees the pre-activated input.
    PreAct { b1: BatchNorm2d, c1: Conv2d, b2: BatchNorm2d, c2: Conv2d, short: Option<Conv2d> },
}

fn conv_bn(
    p: &StorePath,
    conv: &str,
    bn: &str,
    cin: usize,
    cout: usize,
    k: usize,
    s: usize,
) -> Result<(Conv2d, BatchNorm2d)> {
    Ok((Conv2d::new(&p.pp(conv), cin, cout, k, s, k / 2)?, BatchNorm2d::new(&p.pp(bn), cout)?))
}

impl Unit {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let project = |s: &Option<(Conv2d, BatchNorm2d)>| -> Result<Tensor> {
            match s {
                Some((c, b)) => b.forward(&c.forward(x, mode)?, mode),
                None => Ok(x.clone()),
            }
        };
        Ok(match self {
            Unit::Basic { c1, b1, c2, b2, short } => {
                let o = b1.forward_relu(&c1.forward(x, mode)?, mode)?;
                let o = b2.forward(&c2.forward(&o, mode)?, mode)?;
                crate::ops::add_relu(&o, &project(short)?)?
            }
            Unit::Bottleneck { c1, b1, c2, b2, c3, b3, short } => {
                let o = b1.forward_relu(&c1.forward(x, mode)?, mode)?;
                let o = b2.forward_relu(&c2.forward(&o, mode)?, mode)?;
                let o = b3.forward(&c3.forward(&o, mode)?, mode)?;
                crate::ops::add_relu(&o, &project(short)?)?
            }
            Unit::PreAct { b1, c1, b2, c2, short } => {
                let a = b1.forward_relu(x, mode)?;
                let o = c1.forward(&a, mode)?;
                let o = c2.forward(&b2.forward_relu(&o, mode)?, mode)?;
                let skip = match short {
                    Some(c) => c.forward(&a, mode)?,
                    None => x.clone(),
                };
                (o + skip)?
            }
        })
    }
}

impl Unit {
    /// The unit as steps of a tape; in evaluation mode BatchNorm-ReLUs that feed a
    /// convolution run inside it. `None` for the bottleneck unit (not needed by the
    /// CIFAR models; it keeps the tensor-op path).
    fn tape(&self, t: &mut Tape, x: ValueId, mode: Mode) -> candle_core::Result<Option<ValueId>> {
        let input = ConvInput::Value(x);
        Ok(Some(match self {
            Unit::Basic { c1, b1, c2, b2, short } => {
                let o = c1.tape(t, &input)?;
                let o = b1.tape_into_conv(t, o, mode)?;
                let o = c2.tape(t, &o)?;
                let o = b2.tape(t, o, false, mode)?;
                let skip = match short {
                    Some((c, b)) => {
                        let s = c.tape(t, &input)?;
                        b.tape(t, s, false, mode)?
                    }
                    None => x,
                };
                t.add(o, skip, true)?
            }
            Unit::PreAct { b1, c1, b2, c2, short } => {
                let a = b1.tape_into_conv(t, x, mode)?;
                let o = c1.tape(t, &a)?;
                let o = b2.tape_into_conv(t, o, mode)?;
                let o = c2.tape(t, &o)?;
                let skip = match short {
                    Some(c) => c.tape(t, &a)?,
                    None => x,
                };
                t.add(o, skip, false)?
            }
            Unit::Bottleneck { .. } => return Ok(None),
        }))
    }

    fn params(&self, out: &mut Vec<Tensor>) {
        match self {
            Unit::Basic { c1, b1, c2, b2, short } => {
                c1.params(out);
                b1.params(out);
                c2.params(out);
                b2.params(out);
                if let Some((c, b)) = short {
                    c.params(out);
                    b.params(out);
                }
            }
            Unit::Bottleneck { c1, b1, c2, b2, c3, b3, short } => {
                for (c, b) in [(c1, b1), (c2, b2), (c3, b3)] {
                    c.params(out);
                    b.params(out);
                }
                if let Some((c, b)) = short {
                    c.params(out);
                    b.params(out);
                }
            }
            Unit::PreAct { b1, c1, b2, c2, short } => {
                b1.params(out);
                c1.params(out);
                b2.params(out);
                c2.params(out);
                if let Some(c) = short {
                    c.params(out);
                }
            }
        }
    }
}

/// Which residual network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResNetKind {
    /// ResNet-18, CIFAR form: 512-d feature.
    ResNet18,
    /// PreAct-ResNet-18, CIFAR form, with the final BN-ReLU (as in robust-overfitting code): 512-d.
    PreActResNet18,
    /// ResNet-18, ImageNet form: 512-d.
    ResNet18ImageNet,
    /// ResNet-50, ImageNet form: 2048-d.
    ResNet50ImageNet,
}

/// A residual network feature extractor.
#[derive(Clone, Debug)]
pub struct ResNet {
    kind: ResNetKind,
    conv1: Conv2d,
    bn1: Option<BatchNorm2d>,
    units: Vec<Unit>,
    final_bn: Option<BatchNorm2d>,
    feature_dim: usize,
}

impl ResNet {
    /// Build under `p` for `in_channels`-channel input.
    pub fn new(p: &StorePath, in_channels: usize, kind: ResNetKind) -> Result<Self> {
        let imagenet = matches!(kind, ResNetKind::ResNet18ImageNet | ResNetKind::ResNet50ImageNet);
        let conv1 = if imagenet {
            Conv2d::new(&p.pp("conv1"), in_channels, 64, 7, 2, 3)?
        } else {
            Conv2d::new(&p.pp("conv1"), in_channels, 64, 3, 1, 1)?
        };
        let bn1 = if kind == ResNetKind::PreActResNet18 { None } else { Some(BatchNorm2d::new(&p.pp("bn1"), 64)?) };
        let blocks = if kind == ResNetKind::ResNet50ImageNet { [3, 4, 6, 3] } else { [2, 2, 2, 2] };
        let (short_conv, short_bn) =
            if imagenet { ("downsample.0", "downsample.1") } else { ("shortcut.0", "shortcut.1") };
        let mut units = Vec::new();
        let mut cin = 64;
        for (l, &n) in blocks.iter().enumerate() {
            let width = 64 << l;
            for i in 0..n {
                let s = if i == 0 && l > 0 { 2 } else { 1 };
                let u = p.pp(format!("layer{}", l + 1)).pp(i);
                let unit = match kind {
                    ResNetKind::ResNet18 | ResNetKind::ResNet18ImageNet => {
                        let short = if s != 1 || cin != width {
                            Some(conv_bn(&u, short_conv, short_bn, cin, width, 1, s)?)
                        } else {
                            None
                        };
                        let (c1, b1) = conv_bn(&u, "conv1", "bn1", cin, width, 3, s)?;
                        let (c2, b2) = conv_bn(&u, "conv2", "bn2", width, width, 3, 1)?;
                        cin = width;
                        Unit::Basic { c1, b1, c2, b2, short }
                    }
                    ResNetKind::ResNet50ImageNet => {
                        let out = width * 4;
                        let short = if s != 1 || cin != out {
                            Some(conv_bn(&u, short_conv, short_bn, cin, out, 1, s)?)
                        } else {
                            None
                        };
                        let (c1, b1) = conv_bn(&u, "conv1", "bn1", cin, width, 1, 1)?;
                        let (c2, b2) = conv_bn(&u, "conv2", "bn2", width, width, 3, s)?;
                        let (c3, b3) = conv_bn(&u, "conv3", "bn3", width, out, 1, 1)?;
                        cin = out;
                        Unit::Bottleneck { c1, b1, c2, b2, c3, b3, short }
                    }
                    ResNetKind::PreActResNet18 => {
                        let short = if s != 1 || cin != width {
                            Some(Conv2d::new(&u.pp("shortcut.0"), cin, width, 1, s, 0)?)
                        } else {
                            None
                        };
                        let unit = Unit::PreAct {
                            b1: BatchNorm2d::new(&u.pp("bn1"), cin)?,
                            c1: Conv2d::new(&u.pp("conv1"), cin, width, 3, s, 1)?,
                            b2: BatchNorm2d::new(&u.pp("bn2"), width)?,
                            c2: Conv2d::new(&u.pp("conv2"), width, width, 3, 1, 1)?,
                            short,
                        };
                        cin = width;
                        unit
                    }
                };
                units.push(unit);
            }
        }
        let final_bn =
            if kind == ResNetKind::PreActResNet18 { Some(BatchNorm2d::new(&p.pp("bn"), cin)?) } else { None };
        Ok(Self { kind, conv1, bn1, units, final_bn, feature_dim: cin })
    }

    /// Pooled feature (N, 512) or (N, 2048).
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let mut out = self.conv1.forward(x, mode)?;
        if let Some(bn) = &self.bn1 {
            out = bn.forward_relu(&out, mode)?;
        }
        if matches!(self.kind, ResNetKind::ResNet18ImageNet | ResNetKind::ResNet50ImageNet) {
            out = crate::ops::max_pool2d(&out, 3, 2, 1)?;
        }
        for u in &self.units {
            out = u.forward(&out, mode)?;
        }
        if let Some(bn) = &self.final_bn {
            out = bn.forward_relu(&out, mode)?;
        }
        global_avg_pool(&out)
    }

    /// Whether [`Self::tape`] covers this network: the CIFAR forms (the ImageNet
    /// forms' max-pool and bottleneck units keep the tensor-op path).
    pub(crate) fn has_tape_form(&self) -> bool {
        matches!(self.kind, ResNetKind::ResNet18 | ResNetKind::PreActResNet18)
    }

    /// [`Self::forward`] as steps of a tape (see [`crate::ops::Tape`]); the caller
    /// checks [`Self::has_tape_form`].
    pub(crate) fn tape(&self, t: &mut Tape, x: ValueId, mode: Mode) -> candle_core::Result<ValueId> {
        let no_form = || candle_core::Error::Msg(format!("{:?} has no tape form", self.kind));
        if !self.has_tape_form() {
            return Err(no_form());
        }
        let mut out = self.conv1.tape(t, &ConvInput::Value(x))?;
        if let Some(bn) = &self.bn1 {
            out = bn.tape(t, out, true, mode)?;
        }
        for u in &self.units {
            out = u.tape(t, out, mode)?.ok_or_else(no_form)?;
        }
        if let Some(bn) = &self.final_bn {
            out = bn.tape(t, out, true, mode)?;
        }
        Ok(t.pool(out))
    }

    /// Every parameter, in a fixed order.
    pub(crate) fn params(&self) -> Vec<Tensor> {
        let mut out = Vec::new();
        self.conv1.params(&mut out);
        if let Some(bn) = &self.bn1 {
            bn.params(&mut out);
        }
        for u in &self.units {
            u.params(&mut out);
        }
        if let Some(bn) = &self.final_bn {
            bn.params(&mut out);
        }
        out
    }

    /// Feature dimension.
    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }
}
