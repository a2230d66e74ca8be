"""`jaxmerge eval` end to end on a tiny model and task, and its one-line errors (exit 2)."""
import json

import pytest

from jaxmerge.cli import main
from jaxmerge.fitness.metrics import exact_match_number
from tests.fitness_tiny import add_char_tokenizer
from tests.tiny import make_tiny_model

YAML = """name: arith
splits: {dev: dev.jsonl, test: test.jsonl}
template: "Q: {prompt}\\nA:"
metric: METRIC
max_new_tokens: 5
stop: ["\\n"]
"""
ROWS = [{"prompt": f"{a}+{b}", "answer": str(a + b), "choices": [str(a + b), str(a * b + 7)]}
        for a in range(3) for b in range(2)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_cli")
    model = add_char_tokenizer(make_tiny_model(root / "model", "llama", seed=1, num_hidden_layers=2))
    bare = make_tiny_model(root / "bare", "llama", seed=1, num_hidden_layers=2)
    (root / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:2]))
    for metric in ("exact_match_number", "choice", "loglik"):
        (root / f"{metric}.yml").write_text(YAML.replace("METRIC", metric))
    return root, model, bare


def test_eval_generative_writes_items(setup, capsys):
    root, model, _ = setup
    out = root / "items.jsonl"
    assert main(["eval", str(model), str(root / "exact_match_number.yml"), "--split", "dev", "--limit", "5",
                 "--batch", "2", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(5))
    for r in rows:
        assert "\n" not in r["completion"]
        assert r["score"] == exact_match_number(r["completion"], r["answer"])
    accuracy = sum(r["score"] for r in rows) / 5
    assert f"exact_match_number: {accuracy:.6g}" in capsys.readouterr().out


@pytest.mark.parametrize("metric", ["choice", "loglik"])
def test_eval_teacher_forced(setup, capsys, metric):
    root, model, _ = setup
    out = root / f"{metric}.jsonl"
    assert main(["eval", str(model), str(root / f"{metric}.yml"), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(ROWS)  # default split: the first in the YAML (dev)
    if metric == "choice":
        assert all(r["score"] == float(r["prediction"] == r["answer"]) for r in rows)
    else:
        assert all(r["score"] == pytest.approx(r["loglik"] / r["tokens"]) and r["loglik"] < 0 for r in rows)
    assert f"{metric}: " in capsys.readouterr().out


@pytest.mark.parametrize("case,match", [
    ("malformed", "dev.jsonl:2: expected a JSON object, found malformed JSON"),
    ("missing_field", "dev.jsonl:1: expected a string field 'answer'"),
    ("empty", "expected at least one item in split 'dev'"),
    ("no_tokenizer", "expected tokenizer files"),
    ("bad_split", "expected a split in"),
])
def test_eval_bad_input_exits_2(setup, tmp_path, capsys, case, match):
    root, model, bare = setup
    dev = {"malformed": '{"prompt": "a", "answer": "1"}\n{"prompt": \n', "missing_field": '{"prompt": "a"}\n',
           "empty": "\n"}.get(case, json.dumps(ROWS[0]) + "\n")
    (tmp_path / "dev.jsonl").write_text(dev)
    (tmp_path / "test.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    (tmp_path / "t.yml").write_text(YAML.replace("METRIC", "exact_match_number"))
    args = ["eval", str(bare if case == "no_tokenizer" else model), str(tmp_path / "t.yml")]
    args += ["--split", "train"] if case == "bad_split" else []
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1
