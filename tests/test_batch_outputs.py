"""Batch building blocks: atomic writes, the executor's crash isolation, overlays, ROI and parameter files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from calcimeasure.batch import outputs
from calcimeasure.batch.config import BatchUsageError, RoiSpec, load_params, load_roi, parse_set
from calcimeasure.batch.overlay import overlay_name, overlay_size, render_overlay
from calcimeasure.batch.resume import settings_key
from calcimeasure.batch.runner import execute
from calcimeasure.batch.worker import ImageTask, measure_one
from calcimeasure.params import SegmentationParams
from calcimeasure.radiograph import Radiograph, RadiographMeta, Spacing, SpacingPlane, SpacingSource


# ----------------------------------------------------------------------------- atomic writes
def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "t.csv"
    outputs.atomic_write_text(target, "one\n")
    outputs.atomic_write_text(target, "two\n")
    assert target.read_text() == "two\n"
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]
    assert target.stat().st_mode & 0o777 == outputs._FILE_MODE  # as open() would make it, not mkstemp's 0600


def test_failure_mid_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "measurements.csv"
    target.write_text("OLD\n")

    def writer(fh):
        fh.write(b"half a ta")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        outputs.atomic_write(target, writer)
    assert target.read_text() == "OLD\n"
    assert [p.name for p in tmp_path.iterdir()] == ["measurements.csv"]


def test_write_tables_goes_through_replace(tmp_path, monkeypatch):
    for name in ("measurements", "lesions", "errors"):
        (tmp_path / f"{name}.csv").write_text("OLD\n")
    calls = []

    def failing_replace(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(outputs.os, "replace", failing_replace)
    rec = {"status": "error", "error": {"file": "x.dcm", "sha256": None, "error": "NotAnImageError",
                                        "kind": "not_an_image", "reason": "empty"}}
    with pytest.raises(OSError):
        outputs.write_tables(tmp_path, [rec])
    assert calls and calls[0][1] == "measurements.csv" and calls[0][0].startswith(".measurements.csv.")
    assert all((tmp_path / f"{n}.csv").read_text() == "OLD\n" for n in ("measurements", "lesions", "errors"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["errors.csv", "lesions.csv", "measurements.csv"]
    monkeypatch.undo()
    outputs.write_tables(tmp_path, [rec])
    assert (tmp_path / "errors.csv").read_text().splitlines() == [
        "file,sha256,error,kind,reason", "x.dcm,,NotAnImageError,not_an_image,empty"]
    assert (tmp_path / "lesions.csv").read_text().startswith("file,sha256,label,area_mm2,")


def test_clean_temp_files_only_removes_temporaries(tmp_path):
    (tmp_path / ".measurements.csv.abc123.tmp").write_text("x")
    (tmp_path / "keep.tmp").write_text("x")
    (tmp_path / "measurements.csv").write_text("x")
    assert outputs.clean_temp_files([tmp_path, tmp_path / "absent"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.tmp", "measurements.csv"]


# ----------------------------------------------------------------------------- executor
def crash_or_echo(task: ImageTask) -> dict:
    """Test worker: kills its process on 'crash', raises on 'raise', else echoes."""
    if task.path == "crash":
        os._exit(3)
    if task.path == "raise":
        raise RuntimeError("escaped the worker")
    return {"status": "ok", "image": {"file": task.path}}


def test_executor_isolates_a_crashing_image_and_keeps_the_others():
    paths = ["a", "b", "crash", "c", "raise", "d", "e"]
    got = dict(execute(enumerate(ImageTask(p) for p in paths), crash_or_echo, jobs=2))
    assert sorted(got) == list(range(len(paths)))
    for i, p in enumerate(paths):
        if p == "crash":
            assert got[i]["error"]["error"] == "InternalError"
            assert "worker process died" in got[i]["error"]["reason"]
        elif p == "raise":
            assert got[i]["error"]["error"] == "InternalError"
            assert "RuntimeError: escaped the worker" in got[i]["error"]["reason"]
        else:
            assert got[i] == {"status": "ok", "image": {"file": p}}


def test_inline_executor_never_loses_an_image():
    got = dict(execute(enumerate([ImageTask("a"), ImageTask("raise")]), crash_or_echo, jobs=1))
    assert got[0]["status"] == "ok" and got[1]["error"]["error"] == "InternalError"


def test_worker_records_typed_errors(tmp_path):
    rec = measure_one(ImageTask(str(tmp_path / "absent.dcm")))
    assert rec["status"] == "error"
    assert rec["error"]["error"] == "ImageNotFoundError" and rec["error"]["kind"] == "not_found"
    json.dumps(rec)  # plain data only


# ----------------------------------------------------------------------------- overlays
def _radiograph(rows, cols, spacing):
    rng = np.random.default_rng(0)
    pixels = rng.normal(1000, 50, (rows, cols)).astype(np.float32)
    sp = Spacing(spacing, SpacingSource.USER if spacing else SpacingSource.UNKNOWN,
                 SpacingPlane.PATIENT if spacing else SpacingPlane.NONE)
    return Radiograph(pixels, sp, RadiographMeta(source_path="x", sha256="0" * 64, file_format="png"))


@pytest.mark.parametrize("spacing", [(0.1, 0.1), None])
def test_overlay_is_reduced_and_marks_lesions(spacing):
    rg = _radiograph(1500, 1200, spacing)
    labels = np.zeros(rg.shape, np.int32)
    labels[700:760, 500:580] = 1
    labels[100:104, 100:103] = 7  # a tiny lesion still gets a contour
    img = render_overlay(rg, labels, total_area_mm2=12.3 if spacing else None)
    assert img.shape == (1024, 819, 3) == (*overlay_size(rg.shape), 3) and img.dtype == np.uint8
    coloured = (img[..., 0] != img[..., 1]) | (img[..., 1] != img[..., 2])
    assert coloured[470:525, 335:400].any() and coloured[60:80, 60:80].any()
    small = render_overlay(_radiograph(300, 200, spacing), np.zeros((300, 200), np.int32))
    assert small.shape == (300, 200, 3)  # never enlarged


def test_overlay_names_are_safe_and_distinct():
    a = overlay_name("/data/Ünïcode name (1).dcm", "ab" * 32)
    b = overlay_name("/other/Ünïcode name (1).dcm", "cd" * 32)
    assert a != b and a.endswith("_abababababab.png")
    assert all(c.isalnum() or c in "._-" for c in a)
    assert overlay_name("/x/....dcm", "ef" * 32) == "image_efefefefefef.png"


# ----------------------------------------------------------------------------- roi and params files
def test_roi_file_forms(tmp_path):
    tri = [[0, 0], [0, 10], [10, 0]]
    sq = [[0, 0], [0, 5], [5, 5], [5, 0]]
    f = tmp_path / "roi.json"
    f.write_text(json.dumps(tri))
    assert load_roi(f).for_file("any.dcm") == [tri]
    f.write_text(json.dumps([tri, sq]))
    assert load_roi(f).for_file("any.dcm") == [tri, sq]
    f.write_text(json.dumps({"knee.dcm": tri, "p7/knee.dcm": [sq], "*": sq}))
    spec = load_roi(f)
    assert spec.for_file("/data/p3/knee.dcm") == [tri]
    assert spec.for_file("/data/p7/knee.dcm") == [sq]  # the longest matching path end wins
    assert spec.for_file("/data/p7/hand.dcm") == [sq]  # "*"
    assert RoiSpec(by_name={"knee.dcm": [tri]}).for_file("hand.dcm") is None
    for bad in ("[[0, 0], [1, 1]]", '{"a.dcm": "x"}', "[1, 2, 3]", '"x"', "not json", "[[[0, 0], [0, 1], [1, null]]]"):
        f.write_text(bad)
        with pytest.raises(BatchUsageError, match="--roi"):
            load_roi(f)
    with pytest.raises(BatchUsageError, match="cannot read"):
        load_roi(tmp_path / "absent.json")


def test_params_files_and_set(tmp_path):
    toml = tmp_path / "p.toml"
    toml.write_text("k_high = 7.0\nring_fit = 1\n")
    assert load_params(toml) == SegmentationParams(k_high=7.0, ring_fit=1)
    nested = tmp_path / "p2.toml"
    nested.write_text("[segmentation]\nk_high = 7.0\n")
    assert load_params(nested, ["k_low=1.5"]) == SegmentationParams(k_high=7.0, k_low=1.5)
    # A run's params.json is accepted back.
    pj = tmp_path / "params.json"
    pj.write_text(json.dumps({"calcimeasure_version": "0.1.0", "params_digest": "x",
                              "segmentation": SegmentationParams(k_high=9.0).to_dict()}))
    assert load_params(pj).digest() == SegmentationParams(k_high=9.0).digest()
    assert parse_set(["ring_fit=1", "k_high=5"]) == {"ring_fit": 1, "k_high": 5.0}
    for args, match in [
        ((tmp_path / "absent.toml", None), "cannot read"),
        ((None, ["k_hihg=5"]), "did you mean 'k_high'"),
        ((None, ["k_high"]), "name=value"),
        ((None, ["ring_fit=0.5"]), "integer"),
        ((None, ["k_high=-1"]), "bad segmentation parameters"),
    ]:
        with pytest.raises(BatchUsageError, match=match):
            load_params(*args)
    bad = tmp_path / "bad.toml"
    bad.write_text("k_high = \n")
    with pytest.raises(BatchUsageError, match="not valid TOML"):
        load_params(bad)
    unknown = tmp_path / "u.json"
    unknown.write_text('{"nope": 1}')
    with pytest.raises(BatchUsageError, match="unknown segmentation parameter"):
        load_params(unknown)
    yaml = tmp_path / "p.yaml"
    yaml.write_text("k_high: 1")
    with pytest.raises(BatchUsageError, match=".toml or .json"):
        load_params(yaml)


def test_settings_key_tracks_everything_that_changes_a_result():
    base = ImageTask("a.dcm", params=SegmentationParams().to_dict())
    k = settings_key(base, "0.1.0")
    assert settings_key(ImageTask("b.dcm", params=base.params, overlay_dir="/x"), "0.1.0") == k
    for other in (
        ImageTask("a.dcm", params=SegmentationParams(k_high=7).to_dict()),
        ImageTask("a.dcm", params=base.params, spacing_mm=(0.1, 0.1)),
        ImageTask("a.dcm", params=base.params, roi=[[[0, 0], [0, 1], [1, 1]]]),
        ImageTask("a.dcm", params=base.params, keep_ids=True),
        ImageTask("a.dcm", params=base.params, salt="secret"),
    ):
        assert settings_key(other, "0.1.0") != k
    assert settings_key(base, "0.2.0") != k
    assert "secret" not in repr(ImageTask("a", salt="secret"))
