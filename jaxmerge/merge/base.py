"""The shape of a merge method and the tree plumbing that applies it to a whole canonical pytree.

A method is two pure functions per tensor: `init_tensor` (genome-independent precompute, run once) and `kernel`
(the per-candidate merge, float32 math, every hyperparameter a traced array). Everything here maps those two
over leaves and layers, so methods never see pytrees and the evolution engine never sees methods' internals.

Randomness: the key of a tensor is fold_in(fold_in(key, LEAF_IDS[leaf]), layer) (globals use layer 0), with a
static leaf id that does not depend on the architecture, so a candidate's DARE masks are a function of its key
alone and the exported winner is bit-identical to what was scored.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxmerge.arch import ArchSpec
from jaxmerge.params import GLOBAL_LEAVES, LAYER_LEAVES, Params

LEAF_IDS = {name: i for i, name in enumerate((*GLOBAL_LEAVES, *LAYER_LEAVES))}


class MergeMethod(NamedTuple):
    """A merge method. `needs_base`: a base model is required (task vectors are taken against it)."""
    name: str
    model_hparams: tuple[str, ...]
    global_hparams: tuple[str, ...]
    needs_base: bool
    init_tensor: Callable  # (base [...] or None, sources [M, ...]) -> tensor state pytree
    kernel: Callable       # (tensor state, {name: [M] or []}, key) -> merged tensor [...] float32


class Sources(NamedTuple):
    """What a merge reads: `models` has a leading [M] axis on every leaf ([M, ...] globals, [M, L, ...] layers)."""
    spec: ArchSpec
    base: Params | None
    models: Params
    names: tuple[str, ...]


def _global_leaves(tree: Params) -> list[str]:
    return [k for k in tree if k != "layers"]


def init_state(method: MergeMethod, sources: Sources) -> Params:
    """Run `init_tensor` once per leaf (vmapped over the layer axis of layer leaves), in one compiled call."""
    return _init_tree(method, sources.base, sources.models)


@functools.partial(jax.jit, static_argnums=0)
def _init_tree(method: MergeMethod, base: Params | None, models: Params) -> Params:
    state: Params = {}
    for leaf in _global_leaves(models):
        state[leaf] = method.init_tensor(None if base is None else base[leaf], models[leaf])
    layers = {}
    for leaf, stacked in models["layers"].items():
        b = None if base is None else base["layers"][leaf]
        layers[leaf] = jax.vmap(method.init_tensor, in_axes=(None if b is None else 0, 1))(b, stacked)
    state["layers"] = layers
    return state


def _hp_for(method: MergeMethod, hparams: dict[str, Any], get: Callable) -> dict[str, Any]:
    return {name: get(hparams[name]) for name in (*method.model_hparams, *method.global_hparams)}


def merge_layer(method: MergeMethod, state_layer: Params, hparams_layer: dict[str, Any], key: jax.Array,
                layer_index) -> Params:
    """Merge one layer: `state_layer[leaf]` has no layer axis, `hparams_layer[name][leaf]` is [M] or [].
    `layer_index` may be traced (a scan counter): it only enters the keys."""
    out = {}
    for leaf, st in state_layer.items():
        leaf_key = jax.random.fold_in(jax.random.fold_in(key, LEAF_IDS[leaf]), layer_index)
        out[leaf] = method.kernel(st, _hp_for(method, hparams_layer, lambda t: t[leaf]), leaf_key)
    return out


def merge_params(method: MergeMethod, state: Params, hparams: dict[str, Any], key: jax.Array,
                 out_dtype=jnp.float32) -> Params:
    """The merged canonical pytree. Pure and jittable (method and out_dtype static); vmappable over a population
    of `hparams` / `key`. Layer leaves are `merge_layer` vmapped over the layer axis: one code path for both modes."""
    out: Params = {}
    for leaf in _global_leaves(state):
        leaf_key = jax.random.fold_in(jax.random.fold_in(key, LEAF_IDS[leaf]), 0)
        out[leaf] = method.kernel(state[leaf], _hp_for(method, hparams, lambda t: t[leaf]), leaf_key)
    layer_hp = {name: hparams[name]["layers"] for name in (*method.model_hparams, *method.global_hparams)}
    axes = {name: jax.tree.map(lambda _: 1 if name in method.model_hparams else 0, layer_hp[name])
            for name in layer_hp}
    num_layers = jax.tree.leaves(state["layers"])[0].shape[0]
    merged = jax.vmap(lambda s, h, i: merge_layer(method, s, h, key, i), in_axes=(0, axes, 0))(
        state["layers"], layer_hp, jnp.arange(num_layers))
    out["layers"] = merged
    return jax.tree.map(lambda x: x.astype(out_dtype), out)
