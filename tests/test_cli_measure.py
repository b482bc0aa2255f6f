"""The `calcimeasure measure` command line: help, usage errors (exit 2), parameters, verbosity."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from calcimeasure.cli import main
from calcimeasure.params import SegmentationParams
from conftest import ROOT

FILM = ROOT / "sample_images" / "case04_baseline.dcm"


def test_help_lists_commands_and_examples(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "info" in out and "measure" in out and "examples:" in out
    assert main(["measure", "--help"]) == 0
    out = capsys.readouterr().out
    for text in ("--out DIR", "--resume", "--no-overlays", "--keep-ids", "examples:", "calcimeasure measure",
                 "exit codes:", "errors.csv", "roi file"):
        assert text in out, text


def test_console_script_help():
    proc = subprocess.run([sys.executable, "-m", "calcimeasure", "measure", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--jobs N" in proc.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["measure", str(FILM)],  # --out missing
        ["measure", "--out", "x"],  # no PATH
        ["measure", str(FILM), "--out", "x", "--jobs", "0"],
        ["measure", str(FILM), "--out", "x", "--jobs", "two"],
        ["measure", str(FILM), "--out", "x", "--spacing", "0"],
        ["measure", str(FILM), "--out", "x", "--quiet", "--verbose"],
        ["measure", str(FILM), "--out", "x", "--set", "no_such_param=1"],
        ["measure", str(FILM), "--out", "x", "--set", "k_high=abc"],
        ["measure", str(FILM), "--out", "x", "--params", "absent.toml"],
        ["measure", str(FILM), "--out", "x", "--roi", "absent.json"],
    ],
)
def test_usage_errors_exit_2_and_write_nothing(args, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_bad_params_and_roi_files_exit_2(tmp_path, capsys):
    bad = tmp_path / "p.toml"
    bad.write_text("k_hi = 3\n")
    assert main(["measure", str(FILM), "--out", str(tmp_path / "o"), "--params", str(bad)]) == 2
    assert "unknown segmentation parameter(s): 'k_hi' (did you mean 'k_high'?)" in capsys.readouterr().err
    roi = tmp_path / "roi.json"
    roi.write_text("[[0, 0], [5, 5]]")
    assert main(["measure", str(FILM), "--out", str(tmp_path / "o"), "--roi", str(roi)]) == 2
    assert "at least 3 vertices" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main(["measure", str(FILM), "--out", str(tmp_path / "afile")]) == 2
    assert not (tmp_path / "o").exists()


def test_params_file_and_set_reach_the_tables(tmp_path, capsys):
    params = tmp_path / "tuned.toml"
    params.write_text("[segmentation]\nk_high = 7.0\n")
    out = tmp_path / "o"
    assert main(["measure", str(FILM), "--out", str(out), "--params", str(params), "--set", "k_low=1.5",
                 "--no-overlays", "--verbose"]) == 0
    expected = SegmentationParams(k_high=7.0, k_low=1.5)
    row = pd.read_csv(out / "measurements.csv").iloc[0]
    assert row["params_digest"] == expected.digest()
    saved = json.loads((out / "params.json").read_text())
    assert saved["segmentation"] == expected.to_dict() and saved["params_digest"] == expected.digest()
    assert saved["command"][:2] == ["calcimeasure", "measure"]
    err = capsys.readouterr().err
    assert "measured " in err and "case04_baseline.dcm" in err  # --verbose: one line per image
    # The run's params.json is accepted back by --params.
    out2 = tmp_path / "o2"
    assert main(["measure", str(FILM), "--out", str(out2), "--params", str(out / "params.json"), "-q",
                 "--no-overlays"]) == 0
    assert pd.read_csv(out2 / "measurements.csv").iloc[0]["params_digest"] == expected.digest()
    assert capsys.readouterr().err == ""  # --quiet: nothing when all is well


def test_default_output_is_a_summary_and_errors(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["measure", str(FILM), str(tmp_path / "missing.dcm"), "--out", str(out), "--no-overlays"]) == 1
    err = capsys.readouterr().err
    assert "ImageNotFoundError" in err and "1 image(s) measured" in err and "1 failed" in err
    assert "measured " + str(FILM) not in err  # no per-image lines without --verbose
