#!/usr/bin/env bash
# Builds the CUDA-emulating _C (tests only; see cuda_emu.h) into OUT_DIR and prints the module's path.
#   bash csrc/testing/cuda_emu/build.sh [OUT_DIR]     (default: build/cuda_emu in the source tree)
# Needs cmake, a C++17 compiler and pybind11 in the running Python. Incremental: a second call
# rebuilds only what changed.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
OUT="${1:-$REPO/build/cuda_emu}"
PY="${PYTHON:-python}"
mkdir -p "$OUT"
GEN=()
command -v ninja > /dev/null 2>&1 && GEN=(-G Ninja)
# MEDSEG_EXT_CUDA_EMU_ASAN=1: with AddressSanitizer, so an out-of-bounds access in a kernel stops the
# run with a report (load it with LD_PRELOAD="$(g++ -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0)
SAN=()
if [ "${MEDSEG_EXT_CUDA_EMU_ASAN:-0}" = 1 ]; then
  SAN=(-DCMAKE_CXX_FLAGS="-fsanitize=address -fno-omit-frame-pointer" -DCMAKE_MODULE_LINKER_FLAGS="-fsanitize=address"
       -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address")
fi
cmake -S "$REPO" -B "$OUT/cmake" "${GEN[@]}" "${SAN[@]}" -DMEDSEG_EXT_CUDA_EMU=ON -DCMAKE_BUILD_TYPE=Release \
  -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v "$PY")" \
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$OUT" > "$OUT/configure.log" 2>&1 \
  || { tail -n 40 "$OUT/configure.log" >&2; exit 1; }
cmake --build "$OUT/cmake" -j "${MEDSEG_EXT_BUILD_JOBS:-2}" > "$OUT/build.log" 2>&1 \
  || { grep -E -A5 "error" "$OUT/build.log" | head -n 80 >&2; exit 1; }
ls "$OUT"/_C*.so
