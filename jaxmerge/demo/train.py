"""Training the demo's tiny Llamas with optax on jaxmerge's own pure forward pass.

The models are trained through `jaxmerge.model.forward`, the same function that scores merges, so what the
world teaches is exactly what the engine later measures. Loss is next-token cross-entropy on the answer tokens
only (answer, newline, <eos>): the prompt is given, as it is at evaluation time.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmerge.arch import ArchSpec
from jaxmerge.demo import vocab
from jaxmerge.demo.tasks import TEMPLATE, Example
from jaxmerge.model import forward
from jaxmerge.params import Params, param_shapes
from jaxmerge.vlm.model import forward as vlm_forward


def encode(examples: Sequence[Example], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded token rows [N, length] and loss weights on the answer's tokens (predicted from the left)."""
    tok = vocab.build_tokenizer()
    prompts = tok.encode_batch([TEMPLATE.format(prompt=e.prompt) for e in examples])
    answers = tok.encode_batch([e.answer + "\n" for e in examples], add_special_tokens=False)
    tokens = np.full((len(examples), length), vocab.PAD, np.int32)
    weights = np.zeros((len(examples), length), np.float32)
    for i, (p, a) in enumerate(zip(prompts, answers)):
        row = p.ids + a.ids + [vocab.EOS]
        assert len(row) <= length, f"example of {len(row)} tokens exceeds {length}"
        tokens[i, :len(row)] = row
        weights[i, len(p.ids):len(row)] = 1.0
    return tokens, weights


def init_params(spec: ArchSpec, key: jax.Array) -> Params:
    """Normal(0, 0.02) matrices and unit norm gains, as HF initialises Llama."""
    shapes = param_shapes(spec)
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree.flatten_with_path(
        shapes, is_leaf=lambda x: isinstance(x, tuple))[0]]
    keys = jax.random.split(key, len(leaves))
    out = [jnp.ones(s, jnp.float32) if "norm" in p or "layernorm" in p
           else 0.02 * jax.random.normal(k, s, jnp.float32) for p, s, k in zip(paths, leaves, keys)]
    return jax.tree.unflatten(treedef, out)


def loss_fn(spec, params: Params, tokens: jax.Array, weights: jax.Array, features: jax.Array | None = None):
    """Mean cross-entropy of the answer tokens; with `features` (the VLM world: spec a LanguageSpec, features
    [B, image tokens, D]) through the image-splicing forward that scores VLM merges."""
    if features is None:
        logits = forward(spec, params, tokens[:, :-1])
    else:
        logits = vlm_forward(spec, {"lm": params, "features": features}, tokens[:, :-1])
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
    w = weights[:, 1:]
    return jnp.sum(nll * w) / jnp.maximum(jnp.sum(w), 1.0)


# AdamW with the learning rate applied outside: the schedule's numbers are traced arrays, so the base model and
# every specialist (different rates and lengths) share one compiled training chunk.
OPTIMIZER = optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(0.01))


def learning_rate(step: jax.Array, total: jax.Array, peak: jax.Array) -> jax.Array:
    """Linear warmup over the first 5% of steps, then cosine decay to 10% of the peak."""
    warm = jnp.maximum(total * 0.05, 1.0)
    frac = jnp.clip((step - warm) / jnp.maximum(total - warm, 1.0), 0.0, 1.0)
    cosine = 0.1 + 0.9 * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    return peak * jnp.where(step < warm, (step + 1) / warm, cosine)


def train(spec, params: Params, tokens: np.ndarray, weights: np.ndarray, *, steps: int, lr: float,
          batch: int, key: jax.Array, chunk: int = 50, features: np.ndarray | None = None
          ) -> tuple[Params, list[float]]:
    """`steps` AdamW steps (rounded up to whole chunks) on batches drawn with replacement; `features`: each
    row's image features (the VLM world, see loss_fn).

    Returns the params and the mean loss of each chunk.
    """
    data = tuple(jnp.asarray(a) for a in (tokens, weights, features) if a is not None)
    state = (params, OPTIMIZER.init(params))
    hyper = (jnp.float32(steps), jnp.float32(lr))
    losses = []
    for start in range(0, steps, chunk):
        state, loss = _chunk_jit(spec, batch, chunk, state, data, jnp.float32(start), hyper,
                                 jax.random.fold_in(key, start))
        losses.append(float(loss))
    return state[0], losses


def _chunk(spec, batch, n, state, data, start, hyper, key):
    """n optimiser steps under one lax.scan; returns the new state and the mean loss."""
    def step(carry, xs):
        (params, opt_state), (i, k) = carry, xs
        idx = jax.random.randint(k, (batch,), 0, data[0].shape[0])
        loss, grads = jax.value_and_grad(loss_fn, argnums=1)(spec, params, *(d[idx] for d in data))
        updates, opt_state = OPTIMIZER.update(grads, opt_state, params)
        lr = learning_rate(start + i, *hyper)
        return (jax.tree.map(lambda p, u: p - lr * u, params, updates), opt_state), loss

    state, losses = jax.lax.scan(step, state, (jnp.arange(n, dtype=jnp.float32), jax.random.split(key, n)))
    return state, jnp.mean(losses)


_chunk_jit = jax.jit(_chunk, static_argnums=(0, 1, 2))
