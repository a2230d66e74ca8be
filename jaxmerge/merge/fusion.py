"""Arcee Fusion (mergekit 0.1.5's arcee_fusion): take a fine-tune's change only where it matters most.

    importance = |ft - base| * KL(softmax(ft) || softmax(base))    (softmax and KL along the last axis, + 1e-8)
    threshold  = median + 1.5 * (q3 - q1) of the importances        (order statistics at int(q * (n - 1)))
    merged     = base + (ft - base) * (importance >= threshold)

It has no hyper-parameter, so the whole mask is genome-independent: `init` computes it once and the kernel is a
masked add. The order statistics come from numpy's partition on the host. mergekit samples one million elements
(with replacement, from torch's global generator) of tensors larger than that before taking the quantiles; a
global generator's draw cannot be reproduced, so jaxmerge takes the exact quantiles of every element there (what
mergekit's sample estimates); below a million elements both are exact and equal.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxmerge.merge.base import MergeMethod
from jaxmerge.merge.hparams import ignored
from jaxmerge.merge.numerics import F32, rnd

PAPER = "Arcee Fusion (Arcee AI, mergekit 0.1.5), https://arcee.ai"
QUANTILES = (0.25, 0.5, 0.75)


def _softmax(x, math):
    """torch's softmax on the last axis, rounded once to the merge's dtype (+ mergekit's 1e-8)."""
    return rnd(rnd(jax.nn.softmax(x, axis=-1), math) + 1e-8, math)


def _order_statistics(x: jax.Array) -> jax.Array:
    """The elements of flattened `x` at sorted positions int(float32(q) * float32(n - 1)), as torch indexes."""
    n = x.size
    where = [int(np.float32(q) * np.float32(n - 1)) for q in QUANTILES]

    def host(v):
        flat = np.asarray(v, np.float32).reshape(-1)
        return np.partition(flat, where)[where].astype(np.float32)
    return jax.pure_callback(host, jax.ShapeDtypeStruct((3,), F32), x, vmap_method="sequential")


def init_tensor(base, sources, math="float32"):
    r = lambda x: rnd(x, math)
    base, ft = r(base.astype(F32)), r(sources[0].astype(F32))
    delta = r(ft - base)
    p, q = _softmax(ft, math), _softmax(base, math)
    kl = r(jnp.sum(r(p * r(jnp.log(r(p / q)))), axis=-1, keepdims=True))
    importance = r(jnp.abs(delta) * kl)
    q1, median, q3 = _order_statistics(importance)
    threshold = r(median + r(1.5 * r(q3 - q1)))
    # mergekit's mask is a float32 tensor, so the masked add is float32 even in a 16-bit merge (rounded on writing)
    return {"merged": base + jnp.where(importance >= threshold, delta, 0.0)}


def kernel(state, hp, key, math="float32"):
    return state["merged"]


ARCEE_FUSION = MergeMethod("arcee_fusion", (ignored("weight"),), "required", (1, 1), PAPER, init_tensor, kernel)
