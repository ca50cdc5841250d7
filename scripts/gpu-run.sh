#!/usr/bin/env bash
# The whole GPU check in one command, for a machine with a GPU and no Rust toolchain:
#
#   scripts/gpu-run.sh BINARY OUT           # BINARY: xtask built with --features cuda
#   scripts/gpu-run.sh BINARY OUT --cpu     # the same steps on the CPU (tests it here)
#
# Run it from the repository root (the bench reads bench/pytorch_reference.py there).
# BINARY may be gzip-compressed (name ending in .gz). Steps, each leaving its evidence
# in OUT:
#   1. machine.txt  the GPU, driver and CUDA version (nvidia-smi);
#   2. ldd.txt      the CUDA libraries the binary needs, found among the NVIDIA wheels
#                   of the machine's python3 (PyTorch's own) and the driver's folder;
#                   a library not found stops the run here;
#   3. ptx.txt      the PTX ISA versions and targets embedded in the binary (a driver
#                   refuses PTX newer than it knows);
#   4. gpu-check.md `xtask gpu-check --device cuda --reference cpu`: logits, input
#                   gradients, one training step and PGD-20 against the CPU; a mismatch
#                   stops the run here (exit 1) with the table saved;
#   5. bench.jsonl  `xtask bench --device cuda --python python3` per model (attack,
#                   train, infer beside PyTorch CUDA), each under a time limit;
#      gpu-memory.csv  per-process GPU memory sampled every 100 ms while it runs;
#   6. train-*/     with GPU_RUN_TRAIN=PRESET:EPOCHS, that preset trained (and quickly
#                   evaluated) on the device and again on the CPU, each under
#                   GPU_RUN_TRAIN_TIMEOUT (300 s), with its wall time (GPU_RUN_TRAIN_CPU=0:
#                   on the device only);
#      eval-*/      with GPU_RUN_EVAL=ATTACKS:LIMIT as well, the device's trained model
#                   evaluated (`xtask eval --attacks ATTACKS --limit LIMIT`) on the device
#                   and on the CPU: the table gives each attack's accuracy on both and
#                   how many examples' outcomes agree;
#   7. gpu-run.md   one table of it all (scripts/gpu_run_table.py).
# Knobs (environment): GPU_RUN_CHECK_MODELS (small-cnn,wrn-10-2,resnet18),
# GPU_RUN_BENCH_MODELS (wrn-16-4,resnet18,wrn-34-10; either set empty skips its step),
# GPU_RUN_BATCH (128), GPU_RUN_SECONDS (2: timed seconds per step and side), GPU_RUN_MODEL_TIMEOUT (150 s
# per bench model), GPU_RUN_PYTHON (python3), GPU_RUN_CHECK_ARGS (more gpu-check flags;
# the tests pass `--perturb 0.01` to see a mismatch stop the run), GPU_RUN_KEEP_GOING=1
# (a failed check is recorded in failed.txt but the benches still run: for a first run
# on a lent machine, where every minute of device time should bring back evidence).
set -uo pipefail

usage() { echo "usage: $0 BINARY OUT [--cpu]" >&2; exit 2; }
[ $# -ge 2 ] || usage
bin=$1
out=$2
device=cuda
case "${3:-}" in
  "") ;;
  --cpu) device=cpu ;;
  *) usage ;;
esac
check_models=${GPU_RUN_CHECK_MODELS-small-cnn,wrn-10-2,resnet18}
bench_models=${GPU_RUN_BENCH_MODELS-wrn-16-4,resnet18,wrn-34-10}
batch=${GPU_RUN_BATCH:-128}
seconds=${GPU_RUN_SECONDS:-2}
model_timeout=${GPU_RUN_MODEL_TIMEOUT:-150}
python=${GPU_RUN_PYTHON:-python3}
read -r -a check_args <<<"${GPU_RUN_CHECK_ARGS:-}"
here=$(cd "$(dirname "$0")" && pwd)

mkdir -p "$out" || { echo "gpu-run: cannot make the output folder $out" >&2; exit 2; }
out=$(cd "$out" && pwd)
log() { echo "gpu-run: $*" | tee -a "$out/gpu-run.log" >&2; }
fail() { log "FAILED: $*"; echo "$*" >"$out/failed.txt"; exit 1; }

[ -f "$bin" ] || fail "BINARY $bin: no such file"
case "$bin" in
  *.gz)
    unpacked=$(mktemp "${TMPDIR:-/tmp}/gpu-run-xtask.XXXXXX") || fail "cannot make a temporary file"
    trap 'rm -f "$unpacked"' EXIT
    gunzip -c "$bin" >"$unpacked" || fail "BINARY $bin: not a readable gzip file"
    bin=$unpacked ;;
esac
chmod +x "$bin" 2>/dev/null
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
log "binary $bin ($(stat -c %s "$bin") bytes), device $device, output $out"

# 1. The machine.
{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(uname -srm), $(nproc) CPU cores"
  if [ "$device" = cuda ]; then
    command -v nvidia-smi >/dev/null || { echo "no nvidia-smi"; }
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm --format=csv 2>&1
    nvidia-smi 2>&1 | grep -o 'CUDA Version: [0-9.]*'
  fi
} >"$out/machine.txt"
cat "$out/machine.txt" >&2
if [ "$device" = cuda ]; then
  nvidia-smi -L >/dev/null 2>&1 || fail "nvidia-smi finds no GPU (is the NVIDIA driver there?); see machine.txt"
fi

# 2. The CUDA libraries: the NVIDIA wheels under python3's site-packages (PyTorch's
# own cublas, curand, nvrtc, ...) and the driver's folder, in front of the search path.
if [ "$device" = cuda ]; then
  libdirs=$("$python" - <<'EOF' 2>/dev/null
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()]
dirs = []
for r in roots:
    for lib in glob.glob(os.path.join(r, "nvidia", "**", "lib*.so*"), recursive=True):
        d = os.path.dirname(lib)
        if d not in dirs:
            dirs.append(d)
