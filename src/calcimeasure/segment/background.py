"""Local background (soft tissue, bone, large-scale structure), residual and noise."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["reduce", "enlarge", "gather", "background_small", "robust_sigma", "noise_sigma_highpass", "oriented_quadratic_fit"]


def robust_sigma(values: np.ndarray) -> float:
    """Noise sigma from the median absolute deviation (1.4826 · MAD)."""
    if values.size == 0:
        return 0.0
    med = np.median(values)
    return float(1.4826 * np.median(np.abs(values - med)))


def reduce(image: np.ndarray, factor: int) -> np.ndarray:
    """Area-averaged reduction by an integer factor (averages the noise too)."""
    if factor <= 1:
        return image
    rows, cols = image.shape
    r, c = max(1, rows // factor), max(1, cols // factor)
    # Cropping to whole blocks keeps OpenCV on its fast integer-factor path (5x faster).
    src = image[: r * factor, : c * factor] if rows >= factor and cols >= factor else image
    return cv2.resize(src, (c, r), interpolation=cv2.INTER_AREA)


def enlarge(small: np.ndarray, factor: int, rows: int, cols: int, nearest: bool = False) -> np.ndarray:
    """Inverse of :func:`reduce`: back to (rows, cols), aligned with the whole blocks it averaged;
    the leftover rows / columns (fewer than ``factor``) repeat the last ones."""
    if factor <= 1 and small.shape == (rows, cols):
        return small
    if nearest:
        # Block replication by index (3x faster than cv2.resize's nearest on masks).
        return gather(small, np.minimum(np.arange(rows) // factor, small.shape[0] - 1),
                      np.minimum(np.arange(cols) // factor, small.shape[1] - 1))
    src = small.view(np.uint8) if small.dtype == bool else small
    rc, cc = min(rows, small.shape[0] * factor), min(cols, small.shape[1] * factor)
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    up = cv2.resize(src, (cc, rc), interpolation=interp)
    if (rc, cc) != (rows, cols):
        out = np.empty((rows, cols), up.dtype)
        out[:rc, :cc] = up
        out[rc:, :cc] = up[-1:]
        out[:, cc:] = out[:, cc - 1 : cc]
        up = out
    return up.view(bool) if small.dtype == bool else up


def gather(a: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``a[np.ix_(rows, cols)]`` (a contiguous copy), 3-7x faster: columns first, then whole rows."""
    return a.take(cols, axis=1).take(rows, axis=0)


def background_small(small: np.ndarray, radius_px: int) -> np.ndarray:
    """Grey opening with a disk on the reduced grid, lightly smoothed and kept below the image.

    The opening (erosion then dilation) removes bright structures narrower than
    the disk — calcifications — and keeps soft tissue, bone and large-scale
    gradients. A small blur removes the blocky texture of the morphological
    result; the final minimum keeps the background at or below the (smoothed)
    image next to sharp drops.
    """
    k = 2 * max(1, radius_px) + 1
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    opened = cv2.morphologyEx(small, cv2.MORPH_OPEN, disk, borderType=cv2.BORDER_REPLICATE)
    smoothed = cv2.GaussianBlur(opened, (0, 0), sigmaX=max(0.7, radius_px / 4))
    # The blur would pull the background below the tissue next to a step (skin
    # line, collimation edge): the opening itself follows steps, keep the higher.
    return np.minimum(np.maximum(smoothed, opened), cv2.GaussianBlur(small, (0, 0), 1.0))


def noise_sigma_highpass(smooth: np.ndarray, mask: np.ndarray, lag: int = 4, step: int = 3) -> float:
    """Noise sigma of ``smooth`` from differences of pixels ``lag`` apart (a high-pass).

    Differences at a lag beyond the noise correlation length (detector blur plus
    the smoothing) cancel the anatomy and the background but keep the noise:
    ``var(d) = 2 σ²``. The MAD of the differences is robust to edges and lesions.
    """
    a = smooth[::step, lag:]
    b = smooth[::step, :-lag]
    m = mask[::step, lag:] & mask[::step, :-lag]
    d = (a - b)[m]
    if d.size < 32:
        d = (a - b).ravel()
    return robust_sigma(d) / np.sqrt(2.0)


