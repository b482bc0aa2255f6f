"""``calcimeasure measure``: measure many radiographs into tables, overlays and a log.

:func:`run_measure` does discovery, output-folder checks, scheduling (inline or
local processes), the resume store, progress and the output files. The
per-image work is :func:`calcimeasure.batch.worker.measure_one`; the scheduling
is :func:`execute`, which a Dask back end can replace (same task, same record).
"""

from __future__ import annotations

import datetime as _dt
import logging
import multiprocessing
import os
import shutil
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..discovery import iter_files
from ..params import SegmentationParams
from .config import BatchUsageError, RoiSpec, check_out_dir, is_inside
from .outputs import atomic_write_json, clean_temp_files, parquet_available, write_tables
from .progress import Reporter
from .resume import StateStore, settings_key
from .worker import ImageTask, error_record, measure_one

__all__ = ["MeasureConfig", "RunSummary", "run_measure", "execute", "LocalPool", "OUTPUT_FILES"]

log = logging.getLogger("calcimeasure.batch")

#: Files (and folders) of ``DIR`` that belong to a run; ``--force`` removes them.
OUTPUT_FILES = (
    "measurements.csv",
    "lesions.csv",
    "errors.csv",
    "measurements.parquet",
    "lesions.parquet",
    "errors.parquet",
    "params.json",
)
EXIT_OK, EXIT_SOME_FAILED, EXIT_INTERRUPTED = 0, 1, 130


@dataclass
class MeasureConfig:
    """Options of a ``measure`` run (the command line maps one to one)."""

    paths: list[str]
    out_dir: Path
    params: SegmentationParams = field(default_factory=SegmentationParams)
    spacing_mm: tuple[float, float] | None = None
    roi: RoiSpec = field(default_factory=RoiSpec)
    jobs: int = 1
    resume: bool = False
    force: bool = False
    overlays: bool = True
    parquet: bool = False
    keep_ids: bool = False
    quiet: bool = False
    verbose: bool = False
    #: Seconds between rewrites of the tables during a run (they are always written at the end).
    flush_every_s: float = 30.0
    #: Seconds between plain progress lines when not on a terminal.
    progress_every_s: float = 10.0
    command: list[str] | None = None
    #: Run on a new local Dask cluster (``--dask``) of ``jobs`` workers (at least 2).
    dask: bool = False
    #: Run on the Dask cluster at this address (``--scheduler``).
    scheduler: str | None = None


@dataclass
class RunSummary:
    total: int = 0
    measured: int = 0  #: images with a row in measurements.csv
    computed: int = 0  #: ... of which measured in this run
    reused: int = 0  #: ... of which taken from the state of a previous run (--resume)
    failed: int = 0
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_SOME_FAILED if self.failed else EXIT_OK


# ---------------------------------------------------------------------------------------------
# Scheduling


def _died(task: ImageTask) -> dict[str, Any]:
    return error_record(
        task.path,
        RuntimeError("the worker process died while measuring this image (crash or out of memory)"),
    )


def _worker_init() -> None:
    """Workers ignore Ctrl-C: the main process handles it (finishes the images in flight, writes the tables).

    One OpenCV thread per worker: the pool already has a process per core, and OpenCV's own
    threads would only oversubscribe them (results do not depend on the thread count).
    """
    import signal

    import cv2

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)


def _warm_up() -> None:
    """Import what the tasks need (run once per worker by :meth:`LocalPool.prewarm`)."""
    import calcimeasure.batch.pairs  # noqa: F401  (pulls compare, register, measure, segment)
    import calcimeasure.batch.worker  # noqa: F401


