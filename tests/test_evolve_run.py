"""End to end: `jaxmerge evolve` on tiny models — outputs, exported == scored, bad input (resuming after SIGKILL:
tests/test_kill_resume.py)."""
import json

import pytest
import yaml

from jaxmerge.cli import main
from jaxmerge.config import load_config
from jaxmerge.modes import evolve
from tests.evolve_world import build_world, write_config


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("world"))


def test_run_writes_every_output_and_the_export_scores_its_fitness(world, tmp_path, capsys):
    cfg = load_config(write_config(world, subset=0))
    best = evolve(cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    for name in ("model/config.json", "model/model.safetensors", "model/tokenizer.json", "recipe.yml",
                 "best.json", "history.jsonl", "plots/fitness.png", "plots/genes_weight.png", "plots/genes_density.png"):
        assert (run / name).is_file(), name
    lines = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert lines[0] == {"generation": 0, "baselines": best["baselines"]}  # generation 0: the baselines
    history = lines[1:]
    assert [row["generation"] for row in history] == [1, 2, 3]
    assert best["fitness"] == max(max(row["best"] for row in history), best["baselines"]["start"])
    assert best["status"] == "finished" and set(best["baselines"]["sources"]) == {str(world / m) for m in
                                                                                  ("ft1", "ft2", "base")}
    recipe = yaml.safe_load((run / "recipe.yml").read_text())
    assert recipe["merge_method"] == "dare_ties" and len(recipe["slices"]) == 2  # one slice per layer group
    assert [len(s["sources"]) for s in recipe["slices"]] == [3, 3]  # two models and the base
    # exported == scored: `jaxmerge eval` of the exported model on the fitness split gives best.json's fitness
    assert main(["eval", str(run / "model"), str(world / "task/add.yml"), "--split", "dev"]) == 0
    printed = capsys.readouterr().out
    value = float(next(tok for tok in printed.replace("=", " ").split() if _is_float(tok)))
    assert value == pytest.approx(best["fitness"], rel=1e-5, abs=1e-5)


def _is_float(text):
    try:
        float(text)
        return "." in text
    except ValueError:
        return False


BAD = {
    "unknown strategy": ("search: {strategy: NoSuchES, population: 4}", "strategy"),
    "unknown method parameter": ("parameters: {sharpness: 2}", "sharpness"),
    "bounds exclude init": ("evolve:\n  weight: {init: 2.0, bounds: [0.0, 1.0]}", "within bounds"),
    "population too small": ("search: {strategy: CMA_ES, population: 2}", "population"),
    "unknown top-level key": ("generation: 3", "unknown key"),
    "malformed yaml": ("search: [unclosed", "YAML"),
    "non-finite sigma": ("search: {strategy: CMA_ES, population: 4, sigma: .nan}", "sigma"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_is_one_line_and_exit_2(world, tmp_path, capsys, case):
    patch, expected = BAD[case]
    doc = yaml.safe_load(write_config(world).read_text())
    path = world / f"bad-{case.replace(' ', '_')}.yml"
    try:
        doc.update(yaml.safe_load(patch))
        path.write_text(yaml.safe_dump(doc))
    except yaml.YAMLError:
        path.write_text(patch)
    assert main(["evolve", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "out" / "best.json").exists()


def test_sources_of_different_shapes_are_refused(world, tmp_path, capsys):
    from tests.tiny import make_tiny_model
    make_tiny_model(world / "wide", "llama", seed=3, hidden_size=48, num_hidden_layers=2)
    doc = yaml.safe_load(write_config(world).read_text())
    doc["models"] = ["ft1", "wide"]
    path = world / "bad-shapes.yml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["evolve", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "hidden_size" in capsys.readouterr().err


def test_out_dir_holding_another_run_is_refused(world, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"identity": {"config": "something-else"}}))
    assert main(["evolve", str(write_config(world)), "--out", str(out), "--no-progress"]) == 2
    assert "another run" in capsys.readouterr().err
    assert main(["evolve", str(write_config(world)), "--out", str(out), "--resume", "--no-progress"]) == 2
    assert "another run" in capsys.readouterr().err
