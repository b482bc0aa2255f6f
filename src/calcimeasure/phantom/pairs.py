"""Baseline / follow-up pairs with known repositioning and known lesion change."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .lesions import Lesion, place_lesions
from .render import PhantomImage, Patient, build_patient, placement_map, render_patient, resolve_acquisition, resolve_patient
from .specs import AcquisitionSpec, LesionSpec, PhantomSpec, _Serialisable, _check_choice, _check_range

__all__ = [
    "CHANGE_KINDS",
    "RESPONSES",
    "ResponseBands",
    "PairSpec",
    "LesionChange",
    "PhantomPair",
    "render_pair",
]

CHANGE_KINDS = ("vanished", "shrunk", "stable", "grown", "new")
RESPONSES = ("complete", "partial", "stable", "progression")


@dataclass(frozen=True)
class ResponseBands(_Serialisable):
    """Response categories from the total calcified area (patient plane).

    * complete: calcification at baseline and none left at follow-up;
    * partial: total area change <= `partial_pct`;
    * progression: total area change >= `progression_pct` (or new calcification from none);
    * stable: otherwise.
    """

    partial_pct: float = -25.0
    progression_pct: float = 25.0

    def classify(self, baseline_mm2: float, followup_mm2: float) -> str:
        """Category for total areas `baseline_mm2` -> `followup_mm2`."""
        if baseline_mm2 <= 0:
            return "progression" if followup_mm2 > 0 else "stable"
        if followup_mm2 <= 0:
            return "complete"
        pct = 100.0 * (followup_mm2 - baseline_mm2) / baseline_mm2
        if pct <= self.partial_pct:
            return "partial"
        if pct >= self.progression_pct:
            return "progression"
        return "stable"


@dataclass(frozen=True)
class PairSpec(_Serialisable):
    """How the follow-up differs from the baseline.  ``None`` fields are drawn from the seed.

    Attributes
    ----------
    interval_months : float or None
        Time between the studies (None: uniform 6..14 months).
    rotation_deg : float or None
        Extra in-plane rotation of the follow-up (None: uniform +-10 deg).
    translation_mm : (float, float) or None
        Extra patient-plane (row, col) shift (None: uniform +-3 % of the field).
    magnification_change : float or None
        Relative change of the geometric magnification, realised by the
        object-to-detector distance (None: uniform +-8 %; m never drops below 1).
    growth : float
        Linear growth of the anatomy (children), e.g. 1.03.
    response : {"complete", "partial", "stable", "progression"} or None
        Target category; the lesion changes are drawn so that the truth falls in
        it (None: random changes with the probabilities below).
    p_vanished, p_shrunk, p_stable, p_grown : float
        Per-lesion (per-cluster) change probabilities when `response` is None.
    n_new : int or None
        New lesions at follow-up (None: 0..2 when `response` is None or "progression").
    shrink_area_factor, stable_area_factor, grow_area_factor : (float, float)
        Area ratio ranges of shrunk / stable / grown lesions.
    photometric : {"MONOCHROME1", "MONOCHROME2", "same", "flip"} or None
        Follow-up photometric interpretation; None: "flip" with probability 0.3, else "same".
    followup : AcquisitionSpec or None
        Explicit follow-up acquisition (pose fields still receive the changes
        above when left None); None: derived from the baseline with a different
        dose, kVp and edge enhancement.
    bands : ResponseBands
    """

    interval_months: float | None = None
    rotation_deg: float | None = None
    translation_mm: tuple[float, float] | None = None
    magnification_change: float | None = None
    growth: float = 1.0
    response: str | None = None
    p_vanished: float = 0.15
    p_shrunk: float = 0.3
    p_stable: float = 0.35
    p_grown: float = 0.2
    n_new: int | None = None
    shrink_area_factor: tuple[float, float] = (0.1, 0.7)
    stable_area_factor: tuple[float, float] = (0.92, 1.08)
    grow_area_factor: tuple[float, float] = (1.35, 2.5)
    photometric: str | None = None
    followup: AcquisitionSpec | None = None
    bands: ResponseBands = field(default_factory=ResponseBands)

    def __post_init__(self) -> None:
        _check_range("interval_months", self.interval_months, low=0.0, high=240.0)
        _check_range("rotation_deg", self.rotation_deg, low=-180.0, high=180.0)
        _check_range("magnification_change", self.magnification_change, low=-0.5, high=0.5)
        _check_range("growth", self.growth, low=0.8, high=1.5)
        if self.response is not None:
            _check_choice("response", self.response, RESPONSES)
        if self.photometric is not None:
            _check_choice("photometric", self.photometric, ("MONOCHROME1", "MONOCHROME2", "same", "flip"))
        for name in ("shrink_area_factor", "stable_area_factor", "grow_area_factor"):
            _check_range(name, getattr(self, name), low=0.01, high=20.0, ordered=True)
        if self.shrink_area_factor[1] >= 1 or self.grow_area_factor[0] <= 1:
            raise ValueError("`shrink_area_factor` must be < 1 and `grow_area_factor` > 1")


@dataclass(frozen=True)
class LesionChange(_Serialisable):
    """Known change of one lesion between the films.

    Attributes
    ----------
    lesion_id : int
        Id of the lesion (same label value on both films when present on both).
    change : {"vanished", "shrunk", "stable", "grown", "new"}
    kind : str
    cluster_id : int
    baseline_id, followup_id : int or None
        Label value on each film (None where absent).
    baseline_area_mm2, followup_area_mm2 : float
        Exact patient-plane areas (0 where absent).
    area_change_pct : float or None
        ``100 (followup - baseline) / baseline`` (None for new lesions).
    """

    lesion_id: int
    change: str
    kind: str
    cluster_id: int
    baseline_id: int | None
    followup_id: int | None
    baseline_area_mm2: float
    followup_area_mm2: float
    area_change_pct: float | None


@dataclass
class PhantomPair:
    """A baseline and a follow-up film of the same phantom patient, with the truth.

    Attributes
    ----------
    baseline, followup : PhantomImage
    followup_to_baseline : ndarray of shape (3, 3)
        Homogeneous matrix mapping follow-up (row, col, 1) pixel coordinates to
        baseline (row, col, 1) pixel coordinates (anatomical correspondence,
        including growth).
    changes : list of LesionChange
    baseline_total_mm2, followup_total_mm2 : float
        Total exact patient-plane lesion areas.
    total_change_pct : float
    response : str
        Category from `bands`.
    bands : ResponseBands
    interval_days : int
    pair_spec : PairSpec
        Resolved (no None fields except `followup`).
    """

    baseline: PhantomImage
    followup: PhantomImage
    followup_to_baseline: np.ndarray
    changes: list[LesionChange]
    baseline_total_mm2: float
    followup_total_mm2: float
    total_change_pct: float
    response: str
    bands: ResponseBands
    interval_days: int
    pair_spec: PairSpec

    @property
    def matches(self) -> list[tuple[int, int]]:
        """(baseline_id, followup_id) of the lesions present on both films."""
        return [(c.baseline_id, c.followup_id) for c in self.changes if c.baseline_id and c.followup_id]

    def map_followup_to_baseline(self, points_rc: np.ndarray) -> np.ndarray:
        """Map (N, 2) follow-up (row, col) points to baseline (row, col)."""
        pts = np.asarray(points_rc, float).reshape(-1, 2)
        m = self.followup_to_baseline
        return pts @ m[:2, :2].T + m[:2, 2]

    def to_dict(self) -> dict[str, Any]:
        """Truth of the pair (JSON-compatible, no arrays)."""
        return {
            "followup_to_baseline": self.followup_to_baseline.tolist(),
            "baseline_total_mm2": self.baseline_total_mm2,
            "followup_total_mm2": self.followup_total_mm2,
            "total_change_pct": self.total_change_pct,
            "response": self.response,
            "bands": self.bands.to_dict(),
            "interval_days": self.interval_days,
            "changes": [c.to_dict() for c in self.changes],
            "pair_spec": self.pair_spec.to_dict(),
            "baseline": self.baseline.to_dict(),
            "followup": self.followup.to_dict(),
        }


# --------------------------------------------------------------------------- helpers
def _groups(lesions: tuple[Lesion, ...]) -> list[list[Lesion]]:
    out: dict[tuple, list[Lesion]] = {}
    for les in lesions:
        key = ("c", les.cluster_id) if les.cluster_id else ("l", les.lesion_id)
        out.setdefault(key, []).append(les)
    return list(out.values())


def _resolve_pair(pair: PairSpec, rng: np.random.Generator, field_mm: np.ndarray) -> PairSpec:
    d = {
        "interval": float(rng.uniform(6.0, 14.0)),
        "rot": float(rng.uniform(-10, 10)),
        "tr": rng.uniform(-0.03, 0.03, 2) * field_mm,
        "mag": float(rng.uniform(-0.08, 0.08)),
        "flip": bool(rng.random() < 0.3),
        "n_new": int(rng.integers(0, 3)),
    }
    n_new = pair.n_new
    if n_new is None:
        n_new = {"complete": 0, "partial": 0, "stable": 0, "progression": max(d["n_new"], 1)}.get(pair.response, d["n_new"])
    return dataclasses.replace(
        pair,
        interval_months=pair.interval_months if pair.interval_months is not None else round(d["interval"], 3),
        rotation_deg=pair.rotation_deg if pair.rotation_deg is not None else round(d["rot"], 4),
        translation_mm=pair.translation_mm if pair.translation_mm is not None else tuple(round(float(x), 4) for x in d["tr"]),
        magnification_change=pair.magnification_change if pair.magnification_change is not None else round(d["mag"], 5),
        n_new=n_new,
        photometric=pair.photometric if pair.photometric is not None else ("flip" if d["flip"] else "same"),
    )


def _followup_acquisition(base: AcquisitionSpec, pair: PairSpec, rng: np.random.Generator) -> AcquisitionSpec:
    src = pair.followup or base
    d = {
        "kvp": float(rng.uniform(-5, 5)),
        "dose": float(np.exp(rng.uniform(np.log(0.6), np.log(1.6)))),
        "edge": float(rng.uniform(0.5, 1.5)),
        "edge_sigma": float(rng.uniform(0.7, 1.4)),
    }
    m_target = max(base.magnification * (1.0 + float(pair.magnification_change)), 1.0)
    oid = src.sid_mm * (1.0 - 1.0 / m_target)
    if pair.photometric == "flip":
        photometric = "MONOCHROME1" if base.photometric == "MONOCHROME2" else "MONOCHROME2"
    elif pair.photometric == "same":
        photometric = base.photometric
    else:
        photometric = pair.photometric
    changes: dict[str, Any] = dict(
        rotation_deg=float(base.rotation_deg) + float(pair.rotation_deg),
        shift_mm=(float(base.shift_mm[0]) + pair.translation_mm[0], float(base.shift_mm[1]) + pair.translation_mm[1]),
        oid_mm=round(oid, 6),
        collimation_fraction=src.collimation_fraction if pair.followup else None,
        collimation_angle_deg=src.collimation_angle_deg if pair.followup else None,
        marker=base.marker,
    )
    if pair.followup is None:
        changes.update(
            kvp=float(np.clip(round(base.kvp + d["kvp"], 1), 30, 150)),
            detector_quanta_per_mm2=float(round(base.detector_quanta_per_mm2 * d["dose"], 1)),
            edge_enhancement_gain=round(base.edge_enhancement_gain * d["edge"], 4),
            edge_enhancement_sigma_mm=round(base.edge_enhancement_sigma_mm * d["edge_sigma"], 4),
            photometric=photometric,
        )
    elif pair.photometric in ("MONOCHROME1", "MONOCHROME2"):
        changes["photometric"] = photometric
    return dataclasses.replace(src, **changes)


def _lesion_changes(patient: Patient, pair: PairSpec, rng: np.random.Generator) -> tuple[list[Lesion], dict[int, str]]:
    """Apply per-group changes; returns the surviving lesions (baseline frame) and their change labels."""
    placement = placement_map(patient.spec, patient.anatomy)
    target = pair.response
    out: list[Lesion] = []
    labels: dict[int, str] = {}
    groups = _groups(patient.lesions)
    for gi, group in enumerate(groups):
        if target == "complete":
            kind = "vanished"
        elif target == "partial":
            kind = "vanished" if rng.random() < 0.25 else "shrunk"
        elif target == "stable":
            kind = "stable"
        elif target == "progression":
            kind = "grown" if rng.random() < 0.85 else "stable"
        else:
            p = np.array([pair.p_vanished, pair.p_shrunk, pair.p_stable, pair.p_grown], float)
            kind = ["vanished", "shrunk", "stable", "grown"][int(rng.choice(4, p=p / p.sum()))]
        rng_f = {"shrunk": pair.shrink_area_factor, "stable": pair.stable_area_factor, "grown": pair.grow_area_factor}
        factor = float(rng.uniform(*rng_f[kind])) if kind != "vanished" else 0.0
        for les in group:
            if kind == "vanished":
                labels[les.lesion_id] = "vanished"
                continue
            f = factor
            if kind == "grown":
                # do not grow through the skin or into a neighbour
                r, c = placement.index(np.asarray(les.center_mm))
                room = float(placement.dist_to_skin_mm[r[0], c[0]]) - 0.3
                for other in list(out) + [o for g in groups[gi + 1 :] for o in g]:
                    if other.lesion_id == les.lesion_id:
                        continue
                    dist = float(np.hypot(*(np.asarray(other.center_mm) - les.center_mm)))
                    room = min(room, dist - other.max_radius_mm - 0.3)
                lin_max = max(room / les.max_radius_mm, 1.0)
                f = min(f, lin_max**2)
                if f < pair.grow_area_factor[0]:  # no room to grow: it stays stable
                    f = min(f, pair.stable_area_factor[1])
                    kind_l = "stable"
                else:
                    kind_l = "grown"
            else:
                kind_l = kind
            soft = float(placement.soft_mm[placement.index(np.asarray(les.center_mm))][0])
            lin = float(np.sqrt(f))
            tf = min(lin, 0.6 * soft / les.thickness_mm) if les.thickness_mm > 0 else lin
            out.append(les.scaled(f, thickness_factor=max(tf, 0.05)))
            labels[les.lesion_id] = kind_l
    return out, labels


def render_pair(spec: PhantomSpec, *, seed: int, pair: PairSpec | None = None) -> PhantomPair:
    """Render a baseline and a follow-up film of the same phantom patient.

    Parameters
    ----------
    spec : PhantomSpec
        Baseline spec (anatomy, lesions, acquisition, patient).
    seed : int
    pair : PairSpec, optional
        Repositioning, re-exposure and lesion changes (default: all drawn from the seed).

    Returns
    -------
    PhantomPair
    """
    pair = pair or PairSpec()
    rng = np.random.default_rng([int(seed), 4])
    patient = build_patient(spec, seed=seed)
    base_acq = resolve_acquisition(spec.acquisition, spec.anatomy.laterality, np.random.default_rng([int(seed), 1]))
    field_mm = np.array([base_acq.rows, base_acq.cols]) * base_acq.pitch_mm / base_acq.magnification
    rpair = _resolve_pair(pair, rng, field_mm)
    pspec = resolve_patient(spec.patient, np.random.default_rng([int(seed), 3]))
    baseline = render_patient(patient, base_acq, seed=seed, stream=1, role="baseline", patient_spec=pspec)

    survivors, labels = _lesion_changes(patient, rpair, rng)
    new: list[Lesion] = []
    if rpair.n_new:
        placement = placement_map(spec, patient.anatomy)
        ls = dataclasses.replace(spec.lesions, near_bone_fraction=spec.lesions.near_bone_fraction)
        n_nod = int(rpair.n_new)
        new = place_lesions(ls, placement, rng, first_id=max((l.lesion_id for l in patient.lesions), default=0) + 1,
                            first_cluster_id=max((l.cluster_id for l in patient.lesions), default=0) + 1,
                            existing=list(patient.lesions) + survivors,
                            n_override={"plaque": 0, "nodule": n_nod, "cloud": 0, "cluster": 0})
        for les in new:
            labels[les.lesion_id] = "new"
    g = float(rpair.growth)
    fu_lesions = tuple(
        dataclasses.replace(les, center_mm=(les.center_mm[0] * g, les.center_mm[1] * g)) for les in survivors + new
    )
    fu_patient = dataclasses.replace(patient, lesions=fu_lesions, growth=g)

    fu_acq = _followup_acquisition(baseline.acquisition, rpair, rng)
    interval_days = int(round(float(rpair.interval_months) * 30.4375))
    fu_date = (_dt.datetime.strptime(baseline.study.study_date, "%Y%m%d").date() + _dt.timedelta(days=interval_days)).strftime("%Y%m%d")
    followup = render_patient(fu_patient, fu_acq, seed=seed, stream=2, role="followup", patient_spec=pspec,
                              study_date=fu_date, birth_date=baseline.study.birth_date)

    scale = np.diag([1.0 / g, 1.0 / g, 1.0])
    matrix = baseline.body_to_pixel @ scale @ np.linalg.inv(followup.body_to_pixel)

    base_area = {t.lesion_id: t.area_mm2 for t in baseline.lesions}
    fu_area = {t.lesion_id: t.area_mm2 for t in followup.lesions}
    kinds = {l.lesion_id: (l.kind, l.cluster_id) for l in patient.lesions + tuple(new)}
    changes = []
    for lid in sorted(set(base_area) | set(fu_area)):
        b = base_area.get(lid, 0.0)
        f = fu_area.get(lid, 0.0)
        changes.append(
            LesionChange(
                lesion_id=lid,
                change=labels[lid],
                kind=kinds[lid][0],
                cluster_id=kinds[lid][1],
                baseline_id=lid if lid in base_area else None,
                followup_id=lid if lid in fu_area else None,
                baseline_area_mm2=b,
                followup_area_mm2=f,
                area_change_pct=None if b == 0 else 100.0 * (f - b) / b,
            )
        )
    tb = float(sum(base_area.values()))
    tf = float(sum(fu_area.values()))
    pct = 100.0 * (tf - tb) / tb if tb > 0 else (float("inf") if tf > 0 else 0.0)
    response = rpair.bands.classify(tb, tf)
    if rpair.response is not None and response != rpair.response:
        raise RuntimeError(
            f"could not realise response {rpair.response!r} (got {response!r}, {pct:.1f} %) for seed {seed}; "
            "try another seed or fewer / smaller lesions"
        )
    return PhantomPair(
        baseline=baseline,
        followup=followup,
        followup_to_baseline=matrix,
        changes=changes,
        baseline_total_mm2=tb,
        followup_total_mm2=tf,
        total_change_pct=pct,
        response=response,
        bands=rpair.bands,
        interval_days=interval_days,
        pair_spec=rpair,
    )
