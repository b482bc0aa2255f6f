"""How much of the segmentation error is the background estimate? Writes docs/background.md.

Usage::

    python scripts/eval_background.py [--seeds 0-9] [--holdout 100-109] [--cache DIR] [--jobs 2]
           [--write docs/background.md]

The phantom generator can render the same film **without its lesions and without quantum noise**
(same anatomy and acquisition: ``render_patient(replace(patient, lesions=()), ...)`` with the
expected detector signal in place of the noisy one). Its reduced-grid image is the *true* local
background. The pipeline is run with its background
replaced by that truth (a diagnostic: ``segment``'s private background step is patched in this
process only), everywhere or only off the bone zone (where the soft-tissue surface is used), and
scored exactly as ``scripts/eval_segmentation.py`` scores the shipped pipeline. The rows bound
what a better background estimate can bring with the rest of the pipeline unchanged. The
*full resolution* rows use the twin itself instead of its reduced grid (sharp cortices and the
bone's texture become background too: a bound no estimate can reach). The *perfect classifier*
rows switch every rejection rule off, add a coarser detection scale, and let the truth remove each
component the scorer would count as a false positive: what a learned candidate classifier could at
best bring on the same candidates.

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

#: Every rejection rule off and a second, coarser detection scale: the candidates a classifier would
#: choose from (scored with the truth removing the false positives: a perfect classifier).
PERMISSIVE = {"max_bone_fraction": 1.0, "min_dome_ratio": 0.0, "max_bright_elongation": 0.0,
              "min_dome_ratio_faint": 0.0, "bone_split": 0, "k_high": 5.0, "coarse_smoothing_mm": 1.0,
              "coarse_clutter": 1, "coarse_k": 4.0}

#: Only the shape rules after growth off (bone_shape, bone_split_shape, flat, faint_small); the
#: rejection of cores on the bone band before growth kept (it keeps lesions from merging with bone).
SHAPE_RULES_OFF = {"min_dome_ratio": 0.0, "max_bright_elongation": 0.0, "min_dome_ratio_faint": 0.0,
                   "bone_split_min_solidity": 0.0, "bone_split_min_dome": 0.0}

#: name -> (SegmentationParams overrides, oracle mode: None / "soft" / "all" / "full",
#: false positives removed by the truth)
VARIANTS = {
    "defaults": ({}, None, False),
    "oriented line median (opt-in: axis_median_mm=22, min_dome_ratio_compact=1.75)":
        ({"axis_median_mm": 22.0, "min_dome_ratio_compact": 1.75}, None, False),
    "true background off the bone zone (oracle)": ({}, "soft", False),
    "true background off the bone zone, under the soft-tissue surface's 25 mm line-opening floor (oracle)":
        ({}, "soft_floor", False),
    "true background everywhere (oracle)": ({}, "all", False),
    "true background everywhere, full resolution (oracle)": ({}, "full", False),
    "rules off, false positives removed by the truth (perfect classifier, oracle)": (PERMISSIVE, None, True),
    "the same with the oriented line median": (dict(PERMISSIVE, axis_median_mm=22.0), None, True),
    "the same with the true background, full resolution (oracle)": (PERMISSIVE, "full", True),
    "shape rules after growth off, false positives removed by the truth (perfect classifier, oracle)":
        (SHAPE_RULES_OFF, None, True),
    "shape rules after growth off with the oriented line median, perfect classifier (oracle)":
        (dict(SHAPE_RULES_OFF, axis_median_mm=22.0), None, True),
}
PRESET = "realistic"


def _noise_free_render(body: str, seed: int, cache: str | None, preset: str | None, lesions: bool) -> np.ndarray:
    """The film of (preset, body, seed) without quantum noise, with or without its lesions (the
    expected detector signal goes through the same blur, log, processing and quantisation; cached)."""
    preset = preset or PRESET
    suffix = "nf" if lesions else "nolesions_nf"
    fn = os.path.join(cache, f"{preset}_{body}_{seed}_{suffix}.npy") if cache else None
    if fn and os.path.exists(fn):
        return np.load(fn)
    from calcimeasure.phantom import PhantomSpec
    from calcimeasure.phantom import render as render_mod
    from calcimeasure.phantom.render import build_patient, render_patient

    spec = PhantomSpec.preset(preset, body_part=body)
    patient = build_patient(spec, seed=seed)
    if not lesions:
        patient = dataclasses.replace(patient, lesions=())
    expose = render_mod.expose

    def noise_free_expose(*args, **kwargs):
        e = expose(*args, **kwargs)
        return dataclasses.replace(e, signal=e.noise_free)

    render_mod.expose = noise_free_expose
    try:
        img = render_patient(patient, spec.acquisition, seed=seed, stream=1)
    finally:
        render_mod.expose = expose
    if fn:
        os.makedirs(cache, exist_ok=True)
        np.save(fn, img.pixels)
    return img.pixels


def lesion_free(body: str, seed: int, cache: str | None, preset: str | None = None) -> np.ndarray:
    """The film of (PRESET, body, seed) rendered without its lesions and without quantum noise (cached)."""
    return _noise_free_render(body, seed, cache, preset, lesions=False)


def noise_free(body: str, seed: int, cache: str | None, preset: str | None = None) -> np.ndarray:
    """The film of (PRESET, body, seed) rendered **with** its lesions and without quantum noise (the
    lesions' true excess is this minus :func:`lesion_free`; cached)."""
    return _noise_free_render(body, seed, cache, preset, lesions=True)


#: Bins of a lesion's true peak contrast, in units of its film's noise sigma (detection limit table).
CONTRAST_BINS = (0.0, 3.0, 6.0, 12.0, 24.0, np.inf)


def lesion_contrasts(job) -> list[dict]:
    """Per in-field lesion >= 5 mm² of one phantom: its true peak contrast (the noise-free excess
    smoothed as the pipeline smooths its residual, over the film's noise sigma as the thresholds
    use it) and whether the defaults and ``learned_background=1`` find it (the scorer's rule)."""
    import cv2

    from calcimeasure.params import SegmentationParams
    from calcimeasure.segment import segment

    body, seed, cache = job
    d = ev.load(PRESET, body, seed, cache)
    excess = (noise_free(body, seed, cache) - lesion_free(body, seed, cache)).astype(np.float32)
    pix_mm = float(np.sqrt(d["spacing"][0] * d["spacing"][1]))
    excess = cv2.GaussianBlur(excess, (0, 0), SegmentationParams().smoothing_mm / pix_mm)
    segs = {name: segment(d["pixels"], spacing_mm=d["spacing"], params=SegmentationParams(**o))
            for name, o in (("defaults", {}), ("learned", {"learned_background": 1}))}
    sigma = segs["defaults"].noise_sigma
    rows = []
    for l in d["lesions"]:
        if not l["in_field"] or l["area_mm2"] < 5:
            continue
        m = d["labels"] == l["id"]
        if not m.any():
            continue
        row = dict(kind=l["kind"], touches_bone=l["touches_bone"], contrast=float(excess[m].max() / sigma))
        for name, seg in segs.items():
            row[name] = bool((seg.labels[m] > 0).mean() >= 0.3)
        rows.append(row)
    return rows


def contrast_table(rows: list[dict]) -> str:
    lines = ["| true peak contrast (noise sigmas) | lesions ≥ 5 mm² | clouds / plaques / nodules | touching bone "
             "| recall, defaults | recall, `learned_background=1` |",
             "| --- | --- | --- | --- | --- | --- |"]
    for lo, hi in zip(CONTRAST_BINS[:-1], CONTRAST_BINS[1:]):
        mine = [r for r in rows if lo <= r["contrast"] < hi]
        if not mine:
            continue
        n = len(mine)
        kinds = " / ".join(str(sum(r["kind"] == k for r in mine)) for k in ("cloud", "plaque", "nodule"))
        label = f"≥ {lo:g}" if hi == np.inf else f"{lo:g}–{hi:g}"
        lines.append(f"| {label} | {n} | {kinds} | {sum(r['touches_bone'] for r in mine)} "
                     f"| {sum(r['defaults'] for r in mine) / n:.2f} ({sum(r['defaults'] for r in mine)}/{n}) "
                     f"| {sum(r['learned'] for r in mine) / n:.2f} ({sum(r['learned'] for r in mine)}/{n}) |")
    return "\n".join(lines)


def _install_oracle(truth: np.ndarray, mode: str) -> None:
    """Patch the pipeline's background step (this process only): the truth on the reduced grid
    everywhere (``all``), only where the soft-tissue surface is used (``soft``), or the truth at the
    source resolution (``full``: sharp cortices and the bone's texture are background too);
    ``soft_floor``: as ``soft``, but never below the surface's line-opening floor."""
    from calcimeasure.segment import pipeline
    from calcimeasure.segment.background import reduce

    orig = getattr(pipeline, "_soft_background_orig", pipeline._soft_background)
    pipeline._soft_background_orig = orig
    enlarge = getattr(pipeline, "_enlarge_orig", pipeline.enlarge)
    pipeline._enlarge_orig = enlarge
    returned: list = []

    def patched(small, body, bone, bg_open, spacing_small_mm, params, seed_background=None, body_ext=None):
        out, usable = orig(small, body, bone, bg_open, spacing_small_mm, params,
                           seed_background=seed_background, body_ext=body_ext)
        factor = max(1, int(round(truth.shape[0] / small.shape[0])))
        true_small = reduce(truth.astype(np.float32), factor)[: small.shape[0], : small.shape[1]]
        if true_small.shape != small.shape:
            raise RuntimeError("oracle grid mismatch")
        if mode in ("soft", "soft_floor"):  # the soft-surface zone only (not "out != bg_open": a lesion
            # taken whole into the surface's line-opening floor can equal the openings there)
            ext = body if body_ext is None else body_ext
            zone = ext & ~pipeline._bone_zone(small, body, bone, spacing_small_mm, params)
            new = true_small
            if mode == "soft_floor" and params.soft_line_mm > 0:  # the truth, but never below the floor
                new = np.maximum(true_small, pipeline._soft_floor(small, spacing_small_mm, params))
            return np.where(zone, new, out).astype(np.float32), usable
        returned[:] = [true_small]
        return true_small, usable

    def patched_enlarge(a, factor, rows, cols, nearest=False):
        if mode == "full" and returned and a is returned[0]:
            return truth.astype(np.float32)  # a fresh array: the pipeline subtracts in place
        return enlarge(a, factor, rows, cols, nearest=nearest)

    pipeline._soft_background = patched
    pipeline.enlarge = patched_enlarge


def _uninstall_oracle() -> None:
    from calcimeasure.segment import pipeline

    if hasattr(pipeline, "_soft_background_orig"):
        pipeline._soft_background = pipeline._soft_background_orig
    if hasattr(pipeline, "_enlarge_orig"):
        pipeline.enlarge = pipeline._enlarge_orig


def _install_perfect_classifier(truth_labels: np.ndarray, outside: list) -> None:
    """Patch the scorer's ``segment`` (this process only): detected components with less than 30 %
    of their pixels on a true lesion (the scorer's false positives) are removed."""
    seg_fn = getattr(ev, "_segment_orig", ev.segment)
    ev._segment_orig = seg_fn
    truth = np.where(np.isin(truth_labels, outside), 0, truth_labels) if outside else truth_labels

    def patched(*args, **kwargs):
        seg = seg_fn(*args, **kwargs)
        lab = seg.labels
        counts = np.bincount(lab.ravel())
        on = np.bincount(lab.ravel(), weights=(truth > 0).ravel().astype(np.float64), minlength=counts.size)
        keep = on >= 0.3 * np.maximum(counts, 1)
        keep[0] = False
        return dataclasses.replace(seg, labels=np.where(keep[lab], lab, 0).astype(np.int32))

    ev.segment = patched


def _uninstall_perfect_classifier() -> None:
    if hasattr(ev, "_segment_orig"):
        ev.segment = ev._segment_orig


def score(job) -> dict:
    variant, body, seed, cache = job
    overrides, mode, perfect = VARIANTS[variant]
    if mode:
        _install_oracle(lesion_free(body, seed, cache), mode)
    if perfect:
        d = ev.load(PRESET, body, seed, cache)
        _install_perfect_classifier(d["labels"], [l["id"] for l in d["lesions"] if not l["in_field"]])
    try:
        r = ev.score((PRESET, body, seed, cache, overrides))
    finally:
        _uninstall_oracle()
        _uninstall_perfect_classifier()
    r["variant"] = variant
    return r


#: name -> (SegmentationParams overrides of the soft-tissue surface, true lesions left out of its fit)
ABSORPTION_VARIANTS = {
    "defaults": ({}, False),
    "surface without its 25 mm floor": ({"soft_line_mm": 0.0}, False),
    "the same, true lesions left out of the fit (oracle)": ({"soft_line_mm": 0.0}, True),
    "bridged along the axis (`soft_bridge_along=4`), no floor": ({"soft_line_mm": 0.0, "soft_bridge_along": 4.0}, False),
    "bridged along the axis, with the floor": ({"soft_bridge_along": 4.0}, False),
    "bridged along the axis, no floor, true lesions left out (oracle)":
        ({"soft_line_mm": 0.0, "soft_bridge_along": 4.0}, True),
}


def absorption(job) -> tuple[list[dict], dict]:
    """Where a lesion's excess goes, in the soft-tissue zone of one film (reduced grid): per lesion
    >= 5 mm², the part of its true excess (noise-free film with minus without lesions) lying under
    each variant's background (clipped at the truth), and, per variant, the 90th percentile of the
    background's error over lesion-free soft tissue (>= 2.4 mm from a lesion) in noise sigmas."""
    import cv2
    from dataclasses import replace

    from calcimeasure.params import SegmentationParams
    from calcimeasure.segment import pipeline, segment
    from calcimeasure.segment.background import reduce

    body, seed, cache = job
    d = ev.load(PRESET, body, seed, cache)
    truth_bg = lesion_free(body, seed, cache)
    excess_full = noise_free(body, seed, cache) - truth_bg
    orig = pipeline._soft_background
    got: dict = {}

    def capture(small, bodym, bone, bg_open, sp, params, seed_background=None, body_ext=None):
        got.update(args=(small, bodym, bone, bg_open, sp), seed_background=seed_background, body_ext=body_ext)
        return orig(small, bodym, bone, bg_open, sp, params, seed_background=seed_background, body_ext=body_ext)

    pipeline._soft_background = capture
    try:
        seg = segment(d["pixels"], spacing_mm=d["spacing"])
    finally:
        pipeline._soft_background = orig
    small, bodym, bone, bg_open, sp = got["args"]
    shape = small.shape
    factor = max(1, int(round(sp / float(np.sqrt(d["spacing"][0] * d["spacing"][1])))))
    tb = reduce(truth_bg.astype(np.float32), factor)[: shape[0], : shape[1]]
    ex = reduce(excess_full.astype(np.float32), factor)[: shape[0], : shape[1]]
    lab = d["labels"][::factor, ::factor][: shape[0], : shape[1]]
    k = max(1, int(round(1.5 / sp)))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
    true_lesions = cv2.dilate((reduce((d["labels"] > 0).astype(np.float32), factor)[: shape[0], : shape[1]] > 0)
                              .view(np.uint8), disk).view(bool)
    ext = bodym if got["body_ext"] is None else got["body_ext"]
    base = SegmentationParams()
    zone = ext & ~pipeline._bone_zone(small, bodym, bone, sp, base)
    backgrounds = {}
    for name, (over, oracle) in ABSORPTION_VARIANTS.items():
        backgrounds[name], _ = orig(small, bodym, bone, bg_open, sp, replace(base, **over),
                                    seed_background=got["seed_background"], body_ext=got["body_ext"],
                                    leave_out=true_lesions if oracle else None)
    rows = []
    for l in d["lesions"]:
        if not l["in_field"] or l["area_mm2"] < 5:
            continue
        m = (lab == l["id"]) & zone
        e = float(ex[m].sum())
        if m.sum() < 3 or e <= 0:
            continue
        row = dict(kind=l["kind"], found=bool((seg.labels[d["labels"] == l["id"]] > 0).mean() >= 0.3))
        for name, bg in backgrounds.items():
            row[name] = float(np.clip(bg[m] - tb[m], 0, None).sum() / e)
        rows.append(row)
    free = zone & ~cv2.dilate(true_lesions.view(np.uint8), disk).view(bool)
    misfit = {name: float(np.percentile(np.abs(bg - tb)[free], 90) / seg.noise_sigma) if free.any() else np.nan
              for name, bg in backgrounds.items()}
    return rows, misfit


def absorption_table(results: list) -> str:
    rows = [r for rs, _ in results for r in rs]
    names = list(ABSORPTION_VARIANTS)
    lines = ["| background | " + " | ".join(f"{k}s {'found' if f else 'missed'}" for k in ("cloud", "plaque", "nodule")
                                           for f in (False, True)) + " | lesion-free soft tissue: p90 \\|error\\| (σ) |",
             "| --- " * 8 + "|"]
    groups = [[r for r in rows if r["kind"] == k and r["found"] == f] for k in ("cloud", "plaque", "nodule")
              for f in (False, True)]
    lines.append("| lesions ≥ 5 mm² in the soft-tissue zone (found or missed by the defaults) | " + " | ".join(str(len(g)) for g in groups) + " | |")
    for name in names:
        cells = [f"{np.median([r[name] for r in g]):.2f}" if g else "—" for g in groups]
        mis = np.nanmedian([m[name] for _, m in results])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mis:.1f} |")
    return "\n".join(lines)


