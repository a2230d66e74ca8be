"""A one-shot merge, tensor by tensor: what `jaxmerge merge` runs, and what an evolve export runs on its state.

A whole-tree merge in one compiled call needs every source, their stack over models, the merge state and the
output in memory at once: about five times the sources' bytes (a 1.2 GB TIES merge peaked at 5.5 GB). Here
the merged model is a tree of `Deferred` tensors (jaxmerge.deferred): writing one reads that tensor of each
source from its file, builds its state and merges it with small compiled programs (state; the host's selection
where the method has one; kernel), and the writer puts it into its shard and drops it (jaxmerge.stwrite).
Memory is the tensors in flight; the programs compile once per tensor shape (a layer's shapes recur in every
layer), not once per tensor.

Bits: the kernel program of a tensor (`_kernel_jit`) is the one program that turns a tensor's state into its
merged values, here and in `merge_state` (the evolve export, whose state init_state built on the mesh: the
states are equal, elementwise arithmetic and exact host sorts), so `jaxmerge merge` of an exported recipe
writes the exported bits. A program's floating-point arithmetic can depend on the program around it (XLA's
fusion decides where a multiply-add contracts, and how a reduction is split), which is why there is one.
"""
from __future__ import annotations

import functools
import threading
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxmerge.arch import ArchSpec
from jaxmerge.deferred import Deferred, DeferredStack, materialise
from jaxmerge.errors import expect
from jaxmerge.io import all_finite
from jaxmerge.merge.base import LEAF_IDS, MergeMethod, Sources, _hp_for, _layer_of
from jaxmerge.params import GLOBAL_NAMES, Params, aligned_stack, stack
from jaxmerge.families import family_of


class Columns(NamedTuple):
    """A merge's sources before any is read: `base` (or None) and one tree per model position (`models`), each
    in the canonical layout with deferred or in-memory leaves, already in the output's layer order."""
    spec: ArchSpec
    base: Params | None
    models: list[Params]
    names: tuple[str, ...]

    def stacked(self) -> Sources:
        """The whole-tree Sources (every tensor read, models stacked): what init_state and the evolve step take."""
        base = None if self.base is None else materialise(self.base)
        return Sources(self.spec, base, stack([materialise(m) for m in self.models]), self.names)


PAIR = 2  # layers merged in one call: XLA compiles a batch of one like an unbatched tensor, and a batch of two
#          like the whole tree's batch of all layers (measured: reductions such as arcee_fusion's KL sums round
#          differently unbatched, so every layer tensor is merged in a batch of two, as in the whole tree)


def merge_deferred(method: MergeMethod, columns: Columns, hparams: dict[str, Any], key: jax.Array, out_dtype,
                   math: str) -> Params:
    """The merged canonical tree, every tensor a Deferred that merges it when made (module doc). `hparams`:
    resolve_hparams' tree for a one-shot merge (the method's init_once is used where it has one). A non-finite
    merged tensor is refused by its HF name when it is made. Layer tensors are merged two layers at a time
    (PAIR); the second of a pair waits, made, until the writer takes it."""
    out_dtype = np.dtype(out_dtype)
    first = columns.models[0]
    run = functools.partial(_merge_unit, method, columns, hparams, key, out_dtype, math)
    tree: Params = {leaf: Deferred(v.shape, out_dtype, functools.partial(lambda lf: run(lf, None)[0], leaf))
                    for leaf, v in first.items() if leaf != "layers"}
    tree["layers"] = {}
    for leaf, v in first["layers"].items():
        pairs = _Pairs(functools.partial(run, leaf), v.shape[0])
        tree["layers"][leaf] = DeferredStack([Deferred(v.shape[1:], out_dtype, functools.partial(pairs.take, i))
                                              for i in range(v.shape[0])])
    return tree


def pair_of(layer: int, depth: int) -> tuple[int, ...]:
    """The layers merged together with `layer`: (2k, 2k + 1), the last layer of an odd depth with the one before
    it (that one is merged twice, the same bits each time); a depth of 1 alone."""
    start = max(0, min(layer - layer % PAIR, depth - PAIR))
    return tuple(range(start, min(start + PAIR, depth)))


class _Pairs:
    """Each pair of layers merged once (under a lock: the writer makes tensors on several threads), each layer's
    result kept only until it is taken."""

    def __init__(self, run, depth: int):
        self.run, self.depth, self.lock, self.kept = run, depth, threading.Lock(), {}

    def take(self, layer: int) -> np.ndarray:
        with self.lock:
            if layer not in self.kept:
                layers = pair_of(layer, self.depth)
                self.kept.update({i: out for i, out in zip(layers, self.run(layers)) if i not in self.kept})
            return self.kept.pop(layer)


