"""Train the lesion-mask U-Net (``unet_mask``); writes ``segment/data/lesion_unet.onnx``.

Usage::

    pip install -e .[train-unet]       # PyTorch and onnx, needed only here
    python scripts/train_lesion_unet.py --cache DIR [--seeds 0-17] [--val-seeds 15-17] [--real-seeds 0-29]

Step 1 (prepare): each phantom (easy, realistic and hard presets x 5 body parts x seeds) is segmented
with ``learned_background=2`` (the shipped background U-Net), and the inputs of
:func:`calcimeasure.segment.lesion_unet.mask_inputs` are cached with the target: the share of each
fine-grid pixel (about 0.3 mm) that the true lesions cover. Lesions inserted into the real non-limb
films of ``train_background_model.REAL_TRAIN_FILMS`` (two CR chests, a dental panoramic; never the
scored hip, tibia and NIH chest) are added with ``--real-seeds``.

Step 2: a U-Net of the same shape as the background network (3 halvings, 16-32-48-64 channels, one
output) is trained on random 128 x 128 crops (flips, quarter turns; 2 in 3 centred on a true or
detected lesion) with a binary cross-entropy on the soft coverage target over the body plus a soft
Dice term over the crop. The ``--val-seeds`` are kept out for validation (the epoch with the lowest
validation loss is exported). The held-out seeds (>= 100) of docs/accuracy.md are refused.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write(fn: str, pixels: np.ndarray, spacing, labels: np.ndarray, close_mm: float = 0.0) -> str:
    import cv2

    from calcimeasure import SegmentationParams, segment
    from calcimeasure.segment import lesion_unet
    from calcimeasure.segment.background import reduce

    seg = segment(pixels, spacing_mm=spacing, params=SegmentationParams(learned_background=2, body_close_mm=close_mm))
    pix = float(np.sqrt(spacing[0] * spacing[1]))
    x, f = lesion_unet.mask_inputs(pixels, seg.residual, seg.labels > 0, seg.bone, seg.body & seg.field_mask, pix)
    h, w = x.shape[1:]
    cov = reduce((labels > 0).astype(np.float32), f)[:h, :w]
    near = cv2.dilate(((cov > 0) | (x[4] > 0)).astype(np.uint8), np.ones((5, 5), np.uint8))
    tmp = fn + ".tmp.npz"
    np.savez(tmp, x=x.astype(np.float16), cov=cov.astype(np.float16), body=(x[-1] > 0).astype(np.uint8),
             near=near.astype(np.uint8))
    os.replace(tmp, fn)
    return fn


def prepare_film(job) -> str:
    preset, part, seed, cache, work, close_mm = job
    fn = os.path.join(work, f"{preset}_{part}_{seed}.npz")
    if not os.path.exists(fn):
        d = _load("eval_segmentation").load(preset, part, seed, cache)
        _write(fn, d["pixels"], d["spacing"], d["labels"], close_mm)
    return fn


def prepare_real(job) -> str:
    from calcimeasure import read_image
    from calcimeasure.phantom import insert_lesions

    path, spacing, seed, work, close_mm = job
    fn = os.path.join(work, f"real_{os.path.basename(path)[:-4]}_{seed}.npz")
    if not os.path.exists(fn):
        ev = _load("eval_segmentation")
        rad = read_image(path, spacing_mm=spacing) if spacing else read_image(path)
        rng = np.random.default_rng(1000 + seed)
        mask = ev.soft_tissue_mask(rad.pixels, rad.spacing_mm) if seed % 2 else None
        if seed % 3 == 2:
            try:  # a limb film's drawn soft tissue, where there is one
                mask = ev.drawn_mask(os.path.basename(path), rad.pixels.shape)
            except (KeyError, OSError):
                pass
        pixels, labels, _ = insert_lesions(rad.pixels, rad.spacing_mm, seed=seed,
                                           n_lesions=int(rng.integers(6, 13)), mask=mask)
        _write(fn, pixels, rad.spacing_mm, labels, close_mm)
    return fn


def crops(films, n, size, rng):
    xs, ts, ws = [], [], []
    for _ in range(n):
        f = films[rng.integers(len(films))]
        h, w = f["cov"].shape
        pool = np.flatnonzero(f["near"]) if rng.random() < 2 / 3 and f["near"].any() else np.flatnonzero(f["body"])
        if pool.size == 0:
            pool = np.arange(h * w)
        c = pool[rng.integers(pool.size)]
        r0 = int(np.clip(c // w - size // 2 + rng.integers(-16, 17), 0, max(0, h - size)))
        c0 = int(np.clip(c % w - size // 2 + rng.integers(-16, 17), 0, max(0, w - size)))
        sl = (slice(r0, r0 + size), slice(c0, c0 + size))
        x = np.zeros((f["x"].shape[0], size, size), np.float32)
        t = np.zeros((size, size), np.float32)
        wt = np.zeros((size, size), np.float32)
        xx = f["x"][(slice(None),) + sl].astype(np.float32)
        hh, ww = xx.shape[1:]
        x[:, :hh, :ww] = xx
        t[:hh, :ww] = f["cov"][sl]
        wt[:hh, :ww] = f["body"][sl]
        k = int(rng.integers(4))
        arrs = [np.rot90(a, k, axes=(-2, -1)) for a in (x, t, wt)]
        if rng.integers(2):
            arrs = [a[..., ::-1] for a in arrs]
        for lst, a in zip((xs, ts, ws), arrs):
            lst.append(np.ascontiguousarray(a))
    return tuple(np.stack(v) for v in (xs, ts, ws))


def loss_fn(out, t, wt):
    import torch

    logit = out[:, 0]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logit, t, reduction="none")
    p = torch.sigmoid(logit) * wt
    tt = t * wt
    inter = (p * tt).sum((1, 2))
    dice = 1 - (2 * inter + 1) / (p.sum((1, 2)) + tt.sum((1, 2)) + 1)
    return (bce * wt).sum() / wt.sum().clamp(min=1) + 0.5 * dice.mean()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0-17")
    ap.add_argument("--val-seeds", default="15-17")
    ap.add_argument("--presets", default="easy,realistic,hard")
    ap.add_argument("--cache", default=None, help="phantom cache directory (as eval_segmentation.py)")
    ap.add_argument("--work", default=os.path.join("/tmp", "calcimeasure_lesion_unet"))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=150, help="batches per epoch")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--real-seeds", default="0-29")
    ap.add_argument("--max-lr", type=float, default=3e-3)
    ap.add_argument("--prepare-only", action="store_true")
    ap.add_argument("--extra-real", default="",
                    help="comma-separated FILM:SPACING of further real films to insert lesions into (an "
                         "experiment, e.g. a cross-validation fold on one scored limb film: never ship it)")
    ap.add_argument("--init", default=None, help="start from these weights (a .pt state dict written by a run)")
    ap.add_argument("--init-onnx", default=None,
                    help="start from a shipped ONNX model (batch norm folded; kept frozen while training)")
    ap.add_argument("--body-close-mm", type=float, default=0.0,
                    help="prepare the inputs with the body's clefts closed (SegmentationParams.body_close_mm) "
                         "and the background U-Net then in the package; use a --work directory of its own")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "src", "calcimeasure", "segment", "data",
                                                  "lesion_unet.onnx"))
    a = ap.parse_args()
    ev = _load("eval_segmentation")
    tbm = _load("train_background_model")
    ub = _load("train_background_unet")
    os.makedirs(a.work, exist_ok=True)
    seeds = ev.seed_range(a.seeds)
    val = set(ev.seed_range(a.val_seeds))
    if any(s >= 100 for s in seeds + sorted(val)):
        raise SystemExit("seeds >= 100 are the held-out seeds of docs/accuracy.md: never train on them")
    jobs = [(p, b, s, a.cache, a.work, a.body_close_mm) for p in a.presets.split(",") for s in seeds
            for b in ev.BODIES]
    real_jobs = []
    extra = [(f, float(sp) if sp else None) for f, _, sp in (e.partition(":") for e in a.extra_real.split(",") if e)]
    for film, spacing in (tbm.REAL_TRAIN_FILMS + extra) if a.real_seeds else []:
        path = tbm.find_real(film)
        if path is None:
            print(f"real training film not found, skipped: {film}")
            continue
        real_jobs += [(path, spacing, s, a.work, a.body_close_mm) for s in ev.seed_range(a.real_seeds)]
    t0 = time.time()
    with ProcessPoolExecutor(a.jobs) as ex:
        files = list(ex.map(prepare_film, jobs))
        real_files = list(ex.map(prepare_real, real_jobs))
    print(f"prepared {len(files)} phantoms, {len(real_files)} real insertions in {time.time() - t0:.0f} s", flush=True)
    if a.prepare_only:
        return 0

    import torch

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    real_val = set(range(25, 30))
    train = ub.load_films([f for f, j in zip(files, jobs) if j[2] not in val] +
                          [f for f, j in zip(real_files, real_jobs) if j[2] not in real_val])
    valid = ub.load_films([f for f, j in zip(files, jobs) if j[2] in val] +
                          [f for f, j in zip(real_files, real_jobs) if j[2] in real_val])
    print(f"{len(train)} training films, {len(valid)} validation films", flush=True)
    vx, vt, vw = (torch.from_numpy(v) for v in crops(valid, 256, a.size, np.random.default_rng(1)))
    model = ub.build_model(in_ch=vx.shape[1], out_ch=1)
    if a.init:
        model.load_state_dict(torch.load(a.init))
    if a.init_onnx:
        ub.load_onnx_weights(model, a.init_onnx)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.max_lr, total_steps=a.epochs * a.steps)
    best, best_state = np.inf, None
    for ep in range(a.epochs):
        model.train()
        if a.init_onnx:
            ub.freeze_batch_norm(model)
        tl = 0.0
        for _ in range(a.steps):  # noqa: B007
            x, t, wt = (torch.from_numpy(v) for v in crops(train, a.batch, a.size, rng))
            loss = loss_fn(model(x), t, wt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tl += float(loss.detach())
        model.eval()
        with torch.no_grad():
            vloss = float(sum(loss_fn(model(vx[i:i + 32]), vt[i:i + 32], vw[i:i + 32])
                              for i in range(0, len(vx), 32)) / (len(vx) / 32))
        if vloss < best:
            best, best_state = vloss, {k: v.clone() for k, v in model.state_dict().items()}
        print(f"epoch {ep}: train {tl / a.steps:.4f} valid {vloss:.4f} ({time.time() - t0:.0f} s)", flush=True)
    model.load_state_dict(best_state)
    model.eval()
    tmp = a.out + ".tmp"
    torch.onnx.export(model, torch.zeros(1, vx.shape[1], 64, 64), tmp, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {2: "h", 3: "w"}, "y": {2: "h", 3: "w"}}, opset_version=13,
                      dynamo=False)
    os.replace(tmp, a.out)
    torch.save(best_state, os.path.join(a.work, "lesion_unet.pt"))
    print(f"best validation loss {best:.4f}; wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
