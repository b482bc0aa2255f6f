"""Parameter dataclasses of the phantom generator (frozen, serialisable).

Every field has a physical unit in its name or docstring.  Fields whose
default is ``None`` are *drawn from the seed* when an image is rendered; the
fully resolved values are reported back in
:attr:`calcimeasure.phantom.PhantomImage.acquisition` /
:attr:`~calcimeasure.phantom.PhantomImage.patient`, so any rendered image can
be reproduced exactly from ``(spec, seed)`` or from its resolved spec.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "BODY_PARTS",
    "DIFFICULTIES",
    "PHOTOMETRIC_INTERPRETATIONS",
    "SPACING_HEADERS",
    "AnatomySpec",
    "LesionSpec",
    "AcquisitionSpec",
    "PatientSpec",
    "PhantomSpec",
]

BODY_PARTS = ("hand", "fingers", "forearm", "elbow", "knee")
DIFFICULTIES = ("easy", "realistic", "hard")
PHOTOMETRIC_INTERPRETATIONS = ("MONOCHROME1", "MONOCHROME2")
#: How the pixel spacing is written to the DICOM header (see :class:`AcquisitionSpec`).
SPACING_HEADERS = ("ermf", "calibrated", "imager")

T = TypeVar("T", bound="_Serialisable")


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}")


def _check_range(
    name: str, value: Any, *, low: float | None = None, high: float | None = None, ordered: bool = False
) -> None:
    if value is None:
        return
    vals = value if isinstance(value, tuple) else (value,)
    for v in vals:
        if low is not None and v < low:
            raise ValueError(f"`{name}` must be >= {low}, got {value!r}")
        if high is not None and v > high:
            raise ValueError(f"`{name}` must be <= {high}, got {value!r}")
    if ordered and isinstance(value, tuple) and len(value) == 2:
        if value[0] > value[1]:
            raise ValueError(f"`{name}` must be an increasing (low, high) range, got {value!r}")


class _Serialisable:
    """Mixin: ``to_dict()`` / ``from_dict()`` / ``to_json()`` for nested frozen dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        """Return the parameters as a JSON-compatible ``dict`` (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))  # type: ignore[arg-type]

    def to_json(self, **kwargs: Any) -> str:
        """Return :meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """Rebuild the dataclass from :meth:`to_dict` output (unknown keys are an error)."""
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown field(s) for {cls.__name__}: {sorted(unknown)}")
        kwargs = {}
        for key, value in data.items():
            kwargs[key] = _coerce(hints[key], value)
        return cls(**kwargs)


def _coerce(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return _coerce(non_none[0], value) if len(non_none) == 1 else value
    if isinstance(hint, type) and issubclass(hint, _Serialisable) and isinstance(value, dict):
        return hint.from_dict(value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v) for v in value)
        return tuple(_coerce(a, v) for a, v in zip(args, value))
    return value


@dataclass(frozen=True)
class AnatomySpec(_Serialisable):
    """The limb: which region, which side, how big.

    Attributes
    ----------
    body_part : {"hand", "fingers", "forearm", "elbow", "knee"}
        Region (PA hand / distal digits / AP forearm / AP elbow / AP knee).
        "fingers" is the hand model with a field of view on the digits.
    laterality : {"R", "L"}
        Side; mirrors the anatomy on the image and sets the lead marker letter.
    scale : float
        Linear size factor of the whole limb (1.0 = average adult; 0.6 ~ child).
    fat_scale : float
        Multiplier of the subcutaneous fat thickness.
    trabecular_texture : float
        Relative amplitude (0..0.8) of the bone-volume-fraction modulation that
        gives cancellous bone its trabecular texture (0 = smooth bone).
    """

    body_part: str = "hand"
    laterality: str = "R"
    scale: float = 1.0
    fat_scale: float = 1.0
    trabecular_texture: float = 0.25

    def __post_init__(self) -> None:
        _check_choice("body_part", self.body_part, BODY_PARTS)
        _check_choice("laterality", self.laterality, ("R", "L"))
        _check_range("scale", self.scale, low=0.3, high=2.0)
        _check_range("fat_scale", self.fat_scale, low=0.0, high=5.0)
        _check_range("trabecular_texture", self.trabecular_texture, low=0.0, high=0.8)


