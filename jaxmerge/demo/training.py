"""Every number that shapes the demo's trained models, in one place (its hash names the trained world).

Why these numbers: the base is pretrained on a mixture of all skills but only on their shorter inputs, so it
does every skill partly; that is the regime where fine-tunes stay near their base and merging works at all (a
base that knows nothing of a skill lets its specialist drift far, and every merge then fails). Specialists mix a
replay share of the base's data into their own skill's data, again to stay close, and use deliberately unequal
learning rates, as real fine-tunes do: their task vectors differ in size, so no single uniform weight suits all
of them, and a merge whose weights are searched per model and per layer has room to beat the hand-made ones.
"""
from __future__ import annotations

from jaxmerge.arch import ArchSpec
from jaxmerge.demo import vocab

SKILLS = ("reverse", "sort", "cipher", "add")
SEQ_LEN = 18         # <bos> Q: op + 5 symbols, newline, A:, 5 symbols, newline, <eos> = 17 tokens
TRAIN_ROWS = 6000    # per skill, disjoint from dev and test (add has 11100 prompts in all)
BATCH = 64
BASE = {"steps": 700, "lr": 3e-3}
BASE_SEES_SHORT_ONLY = True  # the base never sees a skill's longest inputs (see build.short_rows)
REPLAY = 0.5         # specialists' data: their skill plus this share (of TRAIN_ROWS) of the base's data
# Rows per skill. dev + dev_extra (256) is what the search sees; dev_extra is drawn after the train split, and the
# first two sizes shape the train split (build.training_data), so they stay as the shipped models were trained.
# (Not part of `as_dict`: the trained models do not depend on the dev_extra size.)
SPLIT_SIZES = {"dev": 64, "test": 250, "dev_extra": 192}
SPECIALISTS = {      # skill -> fine-tuning from the base on that skill (plus REPLAY)
    "reverse": {"steps": 200, "lr": 6e-4},
    "sort": {"steps": 200, "lr": 2e-4},
    "cipher": {"steps": 200, "lr": 3e-4},
    "add": {"steps": 200, "lr": 4e-4},
}


# A 4-layer Llama, d=64: ~0.27M parameters, about 1.1 MB per model in float32. Written out here (not taken from
# ArchSpec's repr) so that the world's hash changes with these numbers only, not when ArchSpec gains a field.
SPEC = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 256, "num_layers": 4, "num_heads": 4,
        "num_kv_heads": 4, "head_dim": 16, "rms_norm_eps": 1e-6, "max_position_embeddings": 64}


def spec() -> ArchSpec:
    return ArchSpec(vocab_size=len(vocab.WORDS), **SPEC,
                    inert=(("bos_token_id", "1"), ("eos_token_id", "2"), ("pad_token_id", "0")))


def as_dict() -> dict:
    return {"skills": SKILLS, "seq_len": SEQ_LEN, "train_rows": TRAIN_ROWS, "batch": BATCH, "base": BASE,
            "base_short": BASE_SEES_SHORT_ONLY, "replay": REPLAY, "specialists": SPECIALISTS, "spec": SPEC,
            "vocab": vocab.WORDS}
