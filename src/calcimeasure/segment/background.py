"""Local background (soft tissue, bone, large-scale structure), residual and noise."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["reduce", "enlarge", "background_small", "robust_sigma", "noise_sigma_highpass"]


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