print(":".join(dirs))
EOF
  )
  for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu; do
    [ -d "$d" ] && libdirs="$libdirs:$d"
  done
  # The driver's libcuda.so.1 where the loader's cache does not list it.
  if ! ldconfig -p 2>/dev/null | grep -q 'libcuda.so.1 '; then
    cuda_so=$(find /usr/local/nvidia /usr/lib /usr/lib64 /lib /opt -maxdepth 4 -name libcuda.so.1 2>/dev/null | head -n 1)
    [ -n "$cuda_so" ] && libdirs="$libdirs:$(dirname "$cuda_so")"
  fi
  export LD_LIBRARY_PATH="${libdirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  log "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
fi
ldd "$bin" >"$out/ldd.txt" 2>&1
missing=$(grep 'not found' "$out/ldd.txt" | awk '{print $1}' | tr '\n' ' ')
[ -z "$missing" ] || fail "libraries the binary needs were not found: $missing(see ldd.txt)"

# 3. The PTX the binary carries (candle's kernels; the driver compiles them on load).
{
  echo "PTX ISA versions embedded (count, version):"
  grep -a -o -E '^\.version [0-9]+\.[0-9]+' "$bin" | sort | uniq -c
  echo "PTX targets embedded (count, target):"
  grep -a -o -E '^\.target sm_[0-9a-z]+' "$bin" | sort | uniq -c
} >"$out/ptx.txt"
cat "$out/ptx.txt" >&2

# 4. CPU against the device under test.
if [ -z "$check_models" ]; then
  log "gpu-check skipped (GPU_RUN_CHECK_MODELS is empty)"
  : >"$out/gpu-check.md"
else
  log "gpu-check on $check_models"
  "$bin" gpu-check --device "$device" --reference cpu --models "$check_models" \
    ${check_args[@]+"${check_args[@]}"} 2>&1 | tee "$out/gpu-check.md"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    why="gpu-check exited $rc (mismatch or error; table and message in gpu-check.md)"
    [ "${GPU_RUN_KEEP_GOING:-0}" = 1 ] || fail "$why"
    log "FAILED: $why; going on to the benches (GPU_RUN_KEEP_GOING=1)"
    echo "$why" >"$out/failed.txt"
  fi
fi

# 5. The benches, one model at a time, with GPU memory sampled per process.
sampler=
if [ "$device" = cuda ]; then
  "$python" "$here/gpu_run_table.py" sample "$out/gpu-memory.csv" &
  sampler=$!
fi
: >"$out/bench.jsonl"
: >"$out/bench-status.txt"
for model in ${bench_models//,/ }; do
  log "bench $model at batch $batch ($seconds s per step and side, at most $model_timeout s)"
  timeout "$model_timeout" "$bin" bench --device "$device" --model "$model" --batch "$batch" \
    --seconds "$seconds" --iters 2 --python "$python" --json >>"$out/bench.jsonl" 2>>"$out/bench.err"
  rc=$?
  echo "$model $rc" >>"$out/bench-status.txt"
  [ "$rc" -eq 0 ] || log "bench $model exited $rc (124: over its time limit); going on"
done
if [ -n "$sampler" ]; then
  kill "$sampler" 2>/dev/null
  wait "$sampler" 2>/dev/null
fi

# 6. A whole (short) training run on the device and on the CPU.
if [ -n "${GPU_RUN_TRAIN:-}" ]; then
  preset=${GPU_RUN_TRAIN%%:*}
  epochs=${GPU_RUN_TRAIN##*:}
  train_on=$device
  [ "${GPU_RUN_TRAIN_CPU:-1}" = 1 ] && train_on="$device cpu"
  for d in $(printf '%s\n' $train_on | uniq); do
    log "train $preset for $epochs epochs on $d"
    t0=$(date +%s.%N)
    timeout "${GPU_RUN_TRAIN_TIMEOUT:-300}" "$bin" train --preset "$preset" --epochs "$epochs" --device "$d" \
      --run-dir "$out/train-$d" >"$out/train-$d.log" 2>&1
    rc=$?
    echo "$d $rc $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')" >>"$out/train-status.txt"
    [ "$rc" -eq 0 ] || log "train on $d exited $rc (124: over its time limit); going on"
  done
  if [ -n "${GPU_RUN_EVAL:-}" ] && [ -f "$out/train-$device/model.safetensors" ]; then
    attacks=${GPU_RUN_EVAL%%:*}
    limit=${GPU_RUN_EVAL##*:}
    for d in $(printf '%s\n' "$device" cpu | uniq); do
      log "eval of the $device-trained model on $d: $attacks on $limit images"
      t0=$(date +%s.%N)
      timeout "${GPU_RUN_TRAIN_TIMEOUT:-300}" "$bin" eval "$out/train-$device" --device "$d" --attacks "$attacks" \
        --limit "$limit" --no-audit --out "$out/eval-$d" >"$out/eval-$d.log" 2>&1
      rc=$?
      echo "$d $rc $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')" >>"$out/eval-status.txt"
      [ "$rc" -eq 0 ] || log "eval on $d exited $rc; going on"
    done
  fi
fi

# 7. The table.
"$python" "$here/gpu_run_table.py" table "$out" >"$out/gpu-run.md" || fail "could not write gpu-run.md"
cat "$out/gpu-run.md"
if [ -f "$out/failed.txt" ]; then
  log "done, with a failed check: $(cat "$out/failed.txt")"
  exit 1
fi
log "done: $out/gpu-run.md"
