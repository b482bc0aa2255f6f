"""calcimeasure: measure ectopic calcifications on plain radiographs.

Read a radiograph with calibrated spacing (:func:`read_image`), segment and
measure radiodense lesions, compare a baseline with a follow-up film. The core
is pure Python + numpy and never imports Qt or napari.
"""

from __future__ import annotations

from . import errors
from .compare import Comparison, ComparisonParams, compare
from .io import read_image
from .measure import Measurement, measure
from .params import SegmentationParams
from .radiograph import Radiograph, RadiographMeta, Spacing, SpacingPlane, SpacingSource
from .register import Registration, RegistrationParams, register
from .segment import Segmentation, segment

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "errors",
    "read_image",
    "segment",
    "Segmentation",
    "SegmentationParams",
    "measure",
    "Measurement",
    "register",
    "compare",
    "Comparison",
    "ComparisonParams",
    "Registration",
    "RegistrationParams",
    "Radiograph",
    "RadiographMeta",
    "Spacing",
    "SpacingPlane",
    "SpacingSource",
]
