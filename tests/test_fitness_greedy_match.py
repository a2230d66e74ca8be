"""greedy_match (teacher-forced) against greedy decoding: item by item, on the demo world's real checkpoints.

Oracles: jaxmerge's greedy decoding + text exact_match (itself checked against transformers generate in
test_fitness_oracle.py), and transformers generate directly.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmerge.merge import METHODS, Sources, init_state, merge_params
from jaxmerge.params import stack
from jaxmerge.ps.genome import GeneSpec
from jaxmerge.demo.world import build_world
from jaxmerge.fitness import greedy_jit, load_items, load_task, load_tokenizer, make_fitness, prepare, score_jit
from jaxmerge.io import load


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("gm") / "world")


@pytest.fixture(scope="module")
def fits(world):
    """(greedy_match fitness, exact_match fitness) on the four single skills' test splits (1000 items: the
    composed target's rows are almost all wrong for these candidates, the skills' rows mixed)."""
    tok = load_tokenizer(world.base)
    task = dataclasses.replace(load_task(world.target), metric="exact_match")
    items = [item for path in world.tasks.values() for item in load_items(load_task(path), "test")]
    spec = load(world.base).spec
    exact = make_fitness(spec, prepare(task, items, tok, item_batch=100), tok)
    fast_task = dataclasses.replace(task, metric="greedy_match")
    fast = make_fitness(spec, prepare(fast_task, items, tok, item_batch=100), tok)
    return jax.jit(fast.per_item), jax.jit(exact.per_item), fast.prepared


def candidates(world) -> dict:
    """Sources and merges of every quality: the base, each specialist, task arithmetic at 0.5 and at 1.0."""
    out = {name: load(path).params for name, path in {"base": world.base, **world.specialists}.items()}
    base, method = load(world.base), METHODS["task_arithmetic"]
    state = init_state(method, Sources(base.spec, base.params, stack([out[s] for s in world.specialists]), ()))
    for w in (0.5, 1.0):  # the engine's task arithmetic with one weight for every model
        genome = GeneSpec(base.spec, len(world.specialists), (), fixed=(("weight", w, True), ("lambda", 1.0, False),
                                                                         ("normalize", 0.0, False)))
        out[f"ta{w}"] = merge_params(method, state, genome.hparams(jnp.zeros(0)), jnp.zeros(2, jnp.uint32))
    return out


@pytest.mark.slow
def test_greedy_match_equals_greedy_exact_match_per_item(world, fits):
    fast, exact, _ = fits
    seen = []
    for name, params in candidates(world).items():
        got, want = np.asarray(fast(params)), np.asarray(exact(params))
        np.testing.assert_array_equal(got, want, err_msg=name)
        seen.append(got.mean())
    assert min(seen) < 0.5 < max(seen)  # right and wrong answers both occur, the comparison is not vacuous


@pytest.mark.slow
def test_greedy_match_equals_transformers_generate(world, fits):
    """The add specialist (right on about half the items) against transformers' greedy generate, per item."""
    import torch
    import transformers

    fast, _, prepared = fits
    tok = load_tokenizer(world.base)
    task = prepared.task
    rows = [tok(task.template.replace("{prompt}", it.prompt))["input_ids"] for it in prepared.items]
    width = max(map(len, rows))
    tokens = np.array([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = np.array([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    hf = transformers.AutoModelForCausalLM.from_pretrained(world.specialists["add"], dtype=torch.float32).eval()
    out = hf.generate(torch.as_tensor(tokens), attention_mask=torch.as_tensor(mask), do_sample=False,
                      max_new_tokens=task.max_new_tokens, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id)[:, width:].numpy()
    want = []
    for it, gen in zip(prepared.items, out):
        answer = tok(" " + it.answer, add_special_tokens=False)["input_ids"]
        n = len(answer)
        want.append(list(gen[:n]) == answer and len(gen) > n and int(gen[n]) in prepared.ends)
    got = np.asarray(fast(load(world.specialists["add"]).params))
    np.testing.assert_array_equal(got, np.asarray(want, np.float32))
    assert 0.2 < got.mean() < 0.9


def test_end_slot_accepts_any_end_token(tiny_model):
    """A row extended by the model's own greedy tokens is all-argmax; an end slot (2) accepts exactly `ends`."""
    model = load(tiny_model("llama", seed=1))
    prompt = np.array([[1, 5, 9, 14, 20]], np.int32)
    gen = greedy_jit(model.spec, model.params, prompt, np.ones_like(prompt), jnp.asarray([-1]), max_new_tokens=4)
    row = np.concatenate([prompt, np.asarray(gen.tokens)], axis=1)
    mask = np.ones_like(row)
    target = np.array([[0] * 5 + [1, 1, 1, 2]], np.int32)
    last = int(row[0, -1])
    other = (last + 1) % model.spec.vocab_size
    verdict = lambda ends, t=target: bool(score_jit(model.spec, model.params, row, mask, t, ends=ends).greedy[0])
    assert verdict(None) and verdict(jnp.asarray([other, last]))
    assert not verdict(jnp.asarray([other]))
    wrong = row.copy()
    wrong[0, -2] = (wrong[0, -2] + 1) % model.spec.vocab_size  # a wrong answer token: no end token saves it
    assert not bool(score_jit(model.spec, model.params, wrong, mask, target, ends=jnp.asarray([last])).greedy[0])
