//! ResNet-18 and PreAct-ResNet-18 in their CIFAR form (3x3 stem, no max-pool), and
//! ResNet-18/50 in their ImageNet form (7x7 stride-2 stem + 3x3 max-pool).
//! Tensor names follow the common PyTorch definitions (kuangliu's CIFAR models,
//! torchvision's ImageNet models).

use crate::error::Result;
use crate::graph::Graph;
use crate::layers::{BatchNorm2d, Conv2d};
use crate::ops::Pool2d;
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
    /// The unit on graph `g`.
    fn graph<G: Graph>(&self, g: &mut G, x: &G::Value) -> Result<G::Value> {
        let project = |g: &mut G, s: &Option<(Conv2d, BatchNorm2d)>| -> Result<G::Value> {
            match s {
                Some((c, b)) => {
                    let y = g.conv(x, c)?;
                    g.batch_norm(&y, b, false)
                }
                None => Ok(x.clone()),
            }
        };
        match self {
            Unit::Basic { c1, b1, c2, b2, short } => {
                let o = g.conv(x, c1)?;
                let o = g.batch_norm(&o, b1, true)?;
                let o = g.conv(&o, c2)?;
                let o = g.batch_norm(&o, b2, false)?;
                let skip = project(g, short)?;
                g.add(&o, &skip, true)
            }
            Unit::Bottleneck { c1, b1, c2, b2, c3, b3, short } => {
                let mut o = x.clone();
                for (c, b, relu) in [(c1, b1, true), (c2, b2, true), (c3, b3, false)] {
                    o = g.conv(&o, c)?;
                    o = g.batch_norm(&o, b, relu)?;
                }
                let skip = project(g, short)?;
                g.add(&o, &skip, true)
            }
            Unit::PreAct { b1, c1, b2, c2, short } => {
                let a = g.batch_norm(x, b1, true)?;
                let o = g.conv(&a, c1)?;
                let o = g.batch_norm(&o, b2, true)?;
                let o = g.conv(&o, c2)?;
                let skip = match short {
                    Some(c) => g.conv(&a, c)?,
                    None => x.clone(),
                };
                g.add(&o, &skip, false)
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

    /// Pooled feature (N, 512) or (N, 2048) of `x` on graph `g`.
    pub fn graph<G: Graph>(&self, g: &mut G, x: &G::Value) -> Result<G::Value> {
        let mut out = g.conv(x, &self.conv1)?;
        if let Some(bn) = &self.bn1 {
            out = g.batch_norm(&out, bn, true)?;
        }
        if matches!(self.kind, ResNetKind::ResNet18ImageNet | ResNetKind::ResNet50ImageNet) {
            out = g.max_pool(&out, Pool2d { kernel: 3, stride: 2, padding: 1 })?;
        }
        for u in &self.units {
            out = u.graph(g, &out)?;
        }
        if let Some(bn) = &self.final_bn {
            out = g.batch_norm(&out, bn, true)?;
        }
        g.global_avg_pool(&out)
    }

    /// Feature dimension.
    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }
}
