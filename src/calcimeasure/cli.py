"""Command-line interface: ``calcimeasure <command> ...``.

Commands
--------
info
    Read radiographs (files or folders) and report size, spacing and its
    provenance, modality and warnings — or the typed error of each file that
    cannot be read.
measure
    Segment and measure many films into tables and overlays (resumable, parallel).
compare
    One baseline / follow-up pair: changes.csv, lesion_changes.csv, a side-by-side picture.
study
    A folder of films: group by patient and region, order by date, measure each film,
    compare every follow-up with its baseline; tables, pictures and report.html.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import __version__
from .discovery import iter_files
from .errors import CalcimeasureError, ImageReadError
from .io import read_image

__all__ = ["main"]

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def _spacing_arg(text: str) -> tuple[float, float]:
    try:
        parts = [float(v) for v in text.replace("x", ",").split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a spacing in mm: {text!r}") from exc
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"spacing must be one or two positive numbers in mm, got {text!r}")
    return parts[0], parts[1]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _cmd_info(args: argparse.Namespace) -> int:
    records, failures = [], 0
    for path in iter_files(args.paths):
        try:
            rg = read_image(path, spacing_mm=args.spacing, frame=args.frame)
        except ImageReadError as err:
            failures += 1
            records.append({"file": str(path), "error": type(err).__name__, "reason": err.reason})
            continue
        m = rg.meta
        records.append(
            {
                "file": str(path),
                "rows": rg.shape[0],
                "columns": rg.shape[1],
                "spacing_mm": list(rg.spacing_mm) if rg.spacing_mm else None,
                "spacing_source": rg.spacing_source.value,
                "spacing_plane": rg.spacing.plane.value,
                "spacing_detail": rg.spacing.detail,
                "modality": m.modality,
                "photometric": m.photometric_interpretation,
                "inverted": m.inverted,
                "body_part": m.body_part,
                "laterality": m.laterality,
                "study_date": m.study_date.isoformat() if m.study_date else None,
                "patient_key": m.patient_key,
                "warnings": list(m.warnings),
            }
        )
    if args.json:
        json.dump(records, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for r in records:
            if "error" in r:
                print(f"{r['file']}\n    ERROR {r['error']}: {r['reason']}")
                continue
            sp = "unknown (pixels)" if r["spacing_mm"] is None else "{:.4g} x {:.4g} mm".format(*r["spacing_mm"])
            print(
                f"{r['file']}\n    {r['rows']} x {r['columns']} px, {r['modality'] or '-'} "
                f"{r['photometric'] or ''}, spacing {sp} [{r['spacing_source']}]"
            )
            for w in r["warnings"]:
                print(f"    warning: {w}")
        ok = len(records) - failures
        print(f"{ok} image(s) read, {failures} failed", file=sys.stderr)
    return EXIT_SOME_FAILED if failures else EXIT_OK


def _command(args: argparse.Namespace) -> list[str]:
    return ["calcimeasure", *sys.argv[1:]] if args.argv is None else ["calcimeasure", *args.argv]


def _cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .batch import load_params, load_roi
    from .batch.config import load_comparison
    from .batch.study import CompareConfig, run_compare

    cfg = CompareConfig(
        baseline=args.baseline,
        followup=args.followup,
        out_dir=Path(args.out),
        params=load_params(args.params, args.set),
        comparison=load_comparison(args.params, partial_pct=args.partial_pct, progression_pct=args.progression_pct),
        roi=load_roi(args.roi),
        spacing_mm=args.spacing,
        picture=args.picture,
        parquet=args.parquet,
        command=_command(args),
    )
    code, rec = run_compare(cfg)
    if args.json:
        json.dump(rec, sys.stdout, indent=2)
        sys.stdout.write("\n")
    if rec.get("status") == "ok":
        p = rec["pair"]
        pct = p["area_change_pct"]
        print(f"{p['response']}: {'n/a' if pct is None else f'{pct:+.1f} %'} "
              f"(registration {'ok' if p['registration_ok'] else 'FAILED'}"
              f"{'; ' + p['flags'] if p['flags'] else ''}); results in {cfg.out_dir}", file=sys.stderr)
    else:
        e = rec["error"]
        print(f"calcimeasure: {e['file']}: {e['error']}: {e['reason']}", file=sys.stderr)
    return code


def _cmd_study(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .batch import load_params
    from .batch.config import load_comparison
    from .batch.grouping import load_manifest
    from .batch.study import StudyConfig, run_study

    cfg = StudyConfig(
        paths=list(args.paths),
        out_dir=Path(args.out),
        params=load_params(args.params, args.set),
        comparison=load_comparison(args.params, partial_pct=args.partial_pct, progression_pct=args.progression_pct),
        manifest=load_manifest(args.manifest),
        vs_previous=args.vs_previous,
        spacing_mm=args.spacing,
        jobs=args.jobs,
        dask=args.dask,
        scheduler=args.scheduler,
        resume=args.resume,
        force=args.force,
        overlays=args.overlays,
        parquet=args.parquet,
        keep_ids=args.keep_ids,
        quiet=args.quiet,
        verbose=args.verbose,
        command=_command(args),
    )
    return run_study(cfg).exit_code


def _cmd_measure(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .batch import MeasureConfig, load_params, load_roi, run_measure

    cfg = MeasureConfig(
        paths=list(args.paths),
        out_dir=Path(args.out),
        params=load_params(args.params, args.set),
        spacing_mm=args.spacing,
        roi=load_roi(args.roi),
        jobs=args.jobs,
        resume=args.resume,
        force=args.force,
        overlays=args.overlays,
        parquet=args.parquet,
        keep_ids=args.keep_ids,
        quiet=args.quiet,
        verbose=args.verbose,
        dask=args.dask,
        scheduler=args.scheduler,
        command=_command(args),
    )
    return run_measure(cfg).exit_code


_MEASURE_EPILOG = """\
examples:
  calcimeasure measure sample_images --out results/run1
  calcimeasure measure films/ --out results/run2 --jobs 4 --parquet
  calcimeasure measure films/ --out results/run2 --jobs 4 --resume      # continue a killed run
  calcimeasure measure scan.tif --spacing 0.1 --roi roi.json --out results/scan
  calcimeasure measure films/ --out results/k5 --params tuned.toml --set k_high=5
  calcimeasure measure films/ --out results/big --dask --jobs 4        # local Dask cluster
  calcimeasure measure /shared/films --out /shared/res --scheduler tcp://head:8786

