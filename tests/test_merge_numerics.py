"""Rounding to the merge's 16-bit dtype, as a conversion would round (ties to even, float16 subnormals, overflow to
Inf), inside fused jitted expressions; float32 is the identity. Oracle: numpy / ml_dtypes casts."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jaxmerge.merge.numerics import const, rnd

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
