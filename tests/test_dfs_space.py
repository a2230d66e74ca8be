"""DFSSpace: layout, forced ends, initial genes (= model A), decode of both scale modes, bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmerge.dfs import DFSSpace
from jaxmerge.errors import JaxmergeError


def path_of(space, included):
    return [space.slot_source(int(t)) for t in np.flatnonzero(np.asarray(included) > 0)]


@pytest.mark.parametrize("repeats", [1, 2, 3])
def test_initial_genes_decode_to_model_a(repeats):
    space = DFSSpace((4, 3), repeats)
    included, scales = space.decode(space.initial_genes())
    assert path_of(space, included) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    np.testing.assert_array_equal(scales, np.ones(space.num_slots))


def test_forced_ends_override_genes():
    space = DFSSpace((3, 2), 2)  # slots: A0 A1 A2 B0 B1 | A0 A1 A2 B0 B1 ; last_slot = 7
    included, _ = space.decode({"indicator": -jnp.ones(10), "scales": jnp.ones((5, 5))})
    assert list(np.flatnonzero(included)) == [0, 7]
    included, _ = space.decode({"indicator": jnp.ones(10), "scales": jnp.ones((5, 5))})
    assert list(np.flatnonzero(included)) == [0, 1, 2, 3, 4, 5, 6, 7]  # B's last-repetition slots forced off


def test_matrix_scales_follow_previous_used_layer():
    space = DFSSpace((3, 2), 2)
    w = jnp.arange(25, dtype=jnp.float32).reshape(5, 5) + 1
    indicator = jnp.array([1, -1, 1, 1, -1, -1, 1, -1, 1, 1], jnp.float32)  # used: 0 2 3 6 7
    included, scales = space.decode({"indicator": indicator, "scales": w})
    used = np.flatnonzero(included)
    assert list(used) == [0, 2, 3, 6, 7]
    want = {0: 1.0, 2: w[0, 2], 3: w[2, 3], 6: w[3, 1], 7: w[1, 2]}  # layer of slot t is t % 5
    for t, s in want.items():
        assert float(scales[t]) == float(s)


def test_slot_scales_pass_through():
    space = DFSSpace((2, 2), 2, "slot")
    raw = {"indicator": jnp.ones(8), "scales": jnp.linspace(0.5, 1.5, 8)}
    assert space.gene_template()["scales"].shape == (8,)
    np.testing.assert_array_equal(space.decode(raw)[1], raw["scales"])


def test_decode_is_jittable_and_vmappable():
    space = DFSSpace((3, 2), 3)
    pop = jax.tree.map(lambda x: jnp.stack([x, -x, 2 * x]), space.initial_genes())
    inc, sc = jax.jit(jax.vmap(space.decode))(pop)
    for i in range(3):
        one = space.decode(jax.tree.map(lambda x: x[i], pop))
        np.testing.assert_array_equal(inc[i], one[0])
        np.testing.assert_array_equal(sc[i], one[1])


def test_slot_source_and_sizes():
    space = DFSSpace((3, 2), 3)
    assert (space.num_layers, space.num_slots, space.last_slot) == (5, 15, 12)
    assert [space.slot_source(t) for t in (0, 2, 3, 4, 5, 14)] == [(0, 0), (0, 2), (1, 0), (1, 1), (0, 0), (1, 1)]


@pytest.mark.parametrize("kwargs, words", [
    (dict(layer_counts=(3, 2), repeats=0), "repeats r >= 1"),
    (dict(layer_counts=(3, 2), repeats=1.5), "repeats r >= 1"),
    (dict(layer_counts=(), repeats=1), "one or more model"),
    (dict(layer_counts=(3, 0), repeats=1), "at least one layer"),
    (dict(layer_counts=(3,), repeats=1, w_mode="full"), "w_mode"),
])
def test_bad_space(kwargs, words):
    with pytest.raises(JaxmergeError, match=words) as err:
        DFSSpace(**kwargs)
    assert "\n" not in str(err.value)
