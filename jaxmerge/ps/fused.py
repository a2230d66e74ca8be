"""Fused memory mode: each layer of a candidate is merged just before it is applied, inside the scanned forward.

In `materialize` mode a candidate is a whole merged model (lax.map's batch size bounds how many are alive).
In `fused` mode the "params" a fitness function sees are the candidate unmerged — `{"merge": merge state of the
sources, "hparams": its per-tensor hyper-parameters, "key": its merge key}` — and the `Decoder` below merges the
globals (embed, norm, lm_head) once, then one layer per scan step with `merge_layer`. Peak memory is the sources'
merge state plus one merged layer per candidate in flight, plus activations; a full merged model never exists.
The price is compute: the merge runs once per forward call (for greedy decoding: once per generated token).

The merge is the same code as `merge_params` (merge_layer, the same per-tensor keys with the layer index from
the scan counter, the same cast to the output dtype), so fused fitness equals materialized fitness.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxmerge import model
from jaxmerge.arch import ArchSpec
from jaxmerge.fitness.generate import Decoder
from jaxmerge.merge import MergeMethod, merge_layer
from jaxmerge.params import param_shapes


@dataclasses.dataclass(frozen=True)
class FusedSpec:
    """The static part of a fused decoder (hashable: it is a jit static argument, like an ArchSpec)."""
    arch: ArchSpec
    method: MergeMethod
    dtype: str = "float32"  # the merged tensors' dtype, as merge_params' out_dtype


def unmerged(merge_state, hparams: dict, key: jax.Array) -> dict:
    """What a fused decoder takes in place of params: one candidate's merge, not yet computed."""
    return {"merge": merge_state, "hparams": hparams, "key": key}


def _merged_globals(fs: FusedSpec, r: dict) -> dict:
    globals_state = {k: v for k, v in r["merge"].items() if k != "layers"}
    merged = merge_layer(fs.method, globals_state, r["hparams"], r["key"], 0)
    return jax.tree.map(lambda x: x.astype(fs.dtype), merged)


def _layer_xs(r: dict):
    """Scan inputs: the layer merge state, hyper-parameters with the layer axis moved first ([M, L] -> [L, M]),
    and the layer index (it enters the per-tensor keys exactly as in merge_params)."""
    hp = {name: jax.tree.map(lambda x: jnp.moveaxis(x, -1, 0), tree["layers"]) for name, tree in r["hparams"].items()}
    num_layers = jax.tree.leaves(r["merge"]["layers"])[0].shape[0]
    return r["merge"]["layers"], hp, jnp.arange(num_layers)


def _merged_layer(fs: FusedSpec, r: dict, xs) -> dict:
    state_layer, hp_layer, index = xs
    merged = merge_layer(fs.method, state_layer, hp_layer, r["key"], index)
    return jax.tree.map(lambda x: x.astype(fs.dtype), merged)


def fused_stack(fs: FusedSpec, r: dict) -> model.Stack:
    """Each step merges its layer from the scan's slice of the merge state, then runs it."""
    return model.Stack(_layer_xs(r), lambda xs, h, layer: layer(_merged_layer(fs, r, xs), h))


def forward(fs: FusedSpec, r: dict, tokens, mask=None, positions=None) -> jax.Array:
    """Logits [B, S, V] float32 of the candidate `r`, merging layer by layer (see module doc)."""
    return model.run(fs.arch, _merged_globals(fs, r), fused_stack(fs, r), tokens, mask, positions)[0]


def init_cache(fs: FusedSpec, batch: int, max_len: int, dtype) -> model.KVCache:
    return model.init_cache(fs.arch, batch, max_len, dtype)


def forward_cached(fs: FusedSpec, r: dict, tokens, mask, positions, cache: model.KVCache, start):
    """`model.forward_cached` with each layer merged inside the scan (re-merged on every call)."""
    return model.run(fs.arch, _merged_globals(fs, r), fused_stack(fs, r), tokens, mask, positions, cache, start)


def _arch(fs: FusedSpec) -> ArchSpec:
    return fs.arch


def _cache_dtype(fs: FusedSpec, r: dict):
    """The merged tensors' dtype (the merge state is float32; the keys the merged layers make are not)."""
    return jnp.dtype(fs.dtype)


def fused_decoder() -> Decoder:
    return Decoder(init_cache=init_cache, forward_cached=forward_cached, forward=forward, arch=_arch,
                   cache_dtype=_cache_dtype)


def tree_bytes(tree: Any) -> int:
    return int(sum(np.prod(np.shape(x)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def free_bytes() -> int:
    """Free memory of the first local device (accelerators report it); host RAM available on CPU."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def choose_mode(requested: str, arch: ArchSpec, state_bytes: int, in_flight: int, free: int | None = None) -> str:
    """`auto`: materialize when the merge state plus `in_flight` float32 merged models (x2 for the merge's
    temporaries) fit in 80% of free memory, else fused. An explicit mode is kept as asked."""
    if requested != "auto":
        return requested
    one_model = sum(int(np.prod(s)) for s in jax.tree.leaves(param_shapes(arch), is_leaf=lambda x: isinstance(
        x, tuple))) * 4
    free = free_bytes() if free is None else free
    return "materialize" if state_bytes + 2 * in_flight * one_model <= 0.8 * free else "fused"
