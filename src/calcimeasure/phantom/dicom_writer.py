"""DICOM encoding of phantom films (DX For Presentation or CR), with deterministic UIDs."""

from __future__ import annotations

import copy
import datetime as _dt
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    JPEG2000Lossless,
    RLELossless,
    ExplicitVRLittleEndian,
    UID,
    generate_uid,
    PYDICOM_IMPLEMENTATION_UID,
)

from .specs import AcquisitionSpec

if TYPE_CHECKING:  # pragma: no cover
    from .render import PhantomImage

__all__ = ["StudyInfo", "build_dataset", "write_dicom", "TRANSFER_SYNTAXES", "GENERATOR_VERSION"]

GENERATOR_VERSION = "calcimeasure.phantom 1"

DX_FOR_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.1")
CR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1")

#: Short names accepted by :func:`write_dicom`.
TRANSFER_SYNTAXES = {
    "rle": RLELossless,
    "jpeg2000": JPEG2000Lossless,
    "j2k": JPEG2000Lossless,
    "explicit": ExplicitVRLittleEndian,
    "uncompressed": ExplicitVRLittleEndian,
}


@dataclass(frozen=True)
class StudyInfo:
    """Resolved identifiers of one film (synthetic).

    Attributes
    ----------
    patient_id, patient_name, sex : str
    birth_date : str
        ``YYYYMMDD``.
    study_date, study_time : str
        ``YYYYMMDD`` / ``HHMMSS``.
    accession : str
    study_description : str
    series_number, instance_number : int
    uid_seed : str
        Entropy for the deterministic UIDs (patient, study, role, seed).
    """

    patient_id: str
    patient_name: str
    sex: str
    birth_date: str
    study_date: str
    study_time: str
    accession: str
    study_description: str
    series_number: int
    instance_number: int
    uid_seed: str

    @property
    def age(self) -> str:
        b = _dt.datetime.strptime(self.birth_date, "%Y%m%d").date()
        s = _dt.datetime.strptime(self.study_date, "%Y%m%d").date()
        years = s.year - b.year - ((s.month, s.day) < (b.month, b.day))
        return f"{years:03d}Y"


def _ds(x: float) -> str:
    """Format a decimal string (VR DS, at most 16 characters)."""
    for digits in (10, 9, 8, 7, 6):
        s = f"{x:.{digits}g}"
        if len(s) <= 16:
            return s
    return f"{x:.6g}"


def header_spacing(acq: AcquisitionSpec) -> dict:
    """Spacing attributes to write and the spacing a PS3.3 10.7.1 reader derives from them."""
    m = acq.magnification
    p = acq.pitch_mm
    out: dict = {"ImagerPixelSpacing": [_ds(p), _ds(p)]}
    if acq.spacing_header in ("ermf", "calibrated"):
        out["EstimatedRadiographicMagnificationFactor"] = _ds(m)
    if acq.spacing_header == "calibrated":
        ps = _ds(p / m)
        out["PixelSpacing"] = [ps, ps]
        out["PixelSpacingCalibrationType"] = "GEOMETRY"
        out["PixelSpacingCalibrationDescription"] = "Phantom: detector pitch / true geometric magnification"
        s = float(ps)
        source = "PixelSpacing (PixelSpacingCalibrationType GEOMETRY)"
    elif acq.spacing_header == "ermf":
        s = float(out["ImagerPixelSpacing"][0]) / float(out["EstimatedRadiographicMagnificationFactor"])
        source = "ImagerPixelSpacing / EstimatedRadiographicMagnificationFactor"
    else:
        s = float(out["ImagerPixelSpacing"][0])
        source = "ImagerPixelSpacing (detector plane)"
    return {"tags": out, "spacing_mm": (s, s), "source": source}


def _uid(info: StudyInfo, *parts: str) -> UID:
    return generate_uid(entropy_srcs=[GENERATOR_VERSION, info.uid_seed, *parts])


