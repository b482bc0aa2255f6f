"""How much of the segmentation error is the background estimate? Writes docs/background.md.

Usage::

    python scripts/eval_background.py [--seeds 0-9] [--holdout 100-109] [--cache DIR] [--jobs 2]
           [--write docs/background.md]

The phantom generator can render the same film **without its lesions** (same anatomy, same
acquisition, same quantum-noise stream: ``render_patient(replace(patient, lesions=()), ...)``).
Its reduced-grid image is the *true* local background. The pipeline is run with its background
replaced by that truth (a diagnostic: ``segment``'s private background step is patched in this
process only), everywhere or only off the bone zone (where the soft-tissue surface is used), and
scored exactly as ``scripts/eval_segmentation.py`` scores the shipped pipeline. The rows bound
what a better background estimate can bring with the rest of the pipeline unchanged.

Also scored: the shipped defaults and the opt-in oriented line median
(``axis_median_mm=22, min_dome_ratio_compact=1.75``, segment/orientation.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("eval_segmentation", os.path.join(HERE, "eval_segmentation.py"))
ev = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ev)

#: name -> (SegmentationParams overrides, oracle mode: None / "soft" / "all")
VARIANTS = {
    "defaults": ({}, None),
    "oriented line median (opt-in: axis_median_mm=22, min_dome_ratio_compact=1.75)":
        ({"axis_median_mm": 22.0, "min_dome_ratio_compact": 1.75}, None),
    "true background off the bone zone (oracle)": ({}, "soft"),
    "true background everywhere (oracle)": ({}, "all"),
}
PRESET = "realistic"


def lesion_free(body: str, seed: int, cache: str | None) -> np.ndarray:
    """The film of (PRESET, body, seed) rendered without its lesions (cached)."""
    fn = os.path.join(cache, f"{PRESET}_{body}_{seed}_nolesions.npy") if cache else None
    if fn and os.path.exists(fn):
        return np.load(fn)
    from calcimeasure.phantom import PhantomSpec
    from calcimeasure.phantom.render import build_patient, render_patient

    spec = PhantomSpec.preset(PRESET, body_part=body)
    patient = build_patient(spec, seed=seed)
    img = render_patient(dataclasses.replace(patient, lesions=()), spec.acquisition, seed=seed, stream=1)
    if fn:
        os.makedirs(cache, exist_ok=True)
        np.save(fn, img.pixels)
    return img.pixels


def _install_oracle(truth: np.ndarray, mode: str) -> None:
    from calcimeasure.segment import pipeline
    from calcimeasure.segment.background import reduce

    orig = getattr(pipeline, "_soft_background_orig", pipeline._soft_background)
    pipeline._soft_background_orig = orig

    def patched(small, body, bone, bg_open, spacing_small_mm, params, seed_background=None, body_ext=None):
        out, usable = orig(small, body, bone, bg_open, spacing_small_mm, params,
                           seed_background=seed_background, body_ext=body_ext)
        factor = max(1, int(round(truth.shape[0] / small.shape[0])))
        true_small = reduce(truth.astype(np.float32), factor)[: small.shape[0], : small.shape[1]]
        if true_small.shape != small.shape:
            raise RuntimeError("oracle grid mismatch")
        if mode == "all":
            return true_small, usable
        return np.where(out != bg_open, true_small, out).astype(np.float32), usable  # the soft-surface zone only

    pipeline._soft_background = patched


def _uninstall_oracle() -> None:
    from calcimeasure.segment import pipeline

    if hasattr(pipeline, "_soft_background_orig"):
        pipeline._soft_background = pipeline._soft_background_orig


def score(job) -> dict:
    variant, body, seed, cache = job
    overrides, mode = VARIANTS[variant]
    if mode:
        _install_oracle(lesion_free(body, seed, cache), mode)
    try:
        r = ev.score((PRESET, body, seed, cache, overrides))
    finally:
        _uninstall_oracle()
    r["variant"] = variant
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0-9")
    ap.add_argument("--holdout", default="100-109")
    ap.add_argument("--bodies", default=",".join(ev.BODIES))
    ap.add_argument("--cache")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--write")
    a = ap.parse_args()
    bodies = a.bodies.split(",")
    groups = [("tuning " + a.seeds, ev.seed_range(a.seeds))]
    if a.holdout:
        groups.append(("held-out " + a.holdout, ev.seed_range(a.holdout)))
    jobs = [(v, b, s, a.cache) for v in VARIANTS for _, seeds in groups for b in bodies for s in seeds]
    t0 = time.time()
    with ProcessPoolExecutor(a.jobs) as ex:
        res = list(ex.map(score, jobs, chunksize=2))
    lines = []
    for gname, seeds in groups:
        lines += [f"### {gname}", "", ev.HEADER.replace("| seeds |", "| background |")]
        for v in VARIANTS:
            s = ev.summary([r for r in res if r["variant"] == v and r["seed"] in seeds])
            lines.append(ev.row(v, s))
        lines.append("")
    table = "\n".join(lines)
    print(table)
    if a.write:
        text = "\n".join([
            "# Where the segmentation error comes from: the background (generated)",
            "",
            "Generated by `scripts/eval_background.py` — do not edit by hand.",
            "",
            f"* date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
            f"* command: `python scripts/eval_background.py {' '.join(sys.argv[1:])}`",
            f"* phantoms: `PhantomSpec.preset('{PRESET}', body_part)`, body parts {', '.join(bodies)}; run time "
            f"{time.time() - t0:.0f} s on {a.jobs} process(es)",
            "",
            "Each film is also rendered **without its lesions** (same anatomy, acquisition and noise stream). "
            "Its reduced-grid image (0.6 mm, as the pipeline's) is the true local background. The rows "
            "marked *oracle* run the pipeline with its background replaced by that truth — everywhere, or only "
            "off the bone zone (bone mask + 1 mm, where the soft-tissue surface is used) — and everything else "
            "unchanged (cores, growth, boundary rule, rejection rules). They are not something a user can "
            "run on a patient: they bound what a better background estimate can bring. Metrics and "
            "definitions as in [accuracy.md](accuracy.md).",
            "",
            table,
            "Reading: with the true background everywhere the rest of the pipeline comes close to the issue's "
            "targets (recall and precision ≥ 0.95, median |total err| ≤ 3 %, Dice ≥ 0.90); with it only off "
            "the bone zone, much less. The background **on and beside the bone** (lesions over or against a "
            "shaft, clouds straddling a bone) is the largest single source of error. See "
            "[segmentation.md](segmentation.md), \"Oriented line median\" and \"What is missing\".",
            "",
        ])
        with open(a.write + ".tmp", "w") as fh:
            fh.write(text)
        os.replace(a.write + ".tmp", a.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
