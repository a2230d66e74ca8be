"""A one-shot merge builds TIES' state for its known densities by selection (sparsify.top_k_rank) instead of a
full stable sort; the kernel then keeps exactly the elements the sorted ranks keep: the merged bits are equal,
ties at the cut included (16-bit values tie often), for every density and math dtype."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmerge.arch import ArchSpec
from jaxmerge.merge import METHODS, Sources, init_state, resolve_hparams
from jaxmerge.merge.base import merge_params
from jaxmerge.merge.sparsify import SAMPLE, _ascending_at, magnitude, stable_rank, top_k_rank
from jaxmerge.params import param_shapes, stack

merge_jit = jax.jit(merge_params, static_argnums=(0, 4, 5))


@pytest.mark.parametrize("density", [1e-9, 0.01, 0.3, 0.5, 0.77, 0.999, 1.0, 0.0])
def test_selection_keeps_what_the_sorted_rank_keeps(density):
    rng = np.random.default_rng(0)
    x = jnp.asarray(np.round(rng.normal(size=(37, 11)) * 4) / 4, jnp.float32)  # few distinct values: many ties
    d = jnp.float32(density)
    want = magnitude(x, stable_rank(x, descending=True), d, 0.0)
    got = magnitude(x, jnp.asarray(top_k_rank(np.asarray(x), d)), d, 0.0)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    if 0 < density < 1:
        assert 0 < int((np.asarray(got) != 0).sum()) < x.size


@pytest.mark.parametrize("shape", [(1,), (2, 3), (300, 257)])
@pytest.mark.parametrize("density", [1e-9, 0.1, 0.5, 0.9, 1.0])
def test_selection_of_spread_values_keeps_what_the_sorted_rank_keeps(shape, density):
    """Values over many exponents (the cut inside one of many high-bit buckets), zeros and -0.0 among them."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32) * np.exp2(rng.integers(-30, 30, shape)).astype(np.float32)
    x.reshape(-1)[::7] = 0.0
    x.reshape(-1)[3::11] = -0.0
    d = jnp.float32(density)
    want = magnitude(jnp.asarray(x), stable_rank(jnp.asarray(x), descending=True), d, 0.0)
    np.testing.assert_array_equal(np.asarray(magnitude(jnp.asarray(x), jnp.asarray(top_k_rank(x, d)), d, 0.0)),
                                  np.asarray(want))


def _patterns(n: int) -> dict[str, np.ndarray]:
    """uint32 bit patterns of |x| that a strided sample represents well, and ones it does not."""
    rng = np.random.default_rng(2)
    spread = np.abs(rng.standard_normal(n).astype(np.float32) * np.exp2(rng.integers(-20, 20, n)).astype(np.float32))
    stride = n // SAMPLE
    fooled = np.full(n, 7 << 23, np.uint32)
    fooled[::stride] = np.arange(0, n, stride, dtype=np.uint32)  # every sampled element small, the rest large
    return {"spread": spread.view(np.uint32), "sorted": np.sort(spread.view(np.uint32)),
            "few values": rng.integers(0, 3, n).astype(np.uint32) << 20, "constant": np.full(n, 5, np.uint32),
            "sample unlike the tensor": fooled}


@pytest.mark.parametrize("pattern", ["spread", "sorted", "few values", "constant", "sample unlike the tensor"])
def test_selection_finds_the_sorted_value_at_every_position(pattern):
    """The cut's value, where the sample brackets it and where it misses (the fallback): sorted(bits)[index]."""
    n = 5 * SAMPLE + 3  # above the size that is partitioned whole
    bits = _patterns(n)[pattern]
    want = np.sort(bits)
    for index in (0, 1, n // 10, n // 2, n - SAMPLE, n - 2, n - 1):
        assert _ascending_at(bits.copy(), index) == want[index], (pattern, index)


def random_sources(spec, seed=0, quantum=None):
    rng = np.random.default_rng(seed)
    shapes = param_shapes(spec)

    def one(scale):
        leaf = lambda s: (rng.normal(size=s) * scale).astype(np.float32)  # noqa: E731
        tree = {k: leaf(v) for k, v in shapes.items() if k != "layers"}
        tree["layers"] = {k: leaf(v) for k, v in shapes["layers"].items()}
        return jax.tree.map(lambda a: np.round(a / quantum) * quantum if quantum else a, tree)
    base = one(0.05)
    models = [jax.tree.map(lambda b, e: b + e, base, one(0.01)) for _ in range(3)]
    return Sources(spec, base, stack(models), ("a", "b", "c"))


@pytest.mark.parametrize("math", ["bfloat16"])
def test_one_shot_ties_state_merges_the_same_bits(math):
    spec = ArchSpec(model_type="llama", vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2,
                    num_heads=4, num_kv_heads=2, head_dim=8)
    sources = random_sources(spec, quantum=1e-3)
    recipe = {"merge_method": "ties", "base_model": "base", "models": [
        {"model": m, "parameters": {"weight": w, "density": d}}
        for m, w, d in (("a", 0.5, 0.3), ("b", 0.7, [0.2, 0.9]), ("c", 0.3, 0.61))]}
    hp = resolve_hparams(recipe, spec, ("a", "b", "c"))
    method = METHODS["ties"]
    full = init_state(method, sources, math)
    once = init_state(method, sources, math, once=hp)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(once)))
    key = jax.random.key(0)
    want = merge_jit(method, full, hp, key, np.dtype(np.float32), math)
    got = merge_jit(method, once, hp, key, np.dtype(np.float32), math)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
