"""Exact match of greedy decoding, computed in one teacher-forced forward pass (for the world's own checks).

Greedy decoding reproduces an answer exactly iff, fed the right prefix, the argmax at every answer position is
the next answer token (and then the newline that stops it). So one batched forward pass over
prompt + answer + newline gives the same verdict as decoding token by token, for a fraction of the cost.
(The engine's official metric, which decodes and compares strings, lives in jaxmerge.fitness.)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxmerge.arch import ArchSpec
from jaxmerge.model import forward
from jaxmerge.params import Params


def exact_match(spec: ArchSpec, params: Params, tokens: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-row bool: every answer token and the stop newline are the argmax. Rows come from `train.encode`;
    the final <eos> weight is ignored (decoding stops at the newline)."""
    return np.asarray(_exact_jit(spec, params, jnp.asarray(tokens), jnp.asarray(stop_weights(weights))))


def stop_weights(weights: np.ndarray) -> np.ndarray:
    """The loss weights without each row's last (<eos>) position: decoding already stopped at the newline."""
    target = np.array(weights, copy=True)
    last = weights.shape[1] - 1 - np.argmax(weights[:, ::-1] > 0, axis=1)
    target[np.arange(len(target)), last] = 0.0
    return target


def exact_rows(spec: ArchSpec, params: Params, tokens: jax.Array, target: jax.Array) -> jax.Array:
    """Traceable core of `exact_match`; `target` already holds `stop_weights`."""
    pred = jnp.argmax(forward(spec, params, tokens[:, :-1]), axis=-1)
    ok = (pred == tokens[:, 1:]) | (target[:, 1:] == 0)
    return jnp.all(ok, axis=-1)


_exact_jit = jax.jit(exact_rows, static_argnums=0)
