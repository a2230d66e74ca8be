"""Fused memory mode: merging layer by layer inside the scanned forward gives the materialized numbers."""
import dataclasses

import jax
import numpy as np
import pytest

from jaxmerge import model
from jaxmerge.config import load_config
from jaxmerge.ps.fused import FusedSpec, choose_mode, forward, fused_decoder, unmerged
from jaxmerge.arch import ArchSpec
from jaxmerge.config import Memory
from jaxmerge.evolve.mesh import build_mesh
from jaxmerge.ps.space import build, build_genome, candidate_params, evolvable_method
from jaxmerge.evolve.step import evaluate_population
from jaxmerge.fitness import greedy_jit
from tests.evolve_world import build_world, write_config


class Problem:
    """A PS search space in one memory mode (on one device) and the pieces it was built from."""

    def __init__(self, world, mode):
        cfg = load_config(write_config(world, subset=4))
        cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, population=4), memory=Memory(mode, 1))
        self.spec = ArchSpec.from_dir(world / "ft1")
        self.space = build(cfg, build_mesh(1, 1, 4, self.spec, jax.devices()[:1]))
        self.method = evolvable_method(cfg)
        self.genome = build_genome(cfg, self.method, self.spec, 2)
        self.data, self.dtype = self.space.data, self.space.facts["dtype"]


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    """The same dare_ties search (random DARE masks) built in both memory modes."""
    world = build_world(tmp_path_factory.mktemp("world"))
    return {m: Problem(world, m) for m in ("materialize", "fused")}


def candidates(problem, n=4):
    return (jax.random.uniform(jax.random.PRNGKey(0), (n, problem.space.size)),
            jax.random.split(jax.random.PRNGKey(1), n))


@pytest.mark.slow
def test_fused_logits_and_greedy_equal_the_materialized_model(problems):
    p = problems["materialize"]
    raw, keys = candidates(p, 1)
    params = jax.jit(lambda x, k, d: candidate_params(p.method, p.genome, p.dtype, x, k, d))(raw[0], keys[0], p.data)
    fs = FusedSpec(p.spec, p.method, p.dtype)
    r = unmerged(p.data["merge"], p.genome.hparams(raw[0]), keys[0])
    tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 7), 3, p.spec.vocab_size)
    want = model.forward_jit(p.spec, params, tokens)
    np.testing.assert_allclose(np.asarray(jax.jit(forward, static_argnums=0)(fs, r, tokens)), np.asarray(want),
                               rtol=1e-5, atol=1e-5)
    mask = np.ones(tokens.shape, np.int32)
    eos = np.asarray([2], np.int32)
    a = greedy_jit(p.spec, params, tokens, mask, eos, max_new_tokens=4)
    b = greedy_jit(fs, r, tokens, mask, eos, max_new_tokens=4, decoder=fused_decoder())
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))


@pytest.mark.slow
def test_fused_teacher_forced_fitness_equals_materialize(problems):
    assert problems["fused"].space.facts["memory_mode"] == "fused"
    raw, keys = candidates(problems["fused"])
    scores = {}
    for mode, p in problems.items():
        fit = p.space.candidate
        scores[mode] = np.asarray(jax.jit(lambda x, k, d: evaluate_population(fit, x, k, d, 2))(raw, keys, p.data))
    np.testing.assert_allclose(scores["fused"], scores["materialize"], rtol=1e-6, atol=1e-6)
    assert np.all(np.isfinite(scores["fused"])) and len(set(scores["fused"].tolist())) > 1


def test_auto_mode_follows_free_memory(problems):
    spec = problems["materialize"].spec
    one = 4 * sum(int(np.prod(x.shape)) for x in jax.tree.leaves(problems["materialize"].data["merge"])) // 6
    assert choose_mode("auto", spec, 10 * one, 8, free=10**12) == "materialize"
    assert choose_mode("auto", spec, 10 * one, 8, free=12 * one) == "fused"
    assert choose_mode("fused", spec, 0, 1, free=10**12) == "fused"
    assert choose_mode("materialize", spec, 10**12, 64, free=1) == "materialize"


def test_kv_cache_dtype_is_the_candidates_not_the_merge_states(problems):
    """The merge state is float32 whatever the run's dtype; a bf16 candidate's keys are bf16, and so is its
    cache (the widest-leaf rule gave fused bf16 runs a float32 cache)."""
    p = problems["fused"]
    raw, keys = candidates(p, 1)
    r = unmerged(p.data["merge"], p.genome.hparams(raw[0]), keys[0])
    assert {x.dtype for x in jax.tree.leaves(p.data["merge"])} == {np.dtype("float32")}
    assert fused_decoder().cache_dtype(FusedSpec(p.spec, p.method, "bfloat16"), r) == jax.numpy.bfloat16
    assert fused_decoder().cache_dtype(FusedSpec(p.spec, p.method, "float32"), r) == np.float32
