"""The pure forward pass against transformers (PyTorch) logits: every family and config feature we support."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmerge
from jaxmerge.arch import ArchSpec
from jaxmerge.io import Model
from jaxmerge.model import default_positions, forward_cached, forward_jit, init_cache, inv_frequencies
from tests.tiny import hf_logits, make_config, make_tiny_model

ORACLE_TOL = 1e-4  # float32 logits, ours vs transformers
SAME_MATH_TOL = 1e-5  # float32 logits, two of our code paths computing the same thing

LLAMA3 = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 64}  # small, so scaling bites at tiny dims
LINEAR = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}
CASES = {  # several features per case: each case costs one compile
    "llama-gqa2-theta500": ("llama", {"rope_parameters": {"rope_type": "default", "rope_theta": 500.0}}),
    "llama-mha-tied": ("llama", {"num_key_value_heads": 4, "tie_word_embeddings": True}),
    "llama-gqa4-bias-headdim16": ("llama", {"num_key_value_heads": 1, "attention_bias": True, "head_dim": 16}),
    "llama-llama3": ("llama", {"rope_parameters": LLAMA3}),
    "llama-linear": ("llama", {"rope_parameters": LINEAR}),
    "mistral": ("mistral", {}),
    "mistral-gqa4-headdim16": ("mistral", {"head_dim": 16, "num_key_value_heads": 1}),
    "qwen2-gqa4": ("qwen2", {"num_key_value_heads": 1}),
    "qwen2-tied-mha": ("qwen2", {"tie_word_embeddings": True, "num_key_value_heads": 4}),
    "qwen3-headdim16": ("qwen3", {"head_dim": 16}),
    "qwen2-window": ("qwen2", {"use_sliding_window": True, "sliding_window": 5, "max_window_layers": 1}),
    "qwen3-window-types": ("qwen3", {"use_sliding_window": True, "sliding_window": 4,
                                     "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]}),
    "qwen3-bias-theta1e6": ("qwen3", {"attention_bias": True,
                                      "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}),
}
# initializer_range 0.15 (not 0.02) gives logits of size ~1-5 and peaked attention, so 1e-4 is a real bound.
WEIGHT_SCALE = {"initializer_range": 0.15}
SEQ = 16


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """case name -> saved tiny HF model, each built once per module."""
    built = {}

    def get(name):
        if name not in built:
            family, overrides = CASES[name]
            built[name] = make_tiny_model(tmp_path_factory.mktemp(name), family, seed=len(built),
                                          **WEIGHT_SCALE, **overrides)
        return built[name]
    return get


def tokens_for(batch, seq, seed=0, vocab=97):
    return np.random.default_rng(seed).integers(3, vocab, (batch, seq)).astype(np.int32)


def run(model, tokens, mask=None, positions=None):
    """Every full-sequence call goes through the one jitted entry point, so shapes are shared across tests."""
    mask = np.ones_like(tokens) if mask is None else mask
    return np.asarray(forward_jit(model.spec, model.params, tokens, mask, positions))


@pytest.mark.parametrize("name", CASES)
def test_logits_equal_transformers(model_path, name):
    """Two rows: positions 0.. and 300..; far positions make rope theta and scaling matter."""
    path = model_path(name)
    tokens = tokens_for(2, SEQ)
    positions = np.stack([np.arange(SEQ), 300 + np.arange(SEQ)]).astype(np.int32)
    ours = run(jaxmerge.load(path), tokens, positions=positions)
    want = hf_logits(path, tokens, positions=positions)
    assert ours.shape == want.shape == (2, SEQ, 97)
    assert np.abs(want).max() > 1.0  # the bound below is small next to the logits
    assert np.abs(ours - want).max() <= ORACLE_TOL


@pytest.mark.parametrize("rope", [LLAMA3, LINEAR], ids=["llama3", "linear"])
def test_rope_scaling_moves_angles_at_tested_positions(rope):
    """Guards the oracle test: scaling must turn some rope angle by > 0.5 rad at position 300+SEQ."""
    spec = ArchSpec.from_hf_config(make_config("llama", rope_parameters=rope).to_dict())
    moved = (inv_frequencies(spec.replace(rope_type="default")) - inv_frequencies(spec)) * (300 + SEQ)
    assert spec.rope_type == rope["rope_type"] and float(jnp.abs(moved).max()) > 0.5


def left_padded(batch_pads, seq, seed=1):
    tokens = tokens_for(len(batch_pads), seq, seed)
    mask = np.ones_like(tokens)
    for row, pads in enumerate(batch_pads):
        mask[row, :pads] = 0
        tokens[row, :pads] = 0
    return tokens, mask


@pytest.mark.parametrize("name", ["llama-gqa2-theta500", "qwen3-headdim16"])
def test_left_padded_batch_equals_transformers(model_path, name):
    """Our default positions (count of real tokens before a slot) vs HF given mask + position_ids."""
    path = model_path(name)
    tokens, mask = left_padded([0, 5], SEQ)
    hf_positions = np.where(mask == 1, np.cumsum(mask, -1) - 1, 1)  # HF generate's rule
    model = jaxmerge.load(path)
    ours = run(model, tokens, mask)
    want = hf_logits(path, tokens, mask=mask, positions=hf_positions)
    real = mask.astype(bool)
    assert np.abs(ours[real] - want[real]).max() <= ORACLE_TOL


@pytest.mark.parametrize("name", ["qwen2-gqa4"])  # biases + GQA 4:1; one case (two compiles) is enough
def test_cached_prefill_and_decode_equal_full_forward(model_path, name):
    """Prefill 12 slots, then 4 one-token steps, on a left-padded batch; one compile per shape, not per step."""
    model = jaxmerge.load(model_path(name))
    spec, params = model.spec, jax.tree.map(jnp.asarray, model.params)
    tokens, mask = left_padded([0, 4], SEQ, seed=2)
    positions = np.asarray(default_positions(jnp.asarray(mask)))
    full = run(model, tokens, mask, positions)
    step = jax.jit(forward_cached, static_argnums=0)
    compiled_before = step._cache_size()  # jit caches per function, across tests
    cache = init_cache(spec, 2, SEQ, jnp.float32)
    prefill = 12
    logits, cache = step(spec, params, tokens[:, :prefill], mask[:, :prefill], positions[:, :prefill], cache,
                         jnp.int32(0))
    pieces = [np.asarray(logits)]
    for t in range(prefill, SEQ):
        sl = slice(t, t + 1)
        logits, cache = step(spec, params, tokens[:, sl], mask[:, sl], positions[:, sl], cache, jnp.int32(t))
        pieces.append(np.asarray(logits))
    cached = np.concatenate(pieces, axis=1)
    real = mask.astype(bool)
    assert np.abs(cached[real] - full[real]).max() <= SAME_MATH_TOL
    assert step._cache_size() - compiled_before == 2  # prefill shape + decode shape; `start` and the cache are traced


@pytest.mark.parametrize("name", ["qwen2-window"])  # a full and a sliding layer: both kinds of mask
def test_carried_and_stepped_caches_agree_bit_for_bit(model_path, name):
    """jaxmerge.model.run carries the whole cache when every step runs and passes each layer's entry through
    the scan when steps may be skipped (a DFS path); both forms give the same logits and caches, bit for bit."""
    from jaxmerge.model import plain, run as run_layers
    model = jaxmerge.load(model_path(name))
    spec, params = model.spec, jax.tree.map(jnp.asarray, model.params)
    tokens, mask = left_padded([0, 4], SEQ, seed=3)
    positions = jnp.asarray(default_positions(jnp.asarray(mask)))

    @jax.jit
    def decode(params, runs):  # runs: None, or the skippable form with nothing skipped
        stack = plain(params)._replace(runs=runs)
        cache, out = init_cache(spec, 2, SEQ, jnp.float32), []
        for start, stop in ((0, 12), *((t, t + 1) for t in range(12, SEQ))):
            logits, cache = run_layers(spec, params, stack, tokens[:, start:stop], mask[:, start:stop],
                                       positions[:, start:stop], cache, start)
            out.append(logits)
        return jnp.concatenate(out, axis=1), cache

    (carried, c1), (stepped, c2) = decode(params, None), decode(params, jnp.ones(spec.num_layers, bool))
    assert np.array_equal(carried, stepped)
    for a, b in zip(c1, c2):
        assert np.array_equal(a, b)


def test_new_weights_do_not_recompile(model_path):
    model = jaxmerge.load(model_path("qwen2-gqa4"))
    tokens, positions = tokens_for(2, SEQ), np.tile(np.arange(SEQ, dtype=np.int32), (2, 1))
    first = run(model, tokens, positions=positions)
    size = forward_jit._cache_size()
    second = run(Model(model.spec, jax.tree.map(lambda x: x * 1.5, model.params)), tokens, positions=positions)
    assert forward_jit._cache_size() == size
    assert not np.allclose(first, second)


def test_sliding_window_longer_than_the_window_equals_transformers(tmp_path):
    """Mistral window 6 on 20 tokens (a left-padded row too), uncached and cached: the window really slides."""
    path = make_tiny_model(tmp_path / "m", "mistral", sliding_window=6, **WEIGHT_SCALE)
    model = jaxmerge.load(path)
    assert model.spec.sliding_window == 6
    tokens, mask = left_padded([0, 3], 20, seed=3)
    hf_positions = np.where(mask == 1, np.cumsum(mask, -1) - 1, 1)
    want = hf_logits(path, tokens, mask=mask, positions=hf_positions)
    ours = run(model, tokens, mask)
    real = mask.astype(bool)
    assert np.abs(ours[real] - want[real]).max() <= ORACLE_TOL
    full = run(Model(model.spec.replace(layer_types=()), model.params), tokens, mask)
    assert np.abs(full[real] - want[real]).max() > 100 * ORACLE_TOL  # without the window the logits differ
    positions = np.asarray(default_positions(jnp.asarray(mask)))
    step = jax.jit(forward_cached, static_argnums=0)
    logits, cache = step(model.spec, model.params, tokens[:, :14], mask[:, :14], positions[:, :14],
                         init_cache(model.spec, 2, 20, jnp.float32), jnp.int32(0))
    pieces = [np.asarray(logits)]
    for t in range(14, 20):
        sl = slice(t, t + 1)
        logits, cache = step(model.spec, model.params, tokens[:, sl], mask[:, sl], positions[:, sl], cache, t)
        pieces.append(np.asarray(logits))
    assert np.abs(np.concatenate(pieces, axis=1)[real] - want[real]).max() <= ORACLE_TOL
