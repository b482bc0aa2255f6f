"""Render one phantom film: anatomy + lesions -> physics -> DICOM, with exact truth."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .acquisition import expose, process_log, quantise
from .anatomy import BODY_PART_LAYOUTS, AnatomyModel, build_anatomy, render_paths
from .dicom_writer import StudyInfo, build_dataset, header_spacing
from .geometry import apply_affine, body_to_pixel_matrix
from .lesions import Lesion, PlacementMap, place_lesions, rasterize_lesion
from .marker import collimation_field, render_marker
from .materials import attenuation_table_per_mm, calcification_excess_per_mm, linear_attenuation_per_mm
from .specs import AcquisitionSpec, PatientSpec, PhantomSpec, _Serialisable

__all__ = [
    "Patient",
    "LesionTruth",
    "PhantomImage",
    "build_patient",
    "render_patient",
    "render_image",
    "resolve_acquisition",
    "resolve_patient",
]

LEAD_MM = 1.0
HOLDER_PMMA_MM = 3.0
#: Lesion pixels within this distance (patient plane) of the bone mask are flagged ``touches_bone``.
TOUCH_DISTANCE_MM = 0.5


@dataclass(frozen=True)
class Patient:
    """The patient-side model of a phantom: anatomy and lesions (body frame, mm).

    Attributes
    ----------
    spec : PhantomSpec
    anatomy : AnatomyModel
    lesions : tuple of Lesion
    growth : float
        Linear growth of the anatomy relative to the baseline (1 = none).
        Lesion centres are already expressed in the grown body frame.
    seed : int
    """

    spec: PhantomSpec
    anatomy: AnatomyModel
    lesions: tuple[Lesion, ...]
    growth: float = 1.0
    seed: int = 0

    @property
    def fov_center_mm(self) -> tuple[float, float]:
        lay = BODY_PART_LAYOUTS[self.spec.anatomy.body_part]
        s = self.spec.anatomy.scale * self.growth
        return (lay.fov_center_mm[0] * s, lay.fov_center_mm[1] * s)


@dataclass(frozen=True)
class LesionTruth(_Serialisable):
    """Ground truth of one lesion on one film.

    Attributes
    ----------
    lesion_id : int
        Value in :attr:`PhantomImage.labels`; stable across baseline / follow-up.
    kind : str
        "nodule", "plaque", "dot" or "cloud".
    cluster_id : int
        0 unless the lesion is a dot of a cluster.
    area_mm2 : float
        Exact silhouette area in the patient plane (closed form).
    area_detector_mm2 : float
        Exact silhouette area in the detector plane (``area_mm2 * m^2``).
    area_px : float
        Sub-pixel area on the image grid: sum of the supersampled pixel coverage.
    area_px_exact : float
        ``area_detector_mm2 / pitch^2`` (what ``area_px`` estimates).
    label_px : int
        Number of pixels labelled with this id (coverage >= 0.5).
    centroid_px : (float, float)
        Sub-pixel (row, col) centroid of the silhouette.
    center_px : (float, float)
        (row, col) of the lesion's defining centre (exactly transformed).
    center_mm : (float, float)
        Body-frame (u, v) centre.
    bbox : (int, int, int, int)
        (row_min, col_min, row_max+1, col_max+1) of the pixels touched by the silhouette.
    equivalent_diameter_mm : float
        Diameter of the disc with the same patient-plane area.
    thickness_mm : float
        Peak calcium thickness.
    density_g_cm3 : float
        Hydroxyapatite concentration.
    peak_excess_line_integral : float
        ``excess_mu * thickness_mm``: contrast at the thickest point (dimensionless).
    distance_to_bone_mm : float
        Patient-plane distance from the silhouette to the bone mask (0 if overlapping).
    touches_bone : bool
        ``distance_to_bone_mm <= 0.5``.
    overlaps_bone : bool
        The silhouette covers bone-mask pixels.
    in_field : bool
        The whole silhouette lies inside the image and the collimated field.
    """

    lesion_id: int
    kind: str
    cluster_id: int
    area_mm2: float
    area_detector_mm2: float
    area_px: float
    area_px_exact: float
    label_px: int
    centroid_px: tuple[float, float]
    center_px: tuple[float, float]
    center_mm: tuple[float, float]
    bbox: tuple[int, int, int, int]
    equivalent_diameter_mm: float
    thickness_mm: float
    density_g_cm3: float
    peak_excess_line_integral: float
    distance_to_bone_mm: float
    touches_bone: bool
    overlaps_bone: bool
    in_field: bool


@dataclass
class PhantomImage:
    """One rendered film and its ground truth.

    Attributes
    ----------
    stored : ndarray of uint16, shape (rows, cols)
        Pixel values exactly as written to (7FE0,0010), in the file's
        photometric interpretation.
    dataset : pydicom.Dataset
        Complete DICOM dataset with native pixel data; see :func:`write_dicom`.
    pixels : ndarray of float32
        What a reader should return: rescale applied, MONOCHROME1 inverted as
        ``slope * (2**BitsStored - 1 - stored) + intercept``, no VOI window;
        radiodense = high.
    line_integral : ndarray of float32
        Noise-free total attenuation line integral ``sum mu t`` per pixel
        (anatomy + lesions (pixel-averaged in intensity) + marker), no collimation.
    log_noise_free : ndarray of float32
        Noise-free log signal ``ln N0 - ln E[Q]`` (includes scatter, heel effect,
        collimation and blur, before processing).
    labels : ndarray of int32
        Lesion ids where the lesion covers >= 50 % of the pixel, else 0.
    lesions : list of LesionTruth
    bone_mask, body_mask, marker_mask, field_mask : ndarray of bool
        Bone silhouette, limb silhouette, lead letter (coverage >= 0.5) and
        collimated field (primary fraction >= 0.5).
    spacing_mm : (float, float)
        True patient-plane (row, col) spacing ``pitch / m``.
    pitch_mm : (float, float)
        Detector pitch (ImagerPixelSpacing).
    magnification : float
    header_spacing_mm : (float, float)
        Spacing that a PS3.3 10.7.1 reader derives from the written header.
    header_spacing_source : str
    body_to_pixel : ndarray of shape (3, 3)
        Body (u, v) mm -> image (row, col).
    acquisition : AcquisitionSpec
        Fully resolved acquisition (no None fields).
    patient : Patient
    study : StudyInfo
    seed : int
    scatter_to_primary : float
        Realised scatter-to-primary ratio at the median body pixel.
    quanta_per_pixel : float
        Median detected quanta per pixel under the body (before blur).
    """

    stored: np.ndarray
    dataset: Any
    pixels: np.ndarray
    line_integral: np.ndarray
    log_noise_free: np.ndarray
    labels: np.ndarray
    lesions: list[LesionTruth]
    bone_mask: np.ndarray
    body_mask: np.ndarray
    marker_mask: np.ndarray
    field_mask: np.ndarray
    spacing_mm: tuple[float, float]
    pitch_mm: tuple[float, float]
    magnification: float
    header_spacing_mm: tuple[float, float]
    header_spacing_source: str
    body_to_pixel: np.ndarray
    acquisition: AcquisitionSpec
    patient: Patient
    study: StudyInfo
    seed: int
    scatter_to_primary: float
    quanta_per_pixel: float

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.stored.shape)  # type: ignore[return-value]

    @property
    def total_area_mm2(self) -> float:
        """Sum of the lesions' exact patient-plane areas."""
        return float(sum(t.area_mm2 for t in self.lesions))

    def lesion(self, lesion_id: int) -> LesionTruth:
        for t in self.lesions:
            if t.lesion_id == lesion_id:
                return t
        raise KeyError(f"no lesion with id {lesion_id}")

    def to_dict(self) -> dict[str, Any]:
        """Truth and parameters without the arrays (JSON-compatible)."""
        return {
            "shape": list(self.shape),
            "photometric": self.acquisition.photometric,
            "modality": self.acquisition.modality,
            "bits_stored": self.acquisition.bits_stored,
            "spacing_mm": list(self.spacing_mm),
            "pitch_mm": list(self.pitch_mm),
            "magnification": self.magnification,
            "header_spacing_mm": list(self.header_spacing_mm),
            "header_spacing_source": self.header_spacing_source,
            "body_to_pixel": self.body_to_pixel.tolist(),
            "study_date": self.study.study_date,
            "patient_id": self.study.patient_id,
            "sop_instance_uid": str(self.dataset.SOPInstanceUID),
            "seed": self.seed,
            "growth": self.patient.growth,
            "scatter_to_primary": self.scatter_to_primary,
            "quanta_per_pixel": self.quanta_per_pixel,
            "total_area_mm2": self.total_area_mm2,
            "lesions": [t.to_dict() for t in self.lesions],
            "acquisition": self.acquisition.to_dict(),
            "anatomy": self.patient.spec.anatomy.to_dict(),
            "difficulty": self.patient.spec.difficulty,
        }


