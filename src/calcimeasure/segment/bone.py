"""Bone mask on the reduced grid (about 0.6 mm / px).

The mask is meant to be *excluded* (after a dilation) from the support of the
soft-tissue background, so it must cover all of every bone, blurred cortical
edges included, and must not swallow calcifications lying in soft tissue.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

__all__ = ["bone_mask_small"]

#: Pre-smoothing of the reduced image (mm).
SMOOTH_MM = 0.6
#: Scales (mm) of the normalized convolutions that interpolate the soft tissue under the bones,
#: finest first; coarser ones fill where the finer ones have too little support.
SOFT_SIGMAS_MM = (4.0, 12.0, 36.0)
#: Support weight (Gaussian-weighted fraction) above which a scale's estimate is fully trusted.
SOFT_MIN_WEIGHT = 0.3
#: Margin (mm) around the current bone estimate left out of the soft-tissue support.
SOFT_MARGIN_MM = 1.5
#: Candidate threshold, as a fraction of the bone contrast (Otsu of the excess over soft tissue).
CAND_FRACTION = 0.5
#: A component longer than this (mm, major axis) or larger (mm²) is a bone whatever else:
#: soft-tissue calcifications are smaller (plaques <= ~30 mm long).
BONE_LENGTH_MM = 32.0
BONE_AREA_MM2 = 400.0
#: Shorter components (>= SHORT_MIN_AREA_MM2) are bones when they lie within CHAIN_GAP_MM of a bone
#: (phalanges, carpals: short bones sit in chains).
CHAIN_GAP_MM = 4.0
SHORT_MIN_AREA_MM2 = 15.0
#: Medium components: bones if at least this long (mm) and elongated (length / width).
MEDIUM_LENGTH_MM = 16.0
MEDIUM_ELONGATION = 2.4
#: Chain test: the short component's centre lies beyond CHAIN_ALONG x length of the bone's centre along
#: its axis, and within CHAIN_PERP x width of that axis; bones rounder than CHAIN_ROUND accept any side.
CHAIN_ALONG = 0.4
CHAIN_PERP = 0.6
CHAIN_ROUND = 1.6
#: Radius (mm) of the piece of the neighbouring bone whose axis the chain test uses.
CHAIN_REACH_MM = 12.0
#: Holes enclosed by bone are filled when their mean excess is above this fraction of the contrast.
HOLE_FRACTION = 0.4
#: Outward growth (mm) for the blurred cortical edge.
EDGE_MM = 0.6


def _disk(radius_px: float) -> np.ndarray:
    k = 2 * max(1, int(round(radius_px))) + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))


def _decimate(x: np.ndarray, d: int) -> np.ndarray:
    """Area average over d x d blocks (edge rows / columns replicated to whole blocks)."""
    if d <= 1:
        return x
    h, w = x.shape
    ph, pw = -h % d, -w % d
    if ph or pw:
        x = cv2.copyMakeBorder(x, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
    return cv2.resize(x, (x.shape[1] // d, x.shape[0] // d), interpolation=cv2.INTER_AREA)


def _expand(x: np.ndarray, d: int, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`_decimate` (bilinear, block centres aligned)."""
    if d <= 1:
        return x
    h, w = shape
    big = cv2.resize(x, (x.shape[1] * d, x.shape[0] * d), interpolation=cv2.INTER_LINEAR)
    return big[:h, :w]