@dataclass(frozen=True)
class LesionSpec(_Serialisable):
    """How many calcified lesions of each kind, and their size/density ranges.

    All ``(low, high)`` ranges are sampled uniformly per lesion.  Densities are
    hydroxyapatite (HA) concentrations in g/cm^3 (cortical bone ~1.2,
    crystalline HA 3.16).  Sizes are in the patient plane.

    Attributes
    ----------
    n_nodules : int
        Solid nodules: star-shaped outline (radial harmonics 2..5), ellipsoidal
        thickness profile ``t = T (1 - s^2)^g`` with ``g`` in 0.5..0.9.
    n_plaques : int
        Flat elongated sheets: super-elliptic profile ``t = T (1 - s^6)^0.5``.
    n_clusters : int
        Clusters of punctate dots (each dot is its own lesion with a ``cluster_id``).
    dots_per_cluster : (int, int)
        Number of dots per cluster.
    n_clouds : int
        Faint, irregular, mottled clouds with a soft ``(1 - s^2)^1.5`` profile.
    nodule_radius_mm, plaque_radius_mm, dot_radius_mm, cluster_radius_mm, cloud_radius_mm : (float, float)
        Mean outline radius (semi-major axis for plaques; spread radius for clusters).
    plaque_aspect : (float, float)
        Minor/major axis ratio of plaques.
    nodule_density_g_cm3, plaque_density_g_cm3, dot_density_g_cm3, cloud_density_g_cm3 : (float, float)
        HA concentration of each kind.
    near_bone_fraction : float
        Fraction of nodules/plaques/clouds placed so that their outline touches
        or slightly overlaps the bone's silhouette.
    min_gap_mm : float
        Minimum gap between the outlines of two lesions (dots in a cluster use a third of it).
    """

    n_nodules: int = 3
    n_plaques: int = 1
    n_clusters: int = 1
    dots_per_cluster: tuple[int, int] = (4, 9)
    n_clouds: int = 1
    nodule_radius_mm: tuple[float, float] = (1.5, 4.5)
    plaque_radius_mm: tuple[float, float] = (4.0, 10.0)
    plaque_aspect: tuple[float, float] = (0.25, 0.5)
    dot_radius_mm: tuple[float, float] = (0.3, 0.8)
    cluster_radius_mm: tuple[float, float] = (2.5, 5.0)
    cloud_radius_mm: tuple[float, float] = (3.0, 7.0)
    nodule_density_g_cm3: tuple[float, float] = (0.8, 1.6)
    plaque_density_g_cm3: tuple[float, float] = (0.4, 1.0)
    dot_density_g_cm3: tuple[float, float] = (0.8, 1.5)
    cloud_density_g_cm3: tuple[float, float] = (0.08, 0.25)
    near_bone_fraction: float = 0.25
    min_gap_mm: float = 1.0

    def __post_init__(self) -> None:
        for name in ("n_nodules", "n_plaques", "n_clusters", "n_clouds"):
            _check_range(name, getattr(self, name), low=0, high=200)
        _check_range("dots_per_cluster", self.dots_per_cluster, low=1, high=100, ordered=True)
        for name in ("nodule_radius_mm", "plaque_radius_mm", "dot_radius_mm", "cluster_radius_mm", "cloud_radius_mm"):
            _check_range(name, getattr(self, name), low=0.05, high=100.0, ordered=True)
        _check_range("plaque_aspect", self.plaque_aspect, low=0.05, high=1.0, ordered=True)
        for name in ("nodule_density_g_cm3", "plaque_density_g_cm3", "dot_density_g_cm3", "cloud_density_g_cm3"):
            _check_range(name, getattr(self, name), low=0.01, high=3.16, ordered=True)
        _check_range("near_bone_fraction", self.near_bone_fraction, low=0.0, high=1.0)
        _check_range("min_gap_mm", self.min_gap_mm, low=0.0, high=50.0)

    @property
    def n_expected(self) -> int:
        """Upper bound of the number of lesions (clusters counted with their max dots)."""
        return self.n_nodules + self.n_plaques + self.n_clouds + self.n_clusters * self.dots_per_cluster[1]


