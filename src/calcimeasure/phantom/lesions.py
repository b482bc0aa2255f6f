"""Calcified lesions: shapes, tapered thickness, placement and sub-pixel rasterisation.

A lesion is defined in the body frame (mm).  In lesion-local coordinates
(rotated by ``orientation_deg``, minor axis divided by ``aspect``) a point at
polar radius ``rho`` and angle ``phi`` has normalised radius

``s = rho / R(phi)``,   ``R(phi) = R0 (1 + sum_k a_k cos(k phi + phi_k))``

(low-order radial harmonics give a star-shaped, irregular outline; ``sum |a_k|
< 1`` keeps it star-shaped).  The calcium thickness is

``t = T (1 - s^p)^g * (1 - tau + tau * n(x))``  for ``s < 1``, 0 outside,

tapering to zero at the outline (``p = 2, g = 0.5`` is an ellipsoid; plaques use
``p = 6`` for a flat top, clouds ``g = 1.5`` for a soft edge), with an optional
mottling ``n`` in [0, 1].  The true silhouette is the support ``s < 1`` and its
area is known in closed form:

``A = aspect * pi * R0^2 * (1 + 1/2 sum_k a_k^2)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .specs import LesionSpec, _Serialisable

__all__ = [
    "LESION_KINDS",
    "Lesion",
    "LesionRaster",
    "rasterize_lesion",
    "place_lesions",
    "PlacementMap",
]

LESION_KINDS = ("nodule", "plaque", "dot", "cloud")


@dataclass(frozen=True)
class Lesion(_Serialisable):
    """One calcified lesion in the body frame.

    Attributes
    ----------
    lesion_id : int
        Label value (>= 1), stable between baseline and follow-up.
    kind : {"nodule", "plaque", "dot", "cloud"}
    center_mm : (float, float)
        Body-frame (u, v) centre.
    radius_mm : float
        ``R0``, mean outline radius along the major axis.
    aspect : float
        Minor/major axis ratio (0 < aspect <= 1).
    orientation_deg : float
        Direction of the major axis (from +u towards +v).
    harmonics : tuple of (int, float, float)
        ``(k, a_k, phi_k)`` radial harmonics of the outline.
    thickness_mm : float
        Peak thickness ``T`` along the ray.
    profile_exponent : float
        ``g`` of the taper.
    edge_power : float
        ``p`` of the taper.
    density_g_cm3 : float
        Hydroxyapatite concentration.
    texture_amplitude : float
        ``tau``, mottling depth (0..0.8).
    texture_seed : int
        Seed of the mottling pattern.
    cluster_id : int
        Cluster the dot belongs to (0 = not in a cluster).
    near_bone : bool
        Placed (intentionally) touching the bone's silhouette.
    """

    lesion_id: int
    kind: str
    center_mm: tuple[float, float]
    radius_mm: float
    aspect: float
    orientation_deg: float
    harmonics: tuple[tuple[int, float, float], ...]
    thickness_mm: float
    profile_exponent: float
    edge_power: float
    density_g_cm3: float
    texture_amplitude: float = 0.0
    texture_seed: int = 0
    cluster_id: int = 0
    near_bone: bool = False

    def __post_init__(self) -> None:
        if self.kind not in LESION_KINDS:
            raise ValueError(f"`kind` must be one of {LESION_KINDS}, got {self.kind!r}")
        if sum(abs(a) for _, a, _ in self.harmonics) >= 0.9:
            raise ValueError("sum of |harmonic amplitudes| must be < 0.9 to keep the outline star-shaped")
        if not 0 < self.aspect <= 1:
            raise ValueError(f"`aspect` must be in (0, 1], got {self.aspect}")

    @property
    def area_mm2(self) -> float:
        """Exact silhouette area (body frame = patient plane), mm^2."""
        return float(self.aspect * np.pi * self.radius_mm**2 * (1.0 + 0.5 * sum(a * a for _, a, _ in self.harmonics)))

    @property
    def max_radius_mm(self) -> float:
        """Radius of a disc around the centre that contains the silhouette."""
        return float(self.radius_mm * (1.0 + sum(abs(a) for _, a, _ in self.harmonics)))

    def scaled(self, area_factor: float, *, thickness_factor: float | None = None,
               center_mm: tuple[float, float] | None = None) -> "Lesion":
        """Same lesion with its area multiplied by `area_factor` (outline scaled about its centre)."""
        if area_factor <= 0:
            raise ValueError(f"`area_factor` must be > 0, got {area_factor}")
        lin = float(np.sqrt(area_factor))
        tf = lin if thickness_factor is None else thickness_factor
        return dataclasses.replace(
            self,
            radius_mm=self.radius_mm * lin,
            thickness_mm=self.thickness_mm * tf,
            center_mm=self.center_mm if center_mm is None else tuple(map(float, center_mm)),
        )

    # ------------------------------------------------------------------ evaluation
    def local(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Normalised radius ``s`` (< 1 inside the silhouette) at body points (u, v)."""
        return self._local_offsets(u - self.center_mm[0], v - self.center_mm[1])

    def _local_offsets(self, du: np.ndarray, dv: np.ndarray) -> np.ndarray:
        th = np.deg2rad(self.orientation_deg)
        c, s_ = np.cos(th), np.sin(th)
        x = du * c + dv * s_
        y = (dv * c - du * s_) / self.aspect
        rho = np.hypot(x, y)
        r = np.ones_like(rho)
        if self.harmonics:
            with np.errstate(invalid="ignore", divide="ignore"):
                z = (x + 1j * y) / rho
            z = np.where(rho > 0, z, 1.0 + 0j)
            kmax = max(k for k, _, _ in self.harmonics)
            zk = np.ones_like(z)
            coef = {k: a * np.exp(1j * ph) for k, a, ph in self.harmonics}
            for k in range(1, kmax + 1):
                zk = zk * z
                if k in coef:
                    r += (coef[k] * zk).real
        return rho / (self.radius_mm * r)

    def thickness(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Calcium thickness (mm) at body points; exactly 0 outside the silhouette."""
        du = u - self.center_mm[0]
        dv = v - self.center_mm[1]
        return self._thickness_offsets(du, dv, self._local_offsets(du, dv))

    def _thickness_offsets(self, du, dv, s) -> np.ndarray:
        inside = s < 1.0
        out = np.zeros(s.shape, np.float64)
        si = s[inside]
        t = self.thickness_mm * (1.0 - si**self.edge_power) ** self.profile_exponent
        if self.texture_amplitude > 0:
            t = t * (1.0 - self.texture_amplitude + self.texture_amplitude * self._mottle(du[inside] if np.ndim(du) else du, dv[inside] if np.ndim(dv) else dv))
        out[inside] = t
        return out

    def _mottle(self, du: np.ndarray, dv: np.ndarray) -> np.ndarray:
        """Mottling pattern in [0, 1] as a function of offsets from the centre (scaled by R0)."""
        rng = np.random.default_rng(self.texture_seed)
        n = 6
        ang = rng.uniform(0, np.pi, n)
        wl = rng.uniform(0.35, 0.9, n)  # wavelength relative to R0
        ph = rng.uniform(0, 2 * np.pi, n)
        x = du / self.radius_mm
        y = dv / self.radius_mm
        acc = np.zeros(np.shape(x))
        for a, w, p in zip(ang, wl, ph):
            acc += np.cos(2 * np.pi * (x * np.cos(a) + y * np.sin(a)) / w + p)
        return np.clip(0.5 + acc / (2.0 * np.sqrt(n)), 0.0, 1.0)


@dataclass
class LesionRaster:
    """A lesion sampled on the image grid inside its bounding box.

    Attributes
    ----------
    box : (int, int, int, int)
        ``(r0, r1, c0, c1)`` slice bounds on the image.
    coverage : ndarray
        Fraction of each pixel inside the silhouette.
    transmission : ndarray
        Pixel-averaged ``exp(-excess_mu * t)`` (partial-volume correct in intensity).
    mean_thickness_mm : ndarray
        Pixel-averaged calcium thickness.
    centroid_px : (float, float)
        Sub-pixel centroid of the silhouette.
    supersampling : int
        Sub-samples per pixel per axis actually used.
    clipped : bool
        The lesion's bounding box was cut by the image border.
    """

    box: tuple[int, int, int, int]
    coverage: np.ndarray
    transmission: np.ndarray
    mean_thickness_mm: np.ndarray
    centroid_px: tuple[float, float]
    supersampling: int
    clipped: bool = False

    @property
    def area_px(self) -> float:
        return float(self.coverage.sum(dtype=np.float64))


def rasterize_lesion(
    lesion: Lesion,
    pixel_to_body: np.ndarray,
    shape: tuple[int, int],
    *,
    excess_mu_per_mm: float,
    supersampling: int = 8,
    max_samples: int = 4_000_000,
) -> LesionRaster | None:
    """Supersample `lesion` on the image grid (returns None if it misses the image).

    Parameters
    ----------
    lesion : Lesion
    pixel_to_body : ndarray of shape (3, 3)
        Maps image (row, col) to body (u, v) mm.
    shape : (int, int)
        Image (rows, cols).
    excess_mu_per_mm : float
        Excess attenuation of the deposit over soft tissue (1/mm).
    supersampling : int
        Sub-samples per pixel per axis (reduced for very large lesions to stay
        within `max_samples`).
    """
    body_to_pixel = np.linalg.inv(pixel_to_body)
    k = float(np.linalg.norm(body_to_pixel[:2, :2], ord=2))  # largest pixels-per-mm scale
    c = body_to_pixel[:2, :2] @ np.asarray(lesion.center_mm) + body_to_pixel[:2, 2]
    rad = lesion.max_radius_mm * k + 1.5
    box = (int(np.floor(c[0] - rad)), int(np.ceil(c[0] + rad)) + 1, int(np.floor(c[1] - rad)), int(np.ceil(c[1] + rad)) + 1)
    r0, r1 = max(box[0], 0), min(box[1], shape[0])
    c0, c1 = max(box[2], 0), min(box[3], shape[1])
    clipped = (r0, r1, c0, c1) != box
    if r0 >= r1 or c0 >= c1:
        return None
    h, w = r1 - r0, c1 - c0
    ss = int(supersampling)
    if h * w > 4096:  # large lesions: the boundary is a small fraction, fewer sub-samples suffice
        ss = min(ss, max(4, ss // 2))
    while ss > 2 and h * w * ss * ss > max_samples:
        ss -= 1
    fr = r0 - 0.5 + (np.arange(h * ss) + 0.5) / ss
    fc = c0 - 0.5 + (np.arange(w * ss) + 0.5) / ss
    g = pixel_to_body
    # offsets from the lesion centre (keeps float32-friendly magnitudes)
    du0 = g[0, 0] * fr + g[0, 2] - lesion.center_mm[0]
    dv0 = g[1, 0] * fr + g[1, 2] - lesion.center_mm[1]
    du = (du0[:, None] + g[0, 1] * fc[None, :]).astype(np.float32)
    dv = (dv0[:, None] + g[1, 1] * fc[None, :]).astype(np.float32)
    s = lesion._local_offsets(du, dv)
    inside = s < 1.0
    t = lesion._thickness_offsets(du, dv, s)
    cover = inside.reshape(h, ss, w, ss).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)
    att = np.exp(-excess_mu_per_mm * t)
    trans = att.reshape(h, ss, w, ss).mean(axis=(1, 3)).astype(np.float32)
    mean_t = t.reshape(h, ss, w, ss).mean(axis=(1, 3)).astype(np.float32)
    n_in = int(inside.sum())
    if n_in:
        ri = inside.sum(axis=1, dtype=np.float64)
        ci = inside.sum(axis=0, dtype=np.float64)
        centroid = (float((ri * fr).sum() / n_in), float((ci * fc).sum() / n_in))
    else:
        centroid = (float(c[0]), float(c[1]))
    return LesionRaster((r0, r1, c0, c1), cover, trans, mean_t, centroid, ss, clipped)


# --------------------------------------------------------------------------- placement
@dataclass
class PlacementMap:
    """Body-frame raster of the anatomy used to place lesions.

    Attributes
    ----------
    origin_mm : (float, float)
        Body (u, v) of pixel (0, 0).
    resolution_mm : float
    allowed : ndarray of bool
        Where a lesion centre may go (inside the body and the lesion region).
    dist_to_skin_mm, dist_to_bone_mm : ndarray
        Euclidean distance to the body outline (inside) / to the bone silhouette.
    soft_mm, bone_mm : ndarray
        Soft-tissue and bone chords.
    """

    origin_mm: tuple[float, float]
    resolution_mm: float
    allowed: np.ndarray
    dist_to_skin_mm: np.ndarray
    dist_to_bone_mm: np.ndarray
    soft_mm: np.ndarray
    bone_mm: np.ndarray

    def index(self, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        uv = np.atleast_2d(uv)
        r = np.clip(np.round((uv[:, 0] - self.origin_mm[0]) / self.resolution_mm).astype(int), 0, self.allowed.shape[0] - 1)
        c = np.clip(np.round((uv[:, 1] - self.origin_mm[1]) / self.resolution_mm).astype(int), 0, self.allowed.shape[1] - 1)
        return r, c

    def point(self, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return np.stack([self.origin_mm[0] + r * self.resolution_mm, self.origin_mm[1] + c * self.resolution_mm], axis=-1)

    @classmethod
    def build(cls, model, region_mm: tuple[float, float, float, float], *,
              disc_center_mm: tuple[float, float], disc_radius_mm: float) -> "PlacementMap":
        from .anatomy import render_paths

        umin, umax, vmin, vmax = region_mm
        extent = max(umax - umin, vmax - vmin)
        res = max(0.1, extent / 700.0)
        pad = 15.0
        origin = (umin - pad, vmin - pad)
        shape = (int(np.ceil((umax - umin + 2 * pad) / res)) + 1, int(np.ceil((vmax - vmin + 2 * pad) / res)) + 1)
        g = np.array([[res, 0, origin[0]], [0, res, origin[1]], [0, 0, 1.0]])
        paths = render_paths(model, g, shape)
        body = paths.skin_outer > 0.3
        bone = paths.bone_outer > 0
        d_skin = ndimage.distance_transform_edt(body) * res
        d_bone = ndimage.distance_transform_edt(~bone) * res if bone.any() else np.full(shape, 1e3)
        rr = origin[0] + np.arange(shape[0])[:, None] * res
        cc = origin[1] + np.arange(shape[1])[None, :] * res
        in_region = (rr >= umin) & (rr <= umax) & (cc >= vmin) & (cc <= vmax)
        in_disc = (rr - disc_center_mm[0]) ** 2 + (cc - disc_center_mm[1]) ** 2 <= disc_radius_mm**2
        allowed = body & in_region & in_disc
        return cls(origin, res, allowed, d_skin.astype(np.float32), d_bone.astype(np.float32),
                   (paths.skin_outer - paths.bone_outer).astype(np.float32), paths.bone_outer)


def _harmonics(rng, ks, amp_max, total_max):
    amps = rng.uniform(0, amp_max, len(ks))
    if amps.sum() > total_max:
        amps *= total_max / amps.sum()
    return tuple((int(k), float(a), float(p)) for k, a, p in zip(ks, amps, rng.uniform(0, 2 * np.pi, len(ks))))


def _draw(kind: str, spec: LesionSpec, rng: np.random.Generator) -> dict:
    u = rng.uniform
    if kind == "nodule":
        r = u(*spec.nodule_radius_mm)
        asp = u(0.6, 1.0)
        return dict(kind=kind, radius_mm=r, aspect=asp, harmonics=_harmonics(rng, [2, 3, 4, 5], 0.14, 0.38),
                    thickness_mm=2 * r * asp * u(0.5, 0.9), profile_exponent=u(0.5, 0.9), edge_power=2.0,
                    density_g_cm3=u(*spec.nodule_density_g_cm3), texture_amplitude=u(0.1, 0.3))
    if kind == "plaque":
        return dict(kind=kind, radius_mm=u(*spec.plaque_radius_mm), aspect=u(*spec.plaque_aspect),
                    harmonics=_harmonics(rng, [2, 3, 4], 0.07, 0.15), thickness_mm=u(0.8, 2.0),
                    profile_exponent=0.5, edge_power=6.0, density_g_cm3=u(*spec.plaque_density_g_cm3),
                    texture_amplitude=u(0.1, 0.2))
    if kind == "cloud":
        return dict(kind=kind, radius_mm=u(*spec.cloud_radius_mm), aspect=u(0.5, 1.0),
                    harmonics=_harmonics(rng, [2, 3, 4, 5, 6], 0.16, 0.5), thickness_mm=u(1.5, 4.0),
                    profile_exponent=1.5, edge_power=2.0, density_g_cm3=u(*spec.cloud_density_g_cm3),
                    texture_amplitude=u(0.35, 0.55))
    if kind == "dot":
        r = u(*spec.dot_radius_mm)
        return dict(kind=kind, radius_mm=r, aspect=u(0.75, 1.0), harmonics=_harmonics(rng, [2, 3], 0.05, 0.08),
                    thickness_mm=2 * r * u(0.7, 1.0), profile_exponent=0.5, edge_power=2.0,
                    density_g_cm3=u(*spec.dot_density_g_cm3), texture_amplitude=0.0)
    raise ValueError(kind)


def _max_r(params: dict) -> float:
    return params["radius_mm"] * (1.0 + sum(abs(a) for _, a, _ in params["harmonics"]))


def place_lesions(
    spec: LesionSpec,
    placement: PlacementMap,
    rng: np.random.Generator,
    *,
    first_id: int = 1,
    first_cluster_id: int = 1,
    existing: list[Lesion] | None = None,
    n_override: dict[str, int] | None = None,
) -> list[Lesion]:
    """Draw and place lesions without overlaps inside the allowed soft tissue.

    Lesions that cannot be placed after shrinking four times are skipped, so
    the result may hold fewer lesions than requested on very small fields.
    """
    counts = {"plaque": spec.n_plaques, "nodule": spec.n_nodules, "cloud": spec.n_clouds, "cluster": spec.n_clusters}
    if n_override:
        counts.update(n_override)
    placed: list[Lesion] = list(existing or [])
    new: list[Lesion] = []
    next_id = first_id
    next_cluster = first_cluster_id
    cand_r, cand_c = np.nonzero(placement.allowed)
    if cand_r.size == 0:
        return []

    def sample_candidates(n=600):
        idx = rng.integers(0, cand_r.size, n)
        return cand_r[idx], cand_c[idx]

    def free(center, rmax, gap):
        for o in placed + new:
            if np.hypot(*(np.asarray(o.center_mm) - center)) < o.max_radius_mm + rmax + gap:
                return False
        return True

    def find(rmax, near_bone, gap, r_min):
        r, c = sample_candidates()
        ds = placement.dist_to_skin_mm[r, c]
        db = placement.dist_to_bone_mm[r, c]
        ok = ds >= rmax + 0.5
        if near_bone:
            ok &= (db >= 0.6 * r_min) & (db <= rmax + 0.4)
        else:
            ok &= db >= rmax + 1.0
        for i in np.nonzero(ok)[0]:
            ctr = placement.point(r[i], c[i])
            if free(ctr, rmax, gap):
                return ctr, float(placement.soft_mm[r[i], c[i]])
        return None, 0.0

    order = ["plaque"] * counts["plaque"] + ["nodule"] * counts["nodule"] + ["cloud"] * counts["cloud"]
    near_flags = rng.random(len(order)) < spec.near_bone_fraction
    for kind, near in zip(order, near_flags):
        params = _draw(kind, spec, rng)
        for _attempt in range(5):
            rmax = _max_r(params)
            r_min = params["radius_mm"] * params["aspect"] * (1 - sum(abs(a) for _, a, _ in params["harmonics"]))
            ctr, soft = find(rmax, bool(near), spec.min_gap_mm, r_min)
            if ctr is not None:
                break
            params["radius_mm"] *= 0.8
            params["thickness_mm"] *= 0.8
        if ctr is None:
            continue
        params["thickness_mm"] = float(min(params["thickness_mm"], 0.6 * soft))
        if params["thickness_mm"] <= 0.05:
            continue
        new.append(Lesion(lesion_id=next_id, center_mm=(float(ctr[0]), float(ctr[1])),
                          orientation_deg=float(rng.uniform(0, 180)), texture_seed=int(rng.integers(2**31)),
                          near_bone=bool(near), **params))
        next_id += 1

    for _ in range(counts["cluster"]):
        rc = float(rng.uniform(*spec.cluster_radius_mm))
        ctr = None
        for _attempt in range(5):
            ctr, _soft = find(rc + spec.dot_radius_mm[1], False, spec.min_gap_mm, rc)
            if ctr is not None:
                break
            rc *= 0.8
        if ctr is None:
            continue
        n_dots = int(rng.integers(spec.dots_per_cluster[0], spec.dots_per_cluster[1] + 1))
        got = 0
        for _try in range(n_dots * 40):
            if got >= n_dots:
                break
            params = _draw("dot", spec, rng)
            rad = rc * np.sqrt(rng.random())
            ang = rng.uniform(0, 2 * np.pi)
            p = ctr + rad * np.array([np.cos(ang), np.sin(ang)])
            ri, ci = placement.index(p)
            rmax = _max_r(params)
            if not placement.allowed[ri[0], ci[0]]:
                continue
            if placement.dist_to_skin_mm[ri[0], ci[0]] < rmax + 0.3 or placement.dist_to_bone_mm[ri[0], ci[0]] < rmax + 0.3:
                continue
            if not free(p, rmax, spec.min_gap_mm / 3.0):
                continue
            params["thickness_mm"] = float(min(params["thickness_mm"], 0.6 * placement.soft_mm[ri[0], ci[0]]))
            new.append(Lesion(lesion_id=next_id, center_mm=(float(p[0]), float(p[1])),
                              orientation_deg=float(rng.uniform(0, 180)), texture_seed=int(rng.integers(2**31)),
                              cluster_id=next_cluster, **params))
            next_id += 1
            got += 1
        if got:
            next_cluster += 1
    return new
