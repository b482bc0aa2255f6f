"""The lesion-mask U-Net (opt-in ``unet_mask`` with ``learned_background=2``, ``segment/lesion_unet.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from calcimeasure import SegmentationParams
from calcimeasure.errors import ParameterError
from calcimeasure.segment import lesion_unet


def _film(seed: int = 0, shape=(300, 380)):
    rng = np.random.default_rng(seed)
    x = rng.normal(1000, 8, shape).astype(np.float32)
    body = np.zeros(shape, bool)
    body[30:270, 20:360] = True
    bone = np.zeros_like(body)
    bone[120:170, 20:360] = True
    x[bone] += 200
    return x, body, bone


def test_inputs_are_the_documented_channels_on_the_fine_grid():
    x, body, bone = _film()
    residual = x - 1000
    det = np.zeros_like(body)
    det[60:70, 60:70] = True
    inp, f = lesion_unet.mask_inputs(x, residual, det, bone, body, 0.1)
    assert f == 3 == lesion_unet.grid_factor(0.1)
    assert inp.shape == (len(lesion_unet.CHANNELS), 100, 126) and inp.dtype == np.float32
    assert np.isfinite(inp).all()
    inside = inp[-1] > 0
    assert (inp[:5, ~inside] == 0).all()
    assert inside.sum() == pytest.approx(body.sum() / 9, rel=0.05)
    assert (inp[5] > 0).sum() == pytest.approx(bone.sum() / 9, rel=0.05)
    # The detections are the share of each fine pixel they cover.
    assert inp[4].max() == 1 and inp[4].sum() == pytest.approx(det.sum() / 9, rel=0.05)
    assert lesion_unet.grid_factor(0.3) == 1 and lesion_unet.grid_factor(0.05) == 6


def test_network_output_on_sizes_that_are_not_a_multiple_of_its_grid():
    x, body, bone = _film()
    for h, w in ((300, 380), (101, 143), (40, 250)):
        inp, _ = lesion_unet.mask_inputs(x[:h, :w], x[:h, :w] - 1000, np.zeros((h, w), bool), bone[:h, :w],
                                         body[:h, :w], 0.15)
        cov = lesion_unet.lesion_coverage(inp)
        assert cov.shape == inp.shape[1:] and np.isfinite(cov).all()
        assert cov.min() >= 0 and cov.max() <= 1 and (cov[inp[-1] == 0] == 0).all()


def test_missing_model_is_a_clear_error(tmp_path):
    x, body, bone = _film()
    inp, _ = lesion_unet.mask_inputs(x, x, body & False, bone, body, 0.1)
    with pytest.raises(FileNotFoundError, match="missing"):
        lesion_unet.lesion_coverage(inp, path=str(tmp_path / "none.onnx"))


def test_unet_mask_parameter_is_validated():
    SegmentationParams(learned_background=2, unet_mask=0.5)
    with pytest.raises(ParameterError, match="learned_background=2"):
        SegmentationParams(unet_mask=0.5)
    with pytest.raises(ParameterError, match="unet_mask"):
        SegmentationParams(learned_background=2, unet_mask=1.0)
    with pytest.raises(ParameterError, match="unet_mask_confirm"):
        SegmentationParams(learned_background=2, unet_mask=0.4, unet_mask_confirm=1.5)
    with pytest.raises(ValueError, match="threshold"):
        x, body, bone = _film()
        lesion_unet.lesion_mask(x, x, body & False, bone, body, 0.1, threshold=0.0)


def test_the_network_mask_redraws_the_pipeline_lesions_within_the_roi(monkeypatch):
    """With a stand-in network (coverage 0.9 on discs of the source grid): the region over the
    pipeline's nodule is reported with the network's outline (a larger disc); a region where the
    pipeline found nothing is reported only with ``unet_mask_detect``; a region below
    ``min_area_mm2``, a saturated one (a lead marker) and one outside the ROI never are, and the
    rejections are listed."""
    from calcimeasure.segment import pipeline, segment
    from test_segment import SP, nodule, scene

    img, _ = scene(seed=4)
    img = img + nodule(img.shape, (300, 232), 15, 600)[0]
    rows, cols = img.shape
    rr, cc = np.mgrid[:rows, :cols]
    discs = {"lesion": ((300, 232), 18), "new": ((100, 150), 10), "speck": ((200, 150), 2),
             "marker": ((250, 200), 10), "outside": ((120, 330), 12)}
    masks = {k: np.hypot(rr - y, cc - x) <= r for k, ((y, x), r) in discs.items()}
    img[masks["marker"]] = img.max() + 500.0
    seen = {}

    def fake(x, residual, detected, bone, body, pix_mm, path=lesion_unet.MODEL_PATH, near_mm=None):
        seen["detected"] = detected.copy()
        return np.where(np.logical_or.reduce(list(masks.values())), 0.9, 0.05).astype(np.float32)

    monkeypatch.setattr(pipeline.lesion_unet, "lesion_coverage_source", fake)
    roi = np.zeros(img.shape, bool)
    roi[:, :320] = True
    seg = segment(img, spacing_mm=SP, roi=roi, params=SegmentationParams(learned_background=2, unet_mask=0.4))
    assert seen["detected"][300, 232]  # the network sees the pipeline's detections
    assert seg.labels.dtype == np.int32 and seg.labels.max() == 1
    allowed = seg.body & seg.field_mask
    np.testing.assert_array_equal(seg.labels > 0, masks["lesion"] & allowed)
    reasons = [r["reason"] for r in seg.rejected]
    assert {"min_area", "saturated", "unet_new"} <= set(reasons)
    assert set(seg.background_level) == {1}

    both = segment(img, spacing_mm=SP, roi=roi,
                   params=SegmentationParams(learned_background=2, unet_mask=0.4, unet_mask_detect=0.8))
    assert both.labels.max() == 2
    np.testing.assert_array_equal(both.labels > 0, (masks["lesion"] | masks["new"]) & allowed)
    assert not (both.labels[masks["outside"] | masks["marker"] | masks["speck"]] > 0).any()
    # Above its peak coverage the new region is not reported.
    strict = segment(img, spacing_mm=SP, roi=roi,
                     params=SegmentationParams(learned_background=2, unet_mask=0.4, unet_mask_detect=0.95))
    np.testing.assert_array_equal(strict.labels > 0, seg.labels > 0)


def test_a_network_region_beside_a_pipeline_lesion_is_not_reported(monkeypatch):
    """``unet_mask_confirm``: a region of the network's mask that touches a pipeline lesion but does
    not cover its peak (the network takes the anatomy beside a weak detection for a lesion, as on
    the realistic knee phantoms) is rejected as ``unet_unconfirmed``; a region over the peak of
    another lesion of the same film is kept; with the rule off (0) both are reported."""
    from calcimeasure.segment import pipeline, segment
    from test_segment import SP, nodule, scene

    img, _ = scene(seed=4)
    img = img + nodule(img.shape, (300, 232), 15, 600)[0] + nodule(img.shape, (110, 150), 12, 600)[0]
    rows, cols = img.shape
    rr, cc = np.mgrid[:rows, :cols]
    over = np.hypot(rr - 300, cc - 232) <= 18  # on the first nodule, its peak included
    beside = (np.hypot(rr - 110, cc - 178) <= 22) & (np.hypot(rr - 110, cc - 150) > 6)  # off the second's peak

    def fake(x, residual, detected, bone, body, pix_mm, path=lesion_unet.MODEL_PATH, near_mm=None):
        return np.where(over | beside, 0.9, 0.05).astype(np.float32)

    monkeypatch.setattr(pipeline.lesion_unet, "lesion_coverage_source", fake)
    seg = segment(img, spacing_mm=SP, params=SegmentationParams(learned_background=2, unet_mask=0.4))
    allowed = seg.body & seg.field_mask
    np.testing.assert_array_equal(seg.labels > 0, over & allowed)
    assert "unet_unconfirmed" in [r["reason"] for r in seg.rejected]
    off = segment(img, spacing_mm=SP, params=SegmentationParams(learned_background=2, unet_mask=0.4,
                                                                   unet_mask_confirm=0))
    np.testing.assert_array_equal(off.labels > 0, (over | beside) & allowed)
    assert off.labels.max() == 2


def test_network_mask_is_closer_to_the_true_masks_on_held_out_phantoms():
    """On realistic phantoms the networks never saw (seeds >= 100; the lesion-mask U-Net was trained
    on seeds 0-14, its threshold chosen on 15-17), ``unet_mask=0.4`` draws masks closer to the
    truth than the pipeline's hysteresis outlines (``learned_background=2`` alone) and loses no
    lesion >= 5 mm². The knee film is the measured failure case kept in the sample: a 3.5 mm² false
    detection that the network grows into a 77 mm² faint "cloud" (docs/segmentation.md)."""
    from calcimeasure.phantom import PhantomSpec, render_image
    from calcimeasure.segment import segment

    modes = {"pipeline": SegmentationParams(learned_background=2),
             "network": SegmentationParams(learned_background=2, unet_mask=0.4)}
    dice = {k: [] for k in modes}
    found = dict.fromkeys(modes, 0)
    for body, seed in (("hand", 100), ("forearm", 100), ("knee", 100), ("elbow", 101), ("fingers", 102)):
        img = render_image(PhantomSpec.preset("realistic", body_part=body), seed=seed)
        ins = [les for les in img.lesions if les.in_field]
        truth = np.isin(img.labels, [les.lesion_id for les in ins])
        for name, prm in modes.items():
            lab = segment(img.pixels, spacing_mm=img.spacing_mm, params=prm).labels
            m = lab > 0
            dice[name].append(2 * (m & truth).sum() / (m.sum() + truth.sum()))
            found[name] += sum((lab[img.labels == les.lesion_id] > 0).mean() >= 0.3 for les in ins if les.area_mm2 >= 5)
    # Measured (2026-12-07, shipped models): Dice 0.829 / 0.856 / 0.836 / 0.890 / 0.727 against
    # 0.898 / 0.887 / 0.724 / 0.934 / 0.844 with the network; 20 lesions found by both.
    assert np.mean(dice["network"]) > np.mean(dice["pipeline"]) + 0.02, dice
    assert sum(a > b for a, b in zip(dice["network"], dice["pipeline"])) >= 4, dice
    assert found["network"] >= found["pipeline"], found


def test_windows_around_the_detections_give_the_whole_film_values_there():
    """Redrawing only, the network runs on windows around the pipeline's detections (pooling-grid
    aligned, with context): within the reach the coverage equals the whole-film run's."""
    import cv2

    from calcimeasure.phantom import PhantomSpec, render_image
    from calcimeasure.segment import segment

    img = render_image(PhantomSpec.preset("realistic", body_part="hand"), seed=101)
    seg = segment(img.pixels, spacing_mm=img.spacing_mm, params=SegmentationParams(learned_background=2))
    pix = float(np.sqrt(img.spacing_mm[0] * img.spacing_mm[1]))
    inputs, f = lesion_unet.mask_inputs(img.pixels, seg.residual, seg.labels > 0, seg.bone,
                                        seg.body & seg.field_mask, pix)
    near = cv2.dilate((inputs[4] > 0).astype(np.uint8), np.ones((41, 41), np.uint8)) > 0
    assert 0 < near.mean() < 0.5
    full = lesion_unet.lesion_coverage(inputs)
    win = lesion_unet.lesion_coverage(inputs, near=near)
    np.testing.assert_allclose(win[near], full[near], atol=1e-4)
    assert (win[~near] == 0).all()
