"""The :class:`Radiograph`: pixels (radiodense high), calibrated spacing, metadata."""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import numpy as np

__all__ = ["SpacingSource", "SpacingPlane", "Spacing", "RadiographMeta", "Radiograph"]


class SpacingSource(str, Enum):
    """Where a pixel spacing came from (see :func:`calcimeasure.spacing.resolve_dicom_spacing`).

    The string values are stable: they are written into every output table.
    """

    #: Given by the user (``spacing_mm=``); overrides everything in the file.
    USER = "user"
    #: (0028,0030) Pixel Spacing, calibrated in the patient plane: Pixel Spacing
    #: Calibration Type GEOMETRY or FIDUCIAL, or Pixel Spacing that differs from
    #: Imager Pixel Spacing (PS3.3 §10.7.1.1).
    PIXEL_SPACING_CALIBRATED = "pixel_spacing_calibrated"
    #: (0018,1164) Imager Pixel Spacing divided by (0018,1114) Estimated
    #: Radiographic Magnification Factor: an estimate in the patient plane.
    IMAGER_SPACING_MAGNIFICATION_CORRECTED = "imager_spacing_magnification_corrected"
    #: (0018,1164) Imager Pixel Spacing alone: sizes are at the detector plane
    #: (magnified by the projection geometry, typically 5-20 %).
    IMAGER_SPACING_DETECTOR = "imager_spacing_detector"
    #: (0028,0030) Pixel Spacing with nothing saying how it was obtained.
    PIXEL_SPACING_UNKNOWN_PROVENANCE = "pixel_spacing_unknown_provenance"
    #: (0018,2010) Nominal Scanned Pixel Spacing of a digitised film.
    NOMINAL_SCANNED_PIXEL_SPACING = "nominal_scanned_pixel_spacing"
    #: TIFF XResolution / YResolution with a physical ResolutionUnit.
    TIFF_RESOLUTION = "tiff_resolution"
    #: No usable spacing: measurements are reported in pixels.
    UNKNOWN = "unknown"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


class SpacingPlane(str, Enum):
    """The plane in which a spacing measures distances."""

    PATIENT = "patient"  #: corrected for geometric magnification (object plane)
    DETECTOR = "detector"  #: at the detector: object sizes magnified by the geometry
    FILM = "film"  #: on the digitised film (itself at the detector plane)
    UNKNOWN = "unknown"  #: a spacing whose plane nobody recorded
    NONE = "none"  #: no spacing at all

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.value


@dataclass(frozen=True)
class Spacing:
    """A resolved pixel spacing and its provenance.

    Attributes
    ----------
    spacing_mm : tuple of float or None
        (row, column) spacing in mm, i.e. the physical distance between the
        centres of adjacent rows and adjacent columns (DICOM order). ``None``
        when unknown.
    source : SpacingSource
        Which rule produced it.
    plane : SpacingPlane
        Patient plane, detector plane, film, unknown or none.
    detail : str
        A human-readable sentence: the tag values used and the rule applied.
    magnification : float or None
        The Estimated Radiographic Magnification Factor used, if any.
    """

    spacing_mm: tuple[float, float] | None
    source: SpacingSource
    plane: SpacingPlane
    detail: str = ""
    magnification: float | None = None

    @property
    def is_known(self) -> bool:
        """True when a physical spacing is available."""
        return self.spacing_mm is not None

    @property
    def pixel_area_mm2(self) -> float | None:
        """Area of one pixel in mm², or ``None`` when the spacing is unknown."""
        if self.spacing_mm is None:
            return None
        return float(self.spacing_mm[0] * self.spacing_mm[1])

    def to_dict(self) -> dict[str, Any]:
        """Plain-types dictionary (JSON serialisable)."""
        return {
            "spacing_mm": list(self.spacing_mm) if self.spacing_mm else None,
            "spacing_source": self.source.value,
            "spacing_plane": self.plane.value,
            "spacing_detail": self.detail,
            "magnification": self.magnification,
        }


