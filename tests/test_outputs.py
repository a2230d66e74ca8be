"""Outputs are jaxmerge's only if marked, appear whole or not at all, follow symlinks, and clean up after
dead writers (jaxmerge.atomic, jaxmerge.leftovers, jaxmerge.renames)."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from jaxmerge import leftovers, renames
from jaxmerge.atomic import MARKER, atomic_dir, atomic_write_text, check_file_target, claimed_dir, is_output
from jaxmerge.leftovers import sweep_leftovers
from jaxmerge.errors import EnvironmentFault, JaxmergeError
from jaxmerge.owner import host


def write(target: Path, text: str = "new", **kw) -> Path:
    with atomic_dir(target, **kw) as tmp:
        (tmp / "weights").write_text(text)
    return target


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_every_directory_output_carries_the_marker_and_only_marked_ones_are_replaced(tmp_path):
    out = write(tmp_path / "out", "v1")
    assert is_output(out) and json.loads((out / MARKER).read_text())["written_by"] == "jaxmerge"
    assert (write(out, "v2", overwrite=True) / "weights").read_text() == "v2"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(JaxmergeError, match=f"mine.*{MARKER}.*did not write"):
        write(tmp_path / "mine", overwrite=True)
    assert names(tmp_path / "mine") == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    assert is_output(write(tmp_path / "empty"))  # an empty directory holds nothing to lose
    assert names(tmp_path) == ["empty", "mine", "out"]


def test_the_temporary_has_no_marker_until_complete(tmp_path):
    with atomic_dir(tmp_path / "out") as tmp:
        assert not is_output(tmp) and leftovers.is_leftover(tmp.name)
        assert tmp.name.startswith(f".out.tmp-{host()}.{os.getpid()}-")


def test_a_symlinked_target_is_written_where_it_points_and_the_link_stays(tmp_path):
    real = write(tmp_path / "real", "v1")
    (tmp_path / "link").symlink_to(real)
    write(tmp_path / "link", "v2", overwrite=True)
    assert (tmp_path / "link").is_symlink() and (real / "weights").read_text() == "v2"
    assert names(tmp_path) == ["link", "real"]  # no .link.old-* / .real.tmp-* left behind
    (tmp_path / "file-link").symlink_to(tmp_path / "notes.txt")
    (tmp_path / "notes.txt").write_text("old")
    atomic_write_text(tmp_path / "file-link", "new")
    assert (tmp_path / "file-link").is_symlink() and (tmp_path / "notes.txt").read_text() == "new"


def test_overwrite_is_one_exchange_and_the_fallback_leaves_nothing(tmp_path, monkeypatch):
    out = write(tmp_path / "out", "v1")
    inode = out.stat().st_ino
    write(out, "v2", overwrite=True)
    assert out.stat().st_ino != inode and names(tmp_path) == ["out"]
    monkeypatch.setattr("jaxmerge.atomic.exchange", lambda a, b: False)  # a file system without RENAME_EXCHANGE
    write(out, "v3", overwrite=True)
    assert (out / "weights").read_text() == "v3" and names(tmp_path) == ["out"]


def test_renames_refuse_to_replace_what_appeared_meanwhile(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(FileExistsError):
        renames.rename_new(tmp_path / "a", tmp_path / "b")
    (tmp_path / "a" / "x").write_text("a")
    assert renames.exchange(tmp_path / "a", tmp_path / "b") in (True, False)
    if (tmp_path / "b" / "x").exists():  # swapped (Linux, a file system with RENAME_EXCHANGE)
        assert names(tmp_path / "a") == []


def test_dead_writers_leftovers_are_cleaned_live_ones_kept(tmp_path):
    out = tmp_path / "out"
    dead = tmp_path / f".out.tmp-{host()}.999999999-x"
    live = tmp_path / f".out.tmp-{host()}.{os.getpid()}-y"
    remote = tmp_path / ".out.tmp-elsewhere.1-z"
    legacy = tmp_path / ".out.tmp-abc123"
    for d in (dead, live, remote, legacy):
        d.mkdir()
        (d / "config.json").write_text("{}")
    write(out)
    assert names(tmp_path) == sorted([live.name, remote.name, "out"])


def test_an_overwrite_killed_between_two_renames_is_put_back_by_the_next_writer(tmp_path):
    parked = write(tmp_path / f".out.old-{host()}.999999999-x", "old")
    (tmp_path / f".out.tmp-{host()}.999999999-y").mkdir()  # the new one, complete or not: never used
    with pytest.raises(JaxmergeError, match="non-empty"):  # back in place, so a plain write is refused...
        write(tmp_path / "out")
    assert not parked.exists() and (tmp_path / "out" / "weights").read_text() == "old"
    assert (write(tmp_path / "out", "new", overwrite=True) / "weights").read_text() == "new"  # ...and replaceable
    assert names(tmp_path) == ["out"]


def test_sweep_keeps_a_live_writers_temporary(tmp_path):
    live = tmp_path / f".best.json.tmp-{host()}.{os.getpid()}-a"
    dead = tmp_path / f".best.json.tmp-{host()}.999999999-b"
    live.write_text("x")
    dead.write_text("x")
    assert sweep_leftovers(tmp_path) == [dead.name] and live.exists()


def test_file_outputs_need_overwrite_and_a_writable_place(tmp_path):
    (tmp_path / "r.jsonl").write_text("mine")
    with pytest.raises(JaxmergeError, match="--overwrite"):
        check_file_target(tmp_path / "r.jsonl", overwrite=False)
    assert check_file_target(tmp_path / "r.jsonl", overwrite=True) == tmp_path / "r.jsonl"
    with pytest.raises(JaxmergeError, match="directory"):
        check_file_target(tmp_path, overwrite=True)
    with pytest.raises(JaxmergeError, match="existing directory"):
        atomic_write_text(tmp_path / "no" / "such" / "dir.jsonl", "x")


def test_a_claimed_directory_made_by_a_failed_block_is_removed(tmp_path):
    with pytest.raises(RuntimeError):
        with claimed_dir(tmp_path / "demo", "demo") as d:
            (d / "world").mkdir()
            raise RuntimeError("disk full")
    assert names(tmp_path) == []
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "x").write_text("the user's")
    with pytest.raises(JaxmergeError, match="not touching"):
        with claimed_dir(tmp_path / "mine", "demo"):
            pass
    assert names(tmp_path / "mine") == ["x"]


def test_permission_errors_on_the_output_are_the_environment(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr("jaxmerge.atomic.tempfile.mkdtemp", denied)
    with pytest.raises(EnvironmentFault, match="permission denied"):
        write(tmp_path / "out")


def test_a_leftover_is_never_loaded_and_hostname_is_file_safe(tmp_path):
    import jaxmerge
    (tmp_path / ".m.tmp-h.1-x").mkdir()
    with pytest.raises(JaxmergeError, match="temporary"):
        jaxmerge.load(tmp_path / ".m.tmp-h.1-x")
    assert all(c.isalnum() or c == "-" for c in host()) and len(host()) <= 40 and socket.gethostname()
