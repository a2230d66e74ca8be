"""Attention kernels (jaxmerge.kernels): long calls in query blocks and `jax.nn.dot_product_attention` equal the
explicit one-shot kernel, a family that soft-caps its scores keeps the explicit kernel, and a long prefill's
temporaries shrink with the blocks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmerge.kernels as kernels
import jaxmerge.model as model
from jaxmerge.arch import ArchSpec
from jaxmerge.errors import JaxmergeError
from jaxmerge.params import param_shapes

SAME_MATH_TOL = 1e-5  # float32, two of our code paths computing the same thing
SPEC = ArchSpec("llama", 97, 32, 64, 2, 4, 2, 8)
LONG = kernels.LONG_QUERIES + 77  # over the threshold, and not a whole number of blocks


def params(spec, seed=0):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.3 * rng.normal(size=s), jnp.float32), param_shapes(spec),
                        is_leaf=lambda s: isinstance(s, tuple))


def batch(length, pad=5):
    tokens = jnp.asarray(np.random.default_rng(1).integers(3, 97, (2, length)), jnp.int32)
    mask = np.ones((2, length), np.int32)
    mask[1, :pad] = 0
    return tokens, jnp.asarray(mask)


def logits(spec, p, tokens, mask):
    return np.asarray(jax.jit(lambda p, t, m: model.forward(spec, p, t, m))(p, tokens, mask))


@pytest.fixture(scope="module")
def long_logits():
    p, (tokens, mask) = params(SPEC), batch(LONG)
    return p, tokens, mask, logits(SPEC, p, tokens, mask)


def test_query_blocks_equal_the_one_shot_kernel(long_logits, monkeypatch):
    p, tokens, mask, blocked = long_logits
    monkeypatch.setattr(kernels, "LONG_QUERIES", 10 ** 9)  # the same call, every query at once
    whole = logits(SPEC, p, tokens, mask)
    real = np.asarray(mask).astype(bool)
    assert np.abs(whole[real]).max() > 0.5
    np.testing.assert_allclose(blocked[real], whole[real], rtol=0, atol=SAME_MATH_TOL)


def test_cached_long_prefill_equals_the_full_forward(long_logits):
    p, tokens, mask, full = long_logits
    cache = model.init_cache(SPEC, 2, LONG + 3, jnp.float32)
    got, _ = jax.jit(lambda p, t, m, c: model.forward_cached(SPEC, p, t, m, model.default_positions(m), c, 0))(
        p, tokens, mask, cache)
    real = np.asarray(mask).astype(bool)
    np.testing.assert_allclose(np.asarray(got)[real], full[real], rtol=0, atol=SAME_MATH_TOL)


@pytest.mark.parametrize("length", [40, LONG])
def test_dot_product_attention_equals_the_explicit_kernel(long_logits, length):
    p, tokens, mask, want = long_logits
    if length != LONG:
        tokens, mask = batch(length)
        want = logits(SPEC, p, tokens, mask)
    got = logits(SPEC.replace(attention_impl=kernels.XLA), p, tokens, mask)
    real = np.asarray(mask).astype(bool)
    np.testing.assert_allclose(got[real], want[real], rtol=0, atol=SAME_MATH_TOL)


def test_soft_capped_scores_keep_the_explicit_kernel():
    capped = SPEC.replace(attn_softcap=2.0)
    assert kernels.kernel(capped.replace(attention_impl=kernels.CUDNN)) is kernels.explicit
    assert kernels.kernel(SPEC.replace(attention_impl=kernels.CUDNN)) is kernels.library
    assert kernels.kernel(SPEC) is kernels.explicit
    rng = np.random.default_rng(2)
    q, k = (jnp.asarray(rng.normal(size=(1, 6, h, 8)), jnp.bfloat16) for h in (4, 2))
    mask = jnp.tril(jnp.ones((1, 6, 6), bool))
    cudnn, xla = (np.asarray(kernels.dense(SPEC.replace(attention_impl=i), q, k, k, mask), np.float32)
                  for i in (kernels.CUDNN, kernels.XLA))
    np.testing.assert_array_equal(cudnn, xla)  # no GPU here: cuDNN asked for runs XLA's implementation
    with pytest.raises(JaxmergeError, match="attention_impl"):
        SPEC.replace(attention_impl="flash")


def test_long_prefill_temporaries_shrink_with_the_blocks(monkeypatch):
    shapes = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, np.float32), param_shapes(SPEC),
                          is_leaf=lambda s: isinstance(s, tuple))
    tokens = jax.ShapeDtypeStruct((1, 2048), np.int32)

    def temp():
        f = jax.jit(lambda p, t: model.forward(SPEC, p, t))
        return f.lower(shapes, tokens).compile().memory_analysis().temp_size_in_bytes
    blocked = temp()
    monkeypatch.setattr(kernels, "LONG_QUERIES", 10 ** 9)
    assert blocked < 0.25 * temp()
