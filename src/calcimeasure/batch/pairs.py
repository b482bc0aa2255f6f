"""The per-pair worker: :func:`compare_one`, and the side-by-side picture of a pair.

Like :func:`~calcimeasure.batch.worker.measure_one`: plain data in
(:class:`PairTask`: two paths and parameters), plain JSON-able data out (one row
of ``changes.csv`` and the pair's rows of ``lesion_changes.csv``). The worker
reads both files by path, calls :func:`calcimeasure.compare` — which segments
each film with the task's parameters, registers the follow-up onto the baseline
and matches the lesions — writes the side-by-side PNG and returns the record. It
never returns pixel arrays and never raises for a bad pair, so it runs unchanged
inline, in a ``ProcessPoolExecutor`` or on a Dask worker.

Each film of a pair is segmented again inside the pair task (a label image is
not shipped between processes): segmentation is deterministic, so with the same
parameters the totals equal the film's row of ``measurements.csv`` — ``study``
checks it and flags a pair where they differ.
"""

from __future__ import annotations

import datetime as _dt
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage as ndi

from ..errors import CalcimeasureError
from .worker import error_record, file_sha256, plain

__all__ = [
    "PairTask",
    "compare_one",
    "CHANGE_COLUMNS",
    "LESION_CHANGE_COLUMNS",
    "pair_name",
    "render_side_by_side",
]

#: Columns of ``changes.csv`` (one row per compared pair).
CHANGE_COLUMNS = [
    "pair_id",
    "group",
    "comparison",
    "patient_key",
    "body_part",
    "laterality",
    "view",
    "baseline_file",
    "followup_file",
    "baseline_sha256",
    "followup_sha256",
    "baseline_date",
    "followup_date",
    "interval_days",
    "response",
    "baseline_total_mm2",
    "followup_total_mm2",
    "area_change_mm2",
    "area_change_pct",
    "area_change_pct_anatomical",
    "baseline_lesions",
    "followup_lesions",
    "baseline_total_px",
    "followup_total_px",
    "baseline_guided_px",
    "followup_guided_px",
    "low_contrast_fraction",
    "lesions_vanished",
    "lesions_new",
    "registration_ok",
    "registration_quality",
    "registration_scale",
    "registration_rotation_deg",
    "registration_failure",
    "flags",
    "partial_pct",
    "progression_pct",
    "params_digest",
    "comparison_digest",
    "calcimeasure_version",
    "elapsed_s",
    "side_by_side",
]

#: Columns of ``lesion_changes.csv`` (one row per matched lesion group of a pair).
LESION_CHANGE_COLUMNS = [
    "pair_id",
    "baseline_file",
    "followup_file",
    "match_id",
    "baseline_ids",
    "followup_ids",
    "kind",
    "status",
    "baseline_area_mm2",
    "followup_area_mm2",
    "change_mm2",
    "change_pct",
    "baseline_area_px",
    "followup_area_px",
]


@dataclass(frozen=True)
class PairTask:
    """Everything the pair worker needs (picklable, no arrays).

    Attributes
    ----------
    baseline, followup : str
        The two films, as given (reported so in the tables).
    params : dict
        :meth:`SegmentationParams.to_dict`.
    comparison : dict
        :meth:`ComparisonParams.to_dict` (response bands, matching distance).
    spacing_mm : (float, float) or None
        Spacing override for both films (``--spacing``).
    roi : list of polygons or None
        Region on the **baseline**, carried to the follow-up by the registration
        (``calcimeasure.compare(roi=...)``). ``study`` never sets it.
    pair_dir : str or None
        Folder of the side-by-side PNG; ``None`` = no picture.
    pair_id : str
        Identifier written in the tables (``study``: ``<group>-<k>`` or ``...-prev``).
    info : dict
        Columns copied into the row as they are (group, comparison kind, patient
        key, region, dates); not used for the computation.
    """

    baseline: str
    followup: str
    params: dict[str, Any] = field(default_factory=dict)
    comparison: dict[str, Any] = field(default_factory=dict)
    spacing_mm: tuple[float, float] | None = None
    roi: list | None = None
    pair_dir: str | None = None
    pair_id: str = "pair"
    info: dict[str, Any] = field(default_factory=dict)
    salt: str | None = field(default=None, repr=False)


