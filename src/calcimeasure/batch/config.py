"""Run configuration of batch commands: parameter files, ``--set``, ROI files, output folder checks.

Every problem found here is a usage error (:class:`BatchUsageError`, exit code 2):
it is detected before any image is read.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CalcimeasureError, ParameterError
from ..params import SegmentationParams

__all__ = ["BatchUsageError", "RoiSpec", "load_params", "parse_set", "load_roi", "check_out_dir", "is_inside",
           "load_comparison"]

#: Keys of a ``params.json`` written by ``calcimeasure measure`` that are not
#: parameters (so that file can be given back to ``--params``).
_PARAMS_FILE_META = {"calcimeasure_version", "params_digest", "spacing_mm", "roi_file", "roi_sha256",
                     "keep_ids", "settings_key", "command", "created",
                     # written by `calcimeasure study` / `compare` (the comparison table is read by load_comparison)
                     "comparison", "comparison_digest", "manifest_file", "manifest_sha256", "vs_previous"}


class BatchUsageError(CalcimeasureError):
    """A command-line argument or a file it names is unusable (exit code 2)."""


def _field_types() -> dict[str, type]:
    return {f.name: type(f.default) for f in fields(SegmentationParams)}


def _unknown_message(names: set[str]) -> str:
    known = list(_field_types())
    parts = []
    for n in sorted(names):
        close = difflib.get_close_matches(n, known, n=1)
        parts.append(f"{n!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown segmentation parameter(s): {', '.join(parts)}; see SegmentationParams in calcimeasure.params"


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``["k_high=5", "ring_fit=1"]`` → ``{"k_high": 5.0, "ring_fit": 1}`` (typed like the defaults)."""
    types = _field_types()
    out: dict[str, Any] = {}
    for item in items or ():
        name, sep, text = item.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or not name or not text:
            raise BatchUsageError(f"--set expects name=value, got {item!r}")
        if name not in types:
            raise BatchUsageError(_unknown_message({name}))
        try:
            value: Any = int(text) if types[name] is int else float(text)
        except ValueError:
            kind = "an integer" if types[name] is int else "a number"
            raise BatchUsageError(f"--set {name}: expected {kind}, got {text!r}") from None
        out[name] = value
    return out


