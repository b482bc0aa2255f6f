"""`calcimeasure study --resume` after a SIGKILL (while measuring, while comparing): same tables as one
uninterrupted run, nothing measured or compared twice."""

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
from test_study import write_pair


N_PAIRS = 3
VOLATILE = ["elapsed_s"]
#: registration quality is a float sum whose last bits may differ between processes (threaded OpenCV)
LOOSE = ["registration_quality", "registration_scale", "registration_rotation_deg"]


@pytest.fixture(scope="module")
def films(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume") / "in"
    for k in range(N_PAIRS):
        write_pair(folder / f"p{k}", f"film{k}", seed=20 + k, patient=f"PAT-{k}", rows=384, cols=336,
                   response=("partial", "progression", "stable")[k])
    return folder


@pytest.fixture(scope="module")
def reference(films, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    assert main(["study", str(films), "--out", str(out), "--quiet"]) == 0
    return out


def table(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / f"{name}.csv").drop(columns=VOLATILE, errors="ignore")


def assert_same_study(a: Path, b: Path) -> None:
    for name in ("measurements", "lesions", "errors", "groups", "lesion_changes"):
        pd.testing.assert_frame_equal(table(a, name), table(b, name), check_exact=True, obj=name)
    ca, cb = table(a, "changes"), table(b, "changes")
    pd.testing.assert_frame_equal(ca.drop(columns=LOOSE), cb.drop(columns=LOOSE), check_exact=True, obj="changes")
    pd.testing.assert_frame_equal(ca[LOOSE], cb[LOOSE], rtol=1e-9, obj="changes")


def start(films: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "calcimeasure", "study", str(films), "--out", str(out),
                             "--jobs", "1", "--quiet", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_when(proc: subprocess.Popen, ready) -> None:
    deadline = time.monotonic() + 120
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never reached the kill point"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def records(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


@pytest.mark.parametrize("stage", ["measuring", "comparing"])
def test_study_resume_after_sigkill(films, reference, tmp_path, stage):
    out = tmp_path / "out"
    state, pairs = out / ".state", out / ".state" / "pairs"
    proc = start(films, out)
    if stage == "measuring":
        kill_when(proc, lambda: len(records(state)) >= 1)
        done_films, done_pairs = len(records(state)), len(records(pairs))
        assert 1 <= done_films < 2 * N_PAIRS and done_pairs == 0, "the run was not interrupted while measuring"
    else:
        kill_when(proc, lambda: len(records(pairs)) >= 1)
        done_films, done_pairs = len(records(state)), len(records(pairs))
        assert done_films == 2 * N_PAIRS and 1 <= done_pairs < N_PAIRS, "the run was not interrupted while comparing"

    again = start(films, out)  # without --resume: refused, nothing lost
    _o, err = again.communicate(timeout=120)
    assert again.returncode == 2 and "--resume" in err

    resumed = start(films, out, "--resume")
    _o, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert_same_study(out, reference)
    assert len(pd.read_csv(out / "changes.csv")) == N_PAIRS
    assert not list(out.rglob(".*.tmp"))

    log = (out / "calcimeasure.log").read_text()
    second = log[log.rindex(" study: "):]
    assert len(re.findall(r"INFO +reused [^p]", second)) == done_films
    assert len(re.findall(r"INFO +measured ", second)) == 2 * N_PAIRS - done_films
    assert len(re.findall(r"INFO +reused pair ", second)) == done_pairs
    assert len(re.findall(r"INFO +compared ", second)) == N_PAIRS - done_pairs
