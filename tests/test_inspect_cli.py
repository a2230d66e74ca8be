"""`jaxmerge inspect`: facts of a saved model, JSON that matches the spec, and bad input as exit 2 + one line."""
import json
import subprocess
import sys

import numpy as np
import pytest

import jaxmerge
from jaxmerge.cli import main
from tests.tiny import BREAKERS, broken_copy, make_tiny_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny qwen2 (tied, GQA 4:1) loaded and re-saved by us in 3+ shards."""
    root = tmp_path_factory.mktemp("inspect")
    src = make_tiny_model(root / "src", "qwen2", seed=5, tie_word_embeddings=True, num_key_value_heads=1)
    return jaxmerge.save(jaxmerge.load(src), root / "saved", max_shard_size="50KB")


def test_json_matches_the_spec_and_the_files(saved, capsys):
    assert main(["inspect", str(saved), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    model = jaxmerge.load(saved)
    spec = model.spec
    assert info["family"] == "qwen2" and info["layers"] == spec.num_layers == 3
    assert (info["hidden_size"], info["heads"], info["kv_heads"], info["head_dim"]) == (32, 4, 1, 8)
    assert info["vocab_size"] == 97 and info["tied_embeddings"] is True
    assert info["parameters"] == model.num_parameters == sum(
        int(np.prod(s)) for s in jax_shapes(model.params))
    assert info["dtype"] == "float32"
    assert info["shards"] == len(list(saved.glob("*.safetensors"))) > 2


def jax_shapes(tree):
    for v in tree.values():
        yield from (jax_shapes(v) if isinstance(v, dict) else [np.shape(v)])


def test_table_names_family_layers_parameters_dtype_shards(saved, capsys):
    assert main(["inspect", str(saved)]) == 0
    out = capsys.readouterr().out
    count = f"{jaxmerge.load(saved).num_parameters:,}"
    for word in ("family", "qwen2", "layers", "parameters", count, "dtype", "float32", "shards"):
        assert word in out, word


@pytest.mark.parametrize("how", BREAKERS)
def test_bad_input_exits_2_with_one_line(single_file, tmp_path, capsys, how):
    word = broken_copy(single_file, tmp_path / "bad", how)
    assert main(["inspect", str(tmp_path / "bad")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1
    assert lines[0].startswith("jaxmerge inspect: error: ") and word in lines[0]


@pytest.fixture(scope="module")
def single_file(saved):
    """The breakers edit model.safetensors, so give them a one-file copy of the saved model."""
    return jaxmerge.save(jaxmerge.load(saved), saved.parent / "single")


def test_missing_directory_exits_2_from_the_installed_command(tmp_path):
    """The real console entry point (not just main()): exit status and stderr as a user sees them."""
    run = subprocess.run([sys.executable, "-m", "jaxmerge.cli", "inspect", str(tmp_path / "nowhere")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "nowhere" in lines[0]
