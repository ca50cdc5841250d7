#!/usr/bin/env python3
"""Refresh the generated parts of docs/results-fashion-mnist.md from the studies' reports.

    cargo xtask report studies/fashion-mnist-lt.toml
    cargo xtask report studies/fashion-mnist-lt-30-epochs.toml
    python3 docs/results-fashion-mnist/refresh.py

Every block between `<!-- BEGIN <report file> -->` and `<!-- END -->` in the page is
replaced by that file (relative to the repository root) without its title line, and
the plots each study's report folder holds are copied beside this script as
`<study folder name>/<plot>.png`. The prose around the blocks is written by hand.
"""
import os, re, shutil

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAGE = os.path.join(ROOT, "docs", "results-fashion-mnist.md")
HERE = os.path.dirname(os.path.abspath(__file__))
STUDIES = ["results/fashion-mnist-lt", "results/fashion-mnist-lt-30-epochs"]


def block(match):
    path = match.group(1)
    with open(os.path.join(ROOT, path)) as f:
        lines = f.read().rstrip("\n").split("\n")
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return f"<!-- BEGIN {path} -->\n" + "\n".join(lines).strip("\n") + "\n<!-- END -->"


def main():
    with open(PAGE) as f:
        text = f.read()
    text, n = re.subn(r"<!-- BEGIN (\S+) -->.*?<!-- END -->", block, text, flags=re.S)
    with open(PAGE, "w") as f:
        f.write(text)
    copied = 0
    for study in STUDIES:
        report = os.path.join(ROOT, study, "report")
        out = os.path.join(HERE, os.path.basename(study))
        os.makedirs(out, exist_ok=True)
        for name in sorted(os.listdir(report)):
            if name.endswith(".png"):
                shutil.copyfile(os.path.join(report, name), os.path.join(out, name))
                copied += 1
    print(f"refreshed {n} blocks and copied {copied} plots")


if __name__ == "__main__":
    main()
