#!/usr/bin/env bash
# Installs a CUDA toolchain from PyPI (no system CUDA, no root, no GPU needed) and prints the
# environment that builds d4s with `--features cuda`:
#
#   eval "$(scripts/cuda-toolchain.sh)"            # nvcc, headers and the libraries to link
#   cargo build --release --features cuda
#
#   eval "$(scripts/cuda-toolchain.sh --compile-only)"   # nvcc and headers: enough for
#   cargo check --features cuda                          # `cargo check` (what CI runs)
#
# Settings (environment):
#   D4S_CUDA_VERSION  13.0, 13.1 or 13.2 (default 13.0). The GPU's driver must support at least this
#                     version (`nvidia-smi` shows "CUDA Version"): candle's kernels are PTX, which the
#                     driver compiles at start-up and refuses when the toolkit is newer than it.
#                     Only CUDA 13 ships nvcc on PyPI; for a CUDA 12 driver, install NVIDIA's toolkit.
#   D4S_CUDA_VENV     where the wheels go (default ~/.cache/d4s/cuda-$D4S_CUDA_VERSION).
#   CUDA_COMPUTE_CAP  the GPU's compute capability without the dot (default 80: A100; 90 is H100,
#                     89 is L4/RTX 40xx, 86 is RTX 30xx). PTX built for 80 also runs on newer GPUs.
set -euo pipefail

mode=full
case "${1:-}" in
  --compile-only) mode=compile ;;
  "") ;;
  *) echo "usage: $0 [--compile-only]" >&2; exit 2 ;;
esac

version=${D4S_CUDA_VERSION:-13.0}
case "$version" in
  13.0|13.1|13.2) ;;
  *) echo "error: D4S_CUDA_VERSION=$version: use 13.0, 13.1 or 13.2 (only CUDA 13 has nvcc on PyPI; later minors have no matching CCCL wheel)" >&2; exit 2 ;;
esac
venv=${D4S_CUDA_VENV:-$HOME/.cache/d4s/cuda-$version}

# The compiler, its front end (crt) and back end (nvvm), the runtime headers/library, and CCCL
# (libcu++'s <nv/target>, which cuda_fp16.h includes).
packages=("nvidia-cuda-nvcc==$version.*" "nvidia-cuda-crt==$version.*" "nvidia-nvvm==$version.*"
          "nvidia-cuda-runtime==$version.*" "nvidia-cuda-cccl==$version.*")
if [ "$mode" = full ]; then
  # What candle links: cuBLAS(Lt), cuRAND, NVRTC. cuBLAS 13.0 runs on every CUDA 13 driver.
  packages+=("nvidia-cuda-nvrtc==$version.*" "nvidia-cublas==13.0.*" "nvidia-curand>=10.4,<10.5")
fi

if [ ! -x "$venv/bin/pip" ]; then
  python3 -m venv "$venv" >&2
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}" >&2

root=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')
[ -x "$root/bin/nvcc" ] || { echo "error: no nvcc in $root/bin" >&2; exit 1; }

link="$venv/link"
if [ "$mode" = full ]; then
  # The wheels ship versioned sonames only (libcublas.so.13); the linker wants libcublas.so.
  mkdir -p "$link/stubs"
  for lib in "$root"/lib/lib*.so.*; do
    base=$(basename "$lib"); ln -sf "$lib" "$link/${base%%.so.*}.so"
  done
  # libcuda comes with the GPU driver, not the toolkit. Link against a stub that defines the
  # driver API's symbols (as the toolkit's own lib/stubs/libcuda.so does); at run time the
  # loader finds the driver's real libcuda.so.1. The stub is never on LD_LIBRARY_PATH.
  if [ ! -e "$link/stubs/libcuda.so" ]; then
    gcc -E -P -x c -I "$root/include" - <<<'#include <cuda.h>' \
      | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | sed 's/[[:space:](]//g' | sort -u \
      | sed 's/.*/void &(void) {}/' > "$link/stubs/cuda_stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/stubs/libcuda.so" "$link/stubs/cuda_stub.c"
  fi
fi

cat <<ENV
export CUDA_ROOT="$root"
export CUDA_PATH="$root"
export CUDA_COMPUTE_CAP="\${CUDA_COMPUTE_CAP:-80}"
export PATH="$root/bin:\$PATH"
export NVCC_APPEND_FLAGS="-isystem $root/include/cccl"
ENV
if [ "$mode" = full ]; then
  cat <<ENV
export RUSTFLAGS="\${RUSTFLAGS:-} -L native=$link -L native=$link/stubs"
export LD_LIBRARY_PATH="$root/lib:\${LD_LIBRARY_PATH:-}"
ENV
fi
