"""How many elements a fraction keeps: mergekit's `int(fraction * n)`, computed exactly for a traced float32.

mergekit turns a density (or breadcrumbs' gamma) into a count with Python floats: `int(v * n)`, the float64
product rounded to 53 bits, then floored. `count` reproduces that bit for bit for a traced float32 `v` and a
static element count n < 2**31 with integer arithmetic on v's mantissa and exponent (uint32 limbs; no float
product, so no FMA contraction or backend rounding can move the cut):

    v = m * 2**-s  (m < 2**24)      P = m * n < 2**55      k = floor(round53(P) / 2**s)

For a value that is a float32 (what evolution searches and writes into recipes), evolution, `jaxmerge merge` and
mergekit therefore keep the same elements. For a recipe value that is not (0.7), `snap` finds a float32 with the
same count for that tensor; where none exists (a tensor of more than ~2**24 elements, whose counts are closer
together than float32 steps) it returns None and the merge uses the nearest float32, one element off at most.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxmerge.errors import expect

U32 = jnp.uint32
MAX_ELEMENTS = 2**31


def _u32(x) -> jax.Array:
    return jnp.asarray(x, U32)


def _shift_right(hi: jax.Array, lo: jax.Array, s: jax.Array) -> jax.Array:
    """The low 32 bits of the 64-bit (hi, lo) shifted right by s in [0, 255] (every shift amount kept < 32)."""
    small = jnp.clip(s, 0, 31).astype(U32)
    carried = jnp.where(s == 0, _u32(0), hi << ((32 - small) & 31))
    low_word = (lo >> small) | carried
    high_word = hi >> (jnp.clip(s - 32, 0, 31).astype(U32))
    return jnp.where(s >= 64, _u32(0), jnp.where(s >= 32, high_word, low_word))


def _bit_length(hi: jax.Array, lo: jax.Array) -> jax.Array:
    return jnp.where(hi > 0, 64 - jax.lax.clz(hi).astype(jnp.int32), 32 - jax.lax.clz(lo).astype(jnp.int32))


def _round53(hi: jax.Array, lo: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(hi, lo) < 2**55 rounded to 53 significant bits, ties to even, as float64 rounds it."""
    r = jnp.clip(_bit_length(hi, lo) - 53, 0, 2).astype(U32)
    low = lo & ((_u32(1) << r) - 1)
    half = jnp.where(r > 0, _u32(1) << jnp.maximum(r, 1) - 1, _u32(0))
    odd = (lo >> r) & 1
    up = (r > 0) & ((low > half) | ((low == half) & (odd == 1)))
    cut = lo - low
    new_lo = cut + jnp.where(up, _u32(1) << r, _u32(0))
    return hi + (new_lo < cut).astype(U32), new_lo


def _product(m: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """m * n as 64-bit (hi, lo) for m < 2**24 (traced) and n < 2**31 (static), from 16-bit limbs."""
    m0, m1 = m & 0xFFFF, m >> 16
    n0, n1 = _u32(n & 0xFFFF), _u32(n >> 16)
    a, mid = m0 * n0, m1 * n0 + m0 * n1
    lo = a + (mid << 16)
    return m1 * n1 + (mid >> 16) + (lo < a).astype(U32), lo


def count(v: jax.Array, n: int) -> jax.Array:
    """int32 floor(float64(v * n)) for a float32 v in [0, 1] (0 for v <= 0, n for v >= 1; see module doc)."""
    expect(n < MAX_ELEMENTS, f"expected tensors of fewer than 2**31 elements for magnitude sparsification, "
                             f"found {n}")
    bits = jax.lax.bitcast_convert_type(jnp.asarray(v, jnp.float32), U32)
    exponent = ((bits >> 23) & 0xFF).astype(jnp.int32)
    mantissa = jnp.where(exponent == 0, bits & 0x7FFFFF, (bits & 0x7FFFFF) | 0x800000)
    shift = jnp.where(exponent == 0, 149, 150 - exponent)
    hi, lo = _round53(*_product(mantissa, n))
    k = _shift_right(hi, lo, jnp.clip(shift, 0, 255)).astype(jnp.int32)
    return jnp.where(v <= 0, 0, jnp.where(v >= 1, n, k))


def host_count(v: float, n: int) -> int:
    """mergekit's count of the fraction v of n elements (its own expression)."""
    return int(v * n)


def snap(v: float, n: int) -> float | None:
    """A float32 whose exact count equals mergekit's `int(v * n)`: `v` itself when it is a float32, else the
    nearer of its two float32 neighbours that has that count; None when neither has (see module doc)."""
    if v <= 0 or v >= 1 or float(np.float32(v)) == v:
        return v
    want = host_count(v, n)
    near = np.float32(v)
    other = np.nextafter(near, np.float32(np.inf if float(near) < v else -np.inf))  # compared in float64
    for candidate in (near, other):
        if host_count(float(candidate), n) == want:
            return float(candidate)
    return None
