"""Two processes on localhost (4 fake CPU devices each, JAX's distributed runtime, gloo collectives) run short
evolutions (PS, and DFS with the model axis across the processes); the results are bit-identical to the
single-process 8-device run (and, for PS, to the unsharded 1-device run), and only process 0 writes outputs.
The references run in this process (conftest gives it 8 fake CPU devices): one spawn fewer per comparison."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
import yaml

from jaxmerge.config import load_config
from jaxmerge.evolve.records import read_history
from jaxmerge.io import load
from jaxmerge.modes import evolve
from tests.evolve_world import build_world, write_config
from tests.xla import suite_flags

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(config, out, devices: int, extra=()):
    env = {**os.environ, "XLA_FLAGS": suite_flags(devices),
           "JAXMERGE_COMPILATION_CACHE": "off"}
    cmd = [sys.executable, "-m", "jaxmerge.cli", "evolve", str(config), "--out", str(out), "--no-progress", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


def test_two_processes_equal_one_process_of_eight_devices(tmp_path):
    world = build_world(tmp_path / "world")
    text = write_config(world, method="task_arithmetic", extra_evolve="", generations=2, subset=4).read_text()
    config = world / "mh.yml"
    config.write_text(text.replace("population: 4", "population: 8") + "mesh: {pop: 8}\n")
    port = free_port()
    procs = [launch(config, tmp_path / "multi", 4, ("--coordinator", f"localhost:{port}", "--num-processes", "2",
                                                    "--process-id", str(i))) for i in range(2)]
    outs = [finish(p) for p in procs]
    reports = [[line for line in o.splitlines() if line.startswith("{\"fitness\"")] for o in outs]
    assert len(reports[0]) == 1 and reports[1] == [], outs  # only process 0 reports
    evolve(load_config(config), tmp_path / "single", progress=False)  # in this process: its 8 fake devices
    unsharded = world / "one.yml"  # the same run on one device: the population is not split at all
    unsharded.write_text(text.replace("population: 4", "population: 8") + "mesh: {pop: 1}\n")
    evolve(load_config(unsharded), tmp_path / "one", progress=False)
    runs = {name: json.loads((tmp_path / name / "best.json").read_text()) for name in ("multi", "single", "one")}
    for name in ("single", "one"):  # bit-identical: same fitness, same winner (genes and merge key)
        for key in ("fitness", "raw", "generation", "merge_key", "evaluations"):
            assert runs["multi"][key] == runs[name][key], (name, key)
    history = read_history(tmp_path / "multi")
    assert [r["generation"] for r in history] == [1, 2]
    assert sorted(p.name for p in (tmp_path / "multi/checkpoints").iterdir() if p.name.isdigit()) == ["1", "2"]


def test_two_process_dfs_with_the_model_axis_across_processes_equals_one_process(tmp_path):
    """DFS with sources split over a model axis that spans both processes: the export's collective gathers the
    winner's layers to each host, and the run ends bit-identical to the single-process 8-device one."""
    world = build_world(tmp_path / "world")
    doc = {"mode": "dfs", "models": ["ft1", "ft2"], "dfs": {"repeats": 1, "w_mode": "per_slot"},
           "search": {"strategy": "CMA_ES", "population": 8, "generations": 2, "sigma": 0.2, "seed": 0},
           "fitness": {"tasks": [{"task": "task/add.yml", "split": "dev", "subset": 4}], "item_batch": 8},
           "mesh": {"pop": 4, "model": 2}}
    (world / "dfs.yml").write_text(yaml.safe_dump(doc))
    port = free_port()
    procs = [launch(world / "dfs.yml", tmp_path / "multi", 4, ("--coordinator", f"localhost:{port}",
                                                               "--num-processes", "2", "--process-id", str(i)))
             for i in range(2)]
    for p in procs:
        finish(p)
    evolve(load_config(world / "dfs.yml"), tmp_path / "single", progress=False)  # this process: 8 fake devices
    multi, single = (json.loads((tmp_path / n / "best.json").read_text()) for n in ("multi", "single"))
    for key in ("fitness", "raw", "path", "evaluations"):
        assert multi[key] == single[key], key
    a, b = (load(tmp_path / n / "model") for n in ("multi", "single"))
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(x, y)


def test_nan_in_one_process_slice_is_the_same_one_line_on_every_process(tmp_path):
    """A NaN block that only process 0 reads (the model axis gives it the first half of up_proj's rows): both
    processes refuse the run with the same line and exit 2, rather than one stopping while the other waits."""
    from safetensors import safe_open
    from safetensors.numpy import save_file
    world = build_world(tmp_path / "world")
    file, name = world / "ft1" / "model.safetensors", "model.layers.1.mlp.up_proj.weight"
    with safe_open(str(file), framework="np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors[name][: tensors[name].shape[0] // 2] = np.nan
    save_file(tensors, str(file), metadata={"format": "pt"})
    text = write_config(world, method="task_arithmetic", extra_evolve="", generations=2, subset=4).read_text()
    (world / "mh.yml").write_text(text.replace("population: 4", "population: 8") + "mesh: {pop: 4, model: 2}\n")
    port = free_port()
    procs = [launch(world / "mh.yml", tmp_path / "run", 4, ("--coordinator", f"localhost:{port}",
                                                            "--num-processes", "2", "--process-id", str(i)))
             for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, err[-2000:]
        assert err.strip().splitlines()[-1] == (f"jaxmerge evolve: error: model.safetensors: tensor {name} expected "
                                                "finite values, found NaN or Inf")
    assert not (tmp_path / "run" / "run.json").exists()  # refused before the run directory was started