def pair_name(pair_id: str, sha_b: str, sha_f: str) -> str:
    """File name of a pair's side-by-side PNG: the pair id and both hash prefixes."""
    import re

    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", pair_id).strip("._-")[:40] or "pair"
    return f"{stem}_{sha_b[:8]}_{sha_f[:8]}.png"


def _date(meta) -> str | None:
    return meta.study_date.isoformat() if meta.study_date is not None else None


def compare_one(task: PairTask) -> dict[str, Any]:
    """Read both films, compare them, write the side-by-side picture; return a record.

    Returns
    -------
    dict
        ``{"status": "ok", "pair": {...}, "lesion_changes": [{...}, ...]}`` or, when
        a film cannot be read or the comparison fails,
        ``{"status": "error", "error": {file, sha256, error, kind, reason}}`` where
        ``file`` is the film at fault (the follow-up when it is not known).
    """
    from .. import __version__
    from ..compare import ComparisonParams, compare
    from ..io import read_image
    from ..params import SegmentationParams, params_digest

    start = time.perf_counter()
    current = task.baseline
    try:
        params = SegmentationParams.from_dict(task.params)
        cparams = ComparisonParams(**task.comparison)
        rb = read_image(task.baseline, spacing_mm=task.spacing_mm, salt=task.salt)
        current = task.followup
        rf = read_image(task.followup, spacing_mm=task.spacing_mm, salt=task.salt)
        current = task.followup
        c = compare(rb, rf, roi=task.roi, params=cparams, segmentation_params=params)
        reg = c.registration
        lc = c.lesion_changes
        flags = list(c.flags) + list(task.info.get("extra_flags", ()))
        db, df = rb.meta.study_date, rf.meta.study_date
        interval = (df - db).days if db is not None and df is not None else None
        info = dict(task.info)
        picture = None
        if task.pair_dir is not None:
            from .outputs import atomic_write_bytes
            from .overlay import encode_png

            try:
                img = render_side_by_side(rb, rf, c, baseline_date=_date(rb.meta), followup_date=_date(rf.meta),
                                          interval_days=interval)
                name = pair_name(task.pair_id, rb.meta.sha256, rf.meta.sha256)
                atomic_write_bytes(Path(task.pair_dir) / name, encode_png(img))
                picture = f"pairs/{name}"
            except Exception as exc:  # noqa: BLE001 - a picture never costs the comparison
                flags.append(f"side-by-side picture not written ({type(exc).__name__}: {exc})")
        row = {
            "pair_id": task.pair_id,
            "group": info.get("group"),
            "comparison": info.get("comparison", "baseline"),
            "patient_key": rb.meta.patient_key,
            "body_part": info.get("body_part", rb.meta.body_part),
            "laterality": info.get("laterality", rb.meta.laterality),
            "view": info.get("view", rb.meta.view_position),
            "baseline_file": task.baseline,
            "followup_file": task.followup,
            "baseline_sha256": rb.meta.sha256,
            "followup_sha256": rf.meta.sha256,
            "baseline_date": info.get("baseline_date", _date(rb.meta)),
            "followup_date": info.get("followup_date", _date(rf.meta)),
            "interval_days": info.get("interval_days", interval),
            "response": c.response,
            "baseline_total_mm2": c.baseline_total_mm2,
            "followup_total_mm2": c.followup_total_mm2,
            "area_change_mm2": c.area_change_mm2,
            "area_change_pct": c.area_change_pct,
            "area_change_pct_anatomical": c.area_change_pct_anatomical,
            "baseline_lesions": c.baseline.lesion_count,
            "followup_lesions": c.followup.lesion_count,
            "baseline_total_px": c.baseline.total_area_px,
            "followup_total_px": c.followup.total_area_px,
            "baseline_guided_px": c.guided_area_px("baseline"),
            "followup_guided_px": c.guided_area_px("followup"),
            "low_contrast_fraction": c.low_contrast_fraction,
            "lesions_vanished": int((lc["status"] == "vanished").sum()),
            "lesions_new": int((lc["status"] == "new").sum()),
            "registration_ok": bool(reg.ok),
            "registration_quality": reg.quality,
            "registration_scale": reg.scale,
            "registration_rotation_deg": reg.rotation_deg,
            "registration_failure": reg.failure_reason or None,
            "flags": "; ".join(flags),
            "partial_pct": cparams.partial_pct,
            "progression_pct": cparams.progression_pct,
            "params_digest": params.digest(),
            "comparison_digest": params_digest(cparams.to_dict()),
            "calcimeasure_version": __version__,
            "elapsed_s": round(time.perf_counter() - start, 3),
            "side_by_side": picture,
        }
        if "patient_key" in info:
            row["patient_key"] = info["patient_key"]
        changes = []
        for k, r in enumerate(lc.to_dict(orient="records"), start=1):
            changes.append({
                "pair_id": task.pair_id,
                "baseline_file": task.baseline,
                "followup_file": task.followup,
                "match_id": k,
                **{key: plain(v) for key, v in r.items()},
            })
        return {"status": "ok", "pair": {k: plain(v) for k, v in row.items()}, "lesion_changes": changes}
    except CalcimeasureError as exc:
        rec = error_record(current, exc, file_sha256(current))
    except Exception as exc:  # noqa: BLE001 - a bad pair never stops the batch
        rec = error_record(current, exc, file_sha256(current), tb=traceback.format_exc())
    rec["error"]["stage"] = "compare"
    rec["error"]["pair_id"] = task.pair_id
    rec["error"]["other_file"] = task.baseline if current == task.followup else task.followup
    return rec


