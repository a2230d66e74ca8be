"""Every number that shapes the demo's trained models, in one place (its hash names the trained world).

Why these numbers: the base is pretrained on a mixture of all skills but only on their shorter inputs (3-4
letters), so it does every skill partly; that is the regime where fine-tunes stay near their base and merging
works at all (a base that knows nothing of a skill lets its specialist drift far, and every merge then fails).
The base also learns the composed op cipher(sort(x)) at 3-4 letters (tasks.COMPOSED), so it has a circuit that
runs sort then cipher; the target is that op at 5 letters, where it needs the sort specialist's and the cipher
specialist's longer-input skills at once (the "length lever", tools/composed_world_probe.py). Specialists mix a
replay share of the base's data into their own skill's data, again to stay close; reverse and add are the
distracting sources that dilute a uniform merge, as in the paper's three sources.
"""
from __future__ import annotations

from jaxmerge.arch import ArchSpec
from jaxmerge.demo import vocab
from jaxmerge.demo.tasks import SINGLE

SKILLS = SINGLE      # one specialist each
SEQ_LEN = 18         # <bos> Q: cipher sort + 5 letters, newline, A:, 5 letters, newline, <eos> = 18 tokens
TRAIN_ROWS = 6000    # per skill, disjoint from dev and test (add has 11100 prompts in all)
COMPOSED_ROWS = 4000  # the base's cipher(sort(x)) rows at 3-4 letters (about what it sees of each single skill)
BATCH = 64
BASE = {"steps": 400, "lr": 3e-3}
BASE_SEES_SHORT_ONLY = True  # the base never sees a skill's longest inputs (see build.short_rows)
REPLAY = 0.5         # specialists' data: their skill plus this share (of TRAIN_ROWS) of the base's data
# Rows per skill. dev + dev_extra (256) is what the search sees; dev_extra is drawn after the train split, and the
# first two sizes shape the train split (build.training_data), so they stay as the shipped models were trained.
# (Not part of `as_dict`: the trained models do not depend on the dev_extra size.)
SPLIT_SIZES = {"dev": 64, "test": 250, "dev_extra": 192}
TARGET_SIZES = {"dev": 512, "test": 500}  # the composed op at 5 letters: the search's dev rows, held-out test rows
SPECIALISTS = {      # skill -> fine-tuning from the base on that skill (plus REPLAY)
    "reverse": {"steps": 200, "lr": 6e-4},
    "sort": {"steps": 200, "lr": 3e-4},
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
    return {"skills": SKILLS, "seq_len": SEQ_LEN, "train_rows": TRAIN_ROWS, "composed_rows": COMPOSED_ROWS,
            "batch": BATCH, "base": BASE,
            "base_short": BASE_SEES_SHORT_ONLY, "replay": REPLAY, "specialists": SPECIALISTS, "spec": SPEC,
            "vocab": vocab.WORDS}
