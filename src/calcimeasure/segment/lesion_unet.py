"""Lesion mask from a second, finer U-Net (opt-in: ``unet_mask`` > 0, with ``learned_background=2``).

The pipeline's outlines are drawn by hysteresis on the residual: a calcification's contrast fades
towards its edge, so any fixed rule on the residual misreads the silhouette of the faint ones, and
a missed faint cloud is missed area. This network is trained on the phantoms' true lesion masks (and
on lesions inserted into real non-limb films) to draw the mask directly, on a grid of about
:data:`GRID_MM` (0.3 mm): its inputs are the pipeline's own residual and detections and the image's
local detail at three scales (:data:`CHANNELS`), and its output is, per fine-grid pixel, the share
of the pixel a lesion covers. Interpolated to the source grid, its ``unet_mask`` contour is the
reported lesion mask; connected regions below ``min_area_mm2`` are dropped.

Inference runs in OpenCV's DNN module from the ONNX file shipped with the package
(``data/lesion_unet.onnx``, trained by ``scripts/train_lesion_unet.py``); PyTorch is needed only to
retrain. Figures and the reasons it is not the default: docs/segmentation.md, "Lesion-mask U-Net".
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from .background import enlarge, reduce
from .learned import noise_unit
from .unet import DEPTH, load_net, signed_log

MODEL_PATH = os.path.join(os.path.dirname(__file__), "data", "lesion_unet.onnx")

#: Pixel size of the network's grid (mm): the source grid reduced by ``round(GRID_MM / spacing)``.
GRID_MM = 0.3

#: Input channels, in order (fine grid; intensities in noise units, signed-log compressed).
CHANNELS = (
    "pipeline residual (image minus the U-Net-corrected background)",
    "image minus Gaussian 0.5 mm",
    "image minus Gaussian 2 mm",
    "image minus Gaussian 8 mm",
    "pipeline detections (share of the pixel)",
    "bone mask",
    "body mask",
)


def grid_factor(pix_mm: float) -> int:
    """Source pixels per fine-grid pixel for a source pixel of ``pix_mm``."""
    return max(1, int(round(GRID_MM / float(pix_mm))))


def mask_inputs(x: np.ndarray, residual: np.ndarray, detected: np.ndarray, bone: np.ndarray, body: np.ndarray,
                pix_mm: float) -> tuple[np.ndarray, int]:
    """Input stack of :data:`CHANNELS`, shape ``(C, h, w)`` float32, and the reduction factor.

    Parameters
    ----------
    x : (M, N) ndarray
        The image on its source grid (radiodense high).
    residual : (M, N) float32 ndarray
        The pipeline's residual (image minus background).
    detected, bone, body : (M, N) bool ndarray
        The pipeline's lesion mask, bone mask and body mask.
    pix_mm : float
        Source pixel size (mm; geometric mean of the two spacings).
    """
    f = grid_factor(pix_mm)
    sp = f * float(pix_mm)
    fine = reduce(np.asarray(x, np.float32), f)
    h, w = fine.shape
    body_f = reduce(body.astype(np.float32), f)[:h, :w] > 0.5
    bone_f = reduce(bone.astype(np.float32), f)[:h, :w] > 0.5
    u = noise_unit(fine, bone_f, body_f)
    chans = [reduce(np.asarray(residual, np.float32), f)[:h, :w] / u]
    for s_mm in (0.5, 2.0, 8.0):
        chans.append((fine - cv2.GaussianBlur(fine, (0, 0), s_mm / sp)) / u)
    xs = signed_log(np.stack(chans))
    det = reduce(detected.astype(np.float32), f)[:h, :w]
    inside = body_f.astype(np.float32)
    out = np.concatenate([xs, det[None]]) * inside
    return np.concatenate([out, bone_f.astype(np.float32)[None], inside[None]]).astype(np.float32), f


#: Context the network needs around a pixel (fine-grid pixels): about half its receptive field.
CONTEXT_PX = 64


def _run(inputs: np.ndarray, path: str) -> np.ndarray:
    c, h, w = inputs.shape
    m = 2**DEPTH
    xin = np.pad(inputs, ((0, 0), (0, -h % m), (0, -w % m)))[None]
    net = load_net(path)
    net.setInput(np.ascontiguousarray(xin, np.float32))
    logit = net.forward()[0, 0, :h, :w]
    return 1.0 / (1.0 + np.exp(-np.clip(logit, -30, 30)))


def lesion_coverage(inputs: np.ndarray, path: str = MODEL_PATH, near: np.ndarray | None = None) -> np.ndarray:
    """The network's predicted lesion coverage ``(h, w)`` (0..1) of a :func:`mask_inputs` stack.

    With ``near`` (bool, fine grid) the network runs only on windows around it (each connected
    region of ``near`` with :data:`CONTEXT_PX` of context) and the coverage is 0 elsewhere: the
    same values within ``near`` at a fraction of the cost when the lesions are few.
    """
    c, h, w = inputs.shape
    if near is None:
        prob = _run(inputs, path)
    else:
        prob = np.zeros((h, w), np.float32)
        n, comp, stats, _ = cv2.connectedComponentsWithStats(near.astype(np.uint8), 8, cv2.CV_32S)
        for i in range(1, n):
            x0, y0, bw, bh = (int(v) for v in stats[i, :4])
            # Window origins on the network's pooling grid (multiples of 2**DEPTH): same phase as the whole film.
            m = 2**DEPTH
            r0, r1 = max(0, y0 - CONTEXT_PX) // m * m, min(h, y0 + bh + CONTEXT_PX)
            c0, c1 = max(0, x0 - CONTEXT_PX) // m * m, min(w, x0 + bw + CONTEXT_PX)
            own = comp[r0:r1, c0:c1] == i
            prob[r0:r1, c0:c1][own] = _run(inputs[:, r0:r1, c0:c1], path)[own]
    return np.where(inputs[-1] > 0, prob, 0.0).astype(np.float32)


def lesion_coverage_source(x: np.ndarray, residual: np.ndarray, detected: np.ndarray, bone: np.ndarray,
                           body: np.ndarray, pix_mm: float, path: str = MODEL_PATH,
                           near_mm: float | None = None) -> np.ndarray:
    """The network's lesion coverage (0..1) interpolated to the source grid (float32, source shape).

    Parameters are those of :func:`mask_inputs`; with ``near_mm`` the coverage is computed only
    within that distance (mm) of ``detected`` and is 0 farther away (see :func:`lesion_coverage`).
    """
    inputs, f = mask_inputs(x, residual, detected, bone, body, pix_mm)
    near = None
    if near_mm is not None:
        k = 2 * max(1, int(round(near_mm / (f * float(pix_mm))))) + 1
        near = cv2.dilate((inputs[4] > 0).astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0
    cov = lesion_coverage(inputs, path, near)
    rows, cols = np.shape(x)
    return enlarge(cov, f, rows, cols)


def lesion_mask(x: np.ndarray, residual: np.ndarray, detected: np.ndarray, bone: np.ndarray, body: np.ndarray,
                pix_mm: float, threshold: float = 0.5, path: str = MODEL_PATH) -> np.ndarray:
    """The network's lesion mask on the source grid: its coverage interpolated, at ``threshold``.

    Parameters are those of :func:`mask_inputs`; returns a bool array of the source shape.
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold!r}")
    return lesion_coverage_source(x, residual, detected, bone, body, pix_mm, path) >= threshold
