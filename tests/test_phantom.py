"""Tests of the phantom generator (calcimeasure.phantom): determinism, exact truth, physics, DICOM."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from calcimeasure.phantom import (
    AcquisitionSpec,
    LesionSpec,
    PairSpec,
    PhantomSpec,
    ResponseBands,
    build_patient,
    render_image,
    render_pair,
    render_patient,
    write_dicom,
)
from calcimeasure.phantom.insert import estimate_noise_sigma, insert_lesions
from calcimeasure.phantom.lesions import Lesion, rasterize_lesion

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_images"
REAL_DICOM = ROOT.parent / "shared" / "real_dicom"


def small_spec(difficulty="realistic", body_part="fingers", rows=320, cols=288, **acq) -> PhantomSpec:
    return PhantomSpec.preset(difficulty, body_part=body_part, rows=rows, cols=cols, **acq)


@pytest.fixture(scope="module")
def hand():
    return render_image(small_spec("realistic", "hand", rows=480, cols=400), seed=7)


@pytest.fixture(scope="module")
def pair():
    spec = small_spec("realistic", "elbow", rows=420, cols=360)
    return render_pair(spec, seed=5, pair=PairSpec(rotation_deg=7.0, magnification_change=0.05, growth=1.04))


# ----------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_arrays_and_bytes(tmp_path):
    spec = small_spec()
    a = render_image(spec, seed=3)
    b = render_image(spec, seed=3)
    np.testing.assert_array_equal(a.stored, b.stored)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert [t.to_dict() for t in a.lesions] == [t.to_dict() for t in b.lesions]
    write_dicom(a, tmp_path / "a.dcm")
    write_dicom(b, tmp_path / "b.dcm")
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()
    c = render_image(spec, seed=4)
    assert not np.array_equal(a.stored, c.stored)
    assert a.dataset.SOPInstanceUID != c.dataset.SOPInstanceUID


def test_resolved_acquisition_reproduces_the_film():
    spec = small_spec()
    a = render_image(spec, seed=11)
    assert None not in (a.acquisition.rotation_deg, a.acquisition.shift_mm, a.acquisition.collimation_fraction)
    again = render_patient(build_patient(spec, seed=11), a.acquisition, seed=11)
    np.testing.assert_array_equal(a.stored, again.stored)
    assert AcquisitionSpec.from_dict(a.acquisition.to_dict()) == a.acquisition
    assert PhantomSpec.from_dict(json.loads(spec.to_json())) == spec


# ----------------------------------------------------------------------------- truth
def test_lesion_truth_is_consistent_with_labels(hand):
    m = hand.magnification
    assert hand.lesions, "the hand preset must place lesions"
    kinds = {t.kind for t in hand.lesions}
    assert {"nodule", "dot"} <= kinds
    ids = np.unique(hand.labels)
    assert set(ids[ids > 0]) <= {t.lesion_id for t in hand.lesions}
    for t in hand.lesions:
        assert t.area_detector_mm2 == pytest.approx(t.area_mm2 * m * m, rel=1e-12)
        assert t.area_px_exact == pytest.approx(t.area_detector_mm2 / hand.pitch_mm[0] ** 2, rel=1e-12)
        assert t.area_mm2 == pytest.approx(t.area_px_exact * hand.spacing_mm[0] ** 2, rel=1e-9)
        # sub-pixel coverage area matches the closed-form area
        assert abs(t.area_px - t.area_px_exact) <= max(0.01 * t.area_px_exact, 0.3)
        # the label image differs from the coverage only along the outline
        perimeter_px = 2 * np.sqrt(np.pi * t.area_px_exact) * 1.6
        assert abs(t.label_px - t.area_px) <= 0.5 * perimeter_px + 2
        assert t.label_px == int((hand.labels == t.lesion_id).sum())
        if t.label_px:
            r, c = np.nonzero(hand.labels == t.lesion_id)
            assert abs(r.mean() - t.centroid_px[0]) < 1.0 and abs(c.mean() - t.centroid_px[1]) < 1.0
    # lesions sit inside the limb
    lesion_px = hand.labels > 0
    assert hand.body_mask[lesion_px].mean() > 0.999


def test_supersampled_area_converges_to_closed_form():
    les = Lesion(lesion_id=1, kind="nodule", center_mm=(10.0, 10.0), radius_mm=3.0, aspect=0.7,
                 orientation_deg=30.0, harmonics=((2, 0.1, 0.3), (3, 0.12, 1.0), (5, 0.05, 2.0)),
                 thickness_mm=3.0, profile_exponent=0.5, edge_power=2.0, density_g_cm3=1.0)
    spacing = 0.1
    p2b = np.array([[spacing, 0, 0], [0, spacing, 0], [0, 0, 1.0]])
    ras = rasterize_lesion(les, p2b, (200, 200), excess_mu_per_mm=0.1, supersampling=16)
    assert ras.area_px * spacing**2 == pytest.approx(les.area_mm2, rel=2e-3)
    assert les.thickness(np.array([10.0]), np.array([10.0]))[0] == pytest.approx(3.0)
    # thickness tapers to zero at the outline and vanishes outside
    far = les.thickness(np.array([10.0 + 3 * les.max_radius_mm]), np.array([10.0]))
    assert far[0] == 0.0
    grown = les.scaled(2.0)
    assert grown.area_mm2 == pytest.approx(2 * les.area_mm2)


def test_magnification_and_spacing_truth():
    spec = small_spec(body_part="knee", rows=300, cols=260, oid_mm=100.0, sid_mm=1000.0)
    img = render_image(spec, seed=2)
    assert img.magnification == pytest.approx(1000 / 900)
    assert img.spacing_mm[0] == pytest.approx(img.pitch_mm[0] / img.magnification)
    for t in img.lesions:
        assert t.area_detector_mm2 / t.area_mm2 == pytest.approx(img.magnification**2)


def test_touching_bone_flags_match_masks():
    spec = small_spec("hard", "hand", rows=500, cols=420)
    flagged = 0
    for seed in (1, 2):
        img = render_image(spec, seed=seed)
        for t in img.lesions:
            lab = img.labels == t.lesion_id
            if t.overlaps_bone:
                assert t.distance_to_bone_mm == 0.0 and t.touches_bone
            if t.touches_bone and t.label_px:
                grown = ndimage.binary_dilation(lab, iterations=int(np.ceil(0.5 / img.spacing_mm[0])) + 2)
                assert (grown & img.bone_mask).any()
            if not t.touches_bone and t.label_px:
                assert not (lab & img.bone_mask).any()
            flagged += t.touches_bone
    assert flagged >= 2, "the hard preset must put lesions against bone"


# ----------------------------------------------------------------------------- physics
def test_dense_things_are_high(hand):
    px = hand.pixels
    field = hand.field_mask & ~hand.marker_mask
    soft = hand.body_mask & ~hand.bone_mask & (hand.labels == 0) & field
    bone = hand.bone_mask & field & (hand.labels == 0)
    dense_ids = [t.lesion_id for t in hand.lesions if t.kind == "nodule" and t.label_px > 10]
    assert dense_ids
    nod = np.isin(hand.labels, dense_ids)
    open_field = ~hand.body_mask & field
    assert np.median(px[bone]) > np.median(px[soft]) > np.median(px[open_field])
    assert np.median(px[nod]) > np.median(px[soft])
    # the same ordering holds for the physical line integral
    li = hand.line_integral
    assert np.median(li[bone]) > np.median(li[soft]) > np.median(li[open_field])
    # the lead marker is the densest thing in the collimated field
    assert hand.marker_mask.sum() > 20
    assert np.median(px[hand.marker_mask]) >= np.percentile(px[field], 99.9)
    assert li[hand.marker_mask].min() > li[field].max()


def test_monochrome1_is_the_inverse_of_monochrome2():
    spec2 = small_spec(photometric="MONOCHROME2")
    spec1 = small_spec(photometric="MONOCHROME1")
    a, b = render_image(spec2, seed=9), render_image(spec1, seed=9)
    maxval = 2**spec1.acquisition.bits_stored - 1
    np.testing.assert_array_equal(b.stored.astype(int), maxval - a.stored.astype(int))
    np.testing.assert_array_equal(a.pixels, b.pixels)
    assert b.dataset.PresentationLUTShape == "INVERSE" and a.dataset.PresentationLUTShape == "IDENTITY"
    assert float(b.dataset.WindowCenter) == pytest.approx(maxval - float(a.dataset.WindowCenter))


def test_noise_scales_with_dose():
    base = small_spec("easy", "forearm", rows=360, cols=300, edge_enhancement_gain=0.0, sharpening_gain=0.0,
                      range_compression=0.0, rotation_deg=0.0, shift_mm=(0.0, 0.0),
                      collimation_fraction=(1.0, 1.0), collimation_angle_deg=0.0, electronic_noise_quanta=0.0)
    patient = build_patient(base, seed=1)
    noise = {}
    for q in (2.0e4, 3.2e5):
        acq = dataclasses.replace(base.acquisition, detector_quanta_per_mm2=q)
        a = render_patient(patient, acq, seed=1, stream=1)
        b = render_patient(patient, acq, seed=1, stream=2)
        sel = a.body_mask & ~a.bone_mask & (a.labels == 0)
        d = (a.pixels - b.pixels)[sel]
        noise[q] = d.std() / np.sqrt(2)
        assert a.quanta_per_pixel == pytest.approx(b.quanta_per_pixel, rel=1e-6)
    ratio = noise[2.0e4] / noise[3.2e5]
    assert 3.0 < ratio < 5.0, ratio  # sqrt(16) = 4


def test_collimation_only_scatter_outside_field():
    img = render_image(small_spec(collimation_fraction=(0.8, 0.8), collimation_angle_deg=2.0), seed=1)
    outside = ~img.field_mask
    assert outside.mean() > 0.2
    # outside the field only scatter arrives: the log signal is far higher (denser-looking) than the open field
    inside_open = img.field_mask & ~img.body_mask & ~img.marker_mask
    assert np.median(img.log_noise_free[outside]) > np.median(img.log_noise_free[inside_open]) + 1.0
    assert np.median(img.pixels[outside]) > np.percentile(img.pixels[inside_open], 99)


# ----------------------------------------------------------------------------- pairs
def test_pair_matrix_maps_followup_onto_baseline(pair):
    base = {t.lesion_id: t for t in pair.baseline.lesions}
    m = pair.followup_to_baseline
    assert m.shape == (3, 3) and np.allclose(m[2], [0, 0, 1])
    # similarity: rotation + isotropic scale
    a = m[:2, :2]
    assert np.allclose(a @ a.T, np.eye(2) * abs(np.linalg.det(a)), atol=1e-9)
    checked = 0
    for t in pair.followup.lesions:
        if t.lesion_id not in base:
            continue
        b = base[t.lesion_id]
        mapped = pair.map_followup_to_baseline(np.array([t.center_px]))[0]
        np.testing.assert_allclose(mapped, b.center_px, atol=1e-6)
        ch = next(c for c in pair.changes if c.lesion_id == t.lesion_id)
        if ch.change == "stable" and t.label_px > 30:
            mc = pair.map_followup_to_baseline(np.array([t.centroid_px]))[0]
            assert np.hypot(*(mc - b.centroid_px)) < 0.5 + 0.05 * np.sqrt(b.area_px)
        checked += 1
    assert checked >= 3
    assert all(t.in_field for t in pair.baseline.lesions + pair.followup.lesions)
    # anatomy (bone silhouette, including the 4 % growth) corresponds through the matrix
    fr, fc = np.nonzero(pair.followup.bone_mask[::3, ::3])
    pts = np.stack([fr * 3, fc * 3], axis=1).astype(float)
    mapped = np.rint(pair.map_followup_to_baseline(pts)).astype(int)
    ok = (mapped[:, 0] >= 0) & (mapped[:, 0] < pair.baseline.shape[0]) & (mapped[:, 1] >= 0) & (mapped[:, 1] < pair.baseline.shape[1])
    hit = pair.baseline.bone_mask[mapped[ok, 0], mapped[ok, 1]]
    assert ok.sum() > 100 and hit.mean() > 0.97


@pytest.mark.parametrize("response", ["complete", "partial", "stable", "progression"])
def test_pair_response_matches_truth(response):
    spec = small_spec("realistic", "hand", rows=360, cols=300)
    pr = render_pair(spec, seed=21, pair=PairSpec(response=response))
    assert pr.response == response
    assert pr.baseline_total_mm2 == pytest.approx(sum(c.baseline_area_mm2 for c in pr.changes))
    assert pr.followup_total_mm2 == pytest.approx(sum(c.followup_area_mm2 for c in pr.changes))
    assert pr.baseline_total_mm2 == pytest.approx(pr.baseline.total_area_mm2)
    assert ResponseBands().classify(pr.baseline_total_mm2, pr.followup_total_mm2) == response
    fu_ids = set(np.unique(pr.followup.labels)) - {0}
    for c in pr.changes:
        if c.change == "vanished":
            assert c.followup_id is None and c.followup_area_mm2 == 0 and c.lesion_id not in fu_ids
        elif c.change == "new":
            assert c.baseline_id is None and c.followup_area_mm2 > 0
        else:
            assert c.baseline_id == c.followup_id == c.lesion_id
            pct = c.area_change_pct
            {"shrunk": lambda: pct < -25, "stable": lambda: abs(pct) <= 10, "grown": lambda: pct >= 30}[c.change]() or pytest.fail(
                f"{c.change} lesion with {pct:.1f} %")
    assert 183 <= pr.interval_days <= 427
    d0 = pr.baseline.dataset.StudyDate
    d1 = pr.followup.dataset.StudyDate
    import datetime as dt
    days = (dt.datetime.strptime(d1, "%Y%m%d") - dt.datetime.strptime(d0, "%Y%m%d")).days
    assert days == pr.interval_days
    assert pr.baseline.dataset.PatientID == pr.followup.dataset.PatientID
    assert pr.baseline.dataset.StudyInstanceUID != pr.followup.dataset.StudyInstanceUID
    json.dumps(pr.to_dict())  # serialisable


# ----------------------------------------------------------------------------- DICOM
@pytest.mark.parametrize("ts", ["rle", "jpeg2000", "explicit"])
def test_dicom_round_trip(tmp_path, hand, ts):
    path = write_dicom(hand, tmp_path / f"x_{ts}.dcm", transfer_syntax=ts)
    ds = pydicom.dcmread(path)
    np.testing.assert_array_equal(ds.pixel_array, hand.stored)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1"  # DX For Presentation
    assert ds.PresentationIntentType == "FOR PRESENTATION"
    for tag in ("PatientID", "PatientName", "PatientSex", "PatientAge", "PatientBirthDate", "StudyDate",
                "BodyPartExamined", "ImageLaterality", "ViewPosition", "ImagerPixelSpacing",
                "EstimatedRadiographicMagnificationFactor", "WindowCenter", "WindowWidth", "PresentationLUTShape",
                "RescaleSlope", "RescaleIntercept", "KVP", "DistanceSourceToDetector"):
        assert tag in ds, tag
    assert ds.BurnedInAnnotation == "NO"
    assert str(ds.PatientID).startswith("PHANTOM-")
    assert "PHANTOM" in str(ds.PatientName)
    assert float(ds.EstimatedRadiographicMagnificationFactor) == pytest.approx(hand.magnification, rel=1e-8)
    assert int(ds.BitsStored) == hand.acquisition.bits_stored


def test_dicom_cr_with_calibrated_spacing_and_rescale(tmp_path):
    spec = small_spec(modality="CR", photometric="MONOCHROME1", rescale_slope=0.5, rescale_intercept=-100.0,
                      spacing_header="calibrated", bits_stored=14)
    img = render_image(spec, seed=3)
    ds = pydicom.dcmread(write_dicom(img, tmp_path / "cr.dcm"))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1"
    assert ds.PixelSpacingCalibrationType == "GEOMETRY"
    assert float(ds.PixelSpacing[0]) == pytest.approx(img.spacing_mm[0], rel=1e-6)
    assert ds.PresentationLUTShape == "INVERSE"
    np.testing.assert_allclose(0.5 * (2**14 - 1 - ds.pixel_array.astype(np.float64)) - 100.0, img.pixels)
    with pytest.raises(ValueError, match="rescale_slope=1"):
        small_spec(modality="DX", rescale_slope=0.5)


@pytest.mark.parametrize("header", ["ermf", "calibrated", "imager"])
def test_read_image_round_trip(tmp_path, header):
    calcimeasure = pytest.importorskip("calcimeasure")
    if not hasattr(calcimeasure, "read_image"):
        pytest.skip("calcimeasure.read_image not available")
    photometric = "MONOCHROME1" if header == "calibrated" else "MONOCHROME2"
    img = render_image(small_spec(spacing_header=header, photometric=photometric), seed=4)
    rg = calcimeasure.read_image(write_dicom(img, tmp_path / "r.dcm", transfer_syntax="jpeg2000"))
    np.testing.assert_array_equal(rg.pixels, img.pixels)
    assert rg.spacing.spacing_mm == pytest.approx(img.header_spacing_mm, rel=1e-9)
    if header == "imager":
        assert rg.spacing.spacing_mm[0] == pytest.approx(img.pitch_mm[0])  # detector plane
    else:
        assert rg.spacing.spacing_mm == pytest.approx(img.spacing_mm, rel=1e-6)  # true patient-plane spacing


# ----------------------------------------------------------------------------- presets and validation
def test_presets_differ_as_documented():
    easy, hard = small_spec("easy"), small_spec("hard")
    assert hard.acquisition.detector_quanta_per_mm2 < easy.acquisition.detector_quanta_per_mm2 / 5
    assert hard.acquisition.edge_enhancement_gain > 1.0 == easy.acquisition.edge_enhancement_gain + 1.0
    assert hard.lesions.n_clouds > 0 == easy.lesions.n_clouds
    assert hard.lesions.dot_radius_mm[1] < easy.lesions.dot_radius_mm[0]
    assert hard.lesions.near_bone_fraction > 0.5
    big = PhantomSpec.preset("realistic", body_part="hand", rows=3000, cols=2500)
    assert (big.acquisition.rows, big.acquisition.cols) == (3000, 2500) and 0.05 < big.acquisition.pitch_mm < 0.2
    tiny = PhantomSpec.preset("easy", body_part="fingers", rows=256, cols=256)
    img = render_image(tiny, seed=1)
    assert img.shape == (256, 256) and img.lesions


def test_parameter_validation_names_the_parameter():
    with pytest.raises(ValueError, match="`body_part`"):
        PhantomSpec.preset("easy", body_part="skull")
    with pytest.raises(ValueError, match="`difficulty`"):
        PhantomSpec.preset("impossible")
    with pytest.raises(ValueError, match="`photometric`"):
        AcquisitionSpec(photometric="RGB")
    with pytest.raises(ValueError, match="`nodule_radius_mm`"):
        LesionSpec(nodule_radius_mm=(5.0, 1.0))
    with pytest.raises(ValueError, match="`transfer_syntax`"):
        write_dicom(render_image(small_spec(rows=64, cols=64), seed=0), "/tmp/never.dcm", transfer_syntax="1.2.3")


# ----------------------------------------------------------------------------- insertion into real images
def _real_or_phantom():
    path = REAL_DICOM / "rg2_cr_hip_rle.dcm"
    if path.exists():
        ds = pydicom.dcmread(path)
        return ds.pixel_array.astype(np.float32)[::2, ::2], (0.4, 0.4)
    img = render_image(small_spec("realistic", "knee", rows=600, cols=520, edge_enhancement_gain=0.0), seed=3)
    return img.pixels, img.spacing_mm


def test_insert_lesions_truth_and_locality():
    pixels, spacing = _real_or_phantom()
    out, labels, truth = insert_lesions(pixels, spacing, seed=2, n_lesions=6, cnr_range=(5.0, 6.0))
    out2, labels2, _ = insert_lesions(pixels, spacing, seed=2, n_lesions=6, cnr_range=(5.0, 6.0))
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(labels, labels2)
    assert len(truth) >= 4
    sigma = truth[0].noise_sigma
    assert np.isfinite(sigma) and sigma > 0
    changed = np.abs(out - pixels) > 1e-3 * sigma
    near = ndimage.binary_dilation(labels > 0, iterations=8)
    assert not (changed & ~near).any(), "the signal must stay next to the lesions"
    for t in truth:
        assert abs(t.area_px - t.area_px_exact) <= max(0.01 * t.area_px_exact, 0.3)
        assert t.label_px == int((labels == t.lesion_id).sum())
        assert t.cnr == pytest.approx(t.peak_contrast / sigma, rel=1e-6)
        lab = labels == t.lesion_id
        if t.label_px > 20:
            assert (out - pixels)[lab].mean() > 0.5 * sigma  # dense = higher
    with pytest.raises(ValueError, match="`pixels`"):
        insert_lesions(np.zeros(10), 0.1, seed=0)


# ----------------------------------------------------------------------------- committed samples
def test_sample_images_match_ground_truth():
    truth_path = SAMPLES / "ground_truth.json"
    if not truth_path.exists():
        pytest.skip("sample_images/ not generated")
    truth = json.loads(truth_path.read_text())
    total = sum(p.stat().st_size for p in SAMPLES.iterdir())
    assert total <= 6 * 1024 * 1024
    photometrics, responses = set(), set()
    for name, case in truth["cases"].items():
        responses.add(case["response"])
        assert ResponseBands(**case["bands"]).classify(case["baseline_total_mm2"], case["followup_total_mm2"]) == case["response"]
        for role in ("baseline", "followup"):
            ds = pydicom.dcmread(SAMPLES / case["files"][role])
            t = case[role]
            assert [ds.Rows, ds.Columns] == t["shape"]
            assert ds.SOPInstanceUID == t["sop_instance_uid"]
            assert ds.PhotometricInterpretation == t["photometric"]
            photometrics.add(ds.PhotometricInterpretation)
            assert ds.pixel_array.dtype == np.uint16
    assert "MONOCHROME1" in photometrics and {"complete", "progression"} <= responses
    assert any(c["change"] == "vanished" for case in truth["cases"].values() for c in case["changes"])


def test_sample_images_regenerate_identically():
    truth_path = SAMPLES / "ground_truth.json"
    if not truth_path.exists():
        pytest.skip("sample_images/ not generated")
    from calcimeasure.phantom.samples import SAMPLE_CASES

    case = SAMPLE_CASES[-1]
    pr = render_pair(case.spec, seed=case.seed, pair=case.pair)
    # the ground truth (the lesions drawn) does not depend on any library's rasterisation
    stored_changes = json.loads(truth_path.read_text())["cases"][case.name]["changes"]
    assert stored_changes == json.loads(json.dumps([c.to_dict() for c in pr.changes]))
    for role, img in (("baseline", pr.baseline), ("followup", pr.followup)):
        stored = pydicom.dcmread(SAMPLES / f"{case.name}_{role}.dcm").pixel_array.astype(int)
        diff = np.abs(stored - img.stored.astype(int))
        # Bit-identical in the environment of constraints.txt (make setup installs it); allow last-bit
        # differences of other BLAS/SIMD paths. Other library versions may rasterise differently
        # (OpenCV 5.1's putText draws the side marker's letter differently from 5.0's).
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (
            f"{case.name}_{role}: {int((diff > 1).sum())} pixels differ by up to {int(diff.max())}; "
            "is the environment the one of constraints.txt?")