outputs (in DIR):
  measurements.csv  one row per measured image (totals, spacing and its source, params digest)
  lesions.csv       one row per lesion (area, centroid, Feret, contrast, ...)
  errors.csv        one row per file that could not be measured (typed error, reason)
  params.json       parameters used, digest, version;  calcimeasure.log  the run's log
  overlays/         one PNG per image: contours with lesion ids and a mm scale bar
  .state/           per-image records behind --resume (the tables are rebuilt from them)

roi file (JSON, (row, col) pixel vertices):
  [[r, c], [r, c], [r, c], ...]                      one polygon for every image
  [[[r, c], ...], [[r, c], ...]]                     several polygons for every image
  {"knee.dcm": [[r, c], ...], "p7/hand.dcm": [...], "*": [...]}   per file name (or path end);
                                                     "*" = the others (default: whole image)

exit codes: 0 all images measured, 1 some failed (see errors.csv), 2 usage error,
            130 interrupted (rerun with --resume)
full reference: docs/cli.md
"""

_COMPARE_EPILOG = """\
examples:
  calcimeasure compare sample_images/case01_baseline.dcm sample_images/case01_followup.dcm --out results/case01
  calcimeasure compare before.dcm after.dcm --out res --json | jq .pair.response
  calcimeasure compare before.dcm after.dcm --out res --roi treated.json --progression-pct 20

outputs (in DIR, replaced by a later compare into the same DIR):
  changes.csv         one row: files, response, area change (mm2, %, anatomical %), registration
                      ok/quality/scale/rotation, flags, response bands, parameter digests
  lesion_changes.csv  one row per matched lesion group (ids, kind, status, areas, % change)
  errors.csv          the film that could not be read or compared, if any
  pairs/pair_*.png    baseline | follow-up, matched lesions in one colour and id, mm scale bars
  params.json         parameters and version

--roi: polygon(s) on the BASELINE, (row, col) vertices (format of 'measure --roi'); carried to the
follow-up through the registration.
exit codes: 0 compared, 1 a film could not be read or compared, 2 usage error
full reference: docs/cli.md
"""

_STUDY_EPILOG = """\
examples:
  calcimeasure study sample_images --out results/sample_images
  calcimeasure study pacs_export/ --out results/cohort --jobs 4 --vs-previous
  calcimeasure study pacs_export/ --out results/cohort --jobs 4 --resume       # continue a killed run
  calcimeasure study scans/ --out results/scans --manifest scans.csv --spacing 0.1
  calcimeasure study /shared/cohort --out /shared/results --scheduler tcp://head:8786
  calcimeasure study cohort/ --out results/dask --dask --jobs 2                 # local Dask cluster