# --------------------------------------------------------------------------- patient
def _lesion_disc_radius_mm(spec: PhantomSpec) -> float:
    acq = spec.acquisition
    m = acq.magnification
    field = min(acq.rows, acq.cols) * acq.pitch_mm / m
    return max(0.30 * field - 2.0, 0.2 * field)


def placement_map(spec: PhantomSpec, model: AnatomyModel) -> PlacementMap:
    """Body-frame placement raster of the lesion region of `spec` (see :class:`.lesions.PlacementMap`)."""
    lay = BODY_PART_LAYOUTS[spec.anatomy.body_part]
    s = spec.anatomy.scale
    region = tuple(x * s for x in lay.lesion_region_mm)
    center = (lay.fov_center_mm[0] * s, lay.fov_center_mm[1] * s)
    return PlacementMap.build(model, region, disc_center_mm=center, disc_radius_mm=_lesion_disc_radius_mm(spec))


def build_patient(spec: PhantomSpec, *, seed: int) -> Patient:
    """Build the anatomy and place the lesions of `spec` (deterministic in `seed`)."""
    rng = np.random.default_rng([int(seed), 0])
    a = spec.anatomy
    model = build_anatomy(a.body_part, scale=a.scale, fat_scale=a.fat_scale,
                          texture_amplitude=a.trabecular_texture, rng=rng)
    placement = placement_map(spec, model)
    lesions = place_lesions(spec.lesions, placement, rng)
    return Patient(spec=spec, anatomy=model, lesions=tuple(lesions), growth=1.0, seed=int(seed))


