"""The CUDA-emulating build of _C (csrc/testing/cuda_emu): the package's CUDA kernels and host drivers
run on CPU threads, so these tests check them on a machine without a GPU.

The module comes from MEDSEG_EXT_CUDA_EMU_MODULE (a path to the .so; .ci/run builds it), else it is
built (incrementally) into build/cuda_emu of the source tree by csrc/testing/cuda_emu/build.sh. Without
cmake or a compiler the tests skip, except under CI, where they fail."""
import glob
import importlib.util
import os
import shutil
import subprocess

import pytest

_REPO = os.environ.get("MEDSEG_EXT_SOURCE_TREE") or os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _module_path() -> str:
    path = os.environ.get("MEDSEG_EXT_CUDA_EMU_MODULE")
    if path:
        if not os.path.isfile(path):
            pytest.fail(f"MEDSEG_EXT_CUDA_EMU_MODULE={path!r} does not exist")
        return path
    script = os.path.join(_REPO, "csrc", "testing", "cuda_emu", "build.sh")
    why = None
    if not os.path.isfile(script):
        why = f"no source tree with {script}"
    elif shutil.which("cmake") is None:
        why = "cmake not found"
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the CUDA emulator module cannot be built: {why}")
        pytest.skip(f"the CUDA emulator module cannot be built: {why}")
    out = os.path.join(_REPO, "build", "cuda_emu")
    run = subprocess.run(["bash", script, out], capture_output=True, text=True)
    if run.returncode != 0:
        pytest.fail(f"building the CUDA emulator module failed:\n{run.stderr[-4000:]}")
    found = glob.glob(os.path.join(out, "_C*.so"))
    assert found, f"build.sh succeeded but left no _C*.so in {out}"
    return found[0]


@pytest.fixture(scope="session")
def emu():
    """The CUDA-emulating _C module (loaded beside the real one; it has its own pybind11 internals)."""
    spec = importlib.util.spec_from_file_location("medseg_cuda_emu._C", _module_path())
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    info = mod.build_info()
    assert info.get("cuda_emulated") and info["cuda_compiled"], info
    return mod
