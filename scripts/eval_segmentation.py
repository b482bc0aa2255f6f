"""Score :func:`calcimeasure.segment` against phantom ground truth.

Usage::

    python scripts/eval_segmentation.py [--preset realistic] [--seeds 0-5] [--bodies hand,knee]
           [--cache DIR] [--jobs 2] [--verbose] [param=value ...]

Metrics (lesions with ``in_field`` only; lesions outside the collimated field are not expected):

* recall: fraction of true lesions >= 5 mm² with >= 30 % of their labelled pixels detected;
* precision: fraction of detected components >= 5 mm² with >= 30 % of their pixels on a true lesion;
* total area error: (detected area − exact true area) / exact true area, per image (median of |.|);
* Dice of the lesion masks, per image (median);
* time per Mpx of ``segment`` (median).
"""

from __future__ import annotations

import argparse
import os
import pickle
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from calcimeasure.params import SegmentationParams
from calcimeasure.segment import segment

BODIES = ["hand", "fingers", "forearm", "elbow", "knee"]


def load(preset: str, body: str, seed: int, cache: str | None) -> dict:
    fn = os.path.join(cache, f"{preset}_{body}_{seed}.pkl") if cache else None
    if fn and os.path.exists(fn):
        with open(fn, "rb") as fh:
            return pickle.load(fh)
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
    truth_in = np.where(np.isin(truth, outside), 0, truth)
    big = [l for l in infield if l["area_mm2"] >= 5]
    hits, misses, errs = 0, [], []
    for l in big:
        m = truth == l["id"]
        cov = (lab[m] > 0).mean() if m.any() else 0.0
        if cov >= 0.3:
            hits += 1
            ids = np.unique(lab[m])
            ids = ids[ids > 0]
            errs.append((np.isin(lab, ids).sum() * pa - l["area_mm2"]) / l["area_mm2"])
        else:
            rr, cc = np.nonzero(m)
            why = [rj["reason"] for rj in seg.rejected
                   if rj["bbox"][0] <= rr.mean() < rj["bbox"][1] and rj["bbox"][2] <= cc.mean() < rj["bbox"][3]]
            misses.append((l["kind"], round(l["area_mm2"], 1), round(l["peak"], 3), l["touches_bone"], round(cov, 2), why))
    counts = np.bincount(lab.ravel())
    ontruth = np.bincount(lab.ravel(), weights=(truth > 0).ravel().astype(float), minlength=len(counts))
    ndet_big, fp = 0, []
    for i in range(1, len(counts)):
        if counts[i] * pa >= 5:
            ndet_big += 1
            if ontruth[i] / counts[i] < 0.3:
                fp.append(i)
    true_area = sum(l["area_mm2"] for l in infield)
    det_area = (lab > 0).sum() * pa
    tm, sm = truth_in > 0, lab > 0
    dice = 2 * (tm & sm).sum() / max(1, tm.sum() + sm.sum())
    return dict(preset=preset, body=body, seed=seed, nbig=len(big), hits=hits, ndet=ndet_big, nfp=len(fp),
                total_err=(det_area - true_area) / true_area if true_area else float("nan"), dice=dice,
                lesion_err=float(np.median(errs)) if errs else float("nan"), t=dt,
                mpx=lab.size / 1e6, sigma=seg.noise_sigma, misses=misses)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="realistic")
    ap.add_argument("--seeds", default="0-3")
    ap.add_argument("--bodies", default=",".join(BODIES))
    ap.add_argument("--cache", default=None)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--verbose", "-v", action="store_true")
    ap.add_argument("params", nargs="*")
    a = ap.parse_args()
    lo, _, hi = a.seeds.partition("-")
    seeds = range(int(lo), int(hi or lo) + 1)
    pdict = {k: float(v) for k, v in (p.split("=") for p in a.params)}
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
        nb, nh = sum(r["nbig"] for r in rs), sum(r["hits"] for r in rs)
        nd, nf = sum(r["ndet"] for r in rs), sum(r["nfp"] for r in rs)
        print(f"[{pr}] n={len(rs)} recall>=5mm2 {nh}/{nb}={nh / max(1, nb):.3f} "
              f"precision>=5mm2 {nd - nf}/{nd}={(nd - nf) / max(1, nd):.3f} "
              f"median|total err| {np.median([abs(r['total_err']) for r in rs]):.3f} "
              f"median total err {np.median([r['total_err'] for r in rs]):+.3f} "
              f"median lesion err {np.nanmedian([r['lesion_err'] for r in rs]):+.3f} "
              f"Dice {np.median([r['dice'] for r in rs]):.3f} "
              f"s/Mpx {np.median([r['t'] / r['mpx'] for r in rs]):.3f}")


if __name__ == "__main__":
    main()