@dataclass(frozen=True)
class RadiographMeta:
    """Descriptive metadata of a radiograph (no patient name, ever).

    Fields not present in the file are ``None``. Dates are :class:`datetime.date`.
    ``patient_key`` is a pseudonymous, salted hash of the Patient ID that is
    stable for one salt (see :func:`calcimeasure.io.dicom_meta.patient_key`);
    ``patient_id`` is only filled when explicitly requested (``keep_ids=True``).
    ``window_center`` / ``window_width`` are the file's VOI window values in the
    file's modality units (before any MONOCHROME1 inversion); use
    :meth:`Radiograph.display_window` for the window on ``Radiograph.pixels``.
    """

    source_path: str
    sha256: str
    file_format: str  # "dicom", "png", "tiff", "jpeg"
    modality: str | None = None
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    study_date: _dt.date | None = None
    body_part: str | None = None
    laterality: str | None = None
    view_position: str | None = None
    patient_sex: str | None = None
    patient_age_years: float | None = None
    patient_key: str | None = None
    patient_id: str | None = None
    window_center: tuple[float, ...] | None = None
    window_width: tuple[float, ...] | None = None
    voi_lut_function: str | None = None
    burned_in_annotation: bool | None = None
    photometric_interpretation: str | None = None
    presentation_lut_shape: str | None = None
    presentation_intent: str | None = None
    inverted: bool = False
    bits_stored: int | None = None
    transfer_syntax_uid: str | None = None
    manufacturer: str | None = None
    image_type: tuple[str, ...] | None = None
    frame_index: int | None = None
    number_of_frames: int = 1
    value_range: tuple[float, float] | None = None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain-types dictionary (JSON serialisable; dates as ISO strings)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, _dt.date):
                out[key] = value.isoformat()
            elif isinstance(value, tuple):
                out[key] = list(value)
        return out


@dataclass(frozen=True, eq=False)
class Radiograph:
    """A 2-D radiograph ready for measurement.

    Attributes
    ----------
    pixels : ndarray of float32, shape (M, N)
        Rows × columns. **Radiodense is high**: the modality LUT / rescale is
        applied and MONOCHROME1 (or an INVERSE presentation LUT) is inverted
        within the encodable value range. No display (VOI) window is applied.
    spacing : Spacing
        The resolved spacing with its provenance.
    meta : RadiographMeta
        Descriptive metadata.
    """

    pixels: np.ndarray
    spacing: Spacing
    meta: RadiographMeta = field(repr=False)

    @property
    def spacing_mm(self) -> tuple[float, float] | None:
        """(row, column) pixel spacing in mm, or ``None`` when unknown."""
        return self.spacing.spacing_mm

    @property
    def spacing_source(self) -> SpacingSource:
        """Which rule produced :attr:`spacing_mm` (``SpacingSource.UNKNOWN`` if none)."""
        return self.spacing.source

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return self.pixels.shape  # type: ignore[return-value]

    def display_window(self) -> tuple[float, float]:
        """(center, width) of a display window on :attr:`pixels`.

        The file's first VOI window, mapped into the radiodense-high domain of
        :attr:`pixels`; a 0.5–99.5 percentile window when the file has none.
        """
        if self.meta.window_center and self.meta.window_width:
            center = float(self.meta.window_center[0])
            width = float(self.meta.window_width[0])
            if self.meta.inverted and self.meta.value_range is not None:
                lo, hi = self.meta.value_range
                center = lo + hi - center
            return center, width
        lo, hi = np.percentile(self.pixels[::4, ::4], [0.5, 99.5])
        return float((lo + hi) / 2), float(max(hi - lo, 1e-6))

    def __repr__(self) -> str:
        sp = (
            f"({self.spacing_mm[0]:.4g}, {self.spacing_mm[1]:.4g}) mm"
            if self.spacing_mm
            else "unknown"
        )
        return (
            f"Radiograph(shape={self.shape}, spacing={sp}, source={self.spacing_source.value}, "
            f"modality={self.meta.modality}, file={self.meta.source_path!r})"
        )
