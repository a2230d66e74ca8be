"""The dtype a merge is computed in, emulated exactly on float32 arrays.

mergekit 0.1.5 computes a merge in the recipe's `dtype` (else the sources' dtype): with `dtype: float16` its task
vectors, sign election and sums are float16 tensors. torch does each float16/bfloat16 operation in float32 and
rounds the result once (sums over the model axis accumulate in float32, then round), so a kernel reproduces it
by doing the same float32 operation and rounding with `rnd` wherever torch rounds. `math` is a static string
("float32", "float16", "bfloat16"); for float32 every `rnd` is the identity and the program is unchanged.

Rounding is explicit (`lax.reduce_precision`, plus float16's subnormals by hand, which reduce_precision flushes)
rather than a round trip through a 16-bit dtype: XLA may drop f32 -> f16 -> f32 convert pairs when it allows
excess precision, and then the result would depend on the backend and the fusion.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

F32 = jnp.float32
MATH_DTYPES = ("float32", "float16", "bfloat16")
NUMPY = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
F16_MIN_NORMAL = 2.0**-14
F16_QUANTUM = 2.0**-24  # the spacing of float16's subnormals


def rnd(x: jax.Array, math: str) -> jax.Array:
    """`x` (float32) rounded to the nearest `math` value, ties to even, kept as float32."""
    if math == "float32":
        return x
    if math == "bfloat16":
        return jax.lax.reduce_precision(x, exponent_bits=8, mantissa_bits=7)
    normal = jax.lax.reduce_precision(x, exponent_bits=5, mantissa_bits=10)
    subnormal = jnp.round(x * (1 / F16_QUANTUM)) * F16_QUANTUM
    return jnp.where(jnp.abs(x) < F16_MIN_NORMAL, subnormal, normal)


def const(value: float, math: str) -> float:
    """A Python threshold as torch compares it with a `math` tensor: cast to that dtype first (1e-8 is 0 in
    float16, so mergekit's `|sum of weights| < 1e-8` guard never fires there)."""
    return float(np.float32(NUMPY[math](value)))


def model_sum(x: jax.Array) -> jax.Array:
    """Sum over the leading (model) axis in order, in float32 (as torch accumulates 16-bit sums); unrolled: M is
    static and small, and XLA:CPU ran `x.sum(0)` of a fused [M, big] product up to ~750x slower than this
    (measured: 9.8 s vs 0.013 s for [2, 8000, 640])."""
    return sum(x[i] for i in range(x.shape[0]))


def fixed_order_dot(a: jax.Array, b: jax.Array) -> jax.Array:
    """sum(a * b) over the last axis with the same bits in every program: each product is formed exactly from
    12-bit halves of its factors, and the sum is added in one fixed order (pairwise halving).

    An XLA dot leaves its summation order to the compiler, and XLA:CPU contracts a product and an add that
    share a fusion into one FMA, which rounds once instead of twice; both depend on the program around the
    expression and on the CPU. On an AVX2 machine the Gram matrix multislerp keeps in its merge state came out
    1 ulp apart between an evolve run's init (sharded over 4 devices) and `jaxmerge merge`'s, so the recipe did
    not rebuild the winner bit for bit. Here every product of halves is exact (12 x 12 significant bits; not
    below float32's normal range, ~1e-38, where a product underflows), so an FMA rounds what the plain add rounds,
    and every sum is an explicit add, which XLA never reassociates."""
    (ah, al), (bh, bl) = _halves(a), _halves(b)
    x = ((ah * bh + ah * bl) + al * bh) + al * bl
    while x.shape[-1] > 1:
        if x.shape[-1] % 2:
            x = jnp.concatenate([x, jnp.zeros_like(x[..., :1])], axis=-1)
        half = x.shape[-1] // 2
        x = x[..., :half] + x[..., half:]
    return x[..., 0]


def _halves(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(hi, lo) with x = hi + lo exactly: hi keeps the top 11 stored mantissa bits (12 significant), lo = x - hi
    the rest (at most 12 significant bits, and exact: hi is a prefix of x)."""
    hi = jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(x, jnp.uint32) & jnp.uint32(0xFFFFF000), F32)
    return hi, x - hi


def over(x: jax.Array, d: jax.Array) -> jax.Array:
    """x / d for a divisor d that broadcasts against x (a scalar, or one value per row), as x * (1 / d).

    XLA:CPU rewrites `x / broadcast(d)` into that reciprocal multiply in some programs and not in others (it
    depends on the fusion around it: an evolve export and a `jaxmerge merge` of its recipe were 1 ulp apart on
    ~30% of lm_head). Writing the multiply leaves it nothing to rewrite, so every program computes the same
    bits; it is also what the stand-alone merge computed already, so mergekit parity is unchanged."""
    return x * (1.0 / d)


def check_math(math: str) -> str:
    from jaxmerge.errors import expect
    expect(math in MATH_DTYPES, f"expected a math dtype in {MATH_DTYPES}, found {math!r}")
    return math
