"""`make_fitness`: one pure, vmappable function per task, `fitness(params, key=None) -> float32`, higher is better.

The evolution engine puts `fitness` inside its jitted generation step and vmaps (or lax.maps) it over the
population; the batch of items is a constant shared by every candidate, so candidates never recompile.
Items run item_batch at a time, bounding activation memory: teacher-forced tasks in chunks under `lax.map`,
generative ones as a queue of item_batch rows, a row taking the next item as soon as its own answer has ended
(jaxmerge.fitness.generate.greedy_queue), once per group of prompts of one padded width
(jaxmerge.fitness.chunking).

- loglik, perplexity, choice: pure device math on teacher-forced log-probabilities.
- exact_match_number, exact_match: greedy decoding on device, then the completions are decoded and compared on
  the host through `jax.pure_callback(..., vmap_method="broadcast_all")`, so fitness stays one compiled function.
- greedy_match: 1 iff greedy decoding emits exactly the answer's tokens and then an end token (the task's
  single-token stop strings or EOS), decided teacher-forced in ONE forward pass over prompt + answer + end (see
  score.py): the same verdict as decoding token by token, without the decode steps or a host callback (so the
  compiled step also lands in the persistent compilation cache). It compares tokens, not normalised text: it
  equals exact_match whenever the only token sequence that normalises to the answer is the answer's own tokens
  (a word-level vocabulary, as in the demo; tests/test_fitness_greedy_match.py checks it item by item).

Per-item scores (`per_item`) are 0/1 correctness for exact_match*/greedy_match/choice and the mean answer-token
log-prob for loglik/perplexity; `aggregate` turns them (with optional item weights, see subset.py) into the task metric,
and the fitness is that metric with perplexity negated. Greedy and teacher-forced scoring are deterministic:
`key` is accepted so that every fitness in jaxmerge has one signature, and is unused here.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmerge.errors import expect
from jaxmerge.fitness.chunking import chunks, flattened
from jaxmerge.fitness.generate import Decoder, Generated, greedy_queue
from jaxmerge.fitness.limits import check_all
from jaxmerge.fitness.metrics import truncate
from jaxmerge.fitness.prepare import Prepared
from jaxmerge.fitness.score import Scored, score
from jaxmerge.fitness.textscore import item_scorer


class Fitness(NamedTuple):
    fitness: Callable     # (params, key=None) -> f32 scalar, higher is better
    per_item: Callable    # (params) -> [N] f32 per-item scores
    outputs: Callable     # (params, chunk) -> Generated | Scored: raw outputs of an item chunk (jit it)
    scores: Callable      # (outputs, chunk) -> per-item f32 scores of that chunk
    prepared: Prepared
    weights: np.ndarray   # [N] item weights of the aggregate
    measures: Callable = None  # (params) -> (fitness, mean answer length in tokens: generative tasks, else 0)


def aggregate(metric: str, scores, counts, weights):
    """Task metric from per-item scores: a weighted mean, or corpus perplexity over answer tokens."""
    if metric == "perplexity":
        tokens = weights * counts
        return jnp.exp(-jnp.sum(tokens * scores) / jnp.sum(tokens))
    return jnp.sum(weights * scores) / jnp.sum(weights)


def completion(tokenizer, prepared: Prepared, tokens: np.ndarray, length: int) -> str:
    """Decoded text of one greedy completion, cut at the task's first stop string."""
    text = tokenizer.decode(np.asarray(tokens[:length]).tolist(), skip_special_tokens=True)
    return truncate(text, prepared.task.stop)


def text_scorer(tokenizer, prepared: Prepared) -> Callable:
    """Host callback: generated tokens [..., B, T], lengths and item indices [..., B] -> f32 scores [..., B]
    (the task's metric and language gate: jaxmerge.fitness.textscore)."""
    metric = item_scorer(prepared.task, tokenizer)

    def scores(tokens, lengths, index):
        # Host numpy first: the callback may receive device arrays, and any JAX op dispatched from inside a
        # callback (even iterating an array) waits on the device that is running the callback: a deadlock
        # with several devices, and one tiny dispatch per item with one.
        tokens, lengths, index = np.asarray(tokens), np.asarray(lengths), np.asarray(index)
        flat = zip(tokens.reshape(-1, tokens.shape[-1]), lengths.reshape(-1), index.reshape(-1))
        out = [metric(completion(tokenizer, prepared, t, n), prepared.items[i], int(i)) for t, n, i in flat]
        return np.asarray(out, np.float32).reshape(lengths.shape)

    return scores


