"""How one attention call computes its scores: the explicit kernel, `jax.nn.dot_product_attention`, and query
blocks for long sequences.

`explicit` is the kernel every recorded result was computed with (scores in the inputs' dtype, cast to float32,
soft-capped where the family caps them, softmax in float32); it stays the default, so nothing already measured
changes a bit. `ArchSpec.attention_impl` = "xla" or "cudnn" routes a family that needs nothing the library call
lacks (no score soft-capping: Gemma 2 caps them) through `jax.nn.dot_product_attention` with that
implementation: XLA's on any backend, cuDNN's flash attention on a GPU. A family that needs the explicit kernel
keeps it whatever was asked: the spec its record built decides, nothing is refused.

A call with more than LONG_QUERIES queries (a long prefill) attends QUERY_BLOCK queries at a time under
`lax.map`, so at most one block's [B, heads, QUERY_BLOCK, keys] float32 scores are alive instead of the whole
[B, heads, S, S]; each query's row is the same computation, so only float summation order can differ from the
one-shot call. Shorter calls are today's program exactly.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxmerge.arch import CUDNN, EXPLICIT, IMPLEMENTATIONS, XLA  # noqa: F401  (part of kernels' API)

LONG_QUERIES = 1024  # calls with more queries than this attend in blocks
QUERY_BLOCK = 256


def scale_of(spec, head_dim: int) -> float:
    """What scores are divided by the square root of: Gemma's query_pre_attn_scalar, else the head size."""
    return spec.query_scale or head_dim


def explicit(spec, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Grouped-query attention written out. q [B,Sq,H,hd], k/v [B,Sk,K,hd], mask [B,Sq,Sk] -> [B,Sq,H,hd]."""
    b, sq, h, hd = q.shape
    groups = h // k.shape[2]
    q = q.reshape(b, sq, k.shape[2], groups, hd)
    scores = jnp.einsum("bqkgd,bskd->bkgqs", q, k).astype(jnp.float32) / math.sqrt(scale_of(spec, hd))
    if spec.attn_softcap is not None:
        scores = jnp.tanh(scores / spec.attn_softcap) * spec.attn_softcap
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v)
    return out.reshape(b, sq, h, hd)


def library(spec, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """The same attention through `jax.nn.dot_product_attention` (GQA, float32 softmax, the boolean mask). cuDNN's
    kernel runs on a GPU and takes 16-bit inputs only: float32 keys, or another backend, get XLA's implementation."""
    cudnn = spec.attention_impl == CUDNN and k.dtype in (jnp.bfloat16, jnp.float16) and jax.default_backend() == "gpu"
    return jax.nn.dot_product_attention(
        q.astype(k.dtype), k, v, mask=mask[:, None], scale=1.0 / math.sqrt(scale_of(spec, q.shape[-1])),
        implementation=CUDNN if cudnn else None)


def kernel(spec):
    """The kernel a spec attends with: the library call where asked and the family needs nothing it lacks."""
    if spec.attention_impl == EXPLICIT or spec.attn_softcap is not None:
        return explicit
    return library


def dense(spec, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """One attention call over a [B, Sq, Sk] mask; a long one in blocks of queries (see the module's notes)."""
    attend_block = kernel(spec)
    if q.shape[1] <= LONG_QUERIES:
        return attend_block(spec, q, k, v, mask)
    return query_blocks(q, mask, lambda qb, mb: attend_block(spec, qb, k, v, mb))


def query_blocks(q: jax.Array, mask: jax.Array, attend_block, block: int = QUERY_BLOCK) -> jax.Array:
    """attend_block(q_block [B,block,H,hd], mask_block [B,block,Sk]) over the queries, one block alive at a time;
    the last block is padded with masked-out queries and its padding dropped."""
    b, s = q.shape[:2]
    n = -(-s // block)
    qp = jnp.pad(q, [(0, 0), (0, n * block - s)] + [(0, 0)] * (q.ndim - 2))
    mp = jnp.pad(mask, [(0, 0), (0, n * block - s), (0, 0)])

    def one(i):
        return attend_block(jax.lax.dynamic_slice_in_dim(qp, i * block, block, axis=1),
                            jax.lax.dynamic_slice_in_dim(mp, i * block, block, axis=1))

    out = jax.lax.map(one, jnp.arange(n))  # [n, B, block, H, hd]
    return jnp.moveaxis(out, 0, 1).reshape(b, n * block, *q.shape[2:])[:, :s]
