"""DFSLayout: layout, forced ends, initial genes (= model A), decode of both scale modes, bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmerge.dfs import DFSLayout
from jaxmerge.errors import JaxmergeError


def path_of(space, included):
    return [space.step_source(int(t)) for t in np.flatnonzero(np.asarray(included) > 0)]


@pytest.mark.parametrize("repeats", [1, 2, 3])
def test_initial_genes_decode_to_model_a(repeats):
    space = DFSLayout((4, 3), repeats)
    path = jax.jit(space.decode)(space.initial_genes())
    assert path_of(space, path.included) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    np.testing.assert_array_equal(path.scales, np.ones(space.num_steps))


def test_forced_start_and_tail():
    space = DFSLayout((3, 2), 1)  # steps: A0 A1 A2 B0 B1 | tail A2
    off = space.decode({"indicator": -jnp.ones(5), "scales": jnp.ones((5, 5))})
    assert list(np.flatnonzero(off.included)) == [0, 5]
    on = space.decode({"indicator": jnp.ones(5), "scales": jnp.ones((5, 5))})
    assert path_of(space, on.included) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (0, 2)]  # r = 1 mixes A and B
    np.testing.assert_array_equal(on.layer, [0, 1, 2, 3, 4, 2])


def test_matrix_scales_follow_previous_used_layer():
    space = DFSLayout((3, 2), 2)  # slots A0 A1 A2 B0 B1 A0 A1 A2 B0 B1, then the tail A2 (step 10)
    w = jnp.arange(25, dtype=jnp.float32).reshape(5, 5) + 1
    indicator = jnp.array([1, -1, 1, 1, -1, -1, 1, -1, 1, 1], jnp.float32)
    path = space.decode({"indicator": indicator, "scales": w})
    assert list(np.flatnonzero(path.included)) == [0, 2, 3, 6, 8, 9, 10]
    want = {0: 1.0, 2: w[0, 2], 3: w[2, 3], 6: w[3, 1], 8: w[1, 3], 9: w[3, 4], 10: w[4, 2]}
    for t, s in want.items():
        assert float(path.scales[t]) == float(s)


def test_per_slot_scales_pass_through():
    space = DFSLayout((2, 2), 2, "per_slot")
    raw = {"indicator": jnp.ones(8), "scales": jnp.linspace(0.5, 1.5, 9)}
    assert space.gene_template()["scales"].shape == (9,)
    np.testing.assert_array_equal(space.decode(raw).scales, raw["scales"])


def test_decode_is_jittable_and_vmappable():
    space = DFSLayout((3, 2), 3)
    pop = jax.tree.map(lambda x: jnp.stack([x, -x, 2 * x]), space.initial_genes())
    together = jax.jit(jax.vmap(space.decode))(pop)
    for i in range(3):
        one = jax.jit(space.decode)(jax.tree.map(lambda x: x[i], pop))
        np.testing.assert_array_equal(together.included[i], one.included)
        np.testing.assert_array_equal(together.scales[i], one.scales)


def test_step_source_and_sizes():
    space = DFSLayout((3, 2), 3)
    assert (space.num_layers, space.num_slots, space.num_steps) == (5, 15, 16)
    assert [space.step_source(t) for t in (0, 2, 3, 4, 5, 14, 15)] == [(0, 0), (0, 2), (1, 0), (1, 1), (0, 0),
                                                                       (1, 1), (0, 2)]


@pytest.mark.parametrize("kwargs, words", [
    (dict(layer_counts=(3, 2), repeats=0), "repeats r >= 1"),
    (dict(layer_counts=(3, 2), repeats=1.5), "repeats r >= 1"),
    (dict(layer_counts=(), repeats=1), "one or more model"),
    (dict(layer_counts=(3, 0), repeats=1), "at least one layer"),
    (dict(layer_counts=(1, 3), repeats=1), "at least 2 layers"),
    (dict(layer_counts=(3,), repeats=1, w_mode="full"), "w_mode"),
])
def test_bad_space(kwargs, words):
    with pytest.raises(JaxmergeError, match=words) as err:
        DFSLayout(**kwargs)
    assert "\n" not in str(err.value)
