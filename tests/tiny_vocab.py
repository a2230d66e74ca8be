"""Tiny models whose vocabularies disagree (built here, no network): a tokenizer per model and embedding rows
that follow it, so that a merge must align rows by token, not by index.

    base = make_tiny_model(...); add_tokenizer(base, BASE_TOKENS)
    other = vocab_variant(root / "other", base, tokens, rows=96, seed=3)   # rows > len(tokens): padding rows
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from tests.merge_oracle import read_tensors

SPECIALS = ["<unk>", "<s>", "</s>"]
BASE_TOKENS = SPECIALS + [f"t{i}" for i in range(94)]  # 97 tokens: the tiny models' vocab_size
VOCAB_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")


def add_tokenizer(path: Path, tokens: list[str], added: tuple[str, ...] = (), template: str | None = None) -> Path:
    """A word-level tokenizer (a token per whitespace-separated word) with `tokens` at ids 0.., then `added`
    special tokens, saved with transformers into `path`."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers
    backend = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                                     eos_token="</s>")
    if added:
        tokenizer.add_tokens(list(added), special_tokens=True)
    if template is not None:
        tokenizer.chat_template = template
    tokenizer.save_pretrained(str(path))
    return Path(path)


def vocab_variant(path: Path, base: Path, tokens: list[str], rows: int | None = None, seed: int = 0,
                  added: tuple[str, ...] = (), scale: float = 0.02) -> Path:
    """A fine-tune of `base` (every tensor + N(0, scale)) whose vocabulary is `tokens` (+ `added`): the row of a
    token base has is base's row of it (+ noise), a new token gets a random row; `rows` embedding rows in all
    (default: one per token), the extra ones random padding."""
    rng = np.random.default_rng(seed)
    base_vocab = json.loads((base / "tokenizer.json").read_text())["model"]["vocab"]
    tensors = {k: v + rng.normal(0, scale, v.shape).astype(v.dtype) for k, v in read_tensors(base).items()}
    everything = list(tokens) + list(added)
    rows = rows or len(everything)
    for name in VOCAB_TENSORS:
        table = tensors[name]
        new = rng.normal(0, 0.02, (rows, table.shape[1])).astype(table.dtype)
        for i, token in enumerate(everything):
            if token in base_vocab:
                new[i] = table[base_vocab[token]]
        tensors[name] = new
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((base / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "vocab_size": rows}))
    return add_tokenizer(path, list(tokens), added)
