"""Every number that shapes the VLM world's trained models, in one place (its hash names the trained world).

The world (data.py draws it; tools/vlm_world_probe2.py found the lever, jaxmerge/demo/README.md says what else
was tried): pictures of one to three coloured shapes (6 colours x 6 shapes). The base learns pictures of one or
two objects named in E and in J, and scenes of one or two objects written in E words answered in J. VLM-E is
fine-tuned on pictures of one to three objects named in E; text-J on scenes of one to three objects answered in
J. The target is pictures of three objects named in J, which neither was trained on: the "length lever" of the
text demo (each specialist learns its own half at the longer length; the merge needs both), with text-J's scenes
written where a picture's image tokens stand, so what it learns is about the same positions the picture fills. Both
specialists replay a share of the base's data, as fine-tunes usually mix in, so they stay near the base.
"""
from __future__ import annotations

from jaxmerge.arch import ArchSpec
from jaxmerge.demo import training
from jaxmerge.demo.vlm import vocab

# model -> its training data: (kind, object counts, rows); kinds imgE / imgJ (a picture named in E / J) and
# scene (a picture written in E words, answered in J; no picture), see data.py
DATA = {
    "base": (("imgE", (1, 2), 2500), ("imgJ", (1, 2), 2500), ("scene", (1, 2), 2500)),
    "vlm_e": (("imgE", (1, 2, 3), 3000),),
    "text_j": (("scene", (1, 2, 3), 3000),),
}
REPLAY = 3000  # rows of the base's data (a shuffled share of every part) each specialist mixes in
STEPS = {"base": {"steps": 400, "lr": 3e-3}, "vlm_e": {"steps": 200, "lr": 3e-4}, "text_j": {"steps": 200, "lr": 3e-4}}
BATCH = 64
COLOURS = ((230, 30, 30), (30, 200, 30), (30, 30, 230), (230, 230, 30), (230, 30, 230), (30, 230, 230))  # RGB
CELLS = 3     # bands of a picture, one object each at most
NOISE = 60    # background noise amplitude of a picture (0..255)
TEMPLATE = "Q: {image}{prompt}\nA:"  # {image}: the image tokens and a space on picture rows, nothing otherwise
# Bump when the code that draws rows (data.py), the tower's initialisation or the training loop changes what it
# makes: the hash then names new models, and the shipped ones no longer pass for them.
CODE_VERSION = 1
SEQ_LEN = 23  # <bos> Q: 9 image tokens J ? newline A: 6 words newline <eos> = 23
TARGET = ("imgJ", (3,))   # the question the merge must answer: pictures of three objects named in J
SKILL = ("imgE", (3,))    # VLM-E's own skill at that length, a second column of the table
SPLITS = {"dev": 200, "test": 400}      # items per split of each task file (the search sees dev only)

# The vision tower: a frozen random CLIP ViT (one layer) on 24x24 pictures in 8x8 patches (9 image tokens, three per
# cell), its last hidden state projected to the language model's width by a frozen random MLP projector.
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
          "image_size": 24, "patch_size": 8, "projection_dim": 16}
FEATURE_LAYER = -1


def language_spec() -> ArchSpec:
    """The text demo's 4-layer Llama (jaxmerge.demo.training.SPEC) over this world's words."""
    return ArchSpec(vocab_size=len(vocab.WORDS), **training.SPEC,
                    inert=(("bos_token_id", "1"), ("eos_token_id", "2"), ("pad_token_id", "0")))


def as_dict() -> dict:
    return {"data": DATA, "colours": COLOURS, "cells": CELLS, "noise": NOISE, "template": TEMPLATE,
            "code_version": CODE_VERSION, "replay": REPLAY, "steps": STEPS, "batch": BATCH, "seq_len": SEQ_LEN,
            "vision": VISION, "feature_layer": FEATURE_LAYER, "spec": training.SPEC, "words": vocab.WORDS}