def resolve_acquisition(acq: AcquisitionSpec, laterality: str, rng: np.random.Generator) -> AcquisitionSpec:
    """Replace the ``None`` / "auto" fields of `acq` by values drawn from `rng`."""
    draws = {
        "rotation_deg": float(rng.uniform(-15, 15)),
        "shift": rng.uniform(-0.03, 0.03, 2),
        "coll": (float(rng.uniform(0.84, 0.96)), float(rng.uniform(0.84, 0.96))),
        "coll_angle": float(rng.uniform(-2.5, 2.5)),
    }
    field_mm = np.array([acq.rows, acq.cols]) * acq.pitch_mm / acq.magnification
    return dataclasses.replace(
        acq,
        rotation_deg=acq.rotation_deg if acq.rotation_deg is not None else round(draws["rotation_deg"], 4),
        shift_mm=acq.shift_mm if acq.shift_mm is not None else tuple(round(float(x), 4) for x in draws["shift"] * field_mm),
        collimation_fraction=acq.collimation_fraction if acq.collimation_fraction is not None else tuple(round(x, 4) for x in draws["coll"]),
        collimation_angle_deg=acq.collimation_angle_deg if acq.collimation_angle_deg is not None else round(draws["coll_angle"], 4),
        marker=laterality if acq.marker == "auto" else acq.marker,
    )


def resolve_patient(p: PatientSpec, rng: np.random.Generator) -> PatientSpec:
    """Replace the ``None`` fields of `p` by values drawn from `rng`."""
    sex = p.sex or ("F" if rng.random() < 0.75 else "M")
    age = p.age_years if p.age_years is not None else int(rng.integers(8, 75))
    if p.study_date is None:
        d = _dt.date(2018, 1, 1) + _dt.timedelta(days=int(rng.integers(0, 6 * 365)))
        study_date = d.strftime("%Y%m%d")
    else:
        study_date = p.study_date
    name = p.patient_name or _default_name(p.patient_id)
    return dataclasses.replace(p, sex=sex, age_years=age, study_date=study_date, patient_name=name)


