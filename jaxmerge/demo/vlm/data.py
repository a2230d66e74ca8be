"""The VLM world's rows: pictures of one coloured shape, questions about them in E or J, and E -> J translation.

A row is (picture or None, prompt, answer): prompts are "E ?" / "J ?" after the picture, or "J : <E words>" with
no picture; answers are two words (colour shape), so no shared template gives a model free ROUGE. Pictures are
uint8 RGB arrays, written as PNG for the task files: the features a model is trained on and scored on both come
from transformers' processor on those same pixels (features.py).
"""
from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from jaxmerge.demo.vlm import settings, vocab

COLOURS = ((230, 30, 30), (30, 200, 30), (30, 30, 230), (230, 230, 30), (230, 30, 230), (30, 230, 230))
TEMPLATE = "Q: {image}{prompt}\nA:"  # {image}: the image token and a space on picture rows, nothing otherwise


class Row(NamedTuple):
    picture: np.ndarray | None  # [8, 8, 3] uint8
    prompt: str
    answer: str
    combination: tuple[int, int]  # (colour, shape)


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


def picture(colour: int, shape: int, hard: bool, rng: np.random.Generator) -> np.ndarray:
    """8x8 RGB: the shape in its colour on a dark noisy background; easy = near the corner with little noise,
    hard = anywhere with more noise."""
    img = rng.integers(0, 90 if hard else 20, (8, 8, 3))
    y, x = rng.integers(0, 5 if hard else 2, 2)
    img[y:y + 4, x:x + 4][mask(shape)] = COLOURS[colour]
    return img.astype(np.uint8)


def combinations(which: str) -> list[tuple[int, int]]:
    every = list(itertools.product(range(len(COLOURS)), range(len(vocab.SHAPES_E))))
    return every if which == "all" else [(c, s) for c, s in every if c < settings.KNOWN and s < settings.KNOWN]


def words(lang: str, colour: int, shape: int) -> list[str]:
    table = (vocab.COLOURS_E, vocab.SHAPES_E) if lang == "E" else (vocab.COLOURS_J, vocab.SHAPES_J)
    return [table[0][colour], table[1][shape]]


def sample(kind: str, which: str, n: int, pictures: str, rng: np.random.Generator) -> list[Row]:
    """n rows of one kind over the combinations `which`, drawn with replacement."""
    combos = combinations(which)
    rows = []
    for _ in range(n):
        c, s = combos[rng.integers(len(combos))]
        if kind == "trans":  # a colour, a shape or both, in E -> the same in J
            pick = [[0], [1], [0, 1]][rng.integers(3)]
            e, j = words("E", c, s), words("J", c, s)
            rows.append(Row(None, "J : " + " ".join(e[i] for i in pick), " ".join(j[i] for i in pick), (c, s)))
        else:
            lang = kind.removeprefix("img")
            rows.append(Row(picture(c, s, pictures == "hard", rng), f"{lang} ?", " ".join(words(lang, c, s)),
                            (c, s)))
    return rows


def prompt_text(row: Row, image_tokens: int) -> str:
    """The prompt as the model reads it: the processor's expansion of one image token into `image_tokens`."""
    image = vocab.IMAGE_TOKEN * image_tokens + " " if row.picture is not None else ""
    return TEMPLATE.format(image=image, prompt=row.prompt)


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
