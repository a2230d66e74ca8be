"""VLM fitness: what a candidate costs with the vision features cached, against the language-model-only pass of
the same tokens and against running the whole VLM (vision tower + projector + LM) per candidate, which is how
Sakana's evaluation scores each candidate.

One random LLaVA (CLIP ViT 224 px / patch 14 -> 256 image tokens, hidden 256, 6 layers; Llama LM hidden 256,
4 layers), an image task of 8 items scored with loglik, all three fitness functions built by jaxmerge's own
make_fitness over the same prepared token arrays (the third binds pixels and recomputes the features inside the
candidate's program), jitted, warmed up, timed as medians of 5 calls with new params each time.

Run: python -m benchmarks.vlm_fitness   (writes its section of benchmarks/RESULTS.md)
"""
from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import RESULTS_PAGE
from benchmarks.common import page_machine, repeat, write_section

TITLE = "vlm: candidate fitness with cached vision features (benchmarks/vlm_fitness.py)"


def world(root: Path) -> tuple[Path, Path]:
    from PIL import Image
    from tests.vlm_tiny import images, make_tiny_vlm
    vlm = make_tiny_vlm(root / "vlm", image_size=224, patch_size=14, vision_layers=6,
                        vision={"hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 8},
                        hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=8,
                        num_key_value_heads=4, head_dim=32, max_position_embeddings=1024)
    (root / "img").mkdir()
    rows = []
    for i, im in enumerate(images(8, 224, seed=1)):
        Image.fromarray(im).save(root / f"img/{i}.png")
        rows.append({"image": f"img/{i}.png", "prompt": f"what is in picture {i}?", "answer": "a red box"})
    (root / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "task.yml").write_text("name: img\nsplits: {dev: dev.jsonl}\nimages: true\nmetric: loglik\n"
                                   "template: \"USER: <image>\\n{prompt} ASSISTANT:\"\n")
    return vlm, root / "task.yml"


def measure(root: Path) -> dict:
    import jax
    import jax.numpy as jnp
    from jaxmerge.fitness import load_items, load_task, make_fitness
    from jaxmerge.vlm.checkpoint import load_vlm
    from jaxmerge.vlm.model import VLM_DECODER, LanguageSpec
    from jaxmerge.vlm.processor import load_processor
    from jaxmerge.vlm.tasks import prepare_images, read_image
    from jaxmerge.vlm.vision import image_features
    vlm_dir, task_file = world(root)
    vlm, task = load_vlm(vlm_dir), load_task(task_file)
    items, processor = load_items(task, "dev"), load_processor(vlm_dir)
    prepared = prepare_images(task, items, processor, vlm.tower, item_batch=8)
    lang = LanguageSpec(vlm.spec.text, vlm.spec.image_token)
    cached = make_fitness(lang, prepared, decoder=VLM_DECODER)
    text_only = make_fitness(vlm.spec.text, prepared._replace(arrays={k: v for k, v in prepared.arrays.items()
                                                                      if k != "features"}))
    pixels = np.asarray(processor.image_processor(images=[read_image(task, it, i) for i, it in enumerate(items)],
                                                  return_tensors="np")["pixel_values"], np.float32)
    tower = vlm.tower

    def full_bind(params, chunk):  # the anchor's way: the vision tower runs inside every candidate
        features = image_features(tower.spec, tower.vision, tower.projector, chunk["pixels"])
        return {"lm": params, "features": features}
    full = make_fitness(lang, prepared._replace(arrays={**prepared.arrays, "pixels": pixels}),
                        decoder=VLM_DECODER._replace(bind=full_bind))
    rng = np.random.default_rng(0)

    def timed(fit):
        fn = jax.jit(fit.fitness)
        candidates = [jax.tree.map(lambda x: jnp.asarray(x + rng.normal(0, 1e-3, x.shape).astype(x.dtype)),
                                   vlm.lm.params) for _ in range(6)]
        it = iter(candidates)
        t = repeat(lambda: fn(next(it)).block_until_ready(), 5)
        return t, fn._cache_size()
    out = {name: timed(f) for name, f in (("cached", cached), ("text", text_only), ("full", full))}
    out["tokens"] = int(prepared.arrays["mask"].sum())
    out["image_tokens"] = vlm.spec.tokens_per_tile
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        found = measure(Path(tmp))
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    (c, cc), (t, tc), (f, fc) = found["cached"], found["text"], found["full"]
    body = (f"{page_machine()}\n\n`uptime` at the end: {load}\n\n"
            f"8 items, {found['tokens']} real tokens in all ({found['image_tokens']} image tokens per item), "
            "float32, loglik; median of 5 candidates (new params each), after one warm-up call.\n\n"
            "| candidate fitness | s | vs LM-only | compiles over 6 candidates |\n|---|---|---|---|\n"
            f"| cached features (jaxmerge) | {c.median:.4f} | {c.median / t.median:.2f}x | {cc} |\n"
            f"| language model only, same tokens | {t.median:.4f} | 1.00x | {tc} |\n"
            f"| full VLM per candidate (vision tower each time) | {f.median:.4f} | {f.median / t.median:.2f}x | {fc} |"
            f"\n\nGoal: cached <= 1.1x the LM-only pass: **{'met' if c.median <= 1.1 * t.median else 'not met'}** "
            f"({c.median / t.median:.2f}x); the full VLM per candidate costs {f.median / c.median:.2f}x the cached "
            f"candidate. Spreads: cached {100 * c.noise:.0f} %, LM-only {100 * t.noise:.0f} %, full "
            f"{100 * f.noise:.0f} %.")
    write_section(RESULTS_PAGE, TITLE, body)
    print(body)


if __name__ == "__main__":
    main()