@dataclass(frozen=True)
class AcquisitionSpec(_Serialisable):
    """Geometry, exposure, detector, image processing and DICOM encoding of one film.

    Attributes
    ----------
    rows, cols : int
        Image size in pixels.
    pitch_mm : float
        Detector pixel pitch (written as (0018,1164) *Imager Pixel Spacing*).
    modality : {"DX", "CR"}
        DX writes *Digital X-Ray Image Storage - For Presentation*, CR writes
        *Computed Radiography Image Storage*.
    photometric : {"MONOCHROME1", "MONOCHROME2"}
        MONOCHROME2 stores dense = high; MONOCHROME1 stores dense = low (and
        writes *Presentation LUT Shape* INVERSE).
    bits_stored : int
        Quantisation depth of the for-presentation image (8..16).
    sid_mm : float
        Source-to-image (detector) distance.
    oid_mm : float
        Object (limb mid-plane) to detector distance.  Magnification
        ``m = sid / (sid - oid)``; patient-plane spacing is ``pitch / m``.
    rotation_deg : float or None
        In-plane angle of the limb axis, counter-clockwise as displayed
        (0 = limb axis vertical, distal end up).  None: uniform in +-15 deg.
    shift_mm : (float, float) or None
        Patient-plane (row, col) offset of the limb from the field centre.
        None: uniform within +-3 % of the field.
    kvp : float
        Tube voltage; sets the effective energy (see :mod:`.materials`) and so the contrast.
    detector_quanta_per_mm2 : float
        Detected X-ray quanta per mm^2 behind the anatomy (automatic exposure
        control target: the median primary fluence under the body is set to it).
        Quantum noise ~ 1/sqrt(quanta per pixel).
    electronic_noise_quanta : float
        Additive read-out noise, standard deviation in quanta per pixel.
    scatter_to_primary : float
        Scatter-to-primary ratio at the median body pixel (no grid: 0.2..1).
    scatter_kernel_mm : float
        Gaussian sigma of the scatter point-spread function (detector plane).
    detector_blur_mm : float
        Gaussian sigma of the detector point-spread function (detector plane).
    focal_spot_mm : float
        Nominal focal spot size; geometric unsharpness ``f * oid / (sid - oid)``.
    heel_effect : float
        Relative fluence drop from the cathode (bottom row) to the anode (top row) side.
    collimation_fraction : (float, float) or None
        Fraction of the image height/width inside the collimated field.
        None: each uniform in 0.84..0.96.  (1.0, 1.0) = no visible collimation.
    collimation_angle_deg : float or None
        Rotation of the collimation rectangle.  None: uniform in +-2.5 deg.
    marker : {"auto", "L", "R", "none"}
        Lead side marker letter ("auto" = the anatomy's laterality).
    edge_enhancement_gain, edge_enhancement_sigma_mm : float
        Large-kernel unsharp masking of the log image,
        ``y = x + gain * (x - G_sigma * x)``; creates dark halos around dense objects.
    sharpening_gain, sharpening_sigma_mm : float
        Small-kernel unsharp masking (sharpens detail and noise).
    range_compression : float
        Fraction (0..0.8) of the very low-pass (sigma 25 mm) log image
        subtracted (dynamic range compression / "latitude" processing).
    tone_gamma : float
        Exponent of the display tone curve (1 = linear body range with soft toe and shoulder).
    rescale_slope, rescale_intercept : float
        (0028,1053) / (0028,1052); must be 1 / 0 for DX.
    spacing_header : {"ermf", "calibrated", "imager"}
        "ermf": ImagerPixelSpacing + EstimatedRadiographicMagnificationFactor = true m;
        "calibrated": also PixelSpacing = pitch/m with PixelSpacingCalibrationType GEOMETRY;
        "imager": ImagerPixelSpacing only (detector-plane spacing, magnification unknown).
    """

    rows: int = 1024
    cols: int = 1024
    pitch_mm: float = 0.15
    modality: str = "DX"
    photometric: str = "MONOCHROME2"
    bits_stored: int = 12
    sid_mm: float = 1000.0
    oid_mm: float = 40.0
    rotation_deg: float | None = None
    shift_mm: tuple[float, float] | None = None
    kvp: float = 55.0
    detector_quanta_per_mm2: float = 1.0e5
    electronic_noise_quanta: float = 2.0
    scatter_to_primary: float = 0.3
    scatter_kernel_mm: float = 30.0
    detector_blur_mm: float = 0.1
    focal_spot_mm: float = 1.2
    heel_effect: float = 0.08
    collimation_fraction: tuple[float, float] | None = None
    collimation_angle_deg: float | None = None
    marker: str = "auto"
    edge_enhancement_gain: float = 0.5
    edge_enhancement_sigma_mm: float = 6.0
    sharpening_gain: float = 0.0
    sharpening_sigma_mm: float = 0.4
    range_compression: float = 0.0
    tone_gamma: float = 1.0
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    spacing_header: str = "ermf"

    def __post_init__(self) -> None:
        _check_range("rows", self.rows, low=32, high=8192)
        _check_range("cols", self.cols, low=32, high=8192)
        _check_range("pitch_mm", self.pitch_mm, low=0.01, high=5.0)
        _check_choice("modality", self.modality, ("DX", "CR"))
        _check_choice("photometric", self.photometric, PHOTOMETRIC_INTERPRETATIONS)
        _check_range("bits_stored", self.bits_stored, low=8, high=16)
        _check_range("sid_mm", self.sid_mm, low=300.0, high=5000.0)
        if not 0.0 <= self.oid_mm < 0.5 * self.sid_mm:
            raise ValueError(f"`oid_mm` must be in [0, sid_mm/2), got {self.oid_mm} (sid_mm={self.sid_mm})")
        _check_range("kvp", self.kvp, low=30.0, high=150.0)
        _check_range("detector_quanta_per_mm2", self.detector_quanta_per_mm2, low=10.0, high=1e9)
        _check_range("electronic_noise_quanta", self.electronic_noise_quanta, low=0.0)
        _check_range("scatter_to_primary", self.scatter_to_primary, low=0.0, high=5.0)
        _check_range("scatter_kernel_mm", self.scatter_kernel_mm, low=1.0, high=500.0)
        _check_range("detector_blur_mm", self.detector_blur_mm, low=0.0, high=5.0)
        _check_range("focal_spot_mm", self.focal_spot_mm, low=0.0, high=3.0)
        _check_range("heel_effect", self.heel_effect, low=0.0, high=0.5)
        _check_range("collimation_fraction", self.collimation_fraction, low=0.3, high=1.0)
        _check_choice("marker", self.marker, ("auto", "L", "R", "none"))
        _check_range("edge_enhancement_gain", self.edge_enhancement_gain, low=0.0, high=10.0)
        _check_range("edge_enhancement_sigma_mm", self.edge_enhancement_sigma_mm, low=0.1, high=100.0)
        _check_range("sharpening_gain", self.sharpening_gain, low=0.0, high=10.0)
        _check_range("sharpening_sigma_mm", self.sharpening_sigma_mm, low=0.05, high=10.0)
        _check_range("range_compression", self.range_compression, low=0.0, high=0.8)
        _check_range("tone_gamma", self.tone_gamma, low=0.2, high=5.0)
        if self.rescale_slope <= 0:
            raise ValueError(f"`rescale_slope` must be > 0, got {self.rescale_slope}")
        if self.modality == "DX" and (self.rescale_slope != 1.0 or self.rescale_intercept != 0.0):
            raise ValueError(
                "DX images must have rescale_slope=1 and rescale_intercept=0 "
                "(PS3.3 C.8.11.3 DX Image Module); use modality='CR' for a non-identity rescale"
            )
        _check_choice("spacing_header", self.spacing_header, SPACING_HEADERS)

    @property
    def magnification(self) -> float:
        """Geometric magnification of the limb mid-plane, ``sid / (sid - oid)``."""
        return self.sid_mm / (self.sid_mm - self.oid_mm)

    @property
    def spacing_mm(self) -> tuple[float, float]:
        """Patient-plane (row, col) pixel spacing, ``pitch / m``."""
        s = self.pitch_mm / self.magnification
        return (s, s)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return (self.rows, self.cols)


