"""Errors a user can act on. The CLI prints them as one message (no traceback), exit 2."""


class PipeError(Exception):
    """Base of every user-facing error: bad input, missing store, locked store..."""
