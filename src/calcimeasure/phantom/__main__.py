"""Command line: ``python -m calcimeasure.phantom``.

Without a sub-command it writes the sample set::

    python -m calcimeasure.phantom --out sample_images

Sub-commands::

    python -m calcimeasure.phantom image --body-part knee --difficulty hard --seed 3 --out knee.dcm
    python -m calcimeasure.phantom pair --body-part hand --seed 5 --response partial --out pair_dir
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .anatomy import BODY_PART_LAYOUTS
from .dicom_writer import TRANSFER_SYNTAXES, write_dicom
from .pairs import RESPONSES, PairSpec, render_pair
from .render import render_image
from .samples import make_sample_images
from .specs import DIFFICULTIES, PhantomSpec


def _spec(args) -> PhantomSpec:
    extra = {}
    if args.photometric:
        extra["photometric"] = args.photometric
    return PhantomSpec.preset(args.difficulty, body_part=args.body_part, rows=args.rows, cols=args.cols,
                              pitch_mm=args.pitch_mm, **extra)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("samples", "image", "pair", "-h", "--help"):
        argv = ["samples", *argv]
    parser = argparse.ArgumentParser(prog="python -m calcimeasure.phantom", description="Phantom radiographs with ground truth.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_s = sub.add_parser("samples", help="write the sample set (default)")
    p_s.add_argument("--out", default="sample_images", help="output folder (default: sample_images)")
    for name in ("image", "pair"):
        p = sub.add_parser(name, help=f"render one {'film' if name == 'image' else 'baseline/follow-up pair'}")
        p.add_argument("--body-part", default="hand", choices=sorted(BODY_PART_LAYOUTS))
        p.add_argument("--difficulty", default="realistic", choices=DIFFICULTIES)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--rows", type=int)
        p.add_argument("--cols", type=int)
        p.add_argument("--pitch-mm", type=float)
        p.add_argument("--photometric", choices=("MONOCHROME1", "MONOCHROME2"))
        p.add_argument("--transfer-syntax", default="rle", choices=sorted(TRANSFER_SYNTAXES))
        p.add_argument("--out", required=True, help="DICOM file (image) or folder (pair)")
        if name == "pair":
            p.add_argument("--response", choices=RESPONSES)
    args = parser.parse_args(argv)
    if args.command == "samples":
        truth = make_sample_images(args.out)
        for name, case in truth["cases"].items():
            print(f"{name}: {case['files']['baseline']}, {case['files']['followup']}  response={case['response']} "
                  f"change={case['total_change_pct']:.1f} %")
        print(f"wrote {Path(args.out) / 'ground_truth.json'}")
        return 0
    spec = _spec(args)
    if args.command == "image":
        img = render_image(spec, seed=args.seed)
        write_dicom(img, args.out, transfer_syntax=args.transfer_syntax)
        Path(str(args.out) + ".json").write_text(json.dumps(img.to_dict(), indent=1) + "\n")
        print(f"wrote {args.out} and {args.out}.json ({len(img.lesions)} lesions)")
        return 0
    pr = render_pair(spec, seed=args.seed, pair=PairSpec(response=args.response))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_dicom(pr.baseline, out / "baseline.dcm", transfer_syntax=args.transfer_syntax)
    write_dicom(pr.followup, out / "followup.dcm", transfer_syntax=args.transfer_syntax)
    (out / "truth.json").write_text(json.dumps(pr.to_dict(), indent=1) + "\n")
    print(f"wrote {out}/baseline.dcm, followup.dcm, truth.json  response={pr.response} change={pr.total_change_pct:.1f} %")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
