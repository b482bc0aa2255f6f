"""Hard limits applied before any decoding (protection against absurd or hostile files)."""

from __future__ import annotations

from os import PathLike

from ..errors import UnsupportedImageError

#: Largest image accepted, in pixels (rows × columns). Real radiographs are
#: at most ~40 megapixels (43 × 43 cm at 70 µm); 200 Mpx leaves ample room.
MAX_PIXELS = 200_000_000

#: Largest file read, in bytes.
MAX_FILE_BYTES = 2 * 1024**3


def check_pixel_count(path: str | PathLike[str], rows: int, cols: int) -> None:
    """Raise :class:`UnsupportedImageError` when a declared size exceeds :data:`MAX_PIXELS`."""
    if rows * cols > MAX_PIXELS:
        raise UnsupportedImageError(
            path,
            f"the image declares {rows} x {cols} pixels ({rows * cols / 1e6:.0f} megapixels), above "
            f"the {MAX_PIXELS / 1e6:.0f}-megapixel limit for a radiograph; not decoded",
        )
