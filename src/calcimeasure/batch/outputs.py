"""Atomic file writes and the output tables of a batch run.

Every output file is written to a temporary file in the destination folder
(a hidden ``.NAME.XXXX.tmp``), flushed and fsync'ed, then moved over the
destination with :func:`os.replace` — atomic on POSIX and Windows within one
file system. A reader (or a run killed at any moment) sees the old file or the
new one, never a half-written one. :func:`clean_temp_files` removes the
leftovers of killed runs.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import pandas as pd

from ..measure import LESION_COLUMNS

__all__ = [
    "MEASUREMENT_COLUMNS",
    "ERROR_COLUMNS",
    "TEMP_SUFFIX",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "clean_temp_files",
    "measurement_columns",
    "lesion_columns",
    "tables_from_records",
    "write_tables",
    "parquet_available",
]

TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Mode of written files: what ``open()`` would give (mkstemp's temporary files are 0600).
_FILE_MODE = 0o666 & ~_umask()

#: Columns of ``measurements.csv`` (``patient_id`` is inserted after
#: ``patient_key`` only with ``--keep-ids``).
MEASUREMENT_COLUMNS = [
    "file",
    "sha256",
    "patient_key",
    "study_date",
    "body_part",
    "laterality",
    "view",
    "rows",
    "columns",
    "spacing_row_mm",
    "spacing_col_mm",
    "spacing_source",
    "spacing_plane",
    "units",
    "lesion_count",
    "total_area_mm2",
    "total_area_px",
    "roi_polygons",
    "params_digest",
    "calcimeasure_version",
    "elapsed_s",
    "warnings",
    "overlay",
]

#: Columns of ``errors.csv``.
ERROR_COLUMNS = ["file", "sha256", "error", "kind", "reason"]


def atomic_write(path: str | os.PathLike[str], writer: Callable[[IO[bytes]], Any]) -> Path:
    """Write ``path`` atomically: ``writer(fileobj)`` fills a temporary file in the
    same folder, which then replaces ``path``. On any failure the temporary file is
    removed and ``path`` keeps its previous content."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            if hasattr(os, "fchmod"):
                os.fchmod(fh.fileno(), _FILE_MODE)
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def clean_temp_files(folders: Iterable[Path]) -> int:
    """Remove temporary files left by killed runs (``.NAME.XXXX.tmp``); returns the count."""
    removed = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX) and p.is_file():
                p.unlink(missing_ok=True)
                removed += 1
    return removed


def measurement_columns(keep_ids: bool) -> list[str]:
    cols = list(MEASUREMENT_COLUMNS)
    if keep_ids:
        cols.insert(cols.index("patient_key") + 1, "patient_id")
    return cols


def lesion_columns(records: Sequence[dict[str, Any]] = ()) -> list[str]:
    """``file``, ``sha256``, then :data:`calcimeasure.measure.LESION_COLUMNS`, then any
    further column the measurement produced (sorted), so new lesion features flow
    through without a change here."""
    cols = ["file", "sha256", *LESION_COLUMNS]
    extra = sorted({k for r in records for les in r.get("lesions", ()) for k in les} - set(cols))
    return cols + extra


def tables_from_records(
    records: Sequence[dict[str, Any]], *, keep_ids: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(measurements, lesions, errors) DataFrames from worker records, in the given order."""
    image_rows, lesion_rows, error_rows = [], [], []
    for rec in records:
        if rec.get("status") == "ok":
            image_rows.append(rec["image"])
            for les in rec.get("lesions", ()):
                lesion_rows.append({"file": rec["image"]["file"], "sha256": rec["image"]["sha256"], **les})
        else:
            error_rows.append(rec["error"])
    mcols = measurement_columns(keep_ids)
    measurements = pd.DataFrame(image_rows, columns=mcols)
    lesions = pd.DataFrame(lesion_rows, columns=lesion_columns(records))
    errors = pd.DataFrame(error_rows, columns=ERROR_COLUMNS)
    return measurements, lesions, errors


def parquet_available() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode("utf-8")


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    def writer(fh: IO[bytes]) -> None:
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False, engine="pyarrow")
        fh.write(buf.getvalue())

    atomic_write(path, writer)


def write_tables(
    out_dir: Path, records: Sequence[dict[str, Any]], *, keep_ids: bool = False, parquet: bool = False
) -> dict[str, Path]:
    """Write ``measurements``, ``lesions`` and ``errors`` as CSV (always, header even
    when empty) and Parquet (when asked) into ``out_dir``, each atomically."""
    measurements, lesions, errors = tables_from_records(records, keep_ids=keep_ids)
    written: dict[str, Path] = {}
    for name, frame in (("measurements", measurements), ("lesions", lesions), ("errors", errors)):
        written[f"{name}.csv"] = atomic_write_bytes(out_dir / f"{name}.csv", _csv_bytes(frame))
        if parquet:
            path = out_dir / f"{name}.parquet"
            _write_parquet(path, frame)
            written[f"{name}.parquet"] = path
    return written
