"""Ctrl-C and SIGTERM: stop with exit 130, one line, and nothing half-written, every time.

Python's default SIGINT handling raises KeyboardInterrupt wherever the main thread happens to be. Inside JAX
that is sometimes a place that swallows it (a gc callback of jaxlib: "Exception ignored in _xla_gc_callback"),
so a merge went on and wrote its output with exit 0; and a process that returns normally from an interrupt
tears the interpreter down while XLA's threads still run, which segfaulted (exit 139) about half the time.
So the CLI installs `handling()`: a handler that records the signal and raises KeyboardInterrupt (one that
Python can only report as "Exception ignored" is dropped silently: it has been recorded); outputs
call `check()` right before they commit, so a swallowed interrupt still stops the commit; commits run
`deferred()`, so a second Ctrl-C cannot split one; and the CLI leaves through os._exit after cleaning up
(jaxmerge.cli), skipping the teardown that crashed.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state = {"received": None, "deferring": 0}


def _handler(signum, frame) -> None:
    _state["received"] = signum
    if not _state["deferring"]:
        raise KeyboardInterrupt


def received() -> int | None:
    """The signal number received since `handling()` began, if any."""
    return _state["received"]


def check() -> None:
    """Raise KeyboardInterrupt if a signal arrived, even one whose first KeyboardInterrupt was swallowed."""
    if _state["received"] is not None:
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Signals arriving inside are recorded and raised when the block ends (a commit is never cut in two)."""
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1
    if not _state["deferring"]:
        check()


@contextlib.contextmanager
def handling(restore: bool = True) -> Iterator[None]:
    """Install the handler for SIGINT and SIGTERM for the block (main thread only), then restore the old ones
    (`restore` False: a program about to exit keeps it, recording only, so a late Ctrl-C prints no traceback)."""
    _state["received"] = None
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _handler) for s in SIGNALS}
    old_hook = sys.unraisablehook
    sys.unraisablehook = _quiet(old_hook)
    try:
        yield
    finally:
        _leave(old, old_hook, restore)


def _leave(old: dict, old_hook, restore: bool) -> None:
    if not restore:  # the program is about to exit: later signals are only recorded
        _state["deferring"] += 1
        return
    for s, handler in old.items():
        signal.signal(s, handler)
    sys.unraisablehook = old_hook


def _quiet(hook):
    """An unraisable-exception hook that drops our own KeyboardInterrupt (raised inside a gc callback, where
    Python cannot propagate it and would print a traceback): the signal is recorded and acted on anyway."""
    def quiet(unraisable):
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            hook(unraisable)
    return quiet
