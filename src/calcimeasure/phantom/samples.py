"""The committed sample set: a few baseline / follow-up pairs with their ground truth."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .dicom_writer import write_dicom
from .pairs import PairSpec, PhantomPair, render_pair
from .specs import PhantomSpec, PatientSpec

__all__ = ["SampleCase", "SAMPLE_CASES", "make_sample_images"]


@dataclass(frozen=True)
class SampleCase:
    """One sample pair: spec, pair spec, seed and encodings."""

    name: str
    description: str
    spec: PhantomSpec
    pair: PairSpec
    seed: int
    transfer_syntax: str = "jpeg2000"


def _case(name, description, difficulty, body_part, *, rows, cols, pitch_mm, seed, pair, patient, anatomy=None,
          transfer_syntax="jpeg2000", **acq) -> SampleCase:
    spec = PhantomSpec.preset(difficulty, body_part=body_part, rows=rows, cols=cols, pitch_mm=pitch_mm, **acq)
    spec = dataclasses.replace(spec, patient=patient)
    if anatomy:
        spec = dataclasses.replace(spec, anatomy=dataclasses.replace(spec.anatomy, **anatomy))
    return SampleCase(name, description, spec, pair, seed, transfer_syntax)


SAMPLE_CASES: tuple[SampleCase, ...] = (
    _case(
        "case01", "Right hand PA, realistic processing, DX MONOCHROME2 on both films; partial response "
        "(lesions shrink, at least one vanishes); small repositioning.",
        "realistic", "hand", rows=1100, cols=900, pitch_mm=0.22, seed=11,
        pair=PairSpec(response="partial", rotation_deg=4.0, magnification_change=0.02, interval_months=9.0,
                      photometric="same"),
        patient=PatientSpec(patient_id="PHANTOM-0001", sex="F", age_years=52, study_date="20210315",
                            diagnosis="Dermatomyositis calcinosis (synthetic phantom)"),
        transfer_syntax="jpeg2000",
    ),
    _case(
        "case02", "Left elbow AP, hard (low dose, strong edge enhancement, faint clouds, lesions touching bone), "
        "CR MONOCHROME1 on both films; follow-up rotated +8 deg with +6 % magnification; progression with new lesions.",
        "hard", "elbow", rows=1000, cols=820, pitch_mm=0.2, seed=22, modality="CR", photometric="MONOCHROME1",
        bits_stored=12, spacing_header="calibrated", laterality="L",
        pair=PairSpec(response="progression", rotation_deg=8.0, magnification_change=0.06, interval_months=12.0,
                      n_new=2, photometric="same"),
        patient=PatientSpec(patient_id="PHANTOM-0002", sex="F", age_years=47, study_date="20200611",
                            diagnosis="Systemic sclerosis calcinosis (synthetic phantom)"),
        transfer_syntax="rle",
    ),
    _case(
        "case03", "Right knee AP, realistic, DX; baseline MONOCHROME2, follow-up MONOCHROME1; complete response "
        "(every lesion vanished); ImagerPixelSpacing + EstimatedRadiographicMagnificationFactor.",
        "realistic", "knee", rows=1000, cols=880, pitch_mm=0.25, seed=33,
        pair=PairSpec(response="complete", rotation_deg=-5.0, magnification_change=-0.04, interval_months=13.0,
                      photometric="MONOCHROME1"),
        patient=PatientSpec(patient_id="PHANTOM-0003", sex="M", age_years=61, study_date="20190902",
                            diagnosis="Dermatomyositis calcinosis (synthetic phantom)"),
        transfer_syntax="jpeg2000",
    ),
    _case(
        "case04", "Right fingers PA of a child, easy (high dose, no processing), DX MONOCHROME2, 10 bits; "
        "stable disease with 3 % growth of the hand; ImagerPixelSpacing only (detector plane).",
        "easy", "fingers", rows=760, cols=700, pitch_mm=0.16, seed=44, bits_stored=10, spacing_header="imager",
        pair=PairSpec(response="stable", rotation_deg=-3.0, magnification_change=0.0, interval_months=7.0, growth=1.03,
                      photometric="same"),
        patient=PatientSpec(patient_id="PHANTOM-0004", sex="F", age_years=10, study_date="20220120",
                            diagnosis="Juvenile dermatomyositis calcinosis (synthetic phantom)"),
        anatomy={"scale": 0.8},
        transfer_syntax="jpeg2000",
    ),
)


def _case_truth(case: SampleCase, pair: PhantomPair, files: dict[str, str]) -> dict[str, Any]:
    d = pair.to_dict()
    return {
        "description": case.description,
        "files": files,
        "seed": case.seed,
        "transfer_syntax": case.transfer_syntax,
        "body_part": case.spec.anatomy.body_part,
        "difficulty": case.spec.difficulty,
        "response": d["response"],
        "total_change_pct": d["total_change_pct"],
        "baseline_total_mm2": d["baseline_total_mm2"],
        "followup_total_mm2": d["followup_total_mm2"],
        "interval_days": d["interval_days"],
        "followup_to_baseline": d["followup_to_baseline"],
        "bands": d["bands"],
        "changes": d["changes"],
        "pair_spec": d["pair_spec"],
        "baseline": d["baseline"],
        "followup": d["followup"],
        "spec": case.spec.to_dict(),
    }


def make_sample_images(out_dir: str | os.PathLike, *, cases: tuple[SampleCase, ...] = SAMPLE_CASES) -> dict[str, Any]:
    """Render the sample pairs into `out_dir` and write ``ground_truth.json``.

    Returns the ground-truth dictionary that was written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth: dict[str, Any] = {
        "generator": "calcimeasure.phantom",
        "conventions": {
            "pixel_coordinates": "(row, col), pixel centres at integer indices",
            "areas": "area_mm2 = exact silhouette area in the patient plane; area_detector_mm2 = area_mm2 * m^2",
            "followup_to_baseline": "3x3 homogeneous matrix, baseline (row, col, 1) = M @ follow-up (row, col, 1)",
            "pixels": "radiodense-high values a reader returns: rescale applied, MONOCHROME1 inverted",
            "labels": "a pixel belongs to a lesion if >= 50 % of it is covered by the silhouette",
        },
        "cases": {},
    }
    for case in cases:
        pair = render_pair(case.spec, seed=case.seed, pair=case.pair)
        files = {}
        for role, img in (("baseline", pair.baseline), ("followup", pair.followup)):
            fname = f"{case.name}_{role}.dcm"
            write_dicom(img, out / fname, transfer_syntax=case.transfer_syntax)
            files[role] = fname
        truth["cases"][case.name] = _case_truth(case, pair, files)
    (out / "ground_truth.json").write_text(json.dumps(truth, indent=1, sort_keys=False) + "\n")
    return truth
