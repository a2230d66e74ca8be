"""What a user takes away from `jaxmerge evolve`: a recipe that rebuilds the winner bit for bit, the sources'
dtype, a model card, a run that can be extended, and one log line per generation."""
import json
import shutil

import jax
import numpy as np
import pytest
import torch
import yaml

from jaxmerge.cli import main
from jaxmerge.config import load_config
from jaxmerge.evolve.records import read_history
from jaxmerge.io import load
from jaxmerge.modes import evolve
from tests.evolve_world import build_world, write_config
from tests.fitness_tiny import add_char_tokenizer
from tests.merge_oracle import mergekit_merge, read_tensors, worst_relative
from tests.tiny import make_tiny_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("world"))


def same_tensors(a, b) -> None:
    a, b = load(a), load(b)
    assert a.spec == b.spec and a.dtype == b.dtype
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(x, y)


def history(run):
    return [{k: v for k, v in r.items() if k not in ("seconds", "evals_per_s")} for r in read_history(run)]


def test_recipe_rebuilds_the_winner_and_the_run_extends(world, tmp_path, capsys):
    config = write_config(world, name="ties.yml", method="ties", generations=3)
    evolve(load_config(config), tmp_path / "full", progress=False)
    short = tmp_path / "short"
    evolve(load_config(write_config(world, name="ties2.yml", method="ties", generations=2)), short, progress=False)
    shutil.copy(config, world / "ties2.yml")  # the same run, now asking for 3 generations
    assert main(["evolve", str(world / "ties2.yml"), "--out", str(short), "--resume", "--no-progress"]) == 0
    assert history(short) == history(tmp_path / "full")
    same_tensors(short / "model", tmp_path / "full" / "model")
    assert main(["merge", str(short / "recipe.yml"), str(tmp_path / "rebuilt")]) == 0
    same_tensors(tmp_path / "rebuilt", short / "model")
    recipe = yaml.safe_load((short / "recipe.yml").read_text())
    assert (short / "recipe.yml").read_text().startswith('# jaxmerge: {"merge_key": ')
    assert recipe["out_dtype"] == "float32" and len(recipe["slices"]) == 2
    theirs = mergekit_merge(recipe, tmp_path / "mergekit")  # a deterministic method: mergekit's tensors too
    assert worst_relative(read_tensors(short / "model"), theirs)[0] <= 1e-5


def test_extending_with_the_generations_flag(world, tmp_path, capsys):
    config = write_config(world, name="ta.yml", method="task_arithmetic", extra_evolve="", generations=2)
    out = tmp_path / "run"
    assert main(["evolve", str(config), "--out", str(out), "--no-progress", "--tensorboard"]) == 0
    scalars = tensorboard_scalars(out / "tensorboard")
    assert [step for step, _ in scalars["fitness/best_so_far"]] == [1, 2] and "baseline/start" in scalars
    assert scalars["fitness/generation_best"][0][1] == pytest.approx(history(out)[0]["best"])
    err = capsys.readouterr().err.splitlines()
    assert [line.split()[1] for line in err if line.startswith("gen ")] == ["1/2", "2/2"]  # one line a generation
    assert sum(line.startswith("baseline ") for line in err) == 4  # the start point and three models
    assert main(["evolve", str(config), "--out", str(out), "--resume", "--generations", "3", "--no-progress"]) == 0
    assert [r["generation"] for r in history(out)] == [1, 2, 3]
    assert json.loads((out / "best.json").read_text())["status"] == "finished"
    assert main(["evolve", str(config), "--out", str(out), "--generations", "3", "--no-progress"]) == 2
    assert "--generations" in capsys.readouterr().err


def tensorboard_scalars(directory) -> dict:
    """tag -> [(step, value)] read back from the event files (TFRecord framing, tensorboardX's Event proto)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event
    found = {}
    for file in sorted(directory.glob("events.out.tfevents.*")):
        data, at = file.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def test_bfloat16_sources_give_a_bfloat16_winner_with_a_model_card(tmp_path):
    base = add_char_tokenizer(make_tiny_model(tmp_path / "base", "llama", seed=0, num_hidden_layers=2,
                                              dtype=torch.bfloat16))
    for i in (1, 2):
        make_tiny_model(tmp_path / f"ft{i}", perturb_from=base, seed=i, scale=0.05, dtype=torch.bfloat16)
    world = build_world(tmp_path / "tasks_only")  # for its task files
    shutil.copytree(world / "task", tmp_path / "task")
    config = write_config(tmp_path, method="ties", generations=1)
    best = evolve(load_config(config), tmp_path / "run", progress=False)
    winner = load(tmp_path / "run" / "model")
    assert winner.dtype == "bfloat16" and best["dtype"] == "bfloat16"
    assert json.loads((tmp_path / "run" / "model" / "config.json").read_text())["dtype"] == "bfloat16"
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: transformers" in card and "jaxmerge" in card
    assert "## Evolution" in card and "the starting point" in card and str(tmp_path / "ft1") in card
    kept = (tmp_path / "run" / "model" / "mergekit_config.yml").read_text()
    assert kept == (tmp_path / "run" / "recipe.yml").read_text()
    assert main(["merge", str(tmp_path / "run" / "recipe.yml"), str(tmp_path / "rebuilt")]) == 0
    same_tensors(tmp_path / "rebuilt", tmp_path / "run" / "model")
