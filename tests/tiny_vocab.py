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

from tests.merge_oracle import read_tensors, ulps

SPECIALS = ["<unk>", "<s>", "</s>"]
BASE_TOKENS = SPECIALS + [f"t{i}" for i in range(94)]  # 97 tokens: the tiny models' vocab_size
VOCAB_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")
TEXT = "t3 n0 <|im_start|> t7 t5 n2 m0 zz t60 _tok_5 <|im_end|>"


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


def tokenizer_of(out):
    import transformers
    return transformers.AutoTokenizer.from_pretrained(str(out))


def compare_by_token(ours_dir, theirs_dir, ulp: int | None = None, tol: float = 1e-5) -> None:
    """Every tensor of two outputs equal: vocabulary tensors row by token (a union's ids may differ), padding rows
    as rows; within `tol` relative, or `ulp` 16-bit units; the vocabularies, config.json's vocab_size and the
    tokenization of a text equal."""
    ours, theirs = read_tensors(ours_dir), read_tensors(theirs_dir)
    tj, tm = tokenizer_of(ours_dir), tokenizer_of(theirs_dir)
    vj, vm = tj.get_vocab(), tm.get_vocab()
    assert sorted(vj) == sorted(vm) and sorted(ours) == sorted(theirs)
    assert tj.convert_ids_to_tokens(tj(TEXT).input_ids) == tm.convert_ids_to_tokens(tm(TEXT).input_ids)
    rows = json.loads((theirs_dir / "config.json").read_text())["vocab_size"]
    assert json.loads((ours_dir / "config.json").read_text())["vocab_size"] == rows
    for name, ref in theirs.items():
        mine = ours[name]
        assert mine.shape == ref.shape and mine.dtype == ref.dtype, name
        if name in VOCAB_TENSORS:
            tokens = sorted(vm)
            mine = np.concatenate([mine[[vj[t] for t in tokens]], mine[len(tokens):]])
            ref = np.concatenate([ref[[vm[t] for t in tokens]], ref[len(tokens):]])
        if ulp is None:
            gap = np.abs(mine.astype(np.float64) - ref).max() / max(np.abs(ref.astype(np.float64)).max(), 1e-12)
            assert gap <= tol, f"{name} differs by {gap:.2e} relative"
        else:
            assert (ulps(mine, ref) <= ulp).all(), name


def add_bpe_tokenizer(path: Path, size: int, added: tuple[str, ...] = ()) -> Path:
    """mergekit's test tokenizer, rebuilt: a BPE vocabulary (no merges) of <unk> <s> </s> _tok_3 .. _tok_{size-1}
    in a LlamaTokenizerFast, plus `added` tokens; saved into `path`."""
    import tempfile

    import transformers
    from tokenizers import Tokenizer
    tokens = (SPECIALS + [f"_tok_{i}" for i in range(3, size)])[:size]
    doc = {"version": "1.0", "model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(tokens)}, "merges": []},
           "added_tokens": []}
    with tempfile.TemporaryDirectory() as tmp:
        Tokenizer.from_str(json.dumps(doc)).save(f"{tmp}/tokenizer.json")
        tokenizer = transformers.LlamaTokenizerFast(tokenizer_file=f"{tmp}/tokenizer.json")
    tokenizer.add_tokens(list(added))
    tokenizer.save_pretrained(str(path))
    return Path(path)
