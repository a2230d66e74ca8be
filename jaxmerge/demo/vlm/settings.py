"""Every number that shapes the VLM world's trained models, in one place (its hash names the trained world).

The world (tools/vlm_world_probe.py chose it; jaxmerge/demo/README.md says what else was tried): pictures of one
coloured shape, 6 colours x 6 shapes. The base learns to name pictures in E (all 36 combinations) and in J (only
the 16 made of the 4 colours and 4 shapes whose J words it knows best), on easy pictures (the shape in a corner,
little noise), and to translate E words into J for those 16. VLM-E is fine-tuned on hard pictures (the shape
anywhere, noisy) named in E: better perception. text-J is fine-tuned on translating all 36 into J: better J.
The target is hard pictures named in J, which neither was trained on. Both specialists replay a share of the
base's data, as fine-tunes usually mix in, so they stay near the base (merging needs that).
"""
from __future__ import annotations

from jaxmerge.arch import ArchSpec
from jaxmerge.demo import training
from jaxmerge.demo.vlm import vocab

KNOWN = 4  # the base knows the J words of the first KNOWN colours and shapes
# model -> its training data: (kind, combinations, rows, pictures); kinds: imgE / imgJ (a picture named in E / J),
# trans (E words -> J words, no picture); combinations "all" or "known"; pictures "easy" or "hard"
DATA = {
    "base": (("imgE", "all", 3000, "easy"), ("imgJ", "known", 2000, "easy"), ("trans", "known", 1500, "hard")),
    "vlm_e": (("imgE", "all", 3000, "hard"),),
    "text_j": (("trans", "all", 3000, "hard"),),
}
REPLAY = 3000  # rows of the base's data (a shuffled share of every part) each specialist mixes in
STEPS = {"base": {"steps": 400, "lr": 3e-3}, "vlm_e": {"steps": 200, "lr": 3e-4}, "text_j": {"steps": 200, "lr": 3e-4}}
BATCH = 64
SEQ_LEN = 14  # <bos> Q: 4 image tokens J ? newline A: colour shape newline <eos> = 14
TARGET = ("imgJ", "all", "hard")        # the question the merge must answer: hard pictures named in J
SKILL = ("imgE", "all", "hard")         # VLM-E's own skill, a second column of the table
SPLITS = {"dev": 200, "test": 400}      # items per split of each task file (the search sees dev only)

# The vision tower: a frozen random CLIP ViT (one layer) on 8x8 pictures in 4x4 patches (4 image tokens), its
# last hidden state projected to the language model's width by a frozen random MLP projector.
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
          "image_size": 8, "patch_size": 4, "projection_dim": 16}
FEATURE_LAYER = -1


def language_spec() -> ArchSpec:
    """The text demo's 4-layer Llama (jaxmerge.demo.training.SPEC) over this world's words."""
    return ArchSpec(vocab_size=len(vocab.WORDS), **training.SPEC,
                    inert=(("bos_token_id", "1"), ("eos_token_id", "2"), ("pad_token_id", "0")))


def as_dict() -> dict:
    return {"known": KNOWN, "data": DATA, "replay": REPLAY, "steps": STEPS, "batch": BATCH, "seq_len": SEQ_LEN,
            "vision": VISION, "feature_layer": FEATURE_LAYER, "spec": training.SPEC, "words": vocab.WORDS}
