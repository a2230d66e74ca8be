"""Rounding to the merge's 16-bit dtype, as a conversion would round (ties to even, float16 subnormals, overflow to
Inf), inside fused jitted expressions; float32 is the identity. Oracle: numpy / ml_dtypes casts."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jaxmerge.merge.numerics import const, fixed_order_dot, rnd

CASTS = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


@pytest.mark.parametrize("math", sorted(CASTS))
def test_rnd_is_the_cast_round_trip(math):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=20000) * s for s in (1e-9, 1e-7, 3e-5, 1e-2, 1, 300, 7e4)])
    x = np.concatenate([x, [65504, 65519.9, 65520, 2.98e-8, 2.99e-8, 5.96e-8, -0.0, 2**-14, 2**-14 - 2**-25]])
    a, b = x.astype(np.float32), (x[::-1] * 0.37).astype(np.float32)
    with np.errstate(over="ignore"):
        want = (a.astype(CASTS[math]).astype(np.float32) * b).astype(CASTS[math]).astype(np.float32)
        got = np.asarray(jax.jit(lambda u, v: rnd(rnd(u, math) * v, math))(a, b))  # fused with a product
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    assert same.all(), (a[~same][:3], got[~same][:3], want[~same][:3])
    assert np.array_equal(np.signbit(got), np.signbit(want))
    assert np.array_equal(np.asarray(rnd(jnp.asarray(a), "float32")), a)


def test_thresholds_are_compared_in_the_merge_dtype():
    assert const(1e-8, "float16") == 0.0 and const(1e-8, "float32") == float(np.float32(1e-8))
    assert const(1e-7, "float16") == float(np.float16(1e-7)) and const(1e-8, "bfloat16") > 0


def _fixed_order_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The oracle: numpy's float32 ops (each rounded once, never fused), exact products of 12-bit halves summed
    per element, then the halving order over the last axis."""
    def halves(v):
        hi = (v.view(np.uint32) & np.uint32(0xFFFFF000)).view(np.float32)
        return hi, v - hi
    (ah, al), (bh, bl) = halves(a), halves(b)
    x = ((ah * bh + ah * bl) + al * bh) + al * bl
    while x.shape[-1] > 1:
        if x.shape[-1] % 2:
            x = np.concatenate([x, np.zeros_like(x[..., :1])], axis=-1)
        x = x[..., : x.shape[-1] // 2] + x[..., x.shape[-1] // 2:]
    return x[..., 0]


@pytest.mark.parametrize("n", [1, 32, 97, 4099])
def test_fixed_order_dot_has_the_same_bits_in_every_program(n):
    """Alone, vmapped over layers, fused with the subtraction that makes task vectors, and sharded over 4
    devices: the same bits, numpy's (a dot's order, and whether a product and an add become one FMA, are
    XLA's choice per program and CPU); and within float32 rounding of the float64 dot."""
    rng = np.random.default_rng(n)
    base, x = rng.normal(size=(3, n)).astype(np.float32), rng.normal(size=(3, 2, n)).astype(np.float32)
    v = x - base[:, None]
    want = _fixed_order_dot(v[:, 0], v[:, 1])
    alone = np.stack([np.asarray(jax.jit(fixed_order_dot)(v[i, 0], v[i, 1])) for i in range(3)])
    task = lambda b, s: fixed_order_dot(s[0] - b, s[1] - b)  # noqa: E731
    mapped = np.asarray(jax.jit(jax.vmap(task))(base, x))
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:4]).reshape(4), ("d",))
    shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, None, "d") if n % 4 == 0 else
                                       jax.sharding.PartitionSpec())
    sharded = np.asarray(jax.jit(jax.vmap(task))(base, jax.device_put(x, shard)))
    for got in (alone, mapped, sharded):
        assert np.array_equal(got, want), (got, want)
    exact = np.einsum("ln,ln->l", v[:, 0].astype(np.float64), v[:, 1].astype(np.float64))
    np.testing.assert_allclose(want, exact, rtol=1e-5 * np.sqrt(n), atol=1e-6 * np.sqrt(n))
