"""`jaxmerge bench --quick` runs end to end and writes well-formed results (CI keeps the benchmarks alive).

Only the shape of the output is checked, never the numbers: timings belong in benchmarks/RESULTS.md, not in
assertions. Run in a subprocess with one CPU device (the benchmark's own setting, not conftest's 8 fake ones).
It compiles with the suite's flags: XLA's defaults are exercised by tools/gpu_check.py's dry run and by
tests/test_runtime.py's repeated merge, and this run's figures are never read.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tests.xla import suite_flags

KEYS = {"name", "value", "unit", "baseline", "ratio", "goal", "met"}


def run_bench(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "XLA_FLAGS": suite_flags(devices=1)}  # compiled as the suite compiles (tests/xla.py)
    return subprocess.run([sys.executable, "-m", "jaxmerge.cli", "bench", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd="/")


@pytest.mark.slow
@pytest.mark.bench
def test_quick_bench_writes_results(tmp_path):
    out = tmp_path / "bench"
    proc = run_bench("--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert isinstance(results, list) and len(results) >= 4
    for r in results:
        assert KEYS <= set(r), r
        assert isinstance(r["name"], str) and r["name"] and isinstance(r["unit"], str)
        assert isinstance(r["value"], float) and math.isfinite(r["value"]), r
        assert r["met"] in (True, False, None) and (r["goal"] is None) == (r["met"] is None), r
        if r["baseline"] is not None and r["ratio"] is not None:
            assert math.isclose(r["ratio"], r["value"] / r["baseline"], rel_tol=1e-9), r
    names = " ".join(r["name"] for r in results)
    for needed in ("evaluations/s", "bare forward", "recompilations", "scaling"):
        assert needed in names
    table = (out / "results.md").read_text()
    assert "| benchmark | value |" in table and table.count("\n| ") >= len(results) + 1
    assert sorted(p.name for p in out.glob("scaling_*.png")) == [
        "scaling_model_size.png", "scaling_population.png", "scaling_sources.png"]


def test_bench_refuses_a_non_empty_out_dir(tmp_path):
    (tmp_path / "other.txt").write_text("not a bench result")
    proc = run_bench("--quick", "--out", str(tmp_path), timeout=120)
    assert proc.returncode == 2
    assert "non-empty" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
