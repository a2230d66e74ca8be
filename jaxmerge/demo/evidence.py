"""Evidence that the world leaves room for evolution: sources, hand-made merges and searched merges, scored.

Merges here are plain task arithmetic on the canonical params, base + sum_m w[m, l] * (source_m - base), with
per-model (w[m]) or per-model-per-layer (w[m, l]) weights, plus a small numpy TIES / DARE-TIES for the
untuned baselines. The engine's own merge methods live in jaxmerge.methods; this is a yardstick for the world.
Weights are traced arguments of one jitted scorer, so a search over thousands of candidates compiles once.
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxmerge.demo.probe import exact_match, exact_rows, stop_weights
from jaxmerge.demo.tasks import Example
from jaxmerge.demo.train import encode
from jaxmerge.demo import recipe
from jaxmerge.io import load
from jaxmerge.params import stack


def read_split(task_yaml: Path, split: str) -> list[Example]:
    import yaml

    spec = yaml.safe_load(task_yaml.read_text())
    rows = (task_yaml.parent / spec["splits"][split]).read_text().splitlines()
    return [Example(**json.loads(r)) for r in rows]


def stack_sources(world) -> tuple[dict, dict]:
    """(base params, sources stacked on a leading model axis) as float32 numpy."""
    base = load(world.base).params
    sources = [load(world.specialists[s]).params for s in recipe.SKILLS]
    return base, stack(sources)


def task_arithmetic(base, stacked, w_layers, w_global):
    """base + sum_m w (source_m - base); w_layers [M, L] for layer tensors, w_global [M] for the rest."""
    def mix(b, s, w):
        w = w.reshape(w.shape + (1,) * (s.ndim - w.ndim))
        return b + jnp.sum(w * (s - b[None]), axis=0)

    layers = {k: mix(base["layers"][k], stacked["layers"][k], w_layers) for k in base["layers"]}
    return {**{k: mix(base[k], stacked[k], w_global) for k in base if k != "layers"}, "layers": layers}


def ties(base, stacked, density: float, lam: float, dare_key=None):
    """TIES (trim to the top `density` of |delta| per tensor, elect signs by summed mass, disjoint mean), or
    DARE-TIES (drop at random with keep-rate `density`, rescale by 1/density, then elect) when a key is given."""
    def one(b, s, leaf_id):
        delta = s - b[None]
        if dare_key is None:
            flat = np.abs(delta).reshape(len(delta), -1)
            k = max(1, int(round(density * flat.shape[1])))
            cut = -np.sort(-flat, axis=1)[:, k - 1].reshape((-1,) + (1,) * (delta.ndim - 1))
            delta = np.where(np.abs(delta) >= cut, delta, 0.0)
        else:
            keep = jax.random.bernoulli(jax.random.fold_in(dare_key, leaf_id), density, delta.shape)
            delta = np.where(np.asarray(keep), delta / density, 0.0)
        sign = np.sign(delta.sum(axis=0))
        agree = (np.sign(delta) == sign[None]) & (delta != 0)
        merged = (delta * agree).sum(axis=0) / np.maximum(agree.sum(axis=0), 1)
        return b + lam * merged

    leaves_b, treedef = jax.tree.flatten(base)
    leaves_s = jax.tree.leaves(stacked)
    return jax.tree.unflatten(treedef, [one(b, s, i) for i, (b, s) in enumerate(zip(leaves_b, leaves_s))])


class Scorer:
    """Exact match of merges on a fixed set of rows (several skills concatenated), one compilation for all."""

    def __init__(self, world, split: str):
        self.spec = recipe.spec()
        self.base, self.stacked = stack_sources(world)
        tokens, weights, ids = [], [], []
        for i, skill in enumerate(recipe.SKILLS):
            t, w = encode(read_split(world.tasks[skill], split), recipe.SEQ_LEN)
            tokens.append(t), weights.append(w), ids.extend([i] * len(t))
        self.tokens, self.weights = np.concatenate(tokens), np.concatenate(weights)
        self.skill_ids = np.asarray(ids)
        self._ta = jax.jit(lambda b, s, wl, wg, t, w: exact_rows(self.spec, task_arithmetic(b, s, wl, wg), t, w))

    def params(self, params) -> np.ndarray:
        """Per-row correctness of one model's params."""
        return exact_match(self.spec, params, self.tokens, self.weights)

    def merge(self, w_layers, w_global) -> np.ndarray:
        """Per-row correctness of the task-arithmetic merge with these weights (traced: no recompiles)."""
        w = stop_weights(self.weights)
        return np.asarray(self._ta(self.base, self.stacked, jnp.asarray(w_layers, jnp.float32),
                                   jnp.asarray(w_global, jnp.float32), self.tokens, w))

    def summary(self, rows: np.ndarray) -> dict[str, float]:
        """{'target': mean over all rows, skill: mean over that skill's rows}."""
        per = {s: float(rows[self.skill_ids == i].mean()) for i, s in enumerate(recipe.SKILLS)}
        return {"target": float(rows.mean()), **per}


def hand_made(scorer: Scorer) -> dict[str, np.ndarray]:
    """Untuned merges with textbook settings: linear average, task arithmetic at 1 and 0.5, TIES, DARE-TIES."""
    m, layers = len(recipe.SKILLS), recipe.spec().num_layers
    out = {f"task arithmetic, weight {w:g}": scorer.merge(np.full((m, layers), w), np.full(m, w))
           for w in (1.0 / m, 0.5, 1.0)}
    out["TIES (density 0.5, weight 1)"] = scorer.params(ties(scorer.base, scorer.stacked, 0.5, 1.0))
    out["DARE-TIES (density 0.5, weight 1)"] = scorer.params(
        ties(scorer.base, scorer.stacked, 0.5, 1.0, jax.random.key(0)))
    return out


def search(dev: Scorer, seed: int, per_model: int, per_layer: int, say=print) -> tuple[np.ndarray, np.ndarray]:
    """Random search over per-model weights, then a (1+1) hill climb over per-model-per-layer weights, on dev."""
    rng = np.random.default_rng(seed)
    m, layers = len(recipe.SKILLS), recipe.spec().num_layers
    best, best_w = -1.0, None
    for _ in range(per_model):
        w = rng.uniform(0.0, 1.0, m)
        score = dev.merge(np.repeat(w[:, None], layers, 1), w).mean()
        best, best_w = (score, w) if score > best else (best, best_w)
    say(f"per-model random search: dev target {best:.3f}, weights {np.round(best_w, 2).tolist()}")
    wl, wg = np.repeat(best_w[:, None], layers, 1), best_w.copy()
    for _ in range(per_layer):
        cl = np.clip(wl + rng.normal(0, 0.1, wl.shape), 0.0, 1.5)
        cg = np.clip(wg + rng.normal(0, 0.1, wg.shape), 0.0, 1.5)
        score = dev.merge(cl, cg).mean()
        if score >= best:
            wl, wg, best = cl, cg, score
    say(f"per-layer hill climb: dev target {best:.3f}")
    return (np.repeat(best_w[:, None], layers, 1), best_w), (wl, wg)
