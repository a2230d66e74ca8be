"""Image tasks as fitness: items with an image, prepared ONCE with their vision features cached.

A task file with `images: true` has rows {"image": PATH (relative to the task file), "prompt": ..., "answer":
..., "answers": [more references]}; its template places the image with the processor's image token (e.g.
"USER: <image>\\n{prompt} ASSISTANT:"). Preparing expands that token into the model's image tokens (what
transformers' LlavaProcessor does), tokenises as for a text task (jaxmerge.fitness.prepare), runs every image
through transformers' image processor and the vision tower and projector once, and keeps the features beside
the tokens. The features do not depend on the genome, so a candidate then costs one language-model pass.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxmerge.errors import JaxmergeError, expect
from jaxmerge.fitness.prepare import Prepared, prepare
from jaxmerge.fitness.tasks import Item, Task
from jaxmerge.vlm.checkpoint import Tower
from jaxmerge.vlm.vision import image_features_jit


def image_path(task: Task, item: Item, index: int) -> Path:
    row = item.row if isinstance(item.row, dict) else {}
    name = row.get("image")
    expect(isinstance(name, str) and name, f"task {task.name}: item {index}: expected a string field 'image' (a "
                                           f"path relative to the task file), found {name!r}")
    return task.images / name


def read_image(task: Task, item: Item, index: int):
    """The item's image as RGB, or one line naming the item and the file."""
    try:
        from PIL import Image
    except ImportError:
        raise JaxmergeError("expected pillow for image tasks (pip install 'jaxmerge[vlm]'), found it missing") from None
    path = image_path(task, item, index)
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as e:
        raise JaxmergeError(f"task {task.name}: item {index}: expected a readable image at {path}, found: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def expanded(task: Task, image_token: str, count: int) -> Task:
    """The task with its template's one image token repeated `count` times (LlavaProcessor's expansion)."""
    expect(task.template.count(image_token) == 1, f"task {task.name}: expected the template to place the image "
                                                  f"with one {image_token!r}, found {task.template.count(image_token)}")
    return dataclasses.replace(task, template=task.template.replace(image_token, image_token * count))


def prepare_images(task: Task, items: list[Item], processor, tower: Tower, *, item_batch: int) -> Prepared:
    """`prepare`'s arrays plus "features" [N_padded, tokens per image, D] in the language model's dtype."""
    expect(task.images is not None, f"task {task.name}: expected an image task (images: true), found a text task")
    spec, token = tower.spec, processor.image_token
    for i, it in enumerate(items):
        expect(token not in it.prompt, f"task {task.name}: item {i}: expected no {token!r} in the prompt (the "
                                       f"template places the image), found one")
    prepared = prepare(expanded(task, token, spec.tokens_per_image), items, processor.tokenizer,
                       item_batch=item_batch)
    check_image_tokens(prepared, spec.image_token, spec.tokens_per_image)
    features = np.concatenate([_features(task, items[i:i + item_batch], i, processor, tower)
                               for i in range(0, len(items), item_batch)])
    take = np.minimum(np.arange(prepared.arrays["tokens"].shape[0]), len(items) - 1)
    return prepared._replace(arrays={**prepared.arrays, "features": features[take]})


def check_image_tokens(prepared: Prepared, image_token: int, count: int) -> None:
    tokens, mask = prepared.arrays["tokens"], prepared.arrays["mask"]
    found = ((tokens == image_token) & (mask > 0)).sum(-1)
    rows = mask.sum(-1) > 0  # teacher-forced: unused choice rows are empty
    bad = np.unique(found[rows])
    expect(bad.tolist() == [count], f"task {prepared.task.name}: expected {count} image tokens in every prompt, "
                                    f"found {bad.tolist()} (does the tokenizer keep the image token whole?)")


def _features(task: Task, items: list[Item], first: int, processor, tower: Tower) -> np.ndarray:
    """Projected features of a batch of items' images, computed once (jitted; one compile per batch shape)."""
    images = [read_image(task, it, first + j) for j, it in enumerate(items)]
    pixels = np.asarray(processor.image_processor(images=images, return_tensors="np")["pixel_values"], np.float32)
    vs = tower.spec.vision
    expect(pixels.shape[1:] == (vs.num_channels, vs.image_size, vs.image_size),
           f"task {task.name}: expected the processor to make images of {vs.image_size}x{vs.image_size} for the "
           f"vision tower, found pixels of shape {pixels.shape[1:]}")
    dtype = tower.vision["embeddings.patch_embedding.weight"].dtype
    out = image_features_jit(tower.spec, tower.vision, tower.projector, jnp.asarray(pixels, dtype))
    return np.asarray(out)
