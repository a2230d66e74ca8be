"""Populations sharded over a (pop, model) mesh of the 8 fake CPU devices: the same fitness as unsharded (bit
for bit over pop), one compilation, sources split over "model" by the rules table, and bad meshes refused in one line."""
import dataclasses

import jax
import numpy as np
import pytest

from jaxmerge.cli import main
from jaxmerge.errors import JaxmergeError
from jaxmerge.config import load_config
from jaxmerge.evolve.mesh import build_mesh, data_shardings, place, replicated
from jaxmerge.arch import ArchSpec
from jaxmerge.config import Memory
from jaxmerge.ps.space import build
from jaxmerge.evolve.step import evaluate_population, initial_state, make_step
from jaxmerge.evolve.strategy import make_search
from tests.evolve_world import build_world, write_config

POPULATION = 8


class Problem:
    """A PS search space built on one device, the world it came from and its architecture."""

    def __init__(self, world):
        cfg = load_config(write_config(world, method="task_arithmetic", extra_evolve="", subset=4))
        cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, population=POPULATION),
                                  memory=Memory("materialize", 1))
        self.world, self.spec = world, ArchSpec.from_dir(world / "ft1")
        self.space = build(cfg, build_mesh(1, 1, POPULATION, self.spec, jax.devices()[:1]))
        self.data = self.space.data


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    return Problem(build_world(tmp_path_factory.mktemp("world")))


def candidates(problem, seed=0):
    pop = jax.random.uniform(jax.random.PRNGKey(seed), (POPULATION, problem.space.size))
    return pop, jax.random.split(jax.random.PRNGKey(seed + 1), POPULATION)


def sharded_scores(problem, mesh, pop, keys, batch=1):
    data = place(problem.data, data_shardings(mesh, problem.data))
    fit = problem.space.candidate
    run = jax.jit(lambda p, k, d: evaluate_population(fit, p, k, d, batch, mesh))
    out = run(place(np.asarray(pop), replicated(mesh)), place(np.asarray(keys), replicated(mesh)), data)
    return out, data


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 2])
def test_sharded_scores_equal_unsharded_on_pop_and_model_axes(problem, batch):
    """Same candidates in flight per shard (`batch`) -> the same per-candidate program on every shard."""
    pop, keys = candidates(problem)
    fit = problem.space.candidate
    plain = np.asarray(jax.jit(lambda p, k, d: evaluate_population(fit, p, k, d, batch))(pop, keys, problem.data))
    for shape in ((4, 1), (2, 2)):
        mesh = build_mesh(*shape, POPULATION, problem.spec)
        scores, data = sharded_scores(problem, mesh, pop, keys, batch)
        assert scores.sharding.is_fully_replicated
        if shape[1] == 1:  # split over pop only: bit-identical
            np.testing.assert_array_equal(np.asarray(scores), plain)
        else:  # sources split over "model": the split matmuls sum their partial products in another order
            np.testing.assert_allclose(np.asarray(scores), plain, rtol=1e-6, atol=1e-6)
        assert int(np.argmax(scores)) == int(np.argmax(plain))
        q_spec = data["merge"]["layers"]["q_proj"]
        assert all(x.sharding.spec[-2] == ("model" if shape[1] > 1 else None) for x in jax.tree.leaves(q_spec))


@pytest.mark.slow
def test_sharded_step_compiles_once_and_keeps_its_shardings(problem):
    mesh = build_mesh(0, 1, POPULATION, problem.spec)
    assert mesh.shape["pop"] == 8
    search = make_search("CMA_ES", POPULATION, problem.space.size, 0.2)
    step = make_step(search, problem.space.candidate, 1, mesh)
    state = initial_state(search, jax.numpy.asarray(problem.space.initial), jax.random.PRNGKey(0), None)
    state = place(jax.tree.map(np.asarray, state), replicated(mesh))
    data = place(problem.data, data_shardings(mesh, problem.data))
    for _ in range(3):
        state, stats = step(state, data)
    assert step._cache_size() == 1
    assert int(state.generation) == 3 and np.isfinite(float(state.best_fitness))
    assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(state))


@pytest.mark.parametrize("pop, model, population, found", [
    (3, 1, 6, "mesh pop x model to divide the 8 devices, found 3 x 1"),
    (0, 3, 8, "mesh.model to divide the 8 devices, found 3"),
    (4, 1, 6, "mesh.pop to divide the population (6), found 4"),
    (2, 4, 8, "mesh.model to divide the attention heads (4 query, 2 key/value), found 4"),
])
def test_bad_mesh_is_one_line(problem, pop, model, population, found):
    with pytest.raises(JaxmergeError, match="expected " + found.replace("(", r"\(").replace(")", r"\)")) as e:
        build_mesh(pop, model, population, problem.spec)
    assert "\n" not in str(e.value)


def test_bad_mesh_config_exits_2(problem, tmp_path, capsys):
    world = problem.world
    text = write_config(tmp_path, method="task_arithmetic", extra_evolve="").read_text()
    for i, (mesh, found) in enumerate((("{pop: 3}", "found 3 x 1"), ("{pop: 8, model: 2}", "found 8 x 2"),
                                       ("{pods: 2}", "mesh: unknown key(s) ['pods']"))):
        (tmp_path / "bad.yml").write_text(text.replace("[ft1, ft2]", f"[{world}/ft1, {world}/ft2]").replace(
            "base_model: base", f"base_model: {world}/base").replace("task/add.yml", f"{world}/task/add.yml")
            + f"mesh: {mesh}\n")
        assert main(["evolve", str(tmp_path / "bad.yml"), "--out", str(tmp_path / f"out{i}"), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert found in err and err.startswith("jaxmerge evolve: error: ")
