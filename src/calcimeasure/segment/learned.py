"""Learned correction of the reduced-grid background (opt-in: ``learned_background=1``).

Four small multilayer perceptrons (averaged), trained on phantoms whose true background is known
(the same film rendered without its lesions and without quantum noise,
``scripts/train_background_model.py``), predict per reduced-grid pixel how far the pipeline's
background estimate lies above the true background, in units of the film's reduced-grid noise.
The background is then lowered (or raised) by that amount; it is never lowered below the oriented
line median (``_axis_floor``).

Inference is plain numpy (two hidden layers of 64 ReLU units on 23 features, per network); the
weights ship with the package (``data/background_mlp.npz``). scikit-learn is needed only to
retrain (``pip install -e .[train]``).

Measured (docs/segmentation.md, "Learned background correction"): on held-out realistic phantoms
it lowers the total-area error and raises recall and Dice; on the real films of the benchmark it
adds false positives (the model has only seen phantom anatomy), which is why it is off by default.
"""

from __future__ import annotations

import functools
import os

import cv2
import numpy as np

from .background import background_small, robust_sigma
from .masks import elongated_opening

#: The features, in the model's input order (all on the reduced grid; intensities in units of the
#: film's reduced-grid noise ``u``, or of the bone-over-soft-tissue contrast where stated).
FEATURES = (
    "residual of the pipeline's background",
    "residual of the oriented line median, 22 mm",
    "image minus Gaussian 1 mm", "image minus Gaussian 2 mm", "image minus Gaussian 4 mm",
    "image minus Gaussian 8 mm",
    "Hessian eigenvalue 1 at 1 mm", "Hessian eigenvalue 2 at 1 mm",
    "Hessian eigenvalue 1 at 2 mm", "Hessian eigenvalue 2 at 2 mm",
    "Hessian eigenvalue 1 at 4 mm", "Hessian eigenvalue 2 at 4 mm",
    "signed distance to the bone mask (mm, ±10)", "distance to the body outline (mm, ≤ 20)",
    "local spread of the residual (7 px)", "local maximum of the residual (5 px)",
    "local minimum of the residual (5 px)",
    "residual of the oriented line median, 11 mm", "residual of the oriented line median, 44 mm",
    "residual of the 16 mm line opening", "residual of the 8 mm disk opening",
    "image level over the soft tissue / bone contrast", "bone contrast / u",
)

#: Oriented-line-median lengths (mm) the features use, in order.
AXIS_LENGTHS_MM = (22.0, 11.0, 44.0)

MODEL_PATH = os.path.join(os.path.dirname(__file__), "data", "background_mlp.npz")


def noise_unit(small: np.ndarray, bone: np.ndarray, body: np.ndarray) -> float:
    """The film's reduced-grid noise: robust sigma of the image minus its 1-pixel Gaussian, over the
    soft tissue (body minus bone; the whole body when the soft tissue is too small)."""
    hp = small - cv2.GaussianBlur(small, (0, 0), 1.0)
    soft = body & ~bone
    u = robust_sigma(hp[soft]) if soft.sum() > 64 else robust_sigma(hp[body]) if body.any() else 0.0
    return float(u) or 1.0


def _hessian_eigenvalues(small: np.ndarray, sigma_px: float) -> tuple[np.ndarray, np.ndarray]:
    g = cv2.GaussianBlur(small, (0, 0), sigma_px)
    rr = cv2.Sobel(g, cv2.CV_32F, 0, 2, ksize=3) / 4
    cc = cv2.Sobel(g, cv2.CV_32F, 2, 0, ksize=3) / 4
    rc = cv2.Sobel(g, cv2.CV_32F, 1, 1, ksize=3) / 4
    tr, det = rr + cc, rr * cc - rc * rc
    disc = np.sqrt(np.maximum(tr * tr / 4 - det, 0))
    return tr / 2 + disc, tr / 2 - disc


