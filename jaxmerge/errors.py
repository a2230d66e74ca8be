"""One error type for everything a user can get wrong, its one subtype for faults of the machine, and the one
strict-keys check every reader uses.

The CLI turns a `JaxmergeError` into a single line on stderr and exit code 2 (bad input); an
`EnvironmentFault` (a full disk, a read-only or unwritable output, an unreachable coordinator) is the same kind
of one-line error with exit code 1, because nothing is wrong with the input and the same command will work
once the machine is fixed. Anything else is a bug and keeps its traceback. Messages say what was expected and
what was found, so the user can fix the input without reading our source.
"""
from __future__ import annotations

from typing import Any, Iterable


class JaxmergeError(Exception):
    """Bad input: a path, a file, a config value. The message is one line: what was expected, what was found."""
    exit_code = 2
    kind = "error"


class EnvironmentFault(JaxmergeError):
    """The machine, not the input: ENOSPC, EROFS, EACCES on an output, a coordinator that never answers."""
    exit_code = 1
    kind = "environment error"


def expect(condition: bool, message: str) -> None:
    """Raise `JaxmergeError(message)` unless `condition` holds (host-side validation only, never on traced values)."""
    if not condition:
        raise JaxmergeError(message)


def expect_keys(value: Any, allowed: Iterable[str], where: str, required: Iterable[str] = ()) -> dict:
    """`value` as a mapping whose keys are all in `allowed` and include `required`; a typo never falls back to
    a default silently. None (an empty YAML section) reads as {}."""
    value = {} if value is None else value
    expect(isinstance(value, dict), f"{where}: expected a mapping, found {type(value).__name__}")
    allowed = set(allowed)
    unknown = sorted(str(k) for k in value if k not in allowed)
    expect(not unknown, f"{where}: unknown key(s) {unknown} (allowed: {sorted(allowed)})")
    missing = [k for k in required if k not in value]
    expect(not missing, f"{where}: expected key(s) {missing}, found them missing")
    return value
