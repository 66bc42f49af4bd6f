#!/usr/bin/env bash
# Run HERE (the machine with PyPI), from the repository root, before a GPU session: fetches the peer
# libraries the GPU machine lacks (it has torch, triton, cupy, pybind11, scipy, opencv, hypothesis, pytest
# but no package registry) as Python 3.12 wheels into .whl/ (git-ignored through .git/info/exclude), at
# the versions this checkout's venv has. Pure-Python projects published only as sdists are built into
# wheels here. Total ≈ 11 MiB, far under the device tool's 64 MiB carry limit.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
# peer -> the version installed here (unpinned when it is not installed)
PEERS=(monai captum zennit giotto-ph ripser persim deprecated grad-cam ttach kornia kornia_rs)
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for p in "${PEERS[@]}"; do
  v="$(python -m pip show "$p" 2>/dev/null | awk '/^Version:/{print $2}' || true)"
  spec="$p${v:+==$v}"
  if ! python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
       "${PLAT[@]}" -d .whl "$spec" 2>/dev/null; then
    # no wheel on PyPI (pure-Python sdist): build one
    python -m pip wheel -q --no-deps -w .whl "$spec" || echo "prepare_wheels: could not get $spec (skipped)"
  fi
done
ls -l .whl
du -sh .whl
