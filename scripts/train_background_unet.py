"""Train the U-Net background estimate (``learned_background=2``); writes the shipped ONNX model.

Usage::

    pip install -e .[train-unet]       # PyTorch and onnx, needed only here
    python scripts/train_background_unet.py [--seeds 0-29] [--cache DIR] [--out PATH]

Step 1 (``prepare``): for each phantom (easy, realistic and hard presets x 5 body parts x seeds) the
pipeline's reduced-grid image, masks and background estimate (default parameters) are captured,
together with the film rendered **without its lesions and without quantum noise** (its true
background, as in ``scripts/eval_background.py``) and the lesions' share of each reduced-grid pixel.
The network's inputs are :func:`calcimeasure.segment.unet.unet_inputs`; its targets are the signed
log of ``(background estimate - true background) / u`` (``u``: the film's reduced-grid noise) and
whether the pixel holds a lesion. Arrays are cached per film in ``--work``.

Step 2: a U-Net (3 halvings, 16-32-48-64 channels, batch norm folded away at export) is trained on
random 128 x 128 crops (flips and quarter turns) with a Huber loss on the background target over the
body (pixels within 4 px of a lesion weighted ``--lesion-weight`` times) plus a binary
cross-entropy on the lesion channel (20 epochs of 150 batches of 16: about 45 min on 2 cores). Seeds
25-29 (``--val-seeds``) are kept out of training, for validation (the epoch with the lowest
validation loss is exported) and for choosing ``unet_keep_probability`` / ``unet_reject_probability``.
The held-out seeds (100-109) of docs/accuracy.md are never used. The shipped model is
``--real-seeds 0-29 --epochs 20 --steps 150`` with the defaults below: lesions inserted into the
real non-limb films of ``train_background_model.REAL_TRAIN_FILMS`` (two CR chests, a dental
panoramic; never the scored hip, tibia and NIH chest) are part of the training -- without them the
network takes real anatomy for lesions (docs/segmentation.md).
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


def _tbm():
    spec = importlib.util.spec_from_file_location("train_background_model",
                                                  os.path.join(HERE, "train_background_model.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write_film(fn: str, cap: dict, true, labels: np.ndarray, shape: tuple[int, int]) -> str:
    """Network inputs and targets of one captured film (``capture``), written atomically to ``fn``;
    ``true(f, shape)`` gives its true background reduced by ``f`` and cut to ``shape``."""
    import cv2

    from calcimeasure.segment import unet
    from calcimeasure.segment.background import reduce

    small, bg, bone, body, sp = cap["small"], cap["bg"], cap["bone"], cap["body"], cap["sp"]
    x, u = unet.unet_inputs(small, bg, bone, body, sp)
    f = max(1, int(round(shape[0] / small.shape[0])))
    les = reduce((labels > 0).astype(np.float32), f)[: small.shape[0], : small.shape[1]]
    near = cv2.dilate((les > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    target = unet.signed_log((bg - true(f, small.shape)) / u).astype(np.float32)
    tmp = fn + ".tmp.npz"
    np.savez(tmp, x=x.astype(np.float16), t=target, les=(les > 0.25).astype(np.uint8),
             cov=les.astype(np.float16), body=body.astype(np.uint8), near=near.astype(np.uint8))
    os.replace(tmp, fn)
    return fn


def _params(close_mm: float):
    """The segmentation parameters the inputs are captured with: the defaults, with the body's
    clefts closed by a disk of ``close_mm`` (``body_close_mm``) when it is > 0."""
    from calcimeasure import SegmentationParams

    return SegmentationParams(body_close_mm=close_mm) if close_mm > 0 else None


def prepare_film(job) -> str:
    """Inputs and targets of one phantom, cached as ``{work}/{preset}_{part}_{seed}.npz``."""
    from calcimeasure.segment.background import reduce

    preset, part, seed, cache, work, close_mm = job
    fn = os.path.join(work, f"{preset}_{part}_{seed}.npz")
    if os.path.exists(fn):
        return fn
    tbm = _tbm()
    d = tbm.ev.load(preset, part, seed, cache)

    def true(f, shape):
        free = reduce(tbm.eb.lesion_free(part, seed, cache, preset).astype(np.float32), f)
        return free[: shape[0], : shape[1]]

    return _write_film(fn, tbm.capture(d["pixels"], d["spacing"], _params(close_mm)), true, d["labels"],
                       d["pixels"].shape)


def prepare_real(job) -> str:
    """Inputs and targets of a real film with inserted lesions (``{work}/real_{film}_{seed}.npz``).

    The true background of a lesion-free real film is the film itself (reduced, smoothed 0.7 px):
    everything in it that is not an inserted lesion -- ribs, vessels, trabeculae, skin folds,
    processing halos -- belongs to the background (as in ``train_background_model.real_samples``).
    """
    import cv2

    from calcimeasure import read_image
    from calcimeasure.phantom import insert_lesions
    from calcimeasure.segment.background import reduce

    path, spacing, seed, work, close_mm = job
    fn = os.path.join(work, f"real_{os.path.basename(path)[:-4]}_{seed}.npz")
    if os.path.exists(fn):
        return fn
    tbm = _tbm()
    rad = read_image(path, spacing_mm=spacing) if spacing else read_image(path)
    rng = np.random.default_rng(1000 + seed)
    mask = tbm.ev.soft_tissue_mask(rad.pixels, rad.spacing_mm) if seed % 2 else None
    pixels, labels, _ = insert_lesions(rad.pixels, rad.spacing_mm, seed=seed, n_lesions=int(rng.integers(6, 13)),
                                       mask=mask)

    def true(f, shape):
        return cv2.GaussianBlur(reduce(rad.pixels.astype(np.float32), f)[: shape[0], : shape[1]], (0, 0), 0.7)

    return _write_film(fn, tbm.capture(pixels, rad.spacing_mm, _params(close_mm)), true, labels, pixels.shape)


def build_model(width=(16, 32, 48, 64), in_ch=6, out_ch=2):
    import torch
    from torch import nn

    def block(a, b):
        return nn.Sequential(nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True),
                             nn.Conv2d(b, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True))

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            w = width
            self.enc = nn.ModuleList([block(in_ch, w[0])] + [block(w[i], w[i + 1]) for i in range(len(w) - 1)])
            self.up = nn.ModuleList([nn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2) for i in range(len(w) - 1)])
            self.dec = nn.ModuleList([block(2 * w[i], w[i]) for i in range(len(w) - 1)])
            self.head = nn.Conv2d(w[0], out_ch, 1)

        def forward(self, x):
            skips = []
            for i, e in enumerate(self.enc):
                x = e(x)
                if i < len(self.enc) - 1:
                    skips.append(x)
                    x = torch.nn.functional.max_pool2d(x, 2)
            for i in reversed(range(len(self.dec))):
                x = self.up[i](x)
                x = self.dec[i](torch.cat([x, skips[i]], 1))
            return self.head(x)

    return UNet()


def load_onnx_weights(model, path: str) -> None:
    """Start ``model`` from a shipped ONNX export (batch norm folded into the convolutions).

    The ONNX convolutions are taken in execution order, as are the model's; its batch norms are set
    to the identity, and must stay frozen (``freeze_batch_norm``) while training from these weights.
    """
    import onnx
    import torch
    from onnx import numpy_helper

    g = onnx.load(path).graph
    init = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    convs = [n for n in g.node if n.op_type in ("Conv", "ConvTranspose")]
    order = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m)) for m in model.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    with torch.no_grad():
        model.eval()
        model(torch.zeros(1, in_channels(model), 16, 16))
    for h in hooks:
        h.remove()
    if len(order) != len(convs):
        raise SystemExit(f"{path}: {len(convs)} convolutions, the model has {len(order)}")
    with torch.no_grad():
        for m, n in zip(order, convs):
            m.weight.copy_(torch.from_numpy(init[n.input[1]].copy()))
            m.bias.copy_(torch.from_numpy(init[n.input[2]].copy()))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
                m.running_mean.zero_()
                m.running_var.fill_(1.0 - m.eps)


def in_channels(model) -> int:
    """Input channels of ``model`` (its first convolution's)."""
    import torch

    return next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).in_channels


