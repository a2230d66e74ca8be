"""Sliding-window attention over a long sequence in bands: memory in proportion to the window, not the sequence.

A whole sequence of S tokens whose layers all slide a window W (Mistral, Phi-3, Mixtral, Qwen3-MoE with a
window) needs, per query, only the W keys before it. The queries are cut into chunks of W; chunk i attends to
the 2W key slots [iW - W, iW + W), and one `lax.map` over the chunks keeps one chunk's [W, 2W] scores alive
instead of the [S, S] score matrix (and no [S, S] mask is built). Masking inside a band is transformers' rule
(key slot <= query slot and key slot > query slot - W, real tokens only), so the result equals the dense
masked attention up to float summation order. Models that mix window and full-attention layers (Gemma 2/3)
attend densely: their scan picks each layer's type at run time.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class Band(NamedTuple):
    """In place of a mask: which key slots hold real tokens [B, S] and the (static) window."""
    valid: jax.Array
    window: int


def banded(q: jax.Array, k: jax.Array, v: jax.Array, band: Band, dense: Callable) -> jax.Array:
    """q [B,S,H,hd], k/v [B,S,K,hd] over the same S slots -> [B,S,H,hd]; `dense(q, k, v, mask)` attends a chunk."""
    b, s = q.shape[:2]
    w = band.window
    n = math.ceil(s / w)
    pad = lambda x, before: jnp.pad(x, [(0, 0), (before, n * w - s)] + [(0, 0)] * (x.ndim - 2))  # noqa: E731
    qp, kp, vp, valid = pad(q, 0), pad(k, w), pad(v, w), pad(band.valid.astype(bool), w)

    def chunk(i):
        take = lambda x, size: jax.lax.dynamic_slice_in_dim(x, i * w, size, axis=1)  # noqa: E731
        q_slot, k_slot = i * w + jnp.arange(w), i * w - w + jnp.arange(2 * w)
        inside = (k_slot[None, :] <= q_slot[:, None]) & (k_slot[None, :] > q_slot[:, None] - w)
        mask = inside[None] & take(valid, 2 * w)[:, None, :]
        return dense(take(qp, w), take(kp, 2 * w), take(vp, 2 * w), mask)

    out = jax.lax.map(chunk, jnp.arange(n))  # [n, B, w, H, hd]
    return jnp.moveaxis(out, 0, 1).reshape(b, n * w, *q.shape[2:])[:, :s]
