"""Labels checked against the class list, so that a typo never becomes a class of its own.

A dataset's classes are either declared (``data.classes``, in label order) or read from the labels themselves. A
declared list is the authority: a label outside it stops the run naming the row (with the nearest class). An
inferred list is checked for near-duplicates: two label names that differ only in case, spaces, ``_`` or ``-``, or
within a small edit distance (:func:`near_duplicate`: ``happpiness`` and ``happiness``), stop the run naming the
rows of the rarer one; a pair that really is two classes is declared with ``data.classes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from mghft.data.errors import DataFormatError


def edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance between ``a`` and ``b``: insertions, deletions, substitutions and swaps of
    adjacent characters, each costing 1 (Damerau, CACM 1964; Levenshtein, 1966)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]


def _fold(name: str) -> str:
    return "".join(c for c in name.casefold() if c not in " _-")


def near_duplicate(a: str, b: str) -> bool:
    """Whether two class names are more likely one name mistyped than two classes: equal up to case, spaces, ``_``
    and ``-``, or within edit distance 1 (names of at least 4 characters) or 2 (at least 8 characters)."""
    fa, fb = _fold(a), _fold(b)
    if fa == fb:
        return True
    shortest = min(len(fa), len(fb))
    limit = 2 if shortest >= 8 else 1 if shortest >= 4 else 0
    return limit > 0 and abs(len(fa) - len(fb)) <= limit and edit_distance(fa, fb) <= limit


def nearest(name: str, classes: Iterable[str]) -> str | None:
    """The class ``name`` is a near-duplicate of (:func:`near_duplicate`), if any."""
    close = [c for c in classes if near_duplicate(name, c)]
    return min(close, key=lambda c: edit_distance(_fold(name), _fold(c))) if close else None


def _rows(lines: Sequence[int], unit: str) -> str:
    """``3 rows, lines 4, 9, 12`` (line numbers only where the rows have them)."""
    known = [n for n in lines if n]
    where = ""
    if known:
        shown = ", ".join(str(n) for n in known[:5]) + (f" and {len(known) - 5} more" if len(known) > 5 else "")
        where = f", line{'s' if len(known) > 1 else ''} {shown}"
    return f"{len(lines)} {unit}{'s' if len(lines) != 1 else ''}{where}"


def check_near_duplicates(file: str | Path, rows: Sequence[tuple[int, str]], *, unit: str = "row") -> None:
    """Stop when two labels of a class list inferred from the labels look like one name mistyped
    (:func:`near_duplicate`); declared classes (``data.classes``) are not checked: declaring both says both are
    classes.

    Args:
        file: the manifest or dataset folder, for the message.
        rows: ``(line, label name)`` of every labelled row (``line``: 1-based, or 0 when rows have none).
        unit: what a row is called in the message (``row``, ``class folder``).

    Raises:
        DataFormatError: naming the rarer label, its rows and the label it is close to, with the fix.
    """
    by_label: dict[str, list[int]] = {}
    for line, label in rows:
        by_label.setdefault(label, []).append(line)
    names = sorted(by_label, key=lambda n: (-len(by_label[n]), n))  # the most frequent first
    for i, common in enumerate(names):
        for rare in names[i + 1 :]:
            if near_duplicate(common, rare):
                lines = by_label[rare]
                err = DataFormatError(
                    file,
                    f"label {rare!r} ({_rows(lines, unit)}) looks like a typo of {common!r} "
                    f"({len(by_label[common])} {unit}s): it would train as a class of its own",
                    line=lines[0] or None,
                    field="label",
                )
                err.hint = (
                    f"correct the label, or, if {rare!r} is a class of its own, declare the classes: "
                    f"--set 'data.classes={sorted(by_label)}'"
                )
                raise err
