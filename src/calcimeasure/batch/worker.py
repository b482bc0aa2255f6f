"""The per-image worker: :func:`measure_one`.

Plain data in (:class:`ImageTask`), plain JSON-able data out (a record dict):
the worker reads the file by path itself and never returns pixel arrays, so it
runs unchanged in a ``ProcessPoolExecutor``, a Dask ``client.submit`` or inline.
It never raises for a bad image: every failure becomes an error record.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CalcimeasureError, ImageReadError, ParameterError

__all__ = ["ImageTask", "measure_one", "error_record", "plain", "file_sha256"]


@dataclass(frozen=True)
class ImageTask:
    """Everything the worker needs to measure one image (picklable, no arrays).

    Attributes
    ----------
    path : str
        The image file, as given (it is reported so in the tables).
    params : dict
        :meth:`SegmentationParams.to_dict` of the parameters.
    spacing_mm : (float, float) or None
        Spacing override (``--spacing``), recorded as ``user``.
    roi : list of polygons or None
        Polygons of [row, col] vertices; ``None`` = whole image.
    keep_ids : bool
        Also report the raw Patient ID.
    overlay_dir : str or None
        Folder for the overlay PNG (must be reachable by the worker); ``None`` = no overlay.
    salt : str or None
        Patient-key salt (default: the worker's ``CALCIMEASURE_PATIENT_SALT``). Not shown in repr.
    """

    path: str
    params: dict[str, Any] = field(default_factory=dict)
    spacing_mm: tuple[float, float] | None = None
    roi: list | None = None
    keep_ids: bool = False
    overlay_dir: str | None = None
    salt: str | None = field(default=None, repr=False)


def plain(value: Any) -> Any:
    """A JSON-safe plain Python value (numpy scalars unwrapped, NaN/NA → None)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return None if math.isnan(v) or math.isinf(v) else v
    if isinstance(value, str):
        return value
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return None
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value)


def error_record(path: str, exc: BaseException, sha256: str | None = None, *, tb: str | None = None) -> dict[str, Any]:
    """The record of a failed image: typed error name and reason; unexpected
    exceptions become ``InternalError`` with the original type in the reason."""
    if isinstance(exc, CalcimeasureError):
        name = type(exc).__name__
        kind = getattr(exc, "kind", None) or ("parameter" if isinstance(exc, ParameterError) else "error")
        reason = exc.reason if isinstance(exc, ImageReadError) else str(exc)
    else:
        name, kind = "InternalError", "internal"
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    rec: dict[str, Any] = {
        "status": "error",
        "error": {"file": path, "sha256": sha256, "error": name, "kind": kind, "reason": reason},
    }
    if tb:
        rec["traceback"] = tb
    return rec


def file_sha256(path: str | os.PathLike[str]) -> str | None:
    """SHA-256 of a file's bytes (streamed), or ``None`` when it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def _iso(d: Any) -> str | None:
    return d.isoformat() if d is not None else None


def measure_one(task: ImageTask) -> dict[str, Any]:
    """Read, segment and measure one image; write its overlay; return a record.

    Returns
    -------
    dict
        ``{"status": "ok", "image": {...}, "lesions": [{...}, ...]}`` — one row of
        ``measurements.csv`` and the image's rows of ``lesions.csv`` — or
        ``{"status": "error", "error": {file, sha256, error, kind, reason}}``
        (plus ``traceback`` for internal errors). Never raises for a bad image.
    """
    from .. import __version__
    from ..io import read_image
    from ..measure import measure
    from ..params import SegmentationParams

    start = time.perf_counter()
    sha256 = None
    try:
        params = SegmentationParams.from_dict(task.params)
        rg = read_image(task.path, spacing_mm=task.spacing_mm, keep_ids=task.keep_ids, salt=task.salt)
        sha256 = rg.meta.sha256
        m = measure(rg, roi=task.roi, params=params)
        meta = rg.meta
        warnings = list(meta.warnings)
        overlay = None
        if task.overlay_dir is not None:
            from .outputs import atomic_write_bytes
            from .overlay import encode_png, overlay_name, render_overlay

            try:
                img = render_overlay(rg, m.labels, total_area_mm2=m.total_area_mm2)
                name = overlay_name(task.path, sha256)
                atomic_write_bytes(Path(task.overlay_dir) / name, encode_png(img))
                overlay = f"overlays/{name}"
            except Exception as exc:  # noqa: BLE001 - an overlay never costs the measurement
                warnings.append(f"overlay not written ({type(exc).__name__}: {exc})")
        totals = m.to_dict()
        image = {
            "file": task.path,
            "sha256": sha256,
            "patient_key": meta.patient_key,
            **({"patient_id": meta.patient_id} if task.keep_ids else {}),
            "study_date": _iso(meta.study_date),
            "body_part": meta.body_part,
            "laterality": meta.laterality,
            "view": meta.view_position,
            "rows": int(rg.shape[0]),
            "columns": int(rg.shape[1]),
            "spacing_row_mm": totals["spacing_row_mm"],
            "spacing_col_mm": totals["spacing_col_mm"],
            "spacing_source": totals["spacing_source"],
            "spacing_plane": rg.spacing.plane.value,
            "units": totals["units"],
            "lesion_count": totals["lesion_count"],
            "total_area_mm2": totals["total_area_mm2"],
            "total_area_px": totals["total_area_px"],
            "roi_polygons": len(task.roi) if task.roi else 0,
            "params_digest": totals["params_digest"],
            "calcimeasure_version": __version__,
            "elapsed_s": round(time.perf_counter() - start, 3),
            "warnings": "; ".join(warnings),
            "overlay": overlay,
        }
        lesions = [
            {k: plain(v) for k, v in row.items()} for row in m.lesions.to_dict(orient="records")
        ]
        return {"status": "ok", "image": {k: plain(v) for k, v in image.items()}, "lesions": lesions}
    except CalcimeasureError as exc:
        return error_record(task.path, exc, sha256 or file_sha256(task.path))
    except Exception as exc:  # noqa: BLE001 - a bad image never stops the batch
        return error_record(task.path, exc, sha256 or file_sha256(task.path), tb=traceback.format_exc())