def build_dataset(
    stored: np.ndarray,
    *,
    acq: AcquisitionSpec,
    info: StudyInfo,
    body_part_examined: str,
    view_position: str,
    laterality: str,
    window: tuple[float, float],
    exposure_mas: float,
    comments: str,
) -> Dataset:
    """Build a DX For Presentation (or CR) dataset holding `stored` natively (Explicit VR LE).

    Parameters
    ----------
    stored : ndarray of uint16
        Pixel values as written, already in the photometric interpretation of `acq`.
    window : (float, float)
        (0028,1050) *Window Center* / (0028,1051) *Window Width* in modality
        (rescaled) units, as the VOI LUT stage expects.
    """
    if stored.dtype != np.uint16 or stored.ndim != 2:
        raise ValueError(f"`stored` must be a 2-D uint16 array, got {stored.dtype} {stored.shape}")
    sop_class = DX_FOR_PRESENTATION if acq.modality == "DX" else CR_IMAGE_STORAGE
    study_uid = _uid(info, "study")
    series_uid = _uid(info, "series", str(info.series_number))
    sop_uid = _uid(info, "instance", str(info.series_number), str(info.instance_number))

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "CALCIPHANTOM1"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = info.study_date
    ds.SeriesDate = info.study_date
    ds.AcquisitionDate = info.study_date
    ds.ContentDate = info.study_date
    ds.StudyTime = info.study_time
    ds.SeriesTime = info.study_time
    ds.AcquisitionTime = info.study_time
    ds.ContentTime = info.study_time
    ds.AccessionNumber = info.accession
    ds.Modality = acq.modality
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "calcimeasure"
    ds.InstitutionName = "Synthetic phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = info.study_description
    ds.SeriesDescription = f"{body_part_examined} {view_position} (phantom)"
    ds.ManufacturerModelName = "calcimeasure.phantom"
    ds.SoftwareVersions = GENERATOR_VERSION
    ds.DeviceSerialNumber = "PHANTOM"
    ds.PatientName = info.patient_name
    ds.PatientID = info.patient_id
    ds.PatientBirthDate = info.birth_date
    ds.PatientSex = info.sex
    ds.PatientAge = info.age
    ds.PatientIdentityRemoved = "NO"
    ds.BodyPartExamined = body_part_examined
    ds.KVP = _ds(acq.kvp)
    ds.DistanceSourceToDetector = _ds(acq.sid_mm)
    ds.DistanceSourceToPatient = _ds(acq.sid_mm - acq.oid_mm)
    ds.Exposure = int(round(exposure_mas))
    ds.ExposureInuAs = int(round(exposure_mas * 1000))
    ds.FocalSpots = _ds(acq.focal_spot_mm)
    ds.Grid = "NONE"
    ds.ViewPosition = view_position
    ds.PositionerType = "NONE" if acq.modality == "CR" else "COLUMN"
    if acq.modality == "DX":
        ds.DetectorType = "SCINTILLATOR"
        ds.DetectorConfiguration = "AREA"
        ds.DetectorElementSpacing = [_ds(acq.pitch_mm), _ds(acq.pitch_mm)]
        ds.ImageLaterality = laterality
    else:
        ds.PlateType = "PHANTOM"
    ds.Laterality = laterality
    ds.PatientOrientation = ["", ""]
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = info.accession[-8:]
    ds.SeriesNumber = info.series_number
    ds.InstanceNumber = info.instance_number
    ds.ImageComments = comments
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = acq.photometric
    ds.Rows, ds.Columns = (int(x) for x in stored.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = acq.bits_stored
    ds.HighBit = acq.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LOG"
    # +1: lower stored values = less X-ray intensity (dense low, MONOCHROME1); -1 otherwise.
    ds.PixelIntensityRelationshipSign = 1 if acq.photometric == "MONOCHROME1" else -1
    ds.RescaleIntercept = _ds(acq.rescale_intercept)
    ds.RescaleSlope = _ds(acq.rescale_slope)
    ds.RescaleType = "US"
    ds.WindowCenter = _ds(window[0])
    ds.WindowWidth = _ds(window[1])
    ds.VOILUTFunction = "LINEAR"
    ds.PresentationLUTShape = "INVERSE" if acq.photometric == "MONOCHROME1" else "IDENTITY"
    for key, value in header_spacing(acq)["tags"].items():
        setattr(ds, key, value)
    ds.CollimatorShape = "RECTANGULAR"
    ds.PixelData = np.ascontiguousarray(stored).astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def write_dicom(image: "PhantomImage | Dataset", path: str | os.PathLike, *, transfer_syntax: str = "rle") -> str:
    """Write a phantom film as a DICOM Part 10 file.

    Parameters
    ----------
    image : PhantomImage or pydicom.Dataset
        The film (its ``dataset`` is copied, never modified).
    path : str or path-like
    transfer_syntax : str
        "rle" (RLE Lossless, default), "jpeg2000" (JPEG 2000 Lossless, smallest,
        needs pylibjpeg-openjpeg), "explicit" (uncompressed), or a transfer syntax UID.

    Returns
    -------
    str
        The path written.
    """
    ds = image if isinstance(image, Dataset) else image.dataset
    ds = copy.deepcopy(ds)
    uid = TRANSFER_SYNTAXES.get(str(transfer_syntax).lower(), None) or UID(str(transfer_syntax))
    if not uid.is_transfer_syntax:
        raise ValueError(
            f"`transfer_syntax` must be one of {sorted(TRANSFER_SYNTAXES)} or a transfer syntax UID, got {transfer_syntax!r}"
        )
    if uid != ExplicitVRLittleEndian:
        ds.compress(uid, generate_instance_uid=False)  # keep the deterministic UID
    ds.save_as(os.fspath(path), enforce_file_format=True)
    return os.fspath(path)