def _default_name(patient_id: str) -> str:
    return f"PHANTOM^CASE-{patient_id.split('-')[-1]}"


def _study_info(p: PatientSpec, *, study_date: str, role: str, seed: int, birth_date: str | None = None) -> StudyInfo:
    if birth_date is None:
        sd = _dt.datetime.strptime(p.study_date, "%Y%m%d").date()
        bd = _dt.date(sd.year - int(p.age_years), 1, 1) + _dt.timedelta(days=(seed * 37) % 300)
        if (bd.month, bd.day) > (sd.month, sd.day):
            bd = bd.replace(year=bd.year - 1)
        birth_date = bd.strftime("%Y%m%d")
    rng = np.random.default_rng([seed, 7, int(study_date)])
    time = f"{int(rng.integers(7, 18)):02d}{int(rng.integers(0, 60)):02d}{int(rng.integers(0, 60)):02d}"
    return StudyInfo(
        patient_id=p.patient_id,
        patient_name=p.patient_name or _default_name(p.patient_id),
        sex=p.sex or "O",
        birth_date=birth_date,
        study_date=study_date,
        study_time=time,
        accession=f"PH{int(rng.integers(10**7, 10**8))}",
        study_description=f"{p.diagnosis[: 61 - len(role)]} - {role}",
        series_number=1 if role == "baseline" else 2,
        instance_number=1,
        uid_seed=f"{p.patient_id}/{study_date}/{role}/{seed}",
    )


