"""The fitness of an lm-eval task: its requests answered on device, scored by lm-eval's code through one callback.

`responses(params)` is pure device work: every loglikelihood row teacher-forced (jaxmerge.fitness.score: summed
log-probability of the continuation and whether greedy decoding would emit it, HFLM's `is_greedy`) and every
generate_until prompt decoded greedily for max_gen_toks (jaxmerge.fitness.generate), in chunks under
`lax.map`. `per_item` sends them to the host in ONE `jax.pure_callback` per candidate (results.py: lm-eval's
filters and process_results) and gets the per-document metric back; `fitness` is their (weighted) mean. The
arrays are constants shared by every candidate, so the population never recompiles.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmerge.errors import expect
from jaxmerge.fitness.chunking import flattened
from jaxmerge.fitness.generate import Decoder, greedy_queue
from jaxmerge.fitness.lmeval.prepare import LmEvalPrepared
from jaxmerge.fitness.lmeval.results import doc_scores
from jaxmerge.fitness.score import score


class LmEvalFitness(NamedTuple):
    fitness: Callable      # (params, key=None) -> f32, higher is better
    per_item: Callable     # params -> [D] f32 per-document metric (sign applied)
    responses: Callable    # params -> (logprob [R], greedy [R], tokens [G, T], lengths [G]) on device
    prepared: LmEvalPrepared
    weights: np.ndarray
    measures: Callable     # params -> (fitness, mean generated tokens over the generate_until requests, or 0)


def check_ids(prepared: LmEvalPrepared, vocab_size: int) -> None:
    """Every token id the model reads is below its vocab_size (a foreign tokenizer is refused by name)."""
    for kind, arrays in (("loglikelihood", prepared.loglik), ("generate_until", prepared.generate)):
        if arrays:
            ids = arrays["tokens"][arrays["mask"] > 0]
            expect(int(ids.max(initial=0)) < vocab_size and int(ids.min(initial=0)) >= 0,
                   f"lm_eval task {prepared.name}: {kind} requests: expected token ids below the model's "
                   f"vocab_size {vocab_size}, found id {int(ids.max())} (the tokenizer does not belong to this model)")


def make_responses(spec, prepared: LmEvalPrepared, decoder: Decoder) -> Callable:
    eos = np.asarray(prepared.eos or (-1,), np.int32)
    n_ll, n_gen = len(prepared.loglik_rows), len(prepared.generate_rows)

    def responses(params):
        logprob, is_greedy = jnp.zeros((1,), jnp.float32), jnp.zeros((1,), bool)
        tokens, lengths = jnp.zeros((1, 1), jnp.int32), jnp.zeros((1,), jnp.int32)
        if n_ll:
            out = jax.lax.map(lambda c: score(spec, params, c["tokens"], c["mask"], c["target"], decoder=decoder),
                              prepared.loglik)
            logprob, is_greedy = out.logprob.reshape(-1)[:n_ll], out.greedy.reshape(-1)[:n_ll]
        if n_gen:
            steps = prepared.gen.max_gen_toks
            rows = prepared.generate["tokens"].shape[1]  # [chunks, batch, ...]: a queue of `batch` rows
            out = greedy_queue(spec, params, flattened(prepared.generate), eos, rows=rows, max_new_tokens=steps,
                               pad=prepared.pad, decoder=decoder, stops=prepared.stops)
            tokens, lengths = out.tokens[:n_gen], out.lengths[:n_gen]
        return logprob, is_greedy, tokens, lengths

    return responses


def host_scorer(prepared: LmEvalPrepared, tokenizer) -> Callable:
    """Callback: responses with any leading batch axes (vmap broadcasts them) -> [..., D] float32."""
    def scores(logprob, is_greedy, tokens, lengths):
        logprob, is_greedy, tokens, lengths = (np.asarray(x) for x in (logprob, is_greedy, tokens, lengths))
        lead = lengths.shape[:-1]
        flat = [x.reshape(-1, *x.shape[len(lead):]) for x in (logprob, is_greedy, tokens, lengths)]
        rows = [doc_scores(prepared, tokenizer, *(x[b] for x in flat)) for b in range(flat[0].shape[0])]
        return np.stack(rows).reshape(*lead, prepared.n).astype(np.float32)
    return scores


def make_lmeval_fitness(spec, prepared: LmEvalPrepared, tokenizer, *, decoder: Decoder = Decoder(),
                        weights: np.ndarray | None = None) -> LmEvalFitness:
    check_ids(prepared, decoder.arch(spec).vocab_size)
    weights = np.ones(prepared.n, np.float32) if weights is None else np.asarray(weights, np.float32)
    responses, host = make_responses(spec, prepared, decoder), host_scorer(prepared, tokenizer)

    def per_item(params):
        shape = jax.ShapeDtypeStruct((prepared.n,), jnp.float32)
        return jax.pure_callback(host, shape, *responses(params), vmap_method="broadcast_all")

    def measures(params):
        got = responses(params)
        shape = jax.ShapeDtypeStruct((prepared.n,), jnp.float32)
        per = jax.pure_callback(host, shape, *got, vmap_method="broadcast_all")
        value = (jnp.sum(weights * per) / jnp.sum(weights)).astype(jnp.float32)
        return value, jnp.mean(got[3].astype(jnp.float32)) if prepared.generate_rows else jnp.float32(0)

    def fitness(params, key=None):
        return measures(params)[0]

    return LmEvalFitness(fitness, per_item, responses, prepared, weights, measures)
