"""Sparsification of one task vector, mergekit 0.1.5 semantics, as pure functions of traced hyperparameters.

Magnitude methods take `rank` (each element's position in a stable sort of |delta|, precomputed once per
tensor; a one-shot merge, whose density is known, selects instead: `top_k_rank`), so that a density becomes
one comparison per element instead of a sort per candidate, and exactly
mergekit's count is kept even when magnitudes tie at the cut (16-bit weights tie often). Among tied elements
the lower flat index goes first (torch's stable sort); mergekit's own unstable argsort breaks such ties in a
data-dependent order (deterministic, but no index rule), so at tied positions only the count is mergekit's.

Quirks matched on purpose:
- k = max(1, int(density * n)) for TIES-magnitude; a positive density keeps at least one element. The count is
  mergekit's float64 `int(v * n)`, computed exactly for the traced float32 value (jaxmerge.merge.count).
- density >= 1 returns the tensor untouched (no rescale); TIES/DELLA density <= 0 returns zeros.
- Rescale (`rescale` true: DARE, DELLA by default) is NOT the DARE paper's 1/density: mergekit multiplies the
  kept values by sum|x| / sum|kept| so the L1 norm is matched exactly, and skips the rescale when either sum
  is below 1e-7 (compared in the merge's dtype).
- DELLA ranks magnitudes within each row (the last axis; 1-D tensors are one row) and keeps each element with
  probability (density - epsilon) + 2 * epsilon * (rank - 1) / (columns - 1).
- `math` (static) is the dtype the merge is computed in: magnitude masks rescale in it; DARE and DELLA work in
  float32 for float16 (torch has no float16 bernoulli on CPU) and in bfloat16 for bfloat16, as mergekit does.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxmerge.merge.count import count
from jaxmerge.merge.numerics import const, rnd

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
    index = jax.lax.iota(jnp.uint32, int(np.prod(shape))).reshape(shape)
    bits = _fmix(_fmix(index * jnp.uint32(0x9E3779B9) + seed) ^ data[1])
    return (bits >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)


def l1_rescale(x: jax.Array, kept: jax.Array, rescale, math: str = "float32") -> jax.Array:
    """`kept` scaled to the L1 norm of `x` when `rescale` (0/1 array) is on and both norms are >= 1e-7."""
    before, after = rnd(jnp.abs(x).sum(), math), rnd(jnp.abs(kept).sum(), math)
    eps = const(RESCALE_EPS, math)
    ok = (before >= eps) & (after >= eps) & (rescale > 0.5)
    return jnp.where(ok, rnd(kept * rnd(before / jnp.where(ok, after, 1.0), math), math), kept)


def stable_rank(x: jax.Array, descending: bool) -> jax.Array:
    """int32 position of each element of |x| in a stable sort (ties: lower flat index first). Sorted by numpy
    on the host through a callback: this runs once per tensor (genome-independent), and XLA:CPU's sort was the
    bulk of a one-shot TIES merge's time."""
    def host(d):
        a = np.abs(np.asarray(d, np.float32)).reshape(-1)
        order = np.argsort(-a if descending else a, kind="stable")
        rank = np.empty(a.size, np.int32)
        rank[order] = np.arange(a.size, dtype=np.int32)
        return rank.reshape(np.shape(d))
    shape = jax.ShapeDtypeStruct(x.shape, jnp.int32)
    return jax.pure_callback(host, shape, x, vmap_method="sequential")


def top_k_rank(x: np.ndarray, density, out: np.ndarray | None = None) -> np.ndarray:
    """For a density known before the merge (a one-shot `jaxmerge merge`), on the host: an int32 array that
    `magnitude` reads exactly as stable_rank(x, descending=True) at this density, i.e. 0 on the
    max(1, int(density * n)) largest |x| (ties at the cut: lower flat index first, the stable sort's rule) and n
    elsewhere. Found by selection, not a sort: the cut is the k-th largest of |x|'s float32 bit patterns
    (order-preserving for |x| >= 0; `_ascending_at`). k is mergekit's float64 int(density * n) of the float32
    density, as jaxmerge.merge.count computes it in a traced program. Finite inputs (the loader refuses NaN).
    `out`: an int32 array of x's shape to write into (a row of the models' stacked state)."""
    n = x.size
    k = min(max(int(float(np.float32(density)) * n), 1), n)
    bits = np.abs(np.asarray(x, np.float32)).reshape(-1).view(np.uint32)
    cut = _ascending_at(bits, n - k)
    dropped = bits < cut
    extra = n - int(np.count_nonzero(dropped)) - k  # values tied at the cut beyond k: drop the later ones
    if extra > 0:
        dropped[np.flatnonzero(bits == cut)[-extra:]] = True
    out = np.empty(x.shape, np.int32) if out is None else out
    np.multiply(dropped.reshape(x.shape), np.int32(n), out=out, dtype=np.int32)
    return out


