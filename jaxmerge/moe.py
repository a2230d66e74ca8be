"""A mixture-of-experts MLP at its real cost: each token's compute scales with top-k, not with the expert count.

Routing is transformers': softmax of the router logits in float32, top-k, optionally renormalised (Mixtral
always, Qwen MoE with `norm_topk_prob`). The T*k (token, expert) assignments are then sorted by expert and laid
out in blocks of `b` rows that each belong to one expert (a group's last block padded), and one `lax.map` over
the blocks runs [b, D] x expert-weight matmuls. Static shapes: the number of blocks is bounded by
ceil(T*k / b) + min(E, T*k) whatever the routing, so one compile serves every batch of a shape. Compute is
(T*k + E*b) rows instead of the dense T*E (`dense_moe`, kept as the reference the tests and benchmarks compare
against). `jax.lax.ragged_dot` would express the same on accelerators, but on CPU it lowers to a masked dense
product over every group, which is the cost this avoids.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from jaxmerge.params import Params


def route(spec, router: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(weights [T, k] float32, experts [T, k] int32) of tokens x [T, D]."""
    logits = jnp.einsum("td,ed->te", x, router)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    weights, experts = jax.lax.top_k(probs, spec.experts_per_token)
    if spec.norm_topk:
        weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
    return weights, experts.astype(jnp.int32)


def block_rows(tokens: int, k: int, experts: int) -> tuple[int, int]:
    """(rows per block, number of blocks): blocks about half an average group (at most all tokens; measured
    fastest on CPU, benchmarks/families.py), and the static bound on how many non-empty blocks any routing
    needs: a group of g rows takes ceil(g / b) <= g / b + 1 blocks, at most g of them, and no group exceeds the
    tokens."""
    assignments, busy = tokens * k, min(experts, tokens * k)
    b = min(tokens, 2 ** math.ceil(math.log2(max(1, math.ceil(assignments / experts / 2)))))
    return b, min(math.ceil(assignments / b) + busy, busy * math.ceil(tokens / b), assignments)


def expert_mlp(w_gate_up: jax.Array, w_down: jax.Array, rows: jax.Array, act: Callable) -> jax.Array:
    """One expert on rows [b, D]: act(gate) * up, then down (HF layouts [2F, D] and [D, F])."""
    gate, up = jnp.split(jnp.einsum("bd,fd->bf", rows, w_gate_up), 2, axis=-1)
    return jnp.einsum("bf,df->bd", act(gate) * up, w_down)


def _layout(experts: jax.Array, num_experts: int, b: int, nb: int):
    """For assignments sorted by expert: (sort order, padded row of each sorted assignment, expert of each block)."""
    flat = experts.reshape(-1)
    order = jnp.argsort(flat, stable=True)
    sizes = jnp.bincount(flat, length=num_experts)
    blocks = (sizes + b - 1) // b
    first_block = jnp.cumsum(blocks) - blocks
    group_start = jnp.cumsum(sizes) - sizes
    expert_sorted = flat[order]
    rank = jnp.arange(flat.size) - group_start[expert_sorted]
    row = first_block[expert_sorted] * b + rank
    block_expert = jnp.searchsorted(jnp.cumsum(blocks), jnp.arange(nb), side="right")
    return order, row, jnp.minimum(block_expert, num_experts - 1)


def moe_block(spec, lp: Params, x: jax.Array, act: Callable) -> jax.Array:
    """The routed experts' sum for x [..., D] (grouped by expert, see the module doc)."""
    shape, d = x.shape, x.shape[-1]
    x2 = x.reshape(-1, d)
    t, k, e = x2.shape[0], spec.experts_per_token, spec.num_experts
    weights, experts = route(spec, lp["router"], x2)
    b, nb = block_rows(t, k, e)
    order, row, block_expert = _layout(experts, e, b, nb)
    token = (jnp.arange(t * k) // k)[order]
    row_token = jnp.full((nb * b,), t, jnp.int32).at[row].set(token)
    row_weight = jnp.zeros((nb * b,), jnp.float32).at[row].set(weights.reshape(-1)[order])
    padded = jnp.concatenate([x2, jnp.zeros((1, d), x2.dtype)])

    def one(args):
        tokens, expert = args
        pick = lambda w: jax.lax.dynamic_index_in_dim(jnp.asarray(w), expert, keepdims=False)  # noqa: E731
        return expert_mlp(pick(lp["experts_gate_up"]), pick(lp["experts_down"]), padded[tokens], act)

    out = jax.lax.map(one, (row_token.reshape(nb, b), block_expert)).reshape(nb * b, d)
    summed = jnp.zeros((t + 1, d), jnp.float32).at[row_token].add(out.astype(jnp.float32) * row_weight[:, None])
    return summed[:t].astype(x.dtype).reshape(shape)


def dense_moe(spec, lp: Params, x: jax.Array, act: Callable) -> jax.Array:
    """Every expert on every token, weighted by the routing (zero outside the top-k): the reference."""
    shape, d = x.shape, x.shape[-1]
    x2 = x.reshape(-1, d)
    weights, experts = route(spec, lp["router"], x2)
    dense = jnp.zeros((x2.shape[0], spec.num_experts), jnp.float32)
    dense = dense.at[jnp.arange(x2.shape[0])[:, None], experts].set(weights)
    gate, up = jnp.split(jnp.einsum("td,efd->tef", x2, lp["experts_gate_up"]), 2, axis=-1)
    out = jnp.einsum("tef,edf->ted", act(gate) * up, lp["experts_down"])
    return jnp.einsum("ted,te->td", out.astype(jnp.float32), dense).astype(x.dtype).reshape(shape)