def _merge_unit(method: MergeMethod, columns: Columns, hparams, key, out_dtype, math: str, leaf: str,
                layers: tuple[int, ...] | None) -> list[np.ndarray]:
    """Merge a global tensor (`layers` None) or the tensors of `layers` of a layer leaf (batched on a first axis,
    as init_state and merge_params batch the layer axis)."""
    if layers is None:
        get = lambda tree: tree[leaf]  # noqa: E731
        hp = {k: np.asarray(v) for k, v in _hp_for(method, hparams, get).items()}
        stack_of = lambda trees: aligned_stack([get(t) for t in trees])  # noqa: E731
    else:
        per_layer = _hp_for(method, hparams, lambda t: t["layers"][leaf])
        cells = [_layer_of(method, per_layer, i) for i in layers]
        hp = {k: np.stack([c[k] for c in cells], axis=-1 if k in method.model_hparams else 0) for k in cells[0]}
        stack_of = lambda trees: _rows(  # noqa: E731
            aligned_stack([t["layers"][leaf][i] for t in trees for i in layers]), len(trees))
    # every source read straight into one aligned array (Deferred.make_into), which XLA takes without a copy
    base = None if columns.base is None else stack_of([columns.base])[0]
    sources = stack_of(columns.models)  # [M, ...] or [M, pair, ...]
    batched = layers is not None
    if method.init_once is None:
        state = _init_jit(method, base, sources, math, batched)
    else:
        state = _init_once_jit(method, base, sources, hp, math, batched)
    if method.finish_once is not None:
        host = jax.tree.map(np.asarray, state)
        if batched:
            extra = [method.finish_once({k: v[j] for k, v in host.items()},
                                        {k: v[:, j] if k in method.model_hparams else v[j] for k, v in hp.items()})
                     for j in range(len(layers))]
            host.update({k: aligned_stack([e[k] for e in extra]) for k in extra[0]})
        else:
            host.update(method.finish_once(host, hp))
        state = host
    ids = np.asarray([[LEAF_IDS[leaf], i] for i in (layers or (0,))], np.int32)
    merged = np.asarray(_kernel_jit(method, state, hp, key, ids if batched else ids[0], out_dtype, math, batched))
    out = list(merged) if batched else [merged]
    for i, tensor in zip(layers or (None,), out):
        expect(all_finite(tensor), f"expected finite merged tensors, found NaN or Inf in "
                                   f"{hf_name(columns.spec, leaf, i)} (check the recipe's weights and the sources; "
                                   "nothing written)")
    return out


def _rows(stacked: np.ndarray, models: int) -> np.ndarray:
    """[models * pair, ...] as [models, pair, ...] (a view: still aligned)."""
    return stacked.reshape(models, -1, *stacked.shape[1:])


def merge_state(method: MergeMethod, state: Params, hparams: dict[str, Any], key: jax.Array, out_dtype,
                math: str = "float32") -> Params:
    """The merged tree from a whole merge state already built (init_state; an evolve export's, on its devices),
    with the kernel program `jaxmerge merge` runs (globals alone, layers in pairs), so both write the same bits
    for the same state. Layer leaves come back stacked; the arrays are wherever the state lives."""
    out_dtype = np.dtype(out_dtype)
    tree: Params = {}
    for leaf in [k for k in state if k != "layers"]:
        hp = _hp_for(method, hparams, lambda t: t[leaf])
        ids = np.asarray([LEAF_IDS[leaf], 0], np.int32)
        tree[leaf] = _kernel_jit(method, state[leaf], hp, key, ids, out_dtype, math, False)
    tree["layers"] = {}
    for leaf, st in state["layers"].items():
        hp = _hp_for(method, hparams, lambda t: t["layers"][leaf])
        depth = jax.tree.leaves(st)[0].shape[0]
        done: dict[int, jax.Array] = {}
        for layers in sorted({pair_of(i, depth) for i in range(depth)}):
            idx = np.asarray(layers)
            cell = {k: (v[:, idx] if k in method.model_hparams else v[idx]) for k, v in hp.items()}
            ids = np.asarray([[LEAF_IDS[leaf], i] for i in layers], np.int32)
            out = _kernel_jit(method, jax.tree.map(lambda x: x[idx], st), cell, key, ids, out_dtype, math, True)
            done.update({i: out[j] for j, i in enumerate(layers) if i not in done})
        tree["layers"][leaf] = jax.numpy.stack([done[i] for i in range(depth)])
    return tree


def hf_name(spec: ArchSpec, leaf: str, layer: int | None) -> str:
    """The HF name of a canonical tensor in the fused layout (the one merges write)."""
    if layer is None:
        return GLOBAL_NAMES[leaf]
    return f"model.layers.{layer}.{family_of(spec).layers(spec)[leaf][0]}"


def _batch(fn, batched: bool, axes):
    return jax.vmap(fn, in_axes=axes) if batched else fn


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _init_jit(method: MergeMethod, base, sources, math: str, batched: bool):
    init = lambda b, s: method.init_tensor(b, s, math=math)  # noqa: E731
    return _batch(init, batched, (None if base is None else 0, 1))(base, sources)


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _init_once_jit(method: MergeMethod, base, sources, hp, math: str, batched: bool):
    init = lambda b, s, h: method.init_once(b, s, h, math=math)  # noqa: E731
    return _batch(init, batched, (None if base is None else 0, 1, _hp_axes(method, hp)))(base, sources, hp)


@functools.partial(jax.jit, static_argnums=(0, 5, 6, 7))
def _kernel_jit(method: MergeMethod, state, hp, key, ids, out_dtype, math: str, batched: bool):
    """Tensors' merges, each keyed as merge_params keys it: fold_in(fold_in(key, leaf id), layer)."""
    def one(st, h, i):
        tensor_key = jax.random.fold_in(jax.random.fold_in(key, i[0]), i[1])
        return method.kernel(st, h, tensor_key, math).astype(out_dtype)
    return _batch(one, batched, (0, _hp_axes(method, hp), 0))(state, hp, ids)


def _hp_axes(method: MergeMethod, hp: dict) -> dict:
    """vmap axes of a batch of layers' hyper-parameters: per-model [M, pair], per-merge [pair]."""
    return {k: 1 if k in method.model_hparams else 0 for k in hp}
