"""Bone mask on the reduced grid (calcimeasure.segment.bone)."""

import cv2
import numpy as np
import pytest

from calcimeasure.phantom import PhantomSpec, render_image
from calcimeasure.segment.background import enlarge, reduce
from calcimeasure.segment.bone import bone_mask_small
from calcimeasure.segment.masks import body_mask_small, field_mask_small


def _small(pixels, pix_mm):
    f = max(1, int(round(0.6 / pix_mm)))
    small = reduce(np.ascontiguousarray(pixels, np.float32), f)
    sp = pix_mm * f
    body = body_mask_small(small, field_mask_small(small, max(1, int(round(3.0 / sp)))))
    return small, body, sp, f


@pytest.mark.parametrize("body_part,seed", [("hand", 3), ("forearm", 5), ("knee", 7)])
def test_realistic_phantom_recall_and_leakage(body_part, seed):
    img = render_image(PhantomSpec.preset("realistic", body_part=body_part), seed=seed)
    pix = float(np.sqrt(img.spacing_mm[0] * img.spacing_mm[1]))
    small, body, sp, f = _small(img.pixels, pix)
    m = bone_mask_small(small, body, sp)
    rows, cols = img.pixels.shape
    M = enlarge(m, f, rows, cols, nearest=True)
    B = enlarge(body, f, rows, cols, nearest=True)
    k = 2 * int(round(0.6 / pix)) + 1
    Md = cv2.dilate(M.view(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))).view(bool)
    truth = img.bone_mask & img.body_mask & img.field_mask & B
    assert Md[truth].mean() >= 0.95
    k1 = 2 * int(round(1.0 / pix)) + 1
    bone_d = cv2.dilate(img.bone_mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k1, k1))).astype(bool)
    assert bone_d[M].mean() >= 0.85
    off = [l.lesion_id for l in img.lesions if not l.touches_bone and l.in_field]
    les = np.isin(img.labels, off) & (img.labels > 0)
    if les.any():
        assert M[les].mean() <= 0.25


def _synthetic(spacing=0.6, with_bone=True):
    rows, cols = 300, 260
    yy, xx = np.mgrid[:rows, :cols].astype(np.float32)
    img = np.full((rows, cols), 100.0, np.float32)
    limb = np.abs(xx - cols / 2) < 90
    img[limb] = 1000.0
    if with_bone:
        # a long bone (20 mm wide) along the limb
        img[np.abs(xx - cols / 2 - 30) < 20 / spacing / 2] += 1200.0
    # a domed nodule (5 mm radius) in the soft tissue
    r = np.hypot(yy - 150, xx - (cols / 2 - 50)) * spacing
    img += 1500.0 * np.sqrt(np.clip(1 - (r / 5.0) ** 2, 0, None))
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    body = np.zeros((rows, cols), bool)
    body[5:-5, 5:-5] = limb[5:-5, 5:-5]
    return img, body, spacing, r


def test_synthetic_nodule_is_not_bone_and_long_bone_is():
    img, body, sp, r = _synthetic()
    m = bone_mask_small(img, body, sp)
    assert m.dtype == bool and m.shape == img.shape
    assert m[r < 4.0].mean() < 0.05
    cols = img.shape[1]
    shaft = np.zeros_like(body)
    shaft[20:-20, int(cols / 2 + 30 - 14):int(cols / 2 + 30 + 14)] = True
    assert m[shaft].mean() > 0.98
    assert not (m & ~body).any()


def test_nodule_alone_not_bone():
    img, body, sp, r = _synthetic(with_bone=False)
    m = bone_mask_small(img, body, sp)
    assert m[r < 5.0].mean() < 0.05


def test_empty_body_and_flat_image():
    img = np.random.default_rng(0).normal(100, 1, (64, 80)).astype(np.float32)
    m = bone_mask_small(img, np.zeros(img.shape, bool), 0.6)
    assert m.shape == img.shape and m.dtype == bool and not m.any()
    m = bone_mask_small(np.full((64, 80), 5.0, np.float32), np.ones((64, 80), bool), 0.6)
    assert m.dtype == bool and not m.any()


def test_fill_holes_equals_scipy():
    """The flood-fill hole filling used by the masks is scipy's binary_fill_holes, exactly."""
    from scipy import ndimage as ndi

    from calcimeasure.segment.masks import fill_holes

    rng = np.random.default_rng(3)
    for trial in range(30):
        shape = (int(rng.integers(1, 120)), int(rng.integers(1, 120)))
        m = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), float(rng.uniform(0.5, 4))) > rng.uniform(0.45, 0.55)
        m[0] = rng.random(shape[1]) > 0.5  # structures touching the border are not holes
        assert (fill_holes(m) == ndi.binary_fill_holes(m)).all(), trial
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7] = True
    ring[4, 4] = False
    assert fill_holes(ring)[4, 4] and not fill_holes(np.zeros((5, 5), bool)).any()


@pytest.mark.parametrize("body", ["hand", "fingers"])
def test_refined_bone_outline_is_closer_to_the_true_bone(body):
    """bone_refine_mm (opt-in): the bone mask's outline redrawn on the detection grid has fewer
    pixels outside the true bone and covers more of it than the reduced grid's mask."""
    from calcimeasure import segment
    from calcimeasure.params import SegmentationParams

    img = render_image(PhantomSpec.preset("realistic", body_part=body), seed=0)
    truth = img.bone_mask
    masks = {}
    for r in (0.0, 0.6):
        bone = segment(img.pixels, spacing_mm=img.spacing_mm, params=SegmentationParams(bone_refine_mm=r)).bone
        masks[r] = ((bone & ~truth).sum() / bone.sum(), (bone & truth).sum() / truth.sum())
    (extra0, recall0), (extra1, recall1) = masks[0.0], masks[0.6]
    assert extra1 < 0.7 * extra0 and recall1 > recall0 + 0.05, masks
