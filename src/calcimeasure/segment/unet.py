"""Convolutional background estimate on the reduced grid (opt-in: ``learned_background=2``).

A small U-Net, trained on phantoms whose true background is known (the same film rendered without
its lesions and without quantum noise) and on lesions inserted into real chest and dental films
(``scripts/train_background_unet.py``), predicts per
reduced-grid pixel how far the pipeline's background estimate lies above the true background, in
units of the film's reduced-grid noise ``u`` (signed-log scale). Unlike the per-pixel networks of
:mod:`calcimeasure.segment.learned` it sees the neighbourhood (about 80 px, 50 mm, of context), so
it can tell a bump lying on a soft-tissue ramp from the ramp. A second output channel is the
predicted probability that a reduced-grid pixel holds a lesion: with it, the pipeline keeps a
candidate that a shape or bone rule rejects when the network is confident it is a lesion
(``unet_keep_probability``), and rejects one the network gives almost no chance
(``unet_reject_probability``).

Off by default: on held-out phantoms it is the best mode measured, but on real limb films its
precision is below the defaults' (docs/segmentation.md, "U-Net background and lesion probability").
Inference runs in OpenCV's DNN module (a core dependency) from the ONNX file shipped with the
package (``data/background_unet.onnx``); PyTorch is needed only to retrain.
"""

from __future__ import annotations

import functools
import os

import cv2
import numpy as np

from .learned import noise_unit

MODEL_PATH = os.path.join(os.path.dirname(__file__), "data", "background_unet.onnx")

#: Input channels, in order (reduced grid; intensities in units of ``u``, signed-log compressed).
CHANNELS = (
    "residual of the pipeline's background",
    "image minus Gaussian 1 mm",
    "image minus Gaussian 4 mm",
    "image minus Gaussian 15 mm",
    "bone mask",
    "body mask",
)
#: The U-Net halves the grid this many times: inputs are padded to a multiple of ``2**DEPTH``.
DEPTH = 3


def signed_log(x: np.ndarray) -> np.ndarray:
    """``sign(x) * log(1 + |x|)``: compresses the heavy tails of residuals in noise units."""
    return np.sign(x) * np.log1p(np.abs(x))


def unet_inputs(small: np.ndarray, bg: np.ndarray, bone: np.ndarray, body: np.ndarray,
                spacing_small_mm: float, u: float | None = None) -> tuple[np.ndarray, float]:
    """Input stack of :data:`CHANNELS`, shape ``(C, H, W)`` float32, and the noise unit ``u``.

    Parameters
    ----------
    small : (H, W) float32 ndarray
        The reduced-grid image (radiodense high).
    bg : (H, W) float32 ndarray
        The pipeline's background estimate on that grid.
    bone, body : (H, W) bool ndarray
        Bone and body masks on the reduced grid.
    spacing_small_mm : float
        Pixel size of the reduced grid (mm).
    u : float, optional
        The film's reduced-grid noise; computed by :func:`~calcimeasure.segment.learned.noise_unit`
        when not given.
    """
    sp = float(spacing_small_mm)
    small = np.asarray(small, np.float32)
    if u is None:
        u = noise_unit(small, bone, body)
    chans = [(small - bg) / u]
    for s_mm in (1.0, 4.0, 15.0):
        chans.append((small - cv2.GaussianBlur(small, (0, 0), s_mm / sp)) / u)
    x = signed_log(np.stack(chans)).astype(np.float32)
    inside = body.astype(np.float32)
    x *= inside  # outside the body the network sees zeros (air, collimator, labels are not its business)
    return np.concatenate([x, bone.astype(np.float32)[None], inside[None]]), float(u)


@functools.lru_cache(maxsize=2)
def load_net(path: str = MODEL_PATH):
    """The shipped network as an OpenCV DNN (cached)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: the U-Net background model is missing (retrain with "
                                "scripts/train_background_unet.py)")
    return cv2.dnn.readNetFromONNX(path)


def predict(inputs: np.ndarray, path: str = MODEL_PATH) -> np.ndarray:
    """The network's two output maps ``(2, H, W)``: signed-log background excess and lesion logit."""
    c, h, w = inputs.shape
    m = 2**DEPTH
    ph, pw = -h % m, -w % m
    x = np.pad(inputs, ((0, 0), (0, ph), (0, pw)))[None]
    net = load_net(path)
    net.setInput(np.ascontiguousarray(x, np.float32))
    out = net.forward()
    return out[0, :, :h, :w]


def background_and_lesions(small: np.ndarray, bg: np.ndarray, bone: np.ndarray, body: np.ndarray,
                           spacing_small_mm: float, path: str = MODEL_PATH) -> tuple[np.ndarray, np.ndarray]:
    """The background corrected by the network and the predicted lesion probability.

    Returns
    -------
    background : (H, W) float32 ndarray
        ``bg`` lowered (or raised) by the predicted excess inside ``body``; unchanged outside.
    lesion_probability : (H, W) float32 ndarray
        The network's probability that the reduced-grid pixel holds a lesion (0 outside ``body``).
    """
    x, u = unet_inputs(small, bg, bone, body, spacing_small_mm)
    t, logit = predict(x, path)
    excess = np.sign(t) * np.expm1(np.abs(t)) * u
    prob = np.where(body, 1.0 / (1.0 + np.exp(-np.clip(logit, -30, 30))), 0.0)
    return np.where(body, bg - excess, bg).astype(np.float32), prob.astype(np.float32)