def freeze_batch_norm(model) -> None:
    """Batch norms in evaluation mode (their identity statistics kept) while the rest trains."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
            for q in m.parameters():
                q.requires_grad_(False)


def load_films(files):
    films = []
    for fn in files:
        with np.load(fn) as z:
            films.append({k: z[k] for k in z.files})
    return films


def crops(films, n, size, rng):
    """n random crops (with flips / quarter turns) centred on body pixels; lesions drawn 1 in 2."""
    xs, ts, ls, ws = [], [], [], []
    for _ in range(n):
        f = films[rng.integers(len(films))]
        h, w = f["t"].shape
        pool = np.flatnonzero(f["near"]) if rng.random() < 0.5 and f["near"].any() else np.flatnonzero(f["body"])
        c = pool[rng.integers(pool.size)]
        r0 = int(np.clip(c // w - size // 2, 0, max(0, h - size)))
        c0 = int(np.clip(c % w - size // 2, 0, max(0, w - size)))
        sl = (slice(r0, r0 + size), slice(c0, c0 + size))
        x = np.zeros((f["x"].shape[0], size, size), np.float32)
        t = np.zeros((size, size), np.float32)
        le = np.zeros((size, size), np.float32)
        wt = np.zeros((size, size), np.float32)
        xx = f["x"][(slice(None),) + sl].astype(np.float32)
        hh, ww = xx.shape[1:]
        x[:, :hh, :ww] = xx
        t[:hh, :ww] = f["t"][sl]
        le[:hh, :ww] = f[LESION_TARGET][sl]
        wt[:hh, :ww] = f["body"][sl] * (1.0 + (LESION_WEIGHT - 1.0) * f["near"][sl])
        k = int(rng.integers(4))
        flip = bool(rng.integers(2))
        arrs = [np.rot90(a, k, axes=(-2, -1)) for a in (x, t, le, wt)]
        if flip:
            arrs = [a[..., ::-1] for a in arrs]
        for lst, a in zip((xs, ts, ls, ws), arrs):
            lst.append(np.ascontiguousarray(a))
    return tuple(np.stack(v) for v in (xs, ts, ls, ws))


LESION_WEIGHT = 10.0
#: The lesion channel's target: "les" (a lesion covers > 25 % of the reduced-grid pixel) or "cov"
#: (the share of the pixel the lesion covers: a soft target, so that the predicted probability is
#: the expected coverage, whose 0.5 contour, interpolated, follows the silhouette below the grid).
LESION_TARGET = "les"


def loss_fn(out, t, le, wt):
    import torch

    hub = torch.nn.functional.smooth_l1_loss(out[:, 0], t, reduction="none", beta=0.5)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out[:, 1], le, reduction="none")
    body = (wt > 0).float()
    return (hub * wt).sum() / wt.sum().clamp(min=1) + 0.5 * (bce * body).sum() / body.sum().clamp(min=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0-29")
    ap.add_argument("--val-seeds", default="25-29")
    ap.add_argument("--presets", default="easy,realistic,hard")
    ap.add_argument("--cache", default=None, help="phantom cache directory (as eval_segmentation.py)")
    ap.add_argument("--work", default=os.path.join("/tmp", "calcimeasure_unet"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--steps", type=int, default=150, help="batches per epoch")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--lesion-weight", type=float, default=LESION_WEIGHT)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--real-seeds", default="",
                    help="also train on lesions inserted into train_background_model.REAL_TRAIN_FILMS (chests and "
                         "a dental panoramic; never the scored hip and tibia) with these seeds, e.g. 0-29")
    ap.add_argument("--prepare-only", action="store_true")
    ap.add_argument("--body-close-mm", type=float, default=0.0,
                    help="capture the inputs with the body's clefts closed (SegmentationParams.body_close_mm); "
                         "use a --work directory of its own")
    ap.add_argument("--init", default=None, help="start from these weights (a .pt state dict written by a run)")
    ap.add_argument("--init-onnx", default=None,
                    help="start from a shipped ONNX model (batch norm folded; kept frozen while training)")
    ap.add_argument("--lesion-target", choices=("binary", "coverage"), default="binary",
                    help="lesion channel target: lesion covers > 25 %% of the pixel, or the covered share")
    ap.add_argument("--max-lr", type=float, default=3e-3)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "src", "calcimeasure", "segment", "data",
                                                  "background_unet.onnx"))
    a = ap.parse_args()
    globals()["LESION_WEIGHT"] = a.lesion_weight
    globals()["LESION_TARGET"] = "cov" if a.lesion_target == "coverage" else "les"
    tbm = _tbm()
    os.makedirs(a.work, exist_ok=True)
    seeds = tbm.ev.seed_range(a.seeds)
    val = set(tbm.ev.seed_range(a.val_seeds))
    if any(s >= 100 for s in seeds):
        raise SystemExit("seeds >= 100 are the held-out seeds of docs/accuracy.md: never train on them")
    jobs = [(p, b, s, a.cache, a.work, a.body_close_mm) for p in a.presets.split(",") for s in seeds
            for b in tbm.ev.BODIES]
    t0 = time.time()
    with ProcessPoolExecutor(a.jobs) as ex:
        files = list(ex.map(prepare_film, jobs))
    print(f"prepared {len(files)} phantoms in {time.time() - t0:.0f} s", flush=True)
    real_jobs = []
    for film, spacing in tbm.REAL_TRAIN_FILMS if a.real_seeds else []:
        path = tbm.find_real(film)
        if path is None:
            print(f"real training film not found, skipped: {film}")
            continue
        real_jobs += [(path, spacing, s, a.work, a.body_close_mm) for s in tbm.ev.seed_range(a.real_seeds)]
    with ProcessPoolExecutor(a.jobs) as ex:
        real_files = list(ex.map(prepare_real, real_jobs))
    if real_jobs:
        print(f"prepared {len(real_files)} real-film insertions ({time.time() - t0:.0f} s)", flush=True)
    if a.prepare_only:
        return 0

    import torch

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train = load_films([f for f, j in zip(files, jobs) if j[2] not in val] +
                       [f for f, j in zip(real_files, real_jobs) if j[2] not in val])
    valid = load_films([f for f, j in zip(files, jobs) if j[2] in val] +
                       [f for f, j in zip(real_files, real_jobs) if j[2] in val])
    vx, vt, vl, vw = (torch.from_numpy(v) for v in crops(valid, 256, a.size, np.random.default_rng(1)))
    model = build_model()
    if a.init:
        model.load_state_dict(torch.load(a.init))
    if a.init_onnx:
        load_onnx_weights(model, a.init_onnx)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.max_lr, total_steps=a.epochs * a.steps)
    best, best_state = np.inf, None
    for ep in range(a.epochs):
        model.train()
        if a.init_onnx:
            freeze_batch_norm(model)
        tl = 0.0
        for _ in range(a.steps):  # noqa: B007
            x, t, le, wt = (torch.from_numpy(v) for v in crops(train, a.batch, a.size, rng))
            loss = loss_fn(model(x), t, le, wt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tl += float(loss.detach())
        model.eval()
        with torch.no_grad():
            vloss = float(sum(loss_fn(model(vx[i:i + 32]), vt[i:i + 32], vl[i:i + 32], vw[i:i + 32])
                              for i in range(0, len(vx), 32)) / (len(vx) / 32))
        if vloss < best:
            best, best_state = vloss, {k: v.clone() for k, v in model.state_dict().items()}
        print(f"epoch {ep}: train {tl / a.steps:.4f} valid {vloss:.4f} ({time.time() - t0:.0f} s)", flush=True)
    model.load_state_dict(best_state)
    model.eval()
    tmp = a.out + ".tmp"
    torch.onnx.export(model, torch.zeros(1, 6, 64, 64), tmp, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {2: "h", 3: "w"}, "y": {2: "h", 3: "w"}}, opset_version=13,
                      dynamo=False)
    os.replace(tmp, a.out)
    torch.save(best_state, os.path.join(a.work, "background_unet.pt"))
    print(f"best validation loss {best:.4f}; wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