class LocalPool:
    """A ``ProcessPoolExecutor`` of ``jobs`` spawned workers, made on first use, that
    :func:`execute` restarts when a worker dies; reusable across stages (the workers'
    imports are paid once)."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self._pool: ProcessPoolExecutor | None = None

    def get(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_worker_init)
        return self._pool

    def prewarm(self) -> None:
        """Start the workers now and let them import calcimeasure (about a second) while the
        main process discovers and reads the inputs; no-op for one job."""
        if self.jobs > 1:
            ex = self.get()
            for _ in range(self.jobs):
                ex.submit(_warm_up)

    def restart(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None

    def __enter__(self) -> "LocalPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def execute(
    items: Iterable[tuple[int, ImageTask]],
    fn: Callable[[ImageTask], dict[str, Any]] = measure_one,
    *,
    jobs: int = 1,
    client: Any = None,
    pool: "LocalPool | None" = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Run ``fn`` on every task; yield ``(id, record)`` as they finish (any order).

    With a Dask ``client`` the tasks run on its cluster
    (:func:`calcimeasure.batch.dask_backend.execute_dask`) and ``jobs`` is ignored.
    A :class:`LocalPool` given as ``pool`` is used (and left open) so that several
    stages share the same worker processes; otherwise one is made and closed here.

    ``jobs == 1`` runs inline. Otherwise a ``ProcessPoolExecutor`` (spawned
    processes) with at most ``2 * jobs`` tasks in flight. If a worker process dies
    (segfault, out-of-memory kill), the pool is restarted and the tasks that were
    in flight are retried one at a time: the one that kills a worker alone is
    recorded as an ``InternalError``; the others are measured normally.
    """
    if client is not None:
        from .dask_backend import execute_dask

        yield from execute_dask(items, fn, client)
        return
    if jobs <= 1:
        for tid, task in items:
            try:
                yield tid, fn(task)
            except Exception as exc:  # noqa: BLE001 - fn should not raise; never lose an image
                yield tid, error_record(task.path, exc, tb=traceback.format_exc())
        return

    source = iter(items)
    suspects: deque[tuple[int, ImageTask]] = deque()
    own = pool is None
    holder = LocalPool(jobs) if own else pool
    inflight: dict[Any, tuple[int, ImageTask, bool]] = {}
    exhausted = False
    try:
        while True:
            # Submit: suspects one at a time in isolation, else fill the window.
            if suspects:
                if not inflight:
                    tid, task = suspects.popleft()
                    inflight[holder.get().submit(fn, task)] = (tid, task, True)
            else:
                while not exhausted and len(inflight) < 2 * jobs:
                    nxt = next(source, None)
                    if nxt is None:
                        exhausted = True
                        break
                    inflight[holder.get().submit(fn, nxt[1])] = (nxt[0], nxt[1], False)
            if not inflight:
                if exhausted and not suspects:
                    return
                continue
            try:
                done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:
                # Ctrl-C (workers ignore it): hand over the images in flight as they finish, then stop.
                log.warning("interrupted: finishing the %d image(s) in flight", len(inflight))
                for fut, (tid, _task, _isolated) in list(inflight.items()):
                    try:
                        rec = fut.result()
                    except KeyboardInterrupt:
                        raise
                    except Exception:  # noqa: BLE001 - measured again on --resume
                        continue
                    inflight.pop(fut)
                    yield tid, rec
                raise
            broken = False
            for fut in done:
                tid, task, isolated = inflight.pop(fut)
                try:
                    yield tid, fut.result()
                except BrokenProcessPool:
                    broken = True
                    if isolated:
                        yield tid, _died(task)
                    else:
                        suspects.append((tid, task))
                except Exception as exc:  # noqa: BLE001 - e.g. a pickling failure
                    yield tid, error_record(task.path, exc, tb=traceback.format_exc())
            if broken:
                log.warning("a worker process died; restarting the pool and retrying the images in flight")
                for fut, (tid, task, _isolated) in list(inflight.items()):
                    if fut.done() and not fut.exception():
                        yield tid, fut.result()
                    else:
                        suspects.append((tid, task))
                inflight.clear()
                holder.restart()
    finally:
        if own:
            holder.close()
        else:
            for fut in inflight:
                fut.cancel()


# ---------------------------------------------------------------------------------------------
# The run


def _setup_logging(out_dir: Path, reporter: Reporter) -> list[logging.Handler]:
    fh = logging.FileHandler(out_dir / "calcimeasure.log", encoding="utf-8")
    fh.setLevel(logging.DEBUG)
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
    log.setLevel(logging.DEBUG)
    log.propagate = False
    handlers = [fh, reporter.handler]
    for h in handlers:
        log.addHandler(h)
    return handlers


def _prepare_out_dir(cfg: MeasureConfig, store: StateStore) -> None:
    out = cfg.out_dir
    previous = not store.is_empty() or any((out / n).exists() for n in OUTPUT_FILES)
    if previous and not cfg.resume:
        if not cfg.force:
            raise BatchUsageError(
                f"--out {out} holds a previous run: pass --resume to continue it, or --force to "
                "discard it and start afresh (or choose another --out)"
            )
        store.clear()
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
        if (out / "overlays").is_dir():
            shutil.rmtree(out / "overlays")


def discover(paths: list[str], out: Path) -> list[Path]:
    """Input files under ``paths`` in order, each once, leaving out ``out`` (our own outputs)."""
    files, seen = [], set()
    for p in iter_files(paths):
        key = os.path.abspath(p)
        if key in seen or (out.exists() and p.exists() and is_inside(p, out)):
            continue  # named twice (a folder and a file in it), or one of our own outputs
        seen.add(key)
        files.append(p)
    return files


