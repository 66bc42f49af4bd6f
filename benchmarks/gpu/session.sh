#!/usr/bin/env bash
# One prepared GPU session (run ON the lent GPU machine by the device tool, from the repository root):
#   device run: carry [".whl"], timeout_s 600,
#   command: "bash benchmarks/gpu/session.sh"            (or: ... session.sh tests | bench)
# 1. installs the carried peer wheels (benchmarks/gpu/prepare_wheels.sh, run beforehand on the dev machine),
# 2. builds medseg_ext with CUDA for the GPU's own architecture,
# 3. runs every test file that exercises CUDA/Triton on the GPU,
# 4. runs the GPU benchmarks in order of value, each under its own time limit,
# and leaves at most 8 files under $OUT (the tool's limit): build.log, tests.log, bench-<name>.txt
# (losses, detection, topology, other), results.tar.gz (the --json files). Budget: ~2 min build, ~2 min tests, the rest benches.
set -uo pipefail
STAGE="${1:-all}"
OUT="${OUT:-$PWD/gpu-session-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CI=true
PY=python3
T0=$SECONDS
# the device tool stops a command at 600 s: stay under it, whatever the stages cost
BUDGET="${BUDGET:-570}"
note() { printf '[%4ss] %s\n' "$((SECONDS - T0))" "$*" | tee -a "$OUT/tests.log"; }

if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "session.sh: torch sees no CUDA device here; this script is for the lent GPU machine" | tee "$OUT/build.log"
  exit 2
fi
if compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/build.log"
CC="$($PY -c 'import torch; p = torch.cuda.get_device_capability(); print(f"{p[0]}{p[1]}")')"
note "building for sm_$CC"
MEDSEG_EXT_CUDA=on MEDSEG_EXT_CUDA_ARCHS="$CC" MEDSEG_EXT_BUILD_JOBS="$(nproc)" \
  $PY -m pip install --no-build-isolation --no-deps -e . >> "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
$PY -c "import medseg_ext, json; print(json.dumps(medseg_ext.backends(), default=str))" | tee -a "$OUT/build.log"

if [ "$STAGE" = all ] || [ "$STAGE" = tests ]; then
  note "GPU tests"
  # every test file that runs on CUDA when a GPU is present (the rest is CPU-only and runs in CI)
  # python_tests/cuda_emu runs the CUDA code on CPU threads through an emulator (no GPU needed): left to CI
  mapfile -t FILES < <(grep -l -E "cuda|triton" python_tests/*/test_*.py | grep -v "^python_tests/cuda_emu/")
  # no -x: one run should show every GPU failure; a per-test limit keeps one hang from eating the budget
  PT_TIMEOUT=()
  $PY -c "import pytest_timeout" 2> /dev/null && PT_TIMEOUT=(--timeout 90)
  timeout 200 $PY -m pytest -q -rfE -p no:cacheprovider -o addopts="" "${PT_TIMEOUT[@]}" "${FILES[@]}" \
    >> "$OUT/tests.log" 2>&1
  note "pytest exit $?"
  tail -5 "$OUT/tests.log"
fi

if [ "$STAGE" = all ] || [ "$STAGE" = bench ]; then
  bench() {  # bench <seconds> <output name> <family> <args...>
    local limit=$1 name=$2 fam=$3; shift 3
    local left=$((BUDGET - (SECONDS - T0) - 15))
    if [ "$left" -lt 30 ]; then note "bench $fam skipped: session budget spent"; return; fi
    [ "$limit" -gt "$left" ] && limit=$left
    note "bench $fam $*"
    printf '\n######## medseg-ext bench %s --device cuda %s\n' "$fam" "$*" >> "$OUT/bench-$name.txt"
    timeout "$limit" $PY -m medseg_ext bench "$fam" --device cuda --json "$@" >> "$OUT/bench-$name.txt" 2>&1
    note "bench $fam exit $?"
  }
  touch /tmp/bench-start
  bench 120 losses losses --size paper
  bench 60 detection detection --size paper --repeat 20
  bench 90 topology topology --size large
  bench 60 other losses_distance
  bench 60 other lrp --size paper
  bench 45 other cam
  note "mser tiled tree on CUDA"
  left=$((BUDGET - (SECONDS - T0) - 15))
  if [ "$left" -ge 30 ]; then
    printf '\n######## python -m medseg_ext.bench._mser_tiled --device cuda\n' >> "$OUT/bench-other.txt"
    timeout "$(( left < 90 ? left : 90 ))" $PY -m medseg_ext.bench._mser_tiled --device cuda --repeat 3 \
      >> "$OUT/bench-other.txt" 2>&1
    note "mser tiled exit $?"
  fi
  find benchmarks/results -name '*.json' -newer /tmp/bench-start -print0 | xargs -0 -r tar czf "$OUT/results.tar.gz"
fi
note "done"
