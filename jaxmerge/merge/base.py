"""The shape of a merge method and the tree plumbing that applies it to a whole canonical pytree.

A method is two pure functions per tensor: `init_tensor` (genome-independent precompute, run once) and `kernel`
(the per-candidate merge, every hyperparameter a traced array), plus its hyper-parameter table and contract.
Everything here maps those two over leaves and layers, so methods never see pytrees and the evolution engine
never sees methods' internals. `math` (static, default "float32") is the dtype the merge is computed in:
evolution keeps float32; `jaxmerge merge` follows the recipe's dtype as mergekit does (jaxmerge.merge.numerics).

Randomness: the key of a tensor is fold_in(fold_in(key, LEAF_IDS[leaf]), layer) (globals use layer 0), with a
static leaf id that does not depend on the architecture, so a candidate's DARE masks are a function of its key
alone and the exported winner is bit-identical to what was scored.
"""
from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmerge.arch import ArchSpec
from jaxmerge.merge.hparams import HParam
from jaxmerge.params import LEAVES, Params, aligned_empty

LEAF_IDS = {name: leaf.id for name, leaf in LEAVES.items()}  # explicit, append-only (jaxmerge.params.LEAVES)


class MergeMethod(NamedTuple):
    """A merge method, complete: its kernels, its hyper-parameter table, and its contract with a recipe.

    `hparams`: every hyper-parameter a recipe may set (jaxmerge.merge.hparams.HParam), kernel ones first.
    `base`: "required" (task vectors are taken against it), "optional" (used when the recipe names one) or "none".
    `counts`: (min, max) models besides the base (max None: any). `paper`: where the method comes from.
    `init_tensor(base [...] or None, sources [M, ...], math) -> tensor state` runs once per tensor;
    `kernel(tensor state, {name: [M] or []}, key, math) -> merged [...] float32` per candidate. `math` is the
    static name of the dtype the merge is computed in (see jaxmerge.merge.numerics).
    `check(cell, where)`: host-side check of one tensor's resolved hyper-parameters ({name: [M] or 0-d numpy})
    that no single-value rule can make (DELLA's density +/- epsilon; linear's weights that cannot normalise).
    `init_once(base, sources, {name: [M] or []}, math) -> tensor state` (None: init_tensor serves): the state for
    one set of hyper-parameter values known before the merge (a one-shot merge), read by the same kernel with
    those values and giving the same bits, cheaper to build. `finish_once(tensor state as numpy, {name: [M] or
    []}) -> {name: array}` (None: nothing to add): entries that init_once's state gets on the host, after its
    compiled call (TIES: the kept elements by selection, np.partition, no sort; jaxmerge.merge.sparsify)."""
    name: str
    hparams: tuple[HParam, ...]
    base: str
    counts: tuple[int, int | None]
    paper: str
    init_tensor: Callable
    kernel: Callable
    check: Callable | None = None
    init_once: Callable | None = None
    finish_once: Callable | None = None

    @property
    def model_hparams(self) -> tuple[str, ...]:
        """Per-model hyper-parameters the kernel reads ([M] arrays), in table order."""
        return tuple(h.name for h in self.hparams if h.role == "merge" and h.per_model)

    @property
    def global_hparams(self) -> tuple[str, ...]:
        """Hyper-parameters the kernel reads, one per merge (0-d arrays), in table order."""
        return tuple(h.name for h in self.hparams if h.role == "merge" and not h.per_model)

    @property
    def needs_base(self) -> bool:
        return self.base == "required"

    @property
    def uses_base(self) -> bool:
        """The recipe's base model is the merge's base (not one of its models) when it names one."""
        return self.base != "none"

    def hparam(self, name: str) -> HParam | None:
        return next((h for h in self.hparams if h.name == name), None)


class Sources(NamedTuple):
    """What a merge reads: `models` has a leading [M] axis on every leaf ([M, ...] globals, [M, L, ...] layers)."""
    spec: ArchSpec
    base: Params | None
    models: Params
    names: tuple[str, ...]


def _global_leaves(tree: Params) -> list[str]:
    return [k for k in tree if k != "layers"]


def init_state(method: MergeMethod, sources: Sources, math: str = "float32", once: dict[str, Any] | None = None
               ) -> Params:
    """Run `init_tensor` once per leaf (vmapped over the layer axis of layer leaves), in one compiled call.
    `once`: the resolved hyper-parameters of a one-shot merge; the method's `init_once` (where it has one) then
    builds a state valid for those values only, which `merge_params` must be given."""
    if once is None or method.init_once is None:
        return _init_tree(method, sources.base, sources.models, math)
    state = _init_once_tree(method, sources.base, sources.models, math, once)
    return state if method.finish_once is None else _finish_once(method, state, once)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _init_tree(method: MergeMethod, base: Params | None, models: Params, math: str) -> Params:
    return _init_leaves(lambda b, s, hp: method.init_tensor(b, s, math=math), method, base, models, None)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _init_once_tree(method: MergeMethod, base: Params | None, models: Params, math: str, hparams) -> Params:
    return _init_leaves(lambda b, s, hp: method.init_once(b, s, hp, math=math), method, base, models, hparams)


