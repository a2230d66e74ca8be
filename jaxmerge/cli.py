"""`jaxmerge` command line: one subcommand per module in jaxmerge/commands.

Each command module defines HELP, `add_arguments(parser)` and `run(args) -> int`, and imports its heavy
dependencies inside `run`, so `jaxmerge --help` starts fast. A `JaxmergeError` (bad input) or an OS error
becomes one line on stderr and exit code 2; `--debug` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "demo": "jaxmerge.commands.demo",
    "evolve": "jaxmerge.commands.evolve",
    "inspect": "jaxmerge.commands.inspect",
    "eval": "jaxmerge.commands.eval",
    "merge": "jaxmerge.commands.merge",
    "bench": "jaxmerge.commands.bench",
}


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
    args = build_parser().parse_args(argv)
    from jaxmerge.errors import JaxmergeError
    try:
        return int(args._run(args) or 0)
    except (JaxmergeError, OSError) as e:
        if args.debug:
            raise
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"jaxmerge {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jaxmerge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