def normalized_blur(image: np.ndarray, weight: np.ndarray, sigma_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian normalized convolution: the weighted local mean of ``image`` and the local weight.

    Pixels of zero weight (bone, lesion candidates) take the value interpolated
    from their weighted neighbourhood.
    """
    w = weight.astype(np.float32)
    num = cv2.GaussianBlur(image * w, (0, 0), sigma_px, borderType=cv2.BORDER_REPLICATE)
    den = cv2.GaussianBlur(w, (0, 0), sigma_px, borderType=cv2.BORDER_REPLICATE)
    return num / np.maximum(den, 1e-6), den


def soft_tissue_background(
    small: np.ndarray,
    usable: np.ndarray,
    sigma_px: float,
    fallback: np.ndarray,
    min_weight: float = 0.3,
    where: np.ndarray | None = None,
    scales: tuple[float, ...] = (1.0, 2.0, 4.0),
    theta: np.ndarray | None = None,
    along: float = 0.0,
    min_weight_oriented: float = 0.1,
) -> np.ndarray:
    """Smooth soft-tissue surface through the ``usable`` pixels (normalized convolution).

    ``usable`` may be fractional (a weight). Only pixels of ``where`` (default all) are
    estimated; the others keep ``fallback``. Estimated at ``sigma_px`` and, where too few usable pixels are near
    (weight < ``min_weight``: under large candidates, deep inside bone), at 2x and 4x
    the scale; where even that fails, ``fallback``. With ``along`` > 0 and a direction map
    ``theta`` (radians, x = column, y = row), the 2x step is replaced by
    :func:`oriented_quadratic_fit` with a window ``along`` x ``sigma_px`` along ``theta`` and
    ``sigma_px`` across it (accepted from a weight of ``min_weight_oriented``).
    """
    out = fallback.astype(np.float32).copy()
    todo = np.ones(small.shape, bool) if where is None else where.copy()
    for k in scales:
        if k == 2.0 and along > 0 and theta is not None:
            # Bridge along the anatomy's axis instead: a strip of soft tissue beside a shaft is
            # interpolated from along the strip, not from across the bone and the skin.
            est, den = oriented_quadratic_fit(small, usable, theta, sigma_px * along, sigma_px, where=todo)
            ok = todo & (den >= min_weight_oriented) & np.isfinite(est)
            out[ok] = est[ok]
            todo &= ~ok
            continue
        est, den = local_quadratic_fit(small, usable, sigma_px * k, where=todo)
        ok = todo & (den >= min_weight) & np.isfinite(est)
        out[ok] = est[ok]
        todo &= ~ok
        if not todo.any():
            break
    return out


def local_quadratic_fit(image: np.ndarray, weight: np.ndarray, sigma_px: float, where: np.ndarray | None = None,
                        ridge: float = 1e-6):
    """Locally weighted quadratic regression (normalized convolution with a polynomial basis).

    At every pixel (or only at ``where``), fits ``a + b·dy + c·dx + d·dy² + e·dy·dx + f·dx²``
    to the ``weight``-ed pixels of a Gaussian window (``sigma_px``) and returns the fitted
    value ``a`` (NaN where not solved) and the window's normalised weight (1 = fully
    supported). Unlike the local mean, it follows curved surfaces (the dome of a finger's
    soft tissue) without bias, and bridges holes (weight 0) by the local curvature.
    Cost: 21 separable filters and one 6 x 6 solve per pixel.
    """
    w = weight.astype(np.float32, copy=False)
    return _quadratic_fit((image * w).astype(np.float32, copy=False), w, sigma_px, sigma_px, where, ridge)


def _polynomial_kernels(sigma_px: float) -> tuple[list[np.ndarray], float]:
    """Gaussian x (t / sigma)^n, n = 0..4 (normalised coordinates keep the system well
    conditioned), and the Gaussian's sum."""
    h = int(np.ceil(3 * sigma_px))
    t = np.arange(-h, h + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma_px) ** 2)
    ts = t / sigma_px
    return [(g * ts**n).astype(np.float32) for n in range(5)], float(g.sum())


