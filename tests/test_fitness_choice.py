"""`metric: choice` with items of different numbers of choices (ARC has 3-5), checked against log-probabilities
computed by hand from transformers' logits; and numeric answers in task JSONL (`"answer": 7`), compared as the
number is written."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import jaxmerge
from jaxmerge.cli import main
from jaxmerge.errors import JaxmergeError
from jaxmerge.fitness import load_items, load_task, load_tokenizer, make_fitness, prepare
from jaxmerge.fitness.metrics import exact_match, exact_match_number
from jaxmerge.fitness.tasks import read_jsonl
from jaxmerge.fitness.tokenize import continuation
from tests.fitness_tiny import add_char_tokenizer
from tests.tiny import make_tiny_model

ROWS = [{"prompt": "2+2=", "answer": "4", "choices": ["3", "4"]},
        {"prompt": "1+2=", "answer": "3", "choices": ["1", "2", "3"]},
        {"prompt": "3*3=", "answer": "9", "choices": ["6", "9", "12", "33"]},
        {"prompt": "5-1=", "answer": 4, "choices": [2, 4, "44"]}]  # numbers, as a task file may hold them


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("choice")
    model = add_char_tokenizer(make_tiny_model(root / "model", "llama", seed=7, num_hidden_layers=2,
                                               initializer_range=0.3))
    (root / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (root / "t.yml").write_text("name: c\nsplits: {dev: dev.jsonl}\nmetric: choice\n")
    return root, model


def reference(model_dir, tokenizer, rows) -> list[list[float]]:
    """Sum of log p(choice tokens | prompt) per choice, from transformers' float32 logits, token by token."""
    import transformers
    hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for row in rows:
        context = tokenizer(row["prompt"])["input_ids"]
        scores = []
        for choice in row["choices"]:
            cont = tokenizer(continuation(row["prompt"], str(choice)), add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(hf(torch.tensor([context + cont])).logits[0].float(), -1)
            scores.append(sum(float(logp[len(context) - 1 + k, t]) for k, t in enumerate(cont)))
        out.append(scores)
    return out


def test_choice_with_2_to_4_choices_matches_transformers(setup, tmp_path, capsys):
    root, model = setup
    task = load_task(root / "t.yml")
    items = load_items(task, "dev")
    tokenizer = load_tokenizer(model)
    want = reference(model, tokenizer, ROWS)
    right = [float(int(np.argmax(s)) == [str(c) for c in r["choices"]].index(str(r["answer"])))
             for s, r in zip(want, ROWS)]
    loaded = jaxmerge.load(model)
    fit = make_fitness(loaded.spec, prepare(task, items, tokenizer, item_batch=3), tokenizer)
    assert np.asarray(fit.per_item(loaded.params)).tolist() == right
    assert float(fit.fitness(loaded.params)) == pytest.approx(np.mean(right))
    out = tmp_path / "rows.jsonl"
    assert main(["eval", str(model), str(root / "t.yml"), "--batch", "3", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    for record, scores, row, score in zip(records, want, ROWS, right):
        assert record["choices"] == [str(c) for c in row["choices"]]
        np.testing.assert_allclose(record["logliks"], scores, atol=1e-4)
        assert record["prediction"] == record["choices"][int(np.argmax(scores))] and record["score"] == score
    assert f"choice: {np.mean(right):.6g}" in capsys.readouterr().out


def test_numeric_answers_are_taken_as_written(tmp_path):
    lines = ['{"prompt": "a", "answer": 7}', '{"prompt": "b", "answer": 7.0}', '{"prompt": "c", "answer": -3}',
             '{"prompt": "d", "answer": "7", "choices": [7, 8]}']
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    items = read_jsonl(tmp_path / "d.jsonl", needs_choices=False)
    assert [it.answer for it in items] == ["7", "7.0", "-3", "7"] and items[3].choices == ("7", "8")
    assert all(type(it.answer) is str for it in items)
    assert exact_match_number("the answer is 7", items[1].answer) == 1.0  # numerically: 7 == 7.0
    assert exact_match("7", items[1].answer) == 0.0 and exact_match("7.0", items[1].answer) == 1.0  # as text
    for bad, match in (('{"prompt": "e", "answer": 1e3}', "1e3"), ('{"prompt": "f", "answer": true}', "answer"),
                       ('{"prompt": 5, "answer": "5"}', "prompt")):
        (tmp_path / "bad.jsonl").write_text(bad + "\n")
        with pytest.raises(JaxmergeError, match=match):
            read_jsonl(tmp_path / "bad.jsonl", needs_choices=False)


def test_the_test_split_refusal_names_the_real_key(tmp_path):
    (tmp_path / "test.jsonl").write_text('{"prompt": "a", "answer": "b"}\n')
    (tmp_path / "t.yml").write_text("name: t\nsplits: {test: test.jsonl}\nmetric: loglik\n")
    with pytest.raises(JaxmergeError, match=r"fitness\.allow_test_split: true"):
        load_items(load_task(tmp_path / "t.yml"), "test", allow_test=False)
