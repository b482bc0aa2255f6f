"""The segmentation pipeline (pure numpy / OpenCV / scikit-image)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from ..errors import ParameterError
from ..params import SegmentationParams
from ..radiograph import Radiograph
from .background import (background_small, enlarge, gather, noise_sigma_highpass, reduce, robust_sigma,
                         soft_tissue_background)
from .bone import bone_mask_small as bone_zone_small
from .masks import body_mask_small, bone_mask_small, close_clefts, elongated_opening, field_mask_small, fill_holes
from . import learned, lesion_unet, unet
from .orientation import isophote_orientation, oriented_line_median

__all__ = ["segment", "Segmentation"]


@dataclass(frozen=True, eq=False)
class Segmentation:
    """Result of :func:`segment`: labels on the source grid and what produced them.

    Attributes
    ----------
    labels : ndarray of int32, shape (M, N)
        0 = background, 1..n = lesions.
    residual : ndarray of float32
        Image minus local background (lesion contrast), same grid.
    bone : ndarray of bool
        Bone mask used for rejection and the touches-bone flag.
    body : ndarray of bool
        Tissue mask (searched region; with ``body_level``, including the thin rim at the outline).
    noise_sigma : float
        Noise sigma of the smoothed residual (from a high-pass of the image).
    field_mask : ndarray of bool
        Exposed (collimated) field, minus its edge band.
    background_level : dict
        Per lesion id, the local ring background level of the smoothed residual
        (the zero of the lesion's excess contrast).
    rejected : list of dict
        Candidates that were not reported: ``reason`` (min_area, max_area, bone,
        bone_split_shape, skin_streak, ragged, rim, field_edge, saturated, ...), ``area_px``, ``bbox`` (r0, r1, c0, c1).
    spacing_mm : tuple or None
        Spacing of the image (None when unknown).
    params : SegmentationParams
        Parameters used.
    """

    labels: np.ndarray
    residual: np.ndarray = field(repr=False)
    bone: np.ndarray = field(repr=False)
    body: np.ndarray = field(repr=False)
    noise_sigma: float
    field_mask: np.ndarray = field(repr=False)
    background_level: dict = field(repr=False)
    spacing_mm: tuple[float, float] | None
    params: SegmentationParams
    rejected: list = field(repr=False, default_factory=list)

    @property
    def mask(self) -> np.ndarray:
        """Binary lesion mask."""
        return self.labels > 0

    @property
    def lesion_count(self) -> int:
        return int(self.labels.max())


def _to_mask(value, shape, name) -> np.ndarray | None:
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.dtype == bool:
        if value.shape != shape:
            raise ParameterError(f"`{name}` mask must have the image shape {shape}, got {value.shape}")
        return value
    try:
        polys = value if isinstance(value, (list, tuple)) and len(value) and np.ndim(value[0]) == 2 else [value]
        mask = np.zeros(shape, np.uint8)
        for poly in polys:
            pts = np.asarray(poly, dtype=np.float64)
            if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3 or not np.all(np.isfinite(pts)):
                raise ValueError
            cv2.fillPoly(mask, [np.round(pts[:, ::-1]).astype(np.int32)], 1)
    except (ValueError, TypeError):
        raise ParameterError(
            f"`{name}` must be a boolean mask of the image shape or polygon(s) of (row, col) vertices "
            "(K, 2) with K >= 3"
        ) from None
    return mask.astype(bool)


def segment(
    image: Radiograph | np.ndarray,
    *,
    spacing_mm: tuple[float, float] | None = None,
    roi=None,
    exclude=None,
    params: SegmentationParams | None = None,
) -> Segmentation:
    """Find radiodense lesions (calcifications) in a radiograph.

    Parameters
    ----------
    image : Radiograph or ndarray of shape (M, N)
        Radiodense-high image. With an array, pass ``spacing_mm`` (or None when unknown).
    spacing_mm : (float, float), optional
        (row, col) spacing in mm for an array input (ignored for a Radiograph).
    roi : bool ndarray or polygon(s) of (row, col) vertices, optional
        Report only lesions whose pixels lie inside this region (clipped to it).
    exclude : bool ndarray or polygon(s), optional
        Never report lesion pixels here.
    params : SegmentationParams, optional
        Pipeline parameters (defaults documented on the class).

    Returns
    -------
    Segmentation

    Raises
    ------
    ParameterError
        Bad image, spacing, roi/exclude or params (the message names the argument).
    """
    if params is None:
        params = SegmentationParams()
    elif not isinstance(params, SegmentationParams):
        raise ParameterError(f"`params` must be a SegmentationParams, got {type(params).__name__}")
    if isinstance(image, Radiograph):
        pixels, spacing = image.pixels, image.spacing_mm
    else:
        try:
            pixels = np.asarray(image, dtype=np.float32)
        except (TypeError, ValueError):
            raise ParameterError("`image` must be a Radiograph or a 2-D numeric array") from None
        spacing = spacing_mm
    if pixels.ndim != 2 or min(pixels.shape) < 16:
        raise ParameterError(f"`image` must be a 2-D array of at least 16 x 16 pixels, got shape {pixels.shape}")
    # A float32 sum is NaN / inf when a pixel is (exact check only when the sum overflows).
    if not (np.isfinite(pixels.sum(dtype=np.float32)) or np.isfinite(pixels).all()):
        raise ParameterError("`image` contains NaN or infinite values")
    if spacing is not None:
        try:
            spacing = (float(spacing[0]), float(spacing[1]))
            ok = len(tuple(spacing_mm if spacing_mm is not None and not isinstance(image, Radiograph) else spacing)) == 2
        except (TypeError, ValueError, IndexError):
            ok = False
        if not ok or not all(np.isfinite(v) and v > 0 for v in spacing):
            raise ParameterError(f"`spacing_mm` must be two positive numbers (row, col) in mm, got {spacing_mm!r}")
    pix_mm = float(np.sqrt(spacing[0] * spacing[1])) if spacing else params.nominal_spacing_mm
    pixel_area = pix_mm**2
    rows, cols = pixels.shape
    x = np.ascontiguousarray(pixels, dtype=np.float32)

    # 1. Reduced grid: background, field, body, bone.
    factor = max(1, int(round(params.working_spacing_mm / pix_mm)))
    small = reduce(x, factor)
    bone_len = int(round(params.bone_length_mm / (pix_mm * factor)))
    bg_disk = background_small(small, int(round(params.background_radius_mm / (pix_mm * factor))))
    bg_small = bg_disk
    # Elongated structures (bones, cortices, skin folds) belong to the background too.
    if params.line_background:
        bg_small = np.maximum(bg_small, np.minimum(elongated_opening(small, bone_len), cv2.GaussianBlur(small, (0, 0), 1.0)))
    edge_px = max(1, int(round(params.field_margin_mm / (pix_mm * factor))))
    field_s = field_mask_small(small, edge_px)
    # The body reaching further out to the limb's outline (body_level): searched, and the soft-tissue
    # surface extended to it; the bone masks, the surface's support and the noise keep the Otsu body
    # (the thin rim has a steep profile: clutter for the noise, not followed by a quadratic).
    if params.body_level > 0:
        body_s, low_s = body_mask_small(small, field_s, params.body_level)
        # Only a rim along the Otsu body's outline (not a marker's PMMA holder lying apart).
        rim = max(1, int(round(params.body_rim_mm / (pix_mm * factor))))
        near = cv2.dilate(body_s.view(np.uint8), _se(rim)).view(bool)
        body_ext_s = body_s | (low_s & near) if low_s is not body_s else body_s
    else:
        body_s = body_ext_s = body_mask_small(small, field_s)
    if params.body_close_mm > 0:  # clefts between digits (thin web, air-like grey level) are tissue
        close_r = max(1, int(round(params.body_close_mm / (2 * pix_mm * factor))))
        body_ext_s = close_clefts(body_ext_s, body_s, small, field_s, close_r, params.body_close_level)
    masks_b = bone_mask_small(small, body_s, bone_len, small - bg_small, params.bone_excess_fraction,
        bg_disk if params.local_bone else None,
        axis_sigma_px=params.bone_axis_sigma_mm / (pix_mm * factor) if params.bone_split else 0.0,
        axis_coherence=params.bone_axis_coherence)
    bone_s, bone_raw_s = masks_b[:2]
    # Bone mask with the line opening along the anatomy's axis only (lesions against a shaft are not in it).
    bone_ax_s = masks_b[2] if len(masks_b) > 2 else None
    # Contrast of bone over soft tissue (reduced grid): the scale of "opaque" (metal, lead markers).
    soft_s = body_s & ~bone_s
    bone_contrast = (float(np.median(small[bone_s]) - np.median(small[soft_s]))
                     if bone_s.sum() >= 16 and soft_s.sum() >= 16 else np.inf)
    if not bone_contrast > 0:
        bone_contrast = np.inf
    soft_s = None
    if params.soft_background:
        bg_small, soft_s = _soft_background(small, body_s, bone_s, bg_small, pix_mm * factor, params,
                                            seed_background=bg_disk, body_ext=body_ext_s)
    lesion_p_s = None  # the U-Net's lesion probability (reduced grid), learned_background=2 only
    if params.learned_background == 2:
        bg_small, lesion_p_s = unet.background_and_lesions(small, bg_small, bone_s, body_ext_s, pix_mm * factor)
    elif params.learned_background:
        bg_small = _learned_background(small, bg_small, bone_s, body_ext_s, pix_mm * factor, params)
    if params.axis_median_mm > 0:
        bg_small = _axis_floor(small, bg_small, body_ext_s, pix_mm * factor, params)
    background = enlarge(bg_small, factor, rows, cols)
    field_m, body, bone = (enlarge(m, factor, rows, cols, nearest=True) for m in (field_s, body_ext_s, bone_s))
    if params.bone_refine_mm > 0 and bone_s.any():
        bone = _refine_bone_outline(x, bone_s, body_s, factor, pix_mm, params)
    # The rim that body_level adds (reduced grid): the soft-tissue surface is extrapolated there.
    rim_s = None if body_ext_s is body_s else body_ext_s & ~body_s
    # Source grid -> reduced grid (per-box lookups).
    ridx = np.minimum(np.arange(rows) // factor, small.shape[0] - 1)
    cidx = np.minimum(np.arange(cols) // factor, small.shape[1] - 1)

    # 2. Residual; detection on a grid of about detect_spacing_mm (the source grid up to 0.1 mm).
    residual = np.subtract(x, background, out=background)  # in place: one full-size array less
    del background
    sigma_px = params.smoothing_mm / pix_mm
    step = max(1, int(round(params.detect_spacing_mm / pix_mm)))
    if step > 1:
        rd = reduce(residual, step)
        hd, wd = rd.shape
        body_d = body[::step, ::step][:hd, :wd]
        if body_ext_s is not body_s:
            body_d = gather(body_s, ridx[::step][:hd], cidx[::step][:wd])
    else:
        rd, body_d = residual, body
        if body_ext_s is not body_s:
            body_d = gather(body_s, ridx, cidx)
    smooth = _blur(rd, sigma_px / step)
    sub = max(1, 4 // step)
    sample = smooth[::sub, ::sub][body_d[::sub, ::sub]]
    offset = float(np.median(sample)) if sample.size else 0.0
    # Lag 4 on the detection grid (about 0.15 mm): beyond the correlation of the smoothed noise.
    sigma = noise_sigma_highpass(smooth, body_d, lag=4) or 1e-6
    clutter_d = body_d  # where the coarse-scale clutter is measured
    if soft_s is not None and params.noise_from_soft:
        # Noise (and residual clutter) where it matters: the smoothed residual over the soft tissue
        # used for the surface (no bone texture, no lesion candidates, no anatomy edges).
        hd_, wd_ = smooth.shape
        soft_d = _on_detection_grid(soft_s, np.arange(hd_), np.arange(wd_), step, factor)
        sample = smooth[::sub, ::sub][soft_d[::sub, ::sub]]
        if sample.size >= 256:
            clutter_d = soft_d
            offset = float(np.median(sample))
            # ... but never far below the high-pass estimate over the whole body: soft tissue in the
            # toe of the tone curve is quieter than the rest of the film.
            sigma = max(robust_sigma(sample), params.min_noise_fraction * sigma) or sigma

    search = body
    roi_mask = _to_mask(roi, x.shape, "roi")
    if roi_mask is not None:
        search = search & roi_mask
    excl = _to_mask(exclude, x.shape, "exclude")
    if excl is not None:
        search = search & ~excl
    search_d = search[::step, ::step][: smooth.shape[0], : smooth.shape[1]] if step > 1 else search

    # Coarse scale for faint, extended lesions (clouds, thin plaques).
    sigma2_px = params.coarse_smoothing_mm / pix_mm
    scales = [(smooth, sigma, sigma_px)]
    if params.coarse_smoothing_mm > 0 and sigma2_px > sigma_px:
        smooth2 = _blur(rd, sigma2_px / step)
        # At this scale the limit is the anatomical clutter, not the quantum noise:
        # the robust spread of the coarse residual over the body.
        if params.coarse_clutter:
            sample2 = smooth2[::sub, ::sub][clutter_d[::sub, ::sub]] - offset
            sigma2 = max(robust_sigma(sample2), sigma * sigma_px / sigma2_px) or 1e-6
        else:
            sigma2 = noise_sigma_highpass(smooth2, body_d, lag=max(4, int(round(3 * sigma2_px / step)))) or 1e-6
        # Cores at this scale need params.coarse_k sigmas; express it in the k_high unit.
        scales.append((smooth2, sigma2 * params.coarse_k / params.k_high, sigma2_px))
    del rd

    # 3. Confident cores (k_high sigma), brightest first; each grown locally.
    labels = np.zeros(x.shape, np.int32)
    marked: list[tuple[int, int, int, int]] = []  # boxes where rejected structures were marked -1
    any_label = False
    levels: dict[int, float] = {}
    rejected: list[dict] = []
    next_id = 1
    min_px = params.min_area_mm2 / pixel_area
    max_px = params.max_area_mm2 / pixel_area
    pad_min = max(3, int(round(params.grow_margin_mm / pix_mm)))
    ring_k = 2 * max(1, int(round(params.ring_mm / pix_mm))) + 1
    ring_se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (ring_k, ring_k))
    fit_k = 2 * max(1, int(round(params.fit_ring_mm / pix_mm))) + 1
    fit_se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (fit_k, fit_k))
    top = float(cv2.minMaxLoc(x)[1])
    sat_level = top - 0.005 * max(top - float(np.percentile(x[::4, ::4], 0.5)), 1e-6)
    # Bone plus a band around it (cortical edges sit at the Otsu boundary) for rejection;
    # a band inside the skin line (edge overshoot). Both evaluated per box.
    band_k = 2 * max(1, int(round(params.bone_band_mm / pix_mm))) + 1
    split_px = params.bone_split_min_area_mm2 / pixel_area
    band_se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (band_k, band_k))
    skin_k = 2 * max(1, int(round(params.skin_band_mm / pix_mm))) + 1
    skin_se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (skin_k, skin_k))
    streak_k = 2 * max(1, int(round(params.streak_skin_mm / pix_mm))) + 1
    streak_se = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (streak_k, streak_k))
    ragged_se = _se(max(1, int(round(params.ragged_bone_mm / pix_mm))))
    for smooth, sigma, blur_px in scales:
        thr_core = params.k_high * sigma + offset
        core_mask = (smooth >= thr_core) & search_d
        if any_label:
            lab_d = labels[::step, ::step][: smooth.shape[0], : smooth.shape[1]] if step > 1 else labels
            core_mask &= ~cv2.dilate((lab_d != 0).astype(np.uint8), _se(max(1, (ring_k // 2) // step))).astype(bool)
        # Grana's block-based labelling: the same labels as the default, 2x faster on this sparse mask.
        n, comp, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(core_mask.view(np.uint8), 8, cv2.CV_32S,
                                                                          cv2.CCL_GRANA)
        del core_mask
        if n <= 1:
            continue
        hs, ws = smooth.shape
        # Fractions of each core on the bone band and in the skin band (detection grid, all cores at once).
        bone_d = np.ascontiguousarray((bone[::step, ::step] if step > 1 else bone)[:hs, :ws]).view(np.uint8)
        band_d = cv2.dilate(bone_d, _se(max(1, (band_k // 2) // step))).view(bool)
        body_dd = np.ascontiguousarray(body[::step, ::step][:hs, :ws]).view(np.uint8)
        skin_d = body_dd.view(bool) & ~cv2.erode(body_dd, _se(max(1, (skin_k // 2) // step)),
                                                 borderType=cv2.BORDER_CONSTANT, borderValue=0).view(bool)
        core_px = np.maximum(stats[:, cv2.CC_STAT_AREA], 1).astype(np.float64)
        bone_frac = np.bincount(comp[band_d], minlength=n) / core_px
        core_p = None
        if lesion_p_s is not None:
            p_d = _on_detection_grid(lesion_p_s, np.arange(hs), np.arange(ws), step, factor)
            core_p = np.bincount(comp.ravel(), weights=p_d.ravel(), minlength=n) / core_px
        skin_frac = np.bincount(comp[skin_d], minlength=n) / core_px
        # Cheap tests on every core before any growth: too large, on the bone band (a lesion
        # against a bone has its core off the bone; cortical edges and trabeculae have theirs on
        # it), in the skin band (edge overshoot).
        survivors = []
        split: set[int] = set()
        for i in range(1, n):
            c0d, r0d, wd, hd, a = (int(v) for v in stats[i])
            bbox = (r0d * step, (r0d + hd) * step, c0d * step, (c0d + wd) * step)
            area0 = a * step * step
            reason = ("max_area" if area0 > max_px else "bone" if bone_frac[i] > params.max_bone_fraction
                      else "skin_edge" if skin_frac[i] > 0.5 else None)
            if (reason == "bone" and bone_ax_s is not None and a >= split_px / (step * step)
                    and _split_core(comp, stats, i, smooth, offset, sigma, bone_ax_s, step, factor,
                                    max(1, (band_k // 2) // step), split_px / (step * step),
                                    int(round(params.bone_split_open_mm / (pix_mm * step))), params)):
                split.add(i)  # the core's piece off the axis bone mask: a lesion against the bone
                reason = "skin_edge" if skin_frac[i] > 0.5 else None
            if reason == "bone" and core_p is not None and core_p[i] >= params.unet_keep_probability:
                reason = None  # the U-Net is confident this core on the bone band is a lesion
            if reason:
                rejected.append(dict(reason=reason, area_px=area0, bbox=bbox))
            else:
                survivors.append(i)
        peaks = np.empty(len(survivors))
        for j, i in enumerate(survivors):
            c0d, r0d, wd, hd, _ = stats[i]
            box = (slice(r0d, r0d + hd), slice(c0d, c0d + wd))
            peaks[j] = smooth[box][comp[box] == i].max()
        order = [survivors[j] for j in np.argsort(-peaks)] if survivors else []
        for i in order:
            c0d, r0d, wd, hd, _ = (int(v) for v in stats[i])
            c0, r0, w, h = c0d * step, r0d * step, wd * step, hd * step
            core_t = comp[r0d : r0d + hd, c0d : c0d + wd] == i
            lab_t = labels[r0 : r0 + h : step, c0 : c0 + w : step]
            if (lab_t[core_t] > 0).mean() > 0.5:
                continue  # part of a lesion already grown from a brighter core
            pad = max(pad_min, int(params.grow_size_factor * max(w, h)))
            ra, rb = max(0, r0 - pad), min(rows, r0 + h + pad)
            ca, cb = max(0, c0 - pad), min(cols, c0 + w + pad)
            if step > 1:
                ri = (np.arange(ra, rb) // step).clip(0, comp.shape[0] - 1)
                ci = (np.arange(ca, cb) // step).clip(0, comp.shape[1] - 1)
                # The core on the detection grid (its box), then up to the source grid.
                core = gather(comp[ri[0] : ri[-1] + 1, ci[0] : ci[-1] + 1] == i, ri - ri[0], ci - ci[0])
            else:
                core = comp[ra:rb, ca:cb] == i
            taken = labels[ra:rb, ca:cb] > 0
            if i in split:
                # Against a bone: the bone is the axis mask (the full mask swallows the lesion).
                bone_box = gather(bone_ax_s, ridx[ra:rb], cidx[ca:cb])
            else:
                bone_box = bone[ra:rb, ca:cb]
            bone_band = cv2.dilate(bone_box.view(np.uint8), band_se).view(bool)
            if step > 1:
                m = int(3 * blur_px) + 1
                ma, mb, na, nb = max(0, ra - m), min(rows, rb + m), max(0, ca - m), min(cols, cb + m)
                values = _blur(residual[ma:mb, na:nb], blur_px)[ra - ma : rb - ma, ca - na : cb - na] - offset
                fine = core & (values >= params.k_high * sigma)
                if fine.any():
                    core = fine
            else:
                values = smooth[ra:rb, ca:cb] - offset
            bone_raw_box = gather(bone_raw_s, ridx[ra:rb], cidx[ca:cb])
            allowed = search[ra:rb, ca:cb] & ~taken
            peak = float(values[core].max())
            if i in split:
                # Grow off the bone (and its band) except where the lesion is strong.
                allowed = allowed & ~(bone_band & (values < params.bone_keep_fraction * peak))
            low = _grow(values >= params.k_low * sigma, core, allowed)
            if params.ring_fit and bone_raw_box[core].mean() <= 0.5 and bone_band[low].mean() < 0.2:
                keep, ring_bg, peak, local = _grow_ring_fit(
                    values, x[ra:rb, ca:cb] - residual[ra:rb, ca:cb], core, low, allowed, bone_box, sigma, params,
                    ring_se, fit_se, (ra == 0 or rb == rows or ca == 0 or cb == cols))
            else:
                local = values
                ring = cv2.dilate(low.astype(np.uint8), ring_se).astype(bool) & ~low & allowed
                ring_bg = float(np.median(values[ring])) if ring.sum() >= 8 else 0.0
                ring_bg = min(max(ring_bg, -params.k_low * sigma), params.k_low * sigma)
                thr = ring_bg + max(params.edge_fraction * (peak - ring_bg), params.k_edge * sigma)
                keep = _grow(values >= thr, core, allowed)
                # A region running into the box edge leaks into anatomy: raise the threshold.
                for _ in range(8):
                    edge = keep[0].sum() + keep[-1].sum() + keep[:, 0].sum() + keep[:, -1].sum()
                    at_border = (ra == 0 or rb == rows or ca == 0 or cb == cols)
                    if edge <= 2 or at_border or thr >= 0.5 * peak:
                        break
                    thr = min(0.5 * peak, thr + max(sigma, 0.05 * (peak - ring_bg)))
                    keep = _grow(values >= thr, core, allowed)
            # Weak pixels on the bone are bone texture; strong ones are the lesion overlapping it.
            gpeak = float(values[core].max())
            keep &= ~(bone_box & (values < params.bone_keep_fraction * gpeak))
            area = int(keep.sum())
            reason = None
            # The bright-class (short bone) test ignores the rim that body_level adds: below the Otsu
            # body threshold by construction, it would dilute the bright fraction and fake a dome.
            keep_b = keep
            rim_box = gather(rim_s, ridx[ra:rb], cidx[ca:cb]) if rim_s is not None else None
            if rim_box is not None:
                off_rim = keep & ~rim_box
                if off_rim.sum() >= 16:
                    keep_b = off_rim
            if area < min_px:
                reason = "min_area"
            elif area > max_px:
                reason = "max_area"
            elif _skin_band(body, ra, rb, ca, cb, skin_se)[keep].mean() > 0.5:
                reason = "skin_edge"  # processing overshoot along the skin line
            elif (rim_box is not None and gpeak < params.faint_peak_k * sigma
                  and rim_box[keep].mean() > params.rim_max_fraction):
                reason = "rim"  # faint and almost all in the rim at the outline (extrapolated surface)
            elif i in split and _solidity(keep) < params.bone_split_min_solidity:
                reason = "bone_split_shape"  # ragged: carved out of bone texture or overlapping bones
            elif (max(bone_raw_box[keep_b].mean(), bone_raw_box[core].mean()) > 0.5
                  and (_dome_ratio(values, keep_b) < (params.bone_split_min_dome if i in split else params.min_dome_ratio)
                       or (params.max_bright_elongation > 0 and _elongation(keep_b) > params.max_bright_elongation))):
                # Flat or rim-bright (cortex), or elongated: a short bone (phalanx, carpal), not a nodule.
                reason = "bone_shape"
            elif (params.min_dome_ratio_faint > 0 and area * pixel_area < params.small_area_mm2
                  and gpeak < params.small_peak_k * sigma):
                reason = "faint_small"  # a small deposit is dense (dots peak far above this): a noise blob
            elif (params.min_dome_ratio_faint > 0 and gpeak < params.faint_peak_k * sigma
                  and (_flat(_dome_ratio(values, keep), _solidity(keep), gpeak / sigma, params)
                       or (params.max_elongation_faint > 0 and _elongation(keep) > params.max_elongation_faint))):
                # Faint, flat, ragged or streak-like: soft-tissue interface or texture, not a calcification
                # (a deposit is densest inside and fades to its outline; its outline is compact).
                reason = "flat"
            elif (params.streak_elongation > 0 and _elongation(keep) > params.streak_elongation
                  and _skin_band(body, ra, rb, ca, cb, streak_se)[keep].mean() > 0.5):
                reason = "skin_streak"  # a long streak along the outline: edge-enhancement overshoot
            elif (params.min_solidity > 0 and _solidity(keep) < params.min_solidity
                  and cv2.dilate(bone_box.view(np.uint8), ragged_se).view(bool)[keep].any()):
                reason = "ragged"  # a lace along a bone's edge (cortex, processing halo), not a deposit
            elif not field_m[ra:rb, ca:cb][keep].all():
                reason = "field_edge"  # reaches the collimation edge band
            elif np.mean(x[ra:rb, ca:cb][keep] >= sat_level) > params.max_saturated_fraction:
                reason = "saturated"  # lead marker, metal, burned-in text
            elif (params.max_opacity_ratio > 0 and gpeak > params.max_opacity_ratio * bone_contrast
                  and (gpeak > params.opaque_max_ratio_peaked * bone_contrast
                       or float((values[keep] >= 0.9 * gpeak).mean()) >= params.opaque_plateau_fraction)):
                # Far denser than bone over soft tissue and flat-topped: a lead marker (a sheet of even
                # thickness), metal. A thick calcified nodule over the thin bones of a hand can stand 3-4x
                # their contrast, but it thins towards its edge: little of it lies near its peak.
                reason = "opaque"
            if lesion_p_s is not None and reason not in _PHYSICAL_REASONS:
                prob = float(gather(lesion_p_s, ridx[ra:rb], cidx[ca:cb])[keep].mean())
                if reason and prob >= params.unet_keep_probability:
                    reason = None  # a bone or shape rule overruled by a confident network
                elif reason is None and prob < params.unet_reject_probability:
                    reason = "unet"  # the network gives it almost no chance of being a lesion
            if reason:
                rejected.append(dict(reason=reason, area_px=area, bbox=(ra, rb, ca, cb)))
                # Do not let a rejected structure seed a lesion again.
                labels[ra:rb, ca:cb][keep & (labels[ra:rb, ca:cb] == 0)] = -1
                marked.append((ra, rb, ca, cb))
                any_label = True
                continue
            # A fainter part of a lesion already grown (mottled cloud, lobe of a plaque) joins it.
            touching = labels[ra:rb, ca:cb][cv2.dilate(keep.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~keep]
            touching = touching[touching > 0]
            if params.merge_touching and touching.size:
                labels[ra:rb, ca:cb][keep] = int(np.bincount(touching).argmax())
                continue
            labels[ra:rb, ca:cb][keep] = next_id
            any_label = True
            levels[next_id] = ring_bg + offset
            next_id += 1
    if lesion_p_s is not None and params.unet_silhouette > 0:
        _unet_silhouette(labels, lesion_p_s, factor, search & field_m, residual, levels, min_px, ring_se, params)
    for ra, rb, ca, cb in marked:  # rejected structures (-1) are background
        box = labels[ra:rb, ca:cb]
        box[box < 0] = 0
    if lesion_p_s is not None and params.unet_mask > 0:
        labels, levels = _unet_mask(x, residual, labels, bone, body & field_m, search & field_m, pix_mm, min_px,
                                    max_px, sat_level, ring_se, params, rejected)
    return _result(labels, residual, bone, body, scales[0][1], field_m, levels, rejected, spacing, params)


#: Rejections the U-Net's lesion probability never overrules (size, skin-line overshoot, field edge,
#: saturation, opacity): facts about the candidate, not judgements of its shape.
_PHYSICAL_REASONS = frozenset({"min_area", "max_area", "skin_edge", "skin_streak", "field_edge", "saturated", "opaque"})


#: How far (mm) beyond the pipeline's lesions the lesion-mask network's outline may reach when it
#: only redraws them (``unet_mask_detect`` 0): its coverage is computed only that close.
UNET_MASK_REACH_MM = 8.0


def _unet_mask(x, residual, labels, bone, body, allowed, pix_mm, min_px, max_px, sat_level, ring_se, params,
               rejected) -> tuple[np.ndarray, dict]:
    """Labels from the lesion-mask U-Net (:mod:`calcimeasure.segment.lesion_unet`).

    Its ``unet_mask`` contour of the predicted coverage within ``allowed`` is the lesion mask. An
    8-connected region of it is reported when it overlaps a lesion of the pipeline (``labels``), or,
    overlapping none, when its peak coverage is at least ``unet_mask_detect`` (0: never; reason
    ``unet_new``). A region overlapping pipeline lesions is dropped (``unet_unconfirmed``) when the
    network's coverage at the peak of none of them reaches ``unet_mask_confirm``. Regions smaller than ``min_px`` or larger than ``max_px``, or mostly saturated
    (lead markers, metal: a physical rejection the network is never trusted to overrule), are
    dropped. Rejections are listed in ``rejected``. Returns the new labels and each lesion's ring
    background level of the residual.
    """
    # Redrawing only (no detection by the network): its coverage is needed near the pipeline's lesions.
    near_mm = None if params.unet_mask_detect > 0 else UNET_MASK_REACH_MM
    cov = lesion_unet.lesion_coverage_source(x, residual, labels > 0, bone, body, pix_mm, near_mm=near_mm)
    mask = (cov >= params.unet_mask) & allowed
    n, comp, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), 8, cv2.CV_32S)
    rows, cols = labels.shape
    confirmed = _confirmed_lesions(labels, residual, cov, params.smoothing_mm / pix_mm, params.unet_mask_confirm)
    lut = np.zeros(n, np.int32)
    levels: dict[int, float] = {}
    pad = ring_se.shape[0]
    next_id = 1
    for c in range(1, n):
        x0, y0, w, h = (int(v) for v in stats[c, :4])
        area = int(stats[c, cv2.CC_STAT_AREA])
        ra, rb, ca, cb = max(0, y0 - pad), min(rows, y0 + h + pad), max(0, x0 - pad), min(cols, x0 + w + pad)
        m = comp[ra:rb, ca:cb] == c
        reason = ("min_area" if area < min_px else "max_area" if area > max_px
                  else "saturated" if np.mean(x[ra:rb, ca:cb][m] >= sat_level) > params.max_saturated_fraction
                  else None)
        inside = labels[ra:rb, ca:cb][m]
        inside = inside[inside > 0]
        if reason is None and not inside.size:
            if not (params.unet_mask_detect > 0 and float(cov[ra:rb, ca:cb][m].max()) >= params.unet_mask_detect):
                reason = "unet_new"  # a region of the network's mask where the pipeline found nothing
        elif reason is None and confirmed is not None and not confirmed[inside].any():
            # The network does not cover any of the pipeline's lesions at its peak: its region lies
            # beside them (anatomy it takes for a lesion), not on them.
            reason = "unet_unconfirmed"
        if reason:
            rejected.append(dict(reason=reason, area_px=area, bbox=(ra, rb, ca, cb)))
            continue
        lut[c] = next_id
        ring = cv2.dilate(m.view(np.uint8), ring_se).view(bool) & (comp[ra:rb, ca:cb] == 0)
        levels[next_id] = float(np.median(residual[ra:rb, ca:cb][ring])) if ring.any() else 0.0
        next_id += 1
    return lut[comp], levels


def _confirmed_lesions(labels, residual, cov, sigma_px, threshold) -> np.ndarray | None:
    """Per pipeline lesion (indexed by label): whether the network's coverage ``cov`` at the lesion's
    peak (the maximum of the residual smoothed by ``sigma_px`` within the lesion) is at least
    ``threshold``. None when ``threshold`` is 0 (no check)."""
    if threshold <= 0:
        return None
    top = int(labels.max())
    out = np.zeros(top + 1, bool)
    pad = int(np.ceil(3 * sigma_px)) + 1
    rows, cols = labels.shape
    for lab, sl in enumerate(ndi.find_objects(labels), start=1):  # no -1 marks left by now
        if sl is None:
            continue
        ra, rb = max(0, sl[0].start - pad), min(rows, sl[0].stop + pad)
        ca, cb = max(0, sl[1].start - pad), min(cols, sl[1].stop + pad)
        m = labels[ra:rb, ca:cb] == lab
        sm = cv2.GaussianBlur(np.ascontiguousarray(residual[ra:rb, ca:cb], np.float32), (0, 0), max(sigma_px, 0.5))
        sm[~m] = -np.inf
        r, c = np.unravel_index(int(np.argmax(sm)), sm.shape)
        out[lab] = cov[ra + r, ca + c] >= threshold
    return out


def _unet_silhouette(labels, prob_s, factor, allowed, residual, levels, min_px, ring_se, params) -> None:
    """Lesion outlines from the U-Net's lesion probability (in place on ``labels``).

    The probability, trained on the share of each reduced-grid pixel a lesion covers, is
    interpolated to the source grid; its ``unet_silhouette`` contour is the network's estimate of
    the silhouette, which it infers from the whole lesion rather than from the faint pixels at its
    edge. A region of that contour joins the lesion it overlaps most (its pixels not yet taken);
    one overlapping no lesion (and no rejected structure, marked -1) becomes a lesion when its
    peak probability is at least ``unet_detect_probability`` (0: never) and it is large enough.
    """
    rows, cols = labels.shape
    p = enlarge(prob_s, factor, rows, cols)
    sil = (p >= params.unet_silhouette) & allowed
    n, comp, stats, _ = cv2.connectedComponentsWithStats(sil.view(np.uint8), 8, cv2.CV_32S)
    if n <= 1:
        return
    on = comp > 0
    cl, ll = comp[on], labels[on]
    top = int(labels.max()) + 2
    # Overlap of every region with every label (-1 rejected, 0 free, > 0 lesions).
    pair, cnt = np.unique(cl.astype(np.int64) * top + (ll + 1), return_counts=True)
    pc, pl = pair // top, pair % top - 1
    target = np.zeros(n, np.int32)
    best = np.zeros(n, np.int64)
    blocked = np.zeros(n, bool)
    for c, lab, k in zip(pc, pl, cnt):
        if lab > 0 and k > best[c]:
            target[c], best[c] = lab, k
        elif lab < 0:
            blocked[c] = True
    if params.unet_detect_probability > 0:
        peak = np.zeros(n, np.float32)
        np.maximum.at(peak, cl, p[on])
        next_id = top - 1
        for c in range(1, n):
            if target[c] or blocked[c] or stats[c, cv2.CC_STAT_AREA] < min_px:
                continue
            if peak[c] >= params.unet_detect_probability:
                target[c] = next_id
                next_id += 1
    newl = target[comp]
    free = (labels == 0) & (newl > 0)
    labels[free] = newl[free]
    for c in range(1, n):
        lab = int(target[c])
        if lab and lab not in levels:
            x0, y0, w, h = (int(v) for v in stats[c, :4])
            pad = ring_se.shape[0]
            ra, rb, ca, cb = max(0, y0 - pad), min(rows, y0 + h + pad), max(0, x0 - pad), min(cols, x0 + w + pad)
            m = labels[ra:rb, ca:cb] == lab
            ring = cv2.dilate(m.view(np.uint8), ring_se).view(bool) & (labels[ra:rb, ca:cb] == 0)
            levels[lab] = float(np.median(residual[ra:rb, ca:cb][ring])) if ring.any() else 0.0


def _on_detection_grid(a_small, rows, cols, step, factor):
    """Values of a reduced-grid array at detection-grid rows and columns (nearest reduced pixel;
    the detection grid has ``step`` source pixels per pixel, the reduced grid ``factor``)."""
    return gather(a_small, np.minimum(rows * step // factor, a_small.shape[0] - 1),
                  np.minimum(cols * step // factor, a_small.shape[1] - 1))


def _bone_zone(small, body, bone, spacing_small_mm, params):
    """Where the soft-tissue surface is not used (reduced grid): the bone masks grown by
    ``soft_bone_margin_mm``; the openings are the background there."""
    if params.soft_bone_mask:
        bone = bone | bone_zone_small(small, body, spacing_small_mm)
    k = max(1, int(round(params.soft_bone_margin_mm / spacing_small_mm)))
    return cv2.dilate(bone.view(np.uint8), _se(k)).view(bool)


def _soft_floor(small, spacing_small_mm, params):
    """The soft-tissue surface's floor (reduced grid): the ``soft_line_mm`` line opening, kept
    below the lightly smoothed image. Long straight interfaces are not lesions."""
    lines = elongated_opening(small, int(round(params.soft_line_mm / spacing_small_mm)))
    return np.minimum(lines, cv2.GaussianBlur(small, (0, 0), 1.0))


def _soft_background(small, body, bone, bg_open, spacing_small_mm, params, seed_background=None, body_ext=None,
                     leave_out=None):
    """Background of the reduced grid: a smooth soft-tissue surface off the bone, the openings on it.

    The surface is the normalized convolution of the image over the soft tissue
    (body minus the bone and a ``soft_bone_margin_mm`` band), with lesion
    candidates — pixels standing ``soft_k`` clutter sigmas above the current
    surface, grown to ``soft_k_low`` and dilated — left out and interpolated
    from around them; ``soft_iterations`` rounds (``leave_out``, reduced grid: more pixels left
    out of the fit — diagnostics, e.g. the true lesions). Unlike an opening, it does not
    need the lesion to be narrower than a structuring element (plaques, clouds,
    lesions filling a finger's width stand out of it).
    """
    def se(mm):
        return _se(max(1, int(round(mm / spacing_small_mm))))

    bone_zone = _bone_zone(small, body, bone, spacing_small_mm, params)
    usable0 = body & ~bone_zone
    if leave_out is not None:
        usable0 = usable0 & ~leave_out
    if body_ext is None:
        body_ext = body
    if usable0.sum() < 64:
        return bg_open, None
    # The surface is smooth on the scale of soft_sigma_mm: fit it on a grid of about that
    # spacing (area-reduced, fractional weights; measured better than a finer grid, which
    # follows faint clouds), bring it back linearly.
    g = max(1, int(params.soft_sigma_mm / spacing_small_mm))
    rows_s, cols_s = small.shape
    coarse = reduce(small, g)
    where = reduce(body_ext.astype(np.float32), g) > 0
    sigma_px = params.soft_sigma_mm / (spacing_small_mm * g)
    usable = usable0
    cand_se = se(params.soft_candidate_margin_mm)
    surface = bg_open
    cand = np.zeros(small.shape, bool)
    if seed_background is not None and params.soft_seed_k > 0:
        # First candidates from the disk opening's residual: a quadratic surface is flexible
        # enough to follow a faint cloud it was never told to leave out.
        r0 = small - seed_background
        c0 = robust_sigma(r0[usable0]) or 1e-6
        cand = _grow(r0 > params.soft_k_low * c0, r0 > params.soft_seed_k * c0, body) & ~bone_zone
        usable = usable0 & ~cv2.dilate(cand.view(np.uint8), cand_se).view(bool)
        if usable.sum() < 64:
            usable, cand = usable0, np.zeros(small.shape, bool)
    n_iter = max(1, int(params.soft_iterations))
    # The anatomy's axis (the isophote direction at 3x the surface's scale): bridging direction.
    theta = isophote_orientation(coarse, 3.0 * sigma_px) if params.soft_bridge_along > 0 else None
    for it in range(n_iter):
        wgt = reduce(usable.astype(np.float32), g)
        # Candidate rounds need the surface where it is well supported only; the wider
        # scales that bridge large holes are fitted in the last round.
        fit = soft_tissue_background(coarse, wgt, sigma_px, fallback=reduce(bg_open, g), where=where,
                                     scales=(1.0, 2.0, 4.0) if it == n_iter - 1 else (1.0,),
                                     theta=theta, along=params.soft_bridge_along)
        surface = enlarge(fit, g, rows_s, cols_s)
        r = small - surface
        clutter = robust_sigma(r[usable]) or 1e-6
        # Candidates accumulate over the rounds (no oscillation of the holes).
        cand |= _grow(r > params.soft_k_low * clutter, r > params.soft_k * clutter, body)
        usable = usable0 & ~cv2.dilate(cand.view(np.uint8), cand_se).view(bool)
        if usable.sum() < 64:
            break
    if params.soft_line_mm > 0:
        surface = np.maximum(surface, _soft_floor(small, spacing_small_mm, params))
    out = np.where(body_ext & ~bone_zone, surface, bg_open)
    return out.astype(np.float32), usable


def _axis_floor(small, bg_small, body, spacing_small_mm, params):
    """Lower the background to the oriented line median where that is trusted
    (:mod:`calcimeasure.segment.orientation`), on a grid of about ``axis_grid_mm``."""
    g = max(1, int(round(params.axis_grid_mm / spacing_small_mm)))
    coarse = reduce(small, g)
    body_c = reduce(body.astype(np.float32), g) > 0.99
    if body_c.sum() < 16:
        return bg_small
    sp = spacing_small_mm * g
    theta = isophote_orientation(coarse, max(0.5, params.axis_orientation_mm / sp))
    med, ok = oriented_line_median(coarse, theta, body_c, max(2, int(round(params.axis_median_mm / sp))),
                                   params.axis_straightness)
    if not ok.any():
        return bg_small
    rows_s, cols_s = small.shape
    med = np.where(ok, med, reduce(bg_small, g)).astype(np.float32)
    trusted = enlarge(ok, g, rows_s, cols_s, nearest=True) & body
    return np.where(trusted, np.minimum(enlarge(med, g, rows_s, cols_s), bg_small), bg_small).astype(np.float32)


def _learned_floors(small, bg_small, body, spacing_small_mm, params):
    """The background lowered to the oriented line medians the learned correction's features use."""
    return [_axis_floor(small, bg_small, body, spacing_small_mm, replace(params, axis_median_mm=length))
            for length in learned.AXIS_LENGTHS_MM]


def _learned_background(small, bg_small, bone, body, spacing_small_mm, params):
    """The background corrected by the shipped model (:mod:`calcimeasure.segment.learned`)."""
    floors = _learned_floors(small, bg_small, body, spacing_small_mm, params)
    return learned.corrected_background(small, bg_small, floors, bone, body, spacing_small_mm)


def _split_core(comp, stats, i, smooth, offset, sigma, bone_ax_s, step, factor, band_px, min_px, open_px,
                params) -> bool:
    """Core ``i`` (detection grid) lies mostly on the bone mask: keep its largest piece off the
    axis bone mask (+ band, opened) that is a lesion-like blob — large enough, strong, not elongated.

    On success ``comp`` keeps only that piece under label ``i`` and ``stats[i]`` its box.
    """
    c0d, r0d, wd, hd, _ = (int(v) for v in stats[i])
    h_, w_ = comp.shape
    ra, rb, ca, cb = max(0, r0d - band_px), min(h_, r0d + hd + band_px), max(0, c0d - band_px), min(w_, c0d + wd + band_px)
    ax = _on_detection_grid(bone_ax_s, np.arange(ra, rb), np.arange(ca, cb), step, factor).view(np.uint8)
    band = cv2.dilate(ax, _se(band_px)).view(bool)[r0d - ra : r0d - ra + hd, c0d - ca : c0d - ca + wd]
    box = comp[r0d : r0d + hd, c0d : c0d + wd]
    core = box == i
    off = core & ~band
    if off.sum() < min_px:
        return False
    if open_px > 0:
        # Cut the thin slivers along cortices that the axis mask leaves out (they connect a lesion
        # to the rest of the core); the growth restores the lesion's outline.
        off = cv2.morphologyEx(off.view(np.uint8), cv2.MORPH_OPEN, _se(open_px)).view(bool)
    n, parts, st, _ = cv2.connectedComponentsWithStats(off.view(np.uint8), connectivity=8)
    sm_box = smooth[r0d : r0d + hd, c0d : c0d + wd]
    for j in 1 + np.argsort(-st[1:, cv2.CC_STAT_AREA]):
        if st[j, cv2.CC_STAT_AREA] < min_px:
            return False
        piece = parts == j
        if (float(sm_box[piece].max()) - offset >= params.bone_split_peak_k * sigma
                and _elongation(piece) <= params.bone_split_max_elongation):
            break
    else:
        return False
    box[core & ~piece] = 0
    x0, y0, w0, h0 = (int(v) for v in st[j, :4])
    stats[i, :4] = (c0d + x0, r0d + y0, w0, h0)
    stats[i, cv2.CC_STAT_AREA] = st[j, cv2.CC_STAT_AREA]
    return True


def _refine_bone_outline(x, bone_s, body_s, factor, pix_mm, params) -> np.ndarray:
    """The reduced grid's bone mask with its outline redrawn on the detection grid.

    The reduced grid's mask is thresholded after a blur and line openings and lies one or two
    of its pixels (0.6–1.2 mm) outside the bone. Within ``bone_refine_mm`` of its outline, bone is
    where the image smoothed by ``bone_refine_blur_mm`` is above the Otsu threshold of that band;
    the mask's holes (compact dense objects carved out of it: lesions) stay holes. Returns the
    mask on the source grid.
    """
    rows, cols = x.shape
    step = max(1, int(round(params.detect_spacing_mm / pix_mm)))
    xs = reduce(x, step)
    hs, ws = xs.shape
    coarse = _on_detection_grid(bone_s, np.arange(hs), np.arange(ws), step, factor)
    body = _on_detection_grid(body_s, np.arange(hs), np.arange(ws), step, factor)
    filled = fill_holes(coarse)
    holes = filled & ~coarse
    k = max(1, int(round(params.bone_refine_mm / (pix_mm * step))))
    inner = cv2.erode(filled.view(np.uint8), _se(k), borderType=cv2.BORDER_REPLICATE).view(bool)
    band = cv2.dilate(filled.view(np.uint8), _se(k)).view(bool) & ~inner & body
    fine = _blur(xs, params.bone_refine_blur_mm / (pix_mm * step))
    vals = fine[band]
    if vals.size < 64 or np.ptp(vals) <= 0:
        out = coarse
    else:
        out = (inner | (band & (fine > threshold_otsu(vals)))) & ~holes & body
    return gather(out, np.minimum(np.arange(rows) // step, hs - 1), np.minimum(np.arange(cols) // step, ws - 1))


def _blur(a: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian smoothing (none below 0.3 px)."""
    return cv2.GaussianBlur(a, (0, 0), sigmaX=sigma_px) if sigma_px > 0.3 else a


def _se(radius: int) -> np.ndarray:
    k = 2 * max(1, radius) + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))


def _skin_band(body: np.ndarray, ra: int, rb: int, ca: int, cb: int, skin_se: np.ndarray) -> np.ndarray:
    """Band of the body mask inside its outline (the image border counts as outside), in a box."""
    rows, cols = body.shape
    b = body[ra:rb, ca:cb]
    er = cv2.erode(b.view(np.uint8), skin_se)  # outside the box counts as body ...
    h = skin_se.shape[0] // 2
    if ra == 0:
        er[:h] = 0  # ... but not outside the image
    if rb == rows:
        er[max(0, er.shape[0] - h):] = 0
    if ca == 0:
        er[:, :h] = 0
    if cb == cols:
        er[:, max(0, er.shape[1] - h):] = 0
    return b & ~er.view(bool)


def _plane_fit(img: np.ndarray, ring: np.ndarray, order: int = 1) -> np.ndarray:
    """Robust least-squares plane (order 1) or quadric (order 2) through ``img[ring]``
    (one reweighting at 2.5 MAD), evaluated on the whole box."""
    rr, cc = np.nonzero(ring)
    v = img[rr, cc].astype(np.float64)
    r0, c0 = float(rr.mean()), float(cc.mean())
    s = max(float(np.ptp(rr)), float(np.ptp(cc)), 1.0)
    u, w_ = (rr - r0) / s, (cc - c0) / s
    cols_ = [np.ones(rr.size), u, w_]
    if order >= 2 and rr.size >= 24:
        cols_ += [u * u, u * w_, w_ * w_]
    a = np.column_stack(cols_)
    ok = np.ones(rr.size, bool)
    coef = np.zeros(a.shape[1])
    coef[0] = np.median(v)
    for _ in range(2):
        if ok.sum() < 2 * a.shape[1]:
            break
        coef = np.linalg.lstsq(a[ok], v[ok], rcond=None)[0]
        res = v - a @ coef
        mad = 1.4826 * np.median(np.abs(res - np.median(res))) + 1e-9
        ok = np.abs(res) <= 2.5 * mad
    rows, cols = img.shape
    U = ((np.arange(rows, dtype=np.float32) - r0) / s)[:, None]
    W = ((np.arange(cols, dtype=np.float32) - c0) / s)[None, :]
    out = coef[0] + coef[1] * U + coef[2] * W
    if len(coef) == 6:
        out = out + coef[3] * U * U + coef[4] * U * W + coef[5] * W * W
    return out.astype(np.float32)


def _grow_ring_fit(values, bg, core, low, allowed, bone, sigma, params, ring_se, fit_se, at_border):
    """Grow a lesion against a background fitted to a ring around it (iterated).

    The global background (disk and line openings) absorbs much of a faint,
    extended lesion; here the background of the lesion is a plane fitted
    robustly to the smoothed image in a ring (``ring_mm`` gap, ``fit_ring_mm``
    wide) outside the current extent, bone pixels left out when enough remain.
    The boundary is at ``edge_fraction`` of the lesion's peak above that plane
    (at least ``k_edge`` sigma); the ring moves out with the extent.
    Returns (region, ring level of the global residual, local peak, local residual).
    """
    img = values + bg
    region = low
    local, peak = values, float(values[core].max())
    for _ in range(int(params.ring_iterations)):
        reg8 = region.astype(np.uint8)
        ring = cv2.dilate(reg8, fit_se).astype(bool) & ~cv2.dilate(reg8, ring_se).astype(bool) & allowed
        soft = ring & ~bone
        if soft.sum() >= max(12, 0.3 * ring.sum()):
            ring = soft
        if ring.sum() < 12:
            break
        local = img - _plane_fit(img, ring, int(params.ring_fit_order))
        peak = float(local[core].max())
        if peak <= 0:
            break
        thr = max(params.edge_fraction * peak, params.k_edge * sigma)
        new = _grow(local >= thr, core, allowed)
        for _ in range(8):
            edge = new[0].sum() + new[-1].sum() + new[:, 0].sum() + new[:, -1].sum()
            if edge <= 2 or at_border or thr >= 0.5 * peak:
                break
            thr = min(0.5 * peak, thr + max(sigma, 0.05 * peak))
            new = _grow(local >= thr, core, allowed)
        if np.array_equal(new, region):
            break
        region = new
    reg8 = region.astype(np.uint8)
    ring = cv2.dilate(reg8, ring_se).astype(bool) & ~region & allowed
    ring_bg = float(np.median(values[ring])) if ring.sum() >= 8 else 0.0
    return region, ring_bg, peak, local


def _dome_ratio(values: np.ndarray, region: np.ndarray) -> float:
    """Mean contrast of the inner half (by distance to the outline) over the outer part.

    A calcification thins towards its edge (inner ≫ outer, about 2 for a nodule);
    a projected bone has a bright cortical rim and a darker marrow (ratio <= 1).
    """
    if region.sum() < 16:
        return np.inf
    dist = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    dmax = float(dist.max())
    inner = values[region & (dist >= 0.5 * dmax)]
    outer = values[region & (dist < 0.3 * dmax)]
    if inner.size == 0 or outer.size == 0:
        return np.inf
    return float(np.mean(inner)) / max(float(np.mean(outer)), 1e-6)


def _flat(dome: float, solidity: float, peak_k: float, params: SegmentationParams) -> bool:
    """Faint-candidate shape test: not dome-shaped enough for its compactness and peak, or ragged."""
    if solidity < params.min_solidity_faint:
        return True
    if solidity >= params.compact_solidity and peak_k >= params.compact_peak_k:
        return dome < params.min_dome_ratio_compact  # a compact outline (mottled cloud) may be flatter
    return dome < params.min_dome_ratio_faint


def _solidity(region: np.ndarray) -> float:
    """Area over convex-hull area (1 = convex)."""
    pts = cv2.findNonZero(region.astype(np.uint8))
    if pts is None or len(pts) < 5:
        return 1.0
    hull = cv2.contourArea(cv2.convexHull(pts))
    return float(region.sum()) / max(hull, 1.0)


def _elongation(region: np.ndarray) -> float:
    """Ratio of the principal axes (square roots of the second-moment eigenvalues); 1 = round."""
    rr, cc = np.nonzero(region)
    if rr.size < 5:
        return 1.0
    ev = np.linalg.eigvalsh(np.cov(np.vstack([rr, cc]).astype(np.float64)))
    return float(np.sqrt(max(ev[1], 1e-12) / max(ev[0], 1e-12)))


def _grow(cand: np.ndarray, seed: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Pixels of ``cand & allowed`` 8-connected to ``seed``."""
    m = cand & allowed
    n, parts = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
    lut = np.zeros(n, bool)
    lut[parts[seed & m]] = True
    lut[0] = False
    return lut[parts]


def _result(labels, residual, bone, body, sigma, field_m, levels, rejected, spacing, params) -> Segmentation:
    return Segmentation(
        labels=labels,
        residual=residual,
        bone=bone,
        body=body,
        noise_sigma=float(sigma),
        field_mask=field_m,
        background_level=levels,
        rejected=rejected,
        spacing_mm=spacing,  # type: ignore[arg-type]
        params=params,
    )