ZONES = ("on the bone", "within 3 mm of the bone", "further than 3 mm")


def zone_errors(job) -> dict:
    """Background error per zone of one film, reduced grid, in units of its noise sigma: the default
    estimate and the oriented line median (which lowers it), against the true background."""
    import cv2

    from calcimeasure.params import SegmentationParams
    from calcimeasure.segment import pipeline, segment
    from calcimeasure.segment.background import reduce

    body, seed, cache = job
    d = ev.load(PRESET, body, seed, cache)
    twin = lesion_free(body, seed, cache)
    cap: dict = {}
    soft, axis = pipeline._soft_background, pipeline._axis_floor

    def cap_soft(small, bodym, bone, *a, **k):
        cap.update(small=small, bone=bone, body=k.get("body_ext") if k.get("body_ext") is not None else bodym,
                   spacing=a[1])
        return soft(small, bodym, bone, *a, **k)

    def cap_axis(small, bg, bodym, sp, params):
        out = axis(small, bg, bodym, sp, params)
        cap.update(default=bg, oriented=out)
        return out

    pipeline._soft_background, pipeline._axis_floor = cap_soft, cap_axis
    try:
        seg = segment(d["pixels"], spacing_mm=d["spacing"], params=SegmentationParams(axis_median_mm=22.0))
    finally:
        pipeline._soft_background, pipeline._axis_floor = soft, axis
    small = cap["small"]
    f = max(1, int(round(d["pixels"].shape[0] / small.shape[0])))
    true = reduce(twin.astype(np.float32), f)[: small.shape[0], : small.shape[1]]
    lesion = reduce((d["labels"] > 0).astype(np.float32), f)[: small.shape[0], : small.shape[1]] > 0.5
    clear = ~cv2.dilate(lesion.view(np.uint8), np.ones((7, 7), np.uint8)).view(bool)
    bone, bodym = cap["bone"], cap["body"]
    dist = cv2.distanceTransform((~bone).view(np.uint8), cv2.DIST_L2, 5) * cap["spacing"]
    zones = dict(zip(ZONES, (bone & bodym, bodym & ~bone & (dist <= 3), bodym & ~bone & (dist > 3))))
    out = {}
    for zname, z in zones.items():
        for name in ("default", "oriented"):
            err = (cap[name] - true) / seg.noise_sigma
            if (z & lesion).sum() >= 5:
                out[(zname, name, "absorbed")] = float(np.median(err[z & lesion]))
                out[(zname, "excess")] = float(np.median((small - true)[z & lesion]) / seg.noise_sigma)
            if (z & clear).sum() >= 5:
                out[(zname, name, "p90")] = float(np.percentile(np.abs(err[z & clear]), 90))
    return out


