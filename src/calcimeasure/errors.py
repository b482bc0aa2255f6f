"""Typed errors raised by calcimeasure.

Every error that concerns an input file names the file and gives the reason in
one sentence that a radiologist or a clinical researcher can act on. No raw
pydicom, numpy or codec traceback escapes :func:`calcimeasure.read_image`: the
original exception, when there is one, is kept as ``__cause__`` for developers.

Hierarchy::

    CalcimeasureError
    ├── ImageReadError                 (problems with one input file; has .path and .reason)
    │   ├── ImageNotFoundError         (also a FileNotFoundError)
    │   ├── NotAnImageError            (not DICOM/raster, or a DICOM object without an image)
    │   ├── UnsupportedImageError      (a valid image the toolkit does not measure)
    │   ├── CorruptImageError          (a damaged or inconsistent image file)
    │   └── MissingDecoderError        (a valid compressed image, but no decoder installed)
    └── ParameterError                 (a bad argument value; also a ValueError)
"""

from __future__ import annotations

from os import PathLike

__all__ = [
    "CalcimeasureError",
    "ImageReadError",
    "ImageNotFoundError",
    "NotAnImageError",
    "UnsupportedImageError",
    "CorruptImageError",
    "MissingDecoderError",
    "ParameterError",
]


class CalcimeasureError(Exception):
    """Base class of every error raised on purpose by calcimeasure."""


class ImageReadError(CalcimeasureError):
    """An input file could not be turned into a radiograph.

    Parameters
    ----------
    path : str or path-like
        The file concerned.
    reason : str
        One sentence saying what is wrong and, where possible, what to do.

    Attributes
    ----------
    path : str
        The file concerned, as given.
    reason : str
        The reason, without the file name.
    """

    #: Short machine-readable name of the error kind (used in batch error tables).
    kind = "read_error"

    def __init__(self, path: str | PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep pickling (multiprocessing, dask) working
        return (type(self), (self.path, self.reason))


class ImageNotFoundError(ImageReadError, FileNotFoundError):
    """The path does not exist or is not a regular file."""

    kind = "not_found"


class NotAnImageError(ImageReadError):
    """The file is not an image: not DICOM nor a supported raster format, or a
    DICOM object that holds no image (structured report, RT plan, ...)."""

    kind = "not_an_image"


class UnsupportedImageError(ImageReadError):
    """The file is a valid image that calcimeasure does not measure: multi-frame
    without a frame choice, colour, a cross-sectional modality, too large, ..."""

    kind = "unsupported"


class CorruptImageError(ImageReadError):
    """The file is damaged or internally inconsistent: truncated pixel data,
    missing pixel data, undecodable codestream, blank image, ..."""

    kind = "corrupt"


class MissingDecoderError(ImageReadError):
    """The image uses a compression for which no decoder is installed."""

    kind = "missing_decoder"


class ParameterError(CalcimeasureError, ValueError):
    """An argument has a value outside what the function accepts."""