# --------------------------------------------------------------------------- render
def render_patient(
    patient: Patient,
    acquisition: AcquisitionSpec,
    *,
    seed: int,
    stream: int = 1,
    role: str = "baseline",
    patient_spec: PatientSpec | None = None,
    study_date: str | None = None,
    birth_date: str | None = None,
) -> PhantomImage:
    """Expose `patient` with `acquisition` and return the film with its truth.

    Parameters
    ----------
    patient : Patient
    acquisition : AcquisitionSpec
        May contain ``None`` fields; they are drawn from ``(seed, stream)``.
    seed, stream : int
        Random streams: acquisition draws and noise come from ``default_rng([seed, stream])``.
    role : str
        "baseline" or "followup" (series number, UIDs, study description).
    patient_spec : PatientSpec, optional
        Resolved identifiers; default: resolved from ``patient.spec.patient``.
    study_date, birth_date : str, optional
        Override the (resolved) dates, ``YYYYMMDD``.
    """
    spec = patient.spec
    rng = np.random.default_rng([int(seed), int(stream)])
    acq = resolve_acquisition(acquisition, spec.anatomy.laterality, rng)
    pspec = patient_spec or resolve_patient(spec.patient, np.random.default_rng([int(seed), 3]))
    lay = BODY_PART_LAYOUTS[spec.anatomy.body_part]
    shape = (acq.rows, acq.cols)
    m = acq.magnification
    p = acq.pitch_mm
    g = patient.growth

    b2p = body_to_pixel_matrix(
        center_body_mm=patient.fov_center_mm,
        rotation_deg=float(acq.rotation_deg),
        axis_signs=(-1.0 if lay.distal_up else 1.0, -1.0 if spec.anatomy.laterality == "R" else 1.0),
        shift_mm=tuple(acq.shift_mm),
        magnification=m,
        pitch_mm=p,
        shape=shape,
    )
    p2b = np.linalg.inv(b2p)
    p2a = p2b.copy()
    p2a[:2, :] /= g
    paths = render_paths(patient.anatomy, p2a, shape, depth_scale=g)
    mu = attenuation_table_per_mm(acq.kvp)
    line = paths.line_integral(mu)
    body_mask = paths.body_mask
    bone_mask = paths.bone_mask
    thickness = paths.thickness
    del paths

    fr = acq.collimation_fraction
    off = ((1 - fr[0]) * shape[0] * 0.3 * rng.uniform(-1, 1), (1 - fr[1]) * shape[1] * 0.3 * rng.uniform(-1, 1))
    field = collimation_field(shape, fraction=tuple(fr), angle_deg=float(acq.collimation_angle_deg),
                              center_offset_px=off, penumbra_px=max(1.0, 0.8 / p))

    marker_mask = np.zeros(shape, bool)
    if acq.marker != "none":
        mk = render_marker(acq.marker, shape=shape, pitch_mm=p, field=field, body_mask=body_mask, rng=rng)
        r0, r1, c0, c1 = mk.box
        line[r0:r1, c0:c1] += (linear_attenuation_per_mm("lead", acq.kvp) * LEAD_MM * mk.lead_coverage
                               + linear_attenuation_per_mm("pmma", acq.kvp) * HOLDER_PMMA_MM * mk.holder_coverage)
        marker_mask[r0:r1, c0:c1] = mk.lead_coverage >= 0.5

    # lesions
    labels = np.zeros(shape, np.int32)
    best = np.zeros(shape, np.float32)
    trans = np.ones(shape, np.float32)
    rasters = []
    for les in patient.lesions:
        mu_x = calcification_excess_per_mm(les.density_g_cm3, acq.kvp)
        ras = rasterize_lesion(les, p2b, shape, excess_mu_per_mm=mu_x, supersampling=spec.supersampling)
        rasters.append((les, ras, mu_x))
        if ras is None:
            continue
        r0, r1, c0, c1 = ras.box
        trans[r0:r1, c0:c1] *= ras.transmission
        sub_best = best[r0:r1, c0:c1]
        win = (ras.coverage >= 0.5) & (ras.coverage > sub_best)
        labels[r0:r1, c0:c1][win] = les.lesion_id
        sub_best[win] = ras.coverage[win]
    line -= np.log(trans)
    del trans, best

    # physics
    expo = expose(line, thickness, field, body_mask, acq, rng, exclude_mask=marker_mask)
    del thickness
    log_img = np.float32(np.log(expo.n0_px)) - np.log(np.maximum(expo.signal, 0.5))
    log_nf = np.float32(np.log(expo.n0_px)) - np.log(np.maximum(expo.noise_free, 0.5))
    sel = (body_mask & (field > 0.99))[::4, ::4]
    qpp = float(np.median(expo.noise_free[::4, ::4][sel])) if sel.any() else float("nan")
    spr = expo.scatter_to_primary
    del expo
    proc = process_log(log_img, acq, body_mask=body_mask, field=field, exclude_mask=marker_mask)
    del log_img
    q, window, _levels = quantise(proc, acq, body_mask=body_mask, field=field, exclude_mask=marker_mask)
    del proc
    maxval = (1 << acq.bits_stored) - 1
    if acq.photometric == "MONOCHROME1":
        stored = (maxval - q).astype(np.uint16)
        win_stored = (maxval - window[0], window[1])
    else:
        stored = q
        win_stored = window
    # the VOI window applies to modality (rescaled) values
    win_modality = (acq.rescale_slope * win_stored[0] + acq.rescale_intercept, acq.rescale_slope * win_stored[1])
    pixels = (np.float32(acq.rescale_slope) * q.astype(np.float32) + np.float32(acq.rescale_intercept)).astype(np.float32)
    # stored values are what is written; with a rescale the stored value v maps to slope*v+intercept
    # (for MONOCHROME1: slope*(maxval - v)+intercept == slope*q+intercept).

    # truth
    counts = np.bincount(labels.ravel(), minlength=max((l.lesion_id for l in patient.lesions), default=0) + 1)
    spacing = p / m
    truths = []
    for les, ras, mu_x in rasters:
        center_px = tuple(float(x) for x in apply_affine(b2p, np.array([les.center_mm]))[0])
        area_det = les.area_mm2 * m * m
        if ras is None:
            truths.append(LesionTruth(les.lesion_id, les.kind, les.cluster_id, les.area_mm2, area_det, 0.0,
                                      area_det / p**2, 0, center_px, center_px, tuple(les.center_mm), (0, 0, 0, 0),
                                      2 * np.sqrt(les.area_mm2 / np.pi), les.thickness_mm, les.density_g_cm3,
                                      mu_x * les.thickness_mm, float("nan"), False, False, False))
            continue
        r0, r1, c0, c1 = ras.box
        cov = ras.coverage > 0
        rr, cc = np.nonzero(cov)
        bbox = (r0 + int(rr.min()), c0 + int(cc.min()), r0 + int(rr.max()) + 1, c0 + int(cc.max()) + 1) if rr.size else (r0, c0, r0, c0)
        pad = int(np.ceil(3.0 / spacing)) + 2
        R0, R1 = max(r0 - pad, 0), min(r1 + pad, shape[0])
        C0, C1 = max(c0 - pad, 0), min(c1 + pad, shape[1])
        bone_crop = bone_mask[R0:R1, C0:C1]
        sub_cov = np.zeros(bone_crop.shape, bool)
        sub_cov[r0 - R0 : r1 - R0, c0 - C0 : c1 - C0] = cov
        overlaps = bool((bone_crop & sub_cov).any())
        if overlaps:
            dist = 0.0
        elif bone_crop.any():
            edt = ndimage.distance_transform_edt(~bone_crop)
            dist = float(edt[sub_cov].min() * spacing) if sub_cov.any() else float("inf")
        else:
            dist = float("inf")
        in_field = bool(rr.size) and not ras.clipped and bool((field[r0:r1, c0:c1][cov] >= 0.99).all())
        truths.append(
            LesionTruth(
                lesion_id=les.lesion_id,
                kind=les.kind,
                cluster_id=les.cluster_id,
                area_mm2=les.area_mm2,
                area_detector_mm2=area_det,
                area_px=ras.area_px,
                area_px_exact=area_det / p**2,
                label_px=int(counts[les.lesion_id]),
                centroid_px=ras.centroid_px,
                center_px=center_px,
                center_mm=tuple(les.center_mm),
                bbox=bbox,
                equivalent_diameter_mm=float(2 * np.sqrt(les.area_mm2 / np.pi)),
                thickness_mm=les.thickness_mm,
                density_g_cm3=les.density_g_cm3,
                peak_excess_line_integral=float(mu_x * les.thickness_mm),
                distance_to_bone_mm=dist,
                touches_bone=dist <= TOUCH_DISTANCE_MM,
                overlaps_bone=overlaps,
                in_field=in_field,
            )
        )

    hs = header_spacing(acq)
    info = _study_info(pspec, study_date=study_date or pspec.study_date, role=role, seed=int(seed), birth_date=birth_date)
    mas = float(np.clip(expo_mas(acq), 0.5, 500))
    ds = build_dataset(
        stored,
        acq=acq,
        info=info,
        body_part_examined=lay.body_part_examined,
        view_position=lay.view_position,
        laterality=spec.anatomy.laterality,
        window=win_modality,
        exposure_mas=mas,
        comments=f"Synthetic calcinosis phantom; seed={seed}; {spec.difficulty or 'custom'}; {spec.anatomy.body_part}; {role}",
    )
    return PhantomImage(
        stored=stored,
        dataset=ds,
        pixels=pixels,
        line_integral=line.astype(np.float32),
        log_noise_free=log_nf.astype(np.float32),
        labels=labels,
        lesions=truths,
        bone_mask=bone_mask,
        body_mask=body_mask,
        marker_mask=marker_mask,
        field_mask=field >= 0.5,
        spacing_mm=(spacing, spacing),
        pitch_mm=(p, p),
        magnification=m,
        header_spacing_mm=hs["spacing_mm"],
        header_spacing_source=hs["source"],
        body_to_pixel=b2p,
        acquisition=acq,
        patient=patient,
        study=info,
        seed=int(seed),
        scatter_to_primary=spr,
        quanta_per_pixel=qpp,
    )


def expo_mas(acq: AcquisitionSpec) -> float:
    """Nominal tube current-time product (mAs) written to the header (informative only)."""
    return acq.detector_quanta_per_mm2 / 2.0e4 * (acq.sid_mm / 1000.0) ** 2 * (60.0 / acq.kvp) ** 2


def render_image(spec: PhantomSpec, *, seed: int) -> PhantomImage:
    """Render one film of `spec` (deterministic in `seed`).

    Parameters
    ----------
    spec : PhantomSpec
        E.g. ``PhantomSpec.preset("realistic", body_part="hand")``.
    seed : int
        Seeds the anatomy texture, the lesions, the unresolved acquisition
        fields, the quantum noise and the identifiers.

    Returns
    -------
    PhantomImage
    """
    patient = build_patient(spec, seed=seed)
    return render_patient(patient, spec.acquisition, seed=seed, stream=1, role="baseline")
