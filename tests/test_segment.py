"""Tests of :func:`calcimeasure.segment` (synthetic scenes and phantoms with exact truth).

Accuracy targets of the issue (realistic phantoms, lesions >= 5 mm²): recall and
precision >= 0.95, median |total area error| <= 3 %, Dice >= 0.90. The first
version does not reach them yet (see docs/segmentation.md for the measured
figures); the phantom assertions below are set just below what it measures on
these seeds, so they guard against regressions.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from calcimeasure.errors import ParameterError
from calcimeasure.params import SegmentationParams
from calcimeasure.segment import Segmentation, segment

SP = (0.15, 0.15)


def nodule(shape, center, radius_px, peak, aspect=1.0):
    """Tapered (ellipsoid-like) nodule profile and its exact area in pixels."""
    r, c = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    s2 = ((r - center[0]) / (radius_px * aspect)) ** 2 + ((c - center[1]) / radius_px) ** 2
    prof = peak * np.sqrt(np.clip(1 - s2, 0, None))
    return prof, np.pi * radius_px**2 * aspect


def scene(seed=0, size=400, noise=10.0):
    """A limb (elliptic chord profile: air at the left and right edges), a gentle
    gradient, and an elongated bone bar."""
    rng = np.random.default_rng(seed)
    c = np.arange(size, dtype=np.float64)
    chord = np.sqrt(np.clip(1 - ((c - 215) / 190) ** 2, 0, None))
    img = np.tile(100.0 + 900.0 * chord + np.linspace(0, 80, size), (size, 1))
    bone = np.zeros((size, size), bool)
    bone[40:360, 250:310] = True
    img[bone] += 400.0
    img = ndi.gaussian_filter(img, 1.0)
    img += rng.normal(0, noise, img.shape)
    return img, bone


def areas_mm2(seg: Segmentation):
    counts = np.bincount(seg.labels.ravel())[1:]
    return counts * SP[0] * SP[1]


def test_single_nodule_area_and_outputs():
    img, _ = scene()
    prof, area_px = nodule(img.shape, (200, 150), 20, 300)
    seg = segment(img + prof, spacing_mm=SP)
    assert seg.labels.dtype == np.int32 and seg.labels.shape == img.shape
    assert seg.lesion_count == 1
    assert seg.mask.sum() == pytest.approx(area_px, rel=0.10)
    assert seg.residual.shape == img.shape and seg.noise_sigma > 0
    # The noise estimate comes from a high-pass: close to the true (smoothed) noise,
    # not inflated by the gradient, the bone or the air/tissue edge.
    assert seg.noise_sigma < 10.0
    assert 1 in seg.background_level
    assert seg.params == SegmentationParams()


def test_lesion_touching_bone_is_reported_and_bone_is_not():
    img, bone = scene(seed=1)
    prof, area_px = nodule(img.shape, (200, 232), 17, 600)  # edge touches the bar at col 249
    seg = segment(img + prof, spacing_mm=SP)
    assert seg.lesion_count == 1
    lab = seg.labels
    assert lab[200, 232] > 0
    assert (lab[bone] > 0).mean() < 0.01  # the bone itself is not a lesion
    # Known limit of this version: the part of the lesion next to the bone is partly
    # read as bone (about -16 % here); target is the same accuracy as away from bone.
    assert 0.75 * area_px <= seg.mask.sum() <= 1.1 * area_px
    assert seg.bone[200, 280]


def test_faint_lesion_detected():
    img, _ = scene(seed=2)
    prof, area_px = nodule(img.shape, (120, 160), 14, 40)  # peak 4 x the pixel noise
    seg = segment(img + prof, spacing_mm=SP)
    assert seg.lesion_count == 1
    assert seg.labels[120, 160] > 0
    assert seg.mask.sum() == pytest.approx(area_px, rel=0.30)


def test_cluster_of_dots_separated():
    img, _ = scene(seed=3)
    centers = [(100 + 22 * k, 150 + (k % 2) * 15) for k in range(5)]
    for c in centers:
        img = img + nodule(img.shape, c, 5, 250)[0]
    seg = segment(img, spacing_mm=SP, params=SegmentationParams(min_area_mm2=0.3))
    ids = {int(seg.labels[c]) for c in centers}
    assert 0 not in ids and len(ids) == 5
    assert seg.lesion_count == 5


def test_saturated_marker_not_reported():
    img, _ = scene(seed=4)
    img = img + nodule(img.shape, (300, 150), 15, 300)[0]
    top = img.max() + 2000
    img[80:150, 120:135] = top  # an "L" of lead: saturated, dense
    img[135:150, 120:175] = top
    seg = segment(img, spacing_mm=SP)
    assert seg.lesion_count == 1
    assert seg.labels[300, 150] > 0
    assert not seg.mask[80:150, 120:175].any()
    assert "saturated" in {r["reason"] for r in seg.rejected}


def test_roi_and_exclude():
    img, _ = scene(seed=5)
    for c in [(100, 150), (300, 150)]:
        img = img + nodule(img.shape, c, 15, 300)[0]
    full = segment(img, spacing_mm=SP)
    assert full.lesion_count == 2
    roi_poly = [(0, 0), (0, 399), (200, 399), (200, 0)]
    only_top = segment(img, spacing_mm=SP, roi=roi_poly)
    assert only_top.lesion_count == 1 and only_top.labels[100, 150] > 0
    mask = np.zeros(img.shape, bool)
    mask[250:350, 100:200] = True
    excl = segment(img, spacing_mm=SP, exclude=mask)
    assert excl.lesion_count == 1 and excl.labels[300, 150] == 0
    both = segment(img, spacing_mm=SP, roi=[roi_poly], exclude=mask)
    assert both.lesion_count == 1


def test_unknown_spacing_uses_nominal():
    img, _ = scene(seed=6)
    prof, area_px = nodule(img.shape, (200, 150), 20, 300)
    seg = segment(img + prof, spacing_mm=None)
    assert seg.spacing_mm is None
    assert seg.lesion_count == 1
    assert seg.mask.sum() == pytest.approx(area_px, rel=0.10)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(image=np.zeros((5, 5, 3))), "image"),
        (dict(image=np.full((64, 64), np.nan)), "image"),
        (dict(spacing_mm=(0.1, -1)), "spacing_mm"),
        (dict(spacing_mm="abc"), "spacing_mm"),
        (dict(roi=np.zeros((3, 3), bool)), "roi"),
        (dict(exclude=[(0, 0), (1, 1)]), "exclude"),
        (dict(params={"k_low": 2}), "params"),
    ],
)
def test_bad_inputs_raise_parameter_error(kwargs, name):
    image = kwargs.pop("image", np.zeros((64, 64), np.float32))
    with pytest.raises(ParameterError, match=name):
        segment(image, **kwargs)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(k_low=-1), "k_low"),
        (dict(k_low=7, k_high=6), "k_low"),
        (dict(min_area_mm2=float("nan")), "min_area_mm2"),
        (dict(working_spacing_mm=0), "working_spacing_mm"),
        (dict(edge_fraction=2), "edge_fraction"),
        (dict(k_high="6"), "k_high"),
    ],
)
def test_bad_params(kwargs, name):
    with pytest.raises(ParameterError, match=name):
        SegmentationParams(**kwargs)


def test_params_roundtrip_and_digest():
    p = SegmentationParams(k_low=2.2)
    assert SegmentationParams.from_dict(p.to_dict()) == p
    assert p.digest() != SegmentationParams().digest() and len(p.digest()) == 12
    with pytest.raises(ParameterError, match="bogus"):
        SegmentationParams.from_dict({"bogus": 1})


def _phantom_scores(preset, body, seed):
    from calcimeasure.phantom import PhantomSpec, render_image

    img = render_image(PhantomSpec.preset(preset, body_part=body), seed=seed)
    seg = segment(img.pixels, spacing_mm=img.spacing_mm)
    lab, truth = seg.labels, img.labels
    big = [l for l in img.lesions if l.in_field and l.area_mm2 >= 5]
    hits = sum((lab[truth == l.lesion_id] > 0).mean() >= 0.3 for l in big)
    counts = np.bincount(lab.ravel())
    on = np.bincount(lab.ravel(), weights=(truth > 0).ravel().astype(float), minlength=len(counts))
    pa = img.spacing_mm[0] * img.spacing_mm[1]
    det = [i for i in range(1, len(counts)) if counts[i] * pa >= 5]
    tp = sum(on[i] / counts[i] >= 0.3 for i in det)
    marker_hit = bool((lab[img.marker_mask] > 0).any())
    return hits, len(big), tp, len(det), marker_hit


@pytest.mark.parametrize("body, seed", [("fingers", 0), ("elbow", 1), ("knee", 3)])
def test_realistic_phantom_regression(body, seed):
    hits, nbig, tp, ndet, marker_hit = _phantom_scores("realistic", body, seed)
    # Target: recall and precision >= 0.95; measured by this version on these seeds below.
    assert hits >= MIN_HITS[(body, seed)], (hits, nbig)
    assert tp >= ndet - 1, (tp, ndet)
    assert not marker_hit  # the lead marker is never a lesion


MIN_HITS = {("fingers", 0): 2, ("elbow", 1): 5, ("knee", 3): 4}
