"""Numerical faults end to end through `jaxmerge evolve`: NaN/Inf candidates score worst, are counted in
history.jsonl and best.json, and the run goes on; a generation where every candidate is NaN stops with one line
(exit 2), keeps the last good checkpoint, and `--resume` continues from it once the cause is gone.

The fault is injected into the candidate fitness as a traced switch carried in `data` (0: none, 1: NaN for
candidates with raw[0] > 0.75 and +Inf for raw[0] < 0.35, 2: NaN for all), so one compiled step serves every run.
+Inf is the sharp case: taken at face value it would win. The finite band holds ~2/3 of the first generation's
candidates (raw[0] ~ N(0.5, 0.2)), so a generation of 4 rarely has none (the case the next test makes on purpose).
"""
from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

import jaxmerge.modes as modes_module
from jaxmerge.cli import main
from jaxmerge.config import load_config
from jaxmerge.evolve.records import read_history
from tests.evolve_world import build_world, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = build_world(tmp_path_factory.mktemp("nan_world"))
    return root, write_config(root, generations=3)


@pytest.fixture
def fault(monkeypatch):
    """Set `fault[0]` before a run: the mode every candidate fitness of that run sees (as a traced int32)."""
    mode = [0]
    table = modes_module.builders()

    def build_faulty(cfg, mesh, models):
        space = table["ps"](cfg, mesh, models)
        clean = space.candidate

        def candidate(raw, key, data):
            value = clean(raw, key, {k: v for k, v in data.items() if k != "fault"})
            some = jnp.where(raw[0] > 0.75, jnp.nan, jnp.where(raw[0] < 0.35, jnp.inf, value))
            return jnp.select([data["fault"] == 1, data["fault"] == 2], [some, jnp.float32(jnp.nan)], value)
        return space._replace(data={**space.data, "fault": np.int32(mode[0])}, candidate=candidate)

    monkeypatch.setattr(modes_module, "builders", lambda: {**table, "ps": build_faulty})
    return mode


def rows(out):
    return read_history(out)


def test_nan_and_inf_candidates_score_worst_are_counted_and_the_run_goes_on(world, tmp_path, fault, capsys):
    fault[0] = 1
    out = tmp_path / "run"
    assert main(["evolve", str(world[1]), "--out", str(out), "--no-progress"]) == 0, capsys.readouterr().err
    history, best = rows(out), json.loads((out / "best.json").read_text())
    assert [r["generation"] for r in history] == [1, 2, 3]
    assert best["nonfinite"] == sum(r["nonfinite"] for r in history) > 0
    assert any(0 < r["nonfinite"] < 4 for r in history)
    assert all(np.isfinite([r["best"], r["mean"], r["std"], r["best_so_far"]]).all() for r in history)
    assert np.isfinite(best["fitness"]) and best["fitness"] < 0  # a real loglik, not +Inf
    assert 0.35 <= best["raw"][0] <= 0.75  # the winner is a candidate whose fitness was finite
    assert (out / "model" / "config.json").is_file()


def test_all_nan_generation_stops_with_one_line_and_resumes_from_the_last_good_checkpoint(
        world, tmp_path, fault, capsys):
    out = tmp_path / "run"
    modes_module.evolve(load_config(world[1]), out, progress=False, stop_after=1)  # checkpoint 1, clean
    fault[0] = 2
    assert main(["evolve", str(world[1]), "--out", str(out), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and "all NaN/Inf" in lines[-1] and "generation 2" in lines[-1], lines
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == ["1"]
    assert json.loads((out / "best.json").read_text())["status"] == "running"  # the best of generation 1
    assert not (out / "model").exists()
    fault[0] = 0
    assert main(["evolve", str(world[1]), "--out", str(out), "--resume", "--no-progress"]) == 0
    history = rows(out)
    assert [r["generation"] for r in history] == [1, 2, 3] and all(r["nonfinite"] == 0 for r in history)

