"""The demo world's word-level tokenizer: one token per word, so answers decode to exactly the words trained.

Word-level (not BPE) because the synthetic tasks are sequences of symbols: a symbol that is always one token
keeps the models tiny, makes exact match unambiguous, and lets `decode` reproduce an answer string verbatim.
Spaces separate words and are dropped; a newline is its own token (it ends every answer, and is the stop string).
"""
from __future__ import annotations

import string
from pathlib import Path

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
STRUCTURE = ("\n", "Q:", "A:")
OPS = ("reverse", "sort", "cipher", "add")
LETTERS = tuple(string.ascii_lowercase[:16])
NUMBERS = tuple(str(i) for i in range(37))  # sums of up to four digits
WORDS = SPECIALS + STRUCTURE + OPS + LETTERS + NUMBERS
PAD, BOS, EOS, UNK = 0, 1, 2, 3


def build_tokenizer():
    """A `tokenizers.Tokenizer` over WORDS that prepends <bos> (as the models were trained to expect)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(" ", "removed"), pre_tokenizers.Split("\n", "isolated")])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", BOS)])
    return tok


def save_tokenizer(out_dir: str | Path) -> None:
    """Write tokenizer.json + tokenizer_config.json (+ special tokens) that AutoTokenizer loads offline."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=build_tokenizer(), bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>", padding_side="left")
    fast.save_pretrained(str(out_dir))
