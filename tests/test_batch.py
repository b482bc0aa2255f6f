"""`calcimeasure measure`: output tables, bad files, exit codes, input folders, ROI, privacy, overlays."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

import calcimeasure
from calcimeasure.batch.outputs import ERROR_COLUMNS, MEASUREMENT_COLUMNS
from calcimeasure.batch.overlay import overlay_size
from calcimeasure.cli import main
from calcimeasure.measure import LESION_COLUMNS
from conftest import ROOT

SAMPLES = ROOT / "sample_images"
#: Two of the sample films (the fastest to segment) keep the test short.
SAMPLE_FILES = ["case04_baseline.dcm", "case04_followup.dcm"]


def make_films(folder: Path, n: int, *, seed0: int = 0, transfer_syntax: str = "rle") -> list[Path]:
    """``n`` small phantom films (fingers, easy) with distinct content."""
    from calcimeasure.phantom import PhantomSpec, render_image, write_dicom

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        img = render_image(PhantomSpec.preset("easy", body_part="fingers", rows=192, cols=160), seed=seed0 + k)
        out.append(Path(write_dicom(img, folder / f"film{k:02d}.dcm", transfer_syntax=transfer_syntax)))
    return out


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden too) with its SHA-256 and mode."""
    out = {}
    for root, _dirs, files in os.walk(folder):
        for name in files:
            p = Path(root) / name
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode)
    return out


def read_tables(out: Path):
    kw = dict(keep_default_na=True)
    return (
        pd.read_csv(out / "measurements.csv", **kw),
        pd.read_csv(out / "lesions.csv", **kw),
        pd.read_csv(out / "errors.csv", **kw),
    )


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    src = tmp_path_factory.mktemp("samples")
    for name in SAMPLE_FILES:
        shutil.copy(SAMPLES / name, src / name)
    out = tmp_path_factory.mktemp("run") / "out"
    code = main(["measure", str(src), "--out", str(out), "--quiet"])
    return src, out, code


def test_tables_on_sample_films_match_measure(sample_run):
    src, out, code = sample_run
    assert code == 0
    meas, les, err = read_tables(out)
    assert list(meas.columns) == MEASUREMENT_COLUMNS
    assert list(les.columns) == ["file", "sha256", *LESION_COLUMNS]
    assert list(err.columns) == ERROR_COLUMNS and len(err) == 0  # header even when empty
    assert [Path(f).name for f in meas["file"]] == SAMPLE_FILES  # input order
    assert meas["sha256"].is_unique and meas["params_digest"].nunique() == 1
    assert (meas["calcimeasure_version"] == calcimeasure.__version__).all()
    for _, row in meas.iterrows():
        ref = calcimeasure.measure(row["file"])
        assert row["sha256"] == ref.source["sha256"]
        assert row["lesion_count"] == ref.lesion_count
        assert row["total_area_mm2"] == pytest.approx(ref.total_area_mm2, rel=1e-12, abs=1e-12)
        assert row["total_area_px"] == ref.total_area_px
        assert row["params_digest"] == ref.params.digest()
        assert (row["spacing_row_mm"], row["spacing_col_mm"]) == pytest.approx(ref.spacing_mm)
        assert row["spacing_source"] == ref.spacing_source and row["units"] == "mm"
        mine = les[les["file"] == row["file"]]
        assert len(mine) == ref.lesion_count
        np.testing.assert_allclose(mine["area_mm2"].to_numpy(float), ref.lesions["area_mm2"].to_numpy(float))
        assert mine["area_mm2"].sum() == pytest.approx(row["total_area_mm2"])
    assert len(les) == meas["lesion_count"].sum()
    # Metadata columns come from the reader (no names; pseudonymous key).
    rg = calcimeasure.read_image(SAMPLES / SAMPLE_FILES[0])
    first = meas.iloc[0]
    assert first["patient_key"] == rg.meta.patient_key and first["body_part"] == rg.meta.body_part
    assert first["study_date"] == rg.meta.study_date.isoformat() and first["view"] == rg.meta.view_position
    assert (first["rows"], first["columns"]) == rg.shape
    params = json.loads((out / "params.json").read_text())
    assert params["params_digest"] == first["params_digest"]
    assert params["segmentation"] == calcimeasure.SegmentationParams().to_dict()
    assert params["calcimeasure_version"] == calcimeasure.__version__
    log = (out / "calcimeasure.log").read_text()
    assert "run finished: 2 image(s) measured (2 now, 0 reused" in log


