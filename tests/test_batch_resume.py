"""`calcimeasure measure --resume` after a SIGKILL, and `--jobs 2`: same rows as one uninterrupted run."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from calcimeasure.cli import main
from test_batch import make_films

N_FILMS = 6


@pytest.fixture(scope="module")
def films(tmp_path_factory):
    folder = tmp_path_factory.mktemp("films") / "in"
    make_films(folder, N_FILMS, seed0=10)
    return folder


@pytest.fixture(scope="module")
def reference(films, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    assert main(["measure", str(films), "--out", str(out), "--quiet"]) == 0
    return out


def tables(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    m = pd.read_csv(out / "measurements.csv")
    return m.drop(columns=["elapsed_s"]), pd.read_csv(out / "lesions.csv"), pd.read_csv(out / "errors.csv")


def assert_same_tables(a: Path, b: Path) -> None:
    for ta, tb in zip(tables(a), tables(b), strict=True):
        pd.testing.assert_frame_equal(ta, tb, check_exact=True)


def run_cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "calcimeasure", "measure", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_resume_after_sigkill_gives_the_uninterrupted_tables(films, reference, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(str(films), "--out", str(out), "--jobs", "1", "--quiet")
    state = out / ".state"
    deadline = time.monotonic() + 120
    while not (state.is_dir() and any(p.suffix == ".json" for p in state.iterdir())):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no image finished in 120 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    done_before = sorted(p.name for p in state.glob("*.json"))
    assert 1 <= len(done_before) < N_FILMS, "the run was not interrupted mid-way"

    resumed = run_cli(str(films), "--out", str(out), "--jobs", "1", "--resume", "--quiet")
    _stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr

    assert_same_tables(out, reference)
    meas = pd.read_csv(out / "measurements.csv")
    assert len(meas) == N_FILMS and meas["file"].is_unique
    les = pd.read_csv(out / "lesions.csv")
    assert not les.duplicated(subset=["file", "label"]).any()
    # Done images were not measured again: the second run's log says which were reused.
    log = (out / "calcimeasure.log").read_text()
    second = log[log.rindex("measure: "):]
    k = len(done_before)
    assert f"({N_FILMS - k} now, {k} reused from a previous run)" in second
    assert len(re.findall(r"INFO +reused ", second)) == k
    assert len(re.findall(r"INFO +measured ", second)) == N_FILMS - k
    # Every record is still the one written before the kill (not rewritten), and nothing is left half-written.
    assert set(done_before) <= {p.name for p in state.glob("*.json")}
    assert [p for p in out.rglob("*") if p.name.endswith(".tmp")] == []
    assert len(list((out / "overlays").glob("*.png"))) == N_FILMS


def test_jobs_2_gives_the_same_rows_as_jobs_1(films, reference, tmp_path):
    out = tmp_path / "out"
    assert main(["measure", str(films), "--out", str(out), "--jobs", "2", "--quiet"]) == 0
    assert_same_tables(out, reference)
    assert "jobs=2" in (out / "calcimeasure.log").read_text()


def test_resume_of_a_finished_run_reuses_everything(films, reference, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(reference, out)
    (out / "measurements.csv").unlink()  # the tables are rebuilt from the store
    assert main(["measure", str(films), "--out", str(out), "--resume", "--quiet"]) == 0
    assert_same_tables(out, reference)
    assert f"(0 now, {N_FILMS} reused" in (out / "calcimeasure.log").read_text().splitlines()[-1]


def test_resume_measures_again_what_changed(films, reference, tmp_path):
    import shutil

    src = tmp_path / "in"
    shutil.copytree(films, src)
    out = tmp_path / "out"
    paths = [str(src / "film00.dcm"), str(src / "film01.dcm"), str(src / "film02.dcm")]
    assert main(["measure", *paths, "--out", str(out), "--quiet"]) == 0
    # Content changed (another film under the same name), an overlay lost: those two are measured again.
    shutil.copy(films / "film05.dcm", src / "film01.dcm")
    next((out / "overlays").glob("film02_*.png")).unlink()
    assert main(["measure", *paths, "--out", str(out), "--resume", "--quiet"]) == 0
    last = (out / "calcimeasure.log").read_text().splitlines()[-1]
    assert "(2 now, 1 reused" in last
    meas = pd.read_csv(out / "measurements.csv")
    ref = pd.read_csv(reference / "measurements.csv")
    film05 = ref[ref["file"].str.endswith("film05.dcm")].iloc[0]
    assert meas.iloc[1]["sha256"] == film05["sha256"]
    assert meas.iloc[1]["total_area_px"] == film05["total_area_px"]
    # Other parameters: nothing is reused, nothing is mixed.
    assert main(["measure", *paths, "--out", str(out), "--resume", "--quiet", "--set", "k_high=7"]) == 0
    assert "(3 now, 0 reused" in (out / "calcimeasure.log").read_text().splitlines()[-1]
    meas = pd.read_csv(out / "measurements.csv")
    assert len(meas) == 3 and meas["params_digest"].nunique() == 1
