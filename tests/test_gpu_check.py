"""tools/gpu_check.py starts and writes its figures: the --dry-run path (tiny model, CPU) in a subprocess."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_dry_run_writes_figures_for_both_modes(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, str(ROOT / "tools/gpu_check.py"), "--dry-run", "--population", "4",
                    "--out", str(out)], check=True, env=env, timeout=300, capture_output=True)
    report = json.loads(out.read_text())
    assert report["size"] == "dry" and [r["mode"] for r in report["runs"]] == ["materialize", "fused"]
    for run in report["runs"]:
        assert run["compiles"] == 1 and run["step_s"] > 0 and run["forward_s"] > 0
        assert run["candidates_per_s"] == pytest.approx(4 / run["step_s"])
        assert run["achieved_tflops"] > 0 and 0 < run["mfu"] < 1
