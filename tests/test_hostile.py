"""Hostile input, full disks, read-only outputs and bad addresses across inspect / merge / eval / demo / evolve.

Every case builds its input under tmp_path and names the exit code and a word the one line must hold. The test
runs `jaxmerge.cli.main` in-process and asserts: that exit code (2 bad input, 1 the environment), exactly one
line on stderr in the CLI's format and no traceback, nothing written or changed under tmp_path, and the
process's peak memory grew by less than 200 MB during the call (tests/hostile.py). A SIGALRM bounds every case,
so a regression that hangs (a FIFO) fails instead of blocking the suite. Cases needing a real tmpfs (full or
read-only) skip, saying why, where mounting is impossible; their injected twins always run.
"""
from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from jaxmerge.cli import main
from tests import hostile_cases as hc
from tests.evolve_world import build_world
from tests.fitness_tiny import add_char_tokenizer
from tests.hostile import LIMIT, peak_growth, snapshot, tmpfs
from tests.tiny import make_tiny_model

TIMEOUT = 60


class Context:
    """What a case builder gets: the shared world, its own tmp dir, monkeypatch, and real mounts."""

    def __init__(self, world: Path, tmp: Path, monkeypatch, stack):
        self.world, self.tmp, self.monkeypatch, self.stack = world, tmp, monkeypatch, stack

    def mount(self, name: str, size: str = "1m", readonly: bool = False) -> Path:
        path = self.tmp / name
        if not self.stack.enter_context(tmpfs(path, size, readonly)):
            pytest.skip("mounting a tmpfs needs root and mount(8); the injected-fault twin of this case runs")
        return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = build_world(tmp_path_factory.mktemp("hostile_world"))
    add_char_tokenizer(make_tiny_model(root / "small_vocab", "llama", seed=5, num_hidden_layers=2, vocab_size=50))
    from jaxmerge.fitness import load_tokenizer
    load_tokenizer(root / "ft1")  # warm the heavy imports: peak growth should measure the case, not an import
    import jax.numpy as jnp
    import jaxmerge.merge.build  # noqa: F401
    jnp.zeros(1).block_until_ready()
    return root


def _alarm(signum, frame):
    raise TimeoutError(f"the command hung for {TIMEOUT} s")


@pytest.mark.parametrize("case", sorted(hc.CASES))
def test_hostile_case_is_one_line_right_exit_nothing_written_bounded_memory(world, tmp_path, monkeypatch,
                                                                             capsys, case):
    build, code, word = hc.CASES[case]
    with contextlib.ExitStack() as stack:
        argv = build(Context(world, tmp_path, monkeypatch, stack))
        before = snapshot(tmp_path)
        capsys.readouterr()
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(TIMEOUT)
        try:
            found, grew = peak_growth(lambda: main(argv))
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
        err = capsys.readouterr().err
        after = snapshot(tmp_path)
    lines = err.strip().splitlines()
    kind = "environment error" if code == 1 else "error"
    assert found == code, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"jaxmerge {argv[0]}: {kind}: ") and word in lines[0], lines[0]
    assert after == before, "the refused command changed files"
    assert grew < LIMIT, f"peak memory grew by {grew / 2**20:.0f} MB"
    if os.environ.get("JAXMERGE_PEAKS"):  # where to append "case<TAB>MB" lines (for the reliability notes)
        with open(os.environ["JAXMERGE_PEAKS"], "a") as f:
            f.write(f"{case}\t{grew / 2**20:.1f}\n")


def test_matrix_has_50_cases_over_every_command():
    commands = {case.split()[0] for case in hc.CASES}
    assert len(hc.CASES) >= 50 and {"inspect", "merge", "eval", "demo", "evolve"} <= commands


def test_a_batch_of_a_billion_is_just_the_items(world, capsys):
    """`eval --batch 10**9` is not refused: it runs the split's items as one batch, at that batch's cost."""
    code, grew = peak_growth(lambda: main(["eval", str(world / "ft1"), str(world / "task/add.yml"),
                                           "--batch", str(10**9)]))
    assert code == 0 and "loglik" in capsys.readouterr().out
    assert grew < LIMIT


def test_merge_into_a_symlinked_output_writes_through_it_and_leaves_nothing(world, tmp_path, monkeypatch):
    with contextlib.ExitStack() as stack:
        ctx = Context(world, tmp_path, monkeypatch, stack)
        assert main(hc.merge(ctx, tmp_path / "real")) == 0
        (tmp_path / "link").symlink_to(tmp_path / "real")
        assert main(hc.merge(ctx, tmp_path / "link", "--overwrite")) == 0
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real" / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "r.yml", "real"]  # no .old-* / .tmp-*
