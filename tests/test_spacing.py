"""Spacing rules of DICOM PS3.3 §10.7.1, one test per case."""

from __future__ import annotations

import pytest
from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from calcimeasure.errors import ParameterError
from calcimeasure.radiograph import SpacingPlane, SpacingSource
from calcimeasure.spacing import (
    parse_spacing_pair,
    resolve_dicom_spacing,
    tiff_spacing,
    user_spacing,
)


def ds_with(**attrs) -> Dataset:
    """A data set as read from a file: raw (unconverted) elements, so that malformed
    values reach the resolver as they would from a real file."""
    ds = Dataset()
    for key, value in attrs.items():
        tag = Tag(keyword_dict[key])
        vr = dictionary_VR(tag)
        values = value if isinstance(value, list) else [value]
        raw = "\\".join(str(v) for v in values).encode()
        ds[tag] = RawDataElement(tag, vr, len(raw), raw, 0, False, True)
    return ds


@pytest.mark.parametrize("calib", ["GEOMETRY", "FIDUCIAL"])
def test_pixel_spacing_with_calibration_type_is_calibrated(calib):
    ds = ds_with(PixelSpacing=[0.14, 0.15], ImagerPixelSpacing=[0.14, 0.15], PixelSpacingCalibrationType=calib)
    sp = resolve_dicom_spacing(ds)
    assert sp.spacing_mm == (0.14, 0.15)
    assert sp.source is SpacingSource.PIXEL_SPACING_CALIBRATED
    assert sp.plane is SpacingPlane.PATIENT
    assert calib in sp.detail


def test_calibration_type_wins_over_magnification_factor():
    ds = ds_with(
        PixelSpacing=[0.1, 0.1],
        ImagerPixelSpacing=[0.12, 0.12],
        EstimatedRadiographicMagnificationFactor=1.2,
        PixelSpacingCalibrationType="GEOMETRY",
    )
    assert resolve_dicom_spacing(ds).source is SpacingSource.PIXEL_SPACING_CALIBRATED


def test_pixel_spacing_different_from_imager_spacing_is_calibrated():
    ds = ds_with(PixelSpacing=[0.09, 0.09], ImagerPixelSpacing=[0.1, 0.1])
    sp = resolve_dicom_spacing(ds)
    assert sp.spacing_mm == (0.09, 0.09)
    assert sp.source is SpacingSource.PIXEL_SPACING_CALIBRATED
    assert "differs from Imager Pixel Spacing" in sp.detail


def test_imager_spacing_divided_by_magnification_factor():
    ds = ds_with(ImagerPixelSpacing=[0.15, 0.16], EstimatedRadiographicMagnificationFactor=1.25)
    sp = resolve_dicom_spacing(ds)
    assert sp.spacing_mm == pytest.approx((0.12, 0.128))
    assert sp.source is SpacingSource.IMAGER_SPACING_MAGNIFICATION_CORRECTED
    assert sp.plane is SpacingPlane.PATIENT
    assert sp.magnification == 1.25


def test_equal_pixel_spacing_adds_nothing_to_magnification_correction():
    ds = ds_with(
        PixelSpacing=[0.15, 0.15], ImagerPixelSpacing=[0.15, 0.15], EstimatedRadiographicMagnificationFactor=1.5
    )
    sp = resolve_dicom_spacing(ds)
    assert sp.spacing_mm == pytest.approx((0.1, 0.1))
    assert sp.source is SpacingSource.IMAGER_SPACING_MAGNIFICATION_CORRECTED


def test_imager_spacing_alone_is_at_the_detector():
    sp = resolve_dicom_spacing(ds_with(ImagerPixelSpacing=[0.143, 0.143]))
    assert sp.spacing_mm == (0.143, 0.143)
    assert sp.source is SpacingSource.IMAGER_SPACING_DETECTOR
    assert sp.plane is SpacingPlane.DETECTOR
    assert "detector" in sp.detail


def test_pixel_spacing_equal_to_imager_spacing_is_at_the_detector():
    sp = resolve_dicom_spacing(ds_with(PixelSpacing=[0.2, 0.2], ImagerPixelSpacing=[0.2, 0.2]))
    assert sp.source is SpacingSource.IMAGER_SPACING_DETECTOR


def test_pixel_spacing_alone_has_unknown_provenance():
    sp = resolve_dicom_spacing(ds_with(PixelSpacing=[0.2, 0.2]))
    assert sp.spacing_mm == (0.2, 0.2)
    assert sp.source is SpacingSource.PIXEL_SPACING_UNKNOWN_PROVENANCE
    assert sp.plane is SpacingPlane.UNKNOWN


