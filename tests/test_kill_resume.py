"""Runs survive kills: SIGKILL a real `jaxmerge evolve` at seeded random points (mid-generation, mid-checkpoint
write, mid-export), `--resume` each time, and the run still ends bit-identical to one uninterrupted run. A damaged
newest checkpoint falls back to the previous one with a warning, and ends bit-identical too.

Budget: one uninterrupted reference run for the module (in-process), three short-lived subprocesses (kills),
two in-process resumes. The persistent compilation cache (a session tmp dir) is filled by the reference run,
so the subprocesses skip the big compile. Population 4, 2 layers, loglik task (no host callback).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxmerge.config import load_config
from jaxmerge.modes import evolve
from jaxmerge.io import load
from tests.evolve_world import build_world, write_config

GENERATIONS = 6
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env():
    """The subprocesses' environment: the session's compilation cache (tests/conftest.py) comes with it."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def world(tmp_path_factory, env):
    root = build_world(tmp_path_factory.mktemp("kill_world"))
    return root, write_config(root, generations=GENERATIONS)


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("kill_ref") / "run"
    evolve(load_config(world[1]), out, progress=False)
    return out


# The export of a tiny model takes milliseconds; this harness holds it open (weights half written) so that the
# kill lands inside it every time instead of by luck.
SLOW_EXPORT = """
import sys, time
import jaxmerge.io as io
write = io._write_weights
def slow(tmp, tensors, max_bytes):
    write(tmp, dict(list(tensors.items())[:1]), max_bytes)
    time.sleep(600)
io._write_weights = slow
from jaxmerge.cli import main
sys.exit(main(sys.argv[1:]))
"""


def spawn(config: Path, out: Path, env: dict, resume: bool, slow_export: bool = False) -> subprocess.Popen:
    head = [sys.executable, "-c", SLOW_EXPORT] if slow_export else [sys.executable, "-m", "jaxmerge.cli"]
    argv = [*head, "evolve", str(config), "--out", str(out), "--no-progress"] + (["--resume"] if resume else [])
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_when(proc: subprocess.Popen, ready, delay: float = 0.0, timeout: float = 400) -> None:
    """Poll every 2 ms until `ready()`; then wait `delay` s and SIGKILL. Fails if the run ends first."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"the run exited ({proc.returncode}) before the kill point"
        assert time.time() < deadline, "the kill point never came"
        time.sleep(0.002)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def committed(out: Path, step: int):
    return lambda: (out / "checkpoints" / str(step) / "commit_success.txt").exists()


def writing(out: Path):
    """True while some checkpoint is being written: orbax's `N.orbax-checkpoint-tmp` holds a half-written state."""
    def check():
        d = out / "checkpoints"
        return d.is_dir() and any((p / "state.orbax-checkpoint-tmp").exists() or (p / "state").exists()
                                  for p in d.glob("*.orbax-checkpoint-tmp"))
    return check


def exporting(out: Path):
    return lambda: any(out.glob(".model.tmp-*"))


def running(out: Path) -> bool:
    """best.json shows the best so far of an unfinished run (or is not written yet)."""
    return not (out / "best.json").exists() or json.loads((out / "best.json").read_text())["status"] == "running"


def same_run(a: Path, b: Path) -> None:
    """Bit-identical: best.json, the history (minus wall-clock fields), every exported tensor."""
    best = [json.loads((d / "best.json").read_text()) for d in (a, b)]
    for key in ("fitness", "generation", "raw", "merge_key", "genes", "evaluations"):
        assert best[0][key] == best[1][key], key
    assert history(a) == history(b)
    for x, y in zip(jax.tree.leaves(load(a / "model").params), jax.tree.leaves(load(b / "model").params)):
        np.testing.assert_array_equal(x, y)


def history(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("seconds", "evals_per_s")} for r in rows]


def test_killed_three_times_then_resumed_ends_bit_identical(world, reference, env, tmp_path):
    rng = random.Random(2403)
    config, out = world[1], tmp_path / "run"
    # 1: a random point inside a generation, after checkpoint 1 or 2 committed
    proc = spawn(config, out, env, resume=False)
    kill_when(proc, committed(out, rng.choice([1, 2])), delay=rng.uniform(0.0, 0.2))
    assert running(out) and not (out / "model").exists()
    # 2: during a checkpoint write (a `*.orbax-checkpoint-tmp` directory holding a state being written)
    proc = spawn(config, out, env, resume=True)
    kill_when(proc, writing(out))
    assert any((out / "checkpoints").glob("*.orbax-checkpoint-tmp")), "the kill missed the checkpoint write"
    # 3: during the export, after the last generation: no directory that looks like a finished model
    proc = spawn(config, out, env, resume=True, slow_export=True)
    kill_when(proc, exporting(out), delay=0.5)
    assert any(out.glob(".model.tmp-*/*.safetensors")), "the kill missed the export"
    assert not (out / "model").exists() and running(out)
    # resume to the end, in-process
    evolve(load_config(config), out, resume=True, progress=False)
    same_run(out, reference)
    assert (out / "model" / "config.json").is_file()
    assert not [p for p in out.rglob(".*") if ".tmp-" in p.name and "checkpoints" not in p.parts]  # swept


def damage(step_dir: Path) -> None:
    """Overwrite every file of the checkpoint's state and record with garbage of the same length."""
    for f in [*(step_dir / "state").rglob("*"), *(step_dir / "record").rglob("*")]:
        if f.is_file() and f.name != "commit_success.txt":
            f.write_bytes(b"\xde\xad" * (max(f.stat().st_size, 2) // 2))


def test_damaged_latest_checkpoint_falls_back_to_the_previous_with_a_warning(world, reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    for name in ("model", "plots", "best.json", "recipe.yml", "history.jsonl"):
        (shutil.rmtree if (out / name).is_dir() else os.remove)(out / name)
    steps = sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == GENERATIONS and len(steps) >= 2
    damage(out / "checkpoints" / str(GENERATIONS))
    with pytest.warns(UserWarning, match=f"checkpoint {GENERATIONS} could not be restored"):
        evolve(load_config(world[1]), out, resume=True, progress=False)
    same_run(out, reference)
