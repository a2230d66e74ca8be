"""Items -> fixed-shape host arrays, once per (task, split, tokenizer): what the jitted fitness reads.

Generative metrics need left-padded prompts [N, P]. Teacher-forced metrics (loglik, perplexity, choice,
greedy_match) need K left-padded `context + continuation` rows per item [N, K, S] (K = 1, or the most choices
any item has; missing choices are rows with valid = 0). greedy_match's continuation is the answer and then an
end token (the task's first single-token stop string, else EOS), whose slot is marked 2 in `target`; `ends`
lists every token that ends a greedy completion there (single-token stop strings and EOS). N is padded up to a
multiple of the item batch by repeating the last item, so the item axis splits evenly into chunks for `lax.map`;
padded items are sliced off afterwards.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxmerge.errors import expect
from jaxmerge.fitness import tokenize as tk
from jaxmerge.fitness.metrics import last_number
from jaxmerge.fitness.tasks import Item, Task


class Prepared(NamedTuple):
    task: Task
    items: tuple[Item, ...]
    arrays: dict[str, np.ndarray]  # every array has a leading item axis of length n_padded
    counts: np.ndarray             # [N] target tokens per item (its correct choice), 1 for generative metrics
    item_batch: int
    pad: int
    eos: tuple[int, ...]
    ends: tuple[int, ...] = ()     # greedy_match: the tokens that end a completion (see end_tokens)
    stops: np.ndarray | None = None  # generative: stop strings as token ids [K, L] (see stop_patterns)

    @property
    def n(self) -> int:
        return len(self.items)


def prepare(task: Task, items: list[Item], tokenizer, *, fewshot_pool: list[Item] | None = None,
            item_batch: int = 16) -> Prepared:
    expect(len(items) > 0, f"task {task.name}: expected at least one item, found none")
    expect(task.images is None, f"task {task.name}: expected a text task here, found an image task (images: true "
                                "needs a vision-language model: jaxmerge.vlm.tasks.prepare_images)")
    expect(item_batch >= 1, f"expected item_batch >= 1, found {item_batch}")
    item_batch = min(item_batch, len(items))  # a bigger batch only pads: `--batch 10**9` must not allocate it
    expect(not task.fewshot or bool(fewshot_pool), f"task {task.name}: fewshot needs a fewshot_pool of items")
    if task.metric == "exact_match_number":
        for i, it in enumerate(items):
            expect(last_number(it.answer) is not None,
                   f"task {task.name}: item {i}: expected a number in the answer, found {it.answer!r}")
    if task.metric == "exact_match_number_paper":
        for i, it in enumerate(items):
            expect(plain_number(it.answer), f"task {task.name}: item {i}: expected a plain number as the answer "
                                            f"(the paper compares float(answer)), found {it.answer!r}")
    contexts = [tk.render(task, tokenizer, it, tk.fewshot_examples(task, fewshot_pool or [], it)) for it in items]
    pad = tk.pad_id(tokenizer)
    if task.generative:
        arrays, counts = _prompts(task, tokenizer, contexts, pad), np.ones(len(items), np.float32)
    else:
        arrays, counts = _scored(task, tokenizer, contexts, items, pad)
    n_padded = -(-len(items) // item_batch) * item_batch
    take = np.minimum(np.arange(n_padded), len(items) - 1)
    arrays = {k: v[take] for k, v in arrays.items()}
    ends = end_tokens(task, tokenizer) if task.metric == "greedy_match" else ()
    stops = stop_patterns(tokenizer, task.stop) if task.generative else None
    return Prepared(task, tuple(items), arrays, counts, item_batch, pad, tk.eos_ids(tokenizer), ends, stops)


def stop_patterns(tokenizer, stop: tuple[str, ...]) -> np.ndarray | None:
    """Stop strings as token ids, right-aligned in [K, L] (-1 before a shorter one): decoding ends a row once it
    has spelled one (jaxmerge.fitness.generate). Only stops that decode back to themselves are used, so a row is
    never ended by tokens whose text is not the stop string; the host still cuts every completion at the first
    stop string, so which stops end decoding early changes only the time it takes, never a completion."""
    rows = []
    for s in stop:
        ids = list(tokenizer(s, add_special_tokens=False)["input_ids"])
        if ids and tokenizer.decode(ids, skip_special_tokens=False) == s:
            rows.append(ids)
    if not rows:
        return None
    width = max(map(len, rows))
    return np.asarray([[-1] * (width - len(r)) + r for r in rows], np.int32)


def plain_number(text: str) -> bool:
    try:
        return np.isfinite(float(text))
    except ValueError:
        return False


def end_tokens(task: Task, tokenizer) -> tuple[int, ...]:
    """greedy_match: the gold end token first (the first stop string that is one token, else EOS), then every
    other token that ends a greedy completion (single-token stop strings, EOS ids)."""
    stops = [ids[0] for s in task.stop
             if len(ids := tk.encode_text(task, tokenizer, s)) == 1]
    ends = tuple(dict.fromkeys(stops + list(tk.eos_ids(tokenizer))))
    expect(bool(ends), f"task {task.name}: greedy_match needs a stop string that is one token or an EOS token to "
                       f"end the answer, found stop {list(task.stop)!r} and no EOS")
    return ends


def _prompts(task: Task, tokenizer, contexts: list[str], pad: int) -> dict[str, np.ndarray]:
    rows = [tk.encode_prompt(task, tokenizer, c) for c in contexts]
    tokens, mask = tk.left_pad(rows, tk.padded_length(max(map(len, rows))), pad)
    return {"tokens": tokens, "mask": mask, "index": np.arange(len(rows), dtype=np.int32)}


def _continuation(task: Task, tokenizer, context: str, option: str, where: str) -> list[int]:
    """The tokens of one option as it follows the context (non-empty)."""
    cont = tk.encode_text(task, tokenizer, tk.continuation(context, option))
    expect(len(cont) > 0, f"task {task.name}: {where}: expected a non-empty answer, found {option!r}")
    return cont


def _rows(task: Task, tokenizer, context: str, options: tuple[str, ...], end: list[int], where: str):
    """Per option of one item: context + continuation (+ end) tokens and their target marks."""
    ctx = tk.encode_prompt(task, tokenizer, context)
    rows, targets = [], []
    for option in options:
        cont = _continuation(task, tokenizer, context, option, where)
        expect(not end or len(cont) + 1 <= task.max_new_tokens,
               f"task {task.name}: {where}: greedy_match needs the answer and its end token within "
               f"max_new_tokens = {task.max_new_tokens}, found {len(cont)} + 1 tokens")
        rows.append(ctx + cont + end)
        targets.append([0] * len(ctx) + [1] * len(cont) + [2] * len(end))
    return rows, targets


def _scored(task: Task, tokenizer, contexts: list[str], items: list[Item], pad: int):
    """Rows of context + continuation tokens with a target mask over the continuation: [N, K, S] with K the
    most options any item has; an item with fewer gets empty rows (valid = 0) that scoring ignores."""
    options = [it.choices if task.metric == "choice" else (it.answer,) for it in items]
    k = max(map(len, options))
    end = list(end_tokens(task, tokenizer)[:1]) if task.metric == "greedy_match" else []
    rows, targets, counts = [], [], np.zeros(len(items), np.float32)
    for i, (context, opts) in enumerate(zip(contexts, options)):
        item_rows, item_targets = _rows(task, tokenizer, context, opts, end, f"item {i}")
        counts[i] = sum(t > 0 for t in item_targets[opts.index(items[i].answer)])
        rows += item_rows + [[]] * (k - len(opts))
        targets += item_targets + [[]] * (k - len(opts))
    length = tk.padded_length(max(map(len, rows)))
    tokens, mask = tk.left_pad(rows, length, pad)
    target, _ = tk.left_pad(targets, length, 0)
    n = len(items)
    answer = np.array([opts.index(it.answer) for it, opts in zip(items, options)], np.int32)
    valid = np.array([[j < len(o) for j in range(k)] for o in options], np.int32)
    return {"tokens": tokens.reshape(n, k, length), "mask": mask.reshape(n, k, length),
            "target": target.reshape(n, k, length), "valid": valid, "answer": answer}, counts
