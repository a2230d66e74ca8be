"""A character-level tokenizer for the tiny test models (vocab 97, ids 0/1/2 = pad/bos/eos as in tests/tiny.py).

One character per token, so decoded completions are exact strings and prompts of different lengths are easy
to make. Built with `tokenizers`, wrapped in PreTrainedTokenizerFast and saved into the model directory, so
AutoTokenizer loads it offline like a real checkpoint's tokenizer.
"""
from __future__ import annotations

from pathlib import Path

CHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ +-*/=.,:;?!()\n'\""


def add_char_tokenizer(model_dir: Path, vocab_size: int = 97) -> Path:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for c in CHARS:
        vocab.setdefault(c, len(vocab))
    for i in range(len(vocab), vocab_size):
        vocab[f"<x{i}>"] = i
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.save_pretrained(str(model_dir))
    return Path(model_dir)
