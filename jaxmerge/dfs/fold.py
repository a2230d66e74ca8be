"""Fold a DFS path into a plain decoder stack: the used steps' layers in order, with every scale folded in.

The path scales the residual stream h entering each used layer: x_k = s_k * h_{k-1}. A plain decoder cannot
scale its stream (a layer only adds to it), so we store a rescaled stream instead: with C_k = s_1 * ... * s_k,
the plain model carries g_k = h_k / C_k. Layer k of the plain model then sees g_{k-1} = x_k / C_k, and

  * RMSNorm(C * g) = sign(C) * RMSNorm(g) (scale invariance), so the attention and MLP inputs are right once the
    layer's two norm gains are multiplied by sign(C_k) (this is where a negative scale goes);
  * its attention and MLP outputs must enter the stored stream divided by C_k: o_proj (and o_bias) and down_proj
    are multiplied by 1 / C_k, so g_k = g_{k-1} + attn / C_k + mlp / C_k = h_k / C_k exactly;
  * the final norm sees g_P = h_P / C_P: its gain is multiplied by sign(C_P). Embeddings and head are untouched.

Which tensors are which is the family's record (`pre_norms`, `residual_writers`): where a family normalises a
block's output before it joins the stream (Gemma 2/3's sandwich norms), a scale put into o_proj / down_proj
would be undone by that norm, so the 1 / C goes into the post-norm's gain instead, and that is exact too. A
(1 + w) gain (Gemma) is scaled as the gain it is: w -> f * (1 + w) - 1.

Exactness: everything above is exact except RMSNorm's eps. The path computes x / sqrt(mean(x^2) + eps); the plain
model computes the same as x / sqrt(mean(x^2) + eps * C^2). The relative difference of a normalised input is
about eps * |C^2 - 1| / (2 * (mean(x^2) + eps)): zero where |C_k| = 1 (sign flips, unscaled stretches), and
small once the stream is large against eps (real models after their first layer, whose scale is fixed at 1
in matrix mode). It grows where a path shrinks the stream towards eps (small C), where the path's own output
is eps-dominated. The one freedom left, a constant factor on the whole stored stream (via the embeddings), is
left at 1: that keeps the first layer, where real streams are smallest, exact. No plain decoder can remove the
rest: the effective eps would differ per layer, and a layer can only add to its stream, never rescale it.
A zero cumulative scale has no plain equivalent (the stream would be divided by 0), so it is refused.
Measured: benchmarks/RESULTS.md, section "dfs".
"""
from __future__ import annotations

import numpy as np

from jaxmerge.arch import ArchSpec
from jaxmerge.dfs.layout import DecodedPath
from jaxmerge.errors import JaxmergeError, expect
from jaxmerge.families import family_of
from jaxmerge.params import LEAVES, Params

NORM_GAINS = family_of("llama").pre_norms  # the Llama family's (what a passthrough recipe's filters name)


def used_steps(path: DecodedPath) -> np.ndarray:
    return np.flatnonzero(np.asarray(path.included) > 0)


def cumulative_scales(path: DecodedPath) -> np.ndarray:
    """C_k for the used steps in path order (float64, host)."""
    return np.cumprod(np.asarray(path.scales, np.float64)[used_steps(path)])


def fold_factors(path: DecodedPath) -> tuple[np.ndarray, np.ndarray]:
    """(1 / C_k, sign C_k) per used step, as the float32 numbers the fold multiplies by (and the passthrough
    recipe of the path writes: `jaxmerge merge` multiplies the same float32s in the same way)."""
    cum = cumulative_scales(path)
    return (1.0 / cum).astype(np.float32), np.sign(cum).astype(np.float32)


def _times(array, factors: np.ndarray, offset: bool = False):
    """array [P, ...] times float32 factors [P] along the leading axis, in float32 (as passthrough's `scale`
    multiplies), cast back to the storage dtype; with `offset` the array is w of a (1 + w) gain."""
    array = np.asarray(array)
    factors = np.asarray(factors, np.float32).reshape((-1,) + (1,) * (array.ndim - 1))
    if offset:
        return ((1 + array.astype(np.float32)) * factors - 1).astype(array.dtype)
    return (array.astype(np.float32) * factors).astype(array.dtype)


def fold(pool: Params, path: DecodedPath, spec: ArchSpec | None = None) -> Params:
    """Canonical params of the plain model equal to the decoded `path` (host arrays); `spec` says the family
    (None: the Llama family's norms)."""
    steps = used_steps(path)
    expect(steps.size > 0, "expected a DFS path with at least one used step, found an empty path")
    cum = cumulative_scales(path)
    bad = np.flatnonzero(~np.isfinite(cum) | (cum == 0))
    if bad.size:
        raise JaxmergeError(f"expected nonzero finite path scales (a plain model cannot represent a zeroed "
                            f"stream), found cumulative scale {cum[bad[0]]} at step {steps[bad[0]]}")
    rows = np.asarray(path.layer)[steps]
    layers = {leaf: np.asarray(a)[rows] for leaf, a in pool["pool"].items()}
    inverse, sign = fold_factors(path)
    family, offset = family_of(spec or "llama"), bool(spec and spec.norm_offset)
    for leaf in family.residual_writers:
        if leaf in layers:
            layers[leaf] = _times(layers[leaf], inverse, offset and LEAVES[leaf].group == "norm")
    for leaf in family.pre_norms:
        layers[leaf] = _times(layers[leaf], sign, offset)
    out = {k: np.asarray(v) for k, v in pool.items() if k not in ("pool", "included", "scales", "layer")}
    out["norm"] = _times(out["norm"][None], sign[-1:], offset)[0]
    out["layers"] = layers
    return out
