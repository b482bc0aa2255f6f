"""Hard limits applied before any decoding (protection against absurd or hostile files)."""

#: Largest image accepted, in pixels (rows × columns). Real radiographs are
#: at most ~40 megapixels (43 × 43 cm at 70 µm); 200 Mpx leaves ample room.
MAX_PIXELS = 200_000_000

#: Largest file read, in bytes.
MAX_FILE_BYTES = 2 * 1024**3
