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


def test_report_pictures_in_threads_give_the_same_report(report):
    """build_report(threads=2) re-encodes the pictures concurrently: the HTML is identical, in order."""
    from calcimeasure.batch.report import build_report

    out = report.parent
    tables = {n: pd.read_csv(out / f"{n}.csv") for n in
              ("measurements", "lesions", "errors", "changes", "lesion_changes", "groups")}
    settings = {"calcimeasure_version": "test", "comparison": {"partial_pct": -25.0, "progression_pct": 25.0}}
    one = build_report(out, tables, settings)
    two = build_report(out, tables, settings, threads=2)
    assert one == two
    assert one.count('class="pair-picture"') == len(tables["changes"]) >= 2


def test_waterfall_of_a_large_cohort_has_no_per_bar_labels():
    """Over 40 pairs the ids are left to the cohort table (unreadable, and most of the drawing time)."""
    import cv2
    import numpy as np

    n = 120
    rng = np.random.default_rng(0)
    pct = rng.uniform(-100, 150, n)
    changes = pd.DataFrame({"pair_id": [f"G{i:03d}-1" for i in range(n)], "area_change_pct": pct,
                            "response": np.where(pct <= -25, "partial", np.where(pct >= 25, "progression", "stable"))})
    img = cv2.imdecode(np.frombuffer(waterfall_png(changes), np.uint8), cv2.IMREAD_COLOR)
    few = cv2.imdecode(np.frombuffer(waterfall_png(changes.head(30)), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and few is not None
    def bottom_spine(a):  # lowest row crossed by a dark line over half the width: the axes' bottom edge
        return int(np.nonzero((a.min(axis=2) < 100).mean(axis=1) > 0.5)[0].max())

    # Rotated per-bar ids (30 pairs) take a band under the axes; one x label (120 pairs) a thin one.
    assert bottom_spine(img) > bottom_spine(few) + 15
