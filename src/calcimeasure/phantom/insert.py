"""Insert synthetic tapered calcifications into a real radiograph, with exact labels.

The inserted signal is additive in the radiodense-high pixel domain (for a
log-processed radiograph that is the attenuation domain, where a deposit adds
``mu * t``): ``out = pixels + A * G_blur * (t / T)`` with ``t`` the lesion's
thickness map (same shapes as the phantom: nodules, plaques, dot clusters,
clouds), ``A = cnr * noise_sigma`` its peak contrast and ``G_blur`` a Gaussian
matching the image's own blur.  Labels are the silhouettes (``t > 0``) at
>= 50 % pixel coverage; areas are exact in the image plane of `spacing_mm`.

Heuristics (documented, overridable):

* ``noise_sigma``: 1-99 % trimmed standard deviation of the residual
  ``x - mean(4-neighbours)`` divided by ``0.9468 * sqrt(1.25)``, in the
  flattest half of 8x8 blocks inside the mask;
* blur sigma: from the lag-1 autocorrelation ``rho`` of a high-passed image in
  the flattest blocks, assuming Gaussian-correlated noise,
  ``sigma = sqrt(-1 / (4 ln rho))`` (clamped to 0.3..3 px; anatomical texture
  biases it upwards, so pass ``blur_sigma_px`` when the blur is known);
* default mask: Otsu foreground of the image, without its top 0.5 % values
  (markers, collimator), eroded by 3 mm.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from .lesions import Lesion, _draw, _max_r, rasterize_lesion
from .specs import LesionSpec, _Serialisable

__all__ = ["InsertedLesionTruth", "estimate_noise_sigma", "estimate_blur_sigma_px", "insert_lesions"]


@dataclass(frozen=True)
class InsertedLesionTruth(_Serialisable):
    """Truth of one lesion inserted by :func:`insert_lesions`.

    Attributes
    ----------
    lesion_id, kind, cluster_id
    area_mm2 : float
        Exact silhouette area in the plane of `spacing_mm`.
    area_px : float
        Sub-pixel (coverage) area.
    area_px_exact : float
        ``area_mm2 / (spacing_row * spacing_col)``.
    label_px : int
    centroid_px, center_px : (float, float)
    bbox : (int, int, int, int)
    equivalent_diameter_mm : float
    peak_contrast : float
        Added value at the thickest point before blur (pixel units).
    cnr : float
        ``peak_contrast / noise_sigma``.
    local_contrast : float
        5-95 % range of the original pixels within 10 mm of the centre (anatomy clutter).
    noise_sigma : float
        Image noise used as the contrast unit.
    blur_sigma_px : float
        Gaussian blur applied to the inserted signal.
    """

    lesion_id: int
    kind: str
    cluster_id: int
    area_mm2: float
    area_px: float
    area_px_exact: float
    label_px: int
    centroid_px: tuple[float, float]
    center_px: tuple[float, float]
    bbox: tuple[int, int, int, int]
    equivalent_diameter_mm: float
    peak_contrast: float
    cnr: float
    local_contrast: float
    noise_sigma: float
    blur_sigma_px: float


def _flat_blocks(image: np.ndarray, mask: np.ndarray, block: int = 8) -> np.ndarray:
    h, w = (s // block * block for s in image.shape)
    blocks = image[:h, :w].reshape(h // block, block, w // block, block)
    m = mask[:h, :w].reshape(h // block, block, w // block, block).all(axis=(1, 3))
    std = blocks.std(axis=(1, 3))
    if m.sum() < 8:
        m = np.ones_like(m)
    thr = np.percentile(std[m], 50)
    keep = m & (std <= thr)
    return np.repeat(np.repeat(keep, block, 0), block, 1), (h, w)


def estimate_noise_sigma(pixels: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Robust per-pixel noise standard deviation of `pixels` (see module docstring)."""
    x = np.asarray(pixels, np.float64)
    mask = np.ones(x.shape, bool) if mask is None else mask
    r = x - ndimage.convolve(x, np.array([[0, 0.25, 0], [0.25, 0, 0.25], [0, 0.25, 0]]), mode="reflect")
    keep, (h, w) = _flat_blocks(x, mask)
    vals = r[:h, :w][keep]
    lo, hi = np.percentile(vals, [1, 99])
    trimmed = vals[(vals >= lo) & (vals <= hi)]
    # std of a normal truncated at +-2.326 sigma is 0.9468 sigma; MAD fails on quantised data
    return float(trimmed.std() / 0.9468 / np.sqrt(1.25))


