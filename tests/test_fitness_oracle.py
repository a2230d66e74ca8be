"""Oracles for decoding and scoring: transformers generate(do_sample=False) and transformers log-probs."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxmerge.fitness import greedy_jit, load_tokenizer, make_fitness, prepare, score_jit
from jaxmerge.fitness.fitness import completion
from jaxmerge.fitness.tasks import Item, Task
from jaxmerge.fitness.tokenize import left_pad
from jaxmerge.io import load
from tests.fitness_tiny import add_char_tokenizer
from tests.tiny import hf_logits, make_tiny_model

PROMPTS = ["Q: 12+7\nA:", "hi", "the quick brown fox jumps", "x=", "Name three colours:"]
LOGPROB_TOL = 1e-4


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("fitness_oracle")
    out = {}
    for family in ("llama", "qwen2"):
        out[family] = add_char_tokenizer(make_tiny_model(root / family, family, seed=3))
    return out


def batch(model_dir):
    tok = load_tokenizer(model_dir)
    rows = [tok(p)["input_ids"] for p in PROMPTS]
    return left_pad(rows, max(map(len, rows)) + 2, 0)  # +2: every row has padding, the longest too


def hf_generate(model_dir, tokens, mask, steps, eos):
    hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = hf.generate(torch.as_tensor(tokens).long(), attention_mask=torch.as_tensor(mask).long(),
                      do_sample=False, max_new_tokens=steps, pad_token_id=0, eos_token_id=eos)
    gen = out[:, tokens.shape[1]:].numpy()
    return np.pad(gen, ((0, 0), (0, steps - gen.shape[1])))  # HF stops early once every row has finished


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_greedy_matches_transformers_generate(models, family):
    model = load(models[family])
    tokens, mask = batch(models[family])
    steps = 10
    free = greedy_jit(model.spec, model.params, tokens, mask, jnp.asarray([2]), max_new_tokens=steps)
    np.testing.assert_array_equal(np.asarray(free.tokens), hf_generate(models[family], tokens, mask, steps, 2))
    # Make a token row 0 really emits the EOS, so the done mask and the padding after EOS are exercised.
    eos = int(free.tokens[0, 3])
    got = greedy_jit(model.spec, model.params, tokens, mask, jnp.asarray([eos]), max_new_tokens=steps)
    want = hf_generate(models[family], tokens, mask, steps, eos)
    np.testing.assert_array_equal(np.asarray(got.tokens), want)
    first_eos = [list(r).index(eos) if eos in r else steps for r in np.asarray(free.tokens)]
    np.testing.assert_array_equal(np.asarray(got.lengths), first_eos)
    assert first_eos[0] <= 3


def test_logprobs_match_transformers(models):
    model = load(models["llama"])
    tokens, mask = batch(models["llama"])
    target = np.zeros_like(mask)
    target[:, -2:] = 1  # the last two tokens of every row are the "answer" (the shortest row has 3 tokens)
    got = score_jit(model.spec, model.params, tokens, mask, target)
    positions = np.maximum(np.cumsum(mask, axis=-1) - 1, 0)
    logits = torch.as_tensor(hf_logits(models["llama"], tokens, mask, positions))
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    picked = torch.gather(logp, -1, torch.as_tensor(tokens[:, 1:, None]).long())[..., 0].numpy()
    want = (picked * target[:, 1:]).sum(-1)
    np.testing.assert_allclose(np.asarray(got.logprob), want, atol=LOGPROB_TOL, rtol=0)
    np.testing.assert_array_equal(np.asarray(got.count), 2)


def test_choice_picks_transformers_argmax(models):
    """Choice correctness equals the argmax of per-choice log-likelihoods computed by transformers."""
    tok = load_tokenizer(models["llama"])
    model = load(models["llama"])
    items = [Item(p, c[i % 3], c) for i, (p, c) in enumerate(zip(PROMPTS, [("ab", "12", "x"), ("no", "yes", "?"),
             ("cat", "dog", "sun"), ("1", "22", "333"), ("red", "b", "green")]))]
    task = Task("mc", (("dev", "x.jsonl"),), template="{prompt}", metric="choice")
    fit = make_fitness(model.spec, prepare(task, items, tok, item_batch=2))
    arrays = fit.prepared.arrays
    n, k, s = arrays["tokens"][:len(items)].shape
    tokens, mask, target = (arrays[x][:n].reshape(n * k, s) for x in ("tokens", "mask", "target"))
    logits = torch.as_tensor(hf_logits(models["llama"], tokens, mask, np.maximum(np.cumsum(mask, -1) - 1, 0)))
    logp = torch.log_softmax(logits[:, :-1].double(), -1)
    picked = torch.gather(logp, -1, torch.as_tensor(tokens[:, 1:, None]).long())[..., 0].numpy()
    ll = (picked * target[:, 1:]).sum(-1).reshape(n, k)
    want = (ll.argmax(-1) == arrays["answer"][:n]).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(fit.per_item(model.params)), want)


@pytest.fixture(scope="module")
def own(models):
    """Items whose answers are the model's own greedy completions for even items (and wrong for odd ones)."""
    tok = load_tokenizer(models["llama"])
    model = load(models["llama"])
    task = Task("self", (("dev", "x.jsonl"),), template="{prompt}", metric="exact_match", max_new_tokens=6)
    prepared = prepare(task, [Item(p, "0") for p in PROMPTS], tok)
    out = greedy_jit(model.spec, model.params, prepared.arrays["tokens"], prepared.arrays["mask"],
                     jnp.asarray(prepared.eos), max_new_tokens=6)
    texts = [completion(tok, prepared, out.tokens[i], int(out.lengths[i])) for i in range(len(PROMPTS))]
    items = [Item(p, t if i % 2 == 0 else t + "zz") for i, (p, t) in enumerate(zip(PROMPTS, texts))]
    fit = make_fitness(model.spec, prepare(task, items, tok, item_batch=2), tok)
    return model, tok, task, items, fit, jax.jit(fit.fitness), jax.jit(jax.vmap(fit.fitness))


