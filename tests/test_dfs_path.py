"""The DFS path forward: identity = model A, B's layers on A's stream, vmap = per candidate, one compile,
KV-cached decoding = the full forward, and refusal of sources that cannot share a stream."""
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmerge import model
from jaxmerge.dfs import DecodedPath, DFSLayout, forward, forward_cached, path_spec, with_path
from jaxmerge.dfs.decoder import DFS_DECODER
from jaxmerge.dfs.sources import pool_params, layout_for
from jaxmerge.errors import JaxmergeError
from jaxmerge.fitness.generate import greedy_jit
from jaxmerge.io import load
from tests.tiny import make_tiny_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("dfs_path")
    a = make_tiny_model(root / "a", "llama", seed=0)
    b = make_tiny_model(root / "b", "llama", seed=1, num_hidden_layers=2)
    return load(a), load(b)


def tokens_and_mask(batch=2, length=7, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, 97, (batch, length)).astype(np.int32)
    mask = np.ones((batch, length), np.int32)
    mask[1, :2] = 0  # left padding on the second row
    return tokens, mask


def random_genes(space, seed):
    rng = np.random.default_rng(seed)
    return {"indicator": jnp.asarray(rng.normal(size=space.num_slots), jnp.float32),
            "scales": jnp.asarray(rng.uniform(0.6, 1.5, space.gene_template()["scales"].shape)
                                  * rng.choice([-1.0, 1.0], space.gene_template()["scales"].shape), jnp.float32)}


def path_logits_fn(space, models, tokens, mask):
    spec, pool = path_spec(models[0].spec, space), pool_params(models)
    return jax.jit(lambda genes: forward(spec, with_path(pool, space.decode(genes)), tokens, mask))


def test_identity_path_reproduces_a(models):
    tokens, mask = tokens_and_mask()
    space = layout_for(models, 3)
    got = path_logits_fn(space, models, tokens, mask)(space.initial_genes())
    want = model.forward_jit(models[0].spec, models[0].params, tokens, mask)
    # Same numbers up to XLA's float32 re-association in a differently fused program (seen: 1.2e-7 abs).
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-6)


def test_path_over_b_layers_is_b_on_a_embeddings(models):
    a, b = models
    tokens, mask = tokens_and_mask()
    space = layout_for(models, 2)
    included = np.zeros(space.num_steps, np.float32)
    included[3:5] = 1  # B's two layers, first repetition, tail off (no forcing: the raw path function)
    path = DecodedPath(included, np.ones(space.num_steps, np.float32), space.layers())
    got = jax.jit(lambda p: forward(path_spec(a.spec, space), p, tokens, mask))(with_path(pool_params(models), path))
    b_on_a = {**{k: v for k, v in a.params.items() if k != "layers"}, "layers": b.params["layers"]}
    want = model.forward_jit(a.spec.replace(num_layers=2), b_on_a, tokens, mask)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-6)


def test_forced_path_through_b_is_the_stacked_model(models):
    a, b = models
    tokens, mask = tokens_and_mask()
    space = layout_for(models, 2)  # slots: A0 A1 A2 B0 B1 | A0 A1 A2 B0 B1 | tail A2
    genes = {"indicator": jnp.asarray([1, -1, -1, 1, 1, -1, -1, -1, -1, -1], jnp.float32),
             "scales": jnp.ones((5, 5))}  # A0 B0 B1, then the tail A2
    got = path_logits_fn(space, models, tokens, mask)(genes)
    layers = {k: np.stack([a.params["layers"][k][0], b.params["layers"][k][0], b.params["layers"][k][1],
                           a.params["layers"][k][2]]) for k in a.params["layers"]}
    want = model.forward_jit(a.spec.replace(num_layers=4), {**a.params, "layers": layers}, tokens, mask)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-6)


def test_population_vmap_equals_per_candidate_with_one_compile(models):
    tokens, mask = tokens_and_mask()
    space = layout_for(models, 2)
    fn = path_logits_fn(space, models, tokens, mask)
    candidates = [random_genes(space, seed) for seed in range(4)]
    each = [np.asarray(fn(g)) for g in candidates]
    assert fn._cache_size() == 1  # four different candidates, one compilation
    population = jax.tree.map(lambda *xs: jnp.stack(xs), *candidates)
    together = np.asarray(jax.jit(jax.vmap(fn))(population))
    assert not np.allclose(each[0], each[1])  # the candidates really differ
    np.testing.assert_allclose(together, np.stack(each), rtol=0, atol=1e-5)


