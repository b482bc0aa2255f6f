"""Score :func:`calcimeasure.segment` against phantom ground truth, and write docs/accuracy.md.

Usage::

    python scripts/eval_segmentation.py [--preset realistic] [--seeds 0-5] [--bodies hand,knee]
           [--cache DIR] [--jobs 2] [--verbose] [param=value ...]
    python scripts/eval_segmentation.py --write docs/accuracy.md [--quick] [--cache DIR] [param=value ...]

Metrics (lesions with ``in_field`` only; lesions outside the collimated field are not expected):

* recall: fraction of true lesions (>= 5 mm², or all) with >= 30 % of their labelled pixels detected;
* precision: fraction of detected components (>= 5 mm², or all) with >= 30 % of their pixels on a true lesion;
* total area error: (detected area − exact true area) / exact true area, per image (median, 90th
  percentile of |.|);
* per-lesion area error of the detected lesions >= 5 mm² (area of the components covering it vs exact area);
* Dice of the lesion masks, per image (median);
* time per Mpx of ``segment`` (median).

``--write`` scores the three difficulties (easy / realistic / hard) on tuning seeds and held-out seeds,
and synthetic lesions inserted (``calcimeasure.phantom.insert_lesions``) into real radiographs of
``tests/data/real_dicom``, and writes the tables as Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pickle
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from calcimeasure.params import SegmentationParams
from calcimeasure.segment import segment

BODIES = ["hand", "fingers", "forearm", "elbow", "knee"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_DIR = os.path.join(ROOT, "tests", "data", "real_dicom")
#: Real films for the insertion suite: file, spacing (mm) given to the reader, description.
REAL_FILMS = [
    ("rg2_cr_hip_j2k_lossless.dcm", 0.2, "CR hip"),
    ("rg3_cr_tibia_mono1_j2k_lossless.dcm", 0.2, "CR tibia (MONOCHROME1)"),
    ("dx_chest_nih_cxr14_sc_implicit_le_8bit.dcm", 0.2, "chest (NIH CXR14, 8-bit)"),
]
INT_PARAMS = {f for f, v in SegmentationParams().to_dict().items() if isinstance(v, int)}


def soft_tissue_mask(x: np.ndarray, spacing_mm) -> np.ndarray:
    """Middle class of a three-class Otsu of the film (soft tissue: above air, below bone), eroded 3 mm.

    A plain intensity rule, independent of the segmenter, for placing inserted lesions off the bones.
    """
    from scipy import ndimage
    from skimage.filters import threshold_multiotsu

    step = max(1, int(np.sqrt(x.size / 250_000)))
    lo, hi = threshold_multiotsu(x[::step, ::step], classes=3)
    iters = max(1, int(round(3.0 / min(spacing_mm))))
    return ndimage.binary_erosion((x > lo) & (x < hi), iterations=iters)


#: Soft-tissue regions drawn on the limb films (polygons of (row, col) vertices; overlay in
#: docs/real_regions.png): the "drawn" placement.
REGIONS = os.path.join(REAL_DIR, "soft_tissue_regions.json")


def drawn_mask(film: str, shape: tuple[int, int]) -> np.ndarray:
    """The drawn soft-tissue regions of ``film`` as a mask of ``shape``."""
    import json

    import cv2

    with open(REGIONS) as fh:
        polys = json.load(fh)[film]
    mask = np.zeros(shape, np.uint8)
    for poly in polys:
        cv2.fillPoly(mask, [np.array([[c, r] for r, c in poly], np.int32)], 1)
    return mask.astype(bool)


def drawn_films() -> list[str]:
    import json

    with open(REGIONS) as fh:
        return [k for k in json.load(fh) if not k.startswith("_")]


def load(preset: str, body: str, seed: int, cache: str | None) -> dict:
    fn = os.path.join(cache, f"{preset}_{body}_{seed}.pkl") if cache else None
    if fn and os.path.exists(fn):
        with open(fn, "rb") as fh:
            return pickle.load(fh)
    if preset == "real":
        from calcimeasure import read_image
        from calcimeasure.phantom import insert_lesions

        film, _, placement = body.partition(":")
        sp = dict((f, s) for f, s, _ in REAL_FILMS)[film]
        rad = read_image(os.path.join(REAL_DIR, film), spacing_mm=sp)
        mask = (soft_tissue_mask(rad.pixels, rad.spacing_mm) if placement == "soft"
                else drawn_mask(film, rad.pixels.shape) if placement == "drawn" else None)
        pixels, labels, truths = insert_lesions(rad.pixels, rad.spacing_mm, seed=seed, n_lesions=6, mask=mask)
        les = [dict(id=t.lesion_id, kind=t.kind, area_mm2=t.area_mm2, in_field=True, touches_bone=False,
                    peak=t.cnr) for t in truths]
        d = dict(pixels=pixels, spacing=rad.spacing_mm, labels=labels, lesions=les)
    else:
        from calcimeasure.phantom import PhantomSpec, render_image

        img = render_image(PhantomSpec.preset(preset, body_part=body), seed=seed)
        les = [
            dict(id=l.lesion_id, kind=l.kind, area_mm2=l.area_mm2, in_field=l.in_field,
                 touches_bone=l.touches_bone, peak=l.peak_excess_line_integral)
            for l in img.lesions
        ]
        d = dict(pixels=img.pixels, spacing=img.spacing_mm, labels=img.labels, lesions=les,
                 bone=img.bone_mask, body=img.body_mask, marker=img.marker_mask, field=img.field_mask)
    if fn:
        os.makedirs(cache, exist_ok=True)
        with open(fn, "wb") as fh:
            pickle.dump(d, fh)
    return d


def score(job) -> dict:
    preset, body, seed, cache, pdict = job
    d = load(preset, body, seed, cache)
    params = SegmentationParams(**pdict)
    t = time.perf_counter()
    seg = segment(d["pixels"], spacing_mm=d["spacing"], params=params)
    dt = time.perf_counter() - t
    lab, truth = seg.labels, d["labels"]
    pa = d["spacing"][0] * d["spacing"][1]
    infield = [l for l in d["lesions"] if l["in_field"]]
    outside = [l["id"] for l in d["lesions"] if not l["in_field"]]
    truth_in = np.where(np.isin(truth, outside), 0, truth) if outside else truth
    hits = {True: 0, False: 0}
    nles = {True: 0, False: 0}
    misses, errs, per_lesion = [], [], []
    # Measured peak contrast (noise sigmas) of each detected component, as Measurement.lesions reports it.
    from calcimeasure.measure import lesion_table

    pix_mm = float(np.sqrt(pa))
    peaks = lesion_table(lab, d["pixels"], seg.residual, None, d["spacing"], noise_sigma=seg.noise_sigma,
                         smoothing_px=params.smoothing_mm / pix_mm).set_index("label")["peak_contrast_sigma"]
    for l in infield:
        m = truth == l["id"]
        cov = (lab[m] > 0).mean() if m.any() else 0.0
        big = l["area_mm2"] >= 5
        nles[False] += 1
        nles[True] += big
        if cov >= 0.3:
            hits[False] += 1
            hits[True] += big
            if big:
                ids = np.unique(lab[m])
                ids = ids[ids > 0]
                errs.append((np.isin(lab, ids).sum() * pa - l["area_mm2"]) / l["area_mm2"])
                per_lesion.append((l["kind"], l["area_mm2"], True, errs[-1], float(peaks.loc[ids].max())))
        elif big:
            per_lesion.append((l["kind"], l["area_mm2"], False, float("nan"), float("nan")))
            rr, cc = np.nonzero(m)
            why = [rj["reason"] for rj in seg.rejected
                   if rj["bbox"][0] <= rr.mean() < rj["bbox"][1] and rj["bbox"][2] <= cc.mean() < rj["bbox"][3]]
            misses.append((l["kind"], round(l["area_mm2"], 1), round(l["peak"], 3), l["touches_bone"],
                           round(float(cov), 2), why))
    counts = np.bincount(lab.ravel())
    ontruth = np.bincount(lab.ravel(), weights=(truth_in > 0).ravel().astype(float), minlength=len(counts))
    ndet = {True: 0, False: 0}
    nfp = {True: 0, False: 0}
    for i in range(1, len(counts)):
        if counts[i] == 0:
            continue
        big = counts[i] * pa >= 5
        fp = ontruth[i] / counts[i] < 0.3
        ndet[False] += 1
        nfp[False] += fp
        ndet[True] += big
        nfp[True] += big and fp
    true_area = sum(l["area_mm2"] for l in infield)
    det_area = (lab > 0).sum() * pa
    tm, sm = truth_in > 0, lab > 0
    dice = 2 * (tm & sm).sum() / max(1, tm.sum() + sm.sum())
    return dict(preset=preset, body=body, seed=seed, nbig=nles[True], hits=hits[True], ndet=ndet[True],
                nfp=nfp[True], nall=nles[False], hits_all=hits[False], ndet_all=ndet[False], nfp_all=nfp[False],
                total_err=(det_area - true_area) / true_area if true_area else float("nan"), dice=dice,
                lesion_err=float(np.median(errs)) if errs else float("nan"), lesion_errs=errs, t=dt,
                mpx=lab.size / 1e6, sigma=seg.noise_sigma, misses=misses, per_lesion=per_lesion)


KIND_HEADER = ("| lesion kind | lesions ≥ 5 mm² | share of the true area | recall ≥ 5 mm² "
               "| area err of those found: median (25th–75th pct) |\n| --- | --- | --- | --- | --- |")


def kind_rows(rs: list[dict]) -> list[str]:
    """Per lesion kind (lesions >= 5 mm²): count, share of the true area, recall, and the area error
    of the detected components covering each lesion found."""
    recs = [x for r in rs for x in r["per_lesion"]]
    total = sum(x[1] for x in recs) or 1.0
    out = []
    for kind in sorted({x[0] for x in recs}):
        mine = [x for x in recs if x[0] == kind]
        found = [x[3] for x in mine if x[2]]
        err = (f"{100 * np.median(found):+.1f} % ({100 * np.percentile(found, 25):+.1f} … "
               f"{100 * np.percentile(found, 75):+.1f} %)" if found else "—")
        out.append(f"| {kind} | {len(mine)} | {sum(x[1] for x in mine) / total:.2f} "
                   f"| {len(found) / len(mine):.3f} ({len(found)}/{len(mine)}) | {err} |")
    return out


#: Bins of the measured peak contrast (noise sigmas, ``Measurement.lesions.peak_contrast_sigma``).
PEAK_BINS = (0.0, 12.0, 24.0, 48.0, 96.0, np.inf)
PEAK_HEADER = ("| measured peak contrast (noise sigmas) | lesions found ≥ 5 mm² | clouds / plaques / nodules "
               "| area err: median (25th–75th pct) | share within ±25 % |\n| --- | --- | --- | --- | --- |")


def peak_rows(rs: list[dict]) -> list[str]:
    """Area error of the true lesions found (>= 5 mm²) by the measured peak contrast of the components
    covering them: how far a user can trust a reported lesion's area from its own table row."""
    recs = [x for r in rs for x in r["per_lesion"] if x[2]]
    out = []
    for lo, hi in zip(PEAK_BINS[:-1], PEAK_BINS[1:]):
        mine = [x for x in recs if lo <= x[4] < hi]
        if not mine:
            continue
        e = np.array([x[3] for x in mine])
        kinds = " / ".join(str(sum(x[0] == k for x in mine)) for k in ("cloud", "plaque", "nodule"))
        label = f"≥ {lo:g}" if hi == np.inf else f"{lo:g}–{hi:g}"
        out.append(f"| {label} | {len(mine)} | {kinds} | {100 * np.median(e):+.1f} % ({100 * np.percentile(e, 25):+.1f} … "
                   f"{100 * np.percentile(e, 75):+.1f} %) | {np.mean(np.abs(e) <= 0.25):.2f} |")
    return out


