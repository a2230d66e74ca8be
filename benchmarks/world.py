"""A benchmark world built in memory: a random Llama base, fine-tunes of it, a character tokenizer, a task.

Benchmarks must not import tests/ (it is not installed), and large points of a scaling curve must not go
through disk: the sources are numpy pytrees in jaxmerge's canonical layout, made straight from an `ArchSpec`.
The fine-tunes are base + N(0, scale) noise, which is what merging is for. The task is teacher-forced
log-likelihood of random character answers after random character prompts: every candidate does the work a
real evaluation does (a forward over every item, a log-softmax over the vocabulary), with no host round trip.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 +-=."


class World(NamedTuple):
    spec: object        # ArchSpec
    base: dict          # canonical params (numpy float32)
    sources: list       # fine-tunes of base, canonical params
    prepared: object    # jaxmerge.fitness.Prepared (loglik)
    tokenizer: object


def llama_spec(hidden: int, layers: int, vocab: int, head_dim: int = 32):
    """A Llama ArchSpec of the given size; GQA with half as many kv heads, MLP ~2.75x hidden."""
    from jaxmerge.arch import ArchSpec
    heads = max(hidden // head_dim, 1)
    return ArchSpec.from_hf_config({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": vocab,
        "hidden_size": hidden, "intermediate_size": 8 * (hidden * 11 // 32), "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": max(heads // 2, 1), "head_dim": head_dim,
        "rms_norm_eps": 1e-5, "max_position_embeddings": 512, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0})


def random_params(spec, rng: np.random.Generator) -> dict:
    """Random canonical params: N(0, 0.02) matrices, norms near 1 (so norm handling matters)."""
    from jaxmerge.params import param_shapes

    def leaf(name, shape):
        if "norm" in name:
            return (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        return (0.02 * rng.standard_normal(shape)).astype(np.float32)
    shapes = param_shapes(spec)
    out = {k: leaf(k, s) for k, s in shapes.items() if k != "layers"}
    out["layers"] = {k: leaf(k, s) for k, s in shapes["layers"].items()}
    return out


def perturbed(params: dict, rng: np.random.Generator, scale: float) -> dict:
    import jax
    return jax.tree.map(lambda x: x + (scale * rng.standard_normal(x.shape)).astype(np.float32), params)


def char_tokenizer():
    """One token per character (ids 0/1/2/3 = pad/bos/eos/unk), BOS added to prompts, offline."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{c: 4 + i for i, c in enumerate(CHARS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def loglik_task(tokenizer, n_items: int, length: int, item_batch: int, rng: np.random.Generator):
    """`n_items` prompts with answers, about `length` characters in all per item, prepared for loglik."""
    from jaxmerge.fitness import Item, Task, prepare

    def text(n):
        return "".join(rng.choice(list(CHARS[:36]), int(n)))
    items = [Item(text(rng.integers(length // 2, 3 * length // 4)), text(rng.integers(2, length // 4)))
             for _ in range(n_items)]
    task = Task("bench", (), template="{prompt}", metric="loglik")
    return prepare(task, items, tokenizer, item_batch=item_batch)


def build_world(hidden: int, layers: int, vocab: int, *, sources: int = 3, items: int = 32, length: int = 48,
                item_batch: int = 16, scale: float = 0.01, seed: int = 0) -> World:
    rng = np.random.default_rng(seed)
    spec = llama_spec(hidden, layers, vocab)
    base = random_params(spec, rng)
    fine_tunes = [perturbed(base, rng, scale) for _ in range(sources)]
    tokenizer = char_tokenizer()
    return World(spec, base, fine_tunes, loglik_task(tokenizer, items, length, item_batch, rng), tokenizer)
