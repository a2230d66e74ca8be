"""Cheap fitness: score every candidate on one fixed subset of n items, estimate full-set accuracy from it.

Method: stratified sampling by source-model difficulty, with the stratified (Horvitz-Thompson) estimator.
Before evolving, each source model is scored once on the full split (`fit.per_item(source_params)`, M rows).
Items are grouped by how well the sources do on them (for 0/1 metrics: how many sources solve the item;
otherwise quantile bins of the mean source score). n is split over the strata in proportion to their
sizes (at least one item per stratum when n allows), items are drawn uniformly within each stratum with a
fixed seed, and an item from stratum h weighs N_h / (N n_h). The weighted mean is then an unbiased estimate
of the full-set mean for ANY candidate, and its variance is lower than a uniform subset's whenever a
candidate's correctness tracks the sources' (a merge mostly solves what its sources solve).

Why not IRT (as MERGE3 does): fitting per-item discrimination/difficulty needs many responders per item;
here there are only M (2-4) source models, far too few to fit item parameters without strong priors, while
stratification uses the same signal with no model to get wrong. The same subset is shared by the whole
population, so ranking noise from "easy subset vs hard subset" cancels between candidates.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxmerge.errors import expect
from jaxmerge.fitness.tasks import Item


class Subset(NamedTuple):
    indices: np.ndarray  # [n] item indices into the full split, sorted
    weights: np.ndarray  # [n] estimator weights, summing to 1


def random_subset(num_items: int, n: int, seed: int = 0) -> Subset:
    """A uniform subset with equal weights (the baseline: needs no source scores)."""
    expect(1 <= n <= num_items, f"expected 1 <= subset size <= {num_items} items, found {n}")
    idx = np.sort(np.random.default_rng(seed).choice(num_items, n, replace=False))
    return Subset(idx, np.full(n, 1.0 / n))


def strata(source_scores: np.ndarray, max_strata: int) -> np.ndarray:
    """Stratum id per item from the sources' per-item scores [M, N]: exact levels, or quantile bins."""
    mean = np.asarray(source_scores, np.float64).mean(axis=0)
    levels = np.unique(mean)
    if len(levels) <= max_strata:
        return np.searchsorted(levels, mean)
    edges = np.quantile(mean, np.linspace(0, 1, max_strata + 1)[1:-1])
    return np.searchsorted(edges, mean, side="right")


def allocate(sizes: np.ndarray, n: int) -> np.ndarray:
    """Items per stratum: proportional (largest remainder), then at least one per stratum when n allows."""
    share = n * sizes / sizes.sum()
    alloc = np.floor(share).astype(int)
    for h in np.argsort(-(share - alloc), kind="stable")[:n - alloc.sum()]:
        alloc[h] += 1
    if n >= np.count_nonzero(sizes):
        for h in np.flatnonzero((alloc == 0) & (sizes > 0)):
            alloc[int(np.argmax(alloc))] -= 1
            alloc[h] = 1
    return alloc


def stratified_subset(source_scores: np.ndarray, n: int, seed: int = 0, max_strata: int = 5) -> Subset:
    """A difficulty-stratified subset of n items with unbiased estimator weights (see module docstring)."""
    source_scores = np.atleast_2d(source_scores)
    total = source_scores.shape[1]
    expect(1 <= n <= total, f"expected 1 <= subset size <= {total} items, found {n}")
    group = strata(source_scores, max_strata)
    sizes = np.bincount(group)
    alloc = allocate(sizes, n)
    rng = np.random.default_rng(seed)
    idx, w = [], []
    for h in np.flatnonzero(alloc):
        members = np.flatnonzero(group == h)
        idx.append(rng.choice(members, alloc[h], replace=False))
        w.append(np.full(alloc[h], sizes[h] / (total * alloc[h])))
    idx, w = np.concatenate(idx), np.concatenate(w)
    order = np.argsort(idx)
    return Subset(idx[order], w[order])


def subset_items(items: list[Item], subset: Subset) -> list[Item]:
    """The items to `prepare` for the cheap fitness; pass `subset.weights` to `make_fitness(weights=...)`."""
    return [items[i] for i in subset.indices]


def estimate(subset: Subset, scores: np.ndarray) -> np.ndarray:
    """Full-set mean estimated from per-item scores [..., n] on the subset."""
    return np.asarray(scores) @ subset.weights
