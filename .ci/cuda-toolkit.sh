#!/usr/bin/env bash
# A CUDA toolkit for `cargo build --features cuda` on a machine without a GPU, from
# PyPI only (NVIDIA's wheels), in DEST (default: target/cuda-toolkit). The version is
# CUDA_VERSION (default 13.0): candle's kernels are embedded as PTX, which the GPU's
# driver compiles when they load, and a driver refuses PTX of a newer ISA than it
# knows. 13.0 is what driver 580 (the lent H200 machines) supports; PTX from 13.2's
# nvcc says `.version 9.2` and would not load there.
#
#   bash .ci/cuda-toolkit.sh [DEST]      # prints the environment to export
#   eval "$(bash .ci/cuda-toolkit.sh)"   # ... or sets it in this shell
#   cargo build --release --features cuda
#
# What it makes:
# - DEST/venv: nvcc, ptxas, nvvm (cicc) and the crt/cccl headers of CUDA_VERSION, and the
#   libraries candle-core's cudarc links against (cublas, cublasLt, curand, nvrtc);
# - DEST/home: a CUDA_HOME layout (bin, include, nvvm, lib64) over those wheels, with
#   unversioned .so links for the linker;
# - DEST/home/lib64/libcuda.so: a link-time stub of the driver API (SONAME
#   libcuda.so.1, every cu* entry point of cuda.h and of cudarc's bindings, each
#   returning CUDA_ERROR_STUB_LIBRARY). cudarc is built with `dynamic-linking`, so the
#   binary records libcuda.so.1 and the GPU machine's own driver library is the one
#   loaded at run time; the stub is never run.
# Kernels are compiled for CUDA_COMPUTE_CAP (default 90: H100/H200).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=$(realpath -m "${1:-target/cuda-toolkit}")
version="${CUDA_VERSION:-13.0}"
mkdir -p "$dest"
if [ ! -x "$dest/venv/bin/pip" ]; then
  python3 -m venv "$dest/venv" >&2
fi
"$dest/venv/bin/pip" install --quiet --disable-pip-version-check \
  "nvidia-cuda-nvcc==$version.*" "nvidia-nvvm==$version.*" "nvidia-cuda-crt==$version.*" \
  "nvidia-cuda-runtime==$version.*" "nvidia-cuda-nvrtc==$version.*" "nvidia-cuda-cccl==$version.*" \
  "nvidia-cublas==13.*" "nvidia-curand==10.*" >&2
cu=$(echo "$dest"/venv/lib/python3*/site-packages/nvidia/cu13)
[ -x "$cu/bin/nvcc" ] || { echo "cuda-toolkit: no nvcc under $cu after the install" >&2; exit 1; }

home="$dest/home"
mkdir -p "$home/lib64"
for d in bin include nvvm; do ln -sfn "$cu/$d" "$home/$d"; done
for lib in cublas cublasLt curand nvrtc cudart; do
  so=$(ls "$cu/lib/lib$lib.so."* | sort | head -n 1)
  ln -sf "$so" "$home/lib64/lib$lib.so"
  ln -sf "$so" "$home/lib64/$(basename "$so")"
done

# The driver stub: entry points from the header (macros expanded: cuMemAlloc is
# cuMemAlloc_v2) and from cudarc's bindings, so every symbol the link asks for exists.
syms="$dest/libcuda-symbols.txt"
{
  echo '#include <cuda.h>' | gcc -E -I"$cu/include" - | tr '\n' ' ' |
    grep -oE 'CUresult +cu[A-Za-z0-9_]+ *\(' | sed -E 's/CUresult +//; s/ *\(//'
  registry="${CARGO_HOME:-$HOME/.cargo}/registry/src"
  cargo fetch --locked >&2
  for f in "$registry"/*/cudarc-*/src/driver/sys/mod.rs; do
    [ -f "$f" ] && grep -oE 'pub unsafe fn cu[A-Za-z0-9_]+' "$f" | sed 's/pub unsafe fn //'
  done
} | sort -u >"$syms"
awk '{ printf "int %s(void) { return 34; }\n", $1 }' "$syms" >"$dest/libcuda-stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$home/lib64/libcuda.so" "$dest/libcuda-stub.c"
echo "cuda-toolkit: CUDA $version in $home, libcuda stub with $(wc -l <"$syms") entry points" >&2

cat <<EOF
export CUDA_HOME="$home"
export PATH="$home/bin:\$PATH"
export LIBRARY_PATH="$home/lib64\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
export CUDA_COMPUTE_CAP="\${CUDA_COMPUTE_CAP:-90}"
EOF
