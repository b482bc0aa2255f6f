"""Pixel spacing: the single place where calcimeasure decides how big a pixel is.

Every millimetre the toolkit reports can be traced back to
:func:`resolve_dicom_spacing` (DICOM files), :func:`tiff_spacing` (TIFF
resolution tags) or a user-given spacing (:func:`user_spacing`); the
:class:`~calcimeasure.radiograph.Spacing` they return travels with the results
as ``spacing_source``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .errors import ParameterError
from .radiograph import Spacing, SpacingPlane, SpacingSource

__all__ = [
    "resolve_dicom_spacing",
    "user_spacing",
    "tiff_spacing",
    "unknown_spacing",
    "parse_spacing_pair",
]

#: Relative tolerance under which Pixel Spacing and Imager Pixel Spacing are "equal".
_EQUAL_RTOL = 1e-4

#: Resolutions (dots per inch) that image software writes by default when it
#: knows nothing of the physical size. A TIFF carrying one of them is treated as
#: having no spacing (a warning says so); pass ``spacing_mm=`` to use it anyway.
SOFTWARE_DEFAULT_DPI = (1.0, 72.0, 96.0)


def parse_spacing_pair(value: Any) -> tuple[float, float] | None:
    """Parse a DICOM spacing value into a validated (row, column) pair in mm.

    Parameters
    ----------
    value : sequence of two numbers, or None
        The raw attribute value (a pydicom ``MultiValue`` of DS, a list, ...).

    Returns
    -------
    tuple of float or None
        ``(row, column)`` in mm, or ``None`` when the value is absent,
        zero, negative, non-finite or malformed (not exactly two numbers). Such
        values count as absent (issue: "never invent a spacing").
    """
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        # A single DS value (VM 1) is malformed for a VM 2 attribute.
        return None
    if len(value) != 2:
        return None
    try:
        row, col = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(row) and math.isfinite(col)) or row <= 0 or col <= 0:
        return None
    return (row, col)


def _parse_positive_float(value: Any) -> float | None:
    if value is None or isinstance(value, (list, tuple)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    return number


def _safe_get(ds: Any, keyword: str) -> Any:
    """An attribute's value, or None when it is absent or cannot be converted."""
    try:
        return ds.get(keyword)
    except Exception:  # noqa: BLE001 - malformed values count as absent
        return None