def check_backend(jobs: int, dask: bool, scheduler: str | None) -> None:
    """Usage errors of ``--jobs``, ``--dask``, ``--scheduler`` (before anything is read)."""
    if jobs < 1:
        raise BatchUsageError(f"--jobs must be at least 1, got {jobs}")
    if dask and scheduler:
        raise BatchUsageError("--dask starts a local cluster and --scheduler connects to one: give only one")
    if dask or scheduler:
        from .dask_backend import _require

        _require()


def backend_client(jobs: int, dask: bool, scheduler: str | None):
    """A context manager giving the Dask client of the run, or ``None`` (local processes)."""
    import contextlib

    if not (dask or scheduler):
        return contextlib.nullcontext(None)
    from .dask_backend import dask_client

    return dask_client(scheduler=scheduler, local_workers=max(2, jobs))


def run_measure(cfg: MeasureConfig) -> RunSummary:
    """Measure every image under ``cfg.paths`` into ``cfg.out_dir`` (see docs/cli.md).

    Raises
    ------
    BatchUsageError
        Output folder inside an input folder (without ``force``), a previous run in
        the output folder (without ``resume`` or ``force``), ``--parquet`` without pyarrow.
    """
    out = Path(cfg.out_dir)
    check_out_dir(out, cfg.paths, force=cfg.force)
    if cfg.parquet and not parquet_available():
        raise BatchUsageError(
            "--parquet needs pyarrow, which is not installed: pip install 'calcimeasure[parquet]' "
            "(or pip install pyarrow)"
        )
    check_backend(cfg.jobs, cfg.dask, cfg.scheduler)

    files = discover(cfg.paths, out)
    out.mkdir(parents=True, exist_ok=True)
    store = StateStore(out)
    _prepare_out_dir(cfg, store)
    store.create()
    overlay_dir = out / "overlays"
    if cfg.overlays:
        overlay_dir.mkdir(exist_ok=True)
    stale = clean_temp_files([out, store.dir, overlay_dir])

    summary = RunSummary(total=len(files))
    reporter = Reporter(len(files), quiet=cfg.quiet, verbose=cfg.verbose, interval=cfg.progress_every_s)
    handlers = _setup_logging(out, reporter)
    try:
        return _run(cfg, out, files, store, overlay_dir, reporter, summary, stale)
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()


def image_tasks(files: list[Path], *, params: dict[str, Any], spacing_mm, roi: RoiSpec, keep_ids: bool,
                overlay_dir: Path | None, salt: str | None) -> tuple[list[ImageTask], list[str]]:
    """The measure tasks of ``files`` and their resume settings keys."""
    tasks: list[ImageTask] = []
    skeys: list[str] = []
    for path in files:
        task = ImageTask(
            path=str(path),
            params=params,
            spacing_mm=spacing_mm,
            roi=roi.for_file(path),
            keep_ids=keep_ids,
            overlay_dir=str(overlay_dir) if overlay_dir is not None else None,
            salt=salt,
        )
        tasks.append(task)
        skeys.append(settings_key(task, __version__))
    return tasks, skeys


