"""Reinforced Agent Merging: ram and ramplus_tl (mergekit 0.1.5 semantics).

    delta_m = source_m - base;  active_m = |delta_m| > epsilon;  c = sum_m active_m   (per element)
    ram:        merged = base + sum_m active_m * delta_m * (1 if c == 1 else 1 / c)
    ramplus_tl: elements only one model moves (c == 1) are scaled by lambda_m = 1 + r * clip(rho_m, 0, alpha),
                rho_m = (#elements m shares with others) / max(#elements m moves alone, epsilon), per tensor

Unique updates are kept whole, shared ones averaged over the models that make them. Task vectors depend on no
hyper-parameter, so `init` stores them once; the active masks depend on the traced `epsilon` and are a per-element
comparison in the kernel. Dtype: with a 16-bit `math` every torch op is rounded where torch rounds it; in
ramplus_tl the float32 lambda promotes the whole sum to float32 (it is a 1-D tensor), so mergekit adds the base
in float32 there and rounds once when writing: the kernel does the same.
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxmerge.merge.base import MergeMethod
from jaxmerge.merge.hparams import ignored, number
from jaxmerge.merge.numerics import F32, rnd

PAPER = "RAM, Reinforced Agent Merging (2026), https://arxiv.org/abs/2601.13572"


def init_tensor(base, sources, math="float32"):
    base = rnd(base.astype(F32), math)
    return {"base": base, "delta": rnd(rnd(sources.astype(F32), math) - base, math)}


def _masks(state, hp, math):
    """Per model: (delta, active, moved by it alone, moved by several, 1 / contributors rounded as torch divides)."""
    deltas = [state["delta"][i] for i in range(state["delta"].shape[0])]  # unrolled: M is static and small
    active = [jnp.abs(d) > rnd(hp["epsilon"], math) for d in deltas]  # torch casts the threshold to the dtype
    count = sum(a.astype(jnp.int32) for a in active)
    return deltas, active, count == 1, count > 1, jnp.maximum(count, 1).astype(F32)


def _shared(d, active, overlap, count, math):
    """A delta where several models move the element, divided by how many do."""
    return rnd(jnp.where(active & overlap, d, 0.0) / count, math)


def ram_kernel(state, hp, key, math="float32"):
    deltas, active, unique, overlap, count = _masks(state, hp, math)
    merged = sum(jnp.where(a & unique, d, 0.0) + _shared(d, a, overlap, count, math) for d, a in zip(deltas, active))
    return rnd(state["base"] + rnd(merged, math), math)


def ramplus_kernel(state, hp, key, math="float32"):
    deltas, active, unique, overlap, count = _masks(state, hp, math)
    # per model: elements it moves alone and elements it shares, counted in one reduction (one pass over the data)
    flags = jnp.stack([a & unique for a in active] + [a & overlap for a in active]).astype(jnp.int32)
    counts = flags.reshape(flags.shape[0], -1).sum(axis=1).astype(F32)
    unique_n, shared_n = counts[:len(active)], counts[len(active):]
    lam = 1 + hp["r"] * jnp.clip(shared_n / jnp.maximum(unique_n, hp["epsilon"]), 0.0, hp["alpha"])
    merged = 0.0
    for i, (d, a) in enumerate(zip(deltas, active)):
        # lambda is a float32 tensor in mergekit: from here on the sum is float32 even in a 16-bit merge
        merged = merged + (jnp.where(a & unique, d, 0.0) * lam[i] + _shared(d, a, overlap, count, math))
    return state["base"] + merged


# a `weight` per model is accepted and ignored, as mergekit 0.1.5 accepts it (its own tests set one)
RAM = MergeMethod("ram", (number("epsilon", 1e-5), ignored("weight")), "required", (1, None), PAPER, init_tensor,
                  ram_kernel)
RAMPLUS_TL = MergeMethod("ramplus_tl", (number("r", 0.1), number("alpha", 0.2), number("epsilon", 1e-5),
                                        ignored("weight")), "required", (1, None), PAPER, init_tensor, ramplus_kernel)
