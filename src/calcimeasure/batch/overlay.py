"""Overlay thumbnails: the windowed film, lesion contours with their ids, a scale bar.

Drawn with OpenCV only (no matplotlib). No patient identity and no file name is
drawn on the image: only lesion ids, the lesion count, the total area and the
scale.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi

from ..radiograph import Radiograph

__all__ = ["MAX_SIDE", "overlay_name", "overlay_size", "render_overlay"]

#: Longest side of an overlay thumbnail, in pixels (smaller films are not enlarged).
MAX_SIDE = 1024

_CONTOUR = (0, 215, 255)  # BGR amber
_TEXT = (255, 255, 255)
_SHADOW = (0, 0, 0)
_NICE_MM = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500)


def overlay_name(path: str | Path, sha256: str) -> str:
    """A short, file-system-safe name: the file's stem (at most 40 safe characters)
    and the first 12 hex digits of its SHA-256 (two inputs never collide)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem).strip("._-")[:40] or "image"
    return f"{stem}_{sha256[:12]}.png"


def overlay_size(shape: tuple[int, int], max_side: int = MAX_SIDE) -> tuple[int, int]:
    """(rows, columns) of the overlay of a film of ``shape``."""
    rows, cols = shape
    scale = min(1.0, max_side / max(rows, cols))
    return max(1, round(rows * scale)), max(1, round(cols * scale))


def _window(rg: Radiograph) -> tuple[float, float]:
    """(low, high) display limits: the file's window when it has one, else the 1-99th percentiles."""
    if rg.meta.window_center and rg.meta.window_width:
        center, width = rg.display_window()
        lo, hi = center - width / 2, center + width / 2
    else:
        step = max(1, int(np.sqrt(rg.pixels.size / 1e6)))
        lo, hi = np.percentile(rg.pixels[::step, ::step], [1, 99])
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, thick: int,
          colour: tuple[int, int, int] = _TEXT) -> None:
    """Text with a dark outline. The outline is the same text drawn at one-pixel offsets
    (a thicker stroke would change the glyph advance with some OpenCV font back ends)."""
    x, y = org
    for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (1, 1), (-1, 1), (1, -1)):
        cv2.putText(img, text, (x + dx, y + dy), cv2.FONT_HERSHEY_SIMPLEX, scale, _SHADOW, thick, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)


def render_overlay(
    rg: Radiograph,
    labels: np.ndarray,
    *,
    total_area_mm2: float | None = None,
    max_side: int = MAX_SIDE,
) -> np.ndarray:
    """A BGR uint8 thumbnail of ``rg`` with the contours and ids of ``labels``.

    The film is windowed (its own VOI window, else 1-99th percentiles) and reduced
    so that its longer side is at most ``max_side`` pixels. Each lesion's contour is
    traced on the source grid and scaled, so small lesions stay visible. A scale bar
    in mm sits bottom-left; with unknown spacing a "spacing unknown (px)" note
    replaces it.
    """
    rows, cols = rg.shape
    out_rows, out_cols = overlay_size((rows, cols), max_side)
    scale = out_cols / cols
    lo, hi = _window(rg)
    small = cv2.resize(rg.pixels, (out_cols, out_rows), interpolation=cv2.INTER_AREA)
    grey = np.clip((small - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    img = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)

    font = max(0.35, min(out_rows, out_cols) / 1400)
    thick = 1 if font < 0.6 else 2
    labels = np.asarray(labels)
    ids = []
    for index, box in enumerate(ndi.find_objects(labels.astype(np.int64, copy=False)), start=1):
        if box is None:
            continue
        lab = index
        ids.append(lab)
        r0, r1, c0, c1 = box[0].start, box[0].stop, box[1].start, box[1].stop
        crop = np.pad((labels[r0:r1, c0:c1] == lab).astype(np.uint8), 1)
        contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        scaled = [
            np.round((c.reshape(-1, 2).astype(np.float64) + [c0 - 1 + 0.5, r0 - 1 + 0.5]) * scale - 0.5)
            .astype(np.int32)
            .reshape(-1, 1, 2)
            for c in contours
        ]
        cv2.polylines(img, scaled, True, _CONTOUR, 1, cv2.LINE_AA)
        tx = int(min(max(c1 * scale + 3, 2), out_cols - 8 * font * 3))
        ty = int(min(max(r0 * scale + 10 * font, 12 * font), out_rows - 4))
        _text(img, str(int(lab)), (tx, ty), font, thick)

    margin = max(6, out_cols // 60)
    if total_area_mm2 is not None:
        header = f"{len(ids)} lesion(s), {total_area_mm2:.1f} mm2"
    else:
        header = f"{len(ids)} lesion(s), {int((labels > 0).sum())} px"
    _text(img, header, (margin, margin + int(22 * font)), font, thick)

    base = out_rows - margin
    if rg.spacing_mm is not None:
        mm_per_out_px = rg.spacing_mm[1] / scale
        target = out_cols * 0.2 * mm_per_out_px
        length_mm = max([v for v in _NICE_MM if v <= target] or [_NICE_MM[0]])
        bar = max(2, round(length_mm / mm_per_out_px))
        h = max(3, out_rows // 150)
        cv2.rectangle(img, (margin - 1, base - h - 1), (margin + bar + 1, base + 1), _SHADOW, -1)
        cv2.rectangle(img, (margin, base - h), (margin + bar, base), _TEXT, -1)
        label = f"{length_mm:g} mm"
        _text(img, label, (margin, base - h - 6), font, thick)
    else:
        _text(img, "spacing unknown (px)", (margin, base), font, thick)
    return img


def encode_png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 BGR
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()