def _init_leaves(init: Callable, method: MergeMethod, base: Params | None, models: Params, hparams) -> Params:
    """`init(base leaf, sources leaf, hyper-parameters of that leaf or None)` over every leaf."""
    def hp_of(get):
        return None if hparams is None else _hp_for(method, hparams, get)
    state: Params = {leaf: init(None if base is None else base[leaf], models[leaf], hp_of(lambda t: t[leaf]))
                     for leaf in _global_leaves(models)}
    layers = {}
    axes = {name: 1 if name in method.model_hparams else 0 for name in (*method.model_hparams,
                                                                         *method.global_hparams)}
    for leaf, stacked in models["layers"].items():
        b = None if base is None else base["layers"][leaf]
        hp = hp_of(lambda t: t["layers"][leaf])
        layers[leaf] = jax.vmap(init, in_axes=(None if b is None else 0, 1, None if hp is None else axes))(
            b, stacked, hp)
    state["layers"] = layers
    return state


def _finish_once(method: MergeMethod, state: Params, hparams: dict[str, Any]) -> Params:
    """`method.finish_once` on the host for every tensor (each layer of a layer leaf alone), on a thread per core
    (numpy's selection releases the GIL); its entries join the state (layer leaves: stacked on the layer axis)."""
    host = jax.tree.map(np.asarray, state)  # views of the CPU buffers
    jobs = [(leaf, None, host[leaf], _hp_for(method, hparams, lambda t: t[leaf])) for leaf in _global_leaves(host)]
    for leaf, st in host["layers"].items():
        hp = _hp_for(method, hparams, lambda t: t["layers"][leaf])
        jobs += [(leaf, i, {k: v[i] for k, v in st.items()}, _layer_of(method, hp, i)) for i in range(_depth(st))]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        done = list(pool.map(lambda job: method.finish_once(job[2], job[3]), jobs))
    out = {leaf: dict(st) for leaf, st in state.items() if leaf != "layers"}
    out["layers"] = {leaf: dict(st) for leaf, st in state["layers"].items()}
    for (leaf, i, _, _), extra in zip(jobs, done):
        if i is None:
            out[leaf].update(extra)
            continue
        target = out["layers"][leaf]
        for name, value in extra.items():
            if name not in target:
                target[name] = aligned_empty((_depth(host["layers"][leaf]), *value.shape), value.dtype)
            target[name][i] = value
    return out


def _depth(tensor_state: dict) -> int:
    return jax.tree.leaves(tensor_state)[0].shape[0]


def _layer_of(method: MergeMethod, hp: dict[str, Any], i: int) -> dict[str, Any]:
    """Layer i's hyper-parameters of a layer leaf: per-model ones are [M, L], per-merge ones [L]."""
    return {name: np.asarray(v)[:, i] if name in method.model_hparams else np.asarray(v)[i] for name, v in hp.items()}


def _hp_for(method: MergeMethod, hparams: dict[str, Any], get: Callable) -> dict[str, Any]:
    return {name: get(hparams[name]) for name in (*method.model_hparams, *method.global_hparams)}


def merge_layer(method: MergeMethod, state_layer: Params, hparams_layer: dict[str, Any], key: jax.Array,
                layer_index, math: str = "float32") -> Params:
    """Merge one layer: `state_layer[leaf]` has no layer axis, `hparams_layer[name][leaf]` is [M] or [].
    `layer_index` may be traced (a scan counter): it only enters the keys."""
    out = {}
    for leaf, st in state_layer.items():
        leaf_key = jax.random.fold_in(jax.random.fold_in(key, LEAF_IDS[leaf]), layer_index)
        out[leaf] = method.kernel(st, _hp_for(method, hparams_layer, lambda t: t[leaf]), leaf_key, math)
    return out


def merge_params(method: MergeMethod, state: Params, hparams: dict[str, Any], key: jax.Array,
                 out_dtype=jnp.float32, math: str = "float32") -> Params:
    """The merged canonical pytree. Pure and jittable (method, out_dtype and math static); vmappable over a
    population of `hparams` / `key`. Layer leaves are `merge_layer` vmapped over the layer axis: one code path
    for both modes. `state` must come from `init_state` with the same `math`."""
    out: Params = {}
    for leaf in _global_leaves(state):
        leaf_key = jax.random.fold_in(jax.random.fold_in(key, LEAF_IDS[leaf]), 0)
        out[leaf] = method.kernel(state[leaf], _hp_for(method, hparams, lambda t: t[leaf]), leaf_key, math)
    layer_hp = {name: hparams[name]["layers"] for name in (*method.model_hparams, *method.global_hparams)}
    axes = {name: jax.tree.map(lambda _: 1 if name in method.model_hparams else 0, layer_hp[name])
            for name in layer_hp}
    num_layers = jax.tree.leaves(state["layers"])[0].shape[0]
    merged = jax.vmap(lambda s, h, i: merge_layer(method, s, h, key, i, math), in_axes=(0, axes, 0))(
        state["layers"], layer_hp, jnp.arange(num_layers))
    out["layers"] = merged
    return jax.tree.map(lambda x: x.astype(out_dtype), out)
