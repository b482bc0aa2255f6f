"""Find candidate image files under paths given on the command line."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["iter_files"]

#: Names never worth opening (OS and tool droppings).
_SKIP_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", "DICOMDIR"}


def iter_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Yield the files named by ``paths``, recursing into folders, in sorted order.

    Every regular file is yielded whatever its extension (formats are
    recognised by content when read); hidden files and folders (starting with
    a dot) and well-known non-image droppings are skipped. A path that does
    not exist is yielded as is, so that the caller reports it.
    """
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.startswith(".") or name in _SKIP_NAMES:
                        continue
                    yield Path(root) / name
        else:
            yield path
