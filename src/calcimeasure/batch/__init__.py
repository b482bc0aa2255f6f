"""Batch measurement of many radiographs: ``calcimeasure measure``.

The pieces are kept apart so that later batch commands (``compare``, ``study``,
an HTML report, a Dask back end) reuse them:

:mod:`~calcimeasure.batch.worker`
    :func:`measure_one` — one image in, one small JSON-able record out. Plain
    data in and out, importable at top level: a ``ProcessPoolExecutor`` or a
    Dask ``client.submit(measure_one, task)`` can call it unchanged.
:mod:`~calcimeasure.batch.resume`
    The per-image record store (``DIR/.state/``) keyed by file content and
    settings; what makes ``--resume`` exact.
:mod:`~calcimeasure.batch.outputs`
    Atomic writes and the output tables (CSV, optional Parquet).
:mod:`~calcimeasure.batch.overlay`
    The overlay thumbnails (OpenCV).
:mod:`~calcimeasure.batch.config`
    Parameters files, ``--set``, ROI files, output-folder checks.
:mod:`~calcimeasure.batch.runner`
    :func:`run_measure`: discovery, scheduling, progress, resume, outputs.
"""

from __future__ import annotations

from .config import BatchUsageError, RoiSpec, load_params, load_roi
from .runner import MeasureConfig, RunSummary, run_measure
from .worker import ImageTask, measure_one

__all__ = [
    "BatchUsageError",
    "RoiSpec",
    "load_params",
    "load_roi",
    "MeasureConfig",
    "RunSummary",
    "run_measure",
    "ImageTask",
    "measure_one",
]
