"""Item chunks for `lax.map`: generative tasks grouped by prompt length, so a chunk pads only to its own width.

Every chunk of one `lax.map` has one shape, so a task whose prompts range from 8 to 500 tokens would pad every
chunk (prefill and KV cache) to the longest. Here a generative task's items are sorted by prompt length and cut
into chunks of `item_batch`; each chunk gets the width of its longest prompt rounded up to PAD_TO times a power
of two (at most the task's width), and consecutive chunks of one width form a group (decoded as one queue;
a width of fewer than QUEUE_CHUNKS chunks joins the next wider group).
Shapes stay static and the fitness stays one compiled function (one loop per group: a few, as widths double);
`slot` maps each item back to its place in the groups' concatenated outputs. Rows are left-padded, so a narrower
chunk is the same rows with leading pad columns dropped (positions come from the mask: unchanged).
Teacher-forced tasks keep one group in item order.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxmerge.fitness.prepare import Prepared
from jaxmerge.fitness.tokenize import PAD_TO

TOKEN_AXIS = ("tokens", "mask")  # the generative arrays whose last axis is the prompt
# A generative group of fewer chunks joins the next wider group: a group is decoded as one queue of item_batch
# rows (jaxmerge.fitness.generate.greedy_queue), and a row takes the next item of its own group only. In 16 items
# of answers 8-256 tokens, groups of 1, 1 and 2 chunks made the queue 1.01-1.17x faster than chunks, one group
# 1.27-1.52x (two runs each).
QUEUE_CHUNKS = 4


class Chunks(NamedTuple):
    groups: tuple[dict[str, np.ndarray], ...]  # each {name: [num_chunks, item_batch, ...]}, one width per group
    slot: np.ndarray                           # [N] each item's position in the groups' concatenated outputs
    widths: tuple[int, ...]                    # per chunk, its prompt width (teacher-forced: the row width)


def bucket(length: int, cap: int) -> int:
    """PAD_TO times the next power of two that holds `length`, at most `cap`."""
    units = -(-max(int(length), 1) // PAD_TO)
    return min(cap, PAD_TO * (1 << (units - 1).bit_length()))


def joined(widths: list[int], min_chunks: int) -> tuple[int, ...]:
    """Non-decreasing chunk widths where a width of fewer than `min_chunks` chunks takes the next wider one."""
    for width, wider in zip(sorted(set(widths)), sorted(set(widths))[1:]):
        if widths.count(width) < min_chunks:
            widths = [wider if w == width else w for w in widths]
    return tuple(widths)


def chunks(prepared: Prepared, min_chunks: int = QUEUE_CHUNKS) -> Chunks:
    """The prepared arrays as groups of [num_chunks, item_batch, ...] chunks (module doc)."""
    b, arrays = prepared.item_batch, prepared.arrays
    n_padded = next(iter(arrays.values())).shape[0]
    if not prepared.task.generative:
        width = next(iter(arrays.values())).shape[-1]
        return Chunks(({k: v.reshape(-1, b, *v.shape[1:]) for k, v in arrays.items()},),
                      np.arange(prepared.n), (width,) * (n_padded // b))
    lengths = arrays["mask"][:prepared.n].sum(axis=-1)
    order = np.argsort(lengths, kind="stable")
    order = np.concatenate([order, np.full(n_padded - prepared.n, order[-1])])  # pad with the longest item
    cap = arrays["tokens"].shape[-1]
    widths = joined([bucket(lengths[order[c * b:(c + 1) * b]].max(), cap) for c in range(n_padded // b)],
                    min_chunks)
    groups, start = [], 0
    for width in dict.fromkeys(widths):  # non-decreasing: each width's chunks are consecutive
        count = widths.count(width)
        rows = order[start * b:(start + count) * b]
        groups.append({k: (v[rows][..., -width:] if k in TOKEN_AXIS else v[rows]).reshape(count, b, *(
            (width,) if k in TOKEN_AXIS else v.shape[1:])) for k, v in arrays.items()})
        start += count
    slot = np.empty(prepared.n, np.int64)
    slot[order[:prepared.n]] = np.arange(prepared.n)
    return Chunks(tuple(groups), slot, widths)


def flattened(group: dict) -> dict:
    """A group's [num_chunks, item_batch, ...] arrays as [items, ...]: what a decoding queue takes."""
    return {k: v.reshape(-1, *v.shape[2:]) for k, v in group.items()}


def padded_fraction(prepared: Prepared, grouped: bool = True, min_chunks: int = QUEUE_CHUNKS) -> float:
    """Share of the prompt token slots the chunks hold that are padding (items repeated to fill the last chunk
    count as real): 1 - real tokens / slots, with the chunks' own widths or (`grouped` False) the task's."""
    if not grouped:
        return 1.0 - float(prepared.arrays["mask"].sum()) / prepared.arrays["mask"].size
    groups = chunks(prepared, min_chunks).groups
    return 1.0 - sum(float(g["mask"].sum()) for g in groups) / sum(g["mask"].size for g in groups)