def population(params, scales=(1.0, 1.03, 0.97)):
    return jax.tree.map(lambda x: jnp.stack([x * s for s in scales]), params)


def test_generative_fitness_scores_own_completions(own):
    model, _, _, _, _, single, _ = own
    assert float(single(model.params)) == pytest.approx(3 / 5)


@pytest.mark.slow
def test_generative_population_equals_per_candidate(own):
    model, _, _, _, _, single, vstep = own
    pop = population(model.params)
    want = np.array([single(jax.tree.map(lambda x: x[i], pop)) for i in range(3)])
    np.testing.assert_array_equal(np.asarray(vstep(pop)), want)


def test_new_candidates_do_not_recompile(own):
    model, _, _, _, _, _, vstep = own
    for scales in [(1.0, 1.1, 0.8), (0.9, 1.2, 1.0), (1.05, 0.95, 1.0)]:
        vstep(population(model.params, scales)).block_until_ready()
    assert vstep._cache_size() == 1


@pytest.mark.slow
def test_loglik_population_equals_per_candidate(own):
    model, tok, task, items, _, _, _ = own
    task = dataclasses.replace(task, metric="loglik")
    fit = make_fitness(model.spec, prepare(task, items, tok, item_batch=2), tok)
    pop = population(model.params)
    single = jax.jit(fit.fitness)
    want = np.array([single(jax.tree.map(lambda x: x[i], pop)) for i in range(3)])
    assert len(set(want.round(5))) == 3  # the candidates really differ
    np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(fit.fitness))(pop)), want, atol=1e-5, rtol=0)
    chunked = jax.jit(lambda p: jax.lax.map(fit.fitness, p, batch_size=2))
    np.testing.assert_allclose(np.asarray(chunked(pop)), want, atol=1e-5, rtol=0)
