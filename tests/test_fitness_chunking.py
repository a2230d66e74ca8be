"""Generative items grouped into chunks by prompt length: every item kept once and mapped back to its place, a
smaller padded share, and the same greedy completions (and scores) as decoding the whole task padded to its
longest prompt; the fitness still compiles once."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmerge.fitness import greedy_jit, load_tokenizer, make_fitness, prepare
from jaxmerge.fitness.chunking import bucket, chunks, joined, padded_fraction
from jaxmerge.fitness.evaluate import evaluate
from jaxmerge.fitness.fitness import completion
from jaxmerge.fitness.tasks import Item, Task
from jaxmerge.io import load
from tests.fitness_tiny import add_char_tokenizer
from tests.tiny import make_tiny_model

PROMPTS = ["a", "Q: 12+7\nA:", "hi", "the quick brown fox jumps over the lazy dog, twice over", "x=",
           "Name three colours:", "1+1=", "a much longer prompt than the others here, to make a wide chunk"]
TASK = Task("chunked", (("dev", "x.jsonl"),), template="{prompt}", metric="exact_match", max_new_tokens=5)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path = add_char_tokenizer(make_tiny_model(tmp_path_factory.mktemp("chunking") / "m", "llama", seed=3))
    return load(path), load_tokenizer(path)


def test_bucket_doubles_and_caps():
    assert [bucket(n, 64) for n in (1, 8, 9, 17, 33, 70)] == [8, 8, 16, 32, 64, 64]


def test_every_item_once_in_narrower_chunks(world):
    _, tok = world
    prepared = prepare(TASK, [Item(p, "0") for p in PROMPTS], tok, item_batch=2)
    data = chunks(prepared, min_chunks=1)
    assert len(data.groups) >= 2 and list(data.widths) == sorted(data.widths)
    index = np.concatenate([g["index"].reshape(-1) for g in data.groups])
    np.testing.assert_array_equal(index[data.slot], np.arange(len(PROMPTS)))
    rows = [t[m > 0] for g in data.groups for t, m in zip(g["tokens"].reshape(-1, g["tokens"].shape[-1]),
                                                                g["mask"].reshape(-1, g["mask"].shape[-1]))]
    for i in range(len(PROMPTS)):
        want = prepared.arrays["tokens"][i][prepared.arrays["mask"][i] > 0]
        np.testing.assert_array_equal(rows[data.slot[i]], want)
    assert padded_fraction(prepared, min_chunks=1) < padded_fraction(prepared, grouped=False)


def test_a_width_of_few_chunks_joins_the_next_wider_group():
    """A group is one decoding queue: a few chunks of their own would leave its rows nothing to refill from."""
    assert joined([8, 16, 16, 16, 16, 64], 4) == (16, 16, 16, 16, 16, 64)
    assert joined([8, 8, 16, 64], 4) == (64, 64, 64, 64)
    assert joined([8, 8, 16, 64], 1) == (8, 8, 16, 64)


@pytest.mark.slow
def test_grouped_completions_equal_whole_task_decoding(world):
    model, tok = world
    prepared = prepare(TASK, [Item(p, "0") for p in PROMPTS], tok, item_batch=2)
    out = greedy_jit(model.spec, model.params, prepared.arrays["tokens"], prepared.arrays["mask"],
                     jnp.asarray(prepared.eos), max_new_tokens=TASK.max_new_tokens)
    texts = [completion(tok, prepared, out.tokens[i], int(out.lengths[i])) for i in range(len(PROMPTS))]
    items = [Item(p, t if i % 3 else t + "zz") for i, (p, t) in enumerate(zip(PROMPTS, texts))]
    fit = make_fitness(model.spec, prepare(TASK, items, tok, item_batch=2), tok)
    want = np.asarray([0.0 if i % 3 == 0 else 1.0 for i in range(len(PROMPTS))], np.float32)
    per_item = jax.jit(fit.per_item)
    np.testing.assert_array_equal(np.asarray(per_item(model.params)), want)
    per_item(jax.tree.map(lambda x: x * 1.01, model.params))
    assert per_item._cache_size() == 1
    value, records = evaluate(fit, model.params, tok)
    assert [r["completion"] for r in records] == texts and value == pytest.approx(want.mean())
