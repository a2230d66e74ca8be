"""Every family record against transformers (the oracle): tiny random models with every feature of their family
switched on (tests/tiny.py FULL_FEATURES), prompts several sliding windows long, a left-padded row.

- logits <= 1e-4 float32 (transformers float32 eager/sdpa), and they are not trivially small;
- greedy decoding with our KV cache token-equal to transformers' generate (its own cache);
- save -> transformers from_pretrained -> the same logits; load -> save keeps every tensor's bytes and name;
- a bf16 run stays within bf16 rounding of the float32 run of the same weights.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import jaxmerge
from jaxmerge.fitness.generate import greedy_jit
from jaxmerge.model import forward_jit
from tests.tiny import FULL_FEATURES, hf_logits, make_tiny_model

ORACLE_TOL = 1e-4  # float32 logits, ours vs transformers (as tests/test_model.py)
BF16_VS_HF = 1.5  # our bf16 error may be at most 1.5x transformers' own bf16 error (as tests/test_io.py)
FAMILIES = sorted(FULL_FEATURES)
SEQ = 20  # four windows of tests/tiny.py's WINDOW; longer than Phi-3's longrope original length (16)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {f: make_tiny_model(root / f, f, seed=i, initializer_range=0.15, **FULL_FEATURES[f])
            for i, f in enumerate(FAMILIES)}


def prompts(seq=SEQ, pads=4, seed=0):
    tokens = np.random.default_rng(seed).integers(3, 97, (2, seq)).astype(np.int32)
    mask = np.ones_like(tokens)
    mask[1, :pads], tokens[1, :pads] = 0, 0
    return tokens, mask


def hf_positions(mask):
    return np.where(mask == 1, np.cumsum(mask, -1) - 1, 1)  # HF generate's rule


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_equal_transformers(paths, family):
    tokens, mask = prompts()
    model = jaxmerge.load(paths[family])
    assert model.spec.model_type == family
    ours = np.asarray(forward_jit(model.spec, model.params, tokens, mask))
    want = hf_logits(paths[family], tokens, mask=mask, positions=hf_positions(mask))
    real = mask.astype(bool)
    assert np.abs(want[real]).max() > 1.0
    assert np.abs(ours[real] - want[real]).max() <= ORACLE_TOL


def hf_generate(path, tokens, mask, steps):
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    out = hf.generate(torch.as_tensor(tokens).long(), attention_mask=torch.as_tensor(mask).long(),
                      do_sample=False, max_new_tokens=steps, pad_token_id=0, eos_token_id=2)
    gen = out[:, tokens.shape[1]:].numpy()
    return np.pad(gen, ((0, 0), (0, steps - gen.shape[1])))


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_with_cache_equals_transformers_generate(paths, family):
    """A 12-token prompt and 9 new tokens: the windows fill and slide during decoding, and Phi-3 crosses its
    longrope original length (16) mid-generation."""
    tokens, mask = prompts(12, pads=3, seed=1)
    model = jaxmerge.load(paths[family])
    got = greedy_jit(model.spec, model.params, tokens, mask, jnp.asarray([2]), max_new_tokens=9)
    np.testing.assert_array_equal(np.asarray(got.tokens), hf_generate(paths[family], tokens, mask, 9))


def stored(path):
    from tests.merge_oracle import read_tensors
    return read_tensors(path)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_loads_in_transformers_and_keeps_every_byte(paths, family, tmp_path):
    model = jaxmerge.load(paths[family])
    out = jaxmerge.save(model, tmp_path / "out")
    before, after = stored(paths[family]), stored(out)
    assert sorted(before) == sorted(after)
    assert all(before[k].dtype == after[k].dtype and before[k].tobytes() == after[k].tobytes() for k in before)
    tokens, mask = prompts(seed=2)
    again = hf_logits(out, tokens, mask=mask, positions=hf_positions(mask))
    np.testing.assert_array_equal(again, hf_logits(paths[family], tokens, mask=mask, positions=hf_positions(mask)))
    assert jaxmerge.load(out).spec.replace(inert=()) == model.spec.replace(inert=())


def hf_bf16_error(path, tokens, mask):
    """transformers' own bf16 run of the bf16 weights vs its float32 run of them, max |difference|."""
    runs = []
    for upcast in (False, True):
        hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
        hf = hf.float() if upcast else hf
        with torch.no_grad():
            runs.append(hf(torch.as_tensor(tokens).long(), attention_mask=torch.as_tensor(mask).long(),
                           position_ids=torch.as_tensor(hf_positions(mask)).long()).logits.float().numpy())
    return np.abs(runs[0] - runs[1])[mask.astype(bool)].max()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gemma3_text", "phi3", "qwen2_moe"])
def test_bf16_runs_no_worse_than_transformers_bf16(paths, family):
    """bf16 weights computed in bf16 vs the same numbers computed in float32: a real difference (the bf16 path
    computes in bf16), no larger than 1.5x transformers' own (a mixture may route a near-tie differently in
    bf16, in transformers as in jaxmerge)."""
    tokens, mask = prompts()
    bf16 = jaxmerge.load(paths[family], dtype="bfloat16")
    upcast = jax.tree.map(lambda x: np.asarray(x, np.float32), bf16.params)
    ours = np.asarray(forward_jit(bf16.spec, bf16.params, tokens, mask))
    ref = np.asarray(forward_jit(bf16.spec, upcast, tokens, mask))
    real = mask.astype(bool)
    diff = np.abs(ours[real] - ref[real]).max()
    assert np.isfinite(ours).all() and 0 < diff <= BF16_VS_HF * hf_bf16_error(paths[family], tokens, mask)


@pytest.mark.parametrize("family", FAMILIES)
def test_sliced_loading_over_the_model_axis_equals_load(paths, family):
    """Sources read straight onto a (pop 4, model 2) mesh of the 8 fake devices, each device its own block."""
    from jaxmerge.evolve.mesh import build_mesh, tensor_spec
    from jaxmerge.evolve.sliced import load_table, open_checkpoint
    ckpt = open_checkpoint(paths[family])
    mesh = build_mesh(4, 2, 8, ckpt.spec)
    got = load_table(ckpt.table, ckpt.spec, mesh, "float32")
    want = jaxmerge.load(paths[family]).params
    split = 0
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        assert g.sharding.spec == tensor_spec(mesh, path[-1].key, w.shape)
        split += "model" in g.sharding.spec
        np.testing.assert_array_equal(np.asarray(g), w)
    assert split >= 4  # projections really split over "model"
