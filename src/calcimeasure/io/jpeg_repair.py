"""Byte-level helpers for encapsulated DICOM pixel data.

Two well-known defects of real files are handled here, both by reading the
codestream itself rather than trusting a damaged header:

* :func:`guess_transfer_syntax` names the compression of a codestream from its
  first bytes, for files whose File Meta says a native transfer syntax while
  the pixel data is encapsulated (e.g. a duplicated group 0002 inside the data
  set).
* :func:`repair_sequential_jpeg_sos` fixes the invalid Start-Of-Scan spectral
  selection (Se = 0 instead of 63) written by some old JPEG encoders into
  sequential-DCT streams (the NEMA WG04 ``*_JPLY`` test images); standard
  decoders reject those streams while tolerant ones read them.
"""

from __future__ import annotations

import struct

from pydicom import uid

__all__ = ["guess_transfer_syntax", "repair_sequential_jpeg_sos"]

_SOF_TO_TS = {
    0xC0: uid.JPEGBaseline8Bit,
    0xC1: uid.JPEGExtended12Bit,
    0xC3: uid.JPEGLossless,
    0xF7: uid.JPEGLSLossless,
}


def _markers(stream: bytes):
    """Yield (marker, offset_of_marker, segment_length) of a JPEG stream's header
    segments, skipping entropy-coded data."""
    n = len(stream)
    i = 2  # after SOI
    while i + 4 <= n:
        if stream[i] != 0xFF:
            i += 1
            continue
        marker = stream[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x00 or 0xD0 <= marker <= 0xD7 or marker == 0x01:
            i += 2
            continue
        if marker == 0xD9:  # EOI
            return
        length = struct.unpack(">H", stream[i + 2 : i + 4])[0]
        yield marker, i, length
        i += 2 + length
        if marker == 0xDA:
            # Skip entropy-coded segment up to the next real marker.
            while i + 1 < n:
                if stream[i] == 0xFF and stream[i + 1] not in (0x00,) and not (0xD0 <= stream[i + 1] <= 0xD7):
                    break
                i += 1


def guess_transfer_syntax(fragment: bytes) -> uid.UID | None:
    """Name the transfer syntax whose codec can decode ``fragment``.

    Returns ``None`` when the bytes are not a recognised codestream.
    """
    if fragment[:4] == b"\xff\x4f\xff\x51" or fragment[4:8] == b"jP  ":
        return uid.JPEG2000
    if fragment[:2] == b"\xff\xd8":
        for marker, _, _ in _markers(fragment):
            if marker in _SOF_TO_TS:
                return _SOF_TO_TS[marker]
        return None
    if len(fragment) >= 64:
        count, first = struct.unpack("<2L", fragment[:8])
        if 1 <= count <= 15 and first == 64:
            return uid.RLELossless
    return None


def repair_sequential_jpeg_sos(stream: bytes) -> bytes | None:
    """Fix Start-Of-Scan segments with an invalid spectral end in a sequential JPEG.

    In sequential DCT JPEG (SOF0/SOF1) every scan must have Ss = 0 and Se = 63
    (ITU-T T.81 §B.2.3). Returns the repaired stream, or ``None`` when the
    stream is not sequential DCT or needs no repair.
    """
    sequential = False
    patched = bytearray(stream)
    changed = False
    for marker, offset, _length in _markers(stream):
        if marker in (0xC0, 0xC1):
            sequential = True
        elif marker == 0xDA and sequential:
            ns = stream[offset + 4]
            ss_at = offset + 5 + 2 * ns
            if ss_at + 1 < len(stream) and (stream[ss_at] != 0 or stream[ss_at + 1] != 63):
                patched[ss_at] = 0
                patched[ss_at + 1] = 63
                changed = True
    return bytes(patched) if changed else None
