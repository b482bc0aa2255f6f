"""Parameters of each stage: frozen dataclasses in physical units, serialisable and hashed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from .errors import ParameterError

__all__ = ["SegmentationParams", "params_digest"]

T = TypeVar("T", bound="_Params")


class _Params:
    """Mixin: dict / JSON round trip and a stable digest."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - known
        if unknown:
            raise ParameterError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def digest(self) -> str:
        """12-hex-character hash of the parameters (written into every output row)."""
        return params_digest(self.to_dict())


def params_digest(data: dict[str, Any]) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SegmentationParams(_Params):
    """Parameters of :func:`calcimeasure.segment`, in physical units.

    Sizes in mm are converted to pixels through the image spacing; for an image
    of unknown spacing, through ``nominal_spacing_mm`` (used only to size the
    filters — measurements then stay in pixels).
    """

    #: Spacing (mm) assumed to size filters when the image's spacing is unknown.
    nominal_spacing_mm: float = 0.15
    #: Grid spacing (mm) on which the background is estimated (speed).
    working_spacing_mm: float = 0.6
    #: Radius (mm) of the structuring element of the background opening: lesions
    #: narrower than twice this stand out of the background.
    background_radius_mm: float = 8.0
    #: Cores are detected on a grid of about this spacing (mm): finer images are area-reduced by
    #: round(detect_spacing_mm / spacing) for detection only (speed); growth stays on the source grid.
    detect_spacing_mm: float = 0.15
    #: Gaussian smoothing (mm) of the residual before thresholding.
    smoothing_mm: float = 0.25
    #: Second, coarser smoothing (mm) to find faint extended lesions (0: off).
    coarse_smoothing_mm: float = 0.0
    #: 1: elongated structures (line openings of bone_length_mm) are part of the background; 0: disk only.
    line_background: int = 1
    #: Core threshold (sigmas) at the coarse scale.
    coarse_k: float = 8.0
    #: 1: the coarse-scale sigma is the anatomical clutter (robust spread of the coarse residual); 0: noise.
    coarse_clutter: int = 0
    #: 1: off the bone, the background is a smooth soft-tissue surface fitted through the soft
    #: tissue (normalized convolution, lesion candidates left out, iterated); 0: openings only.
    soft_background: int = 1
    #: Gaussian scale (mm) of the soft-tissue surface.
    soft_sigma_mm: float = 2.0
    #: Band (mm) around the bone mask left out of the soft-tissue fit (blurred cortical edge).
    soft_bone_margin_mm: float = 1.0
    #: Candidates left out of the fit: excess over the surface above this many clutter sigmas ...
    soft_k: float = 4.0
    #: ... grown down to this many (hysteresis), and dilated by soft_candidate_margin_mm.
    soft_k_low: float = 1.5
    #: First candidates: excess over the disk opening above this many of its clutter sigmas (0: none).
    soft_seed_k: float = 4.0
    #: Dilation (mm) of the candidates left out of the soft-tissue fit.
    soft_candidate_margin_mm: float = 1.5
    #: In the soft tissue the background is also at least the line opening of this length (mm): long
    #: straight interfaces (fat / muscle planes, skin folds) are not lesions; plaques are shorter. 0: off.
    soft_line_mm: float = 25.0
    #: 1: the noise sigma is the robust spread of the smoothed residual over the fitted soft tissue
    #: (0: high-pass over the whole body, which counts bone texture and edges as noise).
    noise_from_soft: int = 1
    #: ... at least this fraction of the high-pass sigma over the whole body.
    min_noise_fraction: float = 0.4
    #: 1: the bone left out of the soft-tissue fit also includes :func:`segment.bone.bone_mask_small`
    #: (soft-tissue excess, shape and chain rules: covers the whole bone).
    soft_bone_mask: int = 1
    #: Candidates fainter than faint_peak_k sigmas at their peak must be dome-shaped (inner / outer
    #: contrast >= min_dome_ratio_faint) and compact (solidity >= min_solidity_faint). 0: off.
    min_dome_ratio_faint: float = 2.0
    faint_peak_k: float = 20.0
    min_solidity_faint: float = 0.6
    #: ... a compact one (solidity >= compact_solidity) peaking at >= compact_peak_k sigmas needs only
    #: min_dome_ratio_compact (mottled clouds are flatter than nodules).
    compact_solidity: float = 0.75
    compact_peak_k: float = 10.0
    min_dome_ratio_compact: float = 1.6
    #: With the faint rules on: candidates smaller than small_area_mm2 need a peak of small_peak_k sigmas.
    small_area_mm2: float = 5.0
    small_peak_k: float = 10.0
    #: ... and not streak-like (second-moment axis ratio <= max_elongation_faint; plaques <= ~4). 0: off.
    max_elongation_faint: float = 3.5
    #: Fit / candidate iterations of the soft-tissue surface.
    soft_iterations: int = 3
    #: > 0: where the soft-tissue surface must bridge a hole (lesion candidates), it does so with a
    #: window this many times ``soft_sigma_mm`` long along the local isophote direction (and
    #: ``soft_sigma_mm`` across) instead of twice the isotropic scale. 0 (off) by default: it halves the
    #: part of a missed lesion's excess the surface takes in, but the ``soft_line_mm`` floor takes it
    #: back, and without that floor anatomy is exposed (docs/segmentation.md, "Sixth session").
    soft_bridge_along: float = 0.0
    #: Core threshold, in robust noise sigmas of the smoothed residual.
    k_high: float = 6.0
    #: Extent threshold, in robust noise sigmas (hysteresis low).
    k_low: float = 2.0
    #: Boundary at this fraction of the lesion's own peak contrast above its ring background.
    edge_fraction: float = 0.05
    #: ... but never closer than this many noise sigmas to the ring background.
    k_edge: float = 1.0
    #: Width (mm) of the ring around a lesion whose median is its local background.
    ring_mm: float = 1.0
    #: 1: each lesion's background is a plane fitted to a ring around it (iterated); 0: global background.
    ring_fit: int = 0
    #: Order of the ring background surface: 1 plane, 2 quadric (follows the limb's curvature).
    ring_fit_order: int = 1
    #: 1: a candidate touching a lesion already found (fainter part of it) is merged into it.
    merge_touching: int = 0
    #: Width (mm) of the ring the background plane is fitted to (beyond the ``ring_mm`` gap).
    fit_ring_mm: float = 2.0
    #: Iterations of grow / refit of the ring background.
    ring_iterations: int = 4
    #: The growth box extends this many core sizes beyond the core (at least grow_margin_mm).
    grow_size_factor: float = 1.0
    #: A lesion grows at most this far (mm) beyond its core's box (or the core's size if larger).
    grow_margin_mm: float = 3.0
    #: Lesion pixels on the bone mask are kept only above this fraction of the lesion's peak.
    bone_keep_fraction: float = 0.3
    #: Candidates lying mostly within this band (mm) inside the skin line are edge artefacts.
    skin_band_mm: float = 0.5
    #: Band (mm) inside the collimation edge where nothing is reported.
    field_margin_mm: float = 3.0
    #: The body (tissue) reaches out to this fraction of the way from the median of the air class to
    #: the median of the soft-tissue class of a three-class Otsu (never above the Otsu threshold
    #: between them), within body_rim_mm of the Otsu body: the soft tissue thins to nothing at a
    #: limb's outline and the Otsu body leaves out a rim of it (in fingers 20-35 % of the body,
    #: and the lesions in it). The rim is searched and the soft-tissue surface extended into it;
    #: the bone masks, the surface's support and the noise keep the Otsu body. 0: Otsu body only.
    body_level: float = 0.4
    body_rim_mm: float = 3.0
    #: Clefts of the body narrower than about this (mm) — the thin web between two fingers, the
    #: cleft where two digits nearly touch, processed to an air-like grey level — are tissue too: a
    #: morphological closing of the body with a disk of this diameter, keeping of the pixels it adds
    #: those brighter than ``body_close_level`` of the way from the air's median to the body's (the
    #: air between two digits is darker still: the processing's undershoot). The networks of
    #: ``learned_background=2`` see the closed body. Measured: docs/segmentation.md. 0: off.
    body_close_mm: float = 0.0
    body_close_level: float = 0.0
    #: Candidates fainter than faint_peak_k sigmas with more than this fraction of their pixels in
    #: that rim are rejected (the surface is extrapolated there; a marker's PMMA holder).
    rim_max_fraction: float = 0.8
    #: Smallest lesion kept (mm²).
    min_area_mm2: float = 1.0
    #: Largest lesion kept (mm²); larger bright regions are anatomy or markers.
    max_area_mm2: float = 2500.0
    #: Candidates with more than this fraction of pixels at the image maximum (lead marker,
    #: metal, burned-in text: opaque, saturated) are rejected.
    max_saturated_fraction: float = 0.2
    #: Candidates whose peak excess exceeds this multiple of the contrast of bone over soft tissue
    #: are opaque (lead marker, metal; calcifications <= 2.3x on the single-film phantoms, up to 3.7x
    #: for a thick nodule over a hand's thin bones, hence the shape condition below). 0: off.
    max_opacity_ratio: float = 3.0
    #: ... and flat-topped: at least this fraction of the candidate within 10 % of its peak (a lead
    #: sheet of even thickness: 0.55 on the phantoms' markers; a calcified nodule, which thins towards
    #: its edge, 0.05-0.13 even when a thick one over a hand's thin bones stands 3-4x their contrast).
    #: 0: every candidate above max_opacity_ratio is opaque.
    opaque_plateau_fraction: float = 0.3
    #: Above this multiple of the contrast of bone over soft tissue a candidate is opaque whatever its
    #: shape (a metal sphere is dome-shaped).
    opaque_max_ratio_peaked: float = 8.0
    #: Bone is what survives openings by lines this long (mm), in every orientation's maximum.
    bone_length_mm: float = 16.0
    #: 1: also mark as bone what stands out of the disk-opened soft tissue locally (thin parts of a limb).
    local_bone: int = 1
    #: On the bone mask, pixels whose excess over the background exceeds this fraction of the
    #: bone contrast are a dense lesion lying on the bone, not bone.
    bone_excess_fraction: float = 0.6
    #: Band (mm) around the bone mask counted as bone for the rejection (cortical edges).
    bone_band_mm: float = 0.3
    #: A candidate on the bright (bone-class) part of the image must be dome-shaped: mean
    #: contrast of its inner half over its outer part at least this (short bones are not).
    min_dome_ratio: float = 2.0
    #: ... and not more elongated than this axis ratio (phalanges, metacarpal heads; 0: no limit).
    max_bright_elongation: float = 2.2
    #: Candidates with more than this fraction of their confident core on bone are rejected.
    max_bone_fraction: float = 0.5
    #: A candidate more elongated than this axis ratio, lying mostly within streak_skin_mm of the
    #: body's outline, is edge-enhancement overshoot along the skin line (0: off) ...
    streak_elongation: float = 6.0
    streak_skin_mm: float = 3.0
    #: ... and one within ragged_bone_mm of the bone, less solid than this (area / convex hull), a
    #: lace along the bone's edge (0: off). Both measured on the real films (docs/segmentation.md):
    #: no effect on the phantoms, 12 of the 42 detections of anatomy fewer on the real films.
    min_solidity: float = 0.35
    ragged_bone_mm: float = 1.0
    #: 1: lesions against a bone. A core rejected as "on bone" is tested again against a second
    #: bone mask whose line opening runs along the local axis of the anatomy only
    #: (``bone_axis_sigma_mm`` structure-tensor window; the maximum over orientations keeps a
    #: nodule lying against a shaft in the bone, a line along the shaft does not): its largest
    #: piece off that mask (+ ``bone_band_mm``) becomes the core when it has at least
    #: ``bone_split_min_area_mm2``, peaks at ``bone_split_peak_k`` sigmas and is not elongated
    #: (axis ratio <= ``bone_split_max_elongation``: cortical slivers are); it then grows off
    #: that mask (or above ``bone_keep_fraction`` of its peak on it). 0: off (before 2026-11-25).
    bone_split: int = 1
    bone_axis_sigma_mm: float = 4.0
    #: ... where the structure tensor's coherence is below this (bone ends, round bones) the
    #: maximum over orientations is kept (no split there).
    bone_axis_coherence: float = 0.3
    bone_split_min_area_mm2: float = 2.0
    bone_split_peak_k: float = 10.0
    bone_split_max_elongation: float = 2.5
    #: ... the off-mask part of the core is first opened with a disk of this radius (mm): thin
    #: slivers along cortices would join the lesion to the rest of the core. 0: no opening.
    bone_split_open_mm: float = 0.6
    #: A lesion grown from such a core must be compact (solidity >= bone_split_min_solidity: pieces
    #: carved out of bone texture or overlapping bones are ragged) and, where it is on the bright
    #: (bone) class, dome-shaped with inner / outer contrast >= bone_split_min_dome.
    #: The bone mask's outline redrawn on the detection grid within this distance (mm) of the
    #: reduced grid's outline: above the Otsu threshold of that band in the image smoothed by
    #: ``bone_refine_blur_mm`` (the reduced grid's mask lies 0.6-1.2 mm outside the bone). 0: off
    #: (the default: 0.6 gave truer masks and Dice on phantoms but more false positives on the
    #: real films and a worse comparison, see docs/segmentation.md; it needs the bone band re-tuned).
    bone_refine_mm: float = 0.0
    bone_refine_blur_mm: float = 0.3
    bone_split_min_solidity: float = 0.85
    bone_split_min_dome: float = 1.5
    #: Anatomy-oriented background (segment/orientation.py): the background is lowered to the
    #: median of the reduced image along a line of +/- this half length (mm) in the local isophote
    #: direction, where the line lies wholly in the body and the structure is straight along it
    #: (bones, cortices, fat / muscle interfaces run along the limb; a compact lesion does not).
    #: Recovers faint clouds and plaques that the openings and the quadratic surface absorb,
    #: on and beside the shafts. 0: off, the default for now: 22 (with min_dome_ratio_compact 1.75)
    #: raises recall, total-area error and Dice on the realistic phantoms at precision >= 0.95, but
    #: adds false positives beside joints (easy preset precision 0.87 -> 0.78) and on the real films,
    #: and over-reads a sharp-edged nodule by 13 % instead of 6 % (the boundary rule was calibrated on
    #: the higher background); see docs/segmentation.md "Oriented line median".
    axis_median_mm: float = 0.0
    #: ... integration scale (mm) of the structure tensor giving the direction,
    axis_orientation_mm: float = 5.0
    #: ... the line's minimum straightness (mean resultant length of the doubled angles along it),
    axis_straightness: float = 0.99
    #: ... and the spacing (mm) of the grid it runs on.
    axis_grid_mm: float = 1.2
    #: Learned correction of the reduced-grid background (segment/learned.py; 1: on). Four small
    #: networks trained on phantoms with a known true background lower the background where it
    #: absorbs lesions (never below the 22 mm oriented line median) and raise it where it leaves
    #: anatomy in the residual. 0 (off) by default: on held-out realistic phantoms it lowers the
    #: median total-area error from 30 % to 21 %, but precision falls from 0.97 to 0.93, and it has
    #: seen only phantom anatomy: it adds false positives on the real films (docs/segmentation.md,
    #: "Learned background correction"). 2: a U-Net (``segment/unet.py``) that sees each pixel's
    #: neighbourhood (about 50 mm) predicts the same correction instead, and a lesion probability
    #: (the two parameters below); held-out realistic phantoms 0.87 / 0.98 / 11 % / 0.83, but on
    #: real limb films precision 0.51 (docs/segmentation.md, "U-Net background and lesion probability").
    learned_background: int = 0
    #: With ``learned_background=2`` only: a candidate rejected by a bone or shape rule (``bone``,
    #: ``bone_shape``, ``bone_split_shape``, ``flat``, ``faint_small``, ``ragged``, ``rim``) is
    #: kept when the U-Net's mean lesion probability over it is at least this (1: never) ...
    unet_keep_probability: float = 0.5
    #: ... and a candidate every rule accepts is rejected (``unet``) when that probability is below
    #: this (0: never).
    unet_reject_probability: float = 0.02
    #: With ``learned_background=2`` only: lesion outlines extended to this contour of the U-Net's
    #: interpolated lesion probability (its estimate of the silhouette; 0: off) ...
    unet_silhouette: float = 0.0
    #: ... and regions of that contour overlapping no lesion reported as lesions when their peak
    #: probability is at least this (0: never).
    unet_detect_probability: float = 0.0
    #: With ``learned_background=2`` only: the reported lesion mask is this contour of a second,
    #: finer U-Net's predicted lesion coverage (``segment/lesion_unet.py``, about 0.3 mm grid; it
    #: sees the pipeline's residual and detections and draws the mask itself), instead of the
    #: hysteresis outlines; 0: off (docs/segmentation.md, "Lesion-mask U-Net").
    unet_mask: float = 0.0
    #: ... a region of that mask overlapping no lesion of the pipeline is reported when its peak
    #: coverage is at least this (0: never; the network then only redraws the pipeline's lesions).
    unet_mask_detect: float = 0.0
    #: ... a region of that mask overlapping lesions of the pipeline is reported only when the
    #: network's coverage at the peak of at least one of them (the pixel where the pipeline's
    #: smoothed residual is highest) is at least this: the network confirms a detection at its
    #: strongest point before its outline replaces it. 0: off (docs/segmentation.md, "Unconfirmed
    #: regions of the lesion-mask U-Net").
    unet_mask_confirm: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or not value == value or value < 0:
                raise ParameterError(f"`{f.name}` must be a non-negative number, got {value!r}")
        for name in ("nominal_spacing_mm", "working_spacing_mm", "background_radius_mm", "bone_length_mm", "k_high"):
            if not getattr(self, name) > 0:
                raise ParameterError(f"`{name}` must be positive, got {getattr(self, name)!r}")
        for name in ("edge_fraction", "bone_keep_fraction", "max_saturated_fraction", "max_bone_fraction",
                     "bone_axis_coherence", "axis_straightness", "unet_keep_probability", "unet_reject_probability",
                     "unet_silhouette", "unet_detect_probability", "unet_mask", "unet_mask_detect", "body_close_level",
                     "opaque_plateau_fraction"):
            if getattr(self, name) > 1:
                raise ParameterError(f"`{name}` is a fraction and must be <= 1, got {getattr(self, name)!r}")
        if self.learned_background not in (0, 1, 2):
            raise ParameterError(f"`learned_background` must be 0, 1 or 2, got {self.learned_background!r}")
        if self.unet_mask_confirm > 1:
            raise ParameterError(f"`unet_mask_confirm` must lie in [0, 1] (a coverage); got {self.unet_mask_confirm!r}")
        if self.unet_mask > 0 and (self.unet_mask >= 1 or self.learned_background != 2):
            raise ParameterError("`unet_mask` must lie in (0, 1) and needs `learned_background=2` "
                                 f"(got unet_mask={self.unet_mask!r}, learned_background={self.learned_background!r})")
        if self.min_area_mm2 > self.max_area_mm2:
            raise ParameterError(f"`min_area_mm2` ({self.min_area_mm2}) must not exceed `max_area_mm2`")
        if self.k_low > self.k_high:
            raise ParameterError(f"`k_low` ({self.k_low}) must not exceed `k_high` ({self.k_high})")
