"""`jaxmerge evolve` mode dfs / hybrid with a VLM as model A (the paper's EvoVLM-JP setting): the path runs A's
embeddings and head with the image features spliced at the image tokens, and the winner is exported as a VLM
whose language model is the path's layers as a standard stack. Oracle: transformers'
LlavaForConditionalGeneration on the exported winner scores the fitness best.json reports (teacher-forced
log-probs and greedy ROUGE-L, as the PS test does). Bad input: a text A with a VLM after it -> one line, exit 2.

The fold of a path's scales into a plain stack is exact up to RMSNorm's eps (jaxmerge/dfs/fold.py), and this
world's random language models carry a stream small enough that eps shows once a path shrinks it (a winner with
cumulative scale 0.07 differed by 3e-4 in mean answer log-prob from what was scored). So the models here use
eps = 1e-12, where the fold claims parity; the eps regime itself is measured in tests/test_dfs_export.py."""
import json

import numpy as np
import pytest

from jaxmerge.cli import main
from tests.merge_oracle import read_tensors
from tests.test_vlm_evolve import ROWS, one_line_exit_2, transformers_scores, write_world
from tests.vlm_tiny import vlm_and_sibling

PS_KEYS = ("merge_method: linear\nevolve:\n  weight: {init: 0.5, bounds: [0.0, 1.0]}\n"
           "granularity: {layers_per_group: 2, param_groups: false}\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """test_vlm_evolve's VLM and its text sibling, with eps 1e-12 (module doc)."""
    root = tmp_path_factory.mktemp("vlm-dfs")
    return (root, *vlm_and_sibling(root, rms_norm_eps=1e-12))


def dfs_world(root, vlm, ja, mode, first=None, second=None):
    """The PS test's image tasks, evolved with `mode` (dfs or hybrid) over [first, second] (default [vlm, ja])."""
    cfg = write_world(root, vlm, ja)
    cfg.write_text(f"mode: {mode}\nmodels: [{first or vlm}, {second or ja}]\ndfs: {{repeats: 2}}\n"
                   + (PS_KEYS if mode == "hybrid" else "")
                   + "search: {strategy: CMA_ES, population: 4, generations: 2, sigma: 0.3, seed: 0}\n"
                   f"fitness:\n  tasks: [{{task: {root}/task/ll.yml, split: dev}}, "
                   f"{{task: {root}/task/rouge.yml, split: dev}}]\n  item_batch: 3\n")
    return cfg


def exported_vlm_scores_the_fitness(vlm, out):
    best = json.loads((out / "best.json").read_text())
    model = out / "model"
    ours, source = read_tensors(model), read_tensors(vlm)
    for name in (n for n in source if not n.startswith("language_model.")):  # tower and projector unchanged
        np.testing.assert_array_equal(ours[name], source[name], err_msg=name)
    path = json.loads((model / "path.json").read_text())["path"]
    config = json.loads((model / "config.json").read_text())
    assert config["architectures"] == ["LlavaForConditionalGeneration"]
    assert config["text_config"]["num_hidden_layers"] == len(path)
    assert len({n for n in ours if ".layers." in n and n.startswith("language_model.")}) > 0
    logliks, rouges = transformers_scores(model)
    want = (np.mean(logliks) + np.mean(rouges)) / 2
    assert abs(best["fitness"] - want) < 1e-4, (best["fitness"], want, np.mean(logliks), np.mean(rouges))
    return path


def test_dfs_winner_is_a_vlm_scored_as_transformers_scores_it(world, tmp_path, monkeypatch):
    import jaxmerge.vlm.tasks as vt
    _, vlm, ja = world
    calls, real = [], vt.image_tokens
    monkeypatch.setattr(vt, "image_tokens", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = dfs_world(tmp_path, vlm, ja, "dfs")
    assert main(["evolve", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert len(calls) == 2 * len(ROWS)  # vision features once per item of each task, not per candidate
    path = exported_vlm_scores_the_fitness(vlm, tmp_path / "run")
    # the oracle checks a real path: layers of both models, scales folded (seed 0 finds one)
    assert {s["model"] for s in path} == {0, 1} and any(abs(s["cumulative_scale"]) != 1 for s in path), path
    assert not (tmp_path / "run" / "recipe.yml").exists()  # no mergekit recipe rebuilds a VLM path


@pytest.mark.slow
def test_hybrid_with_a_vlm_exports_a_vlm(world, tmp_path):
    _, vlm, ja = world
    cfg = dfs_world(tmp_path, vlm, ja, "hybrid")
    assert main(["evolve", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    exported_vlm_scores_the_fitness(vlm, tmp_path / "run")


def test_dfs_with_a_text_model_a_and_a_vlm_b_is_refused(world, tmp_path, capsys):
    _, vlm, ja = world
    cfg = dfs_world(tmp_path, vlm, ja, "dfs", first=ja, second=vlm)
    err = one_line_exit_2(capsys, ["evolve", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"])
    assert "model A" in err and "vision-language model" in err and str(vlm) in err, err
    assert not (tmp_path / "run").exists()
