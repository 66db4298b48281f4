"""User-facing errors.

Every problem a user can cause (a bad file, mismatched sizes, a wrong
checkpoint) is raised as :class:`CausalFuseError` with a message that names the
file and the problem. The command line prints the message and exits with
status 2 instead of showing a traceback.
"""

from __future__ import annotations

__all__ = ["CausalFuseError", "CausalFuseWarning"]


class CausalFuseError(Exception):
    """An error caused by the user's input, with a message meant for them."""


class CausalFuseWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. a slower fallback).

    The command line prints it as one line, ``causalfuse: warning: ...``.
    """