grouping: films are grouped by patient key, body part, laterality and view (DICOM), ordered by
study date; the first film of a group is the baseline, each later one is compared with it
(--vs-previous: also with the film before it). Films without patient or date, alone in their
group, or duplicates are listed in groups.csv and the report, not lost.
manifest (CSV, overrides the metadata of the films it lists):
  file,patient,region,timepoint[,laterality][,view]
  scans/a_2019.tif,case7,knee,2019-03-01          timepoint: ISO date or a number (0, 1, 2 ...)
  scans/a_2020.tif,case7,knee,2020-04-11          file: name, path end, or absolute path

outputs (in DIR):
  measurements.csv, lesions.csv   as 'measure' (one row per film / per lesion)
  changes.csv                     one row per compared pair (response, % change, registration, flags)
  lesion_changes.csv              one row per matched lesion group of each pair
  groups.csv                      every measured film: group, order, role, or why it is in no pair
  errors.csv                      films that could not be measured, pairs that could not be compared
  report.html                     one self-contained file: waterfall plot, cohort table, pictures
  overlays/, pairs/               per-film overlays, per-pair side-by-side pictures
  params.json, calcimeasure.log, .state/ (records behind --resume)

exit codes: 0 everything measured and compared, 1 some films or pairs failed, 2 usage error,
            130 interrupted (rerun with --resume)
