"""Peak memory against population size, materialize vs fused: one subprocess per point (tools/gpu_check.py at
its "cpu" size, one device), peak host RSS read from the child's rusage (and device peak bytes where the
backend reports them). Replaces its section of benchmarks/RESULTS.md.

    python -m benchmarks.memory_modes [--populations 4,8,16] [--size cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks import RESULTS_PAGE
from benchmarks.common import measured_run, write_section

ROOT = Path(__file__).resolve().parents[1]


def point(size: str, mode: str, population: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
        _, peak = measured_run([sys.executable, str(ROOT / "tools/gpu_check.py"), "--size", size, "--modes", mode,
                                "--population", str(population), "--batch-size", "0",  # all in flight
                                "--repeats", "1", "--out", str(out)], env)  # the child's own peak RSS
        run = json.loads(out.read_text())["runs"][0]
    run["peak_rss_mib"] = peak / 2**20
    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--populations", default="4,8,16")
    parser.add_argument("--size", default="cpu")
    args = parser.parse_args()
    rows = []
    for mode in ("materialize", "fused"):
        for p in map(int, args.populations.split(",")):
            r = point(args.size, mode, p)
            rows.append(r)
            print(json.dumps(r), flush=True)
    lines = [f"Model: tools/gpu_check.py size `{args.size}` ({rows[0]['params'] / 1e6:.1f}M params, float32, "
             f"task_arithmetic of 2 sources + base), 1 CPU device, all candidates in flight (batch = population). "
             f"Peak host RSS of the child process (includes the JAX runtime, ~0.3-0.5 GiB).", "",
             "| mode | population | peak RSS MiB | step s | candidates/s |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['population']} | {r['peak_rss_mib']:.0f} | {r['step_s']:.3f} | "
                     f"{r['candidates_per_s']:.1f} |")
    write_section(RESULTS_PAGE,
                  "scale-out: peak memory vs population, materialize vs fused (benchmarks/memory_modes.py)",
                  "\n".join(lines))

if __name__ == "__main__":
    main()
