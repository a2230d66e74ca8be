"""Evidence that the demo world leaves room for evolution (tools/build_demo_world.py), scored by the engine.

On the held-out test splits (the composed target and each single skill): every source, the demo's hand-made
merges (jaxmerge merge of the recipes jaxmerge.demo.pipeline writes), and task-arithmetic weights found on the
target's dev split by a small random search over per-model weights and a (1+1) hill climb over per-model-per-layer
weights. Merges are the engine's own (task_arithmetic through a genome of fixed weights, one compiled merge + score
for every weight vector).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxmerge.demo import training
from jaxmerge.demo.pipeline import Scorer, untuned_recipes
from jaxmerge.fitness import make_fitness
from jaxmerge.io import load
from jaxmerge.merge import METHODS, Sources, init_state, merge_params
from jaxmerge.params import stack
from jaxmerge.ps.genome import Gene, GeneSpec

BOUND = 1.5  # weights searched in [0, BOUND]


class Merges:
    """Per-item test (or dev) scores of task arithmetic with weights [M, L] (embeddings take layer 0's)."""

    def __init__(self, world, scorer: Scorer):
        base = load(world.base)
        sources = [load(world.specialists[s]) for s in training.SKILLS]
        method = METHODS["task_arithmetic"]
        self.state = init_state(method, Sources(base.spec, base.params, stack([s.params for s in sources]), ()))
        self.genome = GeneSpec(base.spec, len(sources), (Gene("weight", True, 0.5, 0.0, BOUND),), 1,
                               fixed=(("lambda", 1.0, False), ("normalize", 0.0, False)))
        per_item = make_fitness(base.spec, scorer.prepared, scorer.tokenizer).per_item
        self._score = jax.jit(lambda raw, st: per_item(merge_params(method, st, self.genome.hparams(raw),
                                                                    jnp.zeros(2, jnp.uint32))))

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        raw = np.clip(np.asarray(weights, np.float32) / BOUND, 0.0, 1.0).reshape(-1)
        return np.asarray(self._score(jnp.asarray(raw), self.state))


def hand_made(world, scorer: Scorer) -> dict[str, dict]:
    """The demo's untuned merges, built by `jaxmerge merge`, scored on the test split."""
    from jaxmerge.merge.build import merge_recipe
    from jaxmerge.merge.recipe import parse_recipe
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, doc in untuned_recipes(world).items():
            out[name] = scorer(merge_recipe(parse_recipe(doc), Path(tmp) / name))
    return out


def search(dev: Merges, seed: int, per_model: int, per_layer: int, say=print) -> tuple[np.ndarray, np.ndarray]:
    """Random per-model weights, then a hill climb per model and layer, on the target's dev split (`dev` is a
    target-only Merges)."""
    rng = np.random.default_rng(seed)
    m, layers = len(training.SKILLS), training.spec().num_layers
    best, best_w = -1.0, None
    for _ in range(per_model):
        w = np.repeat(rng.uniform(0.0, 1.0, m)[:, None], layers, 1)
        score = dev(w).mean()
        best, best_w = (score, w) if score > best else (best, best_w)
    say(f"per-model random search: dev target {best:.3f}, weights {np.round(best_w[:, 0], 2).tolist()}")
    climbed = best_w.copy()
    for _ in range(per_layer):
        candidate = np.clip(climbed + rng.normal(0, 0.1, climbed.shape), 0.0, BOUND)
        score = dev(candidate).mean()
        if score >= best:
            climbed, best = candidate, score
    say(f"per-layer hill climb: dev target {best:.3f}")
    return best_w, climbed
