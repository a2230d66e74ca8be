"""Merge methods in pure JAX with mergekit 0.1.5 semantics, and their host-side hyperparameter resolution.

    state = init_state(METHODS[name], sources, math)            # once: task vectors, |delta| ranks
    params = merge_params(method, state, hparams, key, dt, math)  # per candidate: pure, jittable, vmappable
    # math: the dtype the merge is computed in, static ("float32" unless a recipe says otherwise)
    check_value(method, "density", v, where); check_bounds(method, "density", lo, hi, where)  # one rule for both

The method records and the validation API are documented in jaxmerge.merge.methods.
"""
from jaxmerge.merge.base import LEAF_IDS, MergeMethod, Sources, init_state, merge_layer, merge_params
from jaxmerge.merge.hparams import REQUIRED, HParam
from jaxmerge.merge.methods import METHODS, check_bounds, check_value
from jaxmerge.merge.resolve import resolve_hparams

__all__ = ["LEAF_IDS", "METHODS", "REQUIRED", "HParam", "MergeMethod", "Sources", "check_bounds", "check_value",
           "init_state", "merge_layer", "merge_params", "resolve_hparams"]
