"""Finding input images in files and folders: regular files only, every skip counted and named.

Used by ``mghft predict``, ``mghft interpret`` and the folder dataset readers. Rules:

* A folder is searched recursively in sorted order; hidden entries (names starting with ``.``) are left out.
  Inside folders a file is taken when its extension is one of :data:`~mghft.data.images.IMAGE_EXTENSIONS`
  (derived from the accepted formats, not a hand-written list); other regular files are counted as ignored.
  The loader then goes by content, so a LINE APNG named ``.png`` is read as an animation.
* A file named explicitly is taken whatever its extension.
* Symbolic links are resolved and what they point to is checked: only regular files are taken. FIFOs, sockets,
  devices (a link to ``/dev/zero``), broken links and links to folders (not followed, so no loops) are skipped and
  reported with the reason, never opened: reading a FIFO would block forever.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mghft.data.images import IMAGE_EXTENSIONS, special_file_kind


@dataclass(frozen=True)
class SkippedPath:
    """An input that is not read, and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class FoundImages:
    """What a search found.

    Attributes:
        files: the image files to read, in order (``str`` when found with ``as_str``).
        skipped: inputs that are not regular files (FIFO, device, broken link, ...) or are missing, with reasons.
        ignored: regular files inside folders without an image extension.
    """

    files: list[Any] = field(default_factory=list)
    skipped: list[SkippedPath] = field(default_factory=list)
    ignored: int = 0

    @property
    def missing(self) -> list[SkippedPath]:
        """The explicitly named paths that do not exist."""
        return [s for s in self.skipped if s.reason == MISSING]


MISSING = "no such file or folder"


def check_input_file(path: Path) -> str:
    """``""`` when ``path`` (symbolic links followed) is a regular file, else the reason to skip it.

    Never opens the file, so it cannot block on a FIFO.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "broken symbolic link" if path.is_symlink() else MISSING
    except OSError as exc:
        return f"cannot read ({exc.strerror or type(exc).__name__})"
    kind = special_file_kind(st.st_mode)
    if not kind:
        return ""
    if kind == "folder":
        return "symbolic link to a folder (not followed)" if path.is_symlink() else "folder"
    return f"not a regular file ({kind}{' behind a symbolic link' if path.is_symlink() else ''})"


def find_images(
    paths: Iterable[str | Path],
    *,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    as_str: bool = False,
) -> FoundImages:
    """Image files among ``paths``: files as given, folders searched recursively (see the module rules).

    Args:
        paths: files and folders.
        extensions: extensions taken inside folders (lower case, with the dot).
        as_str: keep the files as ``str`` (a quarter of a ``Path``'s memory, for inputs by the hundred thousand).
    """
    found = FoundImages()
    for item in iter_images(paths, extensions=extensions):
        if isinstance(item, SkippedPath):
            found.skipped.append(item)
        elif item is None:
            found.ignored += 1
        else:
            found.files.append(str(item) if as_str else item)
    return found


def iter_images(
    paths: Iterable[str | Path],
    *,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
) -> Iterator[Path | SkippedPath | None]:
    """What :func:`find_images` finds, one entry at a time and in the same order: an image file (``Path``), a
    skipped input (:class:`SkippedPath`), or ``None`` for an ignored non-image file. Holds nothing found, so a
    caller may keep each file in a smaller form (a ``str`` is about a quarter of a ``Path``)."""
    allowed = {e.lower() for e in extensions}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():  # a folder named explicitly is searched even through a symbolic link
            yield from _walk(path, allowed)
            continue
        reason = check_input_file(path)
        yield SkippedPath(path, reason) if reason else path


def _walk(root: Path, allowed: set[str]) -> Iterator[Path | SkippedPath | None]:
    errors: list[SkippedPath] = []

    def on_error(exc: OSError) -> None:
        errors.append(SkippedPath(Path(exc.filename or root), f"cannot list ({exc.strerror or exc})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        yield from errors
        errors.clear()
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            if (here / d).is_symlink():
                yield SkippedPath(here / d, "symbolic link to a folder (not followed)")
            else:
                keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = here / name
            reason = check_input_file(path)
            if reason:
                yield SkippedPath(path, reason)
            elif path.suffix.lower() in allowed:
                yield path
            else:
                yield None
    yield from errors
