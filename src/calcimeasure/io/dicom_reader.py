"""Read a DICOM radiograph into a :class:`~calcimeasure.radiograph.Radiograph`.

Pixel pipeline (PS3.3 C.11 grayscale pipeline, up to the VOI stage only):

1. decode the stored values (pydicom 3 with pylibjpeg / GDCM plugins);
2. apply the Modality LUT: (0028,3000) *Modality LUT Sequence* if present, else
   (0028,1053) *Rescale Slope* and (0028,1052) *Rescale Intercept*;
3. make radiodense high. The image is *displayed* inverted when (0028,0004)
   *Photometric Interpretation* is MONOCHROME1 **or** (2050,0020) *Presentation
   LUT Shape* is INVERSE. In DX the INVERSE shape is how a MONOCHROME1 image is
   presented (PS3.3 C.8.11.6), so MONOCHROME1 with INVERSE is inverted once,
   not twice. Projection radiographs are displayed with radiodense structures
   white; fluoroscopy and angiography (Modality XA, RF) by convention display
   them dark (the image-intensifier "positive"), so for XA/RF the rule is
   reversed. ``polarity=`` overrides the rule for files that break it.
   Inversion maps the encodable modality value range [lo, hi] onto itself
   (v → lo + hi − v), so values stay comparable across files of one kind;
4. the VOI window is **not** applied; its values are kept in the metadata.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import apply_modality_lut, pixel_array
from pydicom.pixels import get_decoder

from ..errors import (
    CorruptImageError,
    MissingDecoderError,
    NotAnImageError,
    ParameterError,
    UnsupportedImageError,
)
from ..radiograph import Radiograph, RadiographMeta, Spacing
from ..spacing import resolve_dicom_spacing
from .dicom_meta import parse_dicom_date, patient_age_years, patient_key
from .jpeg_repair import guess_transfer_syntax, repair_sequential_jpeg_sos
from .limits import check_pixel_count

__all__ = ["read_dicom", "PROJECTION_MODALITIES"]

#: Modalities displayed with radiodense structures dark (fluoroscopic convention).
DENSE_DARK_MODALITIES = frozenset({"XA", "RF"})

#: Values of ``polarity=``.
POLARITIES = ("auto", "dense_high", "dense_low")

#: Modalities of projection radiography (and secondary captures of film) that
#: calcimeasure measures. Others (CT, MR, US, NM, PT, photographs, ...) are
#: rejected unless ``require_projection=False``. An absent Modality is accepted.
PROJECTION_MODALITIES = frozenset(
    {"CR", "DX", "MG", "RG", "XA", "RF", "IO", "PX", "DF", "DR", "OT", "RTIMAGE"}
)

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _describe_sop(ds: Dataset) -> str:
    sop = ds.get("SOPClassUID")
    if sop:
        name = uid.UID(str(sop)).name
        return name if name != str(sop) else f"SOP class {sop}"
    modality = ds.get("Modality")
    return f"{modality} object" if modality else "object of unknown type"


def _is_image_sop(ds: Dataset) -> bool:
    sop = ds.get("SOPClassUID")
    if sop and "Image" in uid.UID(str(sop)).name:
        return True
    return "Rows" in ds and "Columns" in ds


def _tuple_of_floats(value: Any) -> tuple[float, ...] | None:
    if value is None or value == "":
        return None
    values = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int | None:
    value = ds.get(keyword, default)
    try:
        return int(value) if value is not None and value != "" else default
    except (TypeError, ValueError):
        return default


def _fix_transfer_syntax(ds: Dataset, path: Path, notes: list[str]) -> None:
    """Give datasets without (0002,0010) the transfer syntax they were parsed with,
    and repair a native transfer syntax that contradicts encapsulated pixel data."""
    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    ts = ds.file_meta.get("TransferSyntaxUID")
    if not ts:
        implicit, little = ds.original_encoding
        if implicit:
            ts = uid.ImplicitVRLittleEndian
        else:
            ts = uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian
        ds.file_meta.TransferSyntaxUID = ts
        notes.append(f"no Transfer Syntax UID in the file; pixel data read as {uid.UID(ts).name}")
    ts = uid.UID(str(ts))
    elem = ds["PixelData"] if "PixelData" in ds else None
    if elem is not None and not ts.is_compressed and elem.is_undefined_length:
        # Encapsulated pixel data under a native transfer syntax: trust the codestream.
        try:
            first = next(generate_frames(ds.PixelData, number_of_frames=1))
        except Exception as exc:  # noqa: BLE001 - any parse failure is corruption
            raise CorruptImageError(path, "the encapsulated pixel data cannot be parsed") from exc
        guessed = guess_transfer_syntax(first)
        if guessed is None:
            raise CorruptImageError(
                path,
                f"the header says {ts.name} but the pixel data is compressed in an "
                "unrecognised format",
            )
        ds.file_meta.TransferSyntaxUID = guessed
        notes.append(
            f"the header says {ts.name} but the pixel data is {guessed.name}; decoded as the latter"
        )


def _check_geometry(ds: Dataset, path: Path, frame: int | None) -> tuple[int, int, int]:
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if not rows or not cols or rows < 1 or cols < 1:
        raise CorruptImageError(
            path, "the file has pixel data but no valid image size (Rows/Columns missing or zero)"
        )
    if _int(ds, "BitsAllocated") is None:
        raise CorruptImageError(path, "the file has pixel data but no Bits Allocated (0028,0100)")
    check_pixel_count(path, rows, cols)
    frames = _int(ds, "NumberOfFrames", 1) or 1
    if frames > 1 and frame is None:
        raise UnsupportedImageError(
            path,
            f"this is a multi-frame image ({frames} frames); calcimeasure measures single "
            "radiographs: pass frame=N (0-based) to choose one frame",
        )
    if frame is not None and not 0 <= frame < frames:
        raise ParameterError(f"`frame` must be in [0, {frames - 1}] for {path}, got {frame}")
    return rows, cols, frames


def _check_native_length(ds: Dataset, path: Path, rows: int, cols: int, frames: int) -> None:
    ts = uid.UID(str(ds.file_meta.TransferSyntaxUID))
    if ts.is_compressed or "PixelData" not in ds:
        return
    bits = _int(ds, "BitsAllocated", 16) or 16
    samples = _int(ds, "SamplesPerPixel", 1) or 1
    expected_bits = rows * cols * frames * samples * bits
    expected = (expected_bits + 7) // 8
    actual = len(ds.PixelData)
    if actual < expected:
        raise CorruptImageError(
            path,
            f"the pixel data is truncated: {actual:,} bytes present, {expected:,} expected for "
            f"{frames} frame(s) of {rows} x {cols} at {bits} bits",
        )


def _decode(ds: Dataset, path: Path, frame: int | None, frames: int, notes: list[str]) -> np.ndarray:
    ts = uid.UID(str(ds.file_meta.TransferSyntaxUID))
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise UnsupportedImageError(
            path, f"its transfer syntax {ts} ({ts.name}) is not supported by any DICOM decoder"
        ) from exc
    if not decoder.is_available:
        missing = "; ".join(str(m) for m in getattr(decoder, "missing_dependencies", []) or [])
        raise MissingDecoderError(
            path,
            f"it is compressed as {ts.name} and no decoder for it is installed"
            + (f" (install one of: {missing})" if missing else ""),
        )
    index = frame if frames > 1 else None
    try:
        return pixel_array(ds, index=index)
    except Exception as first_error:  # noqa: BLE001 - codec errors come in many types
        if ts in (uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit):
            repaired = _try_sos_repair(ds, frames)
            if repaired is not None:
                try:
                    arr = pixel_array(repaired, index=index)
                except Exception:  # noqa: BLE001
                    pass
                else:
                    notes.append(
                        "JPEG Start-Of-Scan marker had an invalid spectral selection (Se != 63); "
                        "repaired before decoding (known defect of some old encoders)"
                    )
                    return arr
        reason = str(first_error).strip().splitlines()[0] if str(first_error).strip() else type(first_error).__name__
        if "less than expected" in reason or "truncat" in reason.lower():
            raise CorruptImageError(path, f"the pixel data is truncated ({reason})") from first_error
        raise CorruptImageError(
            path, f"its {ts.name} pixel data could not be decoded: {reason[:200]}"
        ) from first_error


def _try_sos_repair(ds: Dataset, frames: int) -> Dataset | None:
    try:
        fragments = list(generate_frames(ds.PixelData, number_of_frames=frames))
    except Exception:  # noqa: BLE001
        return None
    fixed = [repair_sequential_jpeg_sos(f) for f in fragments]
    if all(f is None for f in fixed):
        return None
    copy = pydicom.dataset.Dataset(ds)
    copy.file_meta = ds.file_meta
    copy.PixelData = encapsulate([f if f is not None else o for f, o in zip(fixed, fragments)])
    copy["PixelData"].is_undefined_length = True
    return copy


def _to_grey(arr: np.ndarray, ds: Dataset, path: Path, notes: list[str]) -> np.ndarray:
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[-1] == 3:
        spread = float(np.max(np.ptp(arr.astype(np.float32), axis=-1)))
        full = float(np.ptp(arr)) or 1.0
        if spread <= 0.02 * full:
            notes.append(f"{photometric} image with equal channels read as greyscale")
            return arr.astype(np.float32).mean(axis=-1)
        raise UnsupportedImageError(
            path,
            f"it is a colour image ({photometric}); radiographs must be greyscale",
        )
    raise UnsupportedImageError(path, f"its pixel array has an unexpected shape {arr.shape}")


def _value_range(ds: Dataset) -> tuple[float, float]:
    """The encodable range of modality values (after the Modality LUT)."""
    if "ModalityLUTSequence" in ds and len(ds.ModalityLUTSequence):
        # The LUT's own output range over every storable input value.
        bits = _int(ds, "BitsStored") or _int(ds, "BitsAllocated", 16) or 16
        signed = _int(ds, "PixelRepresentation", 0) == 1
        inputs = np.arange(-(2 ** (bits - 1)) if signed else 0, 2 ** (bits - 1) if signed else 2**bits)
        inputs = inputs.astype(np.int32 if signed else np.uint32)
        out = apply_modality_lut(inputs, ds)
        return float(np.min(out)), float(np.max(out))
    bits = _int(ds, "BitsStored") or _int(ds, "BitsAllocated", 16) or 16
    if _int(ds, "PixelRepresentation", 0) == 1:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2**bits - 1
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    a, b = lo * slope + intercept, hi * slope + intercept
    return (min(a, b), max(a, b))


def _modality_values(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    if "ModalityLUTSequence" in ds and len(ds.ModalityLUTSequence):
        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    out = arr.astype(np.float32, copy=False)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1.0 or intercept != 0.0:
        out = out * np.float32(slope) + np.float32(intercept)
    return out


def read_dicom(
    path: Path,
    data: bytes,
    sha256: str,
    *,
    spacing: Spacing | None = None,
    frame: int | None = None,
    require_projection: bool = True,
    polarity: str = "auto",
    keep_ids: bool = False,
    salt: str | None = None,
) -> Radiograph:
    """Read DICOM bytes (already loaded from ``path``) into a Radiograph.

    See :func:`calcimeasure.read_image` for the parameters and the errors.
    """
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types here
            raise CorruptImageError(path, f"the DICOM data set cannot be parsed ({exc})") from exc

        if not any(k in ds for k in _PIXEL_KEYWORDS):
            if _is_image_sop(ds):
                size = (
                    f"{ds.get('Rows')} x {ds.get('Columns')} "
                    if "Rows" in ds and "Columns" in ds
                    else ""
                )
                raise CorruptImageError(
                    path,
                    f"the header describes a {size}{ds.get('Modality', '') or ''} image but the "
                    "file contains no pixel data".replace("  ", " "),
                )
            raise NotAnImageError(
                path, f"it is a DICOM {_describe_sop(ds)}, which holds no image"
            )
        if "PixelData" not in ds:
            raise UnsupportedImageError(
                path, "it holds floating-point pixel data, which radiographs never use"
            )

        modality = _str_or_none(ds.get("Modality"))
        if require_projection and modality and modality.upper() not in PROJECTION_MODALITIES:
            raise UnsupportedImageError(
                path,
                f"it is a {modality} image ({_describe_sop(ds)}), not a projection radiograph; "
                "pass require_projection=False to read it anyway",
            )
        _fix_transfer_syntax(ds, path, notes)
        rows, cols, frames = _check_geometry(ds, path, frame)
        photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
        if photometric == "PALETTE COLOR":
            raise UnsupportedImageError(path, "it is a palette-colour image; radiographs are greyscale")
        if not photometric:
            notes.append("no Photometric Interpretation; assumed MONOCHROME2")
            photometric = "MONOCHROME2"
        _check_native_length(ds, path, rows, cols, frames)
        stored = _decode(ds, path, frame, frames, notes)
        return _build(ds, path, sha256, stored, rows, cols, frames, frame, photometric, modality,
                      notes, spacing=spacing, polarity=polarity, keep_ids=keep_ids, salt=salt)


def _build(
    ds: Dataset,
    path: Path,
    sha256: str,
    stored: np.ndarray,
    rows: int,
    cols: int,
    frames: int,
    frame: int | None,
    photometric: str,
    modality: str | None,
    notes: list[str],
    *,
    spacing: Spacing | None,
    polarity: str,
    keep_ids: bool,
    salt: str | None,
) -> Radiograph:
    stored = _to_grey(stored, ds, path, notes)
    if stored.shape != (rows, cols):
        raise CorruptImageError(
            path, f"decoded image is {stored.shape}, but the header says {rows} x {cols}"
        )
    values = _modality_values(stored, ds)
    lo, hi = _value_range(ds)
    plut = _str_or_none(ds.get("PresentationLUTShape"))
    display_inverted = photometric == "MONOCHROME1" or (plut or "").upper() == "INVERSE"
    if polarity == "dense_high":
        inverted = False
    elif polarity == "dense_low":
        inverted = True
    else:
        dense_dark = (modality or "").upper() in DENSE_DARK_MODALITIES
        inverted = display_inverted != dense_dark
        if dense_dark:
            notes.append(
                f"{modality}: fluoroscopic display convention (radio-opaque structures dark); "
                + ("inverted so that radiodense is high" if inverted else "MONOCHROME1 already dense-high")
            )
    if inverted:
        values = np.float32(lo + hi) - values
    vmin, vmax = float(values.min()), float(values.max())
    if vmin == vmax:
        raise CorruptImageError(
            path, f"the decoded image is blank: every pixel has the value {vmin:g}"
        )
    pixels = np.ascontiguousarray(values, dtype=np.float32)

    resolved = spacing if spacing is not None else resolve_dicom_spacing(ds)
    study_date = parse_dicom_date(ds.get("StudyDate")) or parse_dicom_date(ds.get("ContentDate"))
    pid = _str_or_none(ds.get("PatientID"))
    burned = _str_or_none(ds.get("BurnedInAnnotation"))
    laterality = _str_or_none(ds.get("ImageLaterality")) or _str_or_none(ds.get("Laterality"))
    image_type = ds.get("ImageType")
    meta = RadiographMeta(
        source_path=str(path),
        sha256=sha256,
        file_format="dicom",
        modality=modality,
        sop_class_uid=_str_or_none(ds.get("SOPClassUID")),
        sop_instance_uid=_str_or_none(ds.get("SOPInstanceUID")),
        study_instance_uid=_str_or_none(ds.get("StudyInstanceUID")),
        series_instance_uid=_str_or_none(ds.get("SeriesInstanceUID")),
        study_date=study_date,
        body_part=_str_or_none(ds.get("BodyPartExamined")),
        laterality=laterality,
        view_position=_str_or_none(ds.get("ViewPosition")),
        patient_sex=_str_or_none(ds.get("PatientSex")),
        patient_age_years=patient_age_years(
            ds.get("PatientAge"), parse_dicom_date(ds.get("PatientBirthDate")), study_date
        ),
        patient_key=patient_key(pid, _str_or_none(ds.get("IssuerOfPatientID")), salt=salt),
        patient_id=pid if keep_ids else None,
        window_center=_tuple_of_floats(ds.get("WindowCenter")),
        window_width=_tuple_of_floats(ds.get("WindowWidth")),
        voi_lut_function=_str_or_none(ds.get("VOILUTFunction")),
        burned_in_annotation=None if burned is None else burned.upper() == "YES",
        photometric_interpretation=photometric,
        presentation_lut_shape=plut,
        presentation_intent=_str_or_none(ds.get("PresentationIntentType")),
        inverted=inverted,
        bits_stored=_int(ds, "BitsStored"),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        manufacturer=_str_or_none(ds.get("Manufacturer")),
        image_type=tuple(str(v) for v in image_type) if image_type else None,
        frame_index=frame if frames > 1 else None,
        number_of_frames=frames,
        value_range=(lo, hi),
        warnings=tuple(notes),
    )
    return Radiograph(pixels=pixels, spacing=resolved, meta=meta)
