"""Properties of the merge methods that need no oracle run: identities, randomness contracts, no recompiles.
DARE/DELLA masks are random, so instead of parity we test what must hold (kept fraction, mergekit's L1
rescale rule via mergekit's own function, key determinism, density 1 keeps everything)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxmerge.arch import ArchSpec
from jaxmerge.merge import METHODS, Sources, init_state, merge_layer, merge_params, resolve_hparams
from jaxmerge.merge import sparsify
from jaxmerge.params import param_shapes

# the shapes of tests/tiny.py models and the float32 dtype object `merge_recipe` passes, so compiled merges
# are shared with the parity tests when they run in one process
SPEC = ArchSpec(model_type="llama", vocab_size=97, hidden_size=32, intermediate_size=64, num_layers=3,
                num_heads=4, num_kv_heads=2, head_dim=8)
F32 = np.dtype("float32")
merge_jit = jax.jit(merge_params, static_argnums=(0, 4))


def _params(rng, scale=1.0, like=None):
    shapes = param_shapes(SPEC)
    make = lambda s: (rng.normal(size=s) * scale).astype(np.float32)
    out = {k: make(v) for k, v in shapes.items() if k != "layers"}
    out["layers"] = {k: make(v) for k, v in shapes["layers"].items()}
    return out if like is None else jax.tree.map(lambda a, b: a + b, like, out)


def _sources(models, base=None):
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *models)
    return Sources(SPEC, base, stacked, tuple(f"m{i}" for i in range(len(models))))


def _merge(method_name, sources, params, seed=0):
    recipe = dict(merge_method=method_name, models=[dict(model=n, parameters=params.get(n, {}))
                                                     for n in sources.names],
                  parameters=params.get("global", {}))
    if sources.base is not None:
        recipe["base_model"] = "base"
    method = METHODS[method_name]
    hp = resolve_hparams(recipe, SPEC, sources.names)
    return merge_jit(method, init_state(method, sources), hp, jax.random.key(seed), F32)


def _close(a, b, tol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["task_arithmetic", "ties", "dare_ties", "della", "model_stock"])
def test_identical_sources_give_base(name):
    rng = np.random.default_rng(0)
    base = _params(rng)
    w = {f"m{i}": {"weight": 0.7, "density": 0.5} for i in range(3)} if name != "model_stock" else {}
    if name == "della":
        w = {k: {**v, "epsilon": 0.1} for k, v in w.items()}
    _close(_merge(name, _sources([base] * 3, base), w), base)


def test_one_hot_linear_is_that_source():
    rng = np.random.default_rng(1)
    models = [_params(rng) for _ in range(3)]
    out = _merge("linear", _sources(models), {"m0": {"weight": 0.0}, "m1": {"weight": 1.0}, "m2": {"weight": 0.0}})
    _close(out, models[1])


@pytest.mark.parametrize("t, end", [(0.0, "base"), (1.0, "other")])
def test_slerp_ends(t, end):
    rng = np.random.default_rng(2)
    base, other = _params(rng), _params(rng)
    out = _merge("slerp", _sources([other], base), {"global": {"t": t}})
    _close(out, base if end == "base" else other, tol=1e-5)


@pytest.mark.slow
def test_no_recompile_and_key_determinism():
    rng = np.random.default_rng(3)
    base = _params(rng)
    sources = _sources([_params(rng, 0.02, base) for _ in range(2)], base)
    method = METHODS["dare_ties"]
    state = init_state(method, sources)
    f = jax.jit(lambda *args: merge_params(*args), static_argnums=(0, 4))  # a cache of its own
    outs = []
    for w, d in [(0.3, 0.2), (0.9, 0.7), (0.9, 0.7)]:
        recipe = dict(merge_method="dare_ties", base_model="base", models=[
            dict(model="a", parameters=dict(weight=w, density=d)), dict(model="b", parameters=dict(weight=1.0))])
        outs.append(f(method, state, resolve_hparams(recipe, SPEC), jax.random.key(7), F32))
    assert f._cache_size() == 1
    _close(outs[1], outs[2], tol=0)
    again = f(method, state, resolve_hparams(recipe, SPEC), jax.random.key(8), F32)
    assert not np.array_equal(np.asarray(again["layers"]["q_proj"]), np.asarray(outs[2]["layers"]["q_proj"]))


def _mergekit_l1(x, out):
    from mergekit.sparsify import RescaleNorm, rescaled_masked_tensor
    mask = torch.as_tensor(np.asarray(out) != 0, dtype=torch.float32)
    return rescaled_masked_tensor(torch.as_tensor(np.asarray(x)), mask, RescaleNorm.l1).numpy()


@pytest.mark.parametrize("kind", ["dare", "della"])
@pytest.mark.parametrize("density", [0.1, 0.45, 0.8])
def test_random_sparsifiers(kind, density):
    x = jax.random.normal(jax.random.key(0), (200, 500))
    ranks = sparsify.row_rank_norm(x)
    if kind == "dare":
        run = jax.jit(lambda d, r, k: sparsify.bernoulli(x, d, r, k))
    else:
        run = jax.jit(lambda d, r, k: sparsify.della(x, ranks, d, 0.05, r, k))
    key = jax.random.key(1)
    out = run(density, 1.0, key)
    kept = float((np.asarray(out) != 0).mean())
    assert abs(kept - density) <= 0.01, kept
    np.testing.assert_allclose(np.asarray(out), _mergekit_l1(x, out), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(run(density, 1.0, key)))
    unscaled = np.asarray(run(density, 0.0, key))
    np.testing.assert_array_equal(unscaled, np.where(np.asarray(out) != 0, np.asarray(x), 0))
    np.testing.assert_array_equal(np.asarray(run(1.0, 1.0, key)), np.asarray(x))


@pytest.mark.slow
def test_merge_layer_in_a_scan_equals_merge_params():
    rng = np.random.default_rng(4)
    base = _params(rng)
    sources = _sources([_params(rng, 0.02, base) for _ in range(2)], base)
    method = METHODS["dare_linear"]
    recipe = dict(merge_method="dare_linear", base_model="base", models=[
        dict(model="a", parameters=dict(weight=[0.2, 0.8], density=0.5)), dict(model="b", parameters=dict(weight=0.5))])
    hp, state, key = resolve_hparams(recipe, SPEC), init_state(method, sources), jax.random.key(3)
    whole = merge_jit(method, state, hp, key, F32)
    layer_hp = {n: {k: jnp.moveaxis(v, -1, 0) for k, v in hp[n]["layers"].items()} for n in hp}

    def step(i, xs):
        st, h = xs
        return i + 1, merge_layer(method, st, h, key, i)
    _, layers = jax.jit(lambda xs: jax.lax.scan(step, 0, xs))((state["layers"], layer_hp))
    _close(layers, whole["layers"], tol=1e-6)  # scan and vmap fuse differently: ulp-level rounding only
    for leaf in layers:  # ... while the random masks are identical, element for element
        dropped = lambda t: np.asarray(t[leaf]) == np.asarray(base["layers"][leaf])
        np.testing.assert_array_equal(dropped(layers), dropped(whole["layers"]))
