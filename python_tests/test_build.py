"""The installed package: compiled module, backends() report, dispatch rules, error type."""
import os

import pytest
import torch

import medseg_ext
from medseg_ext import _dispatch


def test_imports_installed_package_when_asked():
    # CI sets this to prove the tests ran against the installed wheel, not the source tree
    root = os.environ.get("MEDSEG_EXT_SOURCE_TREE")
    if root:
        assert not os.path.abspath(medseg_ext.__file__).startswith(os.path.abspath(root) + os.sep)


def test_backends_report():
    info = medseg_ext.backends()
    assert info["cpu"]["usable"] and info["cpu"]["error"] is None
    assert info["cpu"]["threads"] >= 1
    assert info["cpu"]["isa"] in ("avx512", "avx2+fma", "baseline")
    assert set(info) >= {"cpu", "cuda", "triton", "torch"}
    if info["cuda"]["compiled"]:
        assert info["cuda"]["architectures"], "a CUDA build names its architectures"
    assert info["torch"]["version"] == torch.__version__
    assert medseg_ext.__version__


def test_kernel_errors_arrive_as_value_error_with_message():
    C = _dispatch.extension()
    logits = torch.randn(1, 2, 3)
    labels = torch.zeros(1, 4, dtype=torch.long)  # spatial mismatch caught inside C++
    out = torch.empty(1, 2, 4, dtype=torch.float64)
    from medseg_ext._tensor import desc

    with pytest.raises(ValueError, match="labels: spatial dim 0 is 4 but logits has 3"):
        C.region_stats_cpu(desc(logits), desc(labels), out.data_ptr(), False, True, False, 0)


def test_select_backend_rules(monkeypatch):
    cpu = torch.zeros(1)
    assert _dispatch.select_backend(x=cpu) == "cpu"
    with pytest.raises(ValueError, match="y: on device meta"):
        _dispatch.select_backend(x=cpu, y=torch.zeros(1, device="meta"))
    with pytest.raises(ValueError, match="x: device type 'meta'"):
        _dispatch.select_backend(x=torch.zeros(1, device="meta"))
    monkeypatch.setenv(_dispatch.FORCE_REFERENCE_ENV, "1")
    assert _dispatch.select_backend(x=cpu) == "reference"
    with medseg_ext.use_backend("cpu"):
        assert _dispatch.select_backend(x=cpu) == "cpu"
    with pytest.raises(ValueError, match="backend"):
        with medseg_ext.use_backend("fortran"):
            pass


def test_cuda_tensor_without_gpu_backend_is_a_clear_error(monkeypatch):
    if torch.cuda.is_available():
        monkeypatch.setenv(_dispatch.GPU_BACKEND_ENV, "cuda")
        monkeypatch.setattr(_dispatch, "cuda_kernels_usable", lambda: False)
        with pytest.raises(RuntimeError, match="no GPU backend is usable"):
            _dispatch.select_backend(x=torch.zeros(1, device="cuda"))
    else:
        pytest.skip("needs a CUDA device to construct a CUDA tensor")


def test_cli_info_runs(capsys):
    from medseg_ext import cli

    assert cli.main(["info"]) in (0, None)
    assert "cpu" in capsys.readouterr().out


def test_gpu_session_scripts_parse():
    """benchmarks/gpu/*.sh run only on a lent GPU machine (minutes of scarce device time): a syntax
    error there would cost a session, so bash checks them here."""
    import shutil
    import subprocess

    root = os.environ.get("MEDSEG_EXT_SOURCE_TREE") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    scripts = [os.path.join(root, "benchmarks", "gpu", n) for n in ("session.sh", "prepare_wheels.sh")]
    if shutil.which("bash") is None or not all(os.path.exists(s) for s in scripts):
        pytest.skip("needs bash and the source tree's benchmarks/gpu")
    for s in scripts:
        out = subprocess.run(["bash", "-n", s], capture_output=True, text=True)
        assert out.returncode == 0, f"{s}: {out.stderr}"
