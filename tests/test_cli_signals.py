"""How a command ends (jaxmerge.cli, jaxmerge.interrupt): signals -> 130 and one line, even when something
swallowed the KeyboardInterrupt; environment faults met anywhere -> 1; bugs keep their traceback."""
from __future__ import annotations

import errno
import os
import signal
import sys

import pytest

from jaxmerge import interrupt
from jaxmerge.cli import main


def run_as(monkeypatch, body):
    """Run `jaxmerge inspect X` with the command's body replaced by `body`."""
    monkeypatch.setattr("jaxmerge.commands.inspect.run", lambda args: body())
    return main(["inspect", "x"])


def test_a_signal_is_130_with_one_line_and_the_handlers_come_back(monkeypatch, capsys):
    before = signal.getsignal(signal.SIGTERM)
    assert run_as(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGTERM)) == 130
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["jaxmerge inspect: interrupted (SIGTERM): outputs in progress were discarded"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_swallowed_interrupt_still_ends_the_command_as_one(monkeypatch, capsys):
    def swallowing():
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass  # as jaxlib's gc callback does ("Exception ignored in ...")
        return 0
    assert run_as(monkeypatch, swallowing) == 130
    assert "interrupted (Ctrl-C)" in capsys.readouterr().err


def test_an_error_caused_by_the_interrupt_is_reported_as_the_interrupt(monkeypatch, capsys):
    def callback_error():
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            raise RuntimeError("XlaRuntimeError: CpuCallback error: KeyboardInterrupt") from None
    assert run_as(monkeypatch, callback_error) == 130
    assert "Traceback" not in capsys.readouterr().err


def test_deferred_blocks_finish_before_the_interrupt():
    with interrupt.handling():
        done = []
        with pytest.raises(KeyboardInterrupt):
            with interrupt.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                done.append("the commit finished")
        assert done == ["the commit finished"]


def test_environment_faults_anywhere_are_exit_1_and_bugs_keep_their_traceback(monkeypatch, capsys):
    def full():
        raise OSError(errno.ENOSPC, "No space left on device", "/cache/x")
    assert run_as(monkeypatch, full) == 1
    assert capsys.readouterr().err.strip() == ("jaxmerge inspect: environment error: disk full (no space left on "
                                               "device): /cache/x")
    assert run_as(monkeypatch, lambda: (_ for _ in ()).throw(MemoryError())) == 1
    with pytest.raises(ZeroDivisionError):
        run_as(monkeypatch, lambda: 1 / 0)


def test_as_the_program_an_exception_is_not_swallowed_on_the_way_out(monkeypatch):
    handlers = {s: signal.getsignal(s) for s in interrupt.SIGNALS}
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # restored when the test ends
    monkeypatch.setitem(interrupt._state, "deferring", 0)
    try:
        with pytest.raises(ValueError):
            with interrupt.handling(restore=False):  # the program's mode keeps its handlers on the way out
                raise ValueError("a bug")
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
