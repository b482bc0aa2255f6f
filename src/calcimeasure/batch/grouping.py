"""Grouping the films of a study into series and pairing follow-ups with baselines.

Rules (also in docs/cli.md, *Grouping*):

1. A film belongs to the group of its **patient key, body part, laterality and
   view** (DICOM Patient ID → pseudonymous ``patient_key``, Body Part Examined,
   Laterality / Image Laterality, View Position). Text is compared
   case-insensitively, blanks stripped; a missing value is a value of its own
   (a film without laterality only groups with films without laterality).
2. Within a group the films are ordered by **study date** (then by file path);
   the first is the **baseline**, every later film a **follow-up** compared with
   it; with ``vs_previous`` each follow-up after the first is also compared with
   the film just before it.
3. A film with no patient key or no study date cannot be placed: it is listed as
   ``ungrouped`` with the reason (and measured all the same). A group of one
   film is listed as ``single``. A film whose content (SHA-256) equals an earlier
   film's is listed as ``duplicate`` and left out of the groups.
4. A **manifest** (CSV with columns ``file, patient, region, timepoint``, and
   optionally ``laterality`` and ``view``) overrides the metadata of the films it
   lists — for scanned films without DICOM metadata: the group is (patient,
   region, laterality, view) and ``timepoint`` orders it (an ISO date or a number;
   one kind per group). Films not listed keep rule 1. ``patient`` is pseudonymised
   like a Patient ID.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import BatchUsageError

__all__ = ["ManifestEntry", "Manifest", "load_manifest", "Film", "Group", "PairPlan", "group_films", "plan_pairs",
           "GROUP_COLUMNS"]

log = logging.getLogger("calcimeasure.batch")

#: Columns of ``groups.csv`` (one row per measured film).
GROUP_COLUMNS = ["file", "sha256", "group", "order", "role", "timepoint", "patient_key", "body_part",
                 "laterality", "view", "grouped_by", "reason"]


def _norm(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and value != value) else str(value).strip().upper()


def _timepoint(text: str, where: str) -> tuple[str, Any]:
    """("date", date) or ("number", float) from a manifest cell."""
    t = text.strip()
    try:
        return "date", _dt.date.fromisoformat(t)
    except ValueError:
        pass
    try:
        return "number", float(t)
    except ValueError:
        raise BatchUsageError(f"--manifest {where}: timepoint {text!r} is neither an ISO date (YYYY-MM-DD) nor a number") from None


@dataclass(frozen=True)
class ManifestEntry:
    file: str
    patient: str
    region: str
    timepoint: str
    laterality: str = ""
    view: str = ""

    @property
    def group_key(self) -> tuple[str, str, str, str]:
        return (self.patient.strip(), _norm(self.region), _norm(self.laterality), _norm(self.view))


@dataclass(frozen=True)
class Manifest:
    """Manifest rows by file key (a file name, a path end such as ``p7/knee.tif``, or an absolute path)."""

    entries: dict[str, ManifestEntry] = field(default_factory=dict)
    source: str | None = None
    sha256: str | None = None

    def for_file(self, path: str | Path) -> ManifestEntry | None:
        """The entry whose key is the longest trailing part of ``path`` (or equals its absolute path)."""
        if not self.entries:
            return None
        p = Path(path)
        parts = p.parts
        absparts = Path(p).absolute().parts
        best, best_len = None, 0
        for key, entry in self.entries.items():
            kparts = Path(key).parts
            n = len(kparts)
            if not n:
                continue
            hit = (Path(key).is_absolute() and kparts == absparts) or tuple(parts[-n:]) == kparts
            if hit and n > best_len:
                best, best_len = entry, n
        return best

    def unmatched_keys(self, paths: Sequence[str | Path]) -> list[str]:
        return [k for k, _ in self.entries.items() if not any(self._hit(k, p) for p in paths)]

    @staticmethod
    def _hit(key: str, path: str | Path) -> bool:
        kparts = Path(key).parts
        return (Path(key).is_absolute() and kparts == Path(path).absolute().parts) or tuple(Path(path).parts[-len(kparts):]) == kparts


def load_manifest(path: str | Path | None) -> Manifest:
    """Read a ``--manifest`` CSV (header ``file,patient,region,timepoint[,laterality][,view]``).

    Usage errors (exit 2): unreadable file, missing columns, empty cells in the
    required columns, a file listed twice, a timepoint neither a date nor a
    number, dates and numbers mixed in one group, two films of one group at the
    same timepoint.
    """
    if path is None:
        return Manifest()
    import hashlib

    p = Path(path)
    try:
        raw = p.read_bytes()
        text = raw.decode("utf-8-sig")
    except OSError as exc:
        raise BatchUsageError(f"--manifest {p}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise BatchUsageError(f"--manifest {p}: not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text))
    cols = [c.strip().lower() for c in (reader.fieldnames or [])]
    required = ["file", "patient", "region", "timepoint"]
    missing = [c for c in required if c not in cols]
    if missing:
        raise BatchUsageError(f"--manifest {p}: missing column(s) {', '.join(missing)} (header must include "
                              "file,patient,region,timepoint; optional laterality,view)")
    entries: dict[str, ManifestEntry] = {}
    kinds: dict[tuple, set[str]] = {}
    times: dict[tuple, dict[Any, str]] = {}
    for lineno, row in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        if not any(row.values()):
            continue
        empty = [c for c in required if not row.get(c)]
        if empty:
            raise BatchUsageError(f"--manifest {p}, line {lineno}: empty {', '.join(empty)}")
        e = ManifestEntry(row["file"], row["patient"], row["region"], row["timepoint"],
                          row.get("laterality", ""), row.get("view", ""))
        if e.file in entries:
            raise BatchUsageError(f"--manifest {p}, line {lineno}: {e.file!r} listed twice")
        kind, value = _timepoint(e.timepoint, f"{p}, line {lineno}")
        kinds.setdefault(e.group_key, set()).add(kind)
        if len(kinds[e.group_key]) > 1:
            raise BatchUsageError(f"--manifest {p}, line {lineno}: dates and numbers mixed as timepoints of one "
                                  f"group (patient {e.patient!r}, region {e.region!r})")
        other = times.setdefault(e.group_key, {}).get(value)
        if other is not None:
            raise BatchUsageError(f"--manifest {p}, line {lineno}: {e.file!r} and {other!r} have the same timepoint "
                                  f"{e.timepoint!r} in one group")
        times[e.group_key][value] = e.file
        entries[e.file] = e
    return Manifest(entries=entries, source=str(p), sha256=hashlib.sha256(raw).hexdigest())


@dataclass
class Film:
    """A measured film as the grouping sees it."""

    index: int  #: position in the input order
    file: str
    sha256: str
    patient_key: str | None
    body_part: str | None
    laterality: str | None
    view: str | None
    timepoint: str | None  #: ISO date or manifest number, as text
    sort_key: Any = None
    grouped_by: str = "dicom"
    group: str | None = None
    order: int | None = None
    role: str = "ungrouped"
    reason: str = ""

    def row(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "group": self.group, "order": self.order, "role": self.role,
                "timepoint": self.timepoint, "patient_key": self.patient_key, "body_part": self.body_part,
                "laterality": self.laterality, "view": self.view, "grouped_by": self.grouped_by,
                "reason": self.reason}


@dataclass
class Group:
    id: str
    key: tuple
    films: list[Film]


@dataclass(frozen=True)
class PairPlan:
    pair_id: str
    group: str
    comparison: str  #: "baseline" or "previous"
    baseline: Film
    followup: Film

    @property
    def interval_days(self) -> int | None:
        b, f = self.baseline.sort_key, self.followup.sort_key
        if isinstance(b, tuple):  # manifest: (kind, value)
            b, f = b[1], f[1]
        if isinstance(b, _dt.date) and isinstance(f, _dt.date):
            return (f - b).days
        return None


def group_films(images: Sequence[dict[str, Any]], manifest: Manifest | None = None, *,
                salt: str | None = None) -> tuple[list[Group], list[Film]]:
    """Group measured films (rows of ``measurements.csv``, in input order).

    Returns
    -------
    groups : list of Group
        Groups of two or more films, each ordered by time; ids ``G001``, ``G002``, ...
        in the order of their first film in the input.
    films : list of Film
        Every film, in input order, with its group, order and role (``baseline``,
        ``followup``, ``single``, ``ungrouped``, ``duplicate``) and a reason when not grouped.
    """
    from ..io.dicom_meta import patient_key as _pkey

    manifest = manifest or Manifest()
    films: list[Film] = []
    seen_sha: dict[str, str] = {}
    buckets: dict[tuple, list[Film]] = {}
    for i, im in enumerate(images):
        entry = manifest.for_file(im["file"])
        if entry is not None:
            kind, value = _timepoint(entry.timepoint, manifest.source or "manifest")
            f = Film(i, im["file"], im["sha256"], _pkey(entry.patient, salt=salt), entry.region or None,
                     entry.laterality or None, entry.view or None, entry.timepoint, (kind, value), "manifest")
            key = ("manifest", *entry.group_key)
        else:
            date = im.get("study_date")
            f = Film(i, im["file"], im["sha256"], im.get("patient_key"), im.get("body_part"), im.get("laterality"),
                     im.get("view"), date, None, "dicom")
            key = ("dicom", _norm(f.patient_key), _norm(f.body_part), _norm(f.laterality), _norm(f.view))
            if date:
                try:
                    f.sort_key = _dt.date.fromisoformat(str(date))
                except ValueError:
                    f.reason = f"study date {date!r} is not a date"
            if not f.patient_key:
                f.reason = "no patient key (no DICOM Patient ID): list it in a --manifest to group it"
            elif not date:
                f.reason = "no study date: list it in a --manifest to place it in time"
        films.append(f)
        if f.sha256 in seen_sha:
            f.role, f.reason = "duplicate", f"same content as {seen_sha[f.sha256]}"
            continue
        seen_sha[f.sha256] = f.file
        if f.reason:
            continue
        buckets.setdefault(key, []).append(f)

    groups: list[Group] = []
    n = 0
    for key, members in buckets.items():  # dict order: first film's input order
        if key[0] == "manifest":
            members.sort(key=lambda f: (f.sort_key[1], f.file))
        else:
            members.sort(key=lambda f: (f.sort_key, f.file))
        if len(members) == 1:
            members[0].role = "single"
            members[0].reason = "only film of its group (patient, body part, laterality, view): nothing to compare"
            continue
        n += 1
        gid = f"G{n:03d}"
        for k, f in enumerate(members):
            f.group, f.order, f.role = gid, k, "baseline" if k == 0 else "followup"
        groups.append(Group(gid, key, members))
    return groups, films


def plan_pairs(groups: Sequence[Group], *, vs_previous: bool = False) -> list[PairPlan]:
    """Every follow-up against its group's baseline (``G001-1``, ``G001-2``, ...) and,
    with ``vs_previous``, against the film before it when that is not the baseline
    (``G001-2-prev``, ...). Ordered by group, then follow-up, baseline comparison first."""
    plans: list[PairPlan] = []
    for g in groups:
        base = g.films[0]
        for k in range(1, len(g.films)):
            f = g.films[k]
            plans.append(PairPlan(f"{g.id}-{k}", g.id, "baseline", base, f))
            if vs_previous and k >= 2:
                plans.append(PairPlan(f"{g.id}-{k}-prev", g.id, "previous", g.films[k - 1], f))
    return plans