def _quadratic_fit(weighted: np.ndarray, weight: np.ndarray, sigma_x: float, sigma_y: float,
                   where: np.ndarray | None = None, ridge: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """:func:`local_quadratic_fit` from the weighted image (image x weight), with a Gaussian window
    of ``sigma_x`` along the columns and ``sigma_y`` along the rows."""
    kx, sx = _polynomial_kernels(sigma_x)
    ky, sy = _polynomial_kernels(sigma_y)
    w = weight.astype(np.float32, copy=False)
    wi = weighted.astype(np.float32, copy=False)

    def mom(src, a, b):  # sum_q src(q) dy^a dx^b G  (correlation)
        return cv2.sepFilter2D(src, cv2.CV_32F, kx[b], ky[a], borderType=cv2.BORDER_CONSTANT)

    basis = [(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)]
    den = mom(w, 0, 0)
    sel = den > 1e-6 * sx * sy
    if where is not None:
        sel &= where
    idx = np.nonzero(sel)
    out = np.full(w.shape, np.nan, np.float32)
    if idx[0].size:
        cache: dict = {}

        def m(key):
            if key not in cache:
                cache[key] = mom(w, *key)[idx].astype(np.float64)
            return cache[key]

        scale = m((0, 0)).copy()
        # Normal equations, normalised by the window's weight (entries O(1) in normalised coordinates).
        A = [[m((a1 + a2, b1 + b2)) / scale for (a2, b2) in basis] for (a1, b1) in basis]
        rhs = [mom(wi, a, b)[idx].astype(np.float64) / scale for a, b in basis]
        # A tiny ridge on the slope / curvature terms only (never on the level) keeps nearly
        # unsupported windows solvable; those are discarded by the caller's weight test anyway.
        for i in range(1, len(basis)):
            A[i][i] = A[i][i] + ridge
        out[idx] = _solve_first_spd(A, rhs)
    return out, (den / (sx * sy)).astype(np.float32)


def oriented_quadratic_fit(image: np.ndarray, weight: np.ndarray, theta: np.ndarray, sigma_along_px: float,
                           sigma_across_px: float, n_angles: int = 8,
                           where: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Locally weighted quadratic regression with an elongated window along a direction field.

    At every pixel, the fit of :func:`local_quadratic_fit` with a Gaussian window of
    ``sigma_along_px`` along the direction ``theta`` (radians, x = column to the right,
    y = row down; e.g. :func:`~.orientation.isophote_orientation`) and ``sigma_across_px``
    across it. Along a limb the soft tissue's cross-profile changes slowly: a hole in the
    support (a lesion left out) is bridged from the strip of soft tissue before and after it,
    not from across a bone or the skin line, which an isotropic window reaches first.

    The direction is quantised to ``n_angles`` orientations; for each, the weighted image and
    the weight are rotated so that it runs along the columns (linear interpolation, weight 0
    outside: a left-out pixel's value never leaks into its neighbours), fitted with an
    axis-aligned anisotropic window, and rotated back. With ``where`` (bool), both are computed
    only there (NaN and 0 elsewhere).

    Returns
    -------
    est, den : ndarray of float32
        The fitted value (NaN where not solved) and the window's normalised weight.
    """
    image = np.asarray(image, np.float32)
    weight = np.asarray(weight, np.float32)
    rows, cols = image.shape
    side = int(np.ceil(np.hypot(rows, cols))) + 2
    cx, cy = (cols - 1) / 2.0, (rows - 1) / 2.0
    mid = (side - 1) / 2.0
    k_of = np.round((np.asarray(theta) % np.pi) / (np.pi / n_angles)).astype(np.int32) % n_angles
    est = np.full((rows, cols), np.nan, np.float32)
    den = np.zeros((rows, cols), np.float32)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    for k in range(n_angles):
        sel = k_of == k
        if where is not None:
            sel &= where
        if not sel.any():
            continue
        a = np.pi * k / n_angles
        c, s = np.cos(a), np.sin(a)
        # rotated (u, v) -> source (x, y): x = cx + c (u - mid) - s (v - mid), y = cy + s (u - mid) + c (v - mid)
        to_src = np.array([[c, -s, cx - c * mid + s * mid], [s, c, cy - s * mid - c * mid]])
        rwi = cv2.warpAffine(image * weight, to_src, (side, side), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=0)
        rw = cv2.warpAffine(weight, to_src, (side, side), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        to_rot = np.array([[c, s, mid - c * cx - s * cy], [-s, c, mid + s * cx - c * cy]])
        need = None
        if where is not None:
            # Solve only at the rotated pixels the rotation back interpolates this orientation's pixels from.
            ys, xs = np.nonzero(sel)
            u = to_rot[0, 0] * xs + to_rot[0, 1] * ys + to_rot[0, 2]
            v = to_rot[1, 0] * xs + to_rot[1, 1] * ys + to_rot[1, 2]
            need = np.zeros((side, side), bool)
            for du in (-1, 0, 1, 2):  # bilinear footprint, with a margin for OpenCV's fixed-point rounding
                for dv in (-1, 0, 1, 2):
                    need[np.clip(np.floor(v).astype(int) + dv, 0, side - 1),
                         np.clip(np.floor(u).astype(int) + du, 0, side - 1)] = True
        e, d = _quadratic_fit(rwi, rw, sigma_along_px, sigma_across_px, where=need)
        back = [cv2.warpAffine(x, to_rot, (cols, rows), flags=flags, borderMode=cv2.BORDER_CONSTANT)
                for x in (np.nan_to_num(e, nan=0.0), np.isfinite(e).astype(np.float32), d)]
        est[sel] = np.where(back[1][sel] > 0.999, back[0][sel], np.nan)
        den[sel] = back[2][sel]
    return est, den


def _solve_first_spd(A: list[list[np.ndarray]], b: list[np.ndarray]) -> np.ndarray:
    """First unknown of many small symmetric positive-definite systems ``A x = b``.

    ``A[i][j]`` and ``b[i]`` are 1-D arrays (one entry per system). Gaussian
    elimination without pivoting (stable for SPD matrices) of the unknowns from the
    last to the second leaves ``x[0] = b[0] / A[0][0]``: about n³/3 vectorised
    operations, ~20x faster than a batched ``numpy.linalg.solve`` of 6 x 6 systems.
    Singular systems give NaN or inf (the caller's weight test discards them).
    """
    n = len(b)
    A = [row[:] for row in A]
    b = b[:]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for k in range(n - 1, 0, -1):
            inv = 1.0 / A[k][k]
            for i in range(k):
                f = A[i][k] * inv
                for j in range(i + 1):  # lower triangle only: the matrix stays symmetric
                    A[i][j] = A[i][j] - f * A[k][j]
                    if j != i:
                        A[j][i] = A[i][j]
                b[i] = b[i] - f * b[k]
        return b[0] / A[0][0]
