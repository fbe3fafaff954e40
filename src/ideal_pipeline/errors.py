"""The one mark of an error a person made (a parameter, a budget, a teacher, a missing file), as opposed to a bug.

`kedro run` (the project's `cli.py`) ends such an error with its message alone: no traceback
unless `IDEAL_TRACEBACK=1` asks for one. The message must say what is wrong and what to do.
"""


class UserError(Exception):
    """Raised for a mistake the user can fix; its message is all they need to read."""
