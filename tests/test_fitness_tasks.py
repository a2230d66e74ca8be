"""Task files, host metrics, tokenisation and bad input (no jit here: these tests are fast)."""
import json

import numpy as np
import pytest

from jaxmerge.errors import JaxmergeError
from jaxmerge.fitness import load_items, load_task, load_tokenizer, prepare
from jaxmerge.fitness.metrics import exact_match, exact_match_number, last_number, truncate
from jaxmerge.fitness.tasks import Item, Task
from jaxmerge.fitness.tokenize import continuation, render
from tests.fitness_tiny import add_char_tokenizer

YAML = """name: arith
splits: {dev: arith_dev.jsonl, test: arith_test.jsonl}
template: "Q: {prompt}\\nA:"
metric: exact_match_number
max_new_tokens: 16
stop: ["\\n"]
fewshot: 2
fewshot_split: dev
"""


def write_task(tmp_path, yaml_text=YAML, dev=None, test=None):
    rows = dev if dev is not None else [json.dumps({"prompt": f"{a}+1", "answer": str(a + 1)}) for a in range(5)]
    (tmp_path / "arith_dev.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "arith_test.jsonl").write_text("\n".join(test if test is not None else rows[:2]) + "\n")
    (tmp_path / "arith.yml").write_text(yaml_text)
    return tmp_path / "arith.yml"


def test_load_task_contract(tmp_path):
    task = load_task(write_task(tmp_path))
    assert (task.name, task.metric, task.max_new_tokens, task.stop, task.fewshot) == (
        "arith", "exact_match_number", 16, ("\n",), 2)
    assert task.split_path("dev") == (tmp_path / "arith_dev.jsonl").absolute()
    items = load_items(task, "dev")
    assert items[0][:3] == Item("0+1", "1")[:3] and len(items) == 5
    assert items[0].row == {"prompt": "0+1", "answer": "1"}  # the whole row, for custom metrics
    assert len(load_items(task, "dev", limit=3)) == 3


@pytest.mark.parametrize("text,number", [
    ("The answer is 1,234.", "1234"), ("so it is -5", "-5"), ("debt of −42", "-42"), ("12.50 dollars", "12.50"),
    ("1,234,567 and then 10,000", "10000"), ("pairs 1,23", "23"), ("x-5", "5"), ("4 - 3 = 1", "1")])
def test_last_number(text, number):
    assert last_number(text) == last_number(number) and last_number(text) is not None


def test_text_metrics():
    assert exact_match_number("so the total is 1,234.", "1234") == 1.0
    assert exact_match_number("total -7", "7") == 0.0
    assert exact_match_number("12.0", "12") == 1.0
    assert exact_match_number("no number", "3") == 0.0
    assert exact_match("  Paris. ", "paris") == 1.0 and exact_match("Paris, France", "paris") == 0.0
    assert truncate("42\nQ: next", ("\n",)) == "42" and truncate("abc", ("x", "b")) == "a"


def test_render_with_fewshot_is_deterministic(tmp_path):
    task = load_task(write_task(tmp_path))
    tok = load_tokenizer(add_char_tokenizer(tmp_path / "tok"))
    pool = load_items(task, "dev")
    shots = prepare(task, pool[:2], tok, fewshot_pool=pool)
    again = prepare(task, pool[:2], tok, fewshot_pool=pool)
    np.testing.assert_array_equal(shots.arrays["tokens"], again.arrays["tokens"])
    from jaxmerge.fitness.tokenize import fewshot_examples
    examples = fewshot_examples(task, pool, pool[0])
    assert len(examples) == 2 and pool[0] not in examples
    text = render(task, tok, pool[0], examples)
    assert text.endswith("Q: 0+1\nA:") and text.count("Q: ") == 3
    assert continuation("A:", "5") == " 5" and continuation("A: ", "5") == "5"


def test_left_padding_and_positions(tmp_path):
    task = Task("t", (("dev", "x"),), template="{prompt}", metric="loglik")
    tok = load_tokenizer(add_char_tokenizer(tmp_path / "tok"))
    prepared = prepare(task, [Item("abc", "d"), Item("a", "xyz"), Item("b", "c")], tok, item_batch=2)
    tokens, mask, target = (prepared.arrays[k][:, 0] for k in ("tokens", "mask", "target"))
    assert tokens.shape == (4, 8)  # items padded to a multiple of the item batch, length to a multiple of 8
    assert prepare(task, [Item("a", "b")], tok, item_batch=10**9).item_batch == 1  # never more than the items
    assert mask[0].tolist() == [0, 0, 1, 1, 1, 1, 1, 1]  # <s> a b c, then " d" and target[0].tolist() == [0] * 6 + [1, 1]
    assert tok.decode(tokens[1][mask[1] == 1].tolist(), skip_special_tokens=True) == "a xyz"
    assert prepared.counts.tolist() == [2, 4, 2]


def test_test_split_refused_for_evolution(tmp_path):
    task = load_task(write_task(tmp_path))
    with pytest.raises(JaxmergeError, match="non-test split"):
        load_items(task, "test", allow_test=False)
    assert len(load_items(task, "test", allow_test=True)) == 2


@pytest.mark.parametrize("rows,match", [
    (['{"prompt": "a", "answer": "1"}', '{"prompt": "b", "answer": '], r"arith_dev.jsonl:2: .*malformed JSON"),
    (['{"prompt": "a", "answer": "1"}', '', '["x"]'], r"arith_dev.jsonl:3: expected a JSON object"),
    (['{"prompt": "a"}'], r"arith_dev.jsonl:1: expected a string field 'answer'"),
    (['{"answer": "1"}'], r"arith_dev.jsonl:1: expected a string field 'prompt'"),
    ([], r"expected at least one item in split 'dev'"),
])
def test_bad_jsonl(tmp_path, rows, match):
    task = load_task(write_task(tmp_path, dev=rows, test=['{"prompt": "a", "answer": "1"}']))
    with pytest.raises(JaxmergeError, match=match):
        load_items(task, "dev")


@pytest.mark.parametrize("change,match", [
    (("metric: exact_match_number", "metric: bleu"), "expected metric in"),
    (("name: arith", "name: [1]"), "expected a string 'name'"),
    (("max_new_tokens: 16", "max_new_tokens: many"), "expected 'max_new_tokens' to be int"),
    (("template: \"Q: {prompt}\\nA:\"", "template: \"Q:\""), "expected '{prompt}' in template"),
    (("fewshot_split: dev", "fewshot_split: train"), "fewshot needs fewshot_split"),
    (("name: arith", "name: arith\nsplitz: 1"), "unknown key\\(s\\) \\['splitz'\\]"),
    (("splits: {dev: arith_dev.jsonl, test: arith_test.jsonl}", "splits: {}"), "expected 'splits'"),
])
def test_bad_yaml(tmp_path, change, match):
    with pytest.raises(JaxmergeError, match=match):
        load_task(write_task(tmp_path, YAML.replace(*change)))


def test_bad_items_and_tokenizer(tmp_path):
    task = load_task(write_task(tmp_path))
    with pytest.raises(JaxmergeError, match="expected a split in"):
        load_items(task, "train")
    with pytest.raises(JaxmergeError, match="expected tokenizer files"):
        load_tokenizer(tmp_path)
    tok = load_tokenizer(add_char_tokenizer(tmp_path / "tok"))
    with pytest.raises(JaxmergeError, match="expected a number in the answer"):
        prepare(Task("t", (("dev", "x"),), metric="exact_match_number"), [Item("a", "none")], tok)
    with pytest.raises(JaxmergeError, match="'answer' to be one of 'choices'"):
        (tmp_path / "mc.jsonl").write_text('{"prompt": "a", "answer": "z", "choices": ["x", "y"]}\n')
        load_items(Task("mc", (("dev", tmp_path / "mc.jsonl"),), metric="choice"), "dev")
