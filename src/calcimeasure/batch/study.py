"""``calcimeasure study``: measure a folder of films, pair follow-ups with baselines, compare, report.

Stages (each task a plain function of plain data, run inline, by local processes
or on a Dask cluster through :func:`calcimeasure.batch.runner.execute`):

1. **discover** every file under the inputs (by content, as ``measure``);
2. **measure** each file once with :func:`~calcimeasure.batch.worker.measure_one`
   — the same worker, record store (``DIR/.state``) and tables as ``measure``, so
   ``--resume`` skips the films already done;
3. **group** the measured films (:mod:`calcimeasure.batch.grouping`: patient
   key, body part, laterality, view; study date; or a manifest);
4. **compare** each planned pair with :func:`~calcimeasure.batch.pairs.compare_one`
   (records kept in ``DIR/.state/pairs`` for ``--resume``);
5. write the tables and ``report.html``, each atomically.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .. import __version__
from ..compare import ComparisonParams
from ..params import SegmentationParams, params_digest
from .config import BatchUsageError, RoiSpec, check_out_dir
from .grouping import GROUP_COLUMNS, Manifest, group_films, plan_pairs
from .outputs import (
    ERROR_COLUMNS,
    _csv_bytes,
    _write_parquet,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    clean_temp_files,
    parquet_available,
    tables_from_records,
    write_tables,
)
from .pairs import CHANGE_COLUMNS, LESION_CHANGE_COLUMNS, PairTask, compare_one
from .progress import Reporter
from .resume import StateStore, path_key, task_settings_key
from .runner import (
    OUTPUT_FILES,
    LocalPool,
    RunSummary,
    _setup_logging,
    backend_client,
    check_backend,
    discover,
    execute,
    image_tasks,
    measure_stage,
)

__all__ = ["StudyConfig", "StudySummary", "run_study", "STUDY_FILES", "STUDY_ERROR_COLUMNS", "pair_settings_key"]

log = logging.getLogger("calcimeasure.batch")

#: Files of ``DIR`` that belong to a study run (``--force`` removes them, with overlays/, pairs/, .state/).
STUDY_FILES = OUTPUT_FILES + (
    "changes.csv", "lesion_changes.csv", "groups.csv", "report.html",
    "changes.parquet", "lesion_changes.parquet", "groups.parquet",
)
#: Columns of a study's ``errors.csv``: those of ``measure`` plus the stage and, for a pair, its id and other film.
STUDY_ERROR_COLUMNS = ERROR_COLUMNS + ["stage", "pair_id", "other_file"]


@dataclass
class StudyConfig:
    """Options of a ``study`` run (the command line maps one to one)."""

    paths: list[str]
    out_dir: Path
    params: SegmentationParams = field(default_factory=SegmentationParams)
    comparison: ComparisonParams = field(default_factory=ComparisonParams)
    manifest: Manifest = field(default_factory=Manifest)
    vs_previous: bool = False
    spacing_mm: tuple[float, float] | None = None
    jobs: int = 1
    dask: bool = False
    scheduler: str | None = None
    resume: bool = False
    force: bool = False
    overlays: bool = True  #: per-film overlays and per-pair side-by-side pictures
    parquet: bool = False
    keep_ids: bool = False
    quiet: bool = False
    verbose: bool = False
    flush_every_s: float = 30.0
    progress_every_s: float = 10.0
    command: list[str] | None = None


@dataclass
class StudySummary(RunSummary):
    pairs: int = 0  #: pairs planned
    compared: int = 0  #: pairs with a row in changes.csv
    pairs_reused: int = 0
    pairs_failed: int = 0
    groups: int = 0
    ungrouped: int = 0  #: measured films in no pair (single, ungrouped, duplicate)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if (self.failed or self.pairs_failed) else 0


def pair_settings_key(task: PairTask, version: str = __version__) -> str:
    """12 hex digits over everything of a pair task but its paths and picture folder."""
    return task_settings_key(task, ("baseline", "followup", "pair_dir"), version)


class PairStore:
    """Finished pair records in ``DIR/.state/pairs`` (failed pairs are not stored: retried on resume)."""

    def __init__(self, out_dir: Path) -> None:
        self.dir = Path(out_dir) / ".state" / "pairs"

    def name(self, task: PairTask, sha_b: str, sha_f: str) -> str:
        return (f"{path_key(task.baseline)}-{path_key(task.followup)}-{sha_b[:12]}-{sha_f[:12]}-"
                f"{pair_settings_key(task)}.json")

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.dir / name).read_text("utf-8"))
        except (OSError, ValueError):
            return None

    def put(self, name: str, record: dict[str, Any]) -> dict[str, Any]:
        stored = {k: v for k, v in record.items() if k != "traceback"}
        atomic_write_json(self.dir / name, stored)
        return json.loads(json.dumps(stored))

    def is_empty(self) -> bool:
        return not (self.dir.is_dir() and any(self.dir.glob("*.json")))

    def clear(self) -> None:
        if self.dir.is_dir():
            shutil.rmtree(self.dir)


def _prepare(cfg: StudyConfig, store: StateStore, pstore: PairStore) -> None:
    out = cfg.out_dir
    previous = not store.is_empty() or not pstore.is_empty() or any((out / n).exists() for n in STUDY_FILES)
    if previous and not cfg.resume:
        if not cfg.force:
            raise BatchUsageError(
                f"--out {out} holds a previous run: pass --resume to continue it, or --force to "
                "discard it and start afresh (or choose another --out)"
            )
        store.clear()
        pstore.clear()
        for name in STUDY_FILES:
            (out / name).unlink(missing_ok=True)
        for sub in ("overlays", "pairs"):
            if (out / sub).is_dir():
                shutil.rmtree(out / sub)


def run_study(cfg: StudyConfig) -> StudySummary:
    """Run a study into ``cfg.out_dir`` (see docs/cli.md, ``calcimeasure study``).

    Raises
    ------
    BatchUsageError
        Output folder inside an input folder (without ``force``), a previous run there
        (without ``resume``/``force``), ``--parquet`` without pyarrow, Dask options
        without ``distributed``.
    """
    out = Path(cfg.out_dir)
    check_out_dir(out, cfg.paths, force=cfg.force)
    if cfg.parquet and not parquet_available():
        raise BatchUsageError("--parquet needs pyarrow, which is not installed: pip install 'calcimeasure[parquet]'")
    check_backend(cfg.jobs, cfg.dask, cfg.scheduler)
    missing = [p for p in cfg.paths if not Path(p).exists()]
    if missing:
        raise BatchUsageError(f"input not found: {', '.join(missing)}")

    # Local workers start importing while the inputs are discovered (closed in _run, or below).
    pool = LocalPool(cfg.jobs)
    if not (cfg.dask or cfg.scheduler):
        pool.prewarm()
    try:
        return _study(cfg, out, pool)
    finally:
        pool.close()


def _study(cfg: StudyConfig, out: Path, pool: LocalPool) -> StudySummary:
    files = discover(cfg.paths, out)
    out.mkdir(parents=True, exist_ok=True)
    store = StateStore(out)
    pstore = PairStore(out)
    _prepare(cfg, store, pstore)
    store.create()
    pstore.dir.mkdir(parents=True, exist_ok=True)
    overlay_dir, pair_dir = out / "overlays", out / "pairs"
    if cfg.overlays:
        overlay_dir.mkdir(exist_ok=True)
        pair_dir.mkdir(exist_ok=True)
    stale = clean_temp_files([out, store.dir, pstore.dir, overlay_dir, pair_dir])

    summary = StudySummary(total=len(files))
    reporter = Reporter(len(files), quiet=cfg.quiet, verbose=cfg.verbose, interval=cfg.progress_every_s)
    handlers = _setup_logging(out, reporter)
    try:
        return _run(cfg, out, files, store, pstore, overlay_dir, pair_dir, reporter, summary, stale, pool)
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()


def _settings(cfg: StudyConfig) -> dict[str, Any]:
    return {
        "calcimeasure_version": __version__,
        "params_digest": cfg.params.digest(),
        "segmentation": cfg.params.to_dict(),
        "comparison_digest": params_digest(cfg.comparison.to_dict()),
        "comparison": cfg.comparison.to_dict(),
        "spacing_mm": list(cfg.spacing_mm) if cfg.spacing_mm else None,
        "manifest_file": cfg.manifest.source,
        "manifest_sha256": cfg.manifest.sha256,
        "vs_previous": cfg.vs_previous,
        "keep_ids": cfg.keep_ids,
        "command": cfg.command,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _run(cfg, out, files, store, pstore, overlay_dir, pair_dir, reporter, summary, stale, pool) -> StudySummary:
    salt = os.environ.get("CALCIMEASURE_PATIENT_SALT")
    backend = "dask " + (cfg.scheduler or "local cluster") if (cfg.dask or cfg.scheduler) else f"jobs={cfg.jobs}"
    log.info("calcimeasure %s study: %d input file(s), out=%s, %s, params %s, comparison %s%s",
             __version__, len(files), out, backend, cfg.params.digest(), params_digest(cfg.comparison.to_dict()),
             ", resume" if cfg.resume else "")
    if cfg.command is not None:
        log.debug("command: %s", " ".join(cfg.command))
    if stale:
        log.info("removed %d temporary file(s) left by an interrupted run", stale)
    for key in cfg.manifest.unmatched_keys(files):
        log.warning("--manifest: %r matches no input file", key)
    if not files:
        log.warning("no input files found under %s", ", ".join(map(str, cfg.paths)))
    settings = _settings(cfg)
    atomic_write_json(out / "params.json", settings)

    tasks, skeys = image_tasks(files, params=cfg.params.to_dict(), spacing_mm=cfg.spacing_mm, roi=RoiSpec(),
                               keep_ids=cfg.keep_ids, overlay_dir=overlay_dir if cfg.overlays else None, salt=salt)

    def flush(records: dict[int, dict[str, Any]]) -> None:
        write_tables(out, [records[i] for i in sorted(records)], keep_ids=cfg.keep_ids)

    started = time.perf_counter()
    # One pool of local worker processes for both stages (their imports are paid once).
    with backend_client(cfg.jobs, cfg.dask, cfg.scheduler) as client:
        with reporter:
            records = measure_stage(tasks, skeys, out=out, store=store, resume=cfg.resume, overlays=cfg.overlays,
                                    jobs=cfg.jobs, client=client, reporter=reporter, summary=summary, flush=flush,
                                    flush_every_s=cfg.flush_every_s, pool=pool)
        ordered = [records[i] for i in sorted(records)]
        flush(records)
        if summary.interrupted:
            return _finish(cfg, out, summary, ordered, [], [], [], settings, started)

        images = [r["image"] for r in ordered if r.get("status") == "ok"]
        groups, films = group_films(images, cfg.manifest, salt=salt)
        plans = plan_pairs(groups, vs_previous=cfg.vs_previous)
        summary.groups = len(groups)
        summary.ungrouped = sum(1 for f in films if f.group is None)
        summary.pairs = len(plans)
        log.info("grouping: %d group(s), %d pair(s) to compare, %d film(s) in no pair", len(groups), len(plans),
                 summary.ungrouped)
        for f in films:
            if f.group is None:
                log.info("not paired: %s (%s: %s)", f.file, f.role, f.reason)

        ptasks: list[PairTask] = []
        pnames: list[str] = []
        for plan in plans:
            b, f = plan.baseline, plan.followup
            extra = []
            if plan.interval_days == 0:
                extra.append("same study date as the film it is compared with")
            info = {"group": plan.group, "comparison": plan.comparison, "patient_key": b.patient_key,
                    "body_part": b.body_part, "laterality": b.laterality, "view": b.view,
                    "baseline_date": b.timepoint, "followup_date": f.timepoint,
                    "interval_days": plan.interval_days, "extra_flags": extra}
            t = PairTask(baseline=b.file, followup=f.file, params=cfg.params.to_dict(),
                         comparison=cfg.comparison.to_dict(), spacing_mm=cfg.spacing_mm,
                         pair_dir=str(pair_dir) if cfg.overlays else None, pair_id=plan.pair_id, info=info, salt=salt)
            ptasks.append(t)
            pnames.append(pstore.name(t, b.sha256, f.sha256))

        pair_records: dict[int, dict[str, Any]] = {}
        todo = []
        for k, t in enumerate(ptasks):
            rec = pstore.get(pnames[k]) if cfg.resume else None
            if rec is not None and cfg.overlays:
                pic = rec["pair"].get("side_by_side")
                if not (pic and (out / pic).is_file()):
                    rec = None
            if rec is None:
                todo.append((k, t))
            else:
                pair_records[k] = rec
                summary.pairs_reused += 1
                log.info("reused pair %s (compared in a previous run)", t.pair_id)
        preporter = Reporter(len(ptasks), quiet=cfg.quiet, verbose=cfg.verbose, interval=cfg.progress_every_s,
                             stream=reporter.stream, description="comparing", unit="pair")
        log.removeHandler(reporter.handler)
        log.addHandler(preporter.handler)
        try:
            with preporter:
                for _ in range(summary.pairs_reused):
                    preporter.advance(True, skipped=True)
                try:
                    for k, rec in execute(todo, compare_one, jobs=cfg.jobs, client=client, pool=pool):
                        t = ptasks[k]
                        if rec.get("traceback"):
                            log.debug("traceback for pair %s:\n%s", t.pair_id, rec["traceback"].rstrip())
                        if rec.get("status") == "ok":
                            rec = pstore.put(pnames[k], rec)
                            p = rec["pair"]
                            pct = p["area_change_pct"]
                            log.info("compared %s: %s -> %s: %s%s", t.pair_id, t.baseline, t.followup, p["response"],
                                     f" ({pct:+.1f} %)" if pct is not None else "")
                        else:
                            e = rec["error"]
                            if "stage" not in e:  # e.g. a Dask KilledWorker: no pair context from the worker
                                e.update(stage="compare", pair_id=t.pair_id, other_file=t.baseline)
                            log.error("failed pair %s (%s -> %s): %s: %s", t.pair_id, t.baseline, t.followup,
                                      e["error"], e["reason"])
                        pair_records[k] = rec
                        preporter.advance(rec.get("status") == "ok")
                except KeyboardInterrupt:
                    summary.interrupted = True
        finally:
            log.removeHandler(preporter.handler)
            log.addHandler(reporter.handler)

    # Consistency: the pair task segments both films again; totals must equal measurements.csv.
    by_file = {im["file"]: im for im in images}
    for rec in pair_records.values():
        if rec.get("status") != "ok":
            continue
        p = rec["pair"]
        for side in ("baseline", "followup"):
            im = by_file.get(p[f"{side}_file"])
            # The paired reading may add lesions on a film (counted apart): the rest must agree.
            own = p[f"{side}_total_px"] - (p.get(f"{side}_guided_px") or 0)
            if im is not None and im["total_area_px"] != own:
                msg = (f"{side} total differs from measurements.csv ({own} px without the paired reading's "
                       f"additions vs {im['total_area_px']} px): non-deterministic segmentation?")
                p["flags"] = "; ".join(filter(None, [p["flags"], msg]))
                log.warning("pair %s: %s", p["pair_id"], msg)
    pairs_ordered = [pair_records[k] for k in sorted(pair_records)]
    return _finish(cfg, out, summary, ordered, pairs_ordered, films, plans, settings, started)


def _finish(cfg, out, summary, records, pair_records, films, plans, settings, started) -> StudySummary:
    measurements, lesions, errors = tables_from_records(records, keep_ids=cfg.keep_ids)
    errors = errors.assign(stage="measure", pair_id=None, other_file=None)
    changes = pd.DataFrame([r["pair"] for r in pair_records if r.get("status") == "ok"], columns=CHANGE_COLUMNS)
    lchanges = pd.DataFrame([row for r in pair_records if r.get("status") == "ok" for row in r["lesion_changes"]],
                            columns=LESION_CHANGE_COLUMNS)
    perr = pd.DataFrame([r["error"] for r in pair_records if r.get("status") != "ok"], columns=STUDY_ERROR_COLUMNS)
    errors = pd.concat([errors[STUDY_ERROR_COLUMNS], perr], ignore_index=True) if len(perr) else errors[STUDY_ERROR_COLUMNS]
    groups = pd.DataFrame([f.row() for f in films], columns=GROUP_COLUMNS)
    summary.compared = len(changes)
    summary.pairs_failed = len(perr)

    tables = {"measurements": measurements, "lesions": lesions, "errors": errors, "changes": changes,
              "lesion_changes": lchanges, "groups": groups}
    for name, frame in tables.items():
        atomic_write_bytes(out / f"{name}.csv", _csv_bytes(frame))
        if cfg.parquet:
            _write_parquet(out / f"{name}.parquet", frame)

    from .report import build_report

    settings = {**settings, "elapsed_s": round(time.perf_counter() - started, 1), "interrupted": summary.interrupted}
    # The pictures are re-encoded on this machine: as many threads as it was asked to use (at most its CPUs).
    html = build_report(out, tables, settings, threads=max(1, min(cfg.jobs, os.cpu_count() or 1)))
    atomic_write_text(out / "report.html", html)

    msg = (f"{summary.measured} image(s) measured ({summary.computed} now, {summary.reused} reused), "
           f"{summary.failed} failed, of {summary.total}; {summary.compared} pair(s) compared "
           f"({summary.pairs_reused} reused), {summary.pairs_failed} failed, of {summary.pairs}; "
           f"{summary.ungrouped} film(s) in no pair; report: {out / 'report.html'}")
    if summary.interrupted:
        msg = f"interrupted: {msg}; run again with --resume to finish"
        log.warning(msg)
    else:
        log.info("run finished: " + msg)
        if not cfg.quiet and not cfg.verbose:
            print(msg, file=sys.stderr)
    return summary


# ---------------------------------------------------------------------------------------------
# One pair: ``calcimeasure compare``


@dataclass
class CompareConfig:
    baseline: str
    followup: str
    out_dir: Path
    params: SegmentationParams = field(default_factory=SegmentationParams)
    comparison: ComparisonParams = field(default_factory=ComparisonParams)
    roi: RoiSpec = field(default_factory=RoiSpec)
    spacing_mm: tuple[float, float] | None = None
    picture: bool = True
    parquet: bool = False
    command: list[str] | None = None


def run_compare(cfg: CompareConfig) -> tuple[int, dict[str, Any]]:
    """Compare one pair into ``cfg.out_dir``: ``changes.csv`` (one row), ``lesion_changes.csv``,
    ``errors.csv``, ``params.json`` and ``pairs/<pair>.png``; returns (exit code, record).
    The files of a previous ``compare`` in ``DIR`` are replaced."""
    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise BatchUsageError(f"--out {out}: exists and is not a folder")
    for p in (cfg.baseline, cfg.followup):
        if Path(p).is_dir():
            raise BatchUsageError(f"{p} is a folder: compare takes two image files (use 'calcimeasure study' for folders)")
    if cfg.parquet and not parquet_available():
        raise BatchUsageError("--parquet needs pyarrow, which is not installed: pip install 'calcimeasure[parquet]'")
    out.mkdir(parents=True, exist_ok=True)
    pair_dir = out / "pairs"
    if cfg.picture:
        pair_dir.mkdir(exist_ok=True)
    clean_temp_files([out, pair_dir])
    task = PairTask(baseline=cfg.baseline, followup=cfg.followup, params=cfg.params.to_dict(),
                    comparison=cfg.comparison.to_dict(), spacing_mm=cfg.spacing_mm,
                    roi=cfg.roi.for_file(cfg.baseline), pair_dir=str(pair_dir) if cfg.picture else None,
                    pair_id="pair", info={"comparison": "baseline"}, salt=os.environ.get("CALCIMEASURE_PATIENT_SALT"))
    rec = compare_one(task)
    settings = {
        "calcimeasure_version": __version__,
        "params_digest": cfg.params.digest(),
        "segmentation": cfg.params.to_dict(),
        "comparison_digest": params_digest(cfg.comparison.to_dict()),
        "comparison": cfg.comparison.to_dict(),
        "spacing_mm": list(cfg.spacing_mm) if cfg.spacing_mm else None,
        "roi_file": cfg.roi.source,
        "roi_sha256": cfg.roi.sha256,
        "command": cfg.command,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(out / "params.json", settings)
    ok = rec.get("status") == "ok"
    frames = {
        "changes": pd.DataFrame([rec["pair"]] if ok else [], columns=CHANGE_COLUMNS),
        "lesion_changes": pd.DataFrame(rec["lesion_changes"] if ok else [], columns=LESION_CHANGE_COLUMNS),
        "errors": pd.DataFrame([] if ok else [rec["error"]], columns=STUDY_ERROR_COLUMNS),
    }
    for name, frame in frames.items():
        atomic_write_bytes(out / f"{name}.csv", _csv_bytes(frame))
        if cfg.parquet:
            _write_parquet(out / f"{name}.parquet", frame)
    return (0 if ok else 1), {k: v for k, v in rec.items() if k != "traceback"}
