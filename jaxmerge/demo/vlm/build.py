"""Training the VLM world: a frozen random vision tower, a base language model that reads its features, VLM-E and
text-J fine-tuned from the base (settings.py says on what), written as a LLaVA checkpoint and two text models."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxmerge.demo.train import init_params, train
from jaxmerge.demo.vlm import data, settings, vocab
from jaxmerge.io import Model, save
from jaxmerge.vlm.checkpoint import Tower, save_vlm
from jaxmerge.vlm.config import read_vlm_config
from jaxmerge.vlm.model import LanguageSpec
from jaxmerge.vlm.vision import image_features_jit, projector_shapes, vision_shapes


def llava_config() -> dict:
    """config.json of the world's LLaVA (transformers' own LlavaConfig, so transformers loads what we write)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
    text = LlamaConfig(**settings.language_spec().to_hf_config())
    cfg = LlavaConfig(vision_config=CLIPVisionConfig(**settings.VISION), text_config=text,
                      image_token_index=vocab.IMAGE, image_seq_length=image_tokens(),
                      vision_feature_layer=settings.FEATURE_LAYER, vision_feature_select_strategy="default")
    out = cfg.to_dict()
    out.pop("transformers_version", None)
    return out


def image_tokens() -> int:
    return (settings.VISION["image_size"] // settings.VISION["patch_size"]) ** 2


def make_tower(seed: int, processor, processor_dir: Path) -> Tower:
    """A random CLIP tower and projector (unit norms, zero biases, N(0, 1/fan_in) matrices: features of order 1),
    whose `processor`'s files are written to `processor_dir` (save_vlm copies them from there)."""
    spec = read_vlm_config(llava_config(), "the VLM world's config")
    rng = np.random.default_rng([seed, 11])

    def init(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if "norm" in name and name.endswith("weight"):
            return np.ones(shape, np.float32)
        if name.endswith("bias"):
            return np.zeros(shape, np.float32)
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[-1]
        return (rng.normal(0, 1 / np.sqrt(fan_in), shape)).astype(np.float32)
    shapes = vision_shapes(spec.vision)
    vision = {k: init(k, s) for k, s in shapes.items() if k != "layers"}
    vision["layers"] = {k: np.stack([init(k, s[1:]) for _ in range(s[0])]) for k, s in shapes["layers"].items()}
    projector = {k: init(k, s) for k, s in projector_shapes(spec).items()}
    processor.save_pretrained(str(processor_dir))
    return Tower(spec, vision, projector, Path(processor_dir))


def features(rows: list[data.Row], tower: Tower, processor) -> np.ndarray:
    """[N, image tokens, D] float32: each picture through transformers' image processor, the tower and the
    projector, exactly as a task file's image is when it is scored (zeros for rows without a picture)."""
    out = np.zeros((len(rows), image_tokens(), tower.spec.text.hidden_size), np.float32)
    with_picture = [i for i, r in enumerate(rows) if r.picture is not None]
    if with_picture:
        from PIL import Image
        pixels = processor.image_processor(images=[Image.fromarray(rows[i].picture) for i in with_picture],
                                           return_tensors="np")["pixel_values"]
        for start in range(0, len(with_picture), 1024):
            take = with_picture[start:start + 1024]
            out[take] = np.asarray(image_features_jit(tower.spec, tower.vision, tower.projector,
                                                      jnp.asarray(pixels[start:start + 1024], jnp.float32)))
    return out


def datasets(seed: int) -> dict[str, list[data.Row]]:
    """model -> its training rows (specialists: their own data plus REPLAY rows of the base's, shuffled)."""
    rng = np.random.default_rng([seed, 7])
    parts = {m: [r for spec in specs for r in data.sample(*spec, rng)] for m, specs in settings.DATA.items()}
    base = parts["base"]
    out = {"base": [base[i] for i in rng.permutation(len(base))]}
    for name in ("vlm_e", "text_j"):
        replay = [base[i] for i in rng.permutation(len(base))[:settings.REPLAY]]
        mixed = parts[name] + replay
        out[name] = [mixed[i] for i in rng.permutation(len(mixed))]
    return out


def train_all(out_dir: Path, seed: int, progress=None) -> dict:
    """Write base/ and text_j/ (text Llamas) and vlm_e/ (a LLaVA: the tower, projector and its language model)
    under out_dir; returns timings and final losses."""
    say = progress or (lambda msg: None)
    spec = LanguageSpec(settings.language_spec(), vocab.IMAGE)
    key, info = jax.random.key(seed), {"seconds": {}, "final_loss": {}}
    with tempfile.TemporaryDirectory() as tmp:
        processor = vocab.processor(settings.VISION["image_size"], settings.VISION["patch_size"])
        tower = make_tower(seed, processor, Path(tmp))
        base = init_params(spec.arch, jax.random.fold_in(key, 0))
        for job, (name, rows) in enumerate(datasets(seed).items()):
            hyper = settings.STEPS[name]
            say(f"training {name} ({hyper['steps']} steps)")
            start = time.perf_counter()
            tokens, weights = data.encode(rows, image_tokens(), settings.SEQ_LEN)
            params, losses = train(spec, base, tokens, weights, steps=hyper["steps"], lr=hyper["lr"],
                                   batch=settings.BATCH, key=jax.random.fold_in(key, 1 + job),
                                   features=features(rows, tower, processor))
            base = params if name == "base" else base
            model = Model(spec.arch, jax.tree.map(lambda x: np.asarray(x, np.float32), params))
            if name == "vlm_e":
                save_vlm(tower, model, out_dir / name, tokenizer_from=Path(tmp))
            else:
                save(model, out_dir / name, tokenizer_from=Path(tmp))
            info["seconds"][name] = round(time.perf_counter() - start, 1)
            info["final_loss"][name] = round(losses[-1], 4)
    return info
