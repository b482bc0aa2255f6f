"""report.html looked at in headless Chromium (scripts/check_report.py): it renders and its images load.

Chromium is installed by `make test` (target `chromium`: Debian's package, as root). Without it these
tests FAIL with the command to run — they never skip silently.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from calcimeasure.batch.report import waterfall_png
from calcimeasure.cli import main
from test_study import parse_report, write_pair

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "scripts" / "check_report.py"



def chromium() -> str:
    sys.path.insert(0, str(CHECK.parent))
    try:
        from check_report import find_chromium
    finally:
        sys.path.pop(0)
    path = find_chromium()
    if path is None:
        pytest.fail("Chromium is not installed: run `make chromium` (as root: apt-get install -y chromium), "
                    "or set $CHROMIUM to a Chromium/Chrome executable")
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    write_pair(base / "in", "hand", seed=41, response="partial")
    write_pair(base / "in", "knee", seed=42, patient="PAT-K", body_part="KNEE", response="progression")
    out = base / "out"
    assert main(["study", str(base / "in"), "--out", str(out), "--vs-previous", "-q"]) == 0
    return out / "report.html"


def run_check(report: Path, *extra: str) -> tuple[int, dict]:
    chromium()
    proc = subprocess.run([sys.executable, str(CHECK), str(report), *extra], capture_output=True, text=True,
                          timeout=300)
    found = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    return proc.returncode, found


def test_report_renders_and_its_images_load_in_headless_chromium(report, tmp_path):
    shot = tmp_path / "shot.png"
    code, found = run_check(report, "--screenshot", str(shot))
    assert code == 0, found
    n_img = len(parse_report(report).imgs)
    assert found["images"] == "loaded" and found["images_ok"] == found["images_total"] == n_img == 3
    assert found["screenshot_ok"] and shot.stat().st_size > 10_000
    assert found["screenshot_size"] == [1280, 2000]


def test_the_check_notices_a_broken_image(report, tmp_path):
    broken = tmp_path / "broken.html"
    text = report.read_text()
    text = re.sub(r'src="data:image/jpeg;base64,[^"]+"', 'src="data:image/jpeg;base64,AAAAAAAA"', text, count=1)
    broken.write_text(text)
    code, found = run_check(broken)
    assert code == 1 and found["images"] == "broken" and found["images_ok"] == found["images_total"] - 1


def test_waterfall_plot():
    changes = pd.DataFrame({"pair_id": ["a", "b", "c", "d"], "area_change_pct": [-100.0, 40.0, None, 900.0],
                            "response": ["complete", "progression", "not_evaluable", "progression"]})
    png = waterfall_png(changes)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert waterfall_png(changes.iloc[[2]]) is None
