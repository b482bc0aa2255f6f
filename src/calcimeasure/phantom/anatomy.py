"""Analytic limb anatomy: soft-tissue tubes, tubular bones and ellipsoidal bones.

All shapes live in the *body frame* (``u`` along the limb axis, ``v`` across,
mm, see :mod:`.geometry`).  X-rays travel along the depth axis ``z``; every
cross-section is an ellipse centred on ``z = 0`` with in-plane semi-axis ``a``
and depth semi-axis ``b``, so the chord (path length) at in-plane offset ``d``
from the axis is exactly ``2 b sqrt(1 - (d/a)^2)``.  Ends are closed by
ellipsoidal caps (``(d/a)^2 + (t/c)^2 < 1``).

* Soft tissue: nested tubes for skin, subcutaneous fat and muscle.  Because
  all cross-sections are centred on ``z = 0``, the chord through a union of
  tubes is the maximum of their chords; overlapping tubes (palm and fingers)
  therefore combine with ``max``.
* Bones: tubes whose half-width flares towards the ends (metaphysis and
  epiphysis), with a dense cortex of thickness decreasing from the shaft to the
  ends, a medullary cavity (marrow) in the shaft and cancellous bone (marrow +
  a bone-volume fraction with a trabecular texture) at the ends; and
  ellipsoidal bones (carpals, patella).  Bones sit at different depths, so
  their path lengths add, and they displace muscle.

The result of :func:`render_paths` is a set of per-pixel path lengths (mm)
per material, from which :meth:`AnatomyPaths.line_integral` forms
``sum_k mu_k * path_k``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .geometry import apply_affine

__all__ = [
    "SoftTissueTube",
    "BoneShaft",
    "BoneBlob",
    "TextureField",
    "AnatomyModel",
    "AnatomyPaths",
    "BodyPartLayout",
    "BODY_PART_LAYOUTS",
    "build_anatomy",
    "render_paths",
]


# --------------------------------------------------------------------------- primitives
def _axis_frame(start, end):
    a = np.asarray(start, float)
    b = np.asarray(end, float)
    length = float(np.hypot(*(b - a)))
    e = (b - a) / length
    n = np.array([-e[1], e[0]])
    return a, e, n, length


def _cap_term(t, length, cap0, cap1):
    """(t/c)^2 beyond the ends; +inf where an end is open (cap length 0)."""
    out = np.zeros_like(t)
    lo = t < 0
    hi = t > length
    if lo.any():
        out[lo] = (t[lo] / np.float32(cap0)) ** 2 if cap0 > 0 else np.inf
    if hi.any():
        out[hi] = ((t[hi] - np.float32(length)) / np.float32(cap1)) ** 2 if cap1 > 0 else np.inf
    return out


def _chord(d, a, b, cap):
    """Chord 2 b sqrt(1 - (d/a)^2 - cap) with a, b arrays (<= 0 means empty)."""
    e = d / np.maximum(a, np.float32(1e-6))
    np.square(e, out=e)
    e += cap
    np.subtract(np.float32(1.0), e, out=e)
    np.maximum(e, np.float32(0.0), out=e)
    np.sqrt(e, out=e)
    e *= b
    e *= np.float32(2.0)
    e[(a <= 0) | (b <= 0)] = 0.0
    return e


def _local_axis(start, end, u, v):
    """Axial (t) and signed perpendicular (d) coordinates of (u, v) for a segment (float32)."""
    a0, e, n, length = _axis_frame(start, end)
    du = u - np.float32(a0[0])
    dv = v - np.float32(a0[1])
    t = du * np.float32(e[0]) + dv * np.float32(e[1])
    d = du * np.float32(n[0]) + dv * np.float32(n[1])
    return t, d, length


@dataclass(frozen=True)
class SoftTissueTube:
    """Tapered elliptical soft-tissue tube (skin, fat and muscle layers).

    Attributes
    ----------
    start_mm, end_mm : (float, float)
        Axis end points (u, v).
    half_width_mm, half_depth_mm : (float, float)
        In-plane and depth semi-axes of the skin surface at start and end.
    cap_mm : (float, float)
        Length of the ellipsoidal end caps (0 = open end, e.g. running off the film).
    skin_mm, fat_mm : float
        Skin and subcutaneous fat thickness.
    """

    start_mm: tuple[float, float]
    end_mm: tuple[float, float]
    half_width_mm: tuple[float, float]
    half_depth_mm: tuple[float, float]
    cap_mm: tuple[float, float] = (0.0, 0.0)
    skin_mm: float = 1.2
    fat_mm: float = 3.0

    def aabb(self) -> np.ndarray:
        a, e, n, length = _axis_frame(self.start_mm, self.end_mm)
        w = max(self.half_width_mm)
        p0 = a - e * self.cap_mm[0]
        p1 = a + e * (length + self.cap_mm[1])
        return np.array([p0 + n * w, p0 - n * w, p1 + n * w, p1 - n * w])

    def chords(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Chords (mm) through the skin, fat and muscle outer surfaces at (u, v)."""
        t, d, length = _local_axis(self.start_mm, self.end_mm, u, v)
        f = np.minimum(np.maximum(t * np.float32(1.0 / length), np.float32(0.0)), np.float32(1.0))
        hw = np.float32(self.half_width_mm[0]) + np.float32(self.half_width_mm[1] - self.half_width_mm[0]) * f
        hd = np.float32(self.half_depth_mm[0]) + np.float32(self.half_depth_mm[1] - self.half_depth_mm[0]) * f
        out = []
        for off in (0.0, self.skin_mm, self.skin_mm + self.fat_mm):
            c0 = self.cap_mm[0] - off if self.cap_mm[0] > 0 else 0.0
            c1 = self.cap_mm[1] - off if self.cap_mm[1] > 0 else 0.0
            cap = _cap_term(t, length, max(c0, 1e-3) if self.cap_mm[0] > 0 else 0.0,
                            max(c1, 1e-3) if self.cap_mm[1] > 0 else 0.0)
            out.append(_chord(d, hw - np.float32(off), hd - np.float32(off), cap))
        return out[0], out[1], out[2]