def estimate_blur_sigma_px(pixels: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Gaussian blur (pixels) implied by the noise autocorrelation (see module docstring)."""
    x = np.asarray(pixels, np.float32)
    mask = np.ones(x.shape, bool) if mask is None else mask
    hp = x - cv2.GaussianBlur(x, (0, 0), 2.0)
    keep, (h, w) = _flat_blocks(x, mask)
    a = hp[:h, : w - 1][keep[:, : w - 1] & keep[:, 1:w]]
    b = hp[:h, 1:w][keep[:, : w - 1] & keep[:, 1:w]]
    if a.size < 100:
        return 1.0
    rho = float(np.corrcoef(a, b)[0, 1])
    if not np.isfinite(rho) or rho <= 0.02:
        return 0.3
    rho = min(rho, 0.98)
    return float(np.clip(np.sqrt(-1.0 / (4.0 * np.log(rho))), 0.3, 3.0))


def _default_mask(x: np.ndarray, spacing_mm: tuple[float, float]) -> np.ndarray:
    from skimage.filters import threshold_otsu

    step = max(1, int(np.sqrt(x.size / 250_000)))
    sub = x[::step, ::step]
    thr = threshold_otsu(sub)
    top = np.percentile(sub, 99.5)
    mask = (x > thr) & (x < top)
    iters = max(1, int(round(3.0 / min(spacing_mm))))
    return ndimage.binary_erosion(mask, iterations=iters) if mask.any() else mask


def insert_lesions(
    pixels: np.ndarray,
    spacing_mm: float | tuple[float, float],
    *,
    seed: int,
    n_lesions: int = 6,
    kinds: tuple[str, ...] = ("nodule", "plaque", "dot", "cloud"),
    cnr_range: tuple[float, float] = (3.0, 12.0),
    size_scale: float = 1.0,
    lesion_spec: LesionSpec | None = None,
    mask: np.ndarray | None = None,
    blur_sigma_px: float | None = None,
    noise_sigma: float | None = None,
    min_gap_mm: float = 1.5,
    supersampling: int = 8,
) -> tuple[np.ndarray, np.ndarray, list[InsertedLesionTruth]]:
    """Insert tapered synthetic lesions into a real radiodense-high radiograph.

    Parameters
    ----------
    pixels : ndarray of shape (M, N)
        Radiodense-high image, e.g. ``calcimeasure.read_image(path).pixels``.
    spacing_mm : float or (float, float)
        (row, col) pixel spacing; lesion sizes and areas are in this plane.
    seed : int
    n_lesions : int
        Number of lesions; a "dot" draw becomes a cluster of 3..8 dots (each its own id).
    kinds : tuple of str
        Kinds drawn uniformly: "nodule", "plaque", "dot" (cluster), "cloud".
    cnr_range : (float, float)
        Peak contrast in units of the image noise.
    size_scale : float
        Multiplier of the lesion sizes of `lesion_spec`.
    lesion_spec : LesionSpec, optional
        Size ranges (default :class:`LesionSpec`; densities are ignored: the
        contrast comes from `cnr_range`).
    mask : ndarray of bool, optional
        Where lesions may be placed (whole silhouette inside); default: see module docstring.
    blur_sigma_px, noise_sigma : float, optional
        Override the estimates.
    min_gap_mm : float
    supersampling : int

    Returns
    -------
    pixels_with_lesions : ndarray of float32
    labels : ndarray of int32
    truth : list of InsertedLesionTruth
    """
    x = np.asarray(pixels, np.float32)
    if x.ndim != 2:
        raise ValueError(f"`pixels` must be a 2-D array, got shape {x.shape}")
    sp = (float(spacing_mm), float(spacing_mm)) if np.isscalar(spacing_mm) else tuple(float(s) for s in spacing_mm)
    if len(sp) != 2 or min(sp) <= 0:
        raise ValueError(f"`spacing_mm` must be positive (row, col) spacing, got {spacing_mm!r}")
    bad = set(kinds) - {"nodule", "plaque", "dot", "cloud"}
    if bad or not kinds:
        raise ValueError(f"`kinds` must be a non-empty subset of nodule, plaque, dot, cloud; got {kinds!r}")
    rng = np.random.default_rng([int(seed), 9])
    region = _default_mask(x, sp) if mask is None else np.asarray(mask, bool)
    if region.shape != x.shape:
        raise ValueError(f"`mask` must have the image's shape {x.shape}, got {region.shape}")
    sigma_n = estimate_noise_sigma(x, region) if noise_sigma is None else float(noise_sigma)
    if sigma_n <= 0:
        sigma_n = float(np.std(x)) * 0.01 + 1e-6
    blur = estimate_blur_sigma_px(x, region) if blur_sigma_px is None else float(blur_sigma_px)
    spec = lesion_spec or LesionSpec()
    s = float(size_scale)
    spec = dataclasses.replace(
        spec,
        nodule_radius_mm=tuple(r * s for r in spec.nodule_radius_mm),
        plaque_radius_mm=tuple(r * s for r in spec.plaque_radius_mm),
        cloud_radius_mm=tuple(r * s for r in spec.cloud_radius_mm),
        dot_radius_mm=tuple(r * s for r in spec.dot_radius_mm),
        cluster_radius_mm=tuple(r * s for r in spec.cluster_radius_mm),
    )
    dist = ndimage.distance_transform_edt(region, sampling=sp) if region.any() else np.zeros(x.shape)
    cand_r, cand_c = np.nonzero(dist > 1.0)
    p2b = np.array([[sp[0], 0, 0], [0, sp[1], 0], [0, 0, 1.0]])
    placed: list[Lesion] = []

    def ok(center_mm, rmax, gap):
        r = int(round(center_mm[0] / sp[0]))
        c = int(round(center_mm[1] / sp[1]))
        if not (0 <= r < x.shape[0] and 0 <= c < x.shape[1]) or dist[r, c] < rmax + 0.5:
            return False
        return all(np.hypot(*(np.asarray(o.center_mm) - center_mm)) >= o.max_radius_mm + rmax + gap for o in placed)

    next_id, next_cluster = 1, 1
    for _ in range(int(n_lesions)):
        if cand_r.size == 0:
            break
        kind = str(kinds[int(rng.integers(len(kinds)))])
        if kind == "dot":
            rc = float(rng.uniform(*spec.cluster_radius_mm))
            ctr = None
            for i in rng.integers(0, cand_r.size, 300):
                cm = np.array([cand_r[i] * sp[0], cand_c[i] * sp[1]])
                if ok(cm, rc + spec.dot_radius_mm[1], min_gap_mm):
                    ctr = cm
                    break
            if ctr is None:
                continue
            n_dots = int(rng.integers(3, 9))
            got = 0
            for _t in range(n_dots * 40):
                if got >= n_dots:
                    break
                params = _draw("dot", spec, rng)
                rad, ang = rc * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
                p = ctr + rad * np.array([np.cos(ang), np.sin(ang)])
                if not ok(p, _max_r(params), min_gap_mm / 3):
                    continue
                placed.append(Lesion(lesion_id=next_id, center_mm=(float(p[0]), float(p[1])),
                                     orientation_deg=float(rng.uniform(0, 180)),
                                     texture_seed=int(rng.integers(2**31)), cluster_id=next_cluster, **params))
                next_id += 1
                got += 1
            next_cluster += 1 if got else 0
            continue
        params = _draw(kind, spec, rng)
        for _attempt in range(5):
            rmax = _max_r(params)
            found = None
            for i in rng.integers(0, cand_r.size, 300):
                cm = np.array([cand_r[i] * sp[0], cand_c[i] * sp[1]])
                if ok(cm, rmax, min_gap_mm):
                    found = cm
                    break
            if found is not None:
                break
            params["radius_mm"] *= 0.8
        if found is None:
            continue
        placed.append(Lesion(lesion_id=next_id, center_mm=(float(found[0]), float(found[1])),
                             orientation_deg=float(rng.uniform(0, 180)), texture_seed=int(rng.integers(2**31)), **params))
        next_id += 1

    signal = np.zeros(x.shape, np.float32)
    labels = np.zeros(x.shape, np.int32)
    best = np.zeros(x.shape, np.float32)
    rows = []
    for les in placed:
        ras = rasterize_lesion(les, p2b, x.shape, excess_mu_per_mm=0.0, supersampling=supersampling)
        if ras is None:
            continue
        cnr = float(rng.uniform(*cnr_range))
        amp = cnr * sigma_n
        r0, r1, c0, c1 = ras.box
        signal[r0:r1, c0:c1] += np.float32(amp / les.thickness_mm) * ras.mean_thickness_mm
        win = (ras.coverage >= 0.5) & (ras.coverage > best[r0:r1, c0:c1])
        labels[r0:r1, c0:c1][win] = les.lesion_id
        best[r0:r1, c0:c1][win] = ras.coverage[win]
        rows.append((les, ras, amp, cnr))
    out = x + (cv2.GaussianBlur(signal, (0, 0), blur) if blur > 0.05 else signal)
    counts = np.bincount(labels.ravel(), minlength=next_id + 1)
    truth = []
    for les, ras, amp, cnr in rows:
        r0, r1, c0, c1 = ras.box
        rr, cc = np.nonzero(ras.coverage > 0)
        cr, ccn = les.center_mm[0] / sp[0], les.center_mm[1] / sp[1]
        wr, wc = int(10 / sp[0]), int(10 / sp[1])
        win = x[max(int(cr) - wr, 0): int(cr) + wr + 1, max(int(ccn) - wc, 0): int(ccn) + wc + 1]
        lc = float(np.subtract(*np.percentile(win, [95, 5])))
        truth.append(InsertedLesionTruth(
            lesion_id=les.lesion_id, kind=les.kind, cluster_id=les.cluster_id, area_mm2=les.area_mm2,
            area_px=ras.area_px, area_px_exact=les.area_mm2 / (sp[0] * sp[1]), label_px=int(counts[les.lesion_id]),
            centroid_px=ras.centroid_px, center_px=(cr, ccn),
            bbox=(r0 + int(rr.min()), c0 + int(cc.min()), r0 + int(rr.max()) + 1, c0 + int(cc.max()) + 1),
            equivalent_diameter_mm=float(2 * np.sqrt(les.area_mm2 / np.pi)), peak_contrast=float(amp), cnr=cnr,
            local_contrast=lc, noise_sigma=float(sigma_n), blur_sigma_px=float(blur)))
    return out.astype(np.float32), labels, truth