@dataclass(frozen=True)
class PatientSpec(_Serialisable):
    """Synthetic patient and study identifiers (never real-looking names).

    Fields left ``None`` are drawn from the seed.

    Attributes
    ----------
    patient_id : str
        (0010,0020) *Patient ID*, e.g. "PHANTOM-0001".
    patient_name : str or None
        (0010,0010); None: ``"PHANTOM^CASE-<last part of patient_id>"``.
    sex : {"F", "M", "O"} or None
        (0010,0040).
    age_years : int or None
        Age at the (baseline) study; sets (0010,1010) and (0010,0030).
    study_date : str or None
        (0008,0020) ``YYYYMMDD`` of the (baseline) study; None: 2018..2023.
    diagnosis : str
        Free text put in (0008,1030) *Study Description*.
    """

    patient_id: str = "PHANTOM-0001"
    patient_name: str | None = None
    sex: str | None = None
    age_years: int | None = None
    study_date: str | None = None
    diagnosis: str = "calcinosis (synthetic phantom)"

    def __post_init__(self) -> None:
        if self.sex is not None:
            _check_choice("sex", self.sex, ("F", "M", "O"))
        _check_range("age_years", self.age_years, low=0, high=120)
        if self.study_date is not None and (len(self.study_date) != 8 or not self.study_date.isdigit()):
            raise ValueError(f"`study_date` must be 'YYYYMMDD', got {self.study_date!r}")