def measure_stage(
    tasks: list[ImageTask],
    skeys: list[str],
    *,
    out: Path,
    store: StateStore,
    resume: bool,
    overlays: bool,
    jobs: int,
    client: Any,
    reporter: Reporter,
    summary: RunSummary,
    flush: Callable[[dict[int, dict[str, Any]]], None],
    flush_every_s: float,
    pool: LocalPool | None = None,
) -> dict[int, dict[str, Any]]:
    """Measure ``tasks`` (reusing the records of a previous run with ``resume``),
    store each record, advance ``reporter``; return ``{input index: record}`` as
    read back from the store. Sets ``summary.interrupted`` on Ctrl-C."""
    done_names: dict[int, str] = {}
    records: dict[int, dict[str, Any]] = {}
    todo: list[tuple[int, ImageTask]] = []
    if resume:
        store.index()
    for i, task in enumerate(tasks):
        name = store.find_done(task.path, skeys[i]) if resume else None
        if name is not None:
            rec = store.read(name)
            ov = rec["image"].get("overlay")
            if overlays and not (ov and (out / ov).is_file()):
                name = None  # its overlay is missing (e.g. first run with --no-overlays): measure again
        if name is None:
            todo.append((i, task))
        else:
            done_names[i] = name
            records[i] = rec
            summary.reused += 1
            log.info("reused %s (measured in a previous run)", task.path)
    if resume:
        log.info("resume: %d image(s) already done, %d to measure", summary.reused, len(todo))

    last_flush = time.monotonic()
    for _ in range(summary.reused):
        reporter.advance(True, skipped=True)
    try:
        for i, record in execute(todo, measure_one, jobs=jobs, client=client, pool=pool):
            task = tasks[i]
            if record.get("traceback"):
                log.debug("traceback for %s:\n%s", task.path, record["traceback"].rstrip())
            name, stored = store.put(task.path, skeys[i], record)
            done_names[i] = name
            records[i] = stored
            if record["status"] == "ok":
                summary.computed += 1
                im = record["image"]
                area = (f"{im['total_area_mm2']:.2f} mm2" if im["total_area_mm2"] is not None
                        else f"{im['total_area_px']} px")
                log.info("measured %s: %d lesion(s), %s, %.2f s", task.path, im["lesion_count"], area, im["elapsed_s"])
            else:
                e = record["error"]
                log.error("failed %s: %s: %s", task.path, e["error"], e["reason"])
            reporter.advance(record["status"] == "ok")
            if time.monotonic() - last_flush >= flush_every_s:
                flush(records)
                last_flush = time.monotonic()
    except KeyboardInterrupt:
        summary.interrupted = True

    # Rebuilt from the store (the same records a later --resume reads).
    final = {}
    for i in sorted(done_names):
        try:
            final[i] = store.read(done_names[i])
        except (OSError, ValueError):  # pragma: no cover - records are written atomically
            final[i] = records[i]
    summary.failed = sum(1 for r in final.values() if r.get("status") != "ok")
    summary.measured = sum(1 for r in final.values() if r.get("status") == "ok")
    return final


def _run(cfg, out, files, store, overlay_dir, reporter, summary, stale) -> RunSummary:
    salt = os.environ.get("CALCIMEASURE_PATIENT_SALT")
    params_dict = cfg.params.to_dict()
    backend = "dask " + (cfg.scheduler or "local cluster") if (cfg.dask or cfg.scheduler) else f"jobs={cfg.jobs}"
    log.info(
        "calcimeasure %s measure: %d input file(s), out=%s, %s, params %s%s",
        __version__, len(files), out, backend, cfg.params.digest(), ", resume" if cfg.resume else "",
    )
    if cfg.command is not None:
        log.debug("command: %s", " ".join(cfg.command))
    if stale:
        log.info("removed %d temporary file(s) left by an interrupted run", stale)
    for key in cfg.roi.unmatched_keys(files):
        log.warning("--roi: %r matches no input file", key)
    if not files:
        log.warning("no input files found under %s", ", ".join(map(str, cfg.paths)))

    atomic_write_json(
        out / "params.json",
        {
            "calcimeasure_version": __version__,
            "params_digest": cfg.params.digest(),
            "segmentation": params_dict,
            "spacing_mm": list(cfg.spacing_mm) if cfg.spacing_mm else None,
            "roi_file": cfg.roi.source,
            "roi_sha256": cfg.roi.sha256,
            "keep_ids": cfg.keep_ids,
            "command": cfg.command,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )

    tasks, skeys = image_tasks(files, params=params_dict, spacing_mm=cfg.spacing_mm, roi=cfg.roi,
                               keep_ids=cfg.keep_ids, overlay_dir=overlay_dir if cfg.overlays else None, salt=salt)

    def flush(records: dict[int, dict[str, Any]]) -> None:
        write_tables(out, [records[i] for i in sorted(records)], keep_ids=cfg.keep_ids, parquet=cfg.parquet)

    with reporter, backend_client(cfg.jobs, cfg.dask, cfg.scheduler) as client:
        records = measure_stage(tasks, skeys, out=out, store=store, resume=cfg.resume, overlays=cfg.overlays,
                                jobs=cfg.jobs, client=client, reporter=reporter, summary=summary, flush=flush,
                                flush_every_s=cfg.flush_every_s)
    flush(records)
    msg = (
        f"{summary.measured} image(s) measured ({summary.computed} now, {summary.reused} reused from a "
        f"previous run), {summary.failed} failed, of {summary.total}; results in {out}"
    )
    if summary.interrupted:
        msg = f"interrupted: {msg}; run again with --resume to finish"
        log.warning(msg)
    else:
        log.info("run finished: " + msg)
        if not cfg.quiet and not cfg.verbose:
            reporter.print(msg)
    return summary
