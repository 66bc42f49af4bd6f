"""medseg_ext.tune_cpu_malloc: argument checks here; its process-wide effect in fresh subprocesses.

The oracle for the effect is the kernel's minor-page-fault counter: a 64 MiB buffer is above
glibc's largest dynamic mmap threshold, so by default every allocation of it maps fresh pages
(≈ 16,384 faults each time); once tuned, freed buffers are reused and touching them again faults
(almost) nothing.
"""
import os
import platform
import subprocess
import sys

import pytest

import medseg_ext

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _thp_always() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False

_PROBE = r"""
import resource, sys, torch
import medseg_ext
if sys.argv[1] == "call":
    assert medseg_ext.tune_cpu_malloc() is True
n = 16 << 20                       # 16 Mi float32 = 64 MiB
faults = []
for _ in range(6):                 # four live 64 MiB buffers per round, as a forward keeps its activations
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    bufs = [torch.empty(n).fill_(1.0) for _ in range(4)]
    del bufs
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
# the first rounds fault in any mode (glibc's 64-byte-aligned carving settles after a round or two)
print("RESULT", min(faults[3:]), medseg_ext.cpu_malloc_tuned(), medseg_ext.backends()["cpu"]["malloc_tuned"])
"""


def _probe(mode: str, env_value=None):
    env = dict(os.environ)
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    env.pop(medseg_ext._malloc.TUNE_ENV, None)
    if env_value is not None:
        env[medseg_ext._malloc.TUNE_ENV] = env_value
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")][-1].split()
    return int(line[1]), line[2], line[3]


@pytest.mark.skipif(not GLIBC, reason="glibc malloc only")
@pytest.mark.skipif(_thp_always(), reason="transparent huge pages always on: one fault per 2 MiB")
def test_default_allocator_faults_on_every_large_allocation():
    faults, tuned, reported = _probe("default")
    assert faults > 30000         # 4 × 64 MiB / 4 KiB = 65,536 pages (fewer with transparent huge pages)
    assert tuned == "None" and reported == "None"


@pytest.mark.skipif(not GLIBC, reason="glibc malloc only")
@pytest.mark.parametrize("how", ["call", "env"])
def test_tuned_allocator_reuses_freed_buffers(how):
    faults, tuned, reported = _probe("call" if how == "call" else "default", "1" if how == "env" else None)
    assert faults < 2000
    assert int(tuned) == medseg_ext._malloc.DEFAULT_THRESHOLD == int(reported)


@pytest.mark.skipif(not GLIBC, reason="glibc malloc only")
def test_env_threshold_in_bytes_and_bad_value():
    env = dict(os.environ, MEDSEG_EXT_TUNE_MALLOC=str(256 << 20))
    out = subprocess.run([sys.executable, "-c", "import medseg_ext; print(medseg_ext.cpu_malloc_tuned())"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == str(256 << 20)
    env["MEDSEG_EXT_TUNE_MALLOC"] = "yes"
    out = subprocess.run([sys.executable, "-c", "import medseg_ext"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode != 0 and "MEDSEG_EXT_TUNE_MALLOC" in out.stderr


@pytest.mark.parametrize("bad, exc", [(1.5, TypeError), (True, TypeError), ("1", TypeError),
                                      (1000, ValueError), (2 ** 31, ValueError), (-1, ValueError)])
def test_threshold_checked(bad, exc):
    with pytest.raises(exc, match="threshold"):
        medseg_ext.tune_cpu_malloc(bad)


def test_bench_flag_parsed():
    from medseg_ext.cli import build_parser
    assert build_parser().parse_args(["bench", "lrp", "--tune-malloc"]).tune_malloc is True
    assert build_parser().parse_args(["bench", "lrp"]).tune_malloc is False
