"""One error type for everything a user can get wrong, and its one subtype for faults of the machine.

The CLI turns a `JaxmergeError` into a single line on stderr and exit code 2 (bad input); an
`EnvironmentFault` (a full disk, a read-only or unwritable output, an unreachable coordinator) is the same kind
of one-line error with exit code 1, because nothing is wrong with the input and the same command will work
once the machine is fixed. Anything else is a bug and keeps its traceback. Messages say what was expected and
what was found, so the user can fix the input without reading our source.
"""


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
