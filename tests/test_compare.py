"""compare(): response categories, per-lesion matching (split/merge/vanished/new), magnification flags."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calcimeasure.compare import ComparisonParams, classify_response, compare, lesion_status, match_lesions
from calcimeasure.errors import ParameterError
from calcimeasure.register import Registration
from conftest import ROOT


@pytest.mark.parametrize(
    "b,f,n,expected",
    [
        (100, 0, 0, "complete"),
        (100, 75, 2, "partial"),  # exactly -25 % is partial
        (100, 76, 2, "stable"),
        (100, 124, 2, "stable"),
        (100, 125, 2, "progression"),
        (0, 10, 1, "not_evaluable"),
    ],
)
def test_classify_response_bands(b, f, n, expected):
    assert classify_response(b, f, n) == expected


def test_bands_are_parameters():
    p = ComparisonParams(partial_pct=-50, progression_pct=50)
    assert classify_response(100, 70, 1, p) == "stable"
    with pytest.raises(ParameterError):
        ComparisonParams(partial_pct=10)
    with pytest.raises(ParameterError, match="landmark_refine_margin"):
        ComparisonParams(landmark_refine_margin=-0.1)


def test_lesion_status():
    assert [lesion_status(10, 0), lesion_status(0, 5), lesion_status(10, 5), lesion_status(10, 11), lesion_status(10, 20)] == [
        "vanished", "new", "shrunk", "stable", "grown"]


def shifted_registration(dr: float, dc: float) -> Registration:
    m = np.eye(3)
    m[:2, 2] = (dr, dc)  # follow-up (r, c) -> baseline (r + dr, c + dc)
    return Registration(m, True, 1.0, 100)


def test_match_lesions_match_split_merge_vanished_new():
    b = np.zeros((200, 200), np.int32)
    f = np.zeros((200, 200), np.int32)
    shift = (10, -5)  # follow-up content sits at baseline - shift
    def put(img, lab, r, c, rr=6, off=(0, 0)):
        img[r - rr - off[0]: r + rr - off[0], c - rr - off[1]: c + rr - off[1]] = lab
    put(b, 1, 30, 30); put(f, 7, 30, 30, off=shift)                                  # one-to-one
    put(b, 2, 100, 40, rr=10); put(f, 8, 94, 40, rr=4, off=shift); put(f, 9, 106, 40, rr=4, off=shift)  # split
    put(b, 3, 160, 150, rr=4); put(b, 4, 160, 162, rr=4); put(f, 10, 160, 156, rr=9, off=shift)  # merge
    put(b, 5, 40, 160)                                                                  # vanished
    put(f, 11, 120, 120, off=shift)                                                     # new
    groups = match_lesions(b, f, shifted_registration(*shift), baseline_spacing_mm=(0.1, 0.1), match_distance_mm=0.5)
    as_sets = sorted((tuple(bl), tuple(sorted(fl))) for bl, fl in groups)
    assert as_sets == sorted([((1,), (7,)), ((2,), (8, 9)), ((3, 4), (10,)), ((5,), ()), ((), (11,))])


def test_sample_images_responses_match_ground_truth():
    truth = json.loads((ROOT / "sample_images" / "ground_truth.json").read_text())["cases"]
    assert len(truth) == 4
    for name, case in truth.items():
        cmp = compare(ROOT / "sample_images" / f"{name}_baseline.dcm", ROOT / "sample_images" / f"{name}_followup.dcm")
        assert cmp.registration.ok
        assert cmp.response == case["response"], (name, cmp.area_change_pct, case["total_change_pct"])
        row = cmp.to_dict()
        assert row["param_partial_pct"] == -25.0 and row["response"] == case["response"]


def test_growth_or_calibration_mismatch_is_flagged():
    # case04: the child's hand grew 3 % between films, same detector-plane calibration.
    cmp = compare(ROOT / "sample_images" / "case04_baseline.dcm", ROOT / "sample_images" / "case04_followup.dcm")
    assert any("implied magnification" in f for f in cmp.flags)
    assert cmp.area_change_pct_anatomical is not None


def test_paired_reading_adds_lesions_seen_on_the_other_film(tmp_path):
    """A lesion found on one film only is looked for on the other at its registered place with
    relaxed thresholds: what is added lies on the true lesion there; totals count it apart."""
    from calcimeasure.compare import ComparisonParams
    from calcimeasure.phantom import PhantomSpec, render_pair, write_dicom

    pair = render_pair(PhantomSpec.preset("realistic", body_part="elbow"), seed=0)
    write_dicom(pair.baseline, tmp_path / "b.dcm")
    write_dicom(pair.followup, tmp_path / "f.dcm")
    c = compare(tmp_path / "b.dcm", tmp_path / "f.dcm")
    off = compare(tmp_path / "b.dcm", tmp_path / "f.dcm", params=ComparisonParams(guided_k_high=0))
    assert off.guided_labels == {"baseline": [], "followup": []}
    assert c.guided_labels["baseline"] and c.guided_labels["followup"]
    for side, img in (("baseline", pair.baseline), ("followup", pair.followup)):
        m = c.baseline if side == "baseline" else c.followup
        for lid in c.guided_labels[side]:
            added = m.labels == lid
            assert (img.labels[added] > 0).mean() >= 0.9  # on a true lesion of that film
        own = off.baseline if side == "baseline" else off.followup
        assert m.total_area_px == own.total_area_px + c.guided_area_px(side)
    assert any("paired reading" in f for f in c.flags)
    row = c.to_dict()
    assert row["baseline_guided_px"] > 0 and row["followup_guided_px"] > 0


def test_paired_reading_does_not_bring_back_vanished_lesions(tmp_path):
    from calcimeasure.phantom import PhantomSpec, render_pair, write_dicom

    pair = render_pair(PhantomSpec.preset("realistic", body_part="hand"), seed=1)
    assert sum(ch.change == "vanished" for ch in pair.changes) == 2
    write_dicom(pair.baseline, tmp_path / "b.dcm")
    write_dicom(pair.followup, tmp_path / "f.dcm")
    c = compare(tmp_path / "b.dcm", tmp_path / "f.dcm")
    assert c.guided_labels["followup"] == []
    vanished = {ch.baseline_id for ch in pair.changes if ch.change == "vanished"}
    # The vanished lesions that were measured on the baseline stay unmatched ("vanished").
    lc = c.lesion_changes
    for lid in vanished:
        m = pair.baseline.labels == lid
        found = set(np.unique(c.baseline.labels[m])) - {0}
        for b in found:
            rows = lc[lc["baseline_ids"].astype(str).str.split(",").apply(lambda ids: str(b) in ids)]
            assert (rows["status"] == "vanished").all()


def test_low_contrast_lesions_flag_an_uncertain_change(tmp_path):
    """Most of the area in lesions near the detection limit: the fraction is reported and flagged;
    a pair of clearly visible nodules (sample case04) is not flagged."""
    from calcimeasure.compare import ComparisonParams, low_contrast_fraction
    from calcimeasure.phantom import PhantomSpec, render_pair, write_dicom

    pair = render_pair(PhantomSpec.preset("realistic", body_part="fingers"), seed=6)
    write_dicom(pair.baseline, tmp_path / "b.dcm")
    write_dicom(pair.followup, tmp_path / "f.dcm")
    c = compare(tmp_path / "b.dcm", tmp_path / "f.dcm")
    areas = np.concatenate([c.baseline.lesions["area_px"], c.followup.lesions["area_px"]]).astype(float)
    peaks = np.concatenate([c.baseline.lesions["peak_contrast_sigma"], c.followup.lesions["peak_contrast_sigma"]])
    expected = areas[peaks.astype(float) < 12.0].sum() / areas.sum()
    assert c.low_contrast_fraction == pytest.approx(expected)
    assert c.low_contrast_fraction > 0.3
    assert any("low-contrast lesions" in f for f in c.flags)
    assert c.to_dict()["low_contrast_fraction"] == pytest.approx(expected)
    assert low_contrast_fraction(c.baseline, c.followup, 0.0) == 0.0
    quiet = compare(tmp_path / "b.dcm", tmp_path / "f.dcm", params=ComparisonParams(max_low_contrast_fraction=1.0))
    assert not any("low-contrast lesions" in f for f in quiet.flags)
    # Sample case04 (two nodules of 15-40 sigmas, stable) is not flagged.
    dense = compare(ROOT / "sample_images" / "case04_baseline.dcm", ROOT / "sample_images" / "case04_followup.dcm")
    assert dense.low_contrast_fraction == 0.0
    assert not any("low-contrast lesions" in f for f in dense.flags)
    with pytest.raises(ParameterError):
        ComparisonParams(max_low_contrast_fraction=1.5)


def test_paired_reading_with_the_lesion_mask_network(tmp_path):
    """With the lesion-mask U-Net (``unet_mask``) the paired reading may add a region the network
    finds without a pipeline detection; what it adds lies on true lesions of that film, and the
    vanished lesions of a pair whose follow-up lost two stay vanished (nothing is added there)."""
    from calcimeasure import SegmentationParams
    from calcimeasure.phantom import PhantomSpec, render_pair, write_dicom

    seg = SegmentationParams(learned_background=2, unet_mask=0.4)
    added = 0
    for body, seed in (("hand", 1), ("knee", 2)):
        pair = render_pair(PhantomSpec.preset("realistic", body_part=body), seed=seed)
        write_dicom(pair.baseline, tmp_path / f"{body}_b.dcm")
        write_dicom(pair.followup, tmp_path / f"{body}_f.dcm")
        c = compare(tmp_path / f"{body}_b.dcm", tmp_path / f"{body}_f.dcm", segmentation_params=seg)
        assert c.registration.ok
        for side, img in (("baseline", pair.baseline), ("followup", pair.followup)):
            m = c.baseline if side == "baseline" else c.followup
            for lid in c.guided_labels[side]:
                region = m.labels == lid
                # A true detection (>= 30 % of it on a lesion, the precision rule of the accuracy
                # suite) that takes in the lesion it lies on. Measured: the knee follow-up's faint
                # 18 mm² cloud, 98 % of it covered, read 2.7 times too large (docs/segmentation.md).
                assert (img.labels[region] > 0).mean() >= 0.3, (body, side, lid)
                ids, counts = np.unique(img.labels[region], return_counts=True)
                main = ids[ids > 0][np.argmax(counts[ids > 0])]
                assert (region[img.labels == main]).mean() >= 0.9, (body, side, lid)
                added += 1
        vanished = {ch.baseline_id for ch in pair.changes if ch.change == "vanished"}
        for lid in vanished:
            mapped_back = pair.baseline.labels == lid
            for b in set(np.unique(c.baseline.labels[mapped_back])) - {0}:
                lc = c.lesion_changes
                rows = lc[lc["baseline_ids"].astype(str).str.split(",").apply(lambda ids, b=b: str(b) in ids)]
                assert (rows["status"] == "vanished").all(), (body, lid)
    assert added >= 1  # measured: one lesion added on the knee follow-up
