"""Exposure field, body and bone masks (computed on the reduced grid)."""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_multiotsu, threshold_otsu
from .orientation import tensor_axis

__all__ = ["field_mask_small", "body_mask_small", "bone_mask_small", "fill_holes"]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes`` (4-connected background), by one flood fill of the
    background from outside the image (``cv2.floodFill``, ~7x faster)."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    ff = np.ones((h + 2, w + 2), np.uint8)  # a frame of background: the outside is one region
    ff[1:-1, 1:-1] = ~mask
    cv2.floodFill(ff, None, (0, 0), 2, flags=4)
    return mask | (ff[1:-1, 1:-1] == 1)  # background the flood did not reach: holes


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


def body_mask_small(small: np.ndarray, field: np.ndarray, level: float = 0.0):
    """Tissue (not air) within the field: above the Otsu threshold of the reduced image.

    With ``level`` > 0, returns ``(otsu_body, low_body)``: the second with the threshold at that
    fraction of the way from the median of the air class to the median of the soft-tissue class
    (never above the Otsu threshold). The soft tissue thins to nothing at a limb's outline, and the
    Otsu threshold between air and soft tissue leaves out the thin rim — in fingers 20–35 % of the
    body, with the lesions in it.
    """
    background = cv2.GaussianBlur(small, (0, 0), 1.0)
    sample = background[field]
    if sample.size < 16:
        return (field.copy(), field.copy()) if level > 0 else field.copy()
    # Three classes (air, soft tissue, bone): the body is above the lowest threshold.
    low = None
    try:
        ts = threshold_multiotsu(sample[:: max(1, sample.size // 50000)], classes=3)
        thr = low = ts[0]
        if level > 0:
            air = sample[sample <= ts[0]]
            soft = sample[(sample > ts[0]) & (sample <= ts[1])]
            if air.size >= 16 and soft.size >= 16:
                a = float(np.median(air))
                low = min(thr, a + level * (float(np.median(soft)) - a))
    except ValueError:
        thr = low = threshold_otsu(sample)

    def mask(t):
        return fill_holes((background > t) & field) & field

    body = mask(thr)
    if level > 0:
        return body, (body if low >= thr else mask(low))
    return body


def close_clefts(body_ext: np.ndarray, body: np.ndarray, small: np.ndarray, field: np.ndarray,
                 radius_px: int, level: float = 0.0) -> np.ndarray:
    """``body_ext`` with the clefts narrower than a disk of ``radius_px`` closed, as tissue.

    Of the pixels the closing adds, only those brighter than ``level`` of the way from the air's
    median (in the field, outside the closed body) to the median of ``body`` are kept: the air
    between two digits is darker still (the processing's undershoot). Returns ``body_ext`` itself
    when nothing is added.
    """
    se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * max(1, radius_px) + 1,) * 2)
    closed = cv2.morphologyEx(body_ext.view(np.uint8), cv2.MORPH_CLOSE, se).view(bool) & field
    added = closed & ~body_ext
    air = field & ~closed
    if not added.any() or air.sum() < 16 or body.sum() < 16:
        return body_ext
    blur = cv2.GaussianBlur(small, (0, 0), 1.0)
    air_level = float(np.median(blur[air]))
    added &= blur > air_level + level * (float(np.median(blur[body])) - air_level)
    return body_ext | added


def line_openings(small: np.ndarray, length_px: int, n_angles: int = 8) -> np.ndarray:
    """Grey openings of ``small`` with lines of ``length_px`` at ``n_angles`` orientations
    (angle ``pi * k / n_angles`` from the column axis towards the row axis), stacked (k, M, N)."""
    L = max(3, length_px | 1)
    out = np.empty((n_angles,) + small.shape, np.float32)
    for k in range(n_angles):
        a = np.pi * k / n_angles
        se = np.zeros((L, L), np.uint8)
        c = L // 2
        dr, dc = np.sin(a) * c, np.cos(a) * c
        cv2.line(se, (int(round(c - dc)), int(round(c - dr))), (int(round(c + dc)), int(round(c + dr))), 1, 1)
        out[k] = cv2.morphologyEx(small, cv2.MORPH_OPEN, se, borderType=cv2.BORDER_REPLICATE)
    return out


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


def axis_opening(openings: np.ndarray, image: np.ndarray, sigma_px: float, min_coherence: float,
                 maximum: np.ndarray | None = None) -> np.ndarray:
    """Line opening along the local axis of the anatomy only (not the maximum over orientations).

    The axis is the orientation of least change of a structure tensor of ``image`` (Gaussian
    window ``sigma_px``): along a shaft, the direction of its cortices. The maximum over all
    orientations keeps a nodule lying against a bone (a line across the shaft runs through
    bone and nodule); the opening along the shaft's axis does not (the nodule is shorter than
    the line), while cortices and the shaft are kept. Where the tensor is not coherent
    (``< min_coherence``: bone ends, round bones) the maximum over orientations is kept.
    ``openings`` is :func:`line_openings` of ``image`` (n orientations); ``maximum`` their
    maximum if already computed. The tensor is smooth: it is computed on a 2x coarser grid.
    """
    n = openings.shape[0]
    rows, cols = image.shape
    gx = cv2.Sobel(image, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(image, cv2.CV_32F, 0, 1)
    d = 2 if sigma_px >= 4 and min(rows, cols) >= 16 else 1
    prods = [gx * gx, gy * gy, gx * gy]
    if d > 1:
        r2, c2 = rows // d, cols // d
        prods = [cv2.resize(p[: r2 * d, : c2 * d], (c2, r2), interpolation=cv2.INTER_AREA) for p in prods]
    jxx, jyy, jxy = (cv2.GaussianBlur(p, (0, 0), sigma_px / d) for p in prods)
    coherent = (jxx - jyy) ** 2 + 4 * jxy**2 >= (min_coherence * (jxx + jyy)) ** 2
    axis = tensor_axis(jxx, jyy, jxy)
    k = np.round((axis % np.pi) / (np.pi / n)).astype(np.uint8) % n
    k[~coherent] = n  # n: the maximum over orientations
    if d > 1:
        k = cv2.resize(k, (c2 * d, r2 * d), interpolation=cv2.INTER_NEAREST)
        k = np.pad(k, ((0, rows - k.shape[0]), (0, cols - k.shape[1])), mode="edge")
    if maximum is None:
        maximum = openings.max(0)
    out = maximum.copy()
    for j in range(n):
        sel = k == j
        out[sel] = openings[j][sel]
    return out


def bone_mask_small(
    small: np.ndarray, body: np.ndarray, length_px: int, residual: np.ndarray | None = None,
    excess_fraction: float = 0.3, disk_background: np.ndarray | None = None,
    axis_sigma_px: float = 0.0, axis_coherence: float = 0.3,
) -> tuple[np.ndarray, ...]:
    """Bone: the denser Otsu class, within the body, of the image opened by lines
    of ``length_px`` (so compact calcifications do not count as bone).

    Pixels whose ``residual`` (image minus the background that already contains
    the bones) exceeds ``excess_fraction`` of the bone contrast are compact dense
    objects lying on or against a bone — calcifications — and are not bone.

    With ``axis_sigma_px`` > 0 a third mask is returned: the same bone mask with the
    line opening taken along the local axis only (:func:`axis_opening`, same threshold):
    nodules lying against a shaft are not swallowed by it.
    """
    blurred = cv2.GaussianBlur(small, (0, 0), 1.0)
    openings = line_openings(blurred, length_px) if axis_sigma_px > 0 else None
    background = openings.max(0) if openings is not None else elongated_opening(blurred, length_px)
    values = background[body]
    if values.size < 16:
        empty = np.zeros_like(body)
        return (empty, empty, empty) if openings is not None else (empty, empty)
    thr = threshold_otsu(values)
    along = (axis_opening(openings, blurred, axis_sigma_px, axis_coherence, background)
             if openings is not None else None)
    bone = (background > thr) & body
    axis = (along > thr) & body if along is not None else None
    if disk_background is not None:
        # Locally: bones narrower than the disk stand out of the disk-opened soft tissue
        # even where the whole limb is thinner than elsewhere (fingers vs palm).
        tophat = background - disk_background
        t_values = tophat[body]
        if t_values.size >= 16 and np.ptp(t_values) > 0:
            t_thr = threshold_otsu(t_values)
            bone |= (tophat > t_thr) & body
            if axis is not None:
                axis |= (along - disk_background > t_thr) & body
    bone = fill_holes(bone) & body
    # Everything as bright as bone, whatever its shape (short bones, carpals, nodules).
    raw = (blurred > thr) & body
    if axis is not None:
        axis = fill_holes(axis) & bone
    if residual is not None:
        contrast = max(thr - float(np.median(values[values <= thr])), 1e-6) if (values <= thr).any() else 1e-6
        bone &= ~(residual > excess_fraction * contrast)
        if axis is not None:
            axis &= bone
    return (bone, raw, axis) if axis is not None else (bone, raw)
