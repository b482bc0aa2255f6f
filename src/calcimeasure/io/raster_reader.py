"""Read scanned films and exported images (PNG, TIFF, JPEG) into a Radiograph.

Raster images are taken **as displayed**: white is dense (a film viewed on a
light box, a radiograph exported from a viewer). Pass ``polarity="dense_low"``
to :func:`calcimeasure.read_image` for an image stored as a negative. Colour
images are converted to grey with ITU-R BT.601 luma weights (a warning says
so when the channels differ). Spacing comes from the user, from TIFF
resolution tags, or is unknown: PNG and JPEG density fields are not trusted,
since image software fills them with screen defaults.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import CorruptImageError, ParameterError, UnsupportedImageError
from ..radiograph import Radiograph, RadiographMeta, Spacing
from ..spacing import tiff_spacing, unknown_spacing
from .limits import check_pixel_count

__all__ = ["read_raster"]

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _to_grey(arr: np.ndarray, notes: list[str]) -> np.ndarray:
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):  # drop alpha
        arr = arr[..., : arr.shape[-1] - 1]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        return arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 3:
        f = arr.astype(np.float32)
        spread = float(np.max(np.ptp(f[::4, ::4], axis=-1)))
        if spread > 0.02 * (float(np.ptp(f)) or 1.0):
            notes.append("colour image converted to grey (BT.601 luma)")
        return f @ _LUMA
    raise ValueError(f"unexpected pixel array shape {arr.shape}")


def _dtype_range(dtype: np.dtype, arr: np.ndarray) -> tuple[float, float]:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return float(np.nanmin(arr)), float(np.nanmax(arr))


def _png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">2I", data[16:24])
        return height, width
    return None


def _read_pil(path: Path, data: bytes, notes: list[str]) -> tuple[np.ndarray, np.dtype]:
    size = _png_size(data)
    if size is not None:
        check_pixel_count(path, *size)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
            cols, rows = img.size
            check_pixel_count(path, rows, cols)
            img.load()
        except UnsupportedImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise UnsupportedImageError(path, "the image is too large to decode safely") from exc
        except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError...
            raise CorruptImageError(path, f"the {Path(path).suffix or 'image'} data cannot be decoded ({exc})") from exc
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    elif mode == "1":
        img = img.convert("L")
    arr = np.asarray(img)
    if mode.startswith("I;16"):
        arr = arr.astype(np.uint16, copy=False)
        dtype = np.dtype(np.uint16)
    else:
        dtype = arr.dtype
    return _to_grey(arr, notes), dtype


def _read_tiff(path: Path, data: bytes, frame: int | None, notes: list[str]) -> tuple[np.ndarray, np.dtype, Spacing]:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            pages = tif.pages
            n = len(pages)
            if n == 0:
                raise CorruptImageError(path, "the TIFF file contains no image")
            if n > 1 and frame is None:
                raise UnsupportedImageError(
                    path,
                    f"this TIFF holds {n} images; calcimeasure measures single radiographs: "
                    "pass frame=N (0-based) to choose one",
                )
            index = frame or 0
            if not 0 <= index < n:
                raise ParameterError(f"`frame` must be in [0, {n - 1}] for {path}, got {frame}")
            page = pages[index]
            shape = page.shape
            rows, cols = int(shape[0]), int(shape[1])
            check_pixel_count(path, rows, cols)
            tags = page.tags
            def tag(name: str):
                t = tags.get(name)
                if t is None:
                    return None
                v = t.value
                if isinstance(v, tuple) and len(v) == 2:
                    return v[0] / v[1] if v[1] else None
                return float(v)
            unit_tag = tags.get("ResolutionUnit")
            unit = int(unit_tag.value) if unit_tag is not None else None
            spacing, warning = tiff_spacing(tag("XResolution"), tag("YResolution"), unit)
            if warning:
                notes.append(warning)
            arr = page.asarray()
    except (UnsupportedImageError, CorruptImageError, ParameterError):
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile / codecs raise many types
        raise CorruptImageError(path, f"the TIFF data cannot be decoded ({exc})") from exc
    dtype = arr.dtype
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
    return _to_grey(arr, notes), dtype, spacing


def read_raster(
    path: Path,
    data: bytes,
    sha256: str,
    file_format: str,
    *,
    spacing: Spacing | None = None,
    frame: int | None = None,
    polarity: str = "auto",
) -> Radiograph:
    """Read PNG / TIFF / JPEG bytes into a Radiograph (see :func:`calcimeasure.read_image`)."""
    notes: list[str] = []
    file_spacing = unknown_spacing("raster image without resolution information")
    if file_format == "tiff":
        arr, dtype, file_spacing = _read_tiff(path, data, frame, notes)
    else:
        if frame not in (None, 0):
            raise ParameterError(f"`frame` must be None or 0 for a single-image {file_format} file, got {frame}")
        arr, dtype = _read_pil(path, data, notes)
    if arr.ndim != 2:
        raise UnsupportedImageError(path, f"its pixel array has an unexpected shape {arr.shape}")
    pixels = arr.astype(np.float32)
    if not np.isfinite(pixels).all():
        raise CorruptImageError(path, "the image contains non-finite (NaN or infinite) values")
    lo, hi = _dtype_range(dtype, pixels)
    negative = polarity == "dense_low"
    if negative:
        pixels = np.float32(lo + hi) - pixels
    if float(pixels.min()) == float(pixels.max()):
        raise CorruptImageError(path, f"the image is blank: every pixel has the value {float(pixels.min()):g}")
    meta = RadiographMeta(
        source_path=str(path),
        sha256=sha256,
        file_format=file_format,
        inverted=negative,
        bits_stored=int(np.dtype(dtype).itemsize * 8) if np.issubdtype(dtype, np.integer) else None,
        value_range=(lo, hi),
        warnings=tuple(notes),
    )
    return Radiograph(
        pixels=np.ascontiguousarray(pixels),
        spacing=spacing if spacing is not None else file_spacing,
        meta=meta,
    )
