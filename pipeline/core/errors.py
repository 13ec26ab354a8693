"""Every error a user can act on, in one place. The CLI prints them as one message (no
traceback) and exits with `exit_code`: 2 for usage/input problems, 1 for integrity
(a damaged or foreign store shard, an unreadable run file).
"""
from __future__ import annotations


class PipeError(Exception):
    """Base of every user-facing error: bad input, missing store, locked store..."""

    exit_code = 2


class NotApplicable(PipeError):
    """A command that does not apply to the run it is given: explaining a head without
    attention, ranking with a run that gives no score per post, searching a run without tags."""


class PostsError(PipeError):
    """A posts file that breaks the contract; the message names file, rows and columns."""


class StoreError(PipeError):
    """A store problem the user can act on."""


class StoreLocked(StoreError):
    """Another process holds the store's lock."""


class IntegrityError(PipeError):
    """Bytes on disk that are not what was written: a corrupted, truncated or foreign shard,
    an unreadable run file. The message names the file and what to do."""

    exit_code = 1


class ImageError(PipeError):
    """An input image that cannot be used; `reason` is what failures.parquet records."""

    def __init__(self, reason: str, source: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.source = source  # fingerprint of the bytes that failed (or MISSING)


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (exit 130) or SIGTERM (exit 143): a KeyboardInterrupt, so code that
    stops on Ctrl-C stops on it too; the CLI prints its one-line message and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def did_you_mean(name: str, known: "list[str] | set[str]") -> str:
    """`; did you mean 'x'?` for the closest known names (difflib), or "" when none is close."""
    import difflib

    close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
