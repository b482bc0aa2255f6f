"""Lead side marker ("L" / "R") lying on the detector, and the collimated field."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["MarkerRaster", "render_marker", "collimation_field"]


@dataclass
class MarkerRaster:
    """The marker on the image grid inside ``box = (r0, r1, c0, c1)``.

    Attributes
    ----------
    lead_coverage : ndarray
        Fraction of each pixel covered by the lead letter.
    holder_coverage : ndarray
        Fraction covered by the plastic (PMMA) holder.
    letter : str
    """

    box: tuple[int, int, int, int]
    lead_coverage: np.ndarray
    holder_coverage: np.ndarray
    letter: str


def _letter_canvas(letter: str, height_px: float, angle_deg: float, ss: int = 4):
    """Supersampled lead letter and holder, area-averaged to coverage maps."""
    letter_h = height_px * ss
    font = cv2.FONT_HERSHEY_DUPLEX
    scale = letter_h / 22.0  # Hershey duplex cap height is ~22 px at scale 1
    thick = max(1, int(round(letter_h / 6.0)))
    (tw, th), base = cv2.getTextSize(letter, font, scale, thick)
    pad = int(0.25 * letter_h) + thick
    hh, ww = th + 2 * pad, tw + 2 * pad
    side = int(np.ceil(np.hypot(hh, ww))) + 2 * ss
    side += (-side) % ss
    canvas = np.zeros((side, side), np.uint8)
    holder = np.zeros_like(canvas)
    o = ((side - ww) // 2, (side - hh) // 2)
    cv2.putText(canvas, letter, (o[0] + pad, o[1] + pad + th), font, scale, 255, thick, cv2.LINE_AA)
    rad = int(0.25 * letter_h)
    cv2.rectangle(holder, (o[0] + rad, o[1]), (o[0] + ww - rad, o[1] + hh), 255, -1)
    cv2.rectangle(holder, (o[0], o[1] + rad), (o[0] + ww, o[1] + hh - rad), 255, -1)
    for cx, cy in ((o[0] + rad, o[1] + rad), (o[0] + ww - rad, o[1] + rad), (o[0] + rad, o[1] + hh - rad), (o[0] + ww - rad, o[1] + hh - rad)):
        cv2.circle(holder, (cx, cy), rad, 255, -1)
    rot = cv2.getRotationMatrix2D((side / 2, side / 2), angle_deg, 1.0)
    canvas = cv2.warpAffine(canvas, rot, (side, side), flags=cv2.INTER_LINEAR)
    holder = cv2.warpAffine(holder, rot, (side, side), flags=cv2.INTER_LINEAR)
    n = side // ss
    lead = canvas.reshape(n, ss, n, ss).mean(axis=(1, 3)) / 255.0
    hold = holder.reshape(n, ss, n, ss).mean(axis=(1, 3)) / 255.0
    keep = np.nonzero(hold.sum(axis=1) > 0)[0], np.nonzero(hold.sum(axis=0) > 0)[0]
    sl = (slice(keep[0][0], keep[0][-1] + 1), slice(keep[1][0], keep[1][-1] + 1))
    return lead[sl].astype(np.float32), hold[sl].astype(np.float32)


def render_marker(
    letter: str,
    *,
    shape: tuple[int, int],
    pitch_mm: float,
    field: np.ndarray,
    body_mask: np.ndarray,
    rng: np.random.Generator,
    letter_height_mm: float = 11.0,
) -> MarkerRaster:
    """Place a lead letter near an edge of the collimated field, off the body if possible.

    Candidate positions are the four corners and the four edge midpoints of the
    field; the one whose footprint overlaps the body least wins (ties broken by
    `rng`).  The marker lies on the detector, so its size is set in the
    detector plane (no magnification).
    """
    height_px = max(letter_height_mm / pitch_mm, 6.0)
    lead, hold = _letter_canvas(letter, height_px, float(rng.uniform(-8, 8)))
    h, w = hold.shape
    rows, cols = shape
    inside = field > 0.99
    rr = np.nonzero(inside.any(axis=1))[0]
    cc = np.nonzero(inside.any(axis=0))[0]
    if rr.size == 0:
        rr, cc = np.arange(rows), np.arange(cols)
    margin = max(int(round(3.0 / pitch_mm)), 2)
    top, bottom = rr[0] + margin, rr[-1] - margin - h
    left, right = cc[0] + margin, cc[-1] - margin - w
    top, left = max(top, 0), max(left, 0)
    bottom, right = max(min(bottom, rows - h), top), max(min(right, cols - w), left)
    mid_r, mid_c = (top + bottom) // 2, (left + right) // 2
    cands = [(top, left), (top, right), (bottom, left), (bottom, right), (top, mid_c), (bottom, mid_c), (mid_r, left), (mid_r, right)]
    jitter = rng.random(len(cands)) * 1e-3
    best, best_score = cands[0], np.inf
    for (r0, c0), j in zip(cands, jitter):
        r0 = int(np.clip(r0, 0, rows - h))
        c0 = int(np.clip(c0, 0, cols - w))
        sub_body = body_mask[r0 : r0 + h, c0 : c0 + w]
        sub_field = field[r0 : r0 + h, c0 : c0 + w]
        score = float((sub_body * (hold > 0)).mean()) + 2.0 * float(((sub_field < 0.99) * (hold > 0)).mean()) + j
        if score < best_score:
            best, best_score = (r0, c0), score
    r0, c0 = best
    return MarkerRaster((r0, r0 + h, c0, c0 + w), lead, hold, letter)


def collimation_field(
    shape: tuple[int, int],
    *,
    fraction: tuple[float, float],
    angle_deg: float,
    center_offset_px: tuple[float, float],
    penumbra_px: float,
) -> np.ndarray:
    """Primary-beam fraction (0..1) of a rotated rectangular collimation with a linear penumbra."""
    rows, cols = shape
    cr = (rows - 1) / 2 + center_offset_px[0]
    cc = (cols - 1) / 2 + center_offset_px[1]
    if fraction[0] >= 1.0 and fraction[1] >= 1.0 and angle_deg == 0:
        return np.ones(shape, np.float32)
    a = np.deg2rad(angle_deg)
    ca, sa = np.float32(np.cos(a)), np.float32(np.sin(a))
    r = np.arange(rows, dtype=np.float32)[:, None] - np.float32(cr)
    c = np.arange(cols, dtype=np.float32)[None, :] - np.float32(cc)
    rp = np.abs(r * ca + c * sa)
    cp = np.abs(c * ca - r * sa)
    np.subtract(np.float32(0.5 * fraction[0] * rows), rp, out=rp)
    np.subtract(np.float32(0.5 * fraction[1] * cols), cp, out=cp)
    d = np.minimum(rp, cp, out=rp)
    d *= np.float32(1.0 / max(penumbra_px, 1e-3))
    d += np.float32(0.5)
    return np.clip(d, np.float32(0.0), np.float32(1.0), out=d)
