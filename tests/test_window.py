"""Banded sliding-window attention (jaxmerge.window) equals the dense masked attention it replaces, and its
prefill memory follows the window, not the sequence."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmerge.model as model
from jaxmerge.arch import ArchSpec
from jaxmerge.params import param_shapes

SAME_MATH_TOL = 1e-5  # float32, two of our code paths computing the same thing
SPEC = ArchSpec("mistral", 97, 32, 64, 2, 4, 2, 8, sliding_window=5, layer_types=("sliding_attention",) * 2)


def params(spec, seed=0):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.3 * rng.normal(size=s), jnp.float32), param_shapes(spec),
                        is_leaf=lambda s: isinstance(s, tuple))


def dense_logits(spec, p, tokens, mask):
    """The same forward with every layer's window as a mask over the full score matrix."""
    att = model.attention(spec, model.default_positions(mask), jnp.arange(tokens.shape[1]), mask, whole=False)
    assert not isinstance(att.mask, model.Band)
    stack = model.plain(p)

    def body(h, lp):
        return model.decoder_layer(spec, lp, h, (att.cos[0], att.sin[0]), att.mask[0])[0], None
    h, _ = jax.lax.scan(body, model.embed(p, tokens, spec), stack.xs)
    return model.head(spec, p, h)


@pytest.mark.parametrize("length", [11, 23, 40])
def test_bands_equal_the_dense_window(length):
    p = params(SPEC)
    tokens = jnp.asarray(np.random.default_rng(1).integers(3, 97, (2, length)), jnp.int32)
    mask = np.ones((2, length), np.int32)
    mask[1, :4] = 0
    att = model.attention(SPEC, model.default_positions(mask), jnp.arange(length), mask, whole=True)
    assert isinstance(att.mask, model.Band)  # > 2 windows: the banded path really runs
    got = np.asarray(jax.jit(model.forward, static_argnums=0)(SPEC, p, tokens, mask))
    want = np.asarray(jax.jit(dense_logits, static_argnums=0)(SPEC, p, tokens, mask))
    real = mask.astype(bool)
    assert np.abs(want[real]).max() > 0.5
    np.testing.assert_allclose(got[real], want[real], rtol=0, atol=SAME_MATH_TOL)


def test_prefill_memory_follows_the_window():
    """16 windows of tokens: the banded program's temporaries are a fraction of full attention's."""
    spec = SPEC.replace(sliding_window=32)
    shapes = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, np.float32), param_shapes(spec),
                          is_leaf=lambda s: isinstance(s, tuple))
    tokens = jax.ShapeDtypeStruct((1, 16 * 32), np.int32)
    temp = {name: jax.jit(model.forward, static_argnums=0).lower(s, shapes, tokens).compile().memory_analysis()
            .temp_size_in_bytes for name, s in (("band", spec), ("full", spec.replace(layer_types=())))}
    assert temp["band"] < 0.25 * temp["full"]
