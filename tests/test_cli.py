"""The `calcimeasure` command line: info command, exit codes, no patient identity in output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from calcimeasure.cli import main
from conftest import TEST_DATA

LOCAL = TEST_DATA / "real_dicom"


def test_info_json_lists_spacing_and_errors(tmp_path, capsys):
    shutil.copy(LOCAL / "rg2_cr_hip_j2k_lossy.dcm", tmp_path / "a")  # no extension: content decides
    shutil.copy(LOCAL / "nonimage_sr_comprehensive.dcm", tmp_path / "b.dcm")
    (tmp_path / "notes.txt").write_text("not an image\n")  # a document: skipped in folders
    (tmp_path / "1.2.840.99").write_text("not an image either\n")  # no extension: tried, fails
    code = main(["info", str(tmp_path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1  # some inputs failed
    by_name = {r["file"].rsplit("/", 1)[-1]: r for r in out}
    assert by_name["a"]["spacing_mm"] == [0.2, 0.2]
    assert by_name["a"]["spacing_source"] == "pixel_spacing_unknown_provenance"
    assert by_name["b.dcm"]["error"] == "NotAnImageError"
    assert by_name["1.2.840.99"]["error"] == "NotAnImageError"
    assert "notes.txt" not in by_name
    # Named explicitly, a document is read (and reported).
    assert main(["info", str(tmp_path / "notes.txt")]) == 1


def test_info_all_good_exits_zero(capsys):
    assert main(["info", str(LOCAL / "dx_vet_thorax_lateral_mono1_8bit_small.dcm")]) == 0
    out = capsys.readouterr().out
    assert "1.2 x 1.201 mm" in out and "imager_spacing_detector" in out


def test_info_user_spacing(capsys):
    assert main(["info", str(LOCAL / "xa1_cerebral_angio_sc_jpeg_lossless_sv1.dcm"), "--spacing", "0.3", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)[0]
    assert rec["spacing_mm"] == [0.3, 0.3] and rec["spacing_source"] == "user"


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    assert main(["info"]) == 2
    assert main(["info", "x", "--spacing", "-1"]) == 2


def test_console_script_runs_as_module():
    proc = subprocess.run([sys.executable, "-m", "calcimeasure", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "info" in proc.stdout