SAMPLE = 1 << 14  # elements of the sample that brackets a cut; smaller tensors are partitioned whole


def _ascending_at(bits: np.ndarray, index: int) -> np.uint32:
    """sorted(bits)[index], exactly, in linear time: a strided sample of SAMPLE elements brackets the value
    (8 standard deviations of the sample's rank error either side), one pass counts the elements below the
    bracket and gathers those in it (~6 % of the tensor), and np.partition runs over those alone; a bracket
    that misses (a sample unlike its tensor) falls back to partitioning everything. 2x faster than a
    histogram of the high 16 bits (np.bincount converts its input to int64 first)."""
    n = bits.size
    if n <= 4 * SAMPLE:
        return np.partition(bits, index)[index]
    sample = np.sort(bits[:: n // SAMPLE])
    at, margin = index * sample.size // n, 4 * int(np.sqrt(sample.size)) + 2
    lo = sample[at - margin] if at - margin > 0 else np.uint32(0)  # near an end, the bracket reaches it
    hi = sample[at + margin] if at + margin < sample.size - 1 else np.uint32(np.iinfo(np.uint32).max)
    inside = bits >= lo
    below = n - int(np.count_nonzero(inside))
    inside &= bits <= hi
    candidates = bits[inside]
    if below <= index < below + candidates.size:
        return np.partition(candidates, index - below)[index - below]
    return np.partition(bits, index)[index]


def magnitude(x, rank, density, rescale, math: str = "float32") -> jax.Array:
    """Keep the max(1, int(density * n)) largest |x| (TIES); `rank` = stable_rank(x, descending=True)."""
    n = x.size
    k = jnp.clip(count(density, n), 1, n)
    out = l1_rescale(x, jnp.where(rank < k, x, 0.0), rescale, math)
    return jnp.where(density >= 1, x, jnp.where(density <= 0, 0.0, out))


def magnitude_outliers(x, rank, density, gamma, rescale, math: str = "float32") -> jax.Array:
    """Breadcrumbs: drop the int(gamma * n) largest, then the smallest, keeping int(density * n) elements, i.e.
    ascending positions [n_bot, n_bot + target) with n_bot = max(0, n - target - n_top) (outlier removal shrinks
    when needed to keep the target count); `rank` = stable_rank(x, descending=False)."""
    n = x.size
    target, n_top = count(density, n), count(gamma, n)
    n_bot = jnp.maximum(0, n - target - n_top)
    kept = jnp.where((rank >= n_bot) & (rank < n_bot + target), x, 0.0)
    return jnp.where(density >= 1, x, l1_rescale(x, kept, rescale, math))


def random_work(math: str) -> str:
    """The dtype mergekit's bernoulli-based sparsifiers compute in (float16 has no CPU bernoulli in torch)."""
    return "float32" if math == "float16" else math


def bernoulli(x, density, rescale, key, stream=0, math: str = "float32") -> jax.Array:
    """DARE: keep each element with probability `density` (a uniform draw below it)."""
    keep = uniform(key, x.shape, stream) < density
    out = rnd(l1_rescale(x, jnp.where(keep, x, 0.0), rescale, random_work(math)), math)
    return jnp.where(density >= 1, x, out)


def row_rank_norm(x: jax.Array) -> jax.Array:
    """(rank - 1) / (columns - 1) of |x| within each row (last axis), ascending; genome-independent (DELLA)."""
    rows = x.reshape(1, -1) if x.ndim < 2 else x
    ranks = jnp.argsort(jnp.argsort(jnp.abs(rows), axis=-1), axis=-1).astype(jnp.float32)
    return (ranks / (rows.shape[-1] - 1)).reshape(x.shape)


def della(x, rank_norm, density, epsilon, rescale, key, stream=0, math: str = "float32") -> jax.Array:
    """DELLA magprune: keep with probability (density - eps) + 2 * eps * rank_norm."""
    probs = (density - epsilon) + rank_norm * 2 * epsilon
    keep = uniform(key, x.shape, stream) < probs
    out = rnd(l1_rescale(x, jnp.where(keep, x, 0.0), rescale, random_work(math)), math)
    return jnp.where(density >= 1, x, jnp.where(density <= 0, 0.0, out))
