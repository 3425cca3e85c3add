"""The project's error types: every mistake a user can make is raised as one of these.

``mghft.cli.main`` turns them into one ``error: …`` line (plus an optional ``hint: …`` line) and an exit code;
library code raises them with the file, row, field or flag at fault and, where known, the fix.
"""

from __future__ import annotations


class MghftError(Exception):
    """A failure the user can act on: the message names what is wrong and where; ``hint`` says the fix.

    Attributes:
        hint: one line with the fix, or ``None``.
        exit_code: the process exit code the CLI uses (1: runtime failure).
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UsageError(MghftError):
    """A mistaken invocation: a flag, argument or config field that cannot work (exit code 2)."""

    exit_code = 2


class NotFoundError(MghftError, FileNotFoundError):
    """A file or folder the user named is not there (exit code 1); the message names the path."""


class UnknownNameError(UsageError, KeyError):
    """A name (a model variant, a view, a backend) that is not registered; the message lists the known ones."""


class DataError(MghftError, ValueError):
    """The data cannot serve the run as configured (e.g. a split left empty); the message names the dataset."""


def did_you_mean(word: str, choices: object, cutoff: float = 0.6) -> str:
    """``" (did you mean 'test'?)"`` for the choice closest to a mistyped ``word``, or ``""`` when none is close.

    ``choices`` is any iterable of strings (choices of a flag, config fields, provider names); ``cutoff`` is
    :func:`difflib.get_close_matches`' similarity threshold (0 to 1).
    """
    import difflib

    names = [str(c) for c in choices]  # type: ignore[attr-defined]
    close = difflib.get_close_matches(word, names, n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""


def first_few(items: object, n: int = 5, sep: str = ", ") -> str:
    """The first ``n`` items joined, and how many more: ``"a, b, c and 137 more"`` (an error line stays short).

    Where the rest matters, the caller writes the whole list to a file and names it in the message.
    """
    shown = [str(i) for i in items]  # type: ignore[attr-defined]
    head = sep.join(shown[:n])
    return head if len(shown) <= n else f"{head} and {len(shown) - n} more"
