"""A Flax NNX face for a jaxmerge model, for users who fine-tune or serve merges inside Flax code.

jaxmerge's own code runs the decoder as pure functions of a params pytree (jaxmerge.model): merging, population
vmaps, layer-path gathers and merge-inside-the-scan all hand the forward pass arrays computed a moment ago,
which a plain function of a dict does with no module state to thread. This module wraps that same function,
so `nnx.split` / `nnx.merge`, `nnx.jit` and `nnx.Optimizer` work on a merged model and give identical logits.
"""
from __future__ import annotations

import jax
from flax import nnx

from jaxmerge.arch import ArchSpec
from jaxmerge.io import Model
from jaxmerge.model import forward
from jaxmerge.params import Params


class Decoder(nnx.Module):
    """Llama-family decoder as an NNX module: canonical params as `nnx.Param`s, `__call__` = jaxmerge.model.forward."""

    def __init__(self, spec: ArchSpec, params: Params):
        self.spec = spec
        self.params = nnx.data(jax.tree.map(nnx.Param, params))

    @classmethod
    def from_model(cls, model: Model) -> "Decoder":
        return cls(model.spec, model.params)

    def canonical(self) -> Params:
        """The plain params pytree (what jaxmerge.save and the merge methods take)."""
        return jax.tree.map(lambda p: p[...], self.params, is_leaf=lambda p: isinstance(p, nnx.Param))

    def __call__(self, tokens: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        return forward(self.spec, self.canonical(), tokens, mask)
