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

import jax
import jax.numpy as jnp

RESCALE_EPS = 1e-7


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


def bernoulli(x, density, rescale, key) -> jax.Array:
    """DARE: keep each element with probability `density` (a uniform draw below it)."""
    keep = jax.random.uniform(key, x.shape) < density
    out = l1_rescale(x, jnp.where(keep, x, 0.0), rescale)
    return jnp.where(density >= 1, x, out)


def row_rank_norm(x: jax.Array) -> jax.Array:
    """(rank - 1) / (columns - 1) of |x| within each row (last axis), ascending; genome-independent (DELLA)."""
    rows = x.reshape(1, -1) if x.ndim < 2 else x
    ranks = jnp.argsort(jnp.argsort(jnp.abs(rows), axis=-1), axis=-1).astype(jnp.float32)
    return (ranks / (rows.shape[-1] - 1)).reshape(x.shape)


def della(x, rank_norm, density, epsilon, rescale, key) -> jax.Array:
    """DELLA magprune: keep with probability (density - eps) + 2 * eps * rank_norm."""
    probs = (density - epsilon) + rank_norm * 2 * epsilon
    keep = jax.random.uniform(key, x.shape) < probs
    out = l1_rescale(x, jnp.where(keep, x, 0.0), rescale)
    return jnp.where(density >= 1, x, jnp.where(density <= 0, 0.0, out))
