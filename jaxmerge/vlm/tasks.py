"""Image tasks as fitness: items with an image, prepared ONCE with their vision features cached.

A task file with `images: true` has rows {"image": PATH (relative to the task file), "prompt": ..., "answer":
..., "answers": [more references]}; its template places the image with the processor's image token (e.g.
"USER: <image>\\n{prompt} ASSISTANT:"). Preparing runs every image through transformers' image processor and
the vision tower and projector once (jaxmerge.vlm.anyres; LLaVA-Next's tiles too), expands that token into one
image token per feature (what transformers' processors do), tokenises as for a text task
(jaxmerge.fitness.prepare), and keeps the features beside the tokens. The features do not depend on the genome,
so a candidate then costs one language-model pass.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jaxmerge.errors import JaxmergeError, expect
from jaxmerge.fitness.prepare import Prepared, prepare
from jaxmerge.fitness.tasks import Item, Task
from jaxmerge.vlm.checkpoint import Tower
from jaxmerge.vlm.anyres import image_tokens


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


def prepare_images(task: Task, items: list[Item], processor, tower: Tower, *, item_batch: int) -> Prepared:
    """`prepare`'s arrays plus "features" [N_padded, most image tokens, D] in the language model's dtype (rows
    padded with zeros past an image's own count: LLaVA-Next's count depends on the image's size)."""
    expect(task.images is not None, f"task {task.name}: expected an image task (images: true), found a text task")
    token = processor.image_token
    expect(task.template.count(token) == 1, f"task {task.name}: expected the template to place the image with "
                                            f"one {token!r}, found {task.template.count(token)}")
    features, expanded = [], []
    for i, it in enumerate(items):
        expect(token not in it.prompt, f"task {task.name}: item {i}: expected no {token!r} in the prompt (the "
                                       f"template places the image), found one")
        out = processor.image_processor(images=[read_image(task, it, i)], return_tensors="np")
        size = tuple(int(v) for v in out["image_sizes"][0]) if "image_sizes" in out else None
        features.append(image_tokens(tower, np.asarray(out["pixel_values"][0], np.float32), size))
        # the processor's expansion: the image token once per feature; the template applied here, per item
        expanded.append(it._replace(prompt=task.template.replace(token, token * len(features[-1]))
                                    .replace("{prompt}", it.prompt)))
    prepared = prepare(dataclasses.replace(task, template="{prompt}", images=None), expanded, processor.tokenizer,
                       item_batch=item_batch)
    counts = np.asarray([len(f) for f in features])
    take = np.minimum(np.arange(prepared.arrays["tokens"].shape[0]), len(items) - 1)
    check_image_tokens(prepared._replace(task=task), tower.spec.image_token, counts[take])
    most = counts.max()
    padded = np.stack([np.concatenate([f, np.zeros((most - len(f), f.shape[1]), f.dtype)]) for f in features])
    return prepared._replace(task=task, items=tuple(items), arrays={**prepared.arrays, "features": padded[take]})


def check_image_tokens(prepared: Prepared, image_token: int, counts: np.ndarray) -> None:
    """Every prompt row holds exactly its image's feature count of image tokens (unused choice rows: none)."""
    tokens, mask = prepared.arrays["tokens"], prepared.arrays["mask"]
    found = ((tokens == image_token) & (mask > 0)).sum(-1)
    if found.ndim == 2:  # teacher-forced [items, choices]
        counts = np.where(mask.sum(-1) > 0, counts[:, None], 0)
    found, counts = found.reshape(len(found), -1), counts.reshape(len(found), -1)
    bad = np.flatnonzero((found != counts).any(-1))
    if bad.size:
        i = int(bad[0])
        raise JaxmergeError(f"task {prepared.task.name}: item {i}: expected {counts[i].max()} image tokens in its "
                            f"prompt, found {found[i].max()} (the tokenizer must keep the image token whole)")
