"""Generalized task arithmetic: task_arithmetic, ties, dare_*, breadcrumbs*, della* (mergekit 0.1.5 semantics).

    delta_m = sparsify(source_m - base);  d_m = weight_m * delta_m
    consensus (TIES family): majority = +1 where sum_m d_m >= 0 else -1 (a zero sum counts as +);
        keep d_m where sign(d_m) == majority (zeros never match); divisor = sum_m weight_m * kept_m, 0 -> 1
    otherwise: divisor = sum_m weight_m, |divisor| < 1e-8 -> 1
    merged = base + lambda * (sum_m kept d_m) / (divisor if normalize else 1)

The sign is elected on WEIGHTED deltas, so a negative weight votes against its own delta, as in mergekit.
With a 16-bit `math` (the recipe's dtype, as mergekit computes) the weights are rounded to it, each operation
above is rounded to it, and the sums over models accumulate in float32 and round once, as torch does; `lambda`
multiplies in float32. `|divisor| < 1e-8` is compared in that dtype (in float16 1e-8 is 0: the guard never fires).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxmerge.errors import expect
from jaxmerge.merge import sparsify
from jaxmerge.merge.base import MergeMethod
from jaxmerge.merge.hparams import HParam, fraction, number, switch, weight
from jaxmerge.merge.numerics import F32, const, model_sum, over, rnd
from jaxmerge.params import aligned_empty


def _task_vectors(base, sources, math):
    base = rnd(base.astype(F32), math)
    return {"base": base, "delta": rnd(rnd(sources.astype(F32), math) - base, math)}


def _init(extra: Callable | None):
    """Task vectors (in the merge's dtype, stored as float32) plus the sparsifier's precompute, per model."""
    def init_tensor(base, sources, math="float32"):
        state = _task_vectors(base, sources, math)
        if extra is not None:
            state["aux"] = jax.vmap(extra)(state["delta"])
        return state
    return init_tensor


def _init_once(base, sources, hp, math="float32"):
    """TIES' state for one known density per model (a one-shot merge): the task vectors here, the kept elements
    then by selection on the host (`_select`)."""
    return _task_vectors(base, sources, math)


def _select(state, hp):
    """The rank entry of a one-shot TIES state: each model's kept elements at its density (sparsify.top_k_rank)."""
    delta, density = state["delta"], np.asarray(hp["density"])
    aux = aligned_empty(delta.shape, np.int32)
    for m in range(delta.shape[0]):
        sparsify.top_k_rank(delta[m], density[m], out=aux[m])
    return {"aux": aux}


SPARSIFIERS = {
    None: (None, lambda d, aux, hp, key, m, math: d),
    "magnitude": (lambda d: sparsify.stable_rank(d, descending=True), lambda d, aux, hp, key, m, math:
                  sparsify.magnitude(d, aux, hp["density"], hp["rescale"], math)),
    "outliers": (lambda d: sparsify.stable_rank(d, descending=False), lambda d, aux, hp, key, m, math:
                 sparsify.magnitude_outliers(d, aux, hp["density"], hp["gamma"], hp["rescale"], math)),
    "random": (None, lambda d, aux, hp, key, m, math: sparsify.bernoulli(d, hp["density"], hp["rescale"], key, m,
                                                                         math)),
    "della": (sparsify.row_rank_norm, lambda d, aux, hp, key, m, math: sparsify.della(
        d, aux, hp["density"], hp["epsilon"], hp["rescale"], key, m, math)),
}


def _consensus(deltas, w, math):
    """TIES sign election on the weighted deltas: (sum of agreeing deltas, sum of their weights, 0 -> 1)."""
    majority = jnp.where(rnd(model_sum(deltas), math) >= 0, 1.0, -1.0)
    keep = jnp.sign(deltas) == majority
    mixed = rnd(model_sum(jnp.where(keep, deltas, 0.0)), math)
    divisor = rnd(model_sum(jnp.where(keep, w, 0.0)), math)
    return mixed, jnp.where(divisor == 0, 1.0, divisor)


def _plain(deltas, w, math):
    divisor = rnd(model_sum(w), math)
    return rnd(model_sum(deltas), math), jnp.where(jnp.abs(divisor) < const(1e-8, math), 1.0, divisor)


def _kernel(sparsifier: str | None, consensus: bool, model_hparams: tuple[str, ...]):
    _, apply = SPARSIFIERS[sparsifier]

    def kernel(state, hp, key, math="float32"):
        delta, m = state["delta"], state["delta"].shape[0]
        per_model = {n: hp[n] for n in model_hparams}
        shared = {n: v for n, v in hp.items() if n not in model_hparams}
        aux = state.get("aux", jnp.zeros((m,)))
        sparse = jax.vmap(lambda d, a, h, i: apply(d, a, {**h, **shared}, key, i, math))(
            delta, aux, per_model, jnp.arange(m))
        w = rnd(hp["weight"].astype(F32), math).reshape((m,) + (1,) * (delta.ndim - 1))
        mixed, divisor = (_consensus if consensus else _plain)(rnd(sparse * w, math), w, math)
        ratio = mixed / divisor if consensus else over(mixed, divisor)  # per element vs one divisor per tensor
        mixed = jnp.where(hp["normalize"] > 0.5, rnd(ratio, math), mixed)
        return rnd(state["base"] + rnd(mixed * hp["lambda"], math), math)
    return kernel


# mergekit's (normalize, rescale) defaults per method
DEFAULTS = {"task_arithmetic": (False, False), "ties": (True, False), "dare_ties": (False, True),
            "dare_linear": (False, True), "breadcrumbs": (False, False), "breadcrumbs_ties": (False, False),
            "della": (True, True), "della_linear": (False, True)}
PAPERS = {
    None: "Editing Models with Task Arithmetic (Ilharco et al. 2022), https://arxiv.org/abs/2212.04089",
    "magnitude": "TIES-Merging (Yadav et al. 2023), https://arxiv.org/abs/2306.01708",
    "random": "DARE, Language Models are Super Mario (Yu et al. 2023), https://arxiv.org/abs/2311.03099",
    "outliers": "Model Breadcrumbs (Davari & Belilovsky 2023), https://arxiv.org/abs/2312.06795",
    "della": "DELLA-Merging (Deep et al. 2024), https://arxiv.org/abs/2406.11617",
}


def table(name: str, sparsifier: str | None) -> tuple[HParam, ...]:
    """mergekit's parameter spec of one method: weight and density per model (density only read when there is
    a sparsifier), gamma (breadcrumbs) or epsilon (DELLA); lambda, normalize, rescale and int8_mask shared."""
    normalize, rescale = DEFAULTS[name]
    snapped = sparsifier in ("magnitude", "outliers")
    rows = [weight(), fraction("density", 1.0, snapped=snapped)]
    rows += {"outliers": [fraction("gamma", 0.01, snapped=True)], "della": [fraction("epsilon", 0.15)]}.get(
        sparsifier, [])
    rows += [number("lambda", 1.0), switch("normalize", normalize), switch("rescale", rescale)]
    if sparsifier is None:  # task_arithmetic declares density and rescale but never sparsifies
        rows = [h if h.name not in ("density", "rescale") else _inert(h) for h in rows]
    return (*rows, switch("int8_mask", False, role="inert"))


def _inert(h: HParam) -> HParam:
    import dataclasses
    return dataclasses.replace(h, role="inert", evolvable=False)


def check_della(cell: dict, where: str) -> None:
    """mergekit raises unless density +/- epsilon lies inside (0, 1) (when it sparsifies: 0 < density < 1)."""
    for d, e in zip(cell["density"], cell["epsilon"]):
        expect(d >= 1 or d <= 0 or (0 < d - e and d + e < 1),
               f"expected density +/- epsilon inside (0, 1) at {where}, found density {d:g}, epsilon {e:g}")


def gta(name: str, sparsifier: str | None, consensus: bool) -> MergeMethod:
    """One generalized-task-arithmetic method: a sparsifier, and TIES' sign consensus or a plain sum."""
    hparams = table(name, sparsifier)
    model_hp = tuple(h.name for h in hparams if h.per_model and h.role == "merge")
    extra, _ = SPARSIFIERS[sparsifier]
    return MergeMethod(name, hparams, "required", (1, None), PAPERS[sparsifier], _init(extra),
                       _kernel(sparsifier, consensus, model_hp), check_della if sparsifier == "della" else None,
                       *((_init_once, _select) if sparsifier == "magnitude" else (None, None)))


TASK_ARITHMETIC = gta("task_arithmetic", None, False)
TIES = gta("ties", "magnitude", True)
DARE_TIES = gta("dare_ties", "random", True)
DARE_LINEAR = gta("dare_linear", "random", False)
BREADCRUMBS = gta("breadcrumbs", "outliers", False)
BREADCRUMBS_TIES = gta("breadcrumbs_ties", "outliers", True)
DELLA = gta("della", "della", True)
DELLA_LINEAR = gta("della_linear", "della", False)
