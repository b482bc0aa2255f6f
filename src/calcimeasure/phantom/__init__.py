"""Deterministic, physics-based phantom radiographs of limbs with calcinosis.

Quick start::

    from calcimeasure.phantom import PhantomSpec, render_image, render_pair, write_dicom

    spec = PhantomSpec.preset("realistic", body_part="hand")
    img = render_image(spec, seed=1)          # PhantomImage: pixels, labels, truth, dataset
    write_dicom(img, "hand.dcm")              # RLE Lossless by default
    pair = render_pair(spec, seed=1)          # baseline + follow-up with known change

See ``docs/phantom.md`` for the model and the content of the truth.
"""

from .acquisition import tone_curve
from .anatomy import BODY_PART_LAYOUTS
from .dicom_writer import TRANSFER_SYNTAXES, header_spacing, write_dicom
from .lesions import LESION_KINDS, Lesion
from .materials import attenuation_table_per_mm, calcification_excess_per_mm, effective_energy_kev
from .render import LesionTruth, Patient, PhantomImage, build_patient, render_image, render_patient
from .specs import (
    BODY_PARTS,
    DIFFICULTIES,
    AcquisitionSpec,
    AnatomySpec,
    LesionSpec,
    PatientSpec,
    PhantomSpec,
)
from .presets import preset_spec
from .insert import InsertedLesionTruth, insert_lesions
from .samples import SAMPLE_CASES, make_sample_images
from .pairs import CHANGE_KINDS, RESPONSES, LesionChange, PairSpec, PhantomPair, ResponseBands, render_pair

__all__ = [
    "CHANGE_KINDS",
    "InsertedLesionTruth",
    "SAMPLE_CASES",
    "insert_lesions",
    "make_sample_images",
    "RESPONSES",
    "LesionChange",
    "PairSpec",
    "PhantomPair",
    "ResponseBands",
    "render_pair",
    "AcquisitionSpec",
    "AnatomySpec",
    "BODY_PARTS",
    "BODY_PART_LAYOUTS",
    "DIFFICULTIES",
    "LESION_KINDS",
    "Lesion",
    "LesionSpec",
    "LesionTruth",
    "Patient",
    "PatientSpec",
    "PhantomImage",
    "PhantomSpec",
    "TRANSFER_SYNTAXES",
    "attenuation_table_per_mm",
    "build_patient",
    "calcification_excess_per_mm",
    "effective_energy_kev",
    "header_spacing",
    "preset_spec",
    "render_image",
    "render_patient",
    "tone_curve",
    "write_dicom",
]