@dataclass(frozen=True)
class BoneShaft:
    """Tubular bone: flared ends, cortex, medullary cavity and cancellous ends.

    Attributes
    ----------
    name : str
    start_mm, end_mm : (float, float)
        Axis end points (u, v) of the bone (without caps).
    half_width_mm : float
        Mid-shaft in-plane semi-axis.
    end_half_width_mm : (float, float)
        Semi-axis at the start / end (metaphysis, epiphysis, head).
    flare_mm : (float, float)
        Length scale ``l`` over which the ends flare, ``w = exp(-(d / l)^1.3)``
        with ``d`` the distance from the end.
    depth_ratio : (float, float)
        Depth/width semi-axis ratio in the shaft and at the ends.
    cortex_mm : float
        Cortical thickness in the shaft.
    end_cortex_mm : float
        Cortical (subchondral) thickness at the ends.
    cap_mm : (float, float)
        Ellipsoidal cap lengths (0 = open end running off the film).
    bvtv : float
        Bone volume fraction of the cancellous ends.
    """

    name: str
    start_mm: tuple[float, float]
    end_mm: tuple[float, float]
    half_width_mm: float
    end_half_width_mm: tuple[float, float]
    flare_mm: tuple[float, float]
    depth_ratio: tuple[float, float] = (0.9, 0.85)
    cortex_mm: float = 1.5
    end_cortex_mm: float = 0.4
    cap_mm: tuple[float, float] = (2.0, 2.0)
    bvtv: float = 0.25

    def aabb(self) -> np.ndarray:
        a, e, n, length = _axis_frame(self.start_mm, self.end_mm)
        w = max(self.half_width_mm, *self.end_half_width_mm)
        p0 = a - e * self.cap_mm[0]
        p1 = a + e * (length + self.cap_mm[1])
        return np.array([p0 + n * w, p0 - n * w, p1 + n * w, p1 - n * w])

    def profile(self, t: np.ndarray) -> tuple[np.ndarray, ...]:
        """Half-width, half-depth, cortex thickness and end weight as functions of the axial position."""
        length = _axis_frame(self.start_mm, self.end_mm)[3]
        tc = np.clip(t, 0.0, length)
        # trumpet-shaped metaphyseal flare: w = exp(-(d / l)^1.3), d = distance from the end
        ws = np.exp(-((tc / self.flare_mm[0]) ** 1.3)) if self.flare_mm[0] > 0 else np.zeros_like(tc)
        we = np.exp(-(((length - tc) / self.flare_mm[1]) ** 1.3)) if self.flare_mm[1] > 0 else np.zeros_like(tc)
        hw = (
            self.half_width_mm
            + (self.end_half_width_mm[0] - self.half_width_mm) * ws
            + (self.end_half_width_mm[1] - self.half_width_mm) * we
        )
        w = np.maximum(ws, we)
        hd = hw * (self.depth_ratio[0] + (self.depth_ratio[1] - self.depth_ratio[0]) * w)
        k = self.cortex_mm + (self.end_cortex_mm - self.cortex_mm) * w
        return hw, hd, k, w

    def paths(self, u, v, texture: "TextureField | None", tex_amp: float):
        """(outer chord, cortical-equivalent path, marrow path) at (u, v), mm."""
        t, d, length = _local_axis(self.start_mm, self.end_mm, u, v)
        # the axial profile is tabulated every 0.02 mm and looked up (much cheaper than per-pixel exp/pow)
        step = 0.02
        grid = np.arange(0.0, length + step, step)
        tables = [x.astype(np.float32) for x in self.profile(grid)]
        idx = np.rint(t * np.float32(1.0 / step))
        np.clip(idx, 0, grid.size - 1, out=idx)
        idx = idx.astype(np.int32)
        hw, hd, k, w = (np.take(tab, idx) for tab in tables)
        cap_o = _cap_term(t, length, self.cap_mm[0], self.cap_mm[1])
        outer = _chord(d, hw, hd, cap_o)
        c0 = max(self.cap_mm[0] - self.end_cortex_mm, 1e-3) if self.cap_mm[0] > 0 else 0.0
        c1 = max(self.cap_mm[1] - self.end_cortex_mm, 1e-3) if self.cap_mm[1] > 0 else 0.0
        inner = _chord(d, hw - k, hd - k, _cap_term(t, length, c0, c1))
        np.minimum(inner, outer, out=inner)
        bv = np.float32(self.bvtv) * w
        if texture is not None and tex_amp > 0:
            bv *= np.float32(1.0) + np.float32(tex_amp) * texture.sample(u, v)
        cortical = (outer - inner) + inner * bv
        marrow = inner * (np.float32(1.0) - bv)
        return outer, cortical, marrow