def test_kv_cached_steps_equal_full_forward(models):
    tokens, mask = tokens_and_mask(length=8)
    space = layout_for(models, 2)
    spec = path_spec(models[0].spec, space)
    params = with_path(pool_params(models), jax.jit(space.decode)(random_genes(space, 7)))
    step = jax.jit(forward_cached, static_argnums=0)
    full = jax.jit(forward, static_argnums=0)(spec, params, tokens, mask)
    positions = model.default_positions(mask)
    cache = model.init_cache(spec, 2, 8, jnp.float32)
    logits, cache = step(spec, params, tokens[:, :5], mask[:, :5], positions[:, :5], cache, 0)
    pieces = [logits]
    for t in range(5, 8):
        logits, cache = step(spec, params, tokens[:, t:t + 1], mask[:, t:t + 1], positions[:, t:t + 1], cache, t)
        pieces.append(logits)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1)[mask > 0], np.asarray(full)[mask > 0],
                               rtol=0, atol=1e-5)


def test_greedy_on_identity_path_equals_greedy_on_a(models):
    tokens, mask = tokens_and_mask()
    space = layout_for(models, 2)
    params = with_path(pool_params(models), jax.jit(space.decode)(space.initial_genes()))
    eos = np.asarray([2], np.int32)
    got = greedy_jit(path_spec(models[0].spec, space), params, tokens, mask, eos, max_new_tokens=6,
                     decoder=DFS_DECODER)
    want = greedy_jit(models[0].spec, models[0].params, tokens, mask, eos, max_new_tokens=6)
    np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(want.tokens))


@pytest.mark.parametrize("family, overrides, words", [
    ("llama", dict(hidden_size=64, head_dim=16), "hidden_size"),
    ("qwen2", {}, "model_type"),
])
def test_incompatible_sources_refused(models, tmp_path, family, overrides, words):
    other = load(make_tiny_model(tmp_path / "other", family, seed=2, **overrides))
    with pytest.raises(JaxmergeError, match=words) as err:
        layout_for([models[0], other])
    assert "\n" not in str(err.value)


def test_space_from_models_matches_layer_counts(models):
    assert layout_for(models, 3, "per_slot") == DFSLayout((3, 2), 3, "per_slot")


def all_steps_forward(spec, params, tokens, mask):
    """The path forward as it was before unused steps were skipped: every step computed, then `where`."""
    def apply(x, h, layer):
        row, used, scale = x
        lp = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, row, keepdims=False), params["pool"])
        out, kv = layer(lp, h * scale.astype(h.dtype))
        return jnp.where(used > 0, out, h), kv
    stack = model.Stack((params["layer"], params["included"], params["scales"]), apply)
    return model.run(spec, params, stack, tokens, mask)[0]


def test_skipping_unused_steps_changes_no_bit_and_compiles_once(models):
    tokens, mask = tokens_and_mask()
    space = layout_for(models, 3)
    spec, pool = path_spec(models[0].spec, space), pool_params(models)
    fn = path_logits_fn(space, models, tokens, mask)
    reference = jax.jit(lambda genes: all_steps_forward(spec, with_path(pool, space.decode(genes)), tokens, mask))
    candidates = [random_genes(space, seed) for seed in range(5)] + [space.initial_genes()]
    used = [int(np.asarray(space.decode(g).included).sum()) for g in candidates]
    assert len(set(used)) > 2  # paths of different lengths
    for genes in candidates:
        np.testing.assert_array_equal(np.asarray(fn(genes)), np.asarray(reference(genes)))
    assert fn._cache_size() == 1


def counted(stack: model.Stack, calls: list) -> model.Stack:
    """The stack with a host callback in every step that computes its layer (a test probe, not a hot path)."""
    def apply(x, h, layer):
        jax.debug.callback(lambda: calls.append(1))
        return stack.apply(x, h, layer)
    return stack._replace(apply=apply)


