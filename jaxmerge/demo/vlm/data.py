"""The VLM world's rows: pictures of up to three coloured shapes, questions about them in E or J, and scenes written
in E words answered in J.

A picture is 24x24 RGB, three bands of 8 rows (cells), each empty or holding one shape in one colour stretched over
the band; the vision tower's 8x8 patches give 3 image tokens per cell (its thirds). Rows:
  imgE / imgJ: "Q: <image> E ?" / "Q: <image> J ?" -> the objects top to bottom, "colour shape" each, in E / J;
  scene: "Q: red square | none none | blue dot | J ?" -> "aka shikaku ao ten": the picture written in E words
  where its image tokens stand (three words per cell, "none none |" for an empty one), answered in J, with no
  picture.
Answers are words a source must get right (no shared template gives a model free ROUGE). Pictures are uint8,
written as PNG for the task files: the features a model is trained and scored on both come from transformers'
processor on those same pixels (build.features).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxmerge.demo.vlm import settings, vocab


class Row(NamedTuple):
    picture: np.ndarray | None  # [side, side, 3] uint8, side = the tower's image size
    prompt: str
    answer: str


def mask(shape: int) -> np.ndarray:
    """The 4x4 stencil of each shape (square, cross, horizontal bar, vertical bar, diagonal, dot)."""
    m = np.zeros((4, 4), bool)
    if shape == 0:
        m[:3, :3] = True
    elif shape == 1:
        m[1, :3] = m[:3, 1] = True
    elif shape == 2:
        m[1, :] = True
    elif shape == 3:
        m[:, 1] = True
    elif shape == 4:
        m[np.arange(4), np.arange(4)] = True
    else:
        m[1:3, 1:3] = True
    return m


def picture(objects: dict[int, tuple[int, int]], rng: np.random.Generator) -> np.ndarray:
    """RGB at the tower's image size (24x24) on a noisy dark background: cell k (a band of side / CELLS rows)
    holds objects[k] = (colour, shape), its 4x4 stencil stretched over the band."""
    side = settings.VISION["image_size"]
    rows = side // settings.CELLS
    img = rng.integers(0, settings.NOISE + 1, (side, side, 3))
    for cell, (colour, shape) in objects.items():
        band = img[rows * cell:rows * (cell + 1)]
        band[np.kron(mask(shape), np.ones((rows // 4, side // 4), bool))] = settings.COLOURS[colour]
    return img.astype(np.uint8)


def words(lang: str, colour: int, shape: int) -> list[str]:
    table = (vocab.COLOURS_E, vocab.SHAPES_E) if lang == "E" else (vocab.COLOURS_J, vocab.SHAPES_J)
    return [table[0][colour], table[1][shape]]


def sample(kind: str, counts: tuple[int, ...], n: int, rng: np.random.Generator) -> list[Row]:
    """n rows of one kind, each with k objects (k drawn from `counts`) in k cells drawn at random, of colours and
    shapes drawn at random."""
    rows = []
    for _ in range(n):
        k = counts[rng.integers(len(counts))]
        cells = sorted(rng.choice(settings.CELLS, k, replace=False).tolist())
        objects = {c: (int(rng.integers(len(settings.COLOURS))), int(rng.integers(len(vocab.SHAPES_E))))
                   for c in cells}
        lang = "E" if kind == "imgE" else "J"
        answer = " ".join(w for c in cells for w in words(lang, *objects[c]))
        if kind == "scene":
            scene = " ".join(" ".join(words("E", *objects[c]) + ["|"] if c in objects else ["none", "none", "|"])
                             for c in range(settings.CELLS))
            rows.append(Row(None, f"{scene} J ?", answer))
        else:
            rows.append(Row(picture(objects, rng), f"{lang} ?", answer))
    return rows


def prompt_text(row: Row, image_tokens: int) -> str:
    """The prompt as the model reads it: the processor's expansion of one image token into `image_tokens`."""
    image = vocab.IMAGE_TOKEN * image_tokens + " " if row.picture is not None else ""
    return settings.TEMPLATE.format(image=image, prompt=row.prompt)


def encode(rows: list[Row], image_tokens: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded token rows [N, length] and loss weights on the answer's tokens (answer, newline, <eos>)."""
    tok = vocab.tokenizer()
    prompts = tok([prompt_text(r, image_tokens) for r in rows]).input_ids
    answers = tok([r.answer + "\n" for r in rows], add_special_tokens=False).input_ids
    tokens = np.full((len(rows), length), vocab.PAD, np.int32)
    weights = np.zeros((len(rows), length), np.float32)
    for i, (p, a) in enumerate(zip(prompts, answers)):
        row = p + a + [vocab.EOS]
        assert len(row) <= length, f"row of {len(row)} tokens exceeds {length}"
        tokens[i, :len(row)] = row
        weights[i, len(p):len(row)] = 1.0
    return tokens, weights
