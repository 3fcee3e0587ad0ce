"""The one exception type for mistakes a user can cause, and where warnings go.

The CLI turns a `UserError` into one sentence on stderr and a non-zero exit; anything else
is a bug and keeps its traceback. Warnings go to stderr too, whoever calls the library:
standard output is for a command's result alone (`--json` prints one document there).
"""

import sys


class UserError(Exception):
    """Bad input the user can fix: a missing path, a malformed line, an unknown name."""


def to_stderr(message: str) -> None:
    """The default warning hook of the library's functions (they take `warn=` to redirect it)."""
    print(message, file=sys.stderr, flush=True)
