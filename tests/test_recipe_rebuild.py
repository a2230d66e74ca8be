"""recipe.yml rebuilds the winner exactly, for every evolvable method: the export of a candidate (on the run's
8-device mesh) and `jaxmerge merge` of its recipe write the same tensors, bit for bit, DARE/DELLA masks included
(their key travels in the recipe's first line); values, switches and per-layer slices survive the round trip."""
import dataclasses
import json

import jax
import numpy as np
import pytest
import yaml

from jaxmerge.arch import ArchSpec
from jaxmerge.cli import main
from jaxmerge.config import EvolvedParam, Granularity, load_config
from jaxmerge.evolve.mesh import build_mesh
from jaxmerge.merge import METHODS
from jaxmerge.ps.space import build
from tests.evolve_world import build_world, write_config
from tests.merge_oracle import read_tensors

GENES = {  # method -> evolved hyper-parameters and their bounds
    "task_arithmetic": {"weight": (0.0, 1.0)}, "linear": {"weight": (0.1, 1.0)},
    "ties": {"weight": (0.0, 1.0), "density": (0.1, 1.0)}, "dare_ties": {"weight": (0.0, 1.0), "density": (0.1, 1.0)},
    "dare_linear": {"weight": (0.0, 1.0), "density": (0.1, 1.0)},
    "breadcrumbs": {"weight": (0.0, 1.0), "density": (0.3, 0.9), "gamma": (0.0, 0.1)},
    "breadcrumbs_ties": {"weight": (0.0, 1.0), "density": (0.3, 0.9), "gamma": (0.0, 0.1)},
    "della": {"weight": (0.0, 1.0), "density": (0.3, 0.7), "epsilon": (0.05, 0.2)},
    "della_linear": {"weight": (0.0, 1.0), "density": (0.3, 0.7), "epsilon": (0.05, 0.2)},
    "slerp": {"t": (0.0, 1.0)}, "nuslerp": {"weight": (0.1, 1.0)},
    # two of mergekit 0.1.5's additions (a shared fraction over host-ranked variances; per-model weights with a
    # switch); the others' genes are checked by tests/test_merge_methods.py (each case here costs ~25 s)
    "sce": {"select_topk": (0.2, 1.0)}, "multislerp": {"weight": (0.1, 1.0)},
}
ONE_MODEL = ("slerp",)  # one model against the base


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("world"))


def config(world, method: str, layers_per_group: int, param_groups: bool):
    cfg = load_config(write_config(world, method="task_arithmetic", extra_evolve="", subset=2))
    evolve = {n: EvolvedParam((lo + hi) / 2, lo, hi) for n, (lo, hi) in GENES[method].items()}
    models = cfg.models[:1] if method in ONE_MODEL else cfg.models
    parameters = {"normalize": True} if method in ("linear", "task_arithmetic") else {}
    base = None if METHODS[method].base == "none" else cfg.base_model  # linear, karcher: the models alone
    return dataclasses.replace(cfg, merge_method=method, evolve=evolve, models=models, parameters=parameters,
                               base_model=base, granularity=Granularity(layers_per_group, param_groups))


def record(space, raw) -> dict:
    return {"space": "ps", "fitness": 0.0, "generation": 1, "evaluations": 4, "improved_on_start": True,
            "genes": space.describe(raw), "baselines": {"start": 0.0, "sources": {}}, "tasks": []}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(GENES))
def test_recipe_rebuilds_the_export_bit_for_bit(world, tmp_path, method):
    cfg = config(world, method, layers_per_group=1, param_groups=method in ("ties", "dare_ties", "linear"))
    space = build(cfg, build_mesh(0, 1, 4, ArchSpec.from_dir(world / "ft1")))
    raw = jax.random.uniform(jax.random.PRNGKey(7), (space.size,), minval=-0.2, maxval=1.2)  # bounds get hit
    key = jax.random.split(jax.random.PRNGKey(3), 4)[2]
    space.export(raw, key, tmp_path, record(space, raw))
    assert main(["merge", str(tmp_path / "recipe.yml"), str(tmp_path / "rebuilt")]) == 0
    ours, theirs = read_tensors(tmp_path / "rebuilt"), read_tensors(tmp_path / "model")
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    text = (tmp_path / "recipe.yml").read_text()
    head = text.splitlines()[0]
    assert head.startswith("# jaxmerge: ") and json.loads(head[12:]) == {"merge_key": np.asarray(key).tolist()}
    assert all(isinstance(v, bool) for k, v in yaml.safe_load(text).get("parameters", {}).items()
               if k in ("normalize", "rescale"))
