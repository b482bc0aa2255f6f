"""Running batch tasks on a Dask ``distributed`` cluster (``--dask``, ``--scheduler``).

The tasks are the same plain functions the local back end runs
(:func:`~calcimeasure.batch.worker.measure_one`,
:func:`~calcimeasure.batch.pairs.compare_one`): submitted with
``client.submit``, collected with ``as_completed``. Workers read the files by
path — the inputs and the output folder (overlays, pair pictures) must be on a
file system the workers share, at the same paths — and return small records,
never pixel arrays. Workers need the same calcimeasure version installed.

``distributed`` is optional: ``pip install 'calcimeasure[dask]'``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .config import BatchUsageError
from .worker import error_record

__all__ = ["dask_available", "dask_client", "execute_dask", "WORKER_MALLOC_CONFIG", "QUIET_CLUSTER_CONFIG"]

log = logging.getLogger("calcimeasure.batch")


#: Dask config for worker processes spawned by a nanny: glibc keeps up to 256 MiB of freed memory
#: and serves allocations below 32 MiB from the heap, as in a plain Python process (see dask_client).
WORKER_MALLOC_CONFIG = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 268435456,
    "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 33554432,
}

#: Dask config for a quiet local cluster. Every server (scheduler, nannies, workers) runs a 20 ms
#: event-loop "tick" (it only detects a blocked loop), a 500 ms system monitor (dashboard figures)
#: and a 100 ms memory monitor: an idle 2-worker LocalCluster burns ~0.12 of a core on them (1.35 +
#: 0.47 + 0.45 CPU s in 20 s, measured), stolen from the workers on a small machine. At 1 s / 2 s /
#: 1 s: 0.35 CPU s in 20 s. The statistical profiler (10 ms stack sampling, for the dashboard's
#: profile page) is off. The memory limits still hold (checked every second).
QUIET_CLUSTER_CONFIG = {
    "distributed.admin.tick.interval": "1000ms",
    "distributed.admin.system-monitor.interval": "2000ms",
    "distributed.worker.memory.monitor-interval": "1000ms",
    "distributed.worker.profile.enabled": False,
}


def dask_available() -> bool:
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def _require() -> None:
    if not dask_available():
        raise BatchUsageError(
            "--dask / --scheduler need dask.distributed, which is not installed: "
            "pip install 'calcimeasure[dask]'"
        )


@contextlib.contextmanager
def dask_client(*, scheduler: str | None = None, local_workers: int = 2, processes: bool = True,
                threads_per_worker: int = 1) -> Iterator[Any]:
    """A connected ``distributed.Client``: to ``scheduler`` (an address such as
    ``tcp://10.0.0.5:8786``; connection timeout ``$CALCIMEASURE_DASK_TIMEOUT`` s, default 20), or else to a new ``LocalCluster`` of
    ``local_workers`` worker processes (one thread each) on the loopback
    interface, closed on exit.

    A local cluster spawns processes: call this from code run under
    ``if __name__ == "__main__":`` (the ``calcimeasure`` command is).
    """
    _require()
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        timeout = float(os.environ.get("CALCIMEASURE_DASK_TIMEOUT", "20"))
        try:
            client = Client(scheduler, timeout=f"{timeout}s")
        except (OSError, TimeoutError) as exc:
            raise BatchUsageError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
        try:
            log.info("dask: connected to %s (%d worker(s))", scheduler, len(client.scheduler_info().get("workers", {})))
            yield client
        finally:
            client.close()
        return
    # Quiet, loopback only. Memory: the nanny's default MALLOC_TRIM_THRESHOLD_=65536 fixes glibc's
    # mmap threshold at 128 kB, so every image-sized array is a fresh mmap (page faults) and a
    # film takes ~1.6x as long as in a plain process; keep freed memory for reuse instead.
    # Background timers: see QUIET_CLUSTER_CONFIG.
    with dask.config.set({"logging.distributed": "error", **QUIET_CLUSTER_CONFIG, **WORKER_MALLOC_CONFIG}):
        cluster = LocalCluster(
            n_workers=local_workers,
            threads_per_worker=threads_per_worker,
            processes=processes,
            host="127.0.0.1",
            scheduler_port=0,
            dashboard_address=":0",  # a free port on the loopback host (never the shared 8787)
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
        try:
            if processes:
                # One OpenCV thread per worker process (each worker already has a core; restarted
                # workers run the plugin again). Not done on someone else's cluster (--scheduler).
                client.register_plugin(_one_opencv_thread())
            log.info("dask: local cluster of %d worker(s) at %s", local_workers, cluster.scheduler_address)
            yield client
        finally:
            client.close()
            cluster.close()


def _one_opencv_thread() -> Any:
    """A Dask worker plugin making OpenCV single-threaded in each worker process."""
    from distributed import WorkerPlugin

    class OneOpenCVThread(WorkerPlugin):
        name = "calcimeasure-one-opencv-thread"

        def setup(self, worker: Any) -> None:
            import cv2

            cv2.setNumThreads(1)

    return OneOpenCVThread()


def _path_of(task: Any) -> str:
    return getattr(task, "path", None) or getattr(task, "followup", None) or "?"


def execute_dask(
    items: Iterable[tuple[int, Any]],
    fn: Callable[[Any], dict[str, Any]],
    client: Any,
    *,
    window: int | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Like :func:`calcimeasure.batch.runner.execute`, on a Dask client: yield
    ``(id, record)`` as tasks finish. At most ``window`` tasks are in flight
    (default: 4 per worker thread) so that a huge cohort is not submitted at once.
    A task whose worker died repeatedly (``KilledWorker``) or that raised becomes an
    ``InternalError`` record."""
    from distributed import as_completed

    if window is None:
        try:
            threads = sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
        except Exception:  # noqa: BLE001
            threads = 2
        window = max(2, 4 * max(1, threads))
    source = iter(items)
    meta: dict[Any, tuple[int, Any]] = {}
    ac = as_completed()
    for _ in range(window):
        nxt = next(source, None)
        if nxt is None:
            break
        fut = client.submit(fn, nxt[1], pure=False)
        meta[fut] = nxt
        ac.add(fut)
    try:
        for fut in ac:
            tid, task = meta.pop(fut)
            try:
                rec = fut.result()
            except Exception as exc:  # noqa: BLE001 - KilledWorker, pickling errors, ...
                rec = error_record(_path_of(task), exc, tb=traceback.format_exc())
            fut.release()
            nxt = next(source, None)
            if nxt is not None:
                nf = client.submit(fn, nxt[1], pure=False)
                meta[nf] = nxt
                ac.add(nf)
            yield tid, rec
    finally:
        for fut in list(meta):
            fut.cancel()
