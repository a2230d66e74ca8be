"""A tiny LLaVA and LLaVA-Next in jaxmerge against transformers' Llava(Next)ForConditionalGeneration (the
oracle): float32 logits within 1e-4 and greedy generation token-equal, over image sizes and aspect ratios (tiles,
unpadding), feature layers and selection strategies, with pixels and ids from transformers' own processor
(numpy path)."""
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
from jaxmerge.vlm.anyres import image_tokens
from tests.vlm_tiny import make_tiny_llava_next, make_tiny_vlm

CASES = {"default": dict(), "full-first-last": dict(image_size=12, feature_layer=[0, -1], strategy="full"),
         "patch2-layer1": dict(image_size=8, patch_size=2, feature_layer=1, vision_layers=2),
         "next": dict(next=True), "next-mistral-layers": dict(next=True, feature_layer=[1, -1], family="mistral",
                                                              sliding_window=12)}
PROMPTS = ["USER: <image>\nwhat is it? ASSISTANT:", "<image> colour?"]
SHAPES = [(19, 19), (14, 37)]  # (height, width): square, and wide (other tiles, unpadding on LLaVA-Next)


def make(path, next=False, **config):
    return (make_tiny_llava_next if next else make_tiny_vlm)(path, **config)


@pytest.fixture(scope="module", params=sorted(CASES))
def vlm_dir(request, tmp_path_factory):
    return make(tmp_path_factory.mktemp("vlm") / request.param, **CASES[request.param])


def batch(model_dir):
    """Left-padded ids and mask, and per row (pixels, image size), from the processor."""
    proc = load_processor(model_dir)
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SHAPES]
    encoded = [encode(proc, im, p) for im, p in zip(pictures, PROMPTS)]
    width = max(len(ids) for _, ids, _ in encoded)
    tokens = np.array([[0] * (width - len(ids)) + ids for _, ids, _ in encoded], np.int32)
    mask = np.array([[0] * (width - len(ids)) + [1] * len(ids) for _, ids, _ in encoded], np.int32)
    return tokens, mask, [(px, size) for px, _, size in encoded]


def hf_images(images_):
    """transformers' image inputs of the batch: pixel_values (LLaVA-Next: tiles padded to the most) and sizes."""
    pixels = [px for px, _ in images_]
    if pixels[0].ndim == 3:
        return {"pixel_values": torch.as_tensor(np.stack(pixels))}
    most = max(len(p) for p in pixels)
    padded = np.stack([np.concatenate([p, np.zeros((most - len(p), *p.shape[1:]), p.dtype)]) for p in pixels])
    return {"pixel_values": torch.as_tensor(padded), "image_sizes": torch.as_tensor([s for _, s in images_])}


def oracle(model_dir):
    cls = transformers.AutoModelForImageTextToText
    return cls.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True).eval()


def ours(model_dir, images_):
    vlm = load_vlm(model_dir)
    feats = [image_tokens(vlm.tower, px, size) for px, size in images_]
    most = max(len(f) for f in feats)
    padded = np.stack([np.concatenate([f, np.zeros((most - len(f), f.shape[1]), f.dtype)]) for f in feats])
    return LanguageSpec(vlm.spec.text, vlm.spec.image_token), {"lm": vlm.lm.params, "features": jnp.asarray(padded)}, \
        [len(f) for f in feats]


def test_logits_match_transformers(vlm_dir):
    tokens, mask, images_ = batch(vlm_dir)
    spec, params, counts = ours(vlm_dir, images_)
    assert (tokens == 96).sum(-1).tolist() == counts  # our feature counts = the processor's expansion
    with torch.no_grad():
        want = oracle(vlm_dir)(input_ids=torch.as_tensor(tokens).long(), attention_mask=torch.as_tensor(mask),
                               **hf_images(images_)).logits.numpy()
    got = np.asarray(jax.jit(forward, static_argnums=0)(spec, params, tokens, mask))
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], want[real], atol=1e-4, rtol=0)
    assert np.abs(want[real]).max() > 0.1  # the logits are not all near zero


@pytest.mark.parametrize("slow", [pytest.param(0, marks=pytest.mark.slow)])
def test_greedy_generation_matches_transformers_all(vlm_dir, slow):
    check_generation(vlm_dir)


@pytest.mark.slow
def test_greedy_generation_matches_transformers(tmp_path):
    check_generation(make(tmp_path / "vlm", **CASES["patch2-layer1"]))


def test_greedy_generation_matches_transformers_llava_next(tmp_path):
    check_generation(make(tmp_path / "vlm", **CASES["next"]))


def check_generation(vlm_dir):
    tokens, mask, images_ = batch(vlm_dir)
    with torch.no_grad():
        want = oracle(vlm_dir).generate(input_ids=torch.as_tensor(tokens).long(), attention_mask=torch.as_tensor(mask),
                                        **hf_images(images_), do_sample=False, max_new_tokens=8,
                                        pad_token_id=0, eos_token_id=2)[:, tokens.shape[1]:].numpy()
    spec, params, _ = ours(vlm_dir, images_)
    got = greedy_jit(spec, params, jnp.asarray(tokens), jnp.asarray(mask), jnp.asarray([2]), max_new_tokens=8,
                     pad=0, decoder=VLM_DECODER)
    got = np.asarray(got.tokens)[:, :want.shape[1]]
    np.testing.assert_array_equal(got, want)
    assert len(set(map(tuple, want))) > 1 or len(set(want[0])) > 1  # the completions are not one repeated token
