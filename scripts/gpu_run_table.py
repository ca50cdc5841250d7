#!/usr/bin/env python3
"""Helpers of scripts/gpu-run.sh (standard library only).

  gpu_run_table.py sample FILE   append "time,pid,used_mib,impl,model,step" rows every
                                 100 ms, from `nvidia-smi --query-compute-apps`, until
                                 killed; impl/model/step are read from each process's
                                 command line (the bench runs one process per model,
                                 step and side, so a process's peak is that step's).
  gpu_run_table.py table OUT     print gpu-run.md from OUT's machine.txt, ptx.txt,
                                 gpu-check.md, bench.jsonl, bench-status.txt and
                                 gpu-memory.csv (if sampled).
"""
import csv
import json
import os
import subprocess
import sys
import time


def describe(pid):
    """(impl, model, step) of a bench process, from its command line."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().decode(errors="replace").split("\0")
    except OSError:
        return ("?", "?", "?")

    def flag(name):
        return args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else "?"

    impl = "pytorch" if any(a.endswith("pytorch_reference.py") for a in args) else "robal-rs"
    return (impl, flag("--model"), flag("--step"))


def sample(path):
    seen = {}
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time", "pid", "used_mib", "impl", "model", "step"])
        while True:
            r = subprocess.run(
                ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                capture_output=True, text=True)
            now = time.time()
            for line in r.stdout.splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) != 2 or not parts[0].isdigit():
                    continue
                pid, used = int(parts[0]), parts[1]
                if pid not in seen:
                    seen[pid] = describe(pid)
                w.writerow([f"{now:.2f}", pid, used, *seen[pid]])
            f.flush()
            time.sleep(0.1)


def read(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def table(out):
    rows = [json.loads(l) for l in read(os.path.join(out, "bench.jsonl")).splitlines() if l.strip()]
    peaks = {}
    mem = os.path.join(out, "gpu-memory.csv")
    if os.path.exists(mem):
        with open(mem) as f:
            for r in csv.DictReader(f):
                if r.get("time") == "time" or not r.get("used_mib", "").isdigit():
                    continue
                key = (r["impl"], r["model"], r["step"])
                peaks[key] = max(peaks.get(key, 0), int(r["used_mib"]))
    print("# GPU run\n")
    print("## Machine\n\n```\n" + read(os.path.join(out, "machine.txt")).strip() + "\n```\n")
    print("## PTX in the binary\n\n```\n" + read(os.path.join(out, "ptx.txt")).strip() + "\n```\n")
    check = [l for l in read(os.path.join(out, "gpu-check.md")).splitlines() if l.startswith("|")]
    print("## CPU against the device (`xtask gpu-check`)\n")
    failed = read(os.path.join(out, "failed.txt")).strip()
    if failed:
        print(f"**FAILED**: {failed}\n")
        lines = read(os.path.join(out, "gpu-check.md")).strip().splitlines()
        first = next((i for i, l in enumerate(lines) if l.startswith("Error")), max(len(lines) - 3, 0))
        tail = lines[first:first + 4]
        print("```\n" + "\n".join(tail) + "\n```\n")
    print("\n".join(check) if check else "(no table: see gpu-check.md)")
    print()
    print("## Benches (img/s; GPU memory: peak per process from nvidia-smi at 100 ms, "
          "and PyTorch's own max_memory_allocated)\n")
    print("| model | step | batch | robal-rs img/s | PyTorch img/s | ratio | robal-rs GPU MiB "
          "| PyTorch GPU MiB | PyTorch allocated MiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    keys = []
    for r in rows:
        k = (r["model"], r["step"])
        if k not in keys:
            keys.append(k)

    def pick(impl, k):
        return [r for r in rows if r["impl"] == impl and (r["model"], r["step"]) == k]

    def fmt(v, digits=1):
        return "-" if v is None else f"{v:.{digits}f}"

    for k in keys:
        ours, torch = pick("robal-rs", k), pick("pytorch", k)
        o = max((r["img_per_s"] for r in ours), default=None)
        t = max((r["img_per_s"] for r in torch), default=None)
        ratio = f"{o / t:.2f}x" if o and t else "-"
        batch = (ours or torch)[0]["batch"]
        alloc = max((r.get("peak_gpu_bytes") or 0 for r in torch), default=0)
        print(f"| {k[0]} | {k[1]} | {batch} | {fmt(o)} | {fmt(t)} | {ratio} "
              f"| {peaks.get(('robal-rs', *k), '-')} | {peaks.get(('pytorch', *k), '-')} "
              f"| {fmt(alloc / 2**20, 0) if alloc else '-'} |")
    status = read(os.path.join(out, "bench-status.txt")).split("\n")
    bad = [s for s in status if s.strip() and not s.endswith(" 0")]
    if bad:
        print("\nBench models that did not finish (model, exit status; 124 = over the time limit): "
              + "; ".join(bad))
    training(out)
    evaluation(out)


def training(out):
    """The optional training runs: wall time, last epoch and the quick evaluation."""
    status = [l.split() for l in read(os.path.join(out, "train-status.txt")).splitlines() if l.strip()]
    if not status:
        return
    print("\n## A short training run on each device (`xtask train`)\n")
    print("| device | exit | wall s | epochs | last epoch img/s | last loss | last adv batch acc "
          "| quick eval clean | quick eval PGD-20 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for dev, rc, wall in status:
        run = os.path.join(out, f"train-{dev}")
        lines = [json.loads(l) for l in read(os.path.join(run, "metrics.jsonl")).splitlines() if l.strip()]
        epochs = [l for l in lines if "epoch" in l and "loss" in l]
        last = epochs[-1] if epochs else {}
        ev = json.loads(read(os.path.join(run, "train_eval.json"), "{}") or "{}").get("eval") or {}

        def acc(k):
            v = (ev.get(k) or {}).get("overall")
            return "-" if v is None else f"{100 * v:.1f}%"

        def num(k, f):
            v = last.get(k)
            return "-" if v is None else f.format(v)

        print(f"| {dev} | {rc} | {float(wall):.1f} | {len(epochs)} | {num('img_per_s', '{:.0f}')} "
              f"| {num('loss', '{:.4f}')} | {num('adv_batch_acc', '{:.3f}')} | {acc('clean')} | {acc('pgd')} |")


def evaluation(out):
    """The optional evaluations: per attack, accuracy on each device and per-example agreement."""
    status = [l.split() for l in read(os.path.join(out, "eval-status.txt")).splitlines() if l.strip()]
    if not status:
        return
    reports = {}
    for dev, rc, wall in status:
        text = read(os.path.join(out, f"eval-{dev}", "report.json"))
        reports[dev] = (rc, float(wall), json.loads(text) if text else None)
    devs = [d for d, _, _ in status]
    print("\n## The trained model evaluated on each device (`xtask eval`)\n")
    print("wall s: " + ", ".join(f"{d} {reports[d][1]:.1f} (exit {reports[d][0]})" for d in devs) + "\n")
    print("| attack | " + " | ".join(f"{d} accuracy" for d in devs) + " | same outcome |")
    print("|---|" + "---:|" * (len(devs) + 1))
    first = reports[devs[0]][2]
    for i, a in enumerate((first or {}).get("attacks", [])):
        row = [a["name"]]
        outcomes = []
        for d in devs:
            r = reports[d][2]
            b = r["attacks"][i] if r and i < len(r.get("attacks", [])) else None
            row.append("-" if b is None else f"{100 * b['accuracy']:.1f}%")
            outcomes.append(None if b is None else b.get("correct"))
        if len(outcomes) == 2 and all(o is not None for o in outcomes):
            same = sum(p == q for p, q in zip(*outcomes))
            row.append(f"{same} of {len(outcomes[0])}")
        else:
            row.append("-")
        print("| " + " | ".join(row) + " |")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "sample":
        sample(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "table":
        table(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