def test_pixel_spacing_alone_ignores_magnification_factor():
    # ERMF applies to Imager Pixel Spacing (PS3.3 10.7.1.1); without it there is nothing to divide.
    sp = resolve_dicom_spacing(ds_with(PixelSpacing=[0.087, 0.087], EstimatedRadiographicMagnificationFactor=1.07))
    assert sp.spacing_mm == (0.087, 0.087)
    assert sp.source is SpacingSource.PIXEL_SPACING_UNKNOWN_PROVENANCE


def test_nominal_scanned_pixel_spacing_for_digitised_film():
    sp = resolve_dicom_spacing(ds_with(NominalScannedPixelSpacing=[0.05, 0.05]))
    assert sp.spacing_mm == (0.05, 0.05)
    assert sp.source is SpacingSource.NOMINAL_SCANNED_PIXEL_SPACING
    assert sp.plane is SpacingPlane.FILM


def test_nothing_means_unknown():
    sp = resolve_dicom_spacing(Dataset())
    assert sp.spacing_mm is None
    assert sp.source is SpacingSource.UNKNOWN
    assert sp.pixel_area_mm2 is None and not sp.is_known


@pytest.mark.parametrize(
    "value", [[0, 0], [0.0, 0.2], [-0.1, 0.1], [0.1], ["abc", "0.1"], [float("nan"), 0.1], [float("inf"), 1], []]
)
def test_zero_negative_or_malformed_values_count_as_absent(value):
    sp = resolve_dicom_spacing(ds_with(PixelSpacing=value))
    assert sp.spacing_mm is None
    assert sp.source is SpacingSource.UNKNOWN


def test_malformed_pixel_spacing_falls_through_to_imager_spacing():
    ds = ds_with(PixelSpacing=[0, 0], ImagerPixelSpacing=[0.1, 0.1])
    sp = resolve_dicom_spacing(ds)
    assert sp.spacing_mm == (0.1, 0.1)
    assert sp.source is SpacingSource.IMAGER_SPACING_DETECTOR


@pytest.mark.parametrize("ermf", [0, -1.1, "1.2.3", "", [1.1, 1.2]])
def test_invalid_magnification_factor_is_ignored(ermf):
    ds = ds_with(ImagerPixelSpacing=[0.1, 0.1], EstimatedRadiographicMagnificationFactor=ermf)
    sp = resolve_dicom_spacing(ds)
    assert sp.source is SpacingSource.IMAGER_SPACING_DETECTOR


def test_row_spacing_comes_first_and_non_square_pixels_are_kept():
    sp = resolve_dicom_spacing(ds_with(ImagerPixelSpacing=[0.2, 0.1]))
    assert sp.spacing_mm == (0.2, 0.1)  # (row spacing, column spacing), DICOM order
    assert sp.pixel_area_mm2 == pytest.approx(0.02)


def test_user_spacing_overrides_and_is_recorded():
    assert user_spacing(0.1).spacing_mm == (0.1, 0.1)
    sp = user_spacing((0.2, 0.1))
    assert sp.spacing_mm == (0.2, 0.1) and sp.source is SpacingSource.USER


@pytest.mark.parametrize("bad", [0, -1, (0.1, 0), (0.1, 0.2, 0.3), "a", float("nan")])
def test_user_spacing_rejects_bad_values(bad):
    with pytest.raises(ParameterError, match="spacing_mm"):
        user_spacing(bad)


def test_parse_spacing_pair_accepts_strings_from_ds():
    assert parse_spacing_pair(["0.1", "0.2"]) == (0.1, 0.2)
    assert parse_spacing_pair("0.1") is None


def test_tiff_resolution_inch_and_cm():
    sp, warn = tiff_spacing(300.0, 150.0, 2)
    assert warn is None
    assert sp.spacing_mm == pytest.approx((25.4 / 150, 25.4 / 300))  # rows from YResolution
    assert sp.source is SpacingSource.TIFF_RESOLUTION
    sp, _ = tiff_spacing(100.0, 100.0, 3)
    assert sp.spacing_mm == pytest.approx((0.1, 0.1))


@pytest.mark.parametrize("dpi", [72.0, 96.0])
def test_tiff_software_default_resolution_is_not_trusted(dpi):
    sp, warn = tiff_spacing(dpi, dpi, 2)
    assert sp.spacing_mm is None and "software default" in warn


def test_tiff_without_unit_is_unknown():
    sp, warn = tiff_spacing(300.0, 300.0, 1)
    assert sp.spacing_mm is None and warn
