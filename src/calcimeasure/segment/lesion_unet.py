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


def lesion_coverage(inputs: np.ndarray, path: str = MODEL_PATH) -> np.ndarray:
    """The network's predicted lesion coverage ``(h, w)`` (0..1) of a :func:`mask_inputs` stack."""
    c, h, w = inputs.shape
    m = 2**DEPTH
    xin = np.pad(inputs, ((0, 0), (0, -h % m), (0, -w % m)))[None]
    net = load_net(path)
    net.setInput(np.ascontiguousarray(xin, np.float32))
    logit = net.forward()[0, 0, :h, :w]
    prob = 1.0 / (1.0 + np.exp(-np.clip(logit, -30, 30)))
    return np.where(inputs[-1] > 0, prob, 0.0).astype(np.float32)


def lesion_coverage_source(x: np.ndarray, residual: np.ndarray, detected: np.ndarray, bone: np.ndarray,
                           body: np.ndarray, pix_mm: float, path: str = MODEL_PATH) -> np.ndarray:
    """The network's lesion coverage (0..1) interpolated to the source grid (float32, source shape).

    Parameters are those of :func:`mask_inputs`.
    """
    inputs, f = mask_inputs(x, residual, detected, bone, body, pix_mm)
    cov = lesion_coverage(inputs, path)
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
