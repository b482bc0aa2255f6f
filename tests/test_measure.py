"""measure(): per-lesion geometry in mm on known shapes, given labels, unknown spacing."""

from __future__ import annotations

import numpy as np
import pytest

from calcimeasure.errors import ParameterError
from calcimeasure.measure import LESION_COLUMNS, lesion_table, measure
from calcimeasure.radiograph import Radiograph, RadiographMeta
from calcimeasure.spacing import unknown_spacing, user_spacing


def radiograph(pixels, spacing=None) -> Radiograph:
    sp = user_spacing(spacing) if spacing is not None else unknown_spacing()
    meta = RadiographMeta(source_path="<memory>", sha256="0" * 64, file_format="array")
    return Radiograph(pixels=pixels.astype(np.float32), spacing=sp, meta=meta)


def test_rectangle_geometry_with_anisotropic_spacing():
    labels = np.zeros((60, 80), np.int32)
    labels[10:30, 20:60] = 7  # 20 rows x 40 cols
    pixels = np.where(labels > 0, 200.0, 100.0).astype(np.float32)
    residual = pixels - 100.0
    table = lesion_table(labels, pixels, residual, None, (0.2, 0.1))
    row = table.iloc[0]
    assert list(table.columns) == LESION_COLUMNS
    assert row["label"] == 7 and row["area_px"] == 800
    assert row["area_mm2"] == pytest.approx(800 * 0.02)  # 4 mm x 4 mm
    assert row["feret_max_mm"] == pytest.approx(np.hypot(4.0, 4.0), rel=1e-6)
    assert row["feret_min_mm"] == pytest.approx(4.0, rel=1e-6)
    assert row["centroid_row_mm"] == pytest.approx(19.5 * 0.2)
    assert row["centroid_col_mm"] == pytest.approx(39.5 * 0.1)
    # Perimeter of the 0.5 iso-contour: a rectangle with cut corners, close to 16 mm.
    assert row["perimeter_mm"] == pytest.approx(16.0, rel=0.03)
    assert row["mean_residual"] == pytest.approx(100.0)
    assert row["relative_contrast"] == pytest.approx(1.0)
    assert row["integrated_residual"] == pytest.approx(100.0 * 16.0)


def test_disk_area_and_diameters():
    rr, cc = np.mgrid[:101, :101]
    disk = ((rr - 50) ** 2 + (cc - 50) ** 2) <= 30**2
    table = lesion_table(disk.astype(np.int32), disk * 1.0, disk * 1.0, None, (0.1, 0.1))
    row = table.iloc[0]
    assert row["area_mm2"] == pytest.approx(np.pi * 3.0**2, rel=0.01)
    assert row["equivalent_diameter_mm"] == pytest.approx(6.0, rel=0.01)
    assert row["feret_min_mm"] == pytest.approx(6.1, abs=0.1)
    assert row["feret_max_mm"] == pytest.approx(6.1, abs=0.15)
    assert row["perimeter_mm"] == pytest.approx(2 * np.pi * 3.0, rel=0.02)


def test_touches_bone_flag():
    labels = np.zeros((40, 40), np.int32)
    labels[5:10, 5:10] = 1
    labels[25:30, 25:30] = 2
    bone = np.zeros((40, 40), bool)
    bone[10:20, :] = True  # adjacent to lesion 1 only
    table = lesion_table(labels, labels * 1.0, labels * 1.0, bone, (0.1, 0.1))
    assert table.set_index("label")["touches_bone"].to_dict() == {1: True, 2: False}


def test_measure_given_labels_and_unknown_spacing():
    rng = np.random.default_rng(0)
    pixels = 100 + rng.normal(0, 1, (120, 120))
    labels = np.zeros((120, 120), np.int32)
    labels[40:50, 40:60] = 3
    pixels[labels > 0] += 50
    m = measure(radiograph(pixels), labels=labels)
    assert m.units == "px" and m.total_area_mm2 is None and m.spacing_mm is None
    assert m.total_area_px == 200 and m.lesion_count == 1
    row = m.lesions.iloc[0]
    assert row["label"] == 3 and row["area_px"] == 200
    assert row[["area_mm2", "feret_max_mm", "centroid_row_mm"]].isna().all()
    assert m.to_dict()["spacing_source"] == "unknown"
    np.testing.assert_array_equal(m.labels, labels)


