"""Recognise a file's format from its content, never from its extension."""

from __future__ import annotations

import struct

__all__ = ["sniff_format", "describe_unknown"]

_RASTER_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
)

_OTHER_MAGIC = (
    (b"%PDF", "a PDF document"),
    (b"GIF8", "a GIF image (not supported; convert to PNG or TIFF)"),
    (b"BM", "a BMP image (not supported; convert to PNG or TIFF)"),
    (b"PK\x03\x04", "a ZIP archive (unpack it first)"),
    (b"\x1f\x8b", "a gzip archive (unpack it first)"),
    (b"RIFF", "a RIFF container (WebP/AVI), not a radiograph"),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 file (not supported outside DICOM)"),
)

# Groups with which a DICOM data set without preamble (ACR-NEMA style) starts.
_ACR_NEMA_FIRST_GROUPS = {0x0002, 0x0008}


def sniff_format(head: bytes) -> str | None:
    """Return ``"dicom"``, ``"png"``, ``"jpeg"``, ``"tiff"``, or ``None``.

    Parameters
    ----------
    head : bytes
        At least the first 132 bytes of the file.
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    for magic, name in _RASTER_MAGIC:
        if head.startswith(magic):
            return name
    if len(head) >= 8:
        group, element = struct.unpack("<2H", head[:4])
        if group in _ACR_NEMA_FIRST_GROUPS and element < 0x0100:
            # Explicit VR would show two letters next; implicit VR a 4-byte length.
            vr = head[4:6]
            if vr.isalpha() and vr.isupper():
                return "dicom"
            (length,) = struct.unpack("<I", head[4:8])
            if length < 1 << 16:
                return "dicom"
    return None


def describe_unknown(head: bytes) -> str:
    """A short description of what a non-image file seems to be."""
    for magic, name in _OTHER_MAGIC:
        if head.startswith(magic):
            return f"it is {name}"
    if not head:
        return "the file is empty"
    sample = head[:512]
    if all(32 <= b < 127 or b in (9, 10, 13) for b in sample):
        return "it is a text file, not an image"
    return "it is neither a DICOM file nor a PNG, TIFF or JPEG image"
