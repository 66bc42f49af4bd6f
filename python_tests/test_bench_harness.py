"""The benchmark harness's CPU peak-memory measurement (a fresh subprocess per case)."""
import pytest
import torch

import medseg_ext
from medseg_ext.bench import harness

needs_proc = pytest.mark.skipif(not harness.cpu_peak_supported(), reason="needs Linux /proc/self/clear_refs")
SPEC = harness.CaseSpec("medseg_ext.bench.harness", "alloc_case", {"nbytes": 48 * harness.MiB})


@needs_proc
def test_peak_of_a_known_allocation():
    res = harness.peak_memory_cpu(SPEC)
    assert "error" not in res, res
    # 48 MiB touched once, plus a few pages of interpreter noise
    assert 47 * harness.MiB <= res["peak_bytes"] <= 52 * harness.MiB


@needs_proc
def test_child_imports_this_process_package_not_the_working_directory(tmp_path, monkeypatch):
    # The README's main job runs from the source checkout, whose medseg_ext/ has no compiled _C:
    # the measuring child must still import the package this process runs.
    shadow = tmp_path / "medseg_ext"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('the shadow package in the working directory')\n")
    monkeypatch.chdir(tmp_path)
    res = harness.peak_memory_cpu(SPEC)
    assert "error" not in res, res
    assert res["peak_bytes"] >= 47 * harness.MiB


def test_alloc_case_touches_the_bytes():
    case = harness.CaseSpec("medseg_ext.bench.harness", "alloc_case", {"nbytes": 4096}).build()
    out = case.run()
    assert isinstance(out, torch.Tensor) and out.numel() == 4096 and int(out.sum()) == 4096
    assert medseg_ext.__version__
