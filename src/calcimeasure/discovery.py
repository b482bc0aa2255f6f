"""Find candidate image files under paths given on the command line."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["iter_files", "DOCUMENT_EXTENSIONS"]

#: Names never worth opening (OS and tool droppings).
_SKIP_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", "DICOMDIR"}

#: Extensions of documents that sit beside images in exported folders (reports,
#: manifests, ground truth). Skipped when walking a folder; a file named
#: explicitly is always read. Any other file — including the extension-less,
#: UID-named files of PACS exports — is tried and recognised by content.
DOCUMENT_EXTENSIONS = frozenset(
    {".md", ".txt", ".json", ".csv", ".tsv", ".html", ".htm", ".pdf", ".xml", ".yaml", ".yml",
     ".toml", ".py", ".ipynb", ".log", ".rst", ".doc", ".docx", ".xls", ".xlsx", ".zip"}
)


def iter_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Yield the files named by ``paths``, recursing into folders, in sorted order.

    Inside folders every regular file is yielded whatever its extension
    (formats are recognised by content when read), except hidden files and
    folders (starting with a dot), well-known droppings and documents
    (:data:`DOCUMENT_EXTENSIONS`). A path given explicitly is always yielded,
    even if it does not exist, so that the caller reports it.
    """
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.startswith(".") or name in _SKIP_NAMES:
                        continue
                    if Path(name).suffix.lower() in DOCUMENT_EXTENSIONS:
                        continue
                    yield Path(root) / name
        else:
            yield path
