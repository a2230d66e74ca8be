"""Greedy decoding as a queue (jaxmerge.fitness.generate.greedy_queue): rows refilled with the next item as soon
as theirs has ended give every item the tokens and lengths that decoding it in its own chunk gives, for plain
families (sliding windows; Phi-3's longrope, decoded in chunks) and a DFS layer path, with stop strings; one
compile whatever the items' lengths; and a row really is refilled before the longest answer ends. (A mixture
of experts is the same in every row schedule, and its compile alone took a minute here; its decoding is
checked against transformers in test_families.)"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmerge.dfs import path_spec, with_path
from jaxmerge.dfs.decoder import DFS_DECODER
from jaxmerge.dfs.sources import layout_for, pool_params
from jaxmerge.fitness.generate import greedy, greedy_queue
from jaxmerge.fitness.tokenize import left_pad
from jaxmerge.io import load
from tests.tiny import make_tiny_model

STEPS = 12


def prompts(n=7, seed=0, width=16):
    rng = np.random.default_rng(seed)
    return left_pad([rng.integers(3, 97, int(k)).tolist() for k in rng.integers(2, width + 1, n)], width, 0)


def varied_eos(spec, params, tokens, mask, decoder=None):
    """End tokens that end the items' answers at scattered steps: item i's token at step 2i (mod STEPS) of its
    free-running answer (a random model's greedy text never meets a fixed EOS)."""
    kw = {} if decoder is None else {"decoder": decoder}
    free = np.asarray(jax.jit(lambda t, m: greedy(spec, params, t, m, jnp.asarray([-1]), max_new_tokens=STEPS,
                                                  **kw).tokens)(tokens, mask))
    return np.unique([free[i, (2 * i + 1) % STEPS] for i in range(len(free))]).astype(np.int32)


def each_alone(spec, params, tokens, mask, eos, decoder=None, stops=None):
    """Every item decoded in a chunk of its own (the reference)."""
    kw = {} if decoder is None else {"decoder": decoder}
    fn = jax.jit(lambda t, m: greedy(spec, params, t, m, jnp.asarray(eos), max_new_tokens=STEPS, stops=stops, **kw))
    outs = [fn(tokens[i:i + 1], mask[i:i + 1]) for i in range(len(tokens))]
    return np.concatenate([o.tokens for o in outs]), np.concatenate([o.lengths for o in outs])


def queued(spec, params, tokens, mask, eos, rows, decoder=None, stops=None):
    kw = {} if decoder is None else {"decoder": decoder}
    fn = jax.jit(lambda t, m: greedy_queue(spec, params, {"tokens": t, "mask": m}, jnp.asarray(eos), rows=rows,
                                           max_new_tokens=STEPS, stops=stops, **kw))
    out = fn(tokens, mask)
    return np.asarray(out.tokens), np.asarray(out.lengths), fn


@pytest.mark.parametrize("family, rows", [("llama", (1, 3)), ("gemma2", (1, 3)), ("phi3", (1, 7))])
def test_each_item_gets_the_tokens_of_its_own_chunk(tmp_path, family, rows):
    """gemma2: sliding windows over per-row slots; phi3: longrope recomputes at a fixed step, so its items are
    decoded chunk by chunk (rows dividing the items)."""
    model = load(make_tiny_model(tmp_path / family, family, seed=1))
    tokens, mask = prompts()
    eos = varied_eos(model.spec, model.params, tokens, mask)
    want_tokens, want_lengths = each_alone(model.spec, model.params, tokens, mask, eos)
    assert len(set(want_lengths.tolist())) > 2  # answers of different lengths: rows free up at different steps
    for rows in rows:
        got_tokens, got_lengths, _ = queued(model.spec, model.params, tokens, mask, eos, rows)
        np.testing.assert_array_equal(got_lengths, want_lengths)
        np.testing.assert_array_equal(got_tokens, want_tokens)


def test_stops_and_one_compile_whatever_the_lengths(tmp_path):
    model = load(make_tiny_model(tmp_path / "m", "llama", seed=2))
    stops = jnp.asarray([[-1, 5], [7, 8]], jnp.int32)
    tokens, mask = prompts(seed=3)
    eos = varied_eos(model.spec, model.params, tokens, mask)
    want = each_alone(model.spec, model.params, tokens, mask, eos, stops=stops)
    got_tokens, got_lengths, fn = queued(model.spec, model.params, tokens, mask, eos, 2, stops=stops)
    np.testing.assert_array_equal(got_tokens, want[0])
    np.testing.assert_array_equal(got_lengths, want[1])
    other, other_mask = prompts(seed=4)
    fn(other, other_mask)
    assert fn._cache_size() == 1


def test_a_dfs_path_decodes_as_a_queue(tmp_path):
    a = make_tiny_model(tmp_path / "a", "llama", seed=0)
    models = [load(a), load(make_tiny_model(tmp_path / "b", perturb_from=a, seed=1))]
    space = layout_for(models, 2)
    spec = path_spec(models[0].spec, space)
    genes = {"indicator": jnp.asarray(np.random.default_rng(5).normal(size=space.num_slots), jnp.float32),
             "scales": jnp.ones(space.gene_template()["scales"].shape, jnp.float32)}
    params = with_path(pool_params(models), jax.jit(space.decode)(genes))
    tokens, mask = prompts(n=5, seed=6)
    eos = varied_eos(spec, params, tokens, mask, decoder=DFS_DECODER)
    want = each_alone(spec, params, tokens, mask, eos, decoder=DFS_DECODER)
    assert len(set(want[1].tolist())) > 1
    got_tokens, got_lengths, _ = queued(spec, params, tokens, mask, eos, 2, decoder=DFS_DECODER)
    np.testing.assert_array_equal(got_tokens, want[0])
    np.testing.assert_array_equal(got_lengths, want[1])


def test_a_free_row_takes_the_next_item_at_once(tmp_path):
    """Items 0 and 1 start together; when the shorter ends, item 2 starts in its row at the next step. A host
    callback in the forward (a test probe) counts the calls: the first rows' prefill, item 2's, and one decode
    step per step until the last item ends, fewer than chunks of two would run."""
    from jaxmerge import model as plain
    from jaxmerge.fitness.generate import Decoder
    model = load(make_tiny_model(tmp_path / "m", "llama", seed=1))
    tokens, mask = prompts(n=3, seed=0)
    eos = varied_eos(model.spec, model.params, tokens, mask)
    _, lengths = each_alone(model.spec, model.params, tokens, mask, eos)
    e = np.minimum(lengths + 1, STEPS)  # steps an item holds its row: its tokens, then the EOS (if in time)
    assert e[0] != e[1]
    calls = []

    def counted(*args):
        jax.debug.callback(lambda: calls.append(1))
        return plain.forward_cached(*args)
    _, got, _ = queued(model.spec, model.params, tokens, mask, eos, 2, decoder=Decoder(forward_cached=counted))
    jax.effects_barrier()
    np.testing.assert_array_equal(got, lengths)
    steps = max(e[0], e[1], min(e[0], e[1]) + e[2])
    assert len(calls) == 2 + steps
    assert steps < max(e[0], e[1]) + e[2]  # chunks [0, 1], [2]
