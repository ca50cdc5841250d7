"""PyTorch side of `cargo xtask bench`: the same architectures and steps, one
(model, step) per process, printed as one JSON line.

    python3 bench/pytorch_reference.py --model wrn-16-4 --step attack [--batch 64]

Steps (as in xtask/src/bench.rs):
  attack  eval mode, parameters frozen, forward + gradient of the summed CE w.r.t. x
  train   train mode, forward, mean CE, backward, SGD(lr 0.1, momentum 0.9, wd 2e-4)
  infer   eval mode under torch.inference_mode(), batch --infer-batch

The WideResNet and the CIFAR ResNet-18 layers are the reference definitions of the
models crate's fixtures (forward passes added here for ResNet-18); the small digit
CNN is defined here as robal-models builds it.
"""
import argparse, importlib.util, json, os, resource, sys, time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location(
    "fixtures", os.path.join(HERE, "..", "crates", "models", "tests", "fixtures", "make_pytorch_fixtures.py"))
fixtures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fixtures)


class BasicBlock(fixtures.Basic):
    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(fixtures.ResNetDef):
    def __init__(self, classes=10):
        super().__init__(BasicBlock, [2, 2, 2, 2], classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        for l in range(1, 5):
            out = getattr(self, f"layer{l}")(out)
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class SmallCnn(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        spec = [(1, 32, 1), (32, 64, 2), (64, 128, 2)]
        self.body = nn.Sequential(*[m for cin, cout, s in spec
                                    for m in (nn.Conv2d(cin, cout, 3, s, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())])
        self.fc = nn.Linear(128, classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.body(x), 1).flatten(1))


def build(name):
    if name == "small-cnn":
        return SmallCnn(), (1, 28, 28)
    if name == "resnet18":
        return ResNet18(), (3, 32, 32)
    _, depth, widen = name.split("-")
    backbone = fixtures.WideResNetBackbone(int(depth), int(widen))
    return fixtures.Net(backbone, fixtures.FcHead(backbone.dim, 10)), (3, 32, 32)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--step", required=True, choices=["attack", "train", "infer"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--infer-batch", type=int, default=256)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = p.parse_args()
    torch.manual_seed(0)
    dev = torch.device(a.device)
    model, (c, h, w) = build(a.model)
    model = model.to(dev)
    batch = a.infer_batch if a.step == "infer" else a.batch
    x = torch.rand(batch, c, h, w, device=dev)
    y = torch.arange(batch, device=dev) % 10
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    if a.step == "attack":
        model.eval()
        model.requires_grad_(False)

        def run():
            xv = x.clone().requires_grad_(True)
            loss = F.cross_entropy(model(xv), y, reduction="sum")
            (g,) = torch.autograd.grad(loss, xv)
            g.sum().item()
    elif a.step == "train":
        model.train()

        def run():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
    else:
        model.eval()

        def run():
            with torch.inference_mode():
                model(x).sum().item()

    run()
    start, iters = time.perf_counter(), 0
    while iters < max(a.iters, 1) or time.perf_counter() - start < a.seconds:
        run()
        iters += 1
    secs = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"impl": "pytorch", "model": a.model, "step": a.step, "batch": batch, "iters": iters,
                      "img_per_s": batch * iters / secs, "peak_rss_bytes": peak, "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "device": a.device,
                      "peak_gpu_bytes": torch.cuda.max_memory_allocated() if dev.type == "cuda" else None}))


if __name__ == "__main__":
    sys.exit(main())
