"""Errors whose message is complete for the user: the CLI prints them without a traceback."""
from __future__ import annotations


class StageError(RuntimeError):
    """A stage failed for a reason its message fully states (bad data file, diverging loss, ...)."""
