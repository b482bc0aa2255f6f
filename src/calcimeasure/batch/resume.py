"""The per-image record store behind ``--resume``: ``DIR/.state/``.

One small JSON file per finished image, written atomically (temporary file +
:func:`os.replace`) *after* the image's overlay, so a run killed at any moment
leaves only complete records. A record is keyed by

* the input file (a hash of its absolute path),
* the SHA-256 of the file's content (a file changed since is measured again),
* the *settings key*: a hash of the segmentation parameters, the spacing
  override, the file's ROI polygons, ``--keep-ids``, the patient-key salt and the
  calcimeasure version (any change re-measures; nothing is mixed).

File names: ``<path16>-<sha16>-<settings12>.json`` for measured images and
``err-<path16>-<settings12>.json`` for failures (failures are tried again on
``--resume``; the error record is removed when the image then succeeds).

The CSV tables are rebuilt from these records, so they never lose or duplicate
a row whatever the moment the run was killed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .outputs import atomic_write_json
from .worker import ImageTask, file_sha256

__all__ = ["StateStore", "settings_key", "path_key", "file_sha256"]

log = logging.getLogger("calcimeasure.batch")


def path_key(path: str | os.PathLike[str]) -> str:
    """16 hex digits identifying an input file by its absolute path."""
    return hashlib.sha256(os.path.abspath(os.fspath(path)).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def settings_key(task: ImageTask, version: str) -> str:
    """12 hex digits over everything but the file that changes a record (see module doc)."""
    return task_settings_key(task, ("path", "overlay_dir"), version)


def task_settings_key(task: Any, ignore: tuple[str, ...], version: str) -> str:
    """12 hex digits over the fields of a task dataclass but ``ignore`` (paths, output folders).

    The salt enters only as a short hash; the software version always enters.
    """
    d = asdict(task)
    for k in ignore:
        d.pop(k)
    salt = d.pop("salt")
    if salt is None:
        salt = os.environ.get("CALCIMEASURE_PATIENT_SALT")
    d["salt_hash"] = hashlib.sha256(salt.encode()).hexdigest()[:8] if salt else None
    d["version"] = version
    text = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class StateStore:
    """Records of finished images in ``out_dir/.state``."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = Path(out_dir) / ".state"
        self._by_stat: dict[tuple[str, str, int, int], str] = {}

    def create(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def files(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob("*.json") if not p.name.startswith("."))

    def is_empty(self) -> bool:
        return not self.files()

    def clear(self) -> int:
        n = 0
        for p in self.files():
            p.unlink(missing_ok=True)
            n += 1
        return n

    @staticmethod
    def ok_name(pkey: str, sha256: str, skey: str) -> str:
        return f"{pkey}-{sha256[:16]}-{skey}.json"

    @staticmethod
    def error_name(pkey: str, skey: str) -> str:
        return f"err-{pkey}-{skey}.json"

    def index(self) -> None:
        """Index finished records by (path key, settings key, size, mtime) so that
        unchanged files need not be hashed again on resume."""
        self._by_stat.clear()
        for p in self.files():
            if p.name.startswith("err-"):
                continue
            try:
                st = json.loads(p.read_text("utf-8")).get("state", {})
                self._by_stat[(st["path_key"], st["settings_key"], st["size"], st["mtime_ns"])] = p.name
            except (OSError, ValueError, KeyError, AttributeError):
                log.warning("ignoring unreadable state record %s", p)

    def find_done(self, path: str, skey: str, *, hash_if_needed: bool = True) -> str | None:
        """Name of the finished record of ``path`` under ``skey``, or ``None``."""
        pkey = path_key(path)
        try:
            st = os.stat(path)
        except OSError:
            return None
        name = self._by_stat.get((pkey, skey, st.st_size, st.st_mtime_ns))
        if name and (self.dir / name).is_file():
            return name
        if not hash_if_needed:
            return None
        sha = file_sha256(path)
        if sha is None:
            return None
        name = self.ok_name(pkey, sha, skey)
        return name if (self.dir / name).is_file() else None

    def read(self, name: str) -> dict[str, Any]:
        return json.loads((self.dir / name).read_text("utf-8"))

    def put(self, path: str, skey: str, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Store ``record`` atomically; returns (name, the record as stored and read back)."""
        pkey = path_key(path)
        if record.get("status") == "ok":
            sha = record["image"]["sha256"]
            try:
                st = os.stat(path)
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:
                size, mtime = -1, -1
            name = self.ok_name(pkey, sha, skey)
            state = {"path_key": pkey, "settings_key": skey, "sha256": sha, "size": size, "mtime_ns": mtime,
                     "path": os.path.abspath(path)}
        else:
            name = self.error_name(pkey, skey)
            state = {"path_key": pkey, "settings_key": skey, "path": os.path.abspath(path)}
        stored = {**record, "state": state}
        stored.pop("traceback", None)
        atomic_write_json(self.dir / name, stored)
        if record.get("status") == "ok":
            (self.dir / self.error_name(pkey, skey)).unlink(missing_ok=True)
        # What a later run reads back: identical values (JSON round trip) for rows now and after a resume.
        return name, json.loads(json.dumps(stored))
