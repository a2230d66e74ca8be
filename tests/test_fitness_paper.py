"""The paper's scoring: its answer extraction (documented cases, beside the robust rule), greedy decoding up to
1024 new tokens ending at stop strings (transformers generate as the oracle), the target-language gate
(py3langid's own probabilities as the oracle), and custom `python:` metrics (NaN and one warning on errors)."""
import json
import math

import jax
import numpy as np
import pytest

from jaxmerge.fitness import load_items, load_task, load_tokenizer, make_fitness, prepare
from jaxmerge.fitness.metrics import exact_match_number, exact_match_number_paper, paper_number
from jaxmerge.io import load
from tests.fitness_tiny import add_char_tokenizer
from tests.tiny import make_tiny_model

# completion -> (the paper's extraction, robust exact_match_number against the answer beside it)
CASES = {"The answer is 18.": (18.0, "18", 1.0), "1,234 apples": (234.0, "1234", 1.0),
         "it costs -5": (5.0, "-5", 1.0), "3.14.15": (0.15, "0.15", 0.0), "7.": (7.0, "7", 1.0),
         "no number": (None, "1", 0.0), "12 then 1,5": (5.0, "5", 1.0), "x2.50": (2.5, "2.5", 1.0)}


@pytest.mark.parametrize("text", sorted(CASES))
def test_paper_extraction_and_the_robust_rule(text):
    paper, answer, robust = CASES[text]
    assert paper_number(text) == paper
    assert exact_match_number_paper(text, answer) == float(paper is not None and paper == float(answer))
    assert exact_match_number(text, answer) == robust


def test_the_comma_behaviour_differs_from_the_robust_rule():
    assert exact_match_number_paper("1,234", "1234") == 0.0 and exact_match_number("1,234", "1234") == 1.0
    assert exact_match_number_paper("1,234", "234") == 1.0


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return add_char_tokenizer(make_tiny_model(tmp_path_factory.mktemp("paper") / "m", "llama", seed=5,
                                              max_position_embeddings=1100))


def write_task(root, metric: str, stop: list[str], language: str | None = None, rows=None, max_new=1024):
    rows = rows or [{"prompt": p, "answer": "1", "bonus": i % 2} for i, p in enumerate(["ab", "Q: 3+4", "xyz"])]
    (root / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = (f"name: t\nsplits: {{dev: dev.jsonl}}\nmetric: '{metric}'\nmax_new_tokens: {max_new}\n"
            f"stop: {json.dumps(stop)}\n" + (f"language: {language}\n" if language else ""))
    (root / "t.yml").write_text(text)
    return load_task(root / "t.yml")


def hf_text(model_dir, prompt: str, steps: int) -> str:
    import torch
    import transformers
    tok = load_tokenizer(model_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.as_tensor([tok(prompt)["input_ids"]])
    out = hf.generate(ids, do_sample=False, max_new_tokens=steps, pad_token_id=0, eos_token_id=2)
    return tok.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)


def test_up_to_1024_new_tokens_end_at_stop_strings(model_dir, tmp_path):
    """Each completion is transformers' greedy text cut at its first stop string, and decoding stopped there:
    every token after a row's stop is padding (a 1024-step loop would have produced more tokens)."""
    free = [hf_text(model_dir, p, 12) for p in ("ab", "Q: 3+4", "xyz")]
    stops = sorted({t[3:5] for t in free if len(t) >= 5})  # two-character strings each completion spells
    task = write_task(tmp_path, "exact_match", stops)
    tok, model = load_tokenizer(model_dir), load(model_dir)
    prepared = prepare(task, load_items(task, "dev"), tok, item_batch=3)
    fit = make_fitness(model.spec, prepared, tok)
    out = jax.jit(fit.outputs)(model.params, {k: v[:3] for k, v in prepared.arrays.items()})
    from jaxmerge.fitness.fitness import completion
    from jaxmerge.fitness.metrics import truncate
    got = [completion(tok, prepared, np.asarray(out.tokens[i]), int(out.lengths[i])) for i in range(3)]
    assert got == [truncate(t, tuple(stops)) for t in free]
    assert all(int(n) <= 12 for n in out.lengths) and np.all(np.asarray(out.tokens)[:, 12:] == 0)


def test_the_language_gate_is_the_classifiers_probability(tmp_path):
    from py3langid import langid
    reference = langid.LanguageIdentifier.from_modelpath(langid.MODEL_DIR / langid.MODEL_FILE, norm_probs=True)
    task = write_task(tmp_path, "exact_match_number_paper", [], language="ja", rows=[{"prompt": "x", "answer": 18}])
    from jaxmerge.fitness.textscore import item_scorer
    score = item_scorer(task)
    item = load_items(task, "dev")[0]
    for text in ("答えは18です。", "The answer is 18.", "18", "答えは\n18", "答えは17です。"):
        japanese = dict(reference.rank(text.replace("\n", "")))["ja"] > 0.5
        assert score(text, item, 0) == float(japanese and paper_number(text) == 18.0), text
    assert score("答えは18です。", item, 0) == 1.0 and score("The answer is 18.", item, 0) == 0.0


def test_custom_metric_reads_completion_answer_and_row(model_dir, tmp_path):
    task = write_task(tmp_path, "python:tests.custom_metrics:first_char_is_answer", ["\n"], max_new=6)
    tok, model = load_tokenizer(model_dir), load(model_dir)
    items = load_items(task, "dev")
    fit = make_fitness(model.spec, prepare(task, items, tok, item_batch=3), tok)
    texts = [hf_text(model_dir, it.prompt, 6).split("\n")[0] for it in items]
    want = [float(t[:1] == "1") + it.row["bonus"] for t, it in zip(texts, items)]
    np.testing.assert_array_equal(np.asarray(jax.jit(fit.per_item)(model.params)), want)


@pytest.mark.parametrize("name,said", [("raises", "raised ValueError"), ("returns_text", "returned str")])
def test_a_failing_custom_metric_is_nan_and_said_once(model_dir, tmp_path, capsys, name, said):
    task = write_task(tmp_path, f"python:tests.custom_metrics:{name}", ["\n"], max_new=4)
    tok, model = load_tokenizer(model_dir), load(model_dir)
    fit = make_fitness(model.spec, prepare(task, load_items(task, "dev"), tok, item_batch=3), tok)
    assert math.isnan(float(jax.jit(fit.fitness)(model.params)))
    assert math.isnan(float(jax.jit(fit.fitness)(model.params)))
    warned = [line for line in capsys.readouterr().err.splitlines() if said in line]
    assert len(warned) == 1 and f"tests.custom_metrics:{name}" in warned[0]


def test_a_custom_metric_that_does_not_import_is_one_line(tmp_path):
    from jaxmerge.errors import JaxmergeError
    with pytest.raises(JaxmergeError, match="expected metric python:tests.custom_metrics:nope to import"):
        write_task(tmp_path, "python:tests.custom_metrics:nope", [])
