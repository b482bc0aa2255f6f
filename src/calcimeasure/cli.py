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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calcimeasure",
        description="Measure ectopic calcifications on plain radiographs.",
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``calcimeasure`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
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