@dataclass(frozen=True)
class BoneBlob:
    """Ellipsoidal bone (carpal, patella) with a thin cortex and cancellous interior.

    Attributes
    ----------
    name : str
    center_mm : (float, float)
    semi_axes_mm : (float, float, float)
        Semi-axes along the rotated u axis, the rotated v axis and depth.
    angle_deg : float
        Rotation of the in-plane axes (from +u towards +v).
    cortex_mm : float
    bvtv : float
    """

    name: str
    center_mm: tuple[float, float]
    semi_axes_mm: tuple[float, float, float]
    angle_deg: float = 0.0
    cortex_mm: float = 0.6
    bvtv: float = 0.3

    def aabb(self) -> np.ndarray:
        r = max(self.semi_axes_mm[:2])
        c = np.asarray(self.center_mm, float)
        return np.array([c + (-r, -r), c + (r, r)])

    def paths(self, u, v, texture: "TextureField | None", tex_amp: float):
        th = np.deg2rad(self.angle_deg)
        du, dv = u - np.float32(self.center_mm[0]), v - np.float32(self.center_mm[1])
        p = du * np.float32(np.cos(th)) + dv * np.float32(np.sin(th))
        q = dv * np.float32(np.cos(th)) - du * np.float32(np.sin(th))
        A, B, C = self.semi_axes_mm
        k = self.cortex_mm
        e_out = (p / A) ** 2 + (q / B) ** 2
        outer = 2 * C * np.sqrt(np.clip(1 - e_out, 0, None))
        e_in = (p / (A - k)) ** 2 + (q / (B - k)) ** 2
        inner = np.minimum(2 * (C - k) * np.sqrt(np.clip(1 - e_in, 0, None)), outer)
        bv = np.full(u.shape, self.bvtv, np.float32)
        if texture is not None and tex_amp > 0:
            bv = bv * (1.0 + tex_amp * texture.sample(u, v))
        return outer, (outer - inner) + inner * bv, inner * (1 - bv)


