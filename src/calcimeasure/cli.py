"""Command-line interface: ``calcimeasure <command> ...``.

Commands
--------
info
    Read radiographs (files or folders) and report size, spacing and its
    provenance, modality and warnings — or the typed error of each file that
    cannot be read.
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
        command=["calcimeasure", *sys.argv[1:]] if args.argv is None else ["calcimeasure", *args.argv],
    )
    return run_measure(cfg).exit_code


_MEASURE_EPILOG = """\
examples:
  calcimeasure measure sample_images --out results/run1
  calcimeasure measure films/ --out results/run2 --jobs 4 --parquet
  calcimeasure measure films/ --out results/run2 --jobs 4 --resume      # continue a killed run
  calcimeasure measure scan.tif --spacing 0.1 --roi roi.json --out results/scan
  calcimeasure measure films/ --out results/k5 --params tuned.toml --set k_high=5

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calcimeasure",
        description="Measure ectopic calcifications on plain radiographs.",
        epilog="examples:\n  calcimeasure info sample_images\n"
        "  calcimeasure measure sample_images --out results/run1 --jobs 4\n"
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
    meas.add_argument("--jobs", "-j", type=_positive_int, default=1, metavar="N", help="images measured in parallel by local processes (default 1)")
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