full reference: docs/cli.md
"""


def _add_backend_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--jobs", "-j", type=_positive_int, default=1, metavar="N",
                   help=f"{what} in parallel by N local processes (default 1); with --dask: N workers (at least 2)")
    backend = p.add_mutually_exclusive_group()
    backend.add_argument("--dask", action="store_true",
                         help="run on a new local Dask cluster (loopback; needs pip install 'calcimeasure[dask]')")
    backend.add_argument("--scheduler", metavar="ADDRESS",
                         help="run on the Dask cluster at ADDRESS (e.g. tcp://head:8786); workers must see the "
                         "input and output folders at the same paths")


def _add_comparison_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--partial-pct", type=float, metavar="PCT",
                   help="total change at or below which the response is partial (default -25)")
    p.add_argument("--progression-pct", type=float, metavar="PCT",
                   help="total change at or above which the response is progression (default 25)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calcimeasure",
        description="Measure ectopic calcifications on plain radiographs.",
        epilog="examples:\n  calcimeasure info sample_images\n"
        "  calcimeasure measure sample_images --out results/run1 --jobs 4\n"
        "  calcimeasure compare base.dcm follow.dcm --out results/pair --json\n"
        "  calcimeasure study sample_images --out results/sample_images --jobs 2\n"
        "run 'calcimeasure COMMAND --help' for the options of a command",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"calcimeasure {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    info = sub.add_parser(
        "info",
        help="read radiographs and report size, calibrated spacing and its provenance",
        description="Read radiographs (files, or folders searched recursively; formats are recognised "
        "by content) and report size, pixel spacing with its provenance (DICOM PS3.3 10.7.1), "
        "modality and warnings, or why a file cannot be read.",
        epilog="examples:\n  calcimeasure info sample_images\n  calcimeasure info scan.tif --spacing 0.1\n"
        "  calcimeasure info study/ --json > info.json\n"
        "exit codes: 0 all read, 1 some files failed, 2 usage error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    info.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    info.add_argument("--spacing", type=_spacing_arg, metavar="MM", help="pixel spacing in mm (ROW,COL or one value); overrides the files")
    info.add_argument("--frame", type=int, help="frame to read from multi-frame files (0-based)")
    info.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    info.set_defaults(func=_cmd_info)

    meas = sub.add_parser(
        "measure",
        help="segment and measure many radiographs into tables, overlays and a log (resumable)",
        description="Segment and measure every radiograph under PATH (files, or folders searched\n"
        "recursively) and write the results into DIR: per-image and per-lesion tables, the files\n"
        "that failed with their typed error, overlays, the parameters and a log. A bad file never\n"
        "stops the run. Input folders are never written to.",
        epilog=_MEASURE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    meas.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    meas.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder (created if needed)")
    meas.add_argument("--roi", metavar="FILE", help="JSON polygon(s) of (row, col) vertices, for all images or per file name")
    meas.add_argument("--spacing", type=_spacing_arg, metavar="MM", help="pixel spacing in mm (ROW,COL or one value); overrides the files")
    _add_backend_options(meas, "images measured")
    meas.add_argument("--params", metavar="FILE", help="segmentation parameters (.toml or .json: name = value; a run's params.json works too)")
    meas.add_argument("--set", action="append", metavar="NAME=VALUE", help="set one segmentation parameter (repeatable; wins over --params)")
    meas.add_argument("--resume", action="store_true", help="continue a previous run in DIR: images already measured with the same settings are not measured again")
    meas.add_argument("--force", action="store_true", help="discard a previous run in DIR (without --resume), and allow DIR inside an input folder")
    meas.add_argument("--overlays", action=argparse.BooleanOptionalAction, default=True, help="write an overlay PNG per image (default: yes)")
    meas.add_argument("--parquet", action="store_true", help="also write the tables as Parquet (needs pyarrow: pip install 'calcimeasure[parquet]')")
    meas.add_argument("--keep-ids", action="store_true", help="also report the raw Patient ID (default: only the pseudonymous patient_key)")
    verbosity = meas.add_mutually_exclusive_group()
    verbosity.add_argument("--quiet", "-q", action="store_true", help="print errors only")
    verbosity.add_argument("--verbose", "-v", action="store_true", help="print one line per image")
    meas.set_defaults(func=_cmd_measure)

    cmp_ = sub.add_parser(
        "compare",
        help="compare one baseline film with one follow-up film (response, area change, matched lesions)",
        description="Register the follow-up onto the baseline, segment and measure both films, match the\n"
        "lesions and classify the response; write the tables and a side-by-side picture into DIR.",
        epilog=_COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmp_.add_argument("baseline", metavar="BASELINE", help="the baseline film")
    cmp_.add_argument("followup", metavar="FOLLOWUP", help="the follow-up film")
    cmp_.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder (created if needed)")
    cmp_.add_argument("--json", action="store_true", help="print the result (pair row and lesion changes) as JSON on stdout")
    cmp_.add_argument("--roi", metavar="FILE", help="JSON polygon(s) of (row, col) vertices on the baseline")
    cmp_.add_argument("--spacing", type=_spacing_arg, metavar="MM", help="pixel spacing in mm for both films (ROW,COL or one value)")
    cmp_.add_argument("--params", metavar="FILE", help="parameters (.toml/.json): segmentation names, and a [comparison] table")
    cmp_.add_argument("--set", action="append", metavar="NAME=VALUE", help="set one segmentation parameter (repeatable)")
    _add_comparison_options(cmp_)
    cmp_.add_argument("--picture", action=argparse.BooleanOptionalAction, default=True, help="write the side-by-side PNG (default: yes)")
    cmp_.add_argument("--parquet", action="store_true", help="also write the tables as Parquet")
    cmp_.set_defaults(func=_cmd_compare)

    st = sub.add_parser(
        "study",
        help="a folder of films: group, order by date, measure, compare follow-ups with baselines, report.html",
        description="Find every radiograph under INPUT_DIR (DICOM by content, and supported rasters), group\n"
        "the films by patient, body part, laterality and view, order each group by study date,\n"
        "measure every film once and compare each follow-up with its group's baseline. Writes the\n"
        "tables, per-film overlays, per-pair pictures and one self-contained report.html into DIR.\n"
        "A bad file never stops the run; a killed run continues with --resume.",
        epilog=_STUDY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    st.add_argument("paths", nargs="+", metavar="INPUT_DIR", help="folders (searched recursively) or files")
    st.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder (created if needed)")
    st.add_argument("--manifest", metavar="CSV", help="file,patient,region,timepoint[,laterality][,view]: grouping of the films it lists")
    st.add_argument("--vs-previous", action="store_true", help="also compare each follow-up with the film before it")
    _add_backend_options(st, "films measured and pairs compared")
    st.add_argument("--spacing", type=_spacing_arg, metavar="MM", help="pixel spacing in mm (ROW,COL or one value); overrides the files")
    st.add_argument("--params", metavar="FILE", help="parameters (.toml/.json): segmentation names, and a [comparison] table")
    st.add_argument("--set", action="append", metavar="NAME=VALUE", help="set one segmentation parameter (repeatable)")
    _add_comparison_options(st)
    st.add_argument("--resume", action="store_true", help="continue a previous run in DIR (films and pairs done are not redone)")
    st.add_argument("--force", action="store_true", help="discard a previous run in DIR (without --resume), and allow DIR inside an input folder")
    st.add_argument("--overlays", action=argparse.BooleanOptionalAction, default=True, help="write per-film overlays and per-pair pictures (default: yes)")
    st.add_argument("--parquet", action="store_true", help="also write the tables as Parquet (needs pyarrow)")
    st.add_argument("--keep-ids", action="store_true", help="also report the raw Patient ID in measurements.csv")
    sverb = st.add_mutually_exclusive_group()
    sverb.add_argument("--quiet", "-q", action="store_true", help="print errors only")
    sverb.add_argument("--verbose", "-v", action="store_true", help="print one line per film and pair")
    st.set_defaults(func=_cmd_study)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``calcimeasure`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    args.argv = None if argv is None else list(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except CalcimeasureError as err:
        print(f"calcimeasure: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
