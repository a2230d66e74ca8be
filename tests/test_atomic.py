"""Atomic outputs: an interrupted write (an exception, a full disk, SIGKILL) never leaves something that looks
like a finished model, never damages the previous output, and a failure in-process leaves no temp dirs.

The kill test runs `jaxmerge.io.save` of a many-shard model in a subprocess whose shard writer is slowed down,
and SIGKILLs it once some shards are on disk.
"""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

import jaxmerge
import jaxmerge.io
from jaxmerge.atomic import atomic_write_text
from jaxmerge.leftovers import sweep_leftovers
from jaxmerge.cli import main
from jaxmerge.errors import EnvironmentFault
from tests.tiny import make_tiny_model


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("atomic")
    return jaxmerge.load(make_tiny_model(root / "src", "llama", seed=3, num_hidden_layers=2))


def fail_after(monkeypatch, shards: int, error: Exception) -> None:
    """Make the safetensors writer raise `error` after `shards` shards were written."""
    real, written = jaxmerge.io.save_file, []

    def save_file(tensors, filename, metadata=None):
        if len(written) == shards:
            Path(filename).write_bytes(b"partial")  # a torn shard, as a full disk would leave
            raise error
        written.append(filename)
        real(tensors, filename, metadata=metadata)
    monkeypatch.setattr(jaxmerge.io, "save_file", save_file)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name)


def test_failure_mid_export_leaves_no_model_and_no_temp(model, tmp_path, monkeypatch):
    fail_after(monkeypatch, 2, RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        jaxmerge.save(model, tmp_path / "out", max_shard_size="20KB")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_failure_mid_overwrite_keeps_the_previous_model(model, tmp_path, monkeypatch):
    jaxmerge.save(model, tmp_path / "out", max_shard_size="20KB")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    fail_after(monkeypatch, 1, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(EnvironmentFault, match="disk full"):
        jaxmerge.save(model, tmp_path / "out", max_shard_size="20KB", overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert leftovers(tmp_path) == []


def test_disk_full_during_merge_is_one_line_exit_1_and_leaves_nothing(model, tmp_path, monkeypatch, capsys):
    recipe = {"merge_method": "linear", "models": [{"model": str(model.path), "parameters": {"weight": 1.0}}]}
    (tmp_path / "r.yml").write_text(yaml.safe_dump(recipe))
    fail_after(monkeypatch, 0, OSError(errno.ENOSPC, "No space left on device"))
    assert main(["merge", str(tmp_path / "r.yml"), str(tmp_path / "merged")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "environment error: disk full" in lines[0]
    assert not (tmp_path / "merged").exists() and leftovers(tmp_path) == []


def test_failed_text_write_keeps_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "best.json"
    atomic_write_text(path, "old")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "new \ud800")  # fails while writing the temporary file
    assert path.read_text() == "old" and leftovers(tmp_path) == []


def test_outputs_get_the_usual_permissions_not_the_private_temp_ones(model, tmp_path):
    """mkdtemp/mkstemp create 0700/0600; a finished output must have what a plain mkdir/open would give."""
    umask = os.umask(0o022)
    os.umask(umask)
    out = jaxmerge.save(model, tmp_path / "out")
    atomic_write_text(tmp_path / "best.json", "{}")
    assert (out.stat().st_mode & 0o777) == 0o777 & ~umask
    assert ((tmp_path / "best.json").stat().st_mode & 0o777) == 0o666 & ~umask


SLOW_SAVE = """
import sys, time
import jaxmerge, jaxmerge.io as io
real = io.save_file
def slow(tensors, filename, metadata=None):
    real(tensors, filename, metadata=metadata)
    time.sleep(0.5)
io.save_file = slow
jaxmerge.save(jaxmerge.load(sys.argv[1]), sys.argv[2], max_shard_size="20KB")
"""


@pytest.mark.slow
def test_sigkill_mid_export_leaves_nothing_that_looks_like_a_model(model, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(model.path), str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(tmp_path.glob(".out.tmp-*/*.safetensors"))) < 2:
        assert proc.poll() is None and time.time() < deadline, "the export ended before the kill point"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    (tmp,) = tmp_path.glob(".out.tmp-*")  # hidden, and without config.json: no loader takes it for a model
    assert not (tmp / "config.json").exists()
    with pytest.raises(jaxmerge.JaxmergeError):
        jaxmerge.load(tmp)
    saved = jaxmerge.load(jaxmerge.save(model, out, max_shard_size="20KB"))  # the leftover does not block a retry
    for a, b in zip(jax.tree.leaves(saved.params), jax.tree.leaves(model.params)):
        np.testing.assert_array_equal(a, b)


def test_overwrite_replaces_and_leaves_no_aside_copy(model, tmp_path):
    jaxmerge.save(model, tmp_path / "out")
    (tmp_path / "out" / "stale.txt").write_text("from the previous output")
    jaxmerge.save(model, tmp_path / "out", overwrite=True)
    assert not (tmp_path / "out" / "stale.txt").exists() and (tmp_path / "out" / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .out.tmp-* nor .out.old-*


def test_sweep_removes_a_killed_writers_leftovers_only(tmp_path):
    run = tmp_path / "run"
    for d in ("model", "plots", ".model.tmp-ab12", ".model.old-cd34", "checkpoints/.x.tmp-1"):
        (run / d).mkdir(parents=True)
    (run / ".model.tmp-ab12" / "model-00001.safetensors").write_bytes(b"partial")
    for f in ("best.json", ".best.json.tmp-9", "plots/fitness.png", "plots/.fitness.png.tmp-7", "model/config.json"):
        (run / f).write_text("x")
    swept = sweep_leftovers(run)
    assert swept == [".best.json.tmp-9", ".model.old-cd34", ".model.tmp-ab12", "plots/.fitness.png.tmp-7"]
    left = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    assert left == ["best.json", "checkpoints", "checkpoints/.x.tmp-1", "model", "model/config.json", "plots",
                    "plots/fitness.png"]
