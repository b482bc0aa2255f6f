"""Difficulty presets ("easy", "realistic", "hard") per body part."""

from __future__ import annotations

import dataclasses
from typing import Any

from .anatomy import BODY_PART_LAYOUTS
from .specs import DIFFICULTIES, AcquisitionSpec, AnatomySpec, LesionSpec, PatientSpec, PhantomSpec

__all__ = ["BODY_PART_DEFAULTS", "DIFFICULTY_DEFAULTS", "preset_spec"]

#: Typical technique per body part: tube voltage (kV), object-to-detector distance (mm),
#: scatter-to-primary ratio without grid, range compression of "realistic" processing.
BODY_PART_DEFAULTS: dict[str, dict[str, Any]] = {
    "hand": {"kvp": 52.0, "oid_mm": 25.0, "scatter": 0.15, "range_compression": 0.2},
    "fingers": {"kvp": 50.0, "oid_mm": 20.0, "scatter": 0.12, "range_compression": 0.15},
    "forearm": {"kvp": 58.0, "oid_mm": 40.0, "scatter": 0.3, "range_compression": 0.4},
    "elbow": {"kvp": 60.0, "oid_mm": 45.0, "scatter": 0.4, "range_compression": 0.5},
    "knee": {"kvp": 68.0, "oid_mm": 90.0, "scatter": 0.7, "range_compression": 0.6},
}

#: Per difficulty: acquisition fields, lesion fields, multipliers of the body-part scatter and range compression.
DIFFICULTY_DEFAULTS: dict[str, dict[str, Any]] = {
    "easy": {
        "acquisition": dict(detector_quanta_per_mm2=4.0e5, edge_enhancement_gain=0.0, sharpening_gain=0.0,
                            detector_blur_mm=0.08, electronic_noise_quanta=1.0, heel_effect=0.04),
        "lesions": dict(n_nodules=3, n_plaques=1, n_clusters=1, dots_per_cluster=(3, 6), n_clouds=0,
                        nodule_radius_mm=(2.5, 5.0), plaque_radius_mm=(5.0, 10.0), plaque_aspect=(0.35, 0.6),
                        dot_radius_mm=(0.6, 1.0), nodule_density_g_cm3=(0.9, 1.5),
                        plaque_density_g_cm3=(0.7, 1.2), dot_density_g_cm3=(1.0, 1.6),
                        near_bone_fraction=0.0, min_gap_mm=2.0),
        "scatter": 0.6,
        "range_compression": 0.0,
    },
    "realistic": {
        "acquisition": dict(detector_quanta_per_mm2=1.2e5, edge_enhancement_gain=0.6,
                            edge_enhancement_sigma_mm=6.0, sharpening_gain=0.3, sharpening_sigma_mm=0.5,
                            detector_blur_mm=0.1, electronic_noise_quanta=2.0),
        "lesions": dict(),
        "scatter": 1.0,
        "range_compression": 1.0,
    },
    "hard": {
        "acquisition": dict(detector_quanta_per_mm2=2.5e4, edge_enhancement_gain=1.6,
                            edge_enhancement_sigma_mm=3.0, sharpening_gain=0.8, sharpening_sigma_mm=0.4,
                            detector_blur_mm=0.15, electronic_noise_quanta=4.0,
                            heel_effect=0.12),
        "lesions": dict(n_nodules=3, n_plaques=1, n_clusters=2, dots_per_cluster=(5, 12), n_clouds=2,
                        nodule_radius_mm=(1.0, 3.5), dot_radius_mm=(0.2, 0.5), cloud_radius_mm=(3.0, 8.0),
                        nodule_density_g_cm3=(0.4, 1.0), plaque_density_g_cm3=(0.25, 0.7),
                        dot_density_g_cm3=(0.5, 1.2), cloud_density_g_cm3=(0.05, 0.15),
                        near_bone_fraction=0.6, min_gap_mm=0.6),
        "scatter": 1.5,
        "range_compression": 1.3,
    },
}