def test_overlays_are_pngs_of_the_expected_size(sample_run):
    _src, out, _code = sample_run
    meas = pd.read_csv(out / "measurements.csv")
    pngs = sorted((out / "overlays").iterdir())
    assert len(pngs) == len(meas)
    for _, row in meas.iterrows():
        path = out / row["overlay"]
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert img.shape == (*overlay_size((row["rows"], row["columns"])), 3)
        assert max(img.shape[:2]) <= 1024
        assert path.name.endswith(f"_{row['sha256'][:12]}.png")


def test_no_temp_files_left_and_inputs_unchanged(sample_run, tmp_path):
    src, out, _ = sample_run
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    # A second run (elsewhere) leaves the input folder byte-identical.
    before = tree_digest(src)
    assert main(["measure", str(src / SAMPLE_FILES[1]), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert tree_digest(src) == before


def _bad_folder(folder: Path) -> None:
    make_films(folder, 2)
    # Corrupt DICOM: an uncompressed film with half its pixel data cut off.
    film = make_films(folder / "sub", 1, seed0=5, transfer_syntax="explicit")[0]
    data = film.read_bytes()
    film.unlink()
    (folder / "sub" / "corrupt.dcm").write_bytes(data[: len(data) - 20000])
    (folder / "notes.dcm").write_text("this is a text file renamed .dcm\n")
    (folder / "empty.dcm").write_bytes(b"")
    # Unsupported: a valid image of a cross-sectional modality.
    import pydicom

    ds = pydicom.dcmread(make_films(folder / "ct", 1, seed0=4)[0])
    ds.Modality = "CT"
    ds.save_as(folder / "ct" / "slice.dcm")
    (folder / "ct" / "film00.dcm").unlink()


def test_bad_files_are_recorded_and_do_not_stop_the_batch(tmp_path, capsys):
    src = tmp_path / "in"
    _bad_folder(src)
    out = tmp_path / "out"
    code = main(["measure", str(src), "--out", str(out), "--no-overlays"])
    assert code == 1
    meas, les, err = read_tables(out)
    assert sorted(Path(f).name for f in meas["file"]) == ["film00.dcm", "film01.dcm"]
    by_name = {Path(r["file"]).name: r for _, r in err.iterrows()}
    assert by_name["notes.dcm"]["error"] == "NotAnImageError"
    assert by_name["empty.dcm"]["error"] == "NotAnImageError"
    assert by_name["slice.dcm"]["error"] == "UnsupportedImageError"
    assert by_name["corrupt.dcm"]["error"] == "CorruptImageError"
    assert set(by_name) == {"notes.dcm", "empty.dcm", "slice.dcm", "corrupt.dcm"}
    assert all(isinstance(r, str) and r for r in err["reason"])
    assert err["sha256"].notna().sum() >= 3  # readable files are identified by content
    assert not (out / "overlays").exists()
    stderr = capsys.readouterr().err
    assert "CorruptImageError" in stderr and "2 image(s) measured" in stderr


def test_unexpected_exception_is_an_internal_error(tmp_path, monkeypatch):
    films = make_films(tmp_path / "in", 2)
    import sys

    measure_module = sys.modules["calcimeasure.measure"]
    real = measure_module.segment

    def boom(rg, **kw):
        if rg.meta.source_path.endswith("film00.dcm"):
            raise ZeroDivisionError("simulated bug")
        return real(rg, **kw)

    monkeypatch.setattr(measure_module, "segment", boom)
    out = tmp_path / "out"
    assert main(["measure", *map(str, films), "--out", str(out), "--quiet"]) == 1
    meas, _les, err = read_tables(out)
    assert len(meas) == 1 and len(err) == 1
    assert err.iloc[0]["error"] == "InternalError" and err.iloc[0]["kind"] == "internal"
    assert "ZeroDivisionError: simulated bug" in err.iloc[0]["reason"]
    assert "Traceback" in (out / "calcimeasure.log").read_text()


def test_exit_codes_and_output_inside_input_folder(tmp_path):
    src = tmp_path / "in"
    make_films(src, 1)
    before = tree_digest(src)
    assert main(["measure", str(src), "--out", str(src / "results")]) == 2  # refused
    assert main(["measure", str(src), "--out", str(src)]) == 2
    assert tree_digest(src) == before and not (src / "results").exists()
    assert main(["measure", str(src), str(src / "film00.dcm"), "--out", str(tmp_path / "o1"), "-q"]) == 0
    assert len(pd.read_csv(tmp_path / "o1" / "measurements.csv")) == 1  # a file named twice is measured once
    assert main(["measure", str(src), str(tmp_path / "missing.dcm"), "--out", str(tmp_path / "o2"), "-q"]) == 1
    err = pd.read_csv(tmp_path / "o2" / "errors.csv")
    assert list(err["error"]) == ["ImageNotFoundError"]
    # Allowed with --force: the output folder is then not taken as input.
    assert main(["measure", str(src), "--out", str(src / "results"), "--force", "-q"]) == 0
    assert main(["measure", str(src), "--out", str(src / "results"), "--force", "-q"]) == 0  # rerun: no overlays read
    meas = pd.read_csv(src / "results" / "measurements.csv")
    assert [Path(f).name for f in meas["file"]] == ["film00.dcm"]


def test_previous_run_needs_resume_or_force(tmp_path, capsys):
    films = make_films(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert main(["measure", str(films[0]), "--out", str(out), "-q"]) == 0
    capsys.readouterr()
    assert main(["measure", str(films[0]), "--out", str(out), "-q"]) == 2
    assert "--resume" in capsys.readouterr().err
    (out / "overlays" / "stale.png").write_bytes(b"x")
    assert main(["measure", str(films[0]), "--out", str(out), "-q", "--force"]) == 0
    assert not (out / "overlays" / "stale.png").exists()
    assert "0 reused" in (out / "calcimeasure.log").read_text().splitlines()[-1]


def test_unknown_spacing_png_and_spacing_override(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    pixels = calcimeasure.read_image(make_films(tmp_path / "d", 1, seed0=3)[0]).pixels
    cv2.imwrite(str(src / "scan.png"), np.clip(pixels, 0, 65535).astype(np.uint16))
    out = tmp_path / "out"
    assert main(["measure", str(src), "--out", str(out), "-q"]) == 0
    row = pd.read_csv(out / "measurements.csv").iloc[0]
    assert row["units"] == "px" and row["spacing_source"] == "unknown"
    assert pd.isna(row["total_area_mm2"]) and pd.isna(row["spacing_row_mm"])
    assert cv2.imread(str(out / row["overlay"])) is not None
    out2 = tmp_path / "out2"
    assert main(["measure", str(src), "--out", str(out2), "--spacing", "0.2", "-q"]) == 0
    row2 = pd.read_csv(out2 / "measurements.csv").iloc[0]
    assert row2["spacing_source"] == "user" and row2["units"] == "mm"
    assert row2["spacing_row_mm"] == 0.2 and row2["spacing_col_mm"] == 0.2
    ref = calcimeasure.measure(src / "scan.png", spacing_mm=0.2)
    assert row2["total_area_mm2"] == pytest.approx(ref.total_area_mm2)


def test_roi_file_for_all_and_per_file(tmp_path):
    films = make_films(tmp_path / "in", 2, seed0=6)
    out0 = tmp_path / "o0"
    assert main(["measure", str(tmp_path / "in"), "--out", str(out0), "-q", "--no-overlays"]) == 0
    les0 = pd.read_csv(out0 / "lesions.csv")
    on_first = les0[les0["file"].str.endswith("film00.dcm")]
    if on_first.empty:  # the segmentation is a black box here; these phantoms had lesions when written
        pytest.skip("no lesion found on the phantom film: nothing to restrict")
    # A box around the first lesion of film00 only.
    first = on_first.iloc[0]
    r0, c0, r1, c1 = (int(first[k]) for k in ("bbox_min_row", "bbox_min_col", "bbox_max_row", "bbox_max_col"))
    box = [[r0 - 3, c0 - 3], [r0 - 3, c1 + 3], [r1 + 3, c1 + 3], [r1 + 3, c0 - 3]]
    roi_all = tmp_path / "roi_all.json"
    roi_all.write_text(json.dumps(box))
    out1 = tmp_path / "o1"
    assert main(["measure", str(tmp_path / "in"), "--out", str(out1), "--roi", str(roi_all), "-q", "--no-overlays"]) in (0,)
    meas1, les1 = pd.read_csv(out1 / "measurements.csv"), pd.read_csv(out1 / "lesions.csv")
    assert (meas1["roi_polygons"] == 1).all()
    for _, les in les1.iterrows():
        assert r0 - 3 <= les["centroid_row_px"] <= r1 + 3 and c0 - 3 <= les["centroid_col_px"] <= c1 + 3
    ref = calcimeasure.measure(films[0], roi=box)
    assert meas1.iloc[0]["total_area_px"] == ref.total_area_px
    # Mapping: film00 gets two polygons, the other the whole image.
    roi_map = tmp_path / "roi_map.json"
    roi_map.write_text(json.dumps({"film00.dcm": [box, [[0, 0], [0, 5], [5, 5]]], "nothere.dcm": box}))
    out2 = tmp_path / "o2"
    assert main(["measure", str(tmp_path / "in"), "--out", str(out2), "--roi", str(roi_map), "-q", "--no-overlays"]) == 0
    meas2 = pd.read_csv(out2 / "measurements.csv")
    assert list(meas2["roi_polygons"]) == [2, 0]
    assert meas2.iloc[1]["total_area_px"] == pd.read_csv(out0 / "measurements.csv").iloc[1]["total_area_px"]
    assert "'nothere.dcm' matches no input file" in (out2 / "calcimeasure.log").read_text()


def test_no_patient_id_unless_keep_ids(tmp_path):
    films = make_films(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert main(["measure", str(films[0]), "--out", str(out), "-q"]) == 0
    raw_id = "PHANTOM-0001"
    for p in out.rglob("*"):
        if p.is_file():
            assert raw_id.encode() not in p.read_bytes(), p
    assert "patient_id" not in pd.read_csv(out / "measurements.csv").columns
    out2 = tmp_path / "out2"
    assert main(["measure", str(films[0]), "--out", str(out2), "-q", "--keep-ids"]) == 0
    meas = pd.read_csv(out2 / "measurements.csv")
    assert list(meas.columns).index("patient_id") == list(meas.columns).index("patient_key") + 1
    assert meas.iloc[0]["patient_id"] == raw_id


def test_parquet_copies(tmp_path):
    pytest.importorskip("pyarrow")
    films = make_films(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert main(["measure", str(films[0]), str(tmp_path / "nope.dcm"), "--out", str(out), "-q", "--parquet"]) == 1
    for name in ("measurements", "lesions", "errors"):
        pq = pd.read_parquet(out / f"{name}.parquet")
        csv = pd.read_csv(out / f"{name}.csv")
        assert list(pq.columns) == list(csv.columns) and len(pq) == len(csv)
    pq = pd.read_parquet(out / "measurements.parquet")
    assert pq.iloc[0]["total_area_mm2"] == pytest.approx(pd.read_csv(out / "measurements.csv").iloc[0]["total_area_mm2"])


def test_parquet_without_pyarrow_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("calcimeasure.batch.runner.parquet_available", lambda: False)
    assert main(["measure", str(SAMPLES / SAMPLE_FILES[1]), "--out", str(tmp_path / "o"), "--parquet"]) == 2
    assert "pip install 'calcimeasure[parquet]'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_empty_input_folder_writes_header_only_tables(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    out = tmp_path / "out"
    assert main(["measure", str(tmp_path / "in"), "--out", str(out)]) == 0
    assert "no input files found" in capsys.readouterr().err
    for name in ("measurements.csv", "lesions.csv", "errors.csv"):
        assert len(pd.read_csv(out / name)) == 0