@dataclass(frozen=True)
class TextureField:
    """Band-pass random field on a body-frame grid, sampled bilinearly (values ~ -1..1)."""

    origin_mm: tuple[float, float]
    resolution_mm: float
    values: np.ndarray = field(repr=False)

    def sample(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        mr = ((u - self.origin_mm[0]) / self.resolution_mm).astype(np.float32)
        mc = ((v - self.origin_mm[1]) / self.resolution_mm).astype(np.float32)
        return cv2.remap(self.values, mc, mr, interpolation=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)

    @classmethod
    def random(cls, aabb: np.ndarray, rng: np.random.Generator, *, resolution_mm: float = 0.2,
               fine_mm: float = 0.25, coarse_mm: float = 0.8) -> "TextureField":
        lo = aabb.min(axis=0) - 5.0
        hi = aabb.max(axis=0) + 5.0
        res = max(resolution_mm, float(np.max(hi - lo)) / 2500.0)
        shape = tuple(int(np.ceil(x / res)) + 1 for x in (hi - lo))
        white = rng.standard_normal(shape).astype(np.float32)
        band = cv2.GaussianBlur(white, (0, 0), fine_mm / res) - cv2.GaussianBlur(white, (0, 0), coarse_mm / res)
        band /= float(band.std()) + 1e-9
        values = (np.tanh(1.3 * band) / np.tanh(1.3 * 2.0)).astype(np.float32)
        return cls(origin_mm=(float(lo[0]), float(lo[1])), resolution_mm=float(res), values=values)


# --------------------------------------------------------------------------- model
@dataclass(frozen=True)
class AnatomyModel:
    """A limb: soft-tissue tubes, bones and a trabecular texture (body frame, mm)."""

    body_part: str
    soft_tissue: tuple[SoftTissueTube, ...]
    bones: tuple[BoneShaft | BoneBlob, ...]
    texture: TextureField | None
    texture_amplitude: float

    def aabb(self) -> np.ndarray:
        pts = np.concatenate([p.aabb() for p in (*self.soft_tissue, *self.bones)])
        return np.array([pts.min(axis=0), pts.max(axis=0)])


@dataclass
class AnatomyPaths:
    """Per-pixel path lengths (mm) through the anatomy on one grid.

    Attributes
    ----------
    skin_outer, fat_outer, muscle_outer : ndarray
        Chords through the skin surface, the skin/fat and the fat/muscle interfaces.
    bone_outer : ndarray
        Summed chord through the bones' outer surfaces.
    bone : ndarray
        Cortical-bone-equivalent path (cortex + bone volume fraction of cancellous bone).
    marrow : ndarray
        Marrow path (medullary cavity + marrow share of cancellous bone).
    """

    skin_outer: np.ndarray
    fat_outer: np.ndarray
    muscle_outer: np.ndarray
    bone_outer: np.ndarray
    bone: np.ndarray
    marrow: np.ndarray

    @property
    def body_mask(self) -> np.ndarray:
        return self.skin_outer > 0

    @property
    def bone_mask(self) -> np.ndarray:
        return self.bone_outer > 0

    @property
    def thickness(self) -> np.ndarray:
        """Total limb thickness along the ray, mm."""
        return self.skin_outer

    def line_integral(self, mu_per_mm: dict[str, float]) -> np.ndarray:
        """``sum_k mu_k path_k`` with bone displacing muscle (dimensionless, float32)."""
        m = mu_per_mm
        out = (m["skin"] * (self.skin_outer - self.fat_outer)).astype(np.float32)
        out += m["adipose"] * (self.fat_outer - self.muscle_outer)
        out += m["muscle"] * np.maximum(self.muscle_outer - self.bone_outer, 0.0)
        out += m["cortical_bone"] * self.bone
        out += m["marrow"] * self.marrow
        return out


def render_paths(
    model: AnatomyModel,
    grid_to_anatomy: np.ndarray,
    shape: tuple[int, int],
    *,
    depth_scale: float = 1.0,
) -> AnatomyPaths:
    """Evaluate the anatomy's path lengths on a pixel grid.

    Parameters
    ----------
    model : AnatomyModel
    grid_to_anatomy : ndarray of shape (3, 3)
        Maps grid (row, col) to anatomical (u, v) mm.
    shape : (int, int)
        Grid (rows, cols).
    depth_scale : float
        Multiplier of all chords (growth of the limb between two films).

    Each primitive is evaluated only inside its bounding box on the grid.
    """
    rows, cols = shape
    arrays = [np.zeros(shape, np.float32) for _ in range(6)]
    so, fo, mo, bo, bb, mw = arrays
    anat_to_grid = np.linalg.inv(grid_to_anatomy)
    for prim in (*model.soft_tissue, *model.bones):
        corners = prim.aabb()
        box = np.array([[corners[:, 0].min(), corners[:, 1].min()], [corners[:, 0].max(), corners[:, 1].max()]])
        full = np.array([[box[0, 0], box[0, 1]], [box[0, 0], box[1, 1]], [box[1, 0], box[0, 1]], [box[1, 0], box[1, 1]]])
        px = apply_affine(anat_to_grid, full)
        r0 = max(int(np.floor(px[:, 0].min())) - 1, 0)
        r1 = min(int(np.ceil(px[:, 0].max())) + 2, rows)
        c0 = max(int(np.floor(px[:, 1].min())) - 1, 0)
        c1 = min(int(np.ceil(px[:, 1].max())) + 2, cols)
        if r0 >= r1 or c0 >= c1:
            continue
        rr = np.arange(r0, r1, dtype=np.float64)
        cc = np.arange(c0, c1, dtype=np.float64)
        g = grid_to_anatomy
        u = (g[0, 0] * rr + g[0, 2]).astype(np.float32)[:, None] + (g[0, 1] * cc).astype(np.float32)[None, :]
        v = (g[1, 0] * rr + g[1, 2]).astype(np.float32)[:, None] + (g[1, 1] * cc).astype(np.float32)[None, :]
        sl = (slice(r0, r1), slice(c0, c1))
        if isinstance(prim, SoftTissueTube):
            a, b, c = prim.chords(u, v)
            np.maximum(so[sl], a * depth_scale, out=so[sl])
            np.maximum(fo[sl], b * depth_scale, out=fo[sl])
            np.maximum(mo[sl], c * depth_scale, out=mo[sl])
        else:
            a, b, c = prim.paths(u, v, model.texture, model.texture_amplitude)
            bo[sl] += a * depth_scale
            bb[sl] += b * depth_scale
            mw[sl] += c * depth_scale
    # bones never stick out of the soft tissue
    np.minimum(bo, so, out=bo)
    return AnatomyPaths(so, fo, mo, bo, bb, mw)


# --------------------------------------------------------------------------- body parts
@dataclass(frozen=True)
class BodyPartLayout:
    """Where to look and where lesions may be, per body part (body frame, mm).

    Attributes
    ----------
    template : str
        Anatomy template ("hand", "forearm", "elbow", "knee").
    fov_center_mm : (float, float)
        Body point at the image centre.
    field_mm : (float, float)
        Default patient-plane field of view (rows, cols).
    lesion_region_mm : (float, float, float, float)
        (u_min, u_max, v_min, v_max) in which lesions are placed.
    body_part_examined : str
        DICOM (0018,0015) value.
    distal_up : bool
        Display convention: distal end at the top of the image (hand) or proximal (knee).
    view_position : str
        DICOM (0018,5101) value.
    """

    template: str
    fov_center_mm: tuple[float, float]
    field_mm: tuple[float, float]
    lesion_region_mm: tuple[float, float, float, float]
    body_part_examined: str
    view_position: str
    distal_up: bool = True


BODY_PART_LAYOUTS: dict[str, BodyPartLayout] = {
    "hand": BodyPartLayout("hand", (85.0, 2.0), (240.0, 190.0), (-10.0, 195.0, -60.0, 70.0), "HAND", "PA"),
    "fingers": BodyPartLayout("fingers", (150.0, 2.0), (120.0, 110.0), (105.0, 200.0, -60.0, 70.0), "HAND", "PA"),
    "forearm": BodyPartLayout("forearm", (-125.0, 0.0), (270.0, 150.0), (-240.0, -15.0, -60.0, 60.0), "FOREARM", "AP", False),
    "elbow": BodyPartLayout("elbow", (-5.0, 0.0), (200.0, 160.0), (-80.0, 70.0, -70.0, 70.0), "ELBOW", "AP", False),
    "knee": BodyPartLayout("knee", (-5.0, 0.0), (230.0, 200.0), (-90.0, 80.0, -80.0, 80.0), "KNEE", "AP", False),
}


def _ray(prefix, base, angle_deg, bones, *, gap, scale, depth=0.85, cortex=(1.3, 0.35), bvtv=0.25):
    """Chain of tubular bones along one ray; bones = [(name, length, shaft_hw, base_hw, head_hw, flare_end)]."""
    th = np.deg2rad(angle_deg)
    e = np.array([np.cos(th), np.sin(th)])
    p = np.asarray(base, float) * scale
    out = []
    for name, length, shaft, hw0, hw1, fl in bones:
        q = p + e * length * scale
        c0, c1 = 0.5 * hw0 * scale, 0.5 * hw1 * scale
        out.append(
            BoneShaft(
                name=f"{prefix}{name}",
                start_mm=tuple(p + e * c0),
                end_mm=tuple(q - e * c1),
                half_width_mm=shaft * scale,
                end_half_width_mm=(hw0 * scale, hw1 * scale),
                flare_mm=(0.22 * length * scale, fl * length * scale),
                depth_ratio=(depth, depth * 0.95),
                cortex_mm=cortex[0] * scale,
                end_cortex_mm=cortex[1] * scale,
                cap_mm=(c0, c1),
                bvtv=bvtv,
            )
        )
        p = q + e * gap * scale
    return out, p


def _hand(scale: float, fat: float):
    s = scale
    soft = [
        SoftTissueTube((-160 * s, 0), (-4 * s, 0), (34 * s, 29 * s), (23 * s, 17 * s), (0, 0), 1.3, 4.0 * fat * s),
        SoftTissueTube((-8 * s, -1 * s), (92 * s, -3 * s), (29 * s, 40 * s), (17 * s, 12 * s), (0, 20 * s), 1.3, 3.0 * fat * s),
        SoftTissueTube((12 * s, 15 * s), (58 * s, 32 * s), (16 * s, 13 * s), (15 * s, 12 * s), (10 * s, 14 * s), 1.3, 3.5 * fat * s),
    ]
    bones: list = [
        BoneShaft("radius", (-160 * s, 9 * s), (-3 * s, 9 * s), 7.5 * s, (7.5 * s, 15.5 * s), (1.0, 22 * s),
                  (0.8, 0.65), 2.3 * s, 0.5 * s, (0.0, 3.0 * s), 0.22),
        BoneShaft("ulna", (-160 * s, -14 * s), (-8 * s, -14 * s), 6.0 * s, (6.0 * s, 8.5 * s), (1.0, 15 * s),
                  (0.95, 0.9), 2.0 * s, 0.5 * s, (0.0, 4.0 * s), 0.22),
    ]
    carpals = [
        ("scaphoid", (9, 13), (7.8, 5.2, 6.0), 35), ("lunate", (8, 1), (6.3, 6.2, 6.5), 0),
        ("triquetrum", (7, -10), (5.8, 5.2, 5.5), -20), ("pisiform", (10, -14), (4.3, 4.3, 4.0), 0),
        ("trapezium", (21, 21), (6.3, 6.2, 6.0), 30), ("trapezoid", (22, 11), (5.6, 4.6, 5.5), 0),
        ("capitate", (23, 1), (9.8, 5.8, 6.5), 0), ("hamate", (21, -10), (8.8, 6.2, 6.0), -10),
    ]
    for name, c, ax, ang in carpals:
        bones.append(BoneBlob(name, (c[0] * s, c[1] * s), tuple(a * s for a in ax), ang, 0.6 * s, 0.3))
    rays = [
        ("index", (34, 11), 5.0, [64, 40, 23, 17], 1.0),
        ("middle", (34, 1), 0.0, [62, 44, 27, 18], 1.0),
        ("ring", (33, -9), -5.5, [56, 41, 26, 17], 0.95),
        ("little", (31, -18), -11.0, [51, 32, 19, 15], 0.85),
        ("thumb", (28, 23), 35.0, [44, 31, 24], 1.15),
    ]
    for name, base, ang, lengths, w in rays:
        if name == "thumb":
            spec = [("MC", lengths[0], 4.0 * w / 1.15, 5.5, 5.2, 0.2), ("PP", lengths[1], 3.6, 4.8, 4.3, 0.2),
                    ("DP", lengths[2], 2.6, 4.2, 3.2, 0.12)]
        else:
            spec = [("MC", lengths[0], 3.6 * w, 5.0 * w, 5.2 * w, 0.2), ("PP", lengths[1], 3.4 * w, 5.0 * w, 4.2 * w, 0.2),
                    ("MP", lengths[2], 2.9 * w, 4.2 * w, 3.6 * w, 0.2), ("DP", lengths[3], 2.2 * w, 3.8 * w, 3.0 * w, 0.12)]
        chain, tip = _ray(f"{name}_", base, ang, spec, gap=2.0, scale=s)
        bones.extend(chain)
        th = np.deg2rad(ang)
        e = np.array([np.cos(th), np.sin(th)])
        mc_end = np.asarray(chain[0].end_mm)
        start = mc_end - e * 30 * s if name != "thumb" else np.asarray(chain[0].start_mm) + e * 6 * s
        end = np.asarray(tip) + e * 1.0 * s
        hw = (10.5 * w * s, 7.6 * w * s) if name != "thumb" else (12.5 * s, 9.0 * s)
        hd = (9.0 * w * s, 6.6 * w * s) if name != "thumb" else (10.5 * s, 7.5 * s)
        soft.append(SoftTissueTube(tuple(start), tuple(end), hw, hd, (4 * s, 6.5 * s), 1.0, 1.6 * fat * s))
    return soft, bones


def _forearm(scale: float, fat: float):
    s = scale
    soft = [SoftTissueTube((-300 * s, 0), (20 * s, 0), (43 * s, 28 * s), (38 * s, 18 * s), (0, 0), 1.4, 5.0 * fat * s)]
    bones = [
        BoneShaft("radius", (-262 * s, 13 * s), (-3 * s, 10 * s), 6.5 * s, (10.5 * s, 15.5 * s), (18 * s, 24 * s),
                  (0.85, 0.65), 2.4 * s, 0.5 * s, (3 * s, 3 * s), 0.22),
        BoneShaft("ulna", (-285 * s, -9 * s), (-8 * s, -14 * s), 6.0 * s, (13 * s, 8.5 * s), (30 * s, 15 * s),
                  (0.95, 0.9), 2.3 * s, 0.5 * s, (0.0, 4 * s), 0.22),
    ]
    return soft, bones


def _elbow(scale: float, fat: float):
    s = scale
    soft = [
        SoftTissueTube((-260 * s, 0), (0, 0), (44 * s, 45 * s), (42 * s, 39 * s), (0, 0), 1.5, 6.0 * fat * s),
        SoftTissueTube((-1 * s, 0), (230 * s, 0), (45 * s, 36 * s), (39 * s, 30 * s), (0, 0), 1.5, 5.0 * fat * s),
    ]
    bones = [
        BoneShaft("humerus", (-260 * s, 0), (-4 * s, 1 * s), 11.0 * s, (11 * s, 31 * s), (1.0, 38 * s),
                  (0.9, 0.45), 3.6 * s, 0.8 * s, (0.0, 7 * s), 0.22),
        BoneShaft("radius", (3 * s, 13 * s), (230 * s, 20 * s), 7.0 * s, (11 * s, 9 * s), (9 * s, 20 * s),
                  (0.9, 0.9), 2.5 * s, 0.6 * s, (3.5 * s, 0.0), 0.22),
        BoneShaft("ulna", (-10 * s, -8 * s), (230 * s, -17 * s), 7.0 * s, (11 * s, 7.5 * s), (18 * s, 10 * s),
                  (1.0, 0.95), 2.6 * s, 0.7 * s, (9 * s, 0.0), 0.22),
    ]
    return soft, bones


def _knee(scale: float, fat: float):
    s = scale
    soft = [
        SoftTissueTube((-300 * s, 0), (0, 0), (64 * s, 57 * s), (60 * s, 53 * s), (0, 0), 1.6, 9.0 * fat * s),
        SoftTissueTube((-1 * s, 0), (300 * s, 0), (57 * s, 47 * s), (53 * s, 44 * s), (0, 0), 1.6, 7.0 * fat * s),
    ]
    bones = [
        BoneShaft("femur", (-300 * s, 0), (-3 * s, 0), 14.0 * s, (14 * s, 40 * s), (1.0, 52 * s),
                  (0.95, 0.8), 4.2 * s, 0.9 * s, (0.0, 9 * s), 0.2),
        BoneShaft("tibia", (4 * s, 0), (300 * s, 3 * s), 15.0 * s, (38 * s, 15 * s), (58 * s, 1.0),
                  (0.8, 0.95), 4.5 * s, 0.9 * s, (4 * s, 0.0), 0.2),
        BoneShaft("fibula", (15 * s, 33 * s), (300 * s, 27 * s), 6.0 * s, (9.5 * s, 6 * s), (14 * s, 1.0),
                  (1.0, 1.0), 2.0 * s, 0.6 * s, (5 * s, 0.0), 0.2),
        BoneBlob("patella", (-20 * s, 2 * s), (22 * s, 21 * s, 10 * s), 0.0, 1.1 * s, 0.3),
    ]
    return soft, bones


_TEMPLATES = {"hand": _hand, "fingers": _hand, "forearm": _forearm, "elbow": _elbow, "knee": _knee}


def build_anatomy(
    body_part: str,
    *,
    scale: float = 1.0,
    fat_scale: float = 1.0,
    texture_amplitude: float = 0.25,
    rng: np.random.Generator,
) -> AnatomyModel:
    """Build the limb model of `body_part` (a key of :data:`BODY_PART_LAYOUTS`)."""
    try:
        make = _TEMPLATES[body_part]
    except KeyError:
        raise ValueError(f"`body_part` must be one of {tuple(_TEMPLATES)}, got {body_part!r}") from None
    soft, bones = make(scale, fat_scale)
    pts = np.concatenate([b.aabb() for b in bones])
    texture = TextureField.random(np.array([pts.min(0), pts.max(0)]), rng) if texture_amplitude > 0 else None
    return AnatomyModel(body_part, tuple(soft), tuple(bones), texture, float(texture_amplitude))
