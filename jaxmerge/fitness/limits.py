"""Checks of prepared task arrays against the model, on the host, before anything is compiled or allocated.

- Token ids: inside jit an id >= vocab_size gathers garbage (NaN or a clamped row) and the score is silently
  wrong; every id the model will read (prompts, continuations, the pad id) must be below vocab_size.
- Positions: prompt + max_new_tokens (generative) or the longest scored row must fit max_position_embeddings;
  otherwise a 10**9-token generation asks for a KV cache nobody has.
- Memory: one item chunk's activations (logits dominate: rows x length x vocab floats) plus, when generating,
  the KV cache, estimated from shapes and compared with the memory available (jaxmerge.runtime).
Each refusal is one line naming the task and what to change.
"""
from __future__ import annotations

import numpy as np

from jaxmerge.errors import expect
from jaxmerge.fitness.prepare import Prepared
from jaxmerge.kernels import LONG_QUERIES, QUERY_BLOCK

GB = 2**30
FLOAT = 4  # bytes: scores and logits are float32


def check_all(spec, prepared: Prepared, copies: int = 1) -> None:
    """Every check below; `copies` candidates are evaluated at once (evolve's memory.batch_size)."""
    check_token_ids(spec, prepared)
    check_positions(spec, prepared)
    check_memory(spec, prepared, copies)


def check_token_ids(spec, prepared: Prepared) -> None:
    tokens, mask = prepared.arrays["tokens"], prepared.arrays["mask"]
    bad = np.argwhere(((tokens >= spec.vocab_size) | (tokens < 0)) & (mask > 0))
    task = prepared.task.name
    if len(bad):
        where = tuple(bad[0])
        raise_ids(task, f"item {where[0]}", int(tokens[where]), spec.vocab_size)
    if not 0 <= prepared.pad < spec.vocab_size:
        raise_ids(task, "the pad token", prepared.pad, spec.vocab_size)


def raise_ids(task: str, where: str, token: int, vocab: int) -> None:
    expect(False, f"task {task}: {where}: expected token ids below the model's vocab_size {vocab}, found id "
                  f"{token} from the tokenizer (the tokenizer does not belong to this model)")


def longest(prepared: Prepared) -> int:
    """The most real (unpadded) tokens in any row."""
    return int(prepared.arrays["mask"].sum(axis=-1).max())


def check_positions(spec, prepared: Prepared) -> None:
    task, limit = prepared.task, spec.max_position_embeddings
    if task.generative:
        need = longest(prepared) + task.max_new_tokens
        expect(need <= limit, f"task {task.name}: expected the longest prompt ({longest(prepared)} tokens) plus "
                              f"max_new_tokens ({task.max_new_tokens}) within the model's max_position_embeddings "
                              f"{limit}, found {need}")
    else:
        expect(longest(prepared) <= limit, f"task {task.name}: expected prompt + answer within the model's "
                                           f"max_position_embeddings {limit}, found {longest(prepared)} tokens")


def estimate_bytes(spec, prepared: Prepared) -> int:
    """Bytes of one item chunk's largest live arrays, counted once each (an under-estimate on purpose: only a
    chunk that cannot fit is refused): float32 logits, MLP activations, attention scores, and the KV cache
    when generating."""
    shape = prepared.arrays["tokens"].shape
    rows = prepared.item_batch * (shape[1] if len(shape) == 3 else 1)
    length = shape[-1] + (prepared.task.max_new_tokens if prepared.task.generative else 0)
    logits = rows * length * spec.vocab_size
    mlp = 2 * rows * length * spec.intermediate_size
    queries = length if length <= LONG_QUERIES else QUERY_BLOCK  # a long call attends in query blocks
    attention = rows * spec.num_heads * queries * length
    cache = 2 * spec.num_layers * rows * length * spec.kv_size if prepared.task.generative else 0
    return FLOAT * (logits + mlp + attention + cache)


def check_memory(spec, prepared: Prepared, copies: int = 1) -> None:
    from jaxmerge.runtime import available_bytes
    need, free = copies * estimate_bytes(spec, prepared), available_bytes()
    expect(need <= free, f"task {prepared.task.name}: expected a chunk of {prepared.item_batch} items to fit in "
                         f"memory, found it needs about {need / GB:.1f} GB with {free / GB:.1f} GB available "
                         "(lower --batch / fitness.item_batch)")
