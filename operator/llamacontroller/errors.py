"""The one kind of error a person fixes by changing what they gave or where they run.

A ``UserError``'s message is one line that says what is wrong and where (a file, a field, a port),
so the command line prints it as it is and exits 2, without a traceback (``--verbose`` shows one).
Every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or an environment that cannot serve: missing files, taken ports, no cluster."""
