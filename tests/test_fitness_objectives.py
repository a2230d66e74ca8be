"""Objective vectors of a several-objective search: the weighted fitness first, then each objective, every task
scored once; an answer-length objective is minus the mean number of generated tokens (transformers' greedy
generate counts them, the oracle)."""
import json

import jax
import numpy as np
import pytest

from jaxmerge.fitness import load_tokenizer
from jaxmerge.fitness.suite import TaskSpec, prepare_tasks, weighted_fitness
from jaxmerge.io import load
from tests.fitness_tiny import add_char_tokenizer
from tests.tiny import make_tiny_model

PROMPTS = ["ab", "Q: 3+4", "xyz", "hello"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("objectives")
    model = add_char_tokenizer(make_tiny_model(root / "m", "llama", seed=7))
    (root / "dev.jsonl").write_text("".join(json.dumps({"prompt": p, "answer": "1"}) + "\n" for p in PROMPTS))
    (root / "gen.yml").write_text("name: gen\nsplits: {dev: dev.jsonl}\nmetric: exact_match\nmax_new_tokens: 6\n")
    (root / "ll.yml").write_text("name: ll\nsplits: {dev: dev.jsonl}\nmetric: loglik\n")
    return root, model


def hf_lengths(model_dir, eos: int) -> list[int]:
    import torch
    import transformers
    tok = load_tokenizer(model_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for p in PROMPTS:
        ids = torch.as_tensor([tok(p)["input_ids"]])
        new = hf.generate(ids, do_sample=False, max_new_tokens=6, pad_token_id=0, eos_token_id=eos)[0, ids.shape[1]:]
        out.append(next((i for i, t in enumerate(new.tolist()) if t == eos), len(new)))
    return out


def test_objective_vector_with_an_answer_length(world):
    root, model_dir = world
    specs = [TaskSpec(root / "gen.yml", "dev", 1.0, 0), TaskSpec(root / "ll.yml", "dev", 3.0, 0)]
    plain = prepare_tasks(specs, model_dir, allow_test=True, item_batch=4, seed=0)
    tasks = prepare_tasks(specs, model_dir, allow_test=True, item_batch=4, seed=0,
                          objectives=("ll", "length:gen", "gen"))
    assert tasks.objective_names() == ["ll", "length:gen", "gen"]
    model = load(model_dir)
    vector = np.asarray(jax.jit(weighted_fitness(model.spec, tasks))(model.params))
    single = float(jax.jit(weighted_fitness(model.spec, plain))(model.params))
    parts = [float(jax.jit(weighted_fitness(model.spec, plain._replace(parts=(p,))))(model.params))
             for p in plain.parts]
    assert vector.shape == (4,) and vector[0] == pytest.approx(single, abs=1e-6)
    assert vector[1] == pytest.approx(parts[1], abs=1e-6) and vector[3] == pytest.approx(parts[0], abs=1e-6)
    lengths = hf_lengths(model_dir, eos=2)
    assert vector[2] == pytest.approx(-np.mean(lengths), abs=1e-6) and 0 < np.mean(lengths) <= 6
