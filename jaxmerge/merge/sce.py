"""SCE: Select, Calculate, Erase (FuseChat 2.0, Wan et al. 2024), mergekit 0.1.5 semantics.

    delta_m = source_m - base
    select:    with select_topk < 1, keep only the k = int(float32(#elements of nonzero variance) * select_topk)
               elements whose variance over the models is largest (the same elements in every model)
    calculate: w_m = mean(delta_m ** 2) / sum_m mean(delta_m ** 2)  (1 / M when that sum is below 1e-6)
    erase:     TIES' sign election on the sum of the selected deltas; disagreeing entries are dropped
    merged = base + sum_m w_m * kept_m * delta_m / max(sum_m w_m * kept_m, 1e-6)

The variance and its ranking depend on no hyper-parameter: `init` computes them once (the variance in float64
on the host, as torch's CPU `var` accumulates float32 in double; the rank by a stable sort, so elements whose
variance ties at the cut are taken lower index first, like jaxmerge's TIES), and `select_topk` becomes one
comparison per element. k is computed as torch computes it: a float32 product, truncated.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxmerge.merge import sparsify
from jaxmerge.merge.base import MergeMethod
from jaxmerge.merge.hparams import HParam, ignored, switch
from jaxmerge.merge.numerics import F32, const, model_sum, over, rnd

PAPER = "SCE, FuseChat 2.0 (Wan et al. 2024), https://arxiv.org/abs/2408.07990"


def _variance(delta: jax.Array, math: str) -> jax.Array:
    """Population variance over the model axis, float64 on the host, rounded to the merge's dtype."""
    def host(d):
        d = np.asarray(d, np.float64)
        return np.var(d, axis=0).astype(np.float32)
    shape = jax.ShapeDtypeStruct(delta.shape[1:], F32)
    return rnd(jax.pure_callback(host, shape, delta, vmap_method="sequential"), math)


def init_tensor(base, sources, math="float32"):
    base = rnd(base.astype(F32), math)
    delta = rnd(rnd(sources.astype(F32), math) - base, math)
    var = _variance(delta, math)
    return {"base": base, "delta": delta, "rank": sparsify.stable_rank(var, descending=True),
            "nonzero": (var != 0).astype(jnp.int32).sum()}


def _select(state, topk):
    """The top-k-variance mask (all elements for select_topk >= 1, none for <= 0)."""
    k = jnp.floor(state["nonzero"].astype(F32) * topk).astype(jnp.int32)
    return jnp.where(topk >= 1, True, jnp.where(topk <= 0, False, state["rank"] < k))


def kernel(state, hp, key, math="float32"):
    r = lambda x: rnd(x, math)
    m = state["delta"].shape[0]
    delta = jnp.where(_select(state, hp["select_topk"]), state["delta"], 0.0)
    majority = jnp.where(r(model_sum(delta)) >= 0, 1.0, -1.0)
    keep = jnp.sign(delta) == majority
    energy = r(r(delta * delta).reshape(m, -1).mean(axis=1))
    total = r(energy.sum())
    w = jnp.where(jnp.abs(total) < 1e-6, r(jnp.full((m,), 1.0) / m), r(over(energy, total)))
    w = jnp.where(keep, w.reshape((m,) + (1,) * (delta.ndim - 1)), 0.0)
    mixed = r(model_sum(r(delta * w)))
    divisor = jnp.maximum(r(model_sum(w)), const(1e-6, math))
    return r(state["base"] + r(mixed / divisor))


SCE = MergeMethod("sce", (switch("int8_mask", False, role="inert"), HParam("select_topk", 1.0, lo=0.0, hi=1.0),
                          ignored("weight")),
                  "required", (1, None), PAPER, init_tensor, kernel)