def preset_spec(
    difficulty: str = "realistic",
    *,
    body_part: str = "hand",
    rows: int | None = None,
    cols: int | None = None,
    pitch_mm: float | None = None,
    laterality: str = "R",
    patient_id: str = "PHANTOM-0001",
    **acquisition: Any,
) -> PhantomSpec:
    """Build the preset :class:`PhantomSpec` of a difficulty and body part.

    Parameters
    ----------
    difficulty : {"easy", "realistic", "hard"}
        easy: high dose, no processing, large dense lesions away from bone, no
        clouds.  realistic: clinical dose, moderate unsharp masking, all lesion
        kinds, a quarter near bone.  hard: low dose, strong edge enhancement
        (halos), faint clouds, small dots, most lesions touching bone, more
        scatter and blur.
    body_part : {"hand", "fingers", "forearm", "elbow", "knee"}
    rows, cols, pitch_mm : optional
        Image size and detector pitch.  Missing values are chosen so that the
        body part's default field of view is covered (pitch defaults to
        0.15 mm when neither size is given).
    laterality : {"R", "L"}
    patient_id : str
    **acquisition
        Any further :class:`AcquisitionSpec` field (overrides the preset).
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"`difficulty` must be one of {DIFFICULTIES}, got {difficulty!r}")
    if body_part not in BODY_PART_LAYOUTS:
        raise ValueError(f"`body_part` must be one of {tuple(BODY_PART_LAYOUTS)}, got {body_part!r}")
    lay = BODY_PART_LAYOUTS[body_part]
    bp = BODY_PART_DEFAULTS[body_part]
    dd = DIFFICULTY_DEFAULTS[difficulty]
    acq_fields: dict[str, Any] = dict(kvp=bp["kvp"], oid_mm=bp["oid_mm"],
                                      scatter_to_primary=round(bp["scatter"] * dd["scatter"], 4),
                                      range_compression=round(min(bp["range_compression"] * dd["range_compression"], 0.8), 4))
    acq_fields.update(dd["acquisition"])
    acq_fields.update(acquisition)
    sid = float(acq_fields.get("sid_mm", 1000.0))
    m = sid / (sid - float(acq_fields["oid_mm"]))
    fh, fw = lay.field_mm[0] * m, lay.field_mm[1] * m  # detector-plane field
    if pitch_mm is None:
        if rows is None and cols is None:
            pitch_mm = 0.15
        else:
            pitch_mm = max(fh / rows if rows else 0.0, fw / cols if cols else 0.0)
            pitch_mm = round(pitch_mm, 5)
    if rows is None:
        rows = int(round(fh / pitch_mm))
    if cols is None:
        cols = int(round(fw / pitch_mm))
    acq = AcquisitionSpec(rows=int(rows), cols=int(cols), pitch_mm=float(pitch_mm), **acq_fields)
    lesions = dataclasses.replace(LesionSpec(), **dd["lesions"])
    if body_part in ("hand", "fingers"):
        # thin digits: keep plaques and clouds finger-sized
        lesions = dataclasses.replace(
            lesions,
            plaque_radius_mm=tuple(min(x, 7.0) for x in lesions.plaque_radius_mm),
            cloud_radius_mm=tuple(min(x, 5.0) for x in lesions.cloud_radius_mm),
            nodule_radius_mm=tuple(min(x, 4.0) for x in lesions.nodule_radius_mm),
        )
    else:
        # periarticular deposits of the larger joints are bigger (nodules up to ~1.5 cm, sheets ~3 cm)
        lesions = dataclasses.replace(
            lesions,
            nodule_radius_mm=(lesions.nodule_radius_mm[0], lesions.nodule_radius_mm[1] * 1.6),
            plaque_radius_mm=(lesions.plaque_radius_mm[0], lesions.plaque_radius_mm[1] * 1.5),
        )
    return PhantomSpec(
        anatomy=AnatomySpec(body_part=body_part, laterality=laterality),
        lesions=lesions,
        acquisition=acq,
        patient=PatientSpec(patient_id=patient_id),
        difficulty=difficulty,
    )
