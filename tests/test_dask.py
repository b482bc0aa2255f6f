"""The Dask back end: `--dask` (a LocalCluster started by the command) and `--scheduler ADDRESS`
(an existing cluster on loopback) give the same rows as `--jobs 1`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from calcimeasure.batch.dask_backend import dask_client, execute_dask
from calcimeasure.batch.worker import ImageTask, measure_one
from calcimeasure.cli import main
from test_study import write_pair
from test_study_resume import assert_same_study



@pytest.fixture(scope="module")
def films(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dask") / "in"
    write_pair(folder / "a", "hand", seed=31, patient="PAT-A", response="partial")
    write_pair(folder / "b", "knee", seed=32, patient="PAT-B", body_part="KNEE", response="progression")
    (folder / "junk").mkdir()
    (folder / "junk" / "notes").write_text("not an image\n")
    return folder


@pytest.fixture(scope="module")
def reference(films, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    assert main(["study", str(films), "--out", str(out), "--jobs", "1", "-q"]) == 1  # the junk file
    return out


def test_study_on_a_local_dask_cluster_gives_the_jobs1_rows(films, reference, tmp_path):
    out = tmp_path / "out"
    assert main(["study", str(films), "--out", str(out), "--dask", "--jobs", "2", "-q"]) == 1
    assert_same_study(out, reference)
    log = (out / "calcimeasure.log").read_text()
    assert "dask: local cluster of 2 worker(s) at tcp://127.0.0.1:" in log
    assert len(pd.read_csv(out / "changes.csv")) == 2
    assert list(pd.read_csv(out / "errors.csv")["error"]) == ["NotAnImageError"]


def test_study_and_measure_on_an_existing_cluster(films, reference, tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", scheduler_port=0,
                      dashboard_address=":0") as cluster:
        out = tmp_path / "out"
        assert main(["study", str(films), "--out", str(out), "--scheduler", cluster.scheduler_address, "-q"]) == 1
        assert_same_study(out, reference)
        m = tmp_path / "m"
        assert main(["measure", str(films), "--out", str(m), "--scheduler", cluster.scheduler_address, "-q"]) == 1
        pd.testing.assert_frame_equal(pd.read_csv(m / "measurements.csv").drop(columns=["elapsed_s"]),
                                      pd.read_csv(reference / "measurements.csv").drop(columns=["elapsed_s"]))
        # Workers return small records, never pixel arrays.
        with dask_client(scheduler=cluster.scheduler_address) as client:
            task = ImageTask(str(next(films.rglob("*.dcm"))))
            [(tid, rec)] = list(execute_dask([(7, task)], measure_one, client))
        assert tid == 7 and rec["status"] == "ok"
        assert len(repr(rec)) < 20_000 and "ndarray" not in repr(type(v) for v in rec.values())


def test_unreachable_scheduler_is_a_usage_error(films, tmp_path, capsys, monkeypatch):
    import socket

    monkeypatch.setenv("CALCIMEASURE_DASK_TIMEOUT", "1")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    code = main(["study", str(films), "--out", str(tmp_path / "o"), "--scheduler", f"tcp://127.0.0.1:{port}", "-q"])
    assert code == 2
    assert "cannot connect" in capsys.readouterr().err


def _opencv_threads() -> int:
    import cv2

    return cv2.getNumThreads()


def test_local_workers_run_opencv_single_threaded():
    """Each worker process already has a core: OpenCV's own threads would oversubscribe them
    (docs/performance_batch.md: the per-task times under 2 workers then equal those of 1)."""
    import cv2

    from calcimeasure.batch.runner import _worker_init

    with dask_client(local_workers=2) as client:
        assert set(client.run(_opencv_threads).values()) == {1}
    import signal

    before, handler = cv2.getNumThreads(), signal.getsignal(signal.SIGINT)
    try:
        _worker_init()  # the ProcessPoolExecutor workers' initializer (--jobs N)
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)
        signal.signal(signal.SIGINT, handler)
