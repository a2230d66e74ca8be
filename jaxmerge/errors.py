"""One error type for everything a user can get wrong.

The CLI turns a `JaxmergeError` into a single line on stderr and exit code 2; anything else is a bug and keeps
its traceback. Messages say what was expected and what was found, so the user can fix the input without
reading our source.
"""


class JaxmergeError(Exception):
    """Bad input: a path, a file, a config value. The message is one line: what was expected, what was found."""


def expect(condition: bool, message: str) -> None:
    """Raise `JaxmergeError(message)` unless `condition` holds (host-side validation only, never on traced values)."""
    if not condition:
        raise JaxmergeError(message)
