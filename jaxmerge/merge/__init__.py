"""Merge methods in pure JAX with mergekit 0.1.5 semantics, and their host-side hyperparameter resolution.

    state = init_state(METHODS[name], sources)              # once: task vectors, sorted |delta|, ranks
    params = merge_params(method, state, hparams, key, dt)  # per candidate: pure, jittable, vmappable
"""
from jaxmerge.merge.base import LEAF_IDS, MergeMethod, Sources, init_state, merge_layer, merge_params
from jaxmerge.merge.methods import METHODS
from jaxmerge.merge.resolve import resolve_hparams

__all__ = ["LEAF_IDS", "METHODS", "MergeMethod", "Sources", "init_state", "merge_layer", "merge_params",
           "resolve_hparams"]