# ---------------------------------------------------------------------------------------------
# Side-by-side picture

#: Distinct BGR colours for matched lesion groups (Okabe-Ito and tab10-like, bright on grey).
_PALETTE = [
    (0, 159, 230), (233, 180, 86), (115, 158, 0), (66, 228, 240), (178, 114, 0), (0, 94, 213),
    (167, 121, 204), (0, 215, 255), (255, 128, 255), (80, 255, 80), (255, 200, 120), (60, 120, 255),
]
_TEXT = (255, 255, 255)
_SHADOW = (0, 0, 0)
#: Height of each panel of the side-by-side picture, in pixels (never enlarged above the film).
PANEL_HEIGHT = 720


def _colour(match_id: int) -> tuple[int, int, int]:
    return _PALETTE[(match_id - 1) % len(_PALETTE)]


def _panel(rg, labels: np.ndarray, ids: dict[int, int], status: dict[int, str], height: int) -> tuple[np.ndarray, float]:
    """The windowed film reduced to ``height`` rows, with each lesion of ``labels``
    drawn in the colour of its match id and labelled with it."""
    from .overlay import _text, _window

    rows, cols = rg.shape
    scale = min(1.0, height / rows)
    out_rows, out_cols = max(1, round(rows * scale)), max(1, round(cols * scale))
    lo, hi = _window(rg)
    small = cv2.resize(rg.pixels, (out_cols, out_rows), interpolation=cv2.INTER_AREA)
    grey = np.clip((small - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    img = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    font = max(0.4, out_rows / 1400)
    thick = 1 if font < 0.6 else 2
    for lab, box in enumerate(ndi.find_objects(np.asarray(labels).astype(np.int64, copy=False)), start=1):
        if box is None or lab not in ids:
            continue
        r0, r1, c0, c1 = box[0].start, box[0].stop, box[1].start, box[1].stop
        crop = np.pad((labels[r0:r1, c0:c1] == lab).astype(np.uint8), 1)
        contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        scaled = [
            np.round((c.reshape(-1, 2).astype(np.float64) + [c0 - 1 + 0.5, r0 - 1 + 0.5]) * scale - 0.5)
            .astype(np.int32).reshape(-1, 1, 2)
            for c in contours
        ]
        colour = _colour(ids[lab])
        cv2.polylines(img, scaled, True, colour, 2 if status.get(lab) in ("vanished", "new") else 1, cv2.LINE_AA)
        tx = int(min(max(c1 * scale + 3, 2), out_cols - 30 * font))
        ty = int(min(max(r0 * scale + 10 * font, 14 * font), out_rows - 4))
        _text(img, str(ids[lab]), (tx, ty), font, thick, colour)
    # Scale bar (each film has its own spacing).
    margin = max(6, out_cols // 60)
    base = out_rows - margin
    if rg.spacing_mm is not None:
        from .overlay import _NICE_MM

        mm_per_out_px = rg.spacing_mm[1] / scale
        target = out_cols * 0.2 * mm_per_out_px
        length_mm = max([v for v in _NICE_MM if v <= target] or [_NICE_MM[0]])
        bar = max(2, round(length_mm / mm_per_out_px))
        h = max(3, out_rows // 150)
        cv2.rectangle(img, (margin - 1, base - h - 1), (margin + bar + 1, base + 1), _SHADOW, -1)
        cv2.rectangle(img, (margin, base - h), (margin + bar, base), _TEXT, -1)
        _text(img, f"{length_mm:g} mm", (margin, base - h - 6), font, thick)
    else:
        _text(img, "spacing unknown (px)", (margin, base), font, thick)
    return img, font


def render_side_by_side(rb, rf, comparison, *, baseline_date: str | None = None, followup_date: str | None = None,
                        interval_days: int | None = None, height: int = PANEL_HEIGHT) -> np.ndarray:
    """A BGR picture: baseline | follow-up, each windowed, same height, with every
    matched lesion group drawn in one colour and numbered with its ``match_id``
    (the row of ``lesion_changes.csv``) on both films; vanished and new lesions
    drawn thicker; a mm scale bar per film; a caption with the response and the
    change. No file name or patient data is drawn."""
    from .overlay import _text

    lc = comparison.lesion_changes
    ids_b: dict[int, int] = {}
    ids_f: dict[int, int] = {}
    st_b: dict[int, str] = {}
    st_f: dict[int, str] = {}
    for k, (bl, fl, status) in enumerate(zip(lc["baseline_ids"], lc["followup_ids"], lc["status"]), start=1):
        for i in filter(None, str(bl).split(",")):
            ids_b[int(i)] = k
            st_b[int(i)] = status
        for i in filter(None, str(fl).split(",")):
            ids_f[int(i)] = k
            st_f[int(i)] = status
    h = min(height, max(rb.shape[0], rf.shape[0]))
    pb, font = _panel(rb, comparison.baseline.labels, ids_b, st_b, h)
    pf, _ = _panel(rf, comparison.followup.labels, ids_f, st_f, h)
    thick = 1 if font < 0.6 else 2
    hb, hf = pb.shape[0], pf.shape[0]
    rows = max(hb, hf)
    gap = 8
    header = int(36 * max(font, 0.6))
    footer = int(34 * max(font, 0.6))
    canvas = np.full((rows + header + footer, pb.shape[1] + gap + pf.shape[1], 3), 32, np.uint8)
    canvas[header:header + hb, : pb.shape[1]] = pb
    canvas[header:header + hf, pb.shape[1] + gap:] = pf

    def label(text, x):
        _text(canvas, text, (x + 6, int(header * 0.72)), max(font, 0.55), thick)

    label(f"baseline {baseline_date or ''}".rstrip(), 0)
    extra = f" (+{interval_days} d)" if interval_days is not None else ""
    label(f"follow-up {followup_date or ''}{extra}".replace("  ", " "), pb.shape[1] + gap)
    pct = comparison.area_change_pct
    tb, tf = comparison.baseline_total_mm2, comparison.followup_total_mm2
    if tb is not None and tf is not None:
        totals = f"{tb:.1f} -> {tf:.1f} mm2"
    else:
        totals = f"{comparison.baseline.total_area_px} -> {comparison.followup.total_area_px} px"
    change = f"{pct:+.1f} %" if pct is not None else "n/a"
    reg = comparison.registration
    caption = f"{comparison.response.upper()}  {change}  ({totals}); registration " + (
        f"ok q={reg.quality:.2f}" if reg.ok else "FAILED")
    _text(canvas, caption, (6, rows + header + int(footer * 0.7)), max(font, 0.55), thick)
    return canvas
