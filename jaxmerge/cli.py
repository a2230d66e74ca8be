"""`jaxmerge` command line: one subcommand per module in jaxmerge/commands.

Each command module defines HELP, `add_arguments(parser)` and `run(args) -> int`, and imports its heavy
dependencies inside `run`, so `jaxmerge --help` starts fast. How a command ends:
- bad input (`JaxmergeError`, or an OS error about an input): one line on stderr, exit 2;
- a fault of the machine (`EnvironmentFault`; a full disk or read-only file system met anywhere): one line
  saying so, exit 1;
- SIGINT / SIGTERM: outputs in progress are discarded (jaxmerge.atomic), one line, exit 130;
- `--debug` shows the traceback instead of the line. Anything else is a bug and keeps its traceback.
Run as a program (`argv` None), the process leaves through os._exit once the command is done (`_leave`).
"""
from __future__ import annotations

import argparse
import atexit
import importlib
import os
import signal
import sys
from typing import NoReturn

from jaxmerge import interrupt
from jaxmerge.hugepages import with_huge_pages

COMMANDS = {
    "demo": "jaxmerge.commands.demo",
    "evolve": "jaxmerge.commands.evolve",
    "inspect": "jaxmerge.commands.inspect",
    "eval": "jaxmerge.commands.eval",
    "merge": "jaxmerge.commands.merge",
    "export": "jaxmerge.commands.export",
    "bench": "jaxmerge.commands.bench",
}
INTERRUPTED = 130
# Commands that run compiled programs again and again in one process, where huge pages spare every call its
# page faults (a whole-tree merge_params 2.2x faster, jaxmerge.hugepages). A one-shot `merge` touches each
# buffer once: it ran 0.4 s slower with them (six runs each way), so it does without.
REPEATING = ("evolve", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxmerge", description="Evolutionary model merging in JAX.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        cmd.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; `argv` None means this is the program itself (see the module docstring), which first
    runs itself again with huge pages for XLA's buffers where they help (REPEATING, jaxmerge.hugepages)."""
    if argv is None and repeats_programs(sys.argv[1:]):
        with_huge_pages()
    with interrupt.handling(restore=argv is not None):
        try:
            code = _run(argv)
        except KeyboardInterrupt:
            code = _interrupted(argv)
    if argv is None:
        _leave(code)
    return code


def repeats_programs(args: list[str]) -> bool:
    """Whether the command of these program arguments is one of REPEATING (its first word that is no option)."""
    return next((a for a in args if not a.startswith("-")), None) in REPEATING


def _leave(code: int) -> NoReturn:
    """The program's end: the atexit cleanups (temporary folders, jax.distributed's shutdown), then os._exit,
    which skips the interpreter's teardown: freeing what the OS frees at once took 0.35 s of a 6 s merge
    (benchmarks/RESULTS.md). After an interrupt the cleanups are skipped too: a teardown while XLA's threads
    still run is what segfaulted after Ctrl-C (jaxmerge.interrupt)."""
    if code != INTERRUPTED:
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that has gone (`| head`), a closed stream
            pass
    os._exit(code)


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args._run(args) or 0)
        interrupt.check()  # a Ctrl-C that something swallowed on the way still ends the command as one
        return code
    except KeyboardInterrupt:
        raise
    except Exception as e:
        if interrupt.received() is not None:  # e.g. an XLA error wrapping an interrupted host callback
            raise KeyboardInterrupt from None
        if args.debug:
            raise
        return _report(args.command, e)


def _report(command: str, error: Exception) -> int:
    """One line for a JaxmergeError or an OS error; anything else is re-raised (a bug keeps its traceback)."""
    from jaxmerge.errors import JaxmergeError
    from jaxmerge.files import describe, is_environment
    if isinstance(error, JaxmergeError):
        kind, code, message = error.kind, error.exit_code, _first_line(error)
    elif isinstance(error, OSError) and is_environment(error):
        where = f": {error.filename}" if error.filename else ""
        kind, code, message = "environment error", 1, f"{describe(error)}{where}"
    elif isinstance(error, OSError):
        kind, code, message = "error", 2, _first_line(error)
    elif isinstance(error, MemoryError):
        kind, code, message = "environment error", 1, "out of memory (MemoryError): try a smaller batch or model"
    else:
        raise error
    print(f"jaxmerge {command}: {kind}: {message}", file=sys.stderr)
    return code


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _interrupted(argv: list[str] | None) -> int:
    command = next((a for a in (argv if argv is not None else sys.argv[1:]) if a in COMMANDS), "")
    signal_name = "SIGTERM" if interrupt.received() == signal.SIGTERM else "Ctrl-C"
    print(f"jaxmerge {command}: interrupted ({signal_name}): outputs in progress were discarded", file=sys.stderr)
    return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