def _soft_tissue(s: np.ndarray, support: np.ndarray, sp: float) -> np.ndarray:
    """Multi-scale normalized convolution of ``s`` over ``support``.

    Each scale is computed on a grid decimated to about a third of its sigma (speed);
    the finest estimate is kept where its support weight is high, coarser ones fill in.
    """
    w = support.astype(np.float32)
    sw = s * w
    out = conf = None
    for sm in SOFT_SIGMAS_MM:
        sig = sm / sp
        d = max(1, int(sig // 3))
        num = cv2.GaussianBlur(_decimate(sw, d), (0, 0), sig / d, borderType=cv2.BORDER_REPLICATE)
        den = cv2.GaussianBlur(_decimate(w, d), (0, 0), sig / d, borderType=cv2.BORDER_REPLICATE)
        est = _expand(num / np.maximum(den, 1e-6), d, s.shape)
        c = np.minimum(_expand(den, d, s.shape) * (1 / SOFT_MIN_WEIGHT), 1.0)
        if out is None:
            out, conf = est, c
        else:
            out = conf * out + (1 - conf) * est
            conf = np.maximum(conf, c)
    return out


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Holes of ``mask``: background not 4-connected to the image border."""
    m = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), np.uint8)
    m[1:-1, 1:-1] = mask
    ff = np.zeros((m.shape[0] + 2, m.shape[1] + 2), np.uint8)
    cv2.floodFill(m, ff, (0, 0), 2, flags=4)
    return m[1:-1, 1:-1] == 0


def _chained(lab: np.ndarray, b: int, r0: float, c0: float, area_b: float, sp: float) -> bool:
    """Does a short component centred at (r0, c0) continue bone ``b`` along its axis?

    The part of ``b`` within CHAIN_REACH_MM of the centre is taken and its principal axis
    computed: the centre must lie beyond that piece's centroid by CHAIN_ALONG of the piece's
    length, within CHAIN_PERP of its width from the axis (the next bone of a chain, not a
    blob beside a shaft). Round small bones (carpals) accept neighbours on any side.
    """
    R = CHAIN_REACH_MM / sp
    ra, rb = int(max(r0 - R, 0)), int(min(r0 + R + 1, lab.shape[0]))
    ca, cb = int(max(c0 - R, 0)), int(min(c0 + R + 1, lab.shape[1]))
    rr, cc = np.nonzero(lab[ra:rb, ca:cb] == b)
    rr = rr + ra - r0
    cc = cc + ca - c0
    inside = rr * rr + cc * cc <= R * R
    rr, cc = rr[inside], cc[inside]
    if rr.size < 4:
        return False
    mr, mc = rr.mean(), cc.mean()
    vrr, vcc = rr.var() + 1 / 12, cc.var() + 1 / 12
    vrc = ((rr - mr) * (cc - mc)).mean()
    root = np.sqrt(((vrr - vcc) / 2) ** 2 + vrc**2)
    lam1, lam2 = (vrr + vcc) / 2 + root, max((vrr + vcc) / 2 - root, 1e-6)
    length, width = 4 * np.sqrt(lam1), 4 * np.sqrt(lam2)
    if length / width < CHAIN_ROUND:
        return area_b < BONE_AREA_MM2
    th = 0.5 * np.arctan2(2 * vrc, vrr - vcc)
    ur, uc = np.cos(th), np.sin(th)
    along = abs(mr * ur + mc * uc)  # the short component's centre is the origin
    perp = abs(mr * uc - mc * ur)
    return along >= CHAIN_ALONG * length and perp <= CHAIN_PERP * width


def bone_mask_small(small: np.ndarray, body: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Bone mask on the reduced grid (about 0.6 mm / px).

    Method
    ------
    1. *Excess over soft tissue.* The image (smoothed by SMOOTH_MM) minus a
       soft-tissue surface: a multi-scale normalized convolution
       (SOFT_SIGMAS_MM) of the image over the body without the current bone
       estimate (grown by SOFT_MARGIN_MM), which interpolates the soft tissue
       under the bones. Started from the bright Otsu class of the body, refined
       twice with the candidates of step 2. The bone contrast ``C`` is the
       Otsu threshold of the excess within the body.
    2. *Candidates*: excess above CAND_FRACTION x ``C`` (bones, and also dense
       calcifications, markers).
    3. *Which candidates are bones* (connected components, principal axes from
       second moments). Bones are the components longer than BONE_LENGTH_MM or
       larger than BONE_AREA_MM2 (no soft-tissue calcification is that big), or
       at least MEDIUM_LENGTH_MM long and MEDIUM_ELONGATION times longer than
       wide (shafts; nodules are compact). Shorter components (phalanges,
       carpals) are bones only when they continue a bone: within CHAIN_GAP_MM
       of it and beyond the end of its local axis (:func:`_chained`), repeated
       so that chains grow. A compact blob beside a shaft, or isolated in soft
       tissue, is not bone.
    4. *Cavities* enclosed by bone (marrow, between cortices) are filled when
       their mean excess exceeds HOLE_FRACTION x ``C``.
    5. *Blurred edge*: the mask is dilated by EDGE_MM (the candidate outline
       sits at half contrast, inside the blurred cortical edge), within ``body``.

    Parameters
    ----------
    small : ndarray of float
        Radiodense-high image, area-reduced to about 0.6 mm / px.
    body : ndarray of bool
        Tissue mask on the same grid (e.g. :func:`~.masks.body_mask_small`).
    spacing_mm : float
        Pixel size of ``small`` (mm); all sizes above are converted with it.

    Returns
    -------
    ndarray of bool
        Bone, within ``body``. Empty when the body has fewer than 16 pixels or is flat.

    Notes
    -----
    Lesions touching or overlapping a bone merge with it at step 2 and are
    covered; a compact lesion within CHAIN_GAP_MM of a bone end, along its
    axis, is taken as the next bone of a chain. About 20-30 ms for a
    400 x 330 grid.
    """
    small = np.asarray(small, np.float32)
    body = np.asarray(body, bool)
    out = np.zeros(small.shape, bool)
    if body.sum() < 16:
        return out
    sp = float(spacing_mm)
    s = cv2.GaussianBlur(small, (0, 0), SMOOTH_MM / sp)
    # 1. Excess over the soft tissue, which is interpolated under the bones.
    excl = (s > threshold_otsu(s[body])) & body
    margin = _disk(SOFT_MARGIN_MM / sp)
    for _ in range(2):
        support = body & ~cv2.dilate(excl.view(np.uint8), margin).view(bool)
        if support.sum() < 16:
            support = body & ~excl
        r = s - _soft_tissue(s, support, sp)
        vals = r[body]
        if np.ptp(vals) <= 0:
            return out
        C = threshold_otsu(vals)
        excl = (r > CAND_FRACTION * C) & body
    cand = excl
    # 2. Components: long / large ones are bones; short ones only in a chain of bones.
    lab, n = ndi.label(cand, np.ones((3, 3), bool))
    if n == 0:
        return out
    flat = lab.ravel()
    on = np.flatnonzero(flat)
    li = flat[on]
    rr, cc = np.divmod(on, lab.shape[1])
    rr, cc = rr.astype(np.float64), cc.astype(np.float64)
    npx = np.bincount(li, minlength=n + 1)[1:].astype(np.float64)
    area = npx * sp * sp

    def _mean(v):
        return np.bincount(li, v, minlength=n + 1)[1:] / npx

    mr, mc = _mean(rr), _mean(cc)
    vrr = _mean(rr * rr) - mr**2 + 1 / 12
    vcc = _mean(cc * cc) - mc**2 + 1 / 12
    vrc = _mean(rr * cc) - mr * mc
    root = np.sqrt(((vrr - vcc) / 2) ** 2 + vrc**2)
    lam1, lam2 = (vrr + vcc) / 2 + root, np.maximum((vrr + vcc) / 2 - root, 1e-6)
    length = 4 * np.sqrt(lam1) * sp
    width = 4 * np.sqrt(lam2) * sp
    elong = length / width
    is_bone = np.zeros(n + 1, bool)
    is_bone[1:] = ((length >= BONE_LENGTH_MM) | (area >= BONE_AREA_MM2)
                   | ((length >= MEDIUM_LENGTH_MM) & (elong >= MEDIUM_ELONGATION)))
    short = np.flatnonzero((area >= SHORT_MIN_AREA_MM2) & ~is_bone[1:]) + 1
    if short.size:
        objs = ndi.find_objects(lab)
        g = int(np.ceil(CHAIN_GAP_MM / sp))
        gap = _disk(CHAIN_GAP_MM / sp)
        pending = list(short)
        changed = True
        while changed and pending:
            changed = False
            for k in list(pending):
                sl = objs[k - 1]
                r0, r1 = max(sl[0].start - g, 0), min(sl[0].stop + g, s.shape[0])
                c0, c1 = max(sl[1].start - g, 0), min(sl[1].stop + g, s.shape[1])
                sub = lab[r0:r1, c0:c1]
                near = cv2.dilate((sub == k).view(np.uint8), gap).view(bool)
                nb = np.unique(sub[near])
                nb = nb[(nb > 0) & (nb != k)]
                nb = nb[is_bone[nb]]
                ok = False
                for b in nb:
                    ok = _chained(lab, b, mr[k - 1], mc[k - 1], area[b - 1], sp)
                    if ok:
                        break
                if ok:
                    is_bone[k] = True
                    pending.remove(k)
                    changed = True
    bone = is_bone[lab]
    # Cavities (marrow, between cortices) closed by the bone, if denser than soft tissue.
    holes = _fill_holes(bone)
    if holes.any():
        hl, nh = ndi.label(holes)
        mean = np.bincount(hl.ravel(), r.ravel(), minlength=nh + 1)[1:] / np.maximum(
            np.bincount(hl.ravel(), minlength=nh + 1)[1:], 1)
        keep = np.zeros(nh + 1, bool)
        keep[1:] = mean > HOLE_FRACTION * C
        bone |= keep[hl]
    # 3. Blurred edge.
    bone = cv2.dilate(bone.view(np.uint8), _disk(EDGE_MM / sp)).view(bool) & body
    return bone