def summary(rs: list[dict]) -> dict:
    s = {k: sum(r[k] for r in rs) for k in ("nbig", "hits", "ndet", "nfp", "nall", "hits_all", "ndet_all", "nfp_all")}
    tot = np.array([r["total_err"] for r in rs if r["total_err"] == r["total_err"]])
    errs = [e for r in rs for e in r["lesion_errs"]]
    s.update(
        n=len(rs),
        recall=s["hits"] / max(1, s["nbig"]), precision=(s["ndet"] - s["nfp"]) / max(1, s["ndet"]),
        recall_all=s["hits_all"] / max(1, s["nall"]), precision_all=(s["ndet_all"] - s["nfp_all"]) / max(1, s["ndet_all"]),
        abs_total=float(np.median(np.abs(tot))) if tot.size else float("nan"),
        p90_total=float(np.percentile(np.abs(tot), 90)) if tot.size else float("nan"),
        signed_total=float(np.median(tot)) if tot.size else float("nan"),
        lesion_err=float(np.median(errs)) if errs else float("nan"),
        dice=float(np.median([r["dice"] for r in rs])),
        s_per_mpx=float(np.median([r["t"] / r["mpx"] for r in rs])),
    )
    return s


def seed_range(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def parse_params(items: list[str]) -> dict:
    out = {}
    for p in items:
        k, _, v = p.partition("=")
        out[k] = int(float(v)) if k in INT_PARAMS else float(v)
    return out


def _pct(v: float) -> str:
    return "—" if v != v else f"{100 * v:+.1f} %"


def row(label: str, s: dict) -> str:
    return (f"| {label} | {s['n']} | {s['nbig']} / {s['nall']} | {s['recall']:.3f} ({s['hits']}/{s['nbig']}) "
            f"| {s['precision']:.3f} ({s['ndet'] - s['nfp']}/{s['ndet']}) | {s['recall_all']:.3f} | {s['precision_all']:.3f} "
            f"| {100 * s['abs_total']:.1f} % ({100 * s['signed_total']:+.1f} %) | {100 * s['p90_total']:.1f} % "
            f"| {_pct(s['lesion_err'])} | {s['dice']:.3f} |")


HEADER = ("| seeds | images | lesions ≥ 5 mm² / all | recall ≥ 5 mm² | precision ≥ 5 mm² | recall (all) | precision (all) "
          "| median \\|total err\\| (signed) | p90 \\|total err\\| | median lesion err | Dice |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def write_report(path: str, a, pdict: dict) -> None:
    tune, hold = seed_range(a.seeds), seed_range(a.holdout)
    bodies = a.bodies.split(",")
    jobs = [(pr, b, s, a.cache, pdict) for pr in ("easy", "realistic", "hard") for b in bodies for s in tune + hold]
    films = [f + p for f, _, _ in REAL_FILMS for p in ("", ":soft")] + [f + ":drawn" for f in drawn_films()]
    jobs += [("real", f, s, a.cache, pdict) for f in films for s in seed_range(a.real_seeds)]
    t0 = time.time()
    with ProcessPoolExecutor(a.jobs) as ex:
        res = list(ex.map(score, jobs, chunksize=2))
    params = SegmentationParams(**pdict)
    lines = [
        "# Segmentation accuracy (generated)",
        "",
        "Generated by `scripts/eval_segmentation.py` — do not edit by hand.",
        "",
        f"* date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"* command: `python scripts/eval_segmentation.py {' '.join(sys.argv[1:])}`",
        f"* parameters: digest `{params.digest()}`" + (f", overrides {pdict}" if pdict else " (defaults)"),
        f"* phantoms: `PhantomSpec.preset(difficulty, body_part)`, body parts {', '.join(bodies)}; "
        f"tuning seeds {a.seeds}, held-out seeds {a.holdout} (never used to choose parameters)",
        f"* run time {time.time() - t0:.0f} s on {a.jobs} process(es); median segmentation time per Mpx in the tables' notes",
        "",
        "Definitions: only lesions inside the collimated field count. A true lesion is found when ≥ 30 % of its "
        "labelled pixels are detected (recall); a detected component is true when ≥ 30 % of its pixels lie on a "
        "true lesion (precision); the ≥ 5 mm² columns use the exact true area / the detected component area. "
        "Total area error per image = (detected area − exact true area) / exact true area; median and 90th "
        "percentile of its absolute value over the images (signed median in brackets). Median lesion err: per "
        "detected true lesion ≥ 5 mm², area of the detected components covering it vs its exact area. Dice: of the "
        "lesion masks per image, median. Targets (issue, realistic): recall and precision ≥ 0.95 (≥ 5 mm²), "
        "median |total err| ≤ 3 %, Dice ≥ 0.90.",
        "",
    ]
    for pr in ("easy", "realistic", "hard"):
        lines += [f"## {pr}", "", HEADER]
        for label, seeds in ((f"tuning {a.seeds}", tune), (f"held-out {a.holdout}", hold)):
            rs = [r for r in res if r["preset"] == pr and r["seed"] in seeds]
            lines.append(row(label, summary(rs)))
        lines.append("")
        lines.append("Per body part (tuning + held-out):")
        lines.append("")
        lines.append(HEADER.replace("| seeds |", "| body part |", 1))
        for b in bodies:
            lines.append(row(b, summary([r for r in res if r["preset"] == pr and r["body"] == b])))
        lines += ["", "Per lesion kind (tuning + held-out):", "", KIND_HEADER]
        lines += kind_rows([r for r in res if r["preset"] == pr])
        lines += ["", "Area error of the lesions found, by the **measured** peak contrast of their detected "
                  "components (`Measurement.lesions.peak_contrast_sigma`; tuning + held-out):", "", PEAK_HEADER]
        lines += peak_rows([r for r in res if r["preset"] == pr])
        s = summary([r for r in res if r["preset"] == pr])
        lines += ["", f"Median segmentation time: {s['s_per_mpx']:.3f} s/Mpx (one process each, {a.jobs} in parallel).", ""]
    lines += [
        "## Synthetic lesions inserted into real radiographs",
        "",
        "`calcimeasure.phantom.insert_lesions(pixels, spacing_mm, seed=s, n_lesions=6)` (nodules, plaques, dot "
        "clusters, clouds; peak contrast 3–12 × the image noise) into films of `tests/data/real_dicom/` read with "
        f"`read_image(path, spacing_mm=...)`; seeds {a.real_seeds}. No anatomy truth: a detection of real "
        "anatomy counts against precision. Two placements: *default* — `insert_lesions`' own mask (Otsu "
        "foreground, i.e. mostly projected over bone, a hard case for this pipeline, which rejects cores on "
        "bone); *soft tissue* — the middle class of a three-class Otsu of the film, eroded 3 mm (on the "
        "collimated hip and tibia films these classes are air, the whole limb and the collimator plateau, so "
        "most of these lesions lie over the pelvis, the tibia or the fibula too); *drawn soft tissue* — "
        "regions drawn on the two limb films in the soft tissue beside the bones, ≥ about 4 mm from bone "
        "and skin (`tests/data/real_dicom/soft_tissue_regions.json`, overlay "
        "[real_regions.png](real_regions.png)): lesions that really lie in soft tissue.",
        "",
        HEADER.replace("| seeds |", "| film (spacing) |", 1),
    ]
    for suffix, where in (("", "default"), (":soft", "soft tissue"), (":drawn", "drawn soft tissue")):
        for f, sp, desc in REAL_FILMS:
            if not any(r["preset"] == "real" and r["body"] == f + suffix for r in res):
                continue
            lines.append(row(f"{desc}: `{f}` ({sp} mm), {where}",
                             summary([r for r in res if r["preset"] == "real" and r["body"] == f + suffix])))
        lines.append(row(f"all films, {where}", summary([r for r in res if r["preset"] == "real"
                                                          and r["body"].endswith(suffix) and (suffix or ":" not in r["body"])])))
    for suffix, where in (("", "default"), (":soft", "soft tissue"), (":drawn", "drawn soft tissue")):
        lines += ["", f"Per lesion kind, all films, {where} placement:", "", KIND_HEADER]
        lines += kind_rows([r for r in res if r["preset"] == "real" and r["body"].endswith(suffix)
                            and (suffix or ":" not in r["body"])])
    lines += [
        "",
        "## Baseline vs follow-up",
        "",
        "The comparison's figures (issue 4: response category, error of the total change, registration on "
        "phantom pairs) are generated by `scripts/eval_compare.py` into [comparison.md](comparison.md); "
        "registration accuracy and failure detection: [registration.md](registration.md). They follow the "
        "segmentation's area accuracy above.",
        "",
    ]
    with open(path, "w") as fh:
        fh.write("\n".join(lines))
    print(f"wrote {path} ({len(res)} images, {time.time() - t0:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="realistic", help="easy, realistic, hard (comma-separated), or real")
    ap.add_argument("--seeds", default=None, help="seed range, e.g. 0-9 (tuning seeds with --write)")
    ap.add_argument("--holdout", default=None, help="held-out seed range with --write (default 100-109)")
    ap.add_argument("--real-seeds", default=None, help="insertion seeds per real film with --write (default 0-5)")
    ap.add_argument("--bodies", default=None)
    ap.add_argument("--cache", default=None, help="directory caching rendered phantoms")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--write", default=None, metavar="PATH", help="write the accuracy report (e.g. docs/accuracy.md)")
    ap.add_argument("--quick", action="store_true", help="with --write: fewer seeds (a smoke run, ~1 min)")
    ap.add_argument("--verbose", "-v", action="store_true")
    ap.add_argument("params", nargs="*", help="SegmentationParams overrides, name=value")
    a = ap.parse_args()
    pdict = parse_params(a.params)
    if a.write:
        a.seeds = a.seeds or ("0-1" if a.quick else "0-9")
        a.holdout = a.holdout or ("100-101" if a.quick else "100-109")
        a.real_seeds = a.real_seeds or ("0-1" if a.quick else "0-5")
        a.bodies = a.bodies or ",".join(BODIES)
        write_report(a.write, a, pdict)
        return
    a.seeds = a.seeds or "0-3"
    a.bodies = a.bodies or (",".join(f for f, _, _ in REAL_FILMS) if a.preset == "real" else ",".join(BODIES))
    seeds = seed_range(a.seeds)
    jobs = [(pr, b, s, a.cache, pdict) for pr in a.preset.split(",") for b in a.bodies.split(",") for s in seeds]
    with ProcessPoolExecutor(a.jobs) as ex:
        res = list(ex.map(score, jobs))
    for pr in a.preset.split(","):
        rs = [r for r in res if r["preset"] == pr]
        if a.verbose:
            for r in rs:
                print(f"{r['body']:8s} s{r['seed']} big={r['nbig']} hit={r['hits']} det={r['ndet']} fp={r['nfp']} "
                      f"tot={r['total_err']:+.3f} dice={r['dice']:.3f} les={r['lesion_err']:+.3f} "
                      f"t={r['t']:.2f}s sig={r['sigma']:.3g} miss={r['misses']}")
        if not rs:
            continue
        s = summary(rs)
        print(f"[{pr}] n={s['n']} recall>=5mm2 {s['hits']}/{s['nbig']}={s['recall']:.3f} "
              f"precision>=5mm2 {s['ndet'] - s['nfp']}/{s['ndet']}={s['precision']:.3f} "
              f"median|total err| {s['abs_total']:.3f} p90 {s['p90_total']:.3f} median total err {s['signed_total']:+.3f} "
              f"median lesion err {s['lesion_err']:+.3f} Dice {s['dice']:.3f} "
              f"recall(all) {s['recall_all']:.3f} precision(all) {s['precision_all']:.3f} s/Mpx {s['s_per_mpx']:.3f}")
        if a.verbose:
            print("\n".join([KIND_HEADER] + kind_rows(rs)))


if __name__ == "__main__":
    main()