def background_features(small: np.ndarray, bg: np.ndarray, axis_floors: list[np.ndarray], bone: np.ndarray,
                        body: np.ndarray, spacing_small_mm: float) -> tuple[np.ndarray, float]:
    """Feature stack of :data:`FEATURES`, shape ``(H, W, 23)`` float32, and the noise unit ``u``.

    Parameters
    ----------
    small : (H, W) float32 ndarray
        The reduced-grid image (radiodense high).
    bg : (H, W) float32 ndarray
        The pipeline's background estimate on that grid.
    axis_floors : list of three (H, W) ndarrays
        The background lowered to the oriented line median of :data:`AXIS_LENGTHS_MM`, in order.
    bone, body : (H, W) bool ndarray
        Bone and body masks on the reduced grid.
    spacing_small_mm : float
        Pixel size of the reduced grid (mm).
    """
    sp = float(spacing_small_mm)
    u = noise_unit(small, bone, body)
    r = (small - bg) / u
    feats = [r, (small - axis_floors[0]) / u]
    for s_mm in (1.0, 2.0, 4.0, 8.0):
        feats.append((small - cv2.GaussianBlur(small, (0, 0), s_mm / sp)) / u)
    for s_mm in (1.0, 2.0, 4.0):
        s = s_mm / sp
        l1, l2 = _hessian_eigenvalues(small, s)
        feats += [l1 * s * s / u, l2 * s * s / u]
    outside = cv2.distanceTransform((~bone).view(np.uint8), cv2.DIST_L2, 5) * sp
    inside = cv2.distanceTransform(bone.view(np.uint8), cv2.DIST_L2, 5) * sp
    feats.append(np.clip(outside - inside, -10, 10))
    feats.append(np.clip(cv2.distanceTransform(body.view(np.uint8), cv2.DIST_L2, 5) * sp, 0, 20))
    m = cv2.blur(r, (7, 7))
    feats.append(np.sqrt(np.maximum(cv2.blur(r * r, (7, 7)) - m * m, 0)))
    feats.append(cv2.dilate(r, np.ones((5, 5), np.uint8)))
    feats.append(cv2.erode(r, np.ones((5, 5), np.uint8)))
    feats += [(small - axis_floors[1]) / u, (small - axis_floors[2]) / u]
    feats.append((small - elongated_opening(small, int(round(16 / sp)))) / u)
    feats.append((small - background_small(small, int(round(8 / sp)))) / u)
    soft = body & ~bone
    level = float(np.median(small[soft])) if soft.sum() > 64 else float(np.median(small[body])) if body.any() else 0.0
    contrast = float(np.median(small[bone])) - level if bone.sum() > 64 else 1.0
    contrast = contrast if contrast > 0 else 1.0
    feats.append((small - level) / contrast)
    feats.append(np.full(small.shape, contrast / u, np.float32))
    return np.stack(feats, -1).astype(np.float32), u


@functools.lru_cache(maxsize=2)
def load_model(path: str = MODEL_PATH) -> dict:
    """The shipped weights: input scaling ``mu``/``sd`` and, per network ``j`` of the ensemble, the
    layers ``n{j}W0, n{j}b0, n{j}W1, ...`` (a single network may use ``W0, b0, ...``)."""
    with np.load(path) as z:
        model = {k: z[k] for k in z.files}
    if model["mu"].shape != (len(FEATURES),):
        raise ValueError(f"{path}: the model expects {model['mu'].shape[0]} features, this code computes {len(FEATURES)}")
    return model


def _signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def predict_excess(features: np.ndarray, model: dict) -> np.ndarray:
    """The predicted ``(background estimate − true background) / u`` per pixel (shape of the grid).

    Each network sees signed-log, standardised features and predicts the signed log of the target;
    the networks' predictions are averaged.
    """
    shape = features.shape[:-1]
    x = (_signed_log(features.reshape(-1, features.shape[-1])) - model["mu"]) / model["sd"]
    prefixes = sorted({k[: k.index("W")] for k in model if "W" in k})
    total = np.zeros(x.shape[0], np.float32)
    for pre in prefixes:
        h = x
        n_layers = sum(1 for k in model if k.startswith(pre + "W"))
        for i in range(n_layers):
            h = h @ model[f"{pre}W{i}"] + model[f"{pre}b{i}"]
            if i < n_layers - 1:
                np.maximum(h, 0, out=h)
        total += np.sign(h[:, 0]) * np.expm1(np.abs(h[:, 0]))
    return (total / len(prefixes)).reshape(shape).astype(np.float32)


def corrected_background(small: np.ndarray, bg: np.ndarray, axis_floors: list[np.ndarray], bone: np.ndarray,
                         body: np.ndarray, spacing_small_mm: float, model: dict | None = None) -> np.ndarray:
    """The background ``bg`` corrected by the model inside ``body``; where it is lowered, never
    below the 22 mm oriented line median (``axis_floors[0]``)."""
    model = load_model() if model is None else model
    feats, u = background_features(small, bg, axis_floors, bone, body, spacing_small_mm)
    p = predict_excess(feats, model)
    new = bg - p * u
    new = np.where(p > 0, np.maximum(new, axis_floors[0]), new)
    return np.where(body, new, bg).astype(np.float32)
