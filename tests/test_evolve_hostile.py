"""`jaxmerge evolve` under hostile configs, concurrent runs, changed inputs, damaged records and full disks: one
line, the right exit code, nothing written or lost, and a run that stays resumable to a bit-identical end."""
import errno
import json
import os
import shutil

import jax
import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file, save_file

from jaxmerge.cli import main
from jaxmerge.config import load_config
from jaxmerge.io import load
from jaxmerge.lock import dir_lock
from jaxmerge.modes import evolve
from tests.evolve_world import build_world, write_config
from tests.hostile import fill, tmpfs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("hostile_evolve"))


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    evolve(load_config(write_config(world)), out, progress=False)
    return out


def one_line(capsys, code_word):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err), err
    assert code_word in err[-1], err
    return err[-1]


def same_run(a, b):
    rows = lambda d: [{k: v for k, v in json.loads(x).items() if k not in ("seconds", "evals_per_s")}
                      for x in (d / "history.jsonl").read_text().splitlines()]
    assert rows(a) == rows(b)
    for x, y in zip(jax.tree.leaves(load(a / "model").params), jax.tree.leaves(load(b / "model").params)):
        np.testing.assert_array_equal(x, y)


CONFIG_CASES = {  # a patch of the config -> the word its one line names
    "seed -1": ({"search": {"seed": -1}}, "search.seed"),
    "seed 2**70": ({"search": {"seed": 2**70}}, "search.seed"),
    "population 10**15": ({"search": {"population": 10**15}}, "search.population"),
    "generations 0": ({"search": {"generations": 0}}, "search.generations"),
    "bounds of +-1e308": ({"evolve": {"weight": {"init": 0.0, "bounds": [-1e308, 1e308]}}}, "evolve.weight.bounds"),
    "density bounds [-5, 5]": ({"evolve": {"density": {"init": 0.5, "bounds": [-5, 5]}}}, "density in [0, 1]"),
    "dfs repeats 10**7": ({"mode": "dfs", "dfs": {"repeats": 10**7}}, "dfs.repeats"),
    "batch_size 10**9": ({"memory": {"batch_size": 10**9}}, "memory.batch_size"),
    "attention flash": ({"memory": {"attention": "flash"}}, "memory.attention"),
    "item_batch 10**9": ({"fitness": {"item_batch": 10**9}}, "fitness.item_batch"),
    "a switch evolved": ({"evolve": {"normalize": {"init": 0.5, "bounds": [0, 1]}}}, "evolvable"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_numbers_are_refused_before_anything_exists(world, tmp_path, capsys, case):
    patch, word = CONFIG_CASES[case]
    doc = yaml.safe_load(write_config(world).read_text())
    for key, value in patch.items():
        doc[key] = {**doc[key], **value} if isinstance(value, dict) and isinstance(doc.get(key), dict) else value
    path = world / f"hostile-{case.replace(' ', '_').replace('*', '')}.yml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["evolve", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    one_line(capsys, word)
    assert not (tmp_path / "out").exists()


def test_a_second_run_on_the_same_directory_is_refused_naming_the_holder(world, tmp_path, capsys):
    out = tmp_path / "run"
    with dir_lock(out, "evolve"):  # another run holds DIR
        assert main(["evolve", str(write_config(world)), "--out", str(out), "--no-progress"]) == 2
    line = one_line(capsys, "expected no other jaxmerge process")
    assert f"pid {os.getpid()}" in line and not out.exists()


def test_resume_refuses_changed_inputs_unless_told(world, reference, tmp_path, capsys):
    config, out = write_config(world, name="changed.yml"), tmp_path / "run"
    evolve(load_config(config), out, progress=False, stop_after=1)
    split = world / "task" / "dev.jsonl"
    kept = split.read_text()
    try:
        split.write_text(kept + json.dumps({"prompt": "9+9=", "answer": "18"}) + "\n")
        assert main(["evolve", str(config), "--out", str(out), "--resume", "--no-progress"]) == 2
        assert f"split {split}" in one_line(capsys, "changed since it started")
    finally:
        split.write_text(kept)
    weights = world / "ft1" / "model.safetensors"
    saved = weights.read_bytes()
    try:
        tensors = load_file(weights)
        tensors["lm_head.weight"] = tensors["lm_head.weight"] * 1.5
        save_file(tensors, weights, metadata={"format": "pt"})
        assert main(["evolve", str(config), "--out", str(out), "--resume", "--no-progress"]) == 2
        assert f"model {world / 'ft1'}" in one_line(capsys, "changed since it started")
        assert main(["evolve", str(config), "--out", str(out), "--resume", "--no-progress",
                     "--allow-changed-inputs", "--generations", "1"]) == 0  # told to: it goes on
    finally:
        weights.write_bytes(saved)
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == ["1"]


def test_a_damaged_run_record_is_one_line(world, tmp_path, capsys):
    config, out = write_config(world, name="damaged.yml"), tmp_path / "run"
    evolve(load_config(config), out, progress=False, stop_after=1)
    text = (out / "run.json").read_text()
    (out / "run.json").write_text(text[: len(text) // 2])  # truncated by a kill
    assert main(["evolve", str(config), "--out", str(out), "--resume", "--no-progress"]) == 2
    one_line(capsys, "run.json")
    assert (out / "run.json").read_text() == text[: len(text) // 2]  # left as found


def test_disk_full_during_a_checkpoint_then_resume_ends_bit_identical(world, reference, tmp_path, capsys):
    with tmpfs(tmp_path / "disk", "4m") as mounted:
        if not mounted:
            pytest.skip("mounting a tmpfs needs root and mount(8)")
        config, out = write_config(world, name="full.yml"), tmp_path / "disk" / "run"
        evolve(load_config(config), out, progress=False, stop_after=1)
        filler = fill(tmp_path / "disk")  # the rest of the disk
        assert main(["evolve", str(config), "--out", str(out), "--resume", "--no-progress"]) == 1
        assert "disk full" in one_line(capsys, "environment error")
        filler.unlink()
        assert main(["evolve", str(config), "--out", str(out), "--resume", "--no-progress"]) == 0
        same_run(out, reference)


def test_disk_full_during_the_export_then_resume_ends_bit_identical(world, reference, tmp_path, capsys,
                                                                     monkeypatch):
    import jaxmerge.io as io
    config, out = write_config(world, name="export.yml"), tmp_path / "run"
    write = io._write_weights

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "model"))
    monkeypatch.setattr(io, "_write_weights", full)
    assert main(["evolve", str(config), "--out", str(out), "--no-progress"]) == 1
    assert "disk full" in one_line(capsys, "environment error")
    assert not (out / "model").exists() and json.loads((out / "best.json").read_text())["status"] == "running"
    monkeypatch.setattr(io, "_write_weights", write)
    assert main(["evolve", str(config), "--out", str(out), "--resume", "--no-progress"]) == 0
    same_run(out, reference)
    shutil.rmtree(out)


@pytest.mark.parametrize("mode", ["ps", "dfs"])
def test_sources_whose_tokenizers_disagree_are_refused(world, tmp_path, capsys, mode):
    """Same row count, tokens on other rows: evolve merges rows by index, so it refuses instead of mixing
    unrelated embeddings (jaxmerge merge aligns them with tokenizer_source)."""
    local = build_world(tmp_path / "w")
    tok = json.loads((local / "ft2/tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    vocab["0"], vocab["1"] = vocab["1"], vocab["0"]
    (local / "ft2/tokenizer.json").write_text(json.dumps(tok))
    cfg = yaml.safe_load(write_config(local).read_text())
    if mode == "dfs":
        cfg = {"models": ["ft1", "ft2"], "mode": "dfs", "dfs": {"repeats": 1}, "fitness": cfg["fitness"],
               "search": cfg["search"]}
    (local / "evolve.yml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["evolve", str(local / "evolve.yml"), "--out", str(out), "--no-progress"]) == 2
    one_line(capsys, "different tokenizers")
    assert not out.exists()
