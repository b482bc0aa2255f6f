"""Train the learned background correction (``learned_background=1``); writes the shipped weights.

Usage::

    pip install -e .[train]          # scikit-learn, needed only here
    python scripts/train_background_model.py [--seeds 0-29] [--cache DIR] [--out PATH]

For each phantom (easy, realistic and hard presets x 5 body parts x seeds) the pipeline's reduced-
grid background is captured, together with the film rendered **without its lesions and without
quantum noise** (its true background, as in ``scripts/eval_background.py``). The target per pixel
is ``(background estimate - true background) / u`` (``u``: the film's reduced-grid noise), the
inputs the features of :func:`calcimeasure.segment.learned.background_features`. 25 000 body pixels
are drawn per film, twenty times as likely within 4 px of a lesion (``--lesion-weight``). Four scikit-learn
``MLPRegressor`` (two hidden layers of 64 ReLU units, signed-log inputs and target, Adam, early
stopping; random states 0-3) are fitted on 3 M of them and exported as plain arrays (``mu, sd`` and
``n{j}W{k}, n{j}b{k}`` per network) for the numpy inference of ``segment/learned.py``, which
averages them. The held-out seeds (100-109) of docs/accuracy.md are never used. About 20 min on 2
cores (warm phantom cache; rendering the lesion-free twins of 450 phantoms adds a few minutes when
cold).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("eval_background", os.path.join(HERE, "eval_background.py"))
eb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eb)
ev = eb.ev

SAMPLES_PER_FILM = 25_000
#: How much more likely a pixel within 4 px of a lesion is drawn (``--lesion-weight``).
LESION_WEIGHT = 20.0
TRAIN_SAMPLES = 3_000_000
#: Networks averaged (different initialisations and batches): one network's false positives on
#: held-out phantoms varied from 9 to 33 between two trainings; the average is stable.
ENSEMBLE = 4


def fit_net(job):
    """One network of the ensemble: (coefs, intercepts, epochs)."""
    X, y, seed = job
    from sklearn.neural_network import MLPRegressor

    net = MLPRegressor(hidden_layer_sizes=(64, 64), batch_size=2048, learning_rate_init=2e-3, max_iter=40,
                       early_stopping=True, n_iter_no_change=4, random_state=seed)
    net.fit(X, y)
    return net.coefs_, net.intercepts_, net.n_iter_


def capture(pixels, spacing, params=None) -> dict:
    """The pipeline's reduced grid, masks and background of one film (default parameters, or
    ``params``: a :class:`calcimeasure.SegmentationParams`)."""
    from calcimeasure.segment import pipeline, segment

    cap: dict = {}
    orig = pipeline._soft_background

    def wrap(small, body, bone, bg_open, sp, prm, seed_background=None, body_ext=None):
        out, usable = orig(small, body, bone, bg_open, sp, prm, seed_background=seed_background, body_ext=body_ext)
        cap.update(small=small, bone=bone, body=body if body_ext is None else body_ext, sp=sp, bg=out, params=prm)
        return out, usable

    pipeline._soft_background = wrap
    try:
        segment(pixels, spacing_mm=spacing, params=params)
    finally:
        pipeline._soft_background = orig
    return cap


def film_samples(job) -> tuple[np.ndarray, np.ndarray]:
    """Features and targets of SAMPLES_PER_FILM body pixels of one phantom."""
    from calcimeasure.segment import learned, pipeline
    from calcimeasure.segment.background import reduce

    preset, body_part, seed, cache = job
    d = ev.load(preset, body_part, seed, cache)
    cap = capture(d["pixels"], d["spacing"])
    small, bg, bone, body, sp = cap["small"], cap["bg"], cap["bone"], cap["body"], cap["sp"]
    floors = pipeline._learned_floors(small, bg, body, sp, cap["params"])
    feats, u = learned.background_features(small, bg, floors, bone, body, sp)
    f = max(1, int(round(d["pixels"].shape[0] / small.shape[0])))
    true = reduce(eb.lesion_free(body_part, seed, cache, preset).astype(np.float32), f)[: small.shape[0], : small.shape[1]]
    target = (bg - true) / u
    lesion = reduce((d["labels"] > 0).astype(np.float32), f)[: small.shape[0], : small.shape[1]] > 0
    near = cv2.dilate(lesion.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool).ravel()
    idx = np.flatnonzero(body.ravel())
    w = np.where(near[idx], LESION_WEIGHT, 1.0)
    pick = np.random.default_rng(seed).choice(idx, size=min(SAMPLES_PER_FILM, idx.size), replace=False, p=w / w.sum())
    return feats.reshape(-1, feats.shape[-1])[pick], target.ravel()[pick]


#: Real radiographs for training (file, spacing in mm given to the reader or None to use the file's
#: own): two chests and a dental panoramic -- real anatomy, noise and processing. Not used: the
#: 16-bit DX chest and the 8-bit fluoroscopic shoulder, whose estimated noise is so small against
#: their anatomy (targets of -150 to -250 noise units everywhere) that lesions inserted at 3-12 noise
#: sigmas mean nothing there.
#: The films scored in docs/accuracy.md (hip, tibia, NIH chest) are never used. Looked up in
#: ``tests/data/real_dicom`` and then in the developers' corpus (``$CALCIMEASURE_CORPUS``, default
#: ``../shared/real_dicom``); films not found are skipped with a message.
REAL_TRAIN_FILMS = [
    ("rg1_cr_chest_pa_mono1_15bit_j2k_lossy.dcm", 0.2),
    ("cr_chest_mono1_konica_jpeg_baseline8.dcm", None),
    ("cr_dental_panoramic_mono1_jpeg_lossless_modality_lut_seq.dcm", None),
]
#: Share of the training samples drawn from the real films.
REAL_FRACTION = 0.33


def find_real(film: str) -> str | None:
    corpus = os.environ.get("CALCIMEASURE_CORPUS", os.path.join(HERE, "..", "..", "shared", "real_dicom"))
    for d in (ev.REAL_DIR, corpus):
        if os.path.exists(os.path.join(d, film)):
            return os.path.join(d, film)
    return None


def real_samples(job) -> tuple[np.ndarray, np.ndarray]:
    """Features and targets of SAMPLES_PER_FILM body pixels of a real film with inserted lesions.

    The true background of a lesion-free real film is the film itself: everything in it that is not
    an inserted lesion -- ribs, vessels, trabeculae, skin folds, processing halos -- belongs to the
    background. The reduced film is smoothed by 0.7 px (its noise would otherwise be part of the
    target).
    """
    from calcimeasure import read_image
    from calcimeasure.phantom import insert_lesions
    from calcimeasure.segment import learned, pipeline
    from calcimeasure.segment.background import reduce

    path, spacing, seed = job
    rad = read_image(path, spacing_mm=spacing) if spacing else read_image(path)
    rng = np.random.default_rng(1000 + seed)
    mask = ev.soft_tissue_mask(rad.pixels, rad.spacing_mm) if seed % 2 else None
    pixels, labels, _ = insert_lesions(rad.pixels, rad.spacing_mm, seed=seed, n_lesions=int(rng.integers(6, 13)),
                                       mask=mask)
    cap = capture(pixels, rad.spacing_mm)
    small, bg, bone, body, sp = cap["small"], cap["bg"], cap["bone"], cap["body"], cap["sp"]
    floors = pipeline._learned_floors(small, bg, body, sp, cap["params"])
    feats, u = learned.background_features(small, bg, floors, bone, body, sp)
    f = max(1, int(round(pixels.shape[0] / small.shape[0])))
    true = reduce(rad.pixels.astype(np.float32), f)[: small.shape[0], : small.shape[1]]
    true = cv2.GaussianBlur(true, (0, 0), 0.7)
    target = (bg - true) / u
    lesion = reduce((labels > 0).astype(np.float32), f)[: small.shape[0], : small.shape[1]] > 0
    near = cv2.dilate(lesion.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool).ravel()
    idx = np.flatnonzero(body.ravel())
    w = np.where(near[idx], LESION_WEIGHT, 1.0)
    pick = rng.choice(idx, size=min(SAMPLES_PER_FILM, idx.size), replace=False, p=w / w.sum())
    return feats.reshape(-1, feats.shape[-1])[pick], target.ravel()[pick]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0-29")
    ap.add_argument("--presets", default="easy,realistic,hard")
    ap.add_argument("--cache", default=None, help="phantom cache directory (as eval_segmentation.py)")
    ap.add_argument("--real-seeds", default="",
                    help="also train on lesions inserted into REAL_TRAIN_FILMS with these seeds, e.g. 0-29 (off by "
                         "default: measured worse on the held-out real films, docs/segmentation.md)")
    ap.add_argument("--lesion-weight", type=float, default=LESION_WEIGHT)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "src", "calcimeasure", "segment", "data",
                                                  "background_mlp.npz"))
    a = ap.parse_args()
    globals()["LESION_WEIGHT"] = a.lesion_weight  # read by the (forked) sampling workers
    from calcimeasure.segment import learned

    t0 = time.time()
    jobs = [(p, b, s, a.cache) for p in a.presets.split(",") for s in ev.seed_range(a.seeds) for b in ev.BODIES]
    with ProcessPoolExecutor(a.jobs) as ex:
        parts = list(ex.map(film_samples, jobs))
    X = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    print(f"{len(jobs)} phantoms, {len(y)} samples, {time.time() - t0:.0f} s")
    rng = np.random.default_rng(0)
    real_jobs = []
    for film, spacing in REAL_TRAIN_FILMS if a.real_seeds else []:
        path = find_real(film)
        if path is None:
            print(f"real training film not found, skipped: {film}")
            continue
        real_jobs += [(path, spacing, s) for s in ev.seed_range(a.real_seeds)]
    n_real = int(round(TRAIN_SAMPLES * REAL_FRACTION)) if real_jobs else 0
    i = rng.choice(len(y), size=min(len(y), TRAIN_SAMPLES - n_real), replace=False)
    X, y = X[i], y[i]
    if real_jobs:
        with ProcessPoolExecutor(a.jobs) as ex:
            parts = list(ex.map(real_samples, real_jobs))
        Xr = np.concatenate([p[0] for p in parts])
        yr = np.concatenate([p[1] for p in parts])
        print(f"{len(real_jobs)} real films with inserted lesions, {len(yr)} samples, {time.time() - t0:.0f} s")
        j = rng.choice(len(yr), size=min(len(yr), n_real), replace=False)
        X, y = np.concatenate([X, Xr[j]]), np.concatenate([y, yr[j]])
    i = np.arange(len(y))
    Xt = learned._signed_log(X[i])
    mu, sd = Xt.mean(0), Xt.std(0) + 1e-6
    Xs, ys = ((Xt - mu) / sd).astype(np.float32), learned._signed_log(y[i])
    del Xt
    with ProcessPoolExecutor(a.jobs) as ex:
        nets = list(ex.map(fit_net, [(Xs, ys, seed) for seed in range(ENSEMBLE)]))
    print(f"fitted {ENSEMBLE} networks in {[n for _, _, n in nets]} epochs, {time.time() - t0:.0f} s")
    arrays = {"mu": mu.astype(np.float32), "sd": sd.astype(np.float32)}
    for j, (coefs, intercepts, _) in enumerate(nets):
        for k, (w, b) in enumerate(zip(coefs, intercepts)):
            arrays[f"n{j}W{k}"], arrays[f"n{j}b{k}"] = w.astype(np.float32), b.astype(np.float32)
    pred = learned.predict_excess(X[:, None, :], arrays)[:, 0]
    print(f"median |target| {np.median(np.abs(y)):.2f}, median |target - prediction| {np.median(np.abs(y - pred)):.2f}")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, a.out)
    print("wrote", os.path.abspath(a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
