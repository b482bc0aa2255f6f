"""Damaged real files: read_image returns a Radiograph or raises a typed error, never anything else.

A small deterministic mutation sweep (truncation and byte corruption) over real
files of several encodings. The long fuzzing campaign is a separate issue.
"""

from __future__ import annotations

import numpy as np
import pytest

import calcimeasure
from calcimeasure.errors import CalcimeasureError
from conftest import TEST_DATA

FILES = [
    "cr_cspine_mono1_16x16_downsized_rescale.dcm",  # native, rescale
    "dx_vet_thorax_lateral_mono1_8bit_small.dcm",  # native MONOCHROME1
    "rg3_cr_tibia_mono1_j2k_lossy.dcm",  # JPEG 2000
    "rg2_cr_hip_jpeg_ext12_fixedSOS.dcm",  # JPEG extended
    "rg3_cr_tibia_mono1_jpegls_nearlossless.dcm",  # JPEG-LS
    "nonradiograph_sc_test_pattern_deflated.dcm",  # deflated
]


@pytest.mark.parametrize("name", FILES)
def test_mutated_files_raise_only_typed_errors(tmp_path, name):
    data = (TEST_DATA / "real_dicom" / name).read_bytes()
    rng = np.random.default_rng(sum(map(ord, name)))
    outcomes = {"ok": 0, "error": 0}
    for i in range(24):
        buf = bytearray(data)
        if i % 3 == 0:
            buf = buf[: int(rng.integers(0, len(buf)))]
        else:
            for _ in range(int(rng.integers(1, 16))):
                pos = int(rng.integers(0, len(buf)))
                buf[pos] = int(rng.integers(0, 256))
        path = tmp_path / f"m{i}.dcm"
        path.write_bytes(bytes(buf))
        try:
            rg = calcimeasure.read_image(path)
        except CalcimeasureError as err:
            assert str(path) in str(err)
            outcomes["error"] += 1
        else:
            assert rg.pixels.ndim == 2 and np.isfinite(rg.pixels).all()
            outcomes["ok"] += 1
    assert outcomes["ok"] + outcomes["error"] == 24
