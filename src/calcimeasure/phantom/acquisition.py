"""Image formation: exposure, scatter, noise, detector blur, log and for-presentation processing.

Chain (all per pixel, ``p`` = detector pitch):

1. Primary quanta ``P = N0 * h(row) * F * exp(-L)`` with ``L`` the line
   integral, ``h`` the heel-effect ramp, ``F`` the collimated field (0..1 with a
   penumbra) and ``N0`` set by automatic exposure control so that the median
   of ``P`` under the body is ``detector_quanta_per_mm2 * p^2``.
2. Focal-spot blur of ``P``: Gaussian, sigma = ``f * OID / (SID - OID) / 2.355``.
3. Scatter ``S = k * G_scatter * (P * thickness)``: scatter is generated in
   proportion to the irradiated thickness and spread by a broad Gaussian;
   ``k`` gives the requested scatter-to-primary ratio at the median body pixel.
4. Quantum noise: ``Q ~ Poisson(P + S)`` (exact below 30 quanta, Gaussian
   approximation with variance ``P + S + e^2`` above, ``e`` the electronic noise).
5. Detector blur: Gaussian of sigma ``detector_blur_mm`` (applied after the
   noise, as in an indirect-conversion detector: the noise is correlated).
6. Log: ``y = ln N0 - ln max(Q, 0.5)`` (radiodense = high).
7. Processing: large-kernel unsharp masking (halos), small-kernel
   sharpening, optional range compression; all on the log image.
8. Tone curve: linear between the background (10th percentile of the open
   field, or just below the 2nd body percentile for thick parts) and the
   99.5th body percentile, with tanh toe and shoulder, then a
   gamma, then quantisation to ``bits_stored`` bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .specs import AcquisitionSpec

__all__ = ["gaussian_blur", "Exposure", "expose", "process_log", "tone_curve", "quantise"]

TOE = 0.08
SHOULDER = 0.88


def gaussian_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur (reflecting borders); large kernels are applied at reduced resolution."""
    img = np.asarray(image, np.float32)
    if sigma_px <= 0.05:
        return img.copy()
    if sigma_px <= 8.0:
        return cv2.GaussianBlur(img, (0, 0), sigma_px, borderType=cv2.BORDER_REFLECT)
    f = max(int(sigma_px // 3), 2)
    rows, cols = img.shape
    small = cv2.resize(img, (max(cols // f, 2), max(rows // f, 2)), interpolation=cv2.INTER_AREA)
    fr, fc = rows / small.shape[0], cols / small.shape[1]
    s_small = float(np.sqrt(max(sigma_px**2 - (f * f - 1) / 12.0, 0.25))) / np.sqrt(fr * fc)
    small = cv2.GaussianBlur(small, (0, 0), s_small, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (cols, rows), interpolation=cv2.INTER_LINEAR)


def _sample_mask(mask: np.ndarray, step: int) -> np.ndarray:
    return mask[::step, ::step]


def _percentile(values: np.ndarray, mask: np.ndarray, q, *, fallback: np.ndarray | None = None):
    step = max(1, int(np.sqrt(values.size / 250_000)))
    sel = values[::step, ::step][_sample_mask(mask, step)]
    if sel.size < 50:
        if fallback is None:
            sel = values[::step, ::step].ravel()
        else:
            return _percentile(values, fallback, q)
    return np.percentile(sel, q)


@dataclass
class Exposure:
    """Detector signal of one exposure.

    Attributes
    ----------
    signal : ndarray
        Noisy, blurred detector signal in quanta per pixel.
    noise_free : ndarray
        Expected (noise-free) blurred signal in quanta per pixel.
    n0_px : float
        Unattenuated quanta per pixel at the heel-ramp centre (log reference).
    scatter_to_primary : float
        Realised scatter-to-primary ratio at the median body pixel.
    """

    signal: np.ndarray
    noise_free: np.ndarray
    n0_px: float
    scatter_to_primary: float


def expose(
    line_integral: np.ndarray,
    thickness_mm: np.ndarray,
    field: np.ndarray,
    body_mask: np.ndarray,
    acq: AcquisitionSpec,
    rng: np.random.Generator,
    *,
    exclude_mask: np.ndarray | None = None,
) -> Exposure:
    """Steps 1-5 of the chain (see module docstring)."""
    rows, cols = line_integral.shape
    p = acq.pitch_mm
    trans = np.exp(-line_integral.astype(np.float32))
    heel = (1.0 + acq.heel_effect * (np.arange(rows, dtype=np.float32) / max(rows - 1, 1) - 0.5))[:, None]
    aec = body_mask & (field > 0.99)
    if exclude_mask is not None:
        aec &= ~exclude_mask
    rel = trans * heel
    med = float(_percentile(rel, aec, 50, fallback=field > 0.99)) if aec.any() else 1.0
    target = acq.detector_quanta_per_mm2 * p * p
    n0 = target / max(med, 1e-12)
    primary = (n0 * field) * rel
    u_mm = acq.focal_spot_mm * acq.oid_mm / (acq.sid_mm - acq.oid_mm)
    primary = gaussian_blur(primary, u_mm / 2.355 / p)
    scatter = np.zeros_like(primary)
    spr_real = 0.0
    if acq.scatter_to_primary > 0:
        src = primary * thickness_mm.astype(np.float32)
        raw = gaussian_blur(src, acq.scatter_kernel_mm / p)
        if aec.any():
            k = acq.scatter_to_primary * float(_percentile(primary, aec, 50)) / max(float(_percentile(raw, aec, 50)), 1e-12)
        else:
            k = 0.0
        scatter = raw * np.float32(k)
        if aec.any():
            step = max(1, int(np.sqrt(primary.size / 250_000)))
            sel = aec[::step, ::step]
            ratio = scatter[::step, ::step][sel] / np.maximum(primary[::step, ::step][sel], 1e-6)
            spr_real = float(np.median(ratio)) if ratio.size else 0.0
    expected = primary + scatter
    del primary, scatter
    e2 = float(acq.electronic_noise_quanta) ** 2
    z = rng.standard_normal((rows, cols), dtype=np.float32)
    noisy = expected + np.sqrt(expected + np.float32(e2)) * z
    low = expected < 30.0
    if low.any():
        lam = expected[low].astype(np.float64)
        noisy[low] = rng.poisson(lam).astype(np.float32) + np.float32(np.sqrt(e2)) * z[low]
    sig = acq.detector_blur_mm / p
    signal = gaussian_blur(noisy, sig)
    noise_free = gaussian_blur(expected, sig)
    return Exposure(signal, noise_free, float(n0), spr_real)


def _masked_blur(image: np.ndarray, weight: np.ndarray, sigma_px: float) -> np.ndarray:
    """Normalised convolution: Gaussian low-pass of `image` using only pixels with weight > 0."""
    num = gaussian_blur(image * weight, sigma_px)
    den = gaussian_blur(weight, sigma_px)
    out = num / np.maximum(den, np.float32(1e-3))
    low = den < 1e-3
    if low.any():
        out[low] = image[low]
    return out


def process_log(
    log_image: np.ndarray,
    acq: AcquisitionSpec,
    *,
    body_mask: np.ndarray,
    field: np.ndarray,
    exclude_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Step 7: unsharp masking / sharpening / range compression of the log image.

    Like clinical processing, the low-pass images are computed from the
    collimated field only (normalised convolution), with the lead marker
    excluded, so that the collimator edges do not ring into the image.
    """
    p = acq.pitch_mm
    y = log_image.astype(np.float32)
    weight = (field >= 0.5).astype(np.float32)
    if exclude_mask is not None and exclude_mask.any():
        grown = cv2.dilate(exclude_mask.astype(np.uint8), np.ones((5, 5), np.uint8), iterations=max(1, int(1.0 / p / 2)))
        weight[grown > 0] = 0.0
    inner = body_mask & (field > 0.99)
    out = y.copy()
    if acq.edge_enhancement_gain > 0:
        out += np.float32(acq.edge_enhancement_gain) * (y - _masked_blur(y, weight, acq.edge_enhancement_sigma_mm / p))
    if acq.sharpening_gain > 0:
        out += np.float32(acq.sharpening_gain) * (y - gaussian_blur(y, acq.sharpening_sigma_mm / p))
    if acq.range_compression > 0:
        low = _masked_blur(y, weight, 25.0 / p)
        ref = float(_percentile(low, inner, 50, fallback=field > 0.99))
        out -= np.float32(acq.range_compression) * (low - np.float32(ref))
    return out


def tone_curve(x: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """Monotone display curve: linear from TOE to SHOULDER on x in [0, 1], tanh toe/shoulder outside."""
    x = x.astype(np.float32)
    slope = SHOULDER - TOE
    y = TOE + slope * x
    lo = x < 0
    hi = x > 1
    y[lo] = TOE + TOE * np.tanh(x[lo] * slope / TOE)
    y[hi] = SHOULDER + (1 - SHOULDER) * np.tanh((x[hi] - 1) * slope / (1 - SHOULDER))
    if gamma != 1.0:
        y = np.power(np.clip(y, 0, 1), np.float32(1.0 / gamma))
    return y


def quantise(
    processed: np.ndarray,
    acq: AcquisitionSpec,
    *,
    body_mask: np.ndarray,
    field: np.ndarray,
    exclude_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Step 8: tone curve and quantisation.

    Returns
    -------
    q : ndarray of uint16
        Radiodense-high values in ``0 .. 2**bits_stored - 1``.
    window : (float, float)
        Window centre and width (radiodense-high units) covering the body range.
    levels : (float, float)
        The log-domain values mapped to the toe and the shoulder.
    """
    inner = body_mask & (field > 0.99)
    if exclude_mask is not None:
        inner &= ~exclude_mask
    open_field = (~body_mask) & (field > 0.99)
    if exclude_mask is not None:
        open_field &= ~exclude_mask
    hi = float(_percentile(processed, inner, 99.5, fallback=field > 0.99))
    if open_field.mean() > 0.01:
        lo = float(_percentile(processed, open_field, 10.0))
    else:
        lo = float(_percentile(processed, field > 0.99, 0.5))
    if inner.any():
        # exposure recognition: the window starts a little below the thin end of the anatomy
        body_lo = float(_percentile(processed, inner, 2.0))
        lo = max(lo, body_lo - 0.15 * (hi - body_lo))
    if hi <= lo + 1e-3:
        hi = lo + 1.0
    y = tone_curve((processed - np.float32(lo)) / np.float32(hi - lo), acq.tone_gamma)
    maxval = (1 << acq.bits_stored) - 1
    q = np.clip(np.rint(y * maxval), 0, maxval).astype(np.uint16)
    y_lo, y_hi = tone_curve(np.array([0.0, 1.0], np.float32), acq.tone_gamma)
    window = ((float(y_lo) + float(y_hi)) / 2 * maxval, (float(y_hi) - float(y_lo)) * maxval)
    return q, window, (lo, hi)