@dataclass(frozen=True)
class PhantomSpec(_Serialisable):
    """Everything that defines one phantom radiograph (besides the seed).

    Build one with :meth:`preset` and adjust with :func:`dataclasses.replace`
    or :meth:`with_acquisition`.

    Attributes
    ----------
    anatomy : AnatomySpec
    lesions : LesionSpec
    acquisition : AcquisitionSpec
    patient : PatientSpec
    difficulty : str or None
        Name of the preset it came from (informative only).
    supersampling : int
        Sub-pixel sampling factor per axis used for the lesion truth (4..16).
    """

    anatomy: AnatomySpec = field(default_factory=AnatomySpec)
    lesions: LesionSpec = field(default_factory=LesionSpec)
    acquisition: AcquisitionSpec = field(default_factory=AcquisitionSpec)
    patient: PatientSpec = field(default_factory=PatientSpec)
    difficulty: str | None = None
    supersampling: int = 8

    def __post_init__(self) -> None:
        _check_range("supersampling", self.supersampling, low=2, high=16)
        if self.difficulty is not None:
            _check_choice("difficulty", self.difficulty, DIFFICULTIES)

    @classmethod
    def preset(
        cls,
        difficulty: str = "realistic",
        *,
        body_part: str = "hand",
        rows: int | None = None,
        cols: int | None = None,
        pitch_mm: float | None = None,
        laterality: str = "R",
        patient_id: str = "PHANTOM-0001",
        **acquisition: Any,
    ) -> "PhantomSpec":
        """Return the preset spec for a difficulty and body part; see :func:`.presets.preset_spec`."""
        from .presets import preset_spec

        return preset_spec(
            difficulty,
            body_part=body_part,
            rows=rows,
            cols=cols,
            pitch_mm=pitch_mm,
            laterality=laterality,
            patient_id=patient_id,
            **acquisition,
        )

    def with_acquisition(self, **changes: Any) -> "PhantomSpec":
        """Return a copy with some :class:`AcquisitionSpec` fields replaced."""
        return dataclasses.replace(self, acquisition=dataclasses.replace(self.acquisition, **changes))

    def with_lesions(self, **changes: Any) -> "PhantomSpec":
        """Return a copy with some :class:`LesionSpec` fields replaced."""
        return dataclasses.replace(self, lesions=dataclasses.replace(self.lesions, **changes))
