"""Input: one entry point, :func:`read_image`, for DICOM and raster radiographs."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from os import PathLike, fspath
from pathlib import Path

from ..errors import (
    CalcimeasureError,
    CorruptImageError,
    ImageNotFoundError,
    ImageReadError,
    NotAnImageError,
    ParameterError,
    UnsupportedImageError,
)
from ..radiograph import Radiograph
from ..spacing import user_spacing
from .limits import MAX_FILE_BYTES
from .sniff import describe_unknown, sniff_format

__all__ = ["read_image", "SUPPORTED_FORMATS"]

#: File formats read by :func:`read_image` (recognised by content).
SUPPORTED_FORMATS = ("dicom", "png", "tiff", "jpeg")


def read_image(
    path: str | PathLike[str],
    *,
    spacing_mm: float | Sequence[float] | None = None,
    frame: int | None = None,
    require_projection: bool = True,
    polarity: str = "auto",
    keep_ids: bool = False,
    salt: str | None = None,
) -> Radiograph:
    """Read a radiograph: pixels (radiodense high), calibrated spacing, metadata.

    The one entry to pixels in calcimeasure. The format is recognised by the
    file's content, not its name: DICOM (Part 10, or ACR-NEMA style without
    preamble; native or compressed — JPEG baseline/extended/lossless, JPEG-LS,
    JPEG 2000, RLE, deflate), PNG, TIFF (8/16-bit, float) and JPEG.

    Parameters
    ----------
    path : str or path-like
        The file to read. It is never modified.
    spacing_mm : float or (float, float), optional
        Pixel spacing in mm, (row, column) or one value for square pixels. It
        overrides whatever the file says and is recorded with
        ``spacing_source == "user"``.
    frame : int, optional
        0-based frame to read from a multi-frame DICOM or multi-page TIFF.
        Without it such files raise :class:`UnsupportedImageError`.
    require_projection : bool, default True
        Reject DICOM images of non-projection modalities (CT, MR, US, ...).
    polarity : {"auto", "dense_high", "dense_low"}, default "auto"
        How stored values relate to density. ``"auto"`` follows the file:
        DICOM Photometric Interpretation / Presentation LUT Shape (and the
        fluoroscopic convention for XA/RF), rasters as displayed (white =
        dense). ``"dense_high"`` / ``"dense_low"`` override it for files that
        are mislabelled (after the modality LUT, dense is high / low).
    keep_ids : bool, default False
        Put the raw Patient ID into ``meta.patient_id`` (it is otherwise left
        out; ``meta.patient_key`` is always a salted hash).
    salt : str, optional
        Secret salt for ``meta.patient_key`` (default: the
        ``CALCIMEASURE_PATIENT_SALT`` environment variable).

    Returns
    -------
    Radiograph
        ``pixels`` (float32, (rows, columns), radiodense high, modality LUT
        applied, no VOI window), ``spacing_mm`` ((row, col) mm or None),
        ``spacing_source``, ``meta``.

    Raises
    ------
    ImageNotFoundError
        The path does not exist or is not a file.
    NotAnImageError
        Not DICOM / PNG / TIFF / JPEG, or a DICOM object without an image.
    UnsupportedImageError
        Multi-frame without ``frame``, colour, non-projection modality, larger
        than 200 megapixels, unsupported transfer syntax.
    CorruptImageError
        Truncated or missing pixel data, undecodable codestream, blank image.
    MissingDecoderError
        Compressed with a codec for which no decoder is installed.
    ParameterError
        An argument is invalid (e.g. ``spacing_mm`` not positive).

    Notes
    -----
    Spacing rules (DICOM PS3.3 §10.7.1) are documented in
    :func:`calcimeasure.spacing.resolve_dicom_spacing`; ``docs/reading.md``
    lists every decision of the reader.

    Examples
    --------
    >>> from calcimeasure import read_image
    >>> rg = read_image("sample_images/case01_baseline.dcm")  # doctest: +SKIP
    >>> rg.spacing_mm, rg.spacing_source.value  # doctest: +SKIP
    ((0.1, 0.1), 'imager_spacing_magnification_corrected')
    """
    if polarity not in ("auto", "dense_high", "dense_low"):
        raise ParameterError(
            f"`polarity` must be 'auto', 'dense_high' or 'dense_low', got {polarity!r}"
        )
    override = user_spacing(spacing_mm) if spacing_mm is not None else None
    p = Path(fspath(path))
    try:
        if not p.exists():
            raise ImageNotFoundError(p, "no such file")
        if not p.is_file():
            raise ImageNotFoundError(p, "this is a folder or a special file, not an image file")
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise UnsupportedImageError(
                p, f"the file is {size / 1024**3:.1f} GiB, above the {MAX_FILE_BYTES / 1024**3:.0f} GiB limit"
            )
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise ImageReadError(p, f"the file cannot be read ({exc.strerror or exc})") from exc
        sha256 = hashlib.sha256(data).hexdigest()
        fmt = sniff_format(data[:132])
        if fmt is None:
            raise NotAnImageError(p, describe_unknown(data[:512]))
        if fmt == "dicom":
            from .dicom_reader import read_dicom

            return read_dicom(
                p,
                data,
                sha256,
                spacing=override,
                frame=frame,
                require_projection=require_projection,
                polarity=polarity,
                keep_ids=keep_ids,
                salt=salt,
            )
        from .raster_reader import read_raster

        return read_raster(p, data, sha256, fmt, spacing=override, frame=frame, polarity=polarity)
    except CalcimeasureError:
        raise
    except MemoryError as exc:
        raise UnsupportedImageError(p, "not enough memory to decode this image") from exc
    except Exception as exc:  # noqa: BLE001 - last line of defence: no raw traceback escapes
        raise CorruptImageError(p, f"unexpected failure while reading ({type(exc).__name__}: {exc})") from exc