def zone_table(rows: list[dict]) -> str:
    def med(key):
        v = [r[key] for r in rows if key in r]
        return f"{np.median(v):.1f}" if v else "—"

    lines = ["| zone | lesion excess | absorbed: default | absorbed: oriented line median "
             "| lesion-free tissue, p90 \\|error\\|: default | oriented line median |",
             "| --- | --- | --- | --- | --- | --- |"]
    for z in ZONES:
        lines.append(f"| {z} | {med((z, 'excess'))} | {med((z, 'default', 'absorbed'))} | "
                     f"{med((z, 'oriented', 'absorbed'))} | {med((z, 'default', 'p90'))} | {med((z, 'oriented', 'p90'))} |")
    return "\n".join(lines)


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
        zrows = list(ex.map(zone_errors, [(b, s, a.cache) for b in bodies for s in groups[0][1]], chunksize=2))
        climit = [r for rs in ex.map(lesion_contrasts, [(b, s, a.cache) for b in bodies for s in groups[-1][1]],
                                     chunksize=2) for r in rs]
        absorbed = list(ex.map(absorption, [(b, s, a.cache) for b in bodies for s in groups[0][1]], chunksize=2))
    lines = []
    for gname, seeds in groups:
        lines += [f"### {gname}", "", ev.HEADER.replace("| seeds |", "| background |")]
        for v in VARIANTS:
            s = ev.summary([r for r in res if r["variant"] == v and r["seed"] in seeds])
            lines.append(ev.row(v, s))
        lines.append("")
    table = "\n".join(lines)
    ztable = zone_table(zrows)
    ctable = contrast_table(climit)
    atable = absorption_table(absorbed)
    print(table)
    print(atable)
    print(ztable)
    print(ctable)
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
            "Each film is also rendered **without its lesions and without quantum noise** (same anatomy and "
            "acquisition; the expected detector signal goes through the same blur, log, processing and "
            "quantisation). Its reduced-grid image (0.6 mm, as the pipeline's) is the true local background. The rows "
            "marked *oracle* run the pipeline with its background replaced by that truth — everywhere, or only "
            "off the bone zone (bone masks + 1 mm, where the soft-tissue surface is used; there also with the "
            "surface's 25 mm line-opening floor `soft_line_mm` kept under the truth) — and everything else "
            "unchanged (cores, growth, boundary rule, rejection rules). They are not something a user can "
            "run on a patient: they bound what a better background estimate can bring. Metrics and "
            "definitions as in [accuracy.md](accuracy.md).",
            "",
            table,
            f"**Per zone** ({groups[0][0]}): the background's error against the truth on the reduced grid, in units of "
            "each film's noise sigma (the smoothed residual's, as the thresholds use), median over the films. "
            "*Lesion excess*: the lesions' true excess over the background (median over their pixels); "
            "*absorbed*: the median error of the estimated background on the lesions (the part of the excess "
            "taken into the background); *lesion-free tissue*: the 90th percentile of the absolute error "
            "away from the lesions (false structure in the residual). Zones by distance to the pipeline's bone "
            "mask.",
            "",
            ztable,
            "",
            f"**Detection limit** ({groups[-1][0]}): recall of the lesions ≥ 5 mm² by their *true peak contrast* — "
            "the noise-free film with lesions minus the one without, smoothed as the pipeline smooths its "
            "residual (`smoothing_mm`), maximum over the lesion, over the film's noise sigma (as the "
            "thresholds use it; cores need `k_high` = 6). A lesion below about 6 sigmas can only be found "
            "where the background estimate lies below the truth or as part of a coarser core; a lesion well "
            "above it that is missed is lost to the background estimate or to a rejection rule.",
            "",
            ctable,
            "",
            f"**Where a lesion's excess goes** ({groups[0][0]}; added in the sixth session of 2026-11-26): per lesion "
            "≥ 5 mm², over its pixels in the soft-tissue zone (where the surface is the background), the part of "
            "its true excess that lies under the background (estimate minus truth, clipped at 0, summed, over the "
            "excess summed), median per column; columns by the lesion kind and whether the defaults find it. "
            "Rows: the soft-tissue surface recomputed on the same film with other settings — without its 25 mm "
            "line-opening floor (`soft_line_mm=0`), bridging its holes along the anatomy's axis "
            "(`soft_bridge_along=4`, opt-in), and with the true lesions (dilated 1.5 mm) left out of its fit "
            "(oracle candidates). Last column: the background's error over lesion-free soft tissue (90th "
            "percentile, in noise sigmas, median over films) — the anatomy a lower background exposes.",
            "",
            atable,
            "",
            "Reading: the floor takes back most of what the surface would let through; without the floor the "
            "isotropic surface still takes in about half of a missed cloud's or plaque's excess — as much with "
            "the true lesions left out of its fit as with its own candidates, so that part is the bridging, "
            "not the detection of candidates — and bridging along the axis halves it again, at the price of a "
            "larger misfit over lesion-free tissue (anatomy the floor holds).",
            "",
            "Reading: the true background everywhere brings the largest gain of any single change measured "
            "(recall, total-area error and Dice), most of it from the **soft-tissue zone** (the row with the "
            "true background off the bone zone only comes close to it), and all of that is lost when the "
            "soft-tissue surface's 25 mm line-opening floor is kept under the truth: that floor takes in the "
            "lesions lying on a soft-tissue ramp (along the up-slope line, bump plus ramp is monotone, and an "
            "opening keeps monotone profiles). Before 2026-11-26 (sixth session) the soft-zone row replaced "
            "the estimate only where it differed from the bone zone's openings, which left out exactly the "
            "soft-tissue pixels whose lesion that floor had taken whole (there the floor and the openings are "
            "both the image itself); its figures (tuning 0.801 / 22.7 %) pointed, wrongly, at the bone zone. "
            "On the pipeline's 0.6 mm grid the truth does not reach the issue's targets alone (recall and precision ≥ 0.95, median |total err| ≤ 3 %, Dice ≥ 0.90). At "
            "full resolution the truth also carries the sharp cortices and the bone's own texture, which no "
            "estimate can know: that row is a bound, not a goal. The *perfect classifier* rows answer "
            "whether a better accept / reject decision (e.g. a learned classifier) would help: with the "
            "estimated background it would not — with every rule off its recall is that of the shipped "
            "rules, because the lesions those rules lose are, on the estimated background, merged with "
            "anatomy into components that are mostly not lesion; with only the shape rules after growth "
            "replaced by the truth (the bone band before growth kept) it gains 3–4 points of recall. With "
            "the true full-resolution background the same candidates and the same boundary rule come close "
            "to the targets. The background is what limits the segmentation — first the soft-tissue surface's "
            "floor and the surface itself on ramps, then the bone zone (the remaining gap to the row with the "
            "truth everywhere, and to full resolution). See "
            "[segmentation.md](segmentation.md), \"Oriented line median\", \"Bounds\" and \"What is missing\".",
            "",
        ])
        with open(a.write + ".tmp", "w") as fh:
            fh.write(text)
        os.replace(a.write + ".tmp", a.write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
