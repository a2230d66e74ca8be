"""`jaxmerge evolve` (PS) on image tasks: a VLM's language model merged with a text model, scored on images
with the vision features computed once per item, and the winner exported as a VLM that transformers loads.
Oracle: transformers' LlavaForConditionalGeneration on the exported model (teacher-forced answer log-probs,
greedy generation) with rouge-score's ROUGE-L, against the fitness best.json reports. Bad input: a missing
image, an image task without a VLM -> one line, exit 2."""
import json

import numpy as np
import pytest
import torch
import transformers

from jaxmerge.cli import main
from tests.fitness_tiny import CHARS
from tests.merge_oracle import read_tensors
from tests.vlm_tiny import images, text_sibling, vlm_and_sibling

TEMPLATE = "USER: <image>\\n{prompt} ASSISTANT:"
ALL = CHARS.replace("\n", "")  # a second reference holding every character: char ROUGE-L > 0 for any answer
ROWS = [{"image": f"img/{i}.png", "prompt": q, "answer": a, "answers": [ALL]}
        for i, (q, a) in enumerate([("colour?", "red"), ("shape?", "a box"), ("count?", "3"), ("where?", "left"),
                                    ("size?", "big"), ("what?", "a cat")])]
CONFIG = """
models: [{vlm}, {ja}]
merge_method: linear
evolve:
  weight: {{init: 0.5, bounds: [0.0, 1.0]}}
granularity: {{layers_per_group: 2, param_groups: false}}
search: {{strategy: CMA_ES, population: 4, generations: 2, sigma: 0.3, seed: 0}}
fitness:
  tasks: [{{task: {root}/task/ll.yml, split: dev}}, {{task: {root}/task/rouge.yml, split: dev}}]
  item_batch: 3
"""


def write_world(root, vlm, ja, rows=ROWS):
    from PIL import Image
    (root / "task/img").mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images(len(rows), 20, seed=5)):
        Image.fromarray(im).save(root / f"task/img/{i}.png")
    (root / "task/dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = f"splits: {{dev: dev.jsonl}}\nimages: true\ntemplate: \"{TEMPLATE}\"\n"
    (root / "task/ll.yml").write_text("name: ll\nmetric: loglik\n" + common)
    (root / "task/rouge.yml").write_text("name: rouge\nmetric: rouge_l\nrouge_tokens: chars\nmax_new_tokens: 5\n"
                                         + common)
    (root / "evolve.yml").write_text(CONFIG.format(vlm=vlm, ja=ja, root=root))
    return root / "evolve.yml"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm-evolve")
    return (root, *vlm_and_sibling(root))


@pytest.fixture(scope="module")
def run(world):
    import jaxmerge.vlm.tasks as vt
    root, vlm, ja = world
    calls = []
    real = vt.image_tokens
    vt.image_tokens = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        assert main(["evolve", str(write_world(root, vlm, ja)), "--out", str(root / "run"), "--no-progress"]) == 0
    finally:
        vt.image_tokens = real
    return root / "run", calls


@pytest.mark.slow
def test_vision_features_are_computed_once_per_item(run):
    _, calls = run
    assert len(calls) == 2 * len(ROWS)  # once per item of each task, whatever the population and generations


def transformers_scores(model) -> tuple[list[float], list[float]]:
    """Per item of ROWS: transformers' mean answer log-prob and greedy char ROUGE-L of the VLM at `model`."""
    from rouge_score import rouge_scorer
    processor = transformers.AutoProcessor.from_pretrained(str(model), local_files_only=True)
    hf = transformers.LlavaForConditionalGeneration.from_pretrained(model, dtype=torch.float32,
                                                                    local_files_only=True).eval()
    rouge = rouge_scorer.RougeScorer(["rougeL"], tokenizer=type("C", (), {"tokenize": staticmethod(
        lambda t: [c for c in t if not c.isspace()])})())
    imgs = images(len(ROWS), 20, seed=5)
    logliks, rouges = [], []
    for row, im in zip(ROWS, imgs):
        prompt = TEMPLATE.replace("\\n", "\n").replace("{prompt}", row["prompt"])
        enc = processor(images=[im], text=[prompt], return_tensors="pt")
        answer = processor.tokenizer(" " + row["answer"], add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            ids = torch.cat([enc.input_ids, answer], dim=1)
            logp = hf(input_ids=ids, pixel_values=enc.pixel_values).logits.log_softmax(-1)[0]
            n = answer.shape[1]
            logliks.append(float(logp[-n - 1:-1].gather(1, answer[0][:, None]).mean()))
            gen = hf.generate(**enc, do_sample=False, max_new_tokens=5, pad_token_id=0, eos_token_id=2)
        text = processor.tokenizer.decode(gen[0, enc.input_ids.shape[1]:], skip_special_tokens=True)
        rouges.append(max(rouge.score(ref, text)["rougeL"].fmeasure for ref in (row["answer"], ALL)))
    return logliks, rouges


@pytest.mark.slow
def test_winner_is_a_vlm_scored_as_transformers_scores_it(world, run):
    root, vlm, _ = world
    out, _ = run
    best = json.loads((out / "best.json").read_text())
    model = out / "model"
    ours, source = read_tensors(model), read_tensors(vlm)
    for name in (n for n in source if not n.startswith("language_model.")):
        np.testing.assert_array_equal(ours[name], source[name], err_msg=name)
    logliks, rouges = transformers_scores(model)
    assert 0 < np.mean(rouges) < 1 and np.mean(logliks) < 0  # both parts of the fitness bite
    want = (np.mean(logliks) + np.mean(rouges)) / 2
    assert abs(best["fitness"] - want) < 1e-4, (best["fitness"], want, np.mean(logliks), np.mean(rouges))


def one_line_exit_2(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_missing_image_is_one_line_naming_item_and_file(world, tmp_path, capsys):
    _, vlm, ja = world
    rows = ROWS[:2] + [{**ROWS[2], "image": "img/missing.png"}]
    cfg = write_world(tmp_path, vlm, ja, rows)
    err = one_line_exit_2(capsys, ["evolve", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"])
    assert "item 2" in err and "missing.png" in err, err
    assert not (tmp_path / "run" / "model").exists()


def test_image_task_on_text_models_is_refused(world, tmp_path, capsys):
    root, _, ja = world
    other = text_sibling(world[1], tmp_path / "ja2", seed=4)
    cfg = write_world(tmp_path, other, ja)
    err = one_line_exit_2(capsys, ["evolve", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"])
    assert "vision-language model" in err and "image task" in err, err


def test_fused_memory_mode_with_image_tasks_is_refused(world, tmp_path, capsys):
    _, vlm, ja = world
    cfg = write_world(tmp_path, vlm, ja)
    cfg.write_text(cfg.read_text() + "memory: {mode: fused}\n")
    err = one_line_exit_2(capsys, ["evolve", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"])
    assert "materialize" in err and "image tasks" in err, err
