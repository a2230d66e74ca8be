"""A tiny LLaVA in jaxmerge against transformers' LlavaForConditionalGeneration (the oracle): float32 logits
within 1e-4 and greedy generation token-equal, over image sizes, feature layers and selection strategies, with
pixels and ids from transformers' own processor (numpy path)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxmerge.fitness.generate import greedy_jit
from jaxmerge.vlm.checkpoint import load_vlm
from jaxmerge.vlm.model import VLM_DECODER, LanguageSpec, forward
from jaxmerge.vlm.processor import encode, load_processor
from jaxmerge.vlm.vision import image_features_jit
from tests.vlm_tiny import images, make_tiny_vlm

CASES = {"default": dict(), "full-first-last": dict(image_size=12, feature_layer=[0, -1], strategy="full"),
         "patch2-layer1": dict(image_size=8, patch_size=2, feature_layer=1, vision_layers=2)}
PROMPTS = ["USER: <image>\nwhat is it? ASSISTANT:", "<image> colour?"]


@pytest.fixture(scope="module", params=sorted(CASES))
def vlm_dir(request, tmp_path_factory):
    return make_tiny_vlm(tmp_path_factory.mktemp("vlm") / request.param, **CASES[request.param])


def batch(model_dir):
    """Left-padded ids and mask, pixels [2, C, H, W], from the processor."""
    proc = load_processor(model_dir)
    size = proc.image_processor.crop_size["height"]
    encoded = [encode(proc, im, p) for im, p in zip(images(2, size + 3), PROMPTS)]
    width = max(len(ids) for _, ids in encoded)
    tokens = np.array([[0] * (width - len(ids)) + ids for _, ids in encoded], np.int32)
    mask = np.array([[0] * (width - len(ids)) + [1] * len(ids) for _, ids in encoded], np.int32)
    return tokens, mask, np.concatenate([px for px, _ in encoded])


def oracle(model_dir):
    return transformers.LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32,
                                                                      local_files_only=True).eval()


def ours(model_dir, pixels):
    vlm = load_vlm(model_dir)
    feats = image_features_jit(vlm.spec, vlm.tower.vision, vlm.tower.projector, jnp.asarray(pixels))
    return LanguageSpec(vlm.spec.text, vlm.spec.image_token), {"lm": vlm.lm.params, "features": feats}


def test_logits_match_transformers(vlm_dir):
    tokens, mask, pixels = batch(vlm_dir)
    assert (tokens == 96).sum() == 2 * ours(vlm_dir, pixels)[1]["features"].shape[1]  # ids from the processor
    with torch.no_grad():
        want = oracle(vlm_dir)(input_ids=torch.as_tensor(tokens).long(), attention_mask=torch.as_tensor(mask),
                               pixel_values=torch.as_tensor(pixels)).logits.numpy()
    spec, params = ours(vlm_dir, pixels)
    got = np.asarray(jax.jit(forward, static_argnums=0)(spec, params, tokens, mask))
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], want[real], atol=1e-4, rtol=0)
    assert np.abs(want[real]).max() > 0.1  # the logits are not all near zero


@pytest.mark.parametrize("slow", [pytest.param(0, marks=pytest.mark.slow)])
def test_greedy_generation_matches_transformers_all(vlm_dir, slow):
    check_generation(vlm_dir)


def test_greedy_generation_matches_transformers(tmp_path):
    check_generation(make_tiny_vlm(tmp_path / "vlm", **CASES["patch2-layer1"]))


def check_generation(vlm_dir):
    tokens, mask, pixels = batch(vlm_dir)
    with torch.no_grad():
        want = oracle(vlm_dir).generate(input_ids=torch.as_tensor(tokens).long(), attention_mask=torch.as_tensor(mask),
                                        pixel_values=torch.as_tensor(pixels), do_sample=False, max_new_tokens=8,
                                        pad_token_id=0, eos_token_id=2)[:, tokens.shape[1]:].numpy()
    spec, params = ours(vlm_dir, pixels)
    got = greedy_jit(spec, params, jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray([2]), max_new_tokens=8,
                     pad=0, decoder=VLM_DECODER)
    got = np.asarray(got.tokens)[:, :want.shape[1]]
    np.testing.assert_array_equal(got, want)
    assert len(set(map(tuple, want))) > 1 or len(set(want[0])) > 1  # the completions are not one repeated token
