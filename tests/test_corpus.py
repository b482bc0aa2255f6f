"""Every file of the real-DICOM corpus is read correctly or rejected with the right typed error.

Runs on the copies in tests/data/real_dicom (always) and on the whole shared
corpus ../shared/real_dicom (when present, as on the developers' machines and CI).
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

import calcimeasure
from calcimeasure import errors
from conftest import TEST_DATA, shared_corpus_dir
from corpus_expectations import EXPECTED, LOSSLESS_TWINS, LOSSY_TWINS

LOCAL = TEST_DATA / "real_dicom"
SHARED = shared_corpus_dir()


def _files() -> list:
    params = [pytest.param(p, id=f"local/{p.name}") for p in sorted(LOCAL.glob("*.dcm"))]
    if SHARED is not None:
        params += [pytest.param(p, id=f"shared/{p.name}") for p in sorted(SHARED.glob("*.dcm"))]
    return params


@lru_cache(maxsize=8)
def _read(path: str, **kwargs):
    return calcimeasure.read_image(path, **kwargs)


def _locate(name: str) -> Path:
    for folder in (LOCAL, SHARED):
        if folder is not None and (folder / name).is_file():
            return folder / name
    pytest.skip(f"{name} is only in the shared corpus, which this checkout lacks")


def _check_outcome(path: Path, outcome: str, match: str | None, kwargs: dict) -> None:
    if outcome == "ok":
        rg = calcimeasure.read_image(path, **kwargs)
        assert rg.pixels.ndim == 2 and rg.pixels.dtype == np.float32
        assert np.isfinite(rg.pixels).all()
        return
    error_type = getattr(errors, outcome)
    with pytest.raises(error_type, match=match) as info:
        calcimeasure.read_image(path, **kwargs)
    if isinstance(info.value, errors.ImageReadError):
        # The message names the file and gives a reason.
        assert str(path) in str(info.value)
        assert info.value.reason


def test_expectations_cover_the_whole_manifest(corpus_dir):
    with open(corpus_dir / "MANIFEST.tsv", newline="") as fh:
        names = {row["filename"] for row in csv.DictReader(fh, delimiter="\t")}
    assert names == set(EXPECTED), "every corpus file needs an expectation"


def test_local_copies_are_listed_with_provenance():
    with open(LOCAL / "PROVENANCE.tsv", newline="") as fh:
        rows = {row["filename"]: row for row in csv.DictReader(fh, delimiter="\t")}
    local = {p.name for p in LOCAL.glob("*.dcm")}
    assert local == set(rows)
    for name in local:
        assert rows[name]["license"], name
        assert "GPL" not in rows[name]["license"] and "MS-PL" not in rows[name]["license"], name


@pytest.mark.parametrize("path", _files())
def test_corpus_file_outcome(path: Path):
    exp = EXPECTED[path.name]
    _check_outcome(path, exp["outcome"], exp.get("match"), {})
    for kwargs, outcome, match in exp.get("also", []):
        _check_outcome(path, outcome, match, kwargs)


@pytest.mark.parametrize("path", [p for p in _files() if EXPECTED[p.values[0].name]["outcome"] == "ok"])
def test_corpus_spacing_orientation_and_meta(path: Path):
    exp = EXPECTED[path.name]
    rg = _read(str(path))
    # Spacing and its provenance.
    if exp["spacing"] is None:
        assert rg.spacing_mm is None
    else:
        assert rg.spacing_mm == pytest.approx(exp["spacing"], rel=1e-6)
    assert rg.spacing_source.value == exp["source"]
    # Polarity decision.
    assert rg.meta.inverted is exp["inverted"]
    if "warning" in exp:
        assert any(exp["warning"] in w for w in rg.meta.warnings), rg.meta.warnings
    # Radiodense is high: a dense structure is brighter than a lucent one.
    if "dense" in exp:
        rg2 = _read(str(path), **exp.get("read_kwargs", {}))
        h, w = rg2.shape

        def box(b):
            r0, r1, c0, c1 = b
            return float(np.median(rg2.pixels[int(r0 * h) : int(r1 * h), int(c0 * w) : int(c1 * w)]))

        assert box(exp["dense"]) > box(exp["lucent"])
    # Metadata: provenance of the pixels, no patient identity unless asked.
    assert rg.meta.sha256 and len(rg.meta.sha256) == 64
    assert rg.meta.source_path == str(path)
    assert rg.meta.patient_id is None
    assert rg.meta.file_format == "dicom"


@pytest.mark.parametrize("group", LOSSLESS_TWINS, ids=lambda g: g[0].split(".")[0])
def test_lossless_twins_decode_identically(group):
    reference = calcimeasure.read_image(_locate(group[0])).pixels
    for name in group[1:]:
        np.testing.assert_array_equal(calcimeasure.read_image(_locate(name)).pixels, reference, err_msg=name)


@pytest.mark.parametrize("ref,lossy,tol", LOSSY_TWINS, ids=lambda v: str(v).split(".")[0])
def test_lossy_twins_are_close(ref, lossy, tol):
    a = calcimeasure.read_image(_locate(ref)).pixels
    b = calcimeasure.read_image(_locate(lossy)).pixels
    assert a.shape == b.shape
    assert float(np.mean(np.abs(a - b))) < tol
    assert np.corrcoef(a[::7, ::7].ravel(), b[::7, ::7].ravel())[0, 1] > 0.99


def test_monochrome1_inversion_maps_the_value_range_onto_itself():
    # CR c-spine: MONOCHROME1, 12 bits, Rescale Slope 0.684, Intercept 200.
    import pydicom

    path = _locate("cr_cspine_mono1_16x16_downsized_rescale.dcm")
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array.astype(np.float64)
    modality = stored * 0.684 + 200
    lo, hi = 200.0, 4095 * 0.684 + 200
    rg = calcimeasure.read_image(path)
    np.testing.assert_allclose(rg.pixels, (lo + hi) - modality, rtol=1e-6)
    assert rg.meta.value_range == pytest.approx((lo, hi))
    # The display window is mapped into the inverted domain.
    center, width = rg.display_window()
    assert center == pytest.approx(lo + hi - 1600)
    assert width == pytest.approx(2800)


def test_dx_presentation_lut_inverse_is_applied_once():
    # Fujifilm DX, MONOCHROME1 with Presentation LUT Shape INVERSE: one inversion.
    import pydicom

    path = _locate("dx_vet_thorax_lateral_mono1_8bit_small.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.PresentationLUTShape == "INVERSE"
    rg = calcimeasure.read_image(path)
    np.testing.assert_allclose(rg.pixels, 255 - ds.pixel_array.astype(np.float32))


def test_multiframe_reads_one_chosen_frame(corpus_dir):
    path = corpus_dir / "xa_coronary_96frames_jpeg_baseline8.dcm"
    a = calcimeasure.read_image(path, frame=0)
    b = calcimeasure.read_image(path, frame=95)
    assert a.shape == (512, 512) and a.meta.frame_index == 0 and a.meta.number_of_frames == 96
    assert not np.array_equal(a.pixels, b.pixels)


def test_patient_key_is_pseudonymous_and_stable():
    path = _locate("dx_chest_nih_cxr14_sc_implicit_le_8bit.dcm")
    a = calcimeasure.read_image(path)
    b = calcimeasure.read_image(path, salt="another site secret")
    c = calcimeasure.read_image(path, keep_ids=True)
    assert a.meta.patient_key and a.meta.patient_key.startswith("P")
    assert a.meta.patient_key != b.meta.patient_key
    assert c.meta.patient_id == "Covid0000"
    assert "Covid0000" not in repr(a.meta.to_dict())


def test_transfer_syntax_contradicted_by_codestream_is_repaired(corpus_dir):
    path = corpus_dir / "odd_mg_tomo_hologic_duplicate_meta_group.dcm"
    rg = calcimeasure.read_image(path, require_projection=False)
    assert any("JPEG Lossless" in w for w in rg.meta.warnings)
    h, w = rg.shape
    breast = np.median(rg.pixels[int(0.4 * h) : int(0.6 * h), int(0.8 * w) :])
    air = np.median(rg.pixels[int(0.4 * h) : int(0.6 * h), : int(0.3 * w)])
    assert breast > air + 500
