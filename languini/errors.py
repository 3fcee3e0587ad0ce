"""The one exception type for mistakes a user can cause.

The CLI turns a `UserError` into one sentence on stderr and a non-zero exit; anything else
is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input the user can fix: a missing path, a malformed line, an unknown name."""
