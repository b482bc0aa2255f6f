"""Exposure field, body and bone masks (computed on the reduced grid)."""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_multiotsu, threshold_otsu

__all__ = ["field_mask_small", "body_mask_small", "bone_mask_small"]


def field_mask_small(small: np.ndarray, edge_px: int) -> np.ndarray:
    """Exposed field on the reduced grid.

    Outside the collimated field only scatter arrives; after the log and the tone
    curve those borders are a bright (white), nearly saturated plateau touching
    the image border. Bright regions connected to the border whose level is in
    the top 15 % of the image range are collimation; the field is the rest,
    shrunk by ``edge_px`` to drop the penumbra and processing overshoot.
    """
    blur = cv2.medianBlur(small.astype(np.float32), 3)
    lo, hi = np.percentile(blur, 1), float(blur.max())
    span = max(hi - lo, 1e-6)
    cand = blur >= lo + 0.85 * span
    lab, n = ndi.label(cand)
    if n:
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        border = border[border > 0]
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        # Collimation shadows are large plateaus; small bright spots at the border are not.
        border = border[sizes[border] >= 0.002 * small.size]
        # A collimation shadow runs along a side of the image; a bone leaving
        # the field only touches the border over its width.
        contact = np.bincount(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]), minlength=n + 1)
        border = border[contact[border] >= 0.3 * min(small.shape)]
        coll = np.isin(lab, border)
    else:
        coll = np.zeros(small.shape, bool)
    if coll.any() and edge_px > 0:
        k = 2 * edge_px + 1
        coll = cv2.dilate(coll.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))).astype(bool)
    field = ~coll
    # Never trust the outermost ring of the image.
    b = max(1, edge_px)
    field[:b] = field[-b:] = False
    field[:, :b] = field[:, -b:] = False
    return field


def body_mask_small(small: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Tissue (not air) within the field: above the Otsu threshold of the reduced image."""
    background = cv2.GaussianBlur(small, (0, 0), 1.0)
    sample = background[field]
    if sample.size < 16:
        return field.copy()
    # Three classes (air, soft tissue, bone): the body is above the lowest threshold.
    try:
        thr = threshold_multiotsu(sample[:: max(1, sample.size // 50000)], classes=3)[0]
    except ValueError:
        thr = threshold_otsu(sample)
    body = (background > thr) & field
    body = ndi.binary_fill_holes(body)
    return body & field


def elongated_opening(small: np.ndarray, length_px: int, n_angles: int = 8) -> np.ndarray:
    """Maximum over orientations of grey openings with a line: keeps elongated
    structures longer than ``length_px`` (bones, cortices) and removes compact
    blobs shorter than it (calcified nodules)."""
    L = max(3, length_px | 1)
    out = None
    for k in range(n_angles):
        a = np.pi * k / n_angles
        se = np.zeros((L, L), np.uint8)
        c = L // 2
        dr, dc = np.sin(a) * c, np.cos(a) * c
        cv2.line(se, (int(round(c - dc)), int(round(c - dr))), (int(round(c + dc)), int(round(c + dr))), 1, 1)
        o = cv2.morphologyEx(small, cv2.MORPH_OPEN, se, borderType=cv2.BORDER_REPLICATE)
        out = o if out is None else np.maximum(out, o)
    return out


def bone_mask_small(
    small: np.ndarray, body: np.ndarray, length_px: int, residual: np.ndarray | None = None,
    excess_fraction: float = 0.3, disk_background: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Bone: the denser Otsu class, within the body, of the image opened by lines
    of ``length_px`` (so compact calcifications do not count as bone).

    Pixels whose ``residual`` (image minus the background that already contains
    the bones) exceeds ``excess_fraction`` of the bone contrast are compact dense
    objects lying on or against a bone — calcifications — and are not bone.
    """
    background = elongated_opening(cv2.GaussianBlur(small, (0, 0), 1.0), length_px)
    values = background[body]
    if values.size < 16:
        return np.zeros_like(body), np.zeros_like(body)
    thr = threshold_otsu(values)
    bone = (background > thr) & body
    if disk_background is not None:
        # Locally: bones narrower than the disk stand out of the disk-opened soft tissue
        # even where the whole limb is thinner than elsewhere (fingers vs palm).
        tophat = background - disk_background
        t_values = tophat[body]
        if t_values.size >= 16 and np.ptp(t_values) > 0:
            bone |= (tophat > threshold_otsu(t_values)) & body
    bone = ndi.binary_fill_holes(bone) & body
    # Everything as bright as bone, whatever its shape (short bones, carpals, nodules).
    raw = (cv2.GaussianBlur(small, (0, 0), 1.0) > thr) & body
    if residual is not None:
        contrast = max(thr - float(np.median(values[values <= thr])), 1e-6) if (values <= thr).any() else 1e-6
        bone &= ~(residual > excess_fraction * contrast)
    return bone, raw
