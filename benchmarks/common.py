"""Shared pieces of the benchmarks: repeated timing with its noise, result records, machine description.

Every figure is the median of several warm runs, reported with its min and its spread ((max - min) / median),
because the CPU these run on is shared: a single timing says little, a spread says how much to trust it.
A result record is what `results.json` holds; its goal is a small expression ("ratio >= 20", "value == 0")
so that "met" is computed in one place from the numbers, never typed in by hand.
"""
from __future__ import annotations

import argparse
import json
import operator
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

GOAL_OPS = {">=": operator.ge, "<=": operator.le, "==": operator.eq}


class Timing(NamedTuple):
    """Seconds of each warm run."""
    runs: tuple[float, ...]

    @property
    def min(self) -> float:
        return min(self.runs)

    @property
    def mean(self) -> float:
        return statistics.mean(self.runs)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def noise(self) -> float:
        """Spread of the runs relative to their median: 0.1 means the runs differ by up to 10 %."""
        return (max(self.runs) - min(self.runs)) / self.median if self.median > 0 else 0.0

    def text(self) -> str:
        return f"{self.median:.4g} s (min {self.min:.4g}, spread {100 * self.noise:.0f} %, n={len(self.runs)})"


def repeat(fn: Callable[[], object], runs: int, warmup: int = 1) -> Timing:
    """Time `fn` (which must block until its result exists) `runs` times after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return Timing(tuple(out))


# Runs one command and prints [seconds, exit code, the command's peak RSS in bytes]. The command is spawned from
# this small process, not from the benchmark: a child's ru_maxrss keeps the peak of the process it was spawned
# from (vfork + execve, as subprocess does on Linux), and the benchmark's own peak (it may have built models)
# would hide the command's. The floor is this launcher's resident size, ~20 MB.
_LAUNCH = """import json, os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps([time.perf_counter() - start, os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024]))"""


def measured_run(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    """(wall seconds, peak resident bytes) of one run of `cmd` (its stdout discarded) in environment `env`
    (default: this one's); a failure raises naming the command line (both callers run `python ...`, so its
    first word alone says nothing) with the tail of its stderr."""
    with tempfile.TemporaryFile() as err:
        done = subprocess.run([sys.executable, "-c", _LAUNCH, *cmd], env=os.environ if env is None else env,
                              stdout=subprocess.PIPE, stderr=err, text=True)
        seconds, code, peak = json.loads(done.stdout) if done.returncode == 0 else (0.0, done.returncode, 0)
        if code != 0:
            err.seek(0)
            raise RuntimeError(f"{shlex.join(cmd)[:300]} failed: {err.read()[-2000:].decode(errors='replace')}")
    return seconds, peak


def check_goal(goal: str | None, value: float, ratio: float | None) -> bool | None:
    """Evaluate a goal such as "ratio >= 20" or "value == 0"; None when there is no goal."""
    if goal is None:
        return None
    subject, op, threshold = goal.split()
    x = ratio if subject == "ratio" else value
    return None if x is None else bool(GOAL_OPS[op](x, float(threshold)))


def result(name: str, value: float, unit: str, *, baseline: float | None = None, goal: str | None = None,
           noise: float | None = None, ratio: float | None = None, note: str = "") -> dict:
    """One row of results.json. `ratio` defaults to value / baseline; `noise` is the spread of `value`."""
    if ratio is None and baseline:
        ratio = value / baseline
    return {"name": name, "value": float(value), "unit": unit,
            "baseline": None if baseline is None else float(baseline),
            "ratio": None if ratio is None else float(ratio), "goal": goal,
            "met": check_goal(goal, value, ratio), "noise": None if noise is None else float(noise), "note": note}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    found = re.search(r"MemTotal:\s+(\d+) kB", text)
    return int(found.group(1)) / 2**20 if found else None


def machine() -> dict:
    """What a reader needs to weigh the numbers: CPU, cores, memory, versions, devices and the load now."""
    import jax
    import jaxlib
    info = {"cpu": _cpu_model(), "cores": os.cpu_count(), "memory_gib": _memory_gib(),
            "python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "backend": jax.default_backend(), "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
            "load_1_5_15": [round(x, 2) for x in os.getloadavg()]}
    try:
        import torch
        info["torch"] = f"{torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        info["torch"] = None
    return info


def machine_text(info: dict) -> str:
    mem = f"{info['memory_gib']:.0f} GiB" if info.get("memory_gib") else "unknown memory"
    load = info["load_1_5_15"]
    return (f"{info['cpu']}, {info['cores']} cores visible, {mem}; Python {info['python']}, jax {info['jax']} / "
            f"jaxlib {info['jaxlib']} ({info['backend']}, devices: {info['devices']}), torch {info['torch']}; "
            f"load average {load[0]} / {load[1]} / {load[2]} (1 / 5 / 15 min)")


def page_machine() -> str:
    """The machine line of a results section: `machine_text` of the machine now."""
    return machine_text(machine())


def write_section(path: Path, title: str, body: str, first: bool = False) -> None:
    """Replace the `## title` section of a Markdown page, leaving the other sections alone. A new section goes
    at the end, or right under the page title with `first`."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    elif first:
        head, sep, rest = text.partition("\n## ")
        text = head.rstrip() + "\n\n" + section + ("\n## " + rest if sep else "")
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)


def module_main(measure: Callable, doc: str) -> None:
    """`python -m benchmarks.NAME [--quick] [--out DIR]`: one benchmark alone; prints its section and rows."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("."), help="where plots go (default: here)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results, body = measure(args.quick, args.out)
    print(body)
    for r in results:
        print(r)
