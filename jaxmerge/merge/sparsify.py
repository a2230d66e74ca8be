"""Sparsification of one task vector, mergekit 0.1.5 semantics, as pure functions of traced hyperparameters.

Magnitude methods take `sorted_abs` (|delta| sorted ascending, flattened), precomputed once per tensor, so that
a density becomes an index into it (a gather) instead of a sort per candidate. Keeping "the k largest" is done
as "|x| >= the k-th largest value": identical to mergekit's argsort unless magnitudes tie exactly at the cut.

Quirks matched on purpose:
- k = max(1, int(density * n)) for TIES-magnitude; a positive density keeps at least one element. mergekit takes
  int() of a float64 product; `jaxmerge.merge.resolve` snaps recipe densities so the float32 product floors to
  the same k (see `snap_fraction`).
- density >= 1 returns the tensor untouched (no rescale); TIES/DELLA density <= 0 returns zeros.
- Rescale (`rescale` true: DARE, DELLA by default) is NOT the DARE paper's 1/density: mergekit multiplies the
  kept values by sum|x| / sum|kept| so the L1 norm is matched exactly, and skips the rescale when either sum
  is below 1e-7.
- DELLA ranks magnitudes within each row (the last axis; 1-D tensors are one row) and keeps each element with
  probability (density - epsilon) + 2 * epsilon * (rank - 1) / (columns - 1).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

RESCALE_EPS = 1e-7


def _fmix(h: jax.Array) -> jax.Array:
    """murmur3's 32-bit finaliser: a bijective avalanche mix of uint32 values."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def uniform(key: jax.Array, shape, stream) -> jax.Array:
    """U[0, 1) draws (24-bit), a pure function of (`key`, `stream` = model index, element index).

    A counter-based hash of elementwise uint32 ops instead of jax.random: threefry costs seconds of XLA
    compile per random tensor on CPU (a DARE merge of ~12 leaves took a minute to compile), and XLA's
    RngBitGenerator gives different bits under vmap than in a scan, which would make the fused (per-layer)
    merge disagree with `merge_params`. Elementwise hashing is identical under vmap, scan and sharding."""
    data = jax.random.key_data(key).reshape(-1)[:2].astype(jnp.uint32)
    seed = _fmix(data[0] ^ _fmix(data[1] + jnp.asarray(stream, jnp.uint32) * jnp.uint32(0x9E3779B9)))
    index = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
    bits = _fmix(_fmix(index * jnp.uint32(0x9E3779B9) + seed) ^ data[1])
    return (bits >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)


def l1_rescale(x: jax.Array, kept: jax.Array, rescale) -> jax.Array:
    """`kept` scaled to the L1 norm of `x` when `rescale` (0/1 array) is on and both norms are >= 1e-7."""
    before, after = jnp.abs(x).sum(), jnp.abs(kept).sum()
    ok = (before >= RESCALE_EPS) & (after >= RESCALE_EPS) & (rescale > 0.5)
    return jnp.where(ok, kept * (before / jnp.where(ok, after, 1.0)), kept)


def magnitude(x, sorted_abs, density, rescale) -> jax.Array:
    """Keep the max(1, int(density * n)) largest |x| (TIES)."""
    n = sorted_abs.shape[-1]
    k = jnp.clip(jnp.floor(density * n), 1, n).astype(jnp.int32)
    kept = jnp.where(jnp.abs(x) >= sorted_abs[n - k], x, 0.0)
    out = l1_rescale(x, kept, rescale)
    return jnp.where(density >= 1, x, jnp.where(density <= 0, 0.0, out))


def magnitude_outliers(x, sorted_abs, density, gamma, rescale) -> jax.Array:
    """Breadcrumbs: drop the int(gamma * n) largest, then the smallest, keeping int(density * n) elements.
    Outlier removal shrinks when needed to keep the target count (n_bot = max(0, n - target - n_top))."""
    n = sorted_abs.shape[-1]
    target = jnp.floor(density * n).astype(jnp.int32)
    n_top = jnp.floor(gamma * n).astype(jnp.int32)
    n_bot = jnp.maximum(0, n - target - n_top)
    lo = sorted_abs[jnp.clip(n_bot, 0, n - 1)]
    hi = sorted_abs[jnp.clip(n_bot + target - 1, 0, n - 1)]
    a = jnp.abs(x)
    kept = jnp.where((a >= lo) & (a <= hi) & (target > 0), x, 0.0)
    return jnp.where(density >= 1, x, l1_rescale(x, kept, rescale))


def bernoulli(x, density, rescale, key, stream=0) -> jax.Array:
    """DARE: keep each element with probability `density` (a uniform draw below it)."""
    keep = uniform(key, x.shape, stream) < density
    out = l1_rescale(x, jnp.where(keep, x, 0.0), rescale)
    return jnp.where(density >= 1, x, out)


def row_rank_norm(x: jax.Array) -> jax.Array:
    """(rank - 1) / (columns - 1) of |x| within each row (last axis), ascending; genome-independent (DELLA)."""
    rows = x.reshape(1, -1) if x.ndim < 2 else x
    ranks = jnp.argsort(jnp.argsort(jnp.abs(rows), axis=-1), axis=-1).astype(jnp.float32)
    return (ranks / (rows.shape[-1] - 1)).reshape(x.shape)


def della(x, rank_norm, density, epsilon, rescale, key, stream=0) -> jax.Array:
    """DELLA magprune: keep with probability (density - eps) + 2 * eps * rank_norm."""
    probs = (density - epsilon) + rank_norm * 2 * epsilon
    keep = uniform(key, x.shape, stream) < probs
    out = l1_rescale(x, jnp.where(keep, x, 0.0), rescale)
    return jnp.where(density >= 1, x, jnp.where(density <= 0, 0.0, out))
