"""The NNX face of a model gives the same logits as the pure forward, and splits into the canonical params."""
import jax
import numpy as np
from flax import nnx

import jaxmerge
from jaxmerge.nnx import Decoder
from tests.tiny import hf_logits


def test_nnx_decoder_matches_transformers_and_round_trips(tiny_model):
    path = tiny_model("qwen2", num_hidden_layers=2)
    model = jaxmerge.load(path)
    decoder = Decoder.from_model(model)
    tokens = np.random.default_rng(0).integers(0, 97, (2, 12)).astype(np.int32)
    logits = nnx.jit(lambda m, t: m(t))(decoder, tokens)
    np.testing.assert_allclose(np.asarray(logits), hf_logits(path, tokens), atol=1e-4)
    graphdef, state = nnx.split(decoder)
    again = nnx.merge(graphdef, state).canonical()
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(model.params)):
        np.testing.assert_array_equal(np.asarray(a), b)