def test_measure_given_labels_with_spacing():
    pixels = np.full((100, 100), 100.0)
    labels = np.zeros((100, 100), np.int32)
    labels[10:20, 10:20] = 1
    labels[50:55, 60:80] = 2
    pixels[labels > 0] = 180
    m = measure(radiograph(pixels, 0.15), labels=labels)
    assert m.units == "mm" and m.lesion_count == 2
    assert m.total_area_mm2 == pytest.approx(200 * 0.0225)
    assert m.lesions["area_mm2"].sum() == pytest.approx(m.total_area_mm2)


def test_measure_bool_labels_are_labelled():
    pixels = np.full((50, 50), 10.0)
    mask = np.zeros((50, 50), bool)
    mask[5:9, 5:9] = True
    mask[20:30, 20:30] = True
    m = measure(radiograph(pixels, 0.1), labels=mask)
    assert m.lesion_count == 2


@pytest.mark.parametrize(
    "labels,match",
    [(np.zeros((10, 10), np.int32), "shape"), (np.zeros((50, 50), np.float32), "integer"), (-np.ones((50, 50), np.int32), "negative")],
)
def test_measure_rejects_bad_labels(labels, match):
    with pytest.raises(ParameterError, match=match):
        measure(radiograph(np.zeros((50, 50)) + np.arange(50)), labels=labels)


def test_lesion_table_of_an_empty_label_image_has_no_rows():
    """No lesion (e.g. a complete response): an empty table with every column, no error."""
    from calcimeasure.measure import LESION_COLUMNS, lesion_table

    z = np.zeros((40, 50), np.int32)
    t = lesion_table(z, np.ones((40, 50), np.float32), np.zeros((40, 50), np.float32), None, (0.1, 0.1))
    assert len(t) == 0 and list(t.columns) == LESION_COLUMNS


def test_peak_contrast_sigma_over_the_local_ring():
    # Two Gaussian bumps of known height on a residual with a constant offset and a ramp: the
    # column is the smoothed peak over the ring's median, in noise sigmas; empty without a sigma.
    rr, cc = np.mgrid[:120, :200]
    residual = 5.0 + 0.02 * cc
    labels = np.zeros(residual.shape, np.int32)
    for lab, (r, c, h) in enumerate([(60, 50, 40.0), (60, 150, 12.0)], start=1):
        bump = h * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * 6.0**2))
        residual = residual + bump
        labels[bump > 0.1 * h] = lab
    residual = residual.astype(np.float32)
    t = lesion_table(labels, residual, residual, None, (0.1, 0.1), noise_sigma=2.0, smoothing_px=1.5)
    got = t.set_index("label")["peak_contrast_sigma"]
    # Smoothing a Gaussian of sigma 6 px by 1.5 px lowers its peak to 36 / 38.25 = 0.941 of the
    # height; the ring (16-22 px from the centre) lies on the bump's tail at ~0.5 % of it.
    assert got[1] == pytest.approx(40.0 * 0.936 / 2.0, rel=0.02)
    assert got[2] == pytest.approx(12.0 * 0.936 / 2.0, rel=0.02)
    assert got[1] / got[2] == pytest.approx(40.0 / 12.0, rel=0.02)
    assert lesion_table(labels, residual, residual, None, (0.1, 0.1))["peak_contrast_sigma"].isna().all()


def test_measure_reports_peak_contrast_of_phantom_lesions():
    from calcimeasure.phantom import PhantomSpec, render_image

    img = render_image(PhantomSpec.preset("easy", body_part="hand"), seed=3)
    m = measure(radiograph(img.pixels, img.spacing_mm))
    assert m.lesion_count > 0
    col = m.lesions["peak_contrast_sigma"]
    assert col.notna().all()
    # Every lesion reported was found from a core of at least k_high (6) sigmas.
    assert (col >= 6.0 * 0.8).all()