@pytest.mark.parametrize("cached", [False, True], ids=["forward", "decode step"])
def test_a_candidate_computes_only_the_steps_its_path_uses(models, cached):
    """One candidate in flight (map_candidates with batch 1, a plain scan: lax.map's batch_size=1 would vmap it
    and turn a skip into a select) computes exactly its used steps: without a cache the driver loops over them
    only, with one an unused step is a `lax.cond` that passes its entry through. Three candidates in flight
    (vmapped: the loop runs the longest path and selects, the conds become selects) give the same bits."""
    from jaxmerge.dfs.path import path_stack
    from jaxmerge.evolve.mesh import map_candidates
    tokens, mask = tokens_and_mask()
    space = layout_for(models, 2)
    spec, pool = path_spec(models[0].spec, space), pool_params(models)
    candidates = [random_genes(space, s) for s in range(3)]
    used = [int(np.asarray(space.decode(g).included).sum()) for g in candidates]
    assert len(set(used)) > 1 and max(used) < space.num_slots + 1
    calls = []

    def one(genes, steps=lambda params: counted(path_stack(params), calls)):
        params = with_path(pool, space.decode(genes))
        cache = model.init_cache(spec, 2, 7, jnp.float32) if cached else None
        return model.run(spec, params, steps(params), tokens, mask, cache=cache)[0]
    population = jax.tree.map(lambda *xs: jnp.stack(xs), *candidates)
    got = np.asarray(jax.jit(lambda p: map_candidates(one, p, 1))(population))
    jax.effects_barrier()
    assert len(calls) == sum(used)
    vmapped = jax.jit(lambda p: map_candidates(partial(one, steps=path_stack), p, 3))  # selects under the vmap
    np.testing.assert_array_equal(got, np.asarray(vmapped(population)))


def test_decoding_carries_the_cache_through_the_used_steps_bit_for_bit(models):
    """One candidate in flight, a decoding path loops over its used steps with the whole cache as carry; with
    several in flight (vmapped: the loop would select the whole cache each step) it keeps the scan of conds.
    Both give the same logits and cache, bit for bit, over a prefill and decode steps."""
    tokens, mask = tokens_and_mask(length=8)
    space = layout_for(models, 2)
    spec = path_spec(models[0].spec, space)
    params = with_path(pool_params(models), jax.jit(space.decode)(random_genes(space, 7)))
    positions = model.default_positions(mask)

    def decode(p):  # a fresh function per use below: jit keeps the trace of a function it has seen
        cache = model.init_cache(spec, 2, 8, jnp.float32)
        logits, cache = forward_cached(spec, p, tokens[:, :5], mask[:, :5], positions[:, :5], cache, 0)
        pieces = [logits]
        for t in range(5, 8):
            logits, cache = forward_cached(spec, p, tokens[:, t:t + 1], mask[:, t:t + 1], positions[:, t:t + 1],
                                           cache, t)
            pieces.append(logits)
        return jnp.concatenate(pieces, axis=1), cache
    fresh = lambda: lambda p: decode(p)  # noqa: E731
    carried = jax.jit(fresh())(params)
    with model.candidates_in_flight(2):
        stepped = jax.jit(fresh())(params)  # traced here, inside
        per_step = str(jax.make_jaxpr(fresh())(params)).count("cond[")
    assert str(jax.make_jaxpr(fresh())(params)).count("cond[") < per_step  # no cond per step: a loop of used ones
    for got, want in zip(jax.tree.leaves(carried), jax.tree.leaves(stepped)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_the_engine_says_when_candidates_decode_vmapped(models):
    """map_candidates with more than one candidate in flight traces its function under candidates_in_flight:
    a decoding path then scans its steps (no loop over used steps: under the vmap that loop would select the
    whole cache at every step); one at a time it loops."""
    from jaxmerge.evolve.mesh import map_candidates
    tokens, mask = tokens_and_mask(length=8)
    space = layout_for(models, 2)
    spec, pool = path_spec(models[0].spec, space), pool_params(models)
    population = jax.tree.map(lambda *xs: jnp.stack(xs), *[random_genes(space, s) for s in range(2)])

    def step(genes):
        params = with_path(pool, space.decode(genes))
        cache = model.init_cache(spec, 2, 8, jnp.float32)
        return forward_cached(spec, params, tokens, mask, model.default_positions(mask), cache, 0)[0]

    def loops(batch):
        return str(jax.make_jaxpr(lambda p: map_candidates(step, p, batch))(population)).count("while[")
    assert loops(1) >= 1 and loops(2) == 0