def _equal_pairs(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return all(math.isclose(x, y, rel_tol=_EQUAL_RTOL, abs_tol=1e-9) for x, y in zip(a, b))


def _fmt(pair: tuple[float, float]) -> str:
    return f"{pair[0]:.6g}\\{pair[1]:.6g} mm"


def user_spacing(spacing_mm: float | Sequence[float]) -> Spacing:
    """A spacing given by the user: one number (square pixels) or (row, col) in mm.

    Raises
    ------
    ParameterError
        If the value is not one or two positive finite numbers.
    """
    if isinstance(spacing_mm, (int, float)):
        pair: tuple[float, float] | None = parse_spacing_pair([spacing_mm, spacing_mm])
    else:
        try:
            pair = parse_spacing_pair(list(spacing_mm))
        except TypeError:
            pair = None
    if pair is None:
        raise ParameterError(
            f"`spacing_mm` must be a positive number or a (row, column) pair of positive "
            f"numbers in mm, got {spacing_mm!r}"
        )
    return Spacing(pair, SpacingSource.USER, SpacingPlane.UNKNOWN, f"given by the user: {_fmt(pair)}")


def unknown_spacing(detail: str = "no spacing information in the file") -> Spacing:
    """The spacing of an image whose pixel size nobody knows: measurements stay in pixels."""
    return Spacing(None, SpacingSource.UNKNOWN, SpacingPlane.NONE, detail)


def resolve_dicom_spacing(ds: Any) -> Spacing:
    """Resolve the physical pixel spacing of a projection radiograph.

    Follows DICOM PS3.3 §10.7.1 (Basic Pixel Spacing Calibration Macro) and
    §10.7.1.1 (Usage of Pixel Spacing and Related Attributes), first rule that
    applies wins:

    1. (0028,0030) *Pixel Spacing* with (0028,0A02) *Pixel Spacing Calibration
       Type* ``GEOMETRY`` or ``FIDUCIAL``, or Pixel Spacing present together with
       (0018,1164) *Imager Pixel Spacing* and different from it: the spacing has
       been calibrated in the patient plane → ``pixel_spacing_calibrated``.
    2. Imager Pixel Spacing divided by (0018,1114) *Estimated Radiographic
       Magnification Factor*, when present → ``imager_spacing_magnification_corrected``
       (an estimate in the patient plane; Pixel Spacing equal to Imager Pixel
       Spacing adds no information).
    3. Imager Pixel Spacing alone → ``imager_spacing_detector``: sizes are at the
       detector plane, magnified by the projection geometry.
    4. Pixel Spacing with nothing saying how it was obtained (no Imager Pixel
       Spacing) → ``pixel_spacing_unknown_provenance``.
    5. (0018,2010) *Nominal Scanned Pixel Spacing* of digitised film →
       ``nominal_scanned_pixel_spacing``.
    6. Otherwise unknown: ``spacing_mm`` is ``None``; measurements are in pixels.

    Zero, negative, non-finite or malformed values count as absent. Values are
    returned in DICOM order: (row spacing, column spacing) — the first value of
    Pixel Spacing is the distance between the centres of adjacent *rows*.

    Parameters
    ----------
    ds : pydicom.Dataset
        The dataset (only attributes are read).

    Returns
    -------
    Spacing
        The spacing with its source, plane and a sentence describing the rule.
    """
    pixel = parse_spacing_pair(_safe_get(ds, "PixelSpacing"))
    imager = parse_spacing_pair(_safe_get(ds, "ImagerPixelSpacing"))
    ermf = _parse_positive_float(_safe_get(ds, "EstimatedRadiographicMagnificationFactor"))
    calib_type = str(_safe_get(ds, "PixelSpacingCalibrationType") or "").strip().upper()
    calib_desc = str(_safe_get(ds, "PixelSpacingCalibrationDescription") or "").strip()

    if pixel is not None and (
        calib_type in ("GEOMETRY", "FIDUCIAL") or (imager is not None and not _equal_pairs(pixel, imager))
    ):
        if calib_type:
            why = f"Pixel Spacing Calibration Type {calib_type}"
            if calib_desc:
                why += f" ({calib_desc})"
        else:
            why = f"differs from Imager Pixel Spacing {_fmt(imager)}"  # type: ignore[arg-type]
        return Spacing(
            pixel,
            SpacingSource.PIXEL_SPACING_CALIBRATED,
            SpacingPlane.PATIENT,
            f"Pixel Spacing {_fmt(pixel)} calibrated in the patient plane: {why}",
        )

    if imager is not None and ermf is not None:
        corrected = (imager[0] / ermf, imager[1] / ermf)
        return Spacing(
            corrected,
            SpacingSource.IMAGER_SPACING_MAGNIFICATION_CORRECTED,
            SpacingPlane.PATIENT,
            f"Imager Pixel Spacing {_fmt(imager)} divided by Estimated Radiographic "
            f"Magnification Factor {ermf:.6g}",
            magnification=ermf,
        )

    if imager is not None:
        note = " (Pixel Spacing equal to it)" if pixel is not None else ""
        return Spacing(
            imager,
            SpacingSource.IMAGER_SPACING_DETECTOR,
            SpacingPlane.DETECTOR,
            f"Imager Pixel Spacing {_fmt(imager)}{note}: sizes at the detector plane, "
            "not corrected for geometric magnification",
        )

    if pixel is not None:
        return Spacing(
            pixel,
            SpacingSource.PIXEL_SPACING_UNKNOWN_PROVENANCE,
            SpacingPlane.UNKNOWN,
            f"Pixel Spacing {_fmt(pixel)} with no calibration type and no Imager Pixel "
            "Spacing: plane unknown",
        )

    scanned = parse_spacing_pair(_safe_get(ds, "NominalScannedPixelSpacing"))
    if scanned is not None:
        return Spacing(
            scanned,
            SpacingSource.NOMINAL_SCANNED_PIXEL_SPACING,
            SpacingPlane.FILM,
            f"Nominal Scanned Pixel Spacing {_fmt(scanned)} of the digitised film",
        )

    absent = [
        name
        for name in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing")
        if name in ds
    ]
    if absent:
        return unknown_spacing(
            "spacing attributes present but unusable (zero, negative or malformed): "
            + ", ".join(f"{n}={_safe_get(ds, n)!s}" for n in absent)
        )
    return unknown_spacing()


def tiff_spacing(
    x_resolution: float | None, y_resolution: float | None, unit: int | None
) -> tuple[Spacing, str | None]:
    """Spacing from TIFF resolution tags.

    Parameters
    ----------
    x_resolution, y_resolution : float or None
        Pixels per unit along columns (X) and rows (Y).
    unit : int or None
        TIFF ResolutionUnit: 1 = none, 2 = inch, 3 = centimetre.

    Returns
    -------
    spacing : Spacing
        ``tiff_resolution`` spacing, or unknown.
    warning : str or None
        Why tags that exist were not used, if so.
    """
    mm_per_unit = {2: 25.4, 3: 10.0}.get(int(unit) if unit is not None else 2)
    if x_resolution is None and y_resolution is None:
        return unknown_spacing("no resolution tags in the TIFF file"), None
    if mm_per_unit is None:
        return (
            unknown_spacing("TIFF ResolutionUnit is 'none': resolution has no physical unit"),
            "TIFF resolution has no physical unit; spacing unknown",
        )
    xr = _parse_positive_float(x_resolution)
    yr = _parse_positive_float(y_resolution if y_resolution is not None else x_resolution)
    if xr is None or yr is None:
        return unknown_spacing("TIFF resolution tags are zero or malformed"), (
            "TIFF resolution tags are zero or malformed; spacing unknown"
        )
    dpi = (25.4 / mm_per_unit) * xr, (25.4 / mm_per_unit) * yr
    if any(math.isclose(d, default, rel_tol=1e-3) for d in dpi for default in SOFTWARE_DEFAULT_DPI):
        return unknown_spacing(f"TIFF resolution {dpi[0]:.4g} dpi is a common software default"), (
            f"TIFF resolution of {dpi[0]:.4g}x{dpi[1]:.4g} dpi is a common software default, "
            "not a scanner calibration; spacing treated as unknown (pass spacing_mm= to override)"
        )
    pair = (mm_per_unit / yr, mm_per_unit / xr)
    return (
        Spacing(
            pair,
            SpacingSource.TIFF_RESOLUTION,
            SpacingPlane.FILM,
            f"TIFF resolution {dpi[1]:.6g}x{dpi[0]:.6g} dpi (rows x columns) → {_fmt(pair)}",
        ),
        None,
    )