def load_params(path: str | Path | None = None, overrides: list[str] | None = None) -> SegmentationParams:
    """Segmentation parameters from a TOML or JSON file and ``--set`` overrides.

    The file holds parameter names and values, either at the top level or under a
    ``segmentation`` table/key (so a run's ``params.json`` can be given back).
    Unknown names are refused. ``--set`` values win over the file.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise BatchUsageError(f"--params {p}: cannot read ({exc.strerror or exc})") from None
        try:
            if p.suffix.lower() == ".toml":
                loaded = tomllib.loads(raw.decode("utf-8"))
            elif p.suffix.lower() == ".json":
                loaded = json.loads(raw.decode("utf-8"))
            else:
                raise BatchUsageError(f"--params {p}: expected a .toml or .json file")
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BatchUsageError(f"--params {p}: not valid {p.suffix[1:].upper()} ({exc})") from None
        if not isinstance(loaded, dict):
            raise BatchUsageError(f"--params {p}: expected a table of name = value")
        loaded = {k: v for k, v in loaded.items() if k != "comparison"}
        if "segmentation" in loaded:
            if not isinstance(loaded["segmentation"], dict):
                raise BatchUsageError(f"--params {p}: 'segmentation' must be a table of name = value")
            rest = set(loaded) - {"segmentation"} - _PARAMS_FILE_META
            if rest:
                raise BatchUsageError(f"--params {p}: unexpected key(s) beside 'segmentation': {', '.join(sorted(rest))}")
            loaded = loaded["segmentation"]
        unknown = set(loaded) - set(_field_types())
        if unknown:
            raise BatchUsageError(f"--params {p}: " + _unknown_message(unknown))
        data.update(loaded)
    data.update(parse_set(overrides))
    try:
        return SegmentationParams.from_dict(data)
    except ParameterError as exc:
        raise BatchUsageError(f"bad segmentation parameters: {exc}") from None
    except TypeError as exc:
        raise BatchUsageError(f"bad segmentation parameters: {exc}") from None


def load_comparison(path: str | Path | None = None, *, partial_pct: float | None = None,
                    progression_pct: float | None = None):
    """:class:`~calcimeasure.ComparisonParams` from the ``[comparison]`` table of a
    ``--params`` file (TOML or JSON; a run's ``params.json`` works too) and the
    ``--partial-pct`` / ``--progression-pct`` options (which win)."""
    from dataclasses import fields as _fields

    from ..compare import ComparisonParams

    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            raw = p.read_bytes().decode("utf-8")
            loaded = tomllib.loads(raw) if p.suffix.lower() == ".toml" else json.loads(raw)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise BatchUsageError(f"--params {p}: cannot read ({exc})") from None
        table = loaded.get("comparison") if isinstance(loaded, dict) else None
        if table is not None:
            if not isinstance(table, dict):
                raise BatchUsageError(f"--params {p}: 'comparison' must be a table of name = value")
            known = {f.name for f in _fields(ComparisonParams)}
            unknown = set(table) - known
            if unknown:
                raise BatchUsageError(f"--params {p}: unknown comparison parameter(s) {', '.join(sorted(unknown))}; "
                                      f"known: {', '.join(sorted(known))}")
            data.update(table)
    if partial_pct is not None:
        data["partial_pct"] = partial_pct
    if progression_pct is not None:
        data["progression_pct"] = progression_pct
    try:
        return ComparisonParams(**data)
    except (ParameterError, TypeError) as exc:
        raise BatchUsageError(f"bad comparison parameters: {exc}") from None


# ---------------------------------------------------------------------------------------------
# ROI files


def _polygons(value: Any, where: str) -> list[list[list[float]]]:
    """Validate one polygon ``[[r, c], ...]`` or a list of polygons; return a list of polygons."""
    bad = BatchUsageError(
        f"--roi {where}: expected a polygon [[row, col], ...] (at least 3 vertices) or a list of polygons"
    )
    if not isinstance(value, list) or not value or not isinstance(value[0], list) or not value[0]:
        raise bad
    single = isinstance(value[0][0], (int, float))
    polys = [value] if single else value
    out = []
    for poly in polys:
        try:
            pts = np.asarray(poly, dtype=np.float64)
        except (ValueError, TypeError):
            raise bad from None
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3 or not np.all(np.isfinite(pts)):
            raise bad
        out.append(pts.tolist())
    return out


@dataclass(frozen=True)
class RoiSpec:
    """Regions of interest from a ``--roi`` JSON file.

    ``default`` applies to every image not named in ``by_name``; ``by_name`` maps a
    file name, or the trailing part of a path (``"patient7/knee.dcm"``), to
    polygons. The longest matching key wins.
    """

    default: list | None = None
    by_name: dict[str, list] | None = None
    source: str | None = None
    sha256: str | None = None

    def for_file(self, path: str | Path) -> list | None:
        """Polygons for ``path`` (list of polygons of [row, col]) or ``None`` (whole image)."""
        if self.by_name:
            parts = Path(path).parts
            best, best_len = None, 0
            for key, polys in self.by_name.items():
                kparts = Path(key).parts
                n = len(kparts)
                if n and tuple(parts[-n:]) == kparts and n > best_len:
                    best, best_len = polys, n
            if best is not None:
                return best
        return self.default

    def unmatched_keys(self, paths: list[Path]) -> list[str]:
        """Keys of ``by_name`` that match none of ``paths`` (likely typos)."""
        if not self.by_name:
            return []
        out = []
        for key in self.by_name:
            kparts = Path(key).parts
            if not any(tuple(Path(p).parts[-len(kparts):]) == kparts for p in paths):
                out.append(key)
        return out


def load_roi(path: str | Path | None) -> RoiSpec:
    """Read a ``--roi`` JSON file (format in docs/cli.md)."""
    if path is None:
        return RoiSpec()
    p = Path(path)
    try:
        raw = p.read_bytes()
        data = json.loads(raw.decode("utf-8"))
    except OSError as exc:
        raise BatchUsageError(f"--roi {p}: cannot read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BatchUsageError(f"--roi {p}: not valid JSON ({exc})") from None
    import hashlib

    digest = hashlib.sha256(raw).hexdigest()
    if isinstance(data, list):
        return RoiSpec(default=_polygons(data, str(p)), source=str(p), sha256=digest)
    if isinstance(data, dict):
        by_name = {}
        default = None
        for key, value in data.items():
            if key == "*":
                default = _polygons(value, f"{p} ['*']")
            else:
                by_name[key] = _polygons(value, f"{p} [{key!r}]")
        return RoiSpec(default=default, by_name=by_name, source=str(p), sha256=digest)
    raise BatchUsageError(f"--roi {p}: expected a polygon, a list of polygons or an object file name -> polygon(s)")


# ---------------------------------------------------------------------------------------------
# Output folder


def is_inside(child: Path, parent: Path) -> bool:
    """Whether ``child`` is ``parent`` or inside it (both resolved, symlinks followed)."""
    c, p = child.resolve(), parent.resolve()
    return c == p or p in c.parents


def check_out_dir(out: Path, inputs: list[str], *, force: bool) -> None:
    """Refuse an output folder inside (or equal to) an input folder, unless ``force``;
    refuse an output path that is an existing file."""
    if out.exists() and not out.is_dir():
        raise BatchUsageError(f"--out {out}: exists and is not a folder")
    for raw in inputs:
        src = Path(raw)
        if src.is_dir() and is_inside(out, src) and not force:
            raise BatchUsageError(
                f"--out {out} is inside the input folder {src}: calcimeasure never writes into input "
                "folders; choose another --out (or pass --force to allow it; the output folder is then "
                "left out of the inputs)"
            )
