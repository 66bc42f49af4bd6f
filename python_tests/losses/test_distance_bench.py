"""The distance benchmark module runs end to end on tiny inputs (no timing claims)."""
import pytest

from medseg_ext.bench import losses_distance as bench


def test_bench_runs_small(monkeypatch):
    pytest.importorskip("scipy")
    monkeypatch.setitem(bench.SIZES, "tiny", {"B": 1, "C": 2, "S": 12, "edt128": False})
    lines = []
    res = bench.run(size="tiny", repeat=1, measure_memory=False, out=lines.append)
    impls = {r["impl"] for r in res["rows"]}
    assert "medseg_ext" in impls and "scipy loop" in impls
    edt_row = res["rows"][0]
    assert edt_row["check"].startswith("max|Δ| vs scipy") and float(edt_row["check"].split()[-1]) < 1e-5
    assert "|" in res["table"]
    with pytest.raises(ValueError, match="size"):
        bench.run(size="huge")