def make_fitness(spec, prepared: Prepared, tokenizer=None, *, decoder: Decoder = Decoder(),
                 weights: np.ndarray | None = None) -> Fitness:
    """Build the task's fitness. `tokenizer` is needed only for text metrics; `weights` default to equal.
    The prepared arrays are checked against the model first (token ids, positions, memory: limits.py)."""
    check_all(decoder.arch(spec), prepared)
    task = prepared.task
    weights = np.ones(prepared.n, np.float32) if weights is None else np.asarray(weights, np.float32)
    if task.generative:
        outputs, scores = _generative(spec, prepared, tokenizer, decoder)
    else:
        outputs, scores = _teacher_forced(spec, prepared, decoder)
    data = chunks(prepared)

    def scored(params):
        """[N] per-item scores and [N] answer lengths in tokens (generative tasks; 0 otherwise)."""
        def one(chunk):
            out = outputs(params, chunk)
            length = out.lengths if task.generative else jnp.zeros(chunk["tokens"].shape[:1], jnp.int32)
            return scores(out, chunk), length.astype(jnp.float32)
        if task.generative:  # one queue of rows per prompt width: a row takes the next item when its own ends
            parts = [one(flattened(group)) for group in data.groups]
        else:
            parts = [jax.lax.map(one, group) for group in data.groups]  # one loop per row width
        per, lengths = (jnp.concatenate([p[i].reshape(-1) for p in parts])[data.slot] for i in (0, 1))
        return per, lengths

    def per_item(params):
        return scored(params)[0]

    def measures(params):
        per, lengths = scored(params)
        value = aggregate(task.metric, per, prepared.counts, weights)
        value = (-value if task.metric == "perplexity" else value).astype(jnp.float32)
        return value, (jnp.sum(weights * lengths) / jnp.sum(weights)).astype(jnp.float32)

    def fitness(params, key=None):
        return measures(params)[0]

    return Fitness(fitness, per_item, outputs, scores, prepared, weights, measures)


def _generative(spec, prepared: Prepared, tokenizer, decoder: Decoder):
    expect_tokenizer(tokenizer, prepared)
    host = text_scorer(tokenizer, prepared)
    eos = np.asarray(prepared.eos or (-1,), np.int32)

    def outputs(params, items) -> Generated:
        """Greedy completions of any number of items, item_batch rows at a time (greedy_queue binds each
        prefill's items itself); a chunk of item_batch items is decoded as one batch."""
        return greedy_queue(spec, params, items, eos, rows=prepared.item_batch,
                            max_new_tokens=prepared.task.max_new_tokens, pad=prepared.pad, decoder=decoder,
                            stops=prepared.stops)

    def scores(out: Generated, chunk):
        shape = jax.ShapeDtypeStruct(out.lengths.shape, jnp.float32)
        return jax.pure_callback(host, shape, out.tokens, out.lengths, chunk["index"], vmap_method="broadcast_all")

    return outputs, scores


def _teacher_forced(spec, prepared: Prepared, decoder: Decoder):
    ends = np.asarray(prepared.ends, np.int32) if prepared.ends else None

    def outputs(params, chunk) -> Scored:
        params = decoder.bind(params, chunk)
        b, k, s = chunk["tokens"].shape
        flat = [chunk[name].reshape(b * k, s) for name in ("tokens", "mask", "target")]
        return jax.tree.map(lambda x: x.reshape(b, k), score(spec, params, *flat, decoder=decoder, ends=ends))

    def scores(out: Scored, chunk):
        if prepared.task.metric == "greedy_match":
            return out.greedy[:, 0].astype(jnp.float32)
        if prepared.task.metric == "choice":
            logprob = jnp.where(chunk["valid"] > 0, out.logprob, -jnp.inf)
            return (jnp.argmax(logprob, axis=-1) == chunk["answer"]).astype(jnp.float32)
        return out.logprob[:, 0] / jnp.maximum(out.count[:, 0], 1.0)

    return outputs, scores


def expect_tokenizer(tokenizer, prepared: Prepared) -> None:
    expect(tokenizer is not None, f"task {prepared.task.name}: metric {prepared.task.metric} decodes text and "
                                  "needs the tokenizer, found none")
