"""The pieces the evolve run directory builds on: `dir_lock` (one process per directory, stale locks taken
over) and `fingerprint` (a cheap identity of a file or a model that changes when its content does)."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxmerge.errors import JaxmergeError
from jaxmerge.fingerprint import FULL_BYTES, fingerprint, fingerprints
from jaxmerge.lock import dir_lock, lock_path
from jaxmerge.owner import host
from tests.hostile import child_env
from tests.tiny import make_tiny_model

HOLD = """
import sys, time
from jaxmerge.lock import dir_lock
with dir_lock(sys.argv[1], "evolve"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True,
                              env=child_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(JaxmergeError, match=f"pid {holder.pid} on {host()}.*evolve|evolve.*pid {holder.pid}"):
            with dir_lock(run):
                pass
    finally:
        holder.kill()
        holder.wait()
    with dir_lock(run) as info:  # the kernel dropped the dead holder's flock: taken over, and said so
        assert info.stale is not None and info.stale["pid"] == holder.pid
        assert json.loads(info.path.read_text())["pid"] == os.getpid()
    assert not lock_path(run).exists() and not run.exists()  # released; the directory itself never made


def test_the_lock_is_exclusive_in_one_process_too_and_released_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with dir_lock(tmp_path / "run"):
            with pytest.raises(JaxmergeError, match="another jaxmerge process|pid"):
                with dir_lock(tmp_path / "run"):
                    pass
            raise RuntimeError("the run failed")
    with dir_lock(tmp_path / "run") as info:
        assert info.stale is None


def test_without_flock_the_recorded_pid_decides(tmp_path, monkeypatch):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr("jaxmerge.lock.fcntl.flock", no_flock)
    path = lock_path(tmp_path / "run")
    path.write_text(json.dumps({"host": host(), "pid": 999999999, "purpose": "evolve"}))
    with dir_lock(tmp_path / "run") as info:  # a dead pid on this host: stale
        assert info.stale["pid"] == 999999999
    path.write_text(json.dumps({"host": host(), "pid": os.getppid(), "purpose": "evolve"}))
    with pytest.raises(JaxmergeError, match=f"pid {os.getppid()}"):  # alive: refused
        with dir_lock(tmp_path / "run"):
            pass


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("fp") / "m", "llama", seed=0, num_hidden_layers=2)


def test_fingerprint_of_a_model_is_stable_and_sees_changed_weights_and_config(model, tmp_path):
    copy = Path(shutil.copytree(model, tmp_path / "copy"))
    assert fingerprint(copy) == fingerprint(model)  # content, not path or mtime
    raw = bytearray((copy / "model.safetensors").read_bytes())
    raw[-5] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(raw))
    changed = fingerprint(copy)
    assert changed != fingerprint(model)
    cfg = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**cfg, "rms_norm_eps": 1e-6}))
    assert fingerprint(copy) not in (changed, fingerprint(model))


def test_fingerprint_of_a_large_file_reads_samples_and_sees_a_replaced_file(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(FULL_BYTES + 4096))
    first = fingerprint(big)
    start = time.perf_counter()
    assert fingerprint(big) == first and time.perf_counter() - start < 1.0
    big.write_bytes(os.urandom(FULL_BYTES + 4096))  # a re-trained model changes every sampled block
    assert fingerprint(big) != first


def test_fingerprint_uses_the_hf_cache_checksum_and_refuses_a_fifo(tmp_path):
    blob = tmp_path / "blobs" / ("ab" * 32)
    blob.parent.mkdir()
    blob.write_bytes(b"weights")
    (tmp_path / "model.safetensors").symlink_to(blob)
    assert fingerprint(tmp_path / "model.safetensors") == "sha256:" + "ab" * 32
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(JaxmergeError, match="FIFO"):
        fingerprint(tmp_path / "pipe")
    assert set(fingerprints([blob, tmp_path / "model.safetensors"])) == {str(blob), str(tmp_path / "model.safetensors")}
