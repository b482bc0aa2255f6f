"""``report.html`` of a study: one self-contained file (every picture embedded as a ``data:`` URI).

Content: a summary, the waterfall plot of per-pair % area change with the
response bands (matplotlib, Agg), the cohort table (one row per compared pair),
each pair's side-by-side picture with its numbers and lesion changes, the films
in no pair, the errors, and the parameters and software version. No patient
name (calcimeasure never reads one) and no Patient ID: only the pseudonymous
``patient_key``. A few lines of script mark ``<body data-images="loaded">``
once every picture has decoded (used by ``scripts/check_report.py``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["build_report", "waterfall_png"]

_RESPONSE_COLOURS = {
    "complete": "#0072B2",
    "partial": "#56B4E9",
    "stable": "#999999",
    "progression": "#D55E00",
    "not_evaluable": "#E69F00",
}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:24px;color:#222;max-width:1500px}
h1{font-size:1.6em;margin-bottom:4px} h2{margin-top:32px;border-bottom:1px solid #ccc;padding-bottom:4px}
h3{margin-bottom:6px} .muted{color:#666} table{border-collapse:collapse;font-size:0.86em;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top} th{background:#f2f2f2}
td.num{text-align:right;font-variant-numeric:tabular-nums} .pair{margin:18px 0 34px}
img.pair-picture{max-width:100%;height:auto;border:1px solid #888;background:#202020}
img.plot{max-width:100%;height:auto} .resp{font-weight:600;padding:1px 6px;border-radius:3px;color:#fff}
.flags{color:#a04000} .wide{overflow-x:auto} #cohort td{white-space:nowrap}
#cohort td.flags{white-space:normal;min-width:240px;max-width:420px;font-size:0.92em} pre{background:#f6f6f6;padding:8px;overflow:auto;font-size:0.85em}
"""

_SCRIPT = """
(function(){
  function check(){
    var imgs=document.images, ok=0, bad=0;
    for(var i=0;i<imgs.length;i++){ if(imgs[i].complete){ if(imgs[i].naturalWidth>0) ok++; else bad++; } }
    document.body.setAttribute('data-images-total', imgs.length);
    document.body.setAttribute('data-images-ok', ok);
    document.body.setAttribute('data-images-broken', bad);
    if(ok+bad===imgs.length){ document.body.setAttribute('data-images', bad ? 'broken' : 'loaded'); return; }
    setTimeout(check, 50);
  }
  if(document.readyState==='complete') check(); else window.addEventListener('load', check);
})();
"""


def _e(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return ""
    return html.escape(str(v))


def _num(v: Any, fmt: str = "{:.1f}") -> str:
    try:
        if v is None or pd.isna(v):
            return ""
        return fmt.format(float(v))
    except (TypeError, ValueError):
        return _e(v)


def _resp(r: Any) -> str:
    r = "" if r is None or (isinstance(r, float) and math.isnan(r)) else str(r)
    return f'<span class="resp" style="background:{_RESPONSE_COLOURS.get(r, "#666")}">{_e(r)}</span>'


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _jpeg_of(path: Path, quality: int = 85) -> bytes | None:
    """The picture at ``path`` re-encoded as JPEG (a fifth of the PNG's size), or None."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        return None
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes() if ok else None


#: The waterfall labels each bar with its pair id up to this many pairs.
_MAX_BAR_LABELS = 40


def waterfall_png(changes: pd.DataFrame, partial_pct: float = -25.0, progression_pct: float = 25.0) -> bytes | None:
    """Waterfall plot (PNG bytes) of the pairs' % total area change, sorted, coloured by
    response, with the response bands; ``None`` when no pair has a % change."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    d = changes[pd.to_numeric(changes["area_change_pct"], errors="coerce").notna()].copy()
    if d.empty:
        return None
    d["pct"] = pd.to_numeric(d["area_change_pct"])
    d = d.sort_values("pct", ascending=False, kind="stable")
    n = len(d)
    cap = 300.0
    shown = d["pct"].clip(upper=cap).to_numpy()
    fig, ax = plt.subplots(figsize=(min(14, max(7, 0.35 * n + 3)), 4.2), dpi=110)
    colours = [_RESPONSE_COLOURS.get(r, "#666") for r in d["response"]]
    x = np.arange(n)
    ax.bar(x, shown, color=colours, edgecolor="#333", linewidth=0.4)
    for xi, v in zip(x, d["pct"]):
        if v > cap:
            ax.text(xi, cap, f"{v:.0f}", ha="center", va="bottom", fontsize=7)
    ax.axhspan(partial_pct, progression_pct, color="#999", alpha=0.12, lw=0)
    ax.axhline(partial_pct, color="#0072B2", ls="--", lw=1)
    ax.axhline(progression_pct, color="#D55E00", ls="--", lw=1)
    ax.axhline(0, color="#333", lw=0.8)
    if n <= _MAX_BAR_LABELS:
        ax.set_xticks(x)
        ax.set_xticklabels(d["pair_id"], rotation=90 if n > 8 else 0, fontsize=8)
    else:
        # Beyond ~40 bars the ids are unreadable (and drawing them is most of the plot's cost):
        # the cohort table below the plot lists every pair with its change.
        ax.set_xticks([])
        ax.set_xlabel(f"{n} pairs, sorted by % change (pair ids and values: cohort table)")
    ax.set_xlim(-0.6, n - 0.4)
    lo = min(-105.0, float(shown.min()) - 5)
    hi = max(progression_pct * 2, float(shown.max()) * 1.12 + 5)
    ax.set_ylim(lo, hi)
    ax.set_ylabel("total calcified area change (%)")
    ax.set_title("Per-pair change of total lesion area (follow-up vs baseline)", fontsize=10)
    present = [r for r in _RESPONSE_COLOURS if r in set(d["response"])]
    from matplotlib.lines import Line2D

    handles = [Patch(color=_RESPONSE_COLOURS[r], label=r) for r in present] + [
        Line2D([], [], color="#D55E00", ls="--", lw=1, label=f"progression band {progression_pct:+g} %"),
        Line2D([], [], color="#0072B2", ls="--", lw=1, label=f"partial band {partial_pct:+g} %"),
    ]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _table(frame: pd.DataFrame, columns: list[tuple[str, str, str]], *, table_id: str | None = None,
           row_attr: str | None = None) -> str:
    """HTML table; ``columns`` is (column, header, format) with format '' (text), 'resp', or a number format."""
    head = "".join(f"<th>{_e(h)}</th>" for _c, h, _f in columns)
    rows = []
    for rec in frame.to_dict(orient="records"):
        cells = []
        for c, _h, f in columns:
            v = rec.get(c)
            if f == "resp":
                cells.append(f"<td>{_resp(v)}</td>")
            elif f:
                cells.append(f'<td class="num">{_num(v, f)}</td>')
            elif c == "flags":
                cells.append(f'<td class="flags">{_e(v)}</td>')
            else:
                cells.append(f"<td>{_e(v)}</td>")
        attr = f' data-{row_attr}="{_e(rec.get(row_attr))}"' if row_attr else ""
        rows.append(f"<tr{attr}>{''.join(cells)}</tr>")
    tid = f' id="{table_id}"' if table_id else ""
    return f"<table{tid}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


_COHORT = [
    ("pair_id", "pair", ""), ("comparison", "vs", ""), ("patient_key", "patient key", ""),
    ("body_part", "region", ""), ("laterality", "side", ""), ("view", "view", ""),
    ("baseline_date", "baseline", ""), ("followup_date", "follow-up", ""), ("interval_days", "days", "{:.0f}"),
    ("baseline_total_mm2", "baseline mm²", "{:.1f}"), ("followup_total_mm2", "follow-up mm²", "{:.1f}"),
    ("area_change_mm2", "change mm²", "{:+.1f}"), ("area_change_pct", "change %", "{:+.1f}"),
    ("area_change_pct_anatomical", "anatomical %", "{:+.1f}"), ("response", "response", "resp"),
    ("baseline_lesions", "lesions b", "{:.0f}"), ("followup_lesions", "lesions f", "{:.0f}"),
    ("registration_quality", "reg. quality", "{:.2f}"), ("flags", "flags", ""),
]

_LESIONS = [
    ("match_id", "id", "{:.0f}"), ("kind", "kind", ""), ("status", "status", ""),
    ("baseline_ids", "baseline labels", ""), ("followup_ids", "follow-up labels", ""),
    ("baseline_area_mm2", "baseline mm²", "{:.2f}"), ("followup_area_mm2", "follow-up mm²", "{:.2f}"),
    ("change_pct", "change %", "{:+.1f}"),
]


def _append_pairs(parts: list[str], changes: pd.DataFrame, records: list[dict], lchanges: pd.DataFrame,
                  jpegs: Any, png: bytes | None) -> None:
    """The waterfall picture, the cohort table and one section per pair (``jpegs``: its picture)."""
    if png:
        parts.append(f'<img class="plot" id="waterfall" alt="waterfall plot of per-pair area change" '
                     f'src="{_data_uri(png, "image/png")}">')
    else:
        parts.append("<p>No pair with a % change.</p>")

    parts.append("<h2>Cohort</h2>")
    parts.append('<div class="wide">' + _table(changes, _COHORT, table_id="cohort", row_attr="pair_id") + "</div>")

    parts.append("<h2>Pairs</h2>")
    by_pair = dict(tuple(lchanges.groupby("pair_id", sort=False))) if len(lchanges) else {}
    for rec, data in zip(records, jpegs):
        pid = rec["pair_id"]
        parts.append(f'<section class="pair" id="pair-{_e(pid)}"><h3>{_e(pid)} — {_resp(rec["response"])} '
                     f'{_num(rec.get("area_change_pct"), "{:+.1f}")} %</h3>')
        parts.append(f'<p class="muted">baseline {_e(rec["baseline_file"])} ({_e(rec["baseline_date"])}) → '
                     f'follow-up {_e(rec["followup_file"])} ({_e(rec["followup_date"])})</p>')
        if data:
            parts.append(f'<img class="pair-picture" alt="baseline and follow-up of pair {_e(pid)}" '
                         f'src="{_data_uri(data, "image/jpeg")}">')
        reg = ("ok" if rec.get("registration_ok") in (True, "True") else "FAILED") + (
            f", quality {_num(rec.get('registration_quality'), '{:.2f}')}, scale "
            f"{_num(rec.get('registration_scale'), '{:.3f}')}, rotation {_num(rec.get('registration_rotation_deg'), '{:+.1f}')}°")
        parts.append(
            "<table><tbody>"
            f"<tr><th>total area</th><td>{_num(rec.get('baseline_total_mm2'))} → {_num(rec.get('followup_total_mm2'))} mm² "
            f"({_num(rec.get('area_change_mm2'), '{:+.1f}')} mm², {_num(rec.get('area_change_pct'), '{:+.1f}')} %; "
            f"anatomical {_num(rec.get('area_change_pct_anatomical'), '{:+.1f}')} %)</td></tr>"
            f"<tr><th>lesions</th><td>{_num(rec.get('baseline_lesions'), '{:.0f}')} → "
            f"{_num(rec.get('followup_lesions'), '{:.0f}')} ({_num(rec.get('lesions_vanished'), '{:.0f}')} vanished, "
            f"{_num(rec.get('lesions_new'), '{:.0f}')} new)</td></tr>"
            f"<tr><th>registration</th><td>{_e(reg)}</td></tr>"
            f"<tr><th>interval</th><td>{_num(rec.get('interval_days'), '{:.0f}')} days</td></tr>"
            f"<tr><th>flags</th><td class=\"flags\">{_e(rec.get('flags'))}</td></tr>"
            "</tbody></table>"
        )
        sub = by_pair.get(pid)
        if sub is not None and len(sub):
            parts.append(_table(sub, _LESIONS))
        parts.append("</section>")


def build_report(out: Path, tables: dict[str, pd.DataFrame], settings: dict[str, Any], *, threads: int = 1) -> str:
    """The HTML text of ``report.html`` from the study's tables (pictures read from ``out``).

    ``threads`` > 1 re-encodes the pair pictures in that many threads (OpenCV releases the GIL),
    while the waterfall is drawn: on a 100-pair study, most of the report's time.
    """
    changes = tables["changes"]
    lchanges = tables["lesion_changes"]
    measurements = tables["measurements"]
    groups = tables["groups"]
    errors = tables["errors"]
    comp = settings.get("comparison", {})
    lo, hi = comp.get("partial_pct", -25.0), comp.get("progression_pct", 25.0)

    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>calcimeasure study report</title>"
             f"<style>{_CSS}</style></head><body>"]
    parts.append("<h1>calcimeasure study report</h1>")
    counts = changes["response"].value_counts().to_dict() if len(changes) else {}
    resp_text = ", ".join(f"{k}: {v}" for k, v in counts.items()) or "none"
    parts.append(
        f'<p class="muted">calcimeasure {_e(settings.get("calcimeasure_version"))} · created '
        f'{_e(settings.get("created"))} · {_e(settings.get("elapsed_s"))} s'
        f'{" · INTERRUPTED: run again with --resume" if settings.get("interrupted") else ""}</p>'
        f"<p>{len(measurements)} film(s) measured, {len(errors)} error(s); {len(changes)} pair(s) compared "
        f"(responses — {_e(resp_text)}); "
        f"{int((groups['group'].isna()).sum()) if len(groups) else 0} film(s) in no pair. "
        f"Response bands: partial ≤ {_e(lo)} %, progression ≥ +{_e(hi)} %, complete when nothing is left on the "
        f"follow-up. Patients are shown by their pseudonymous key only.</p>"
    )

    records = changes.to_dict(orient="records")
    paths = [out / r["side_by_side"] if isinstance(r.get("side_by_side"), str) and r["side_by_side"] else None
             for r in records]

    def jpeg(path: Path | None) -> bytes | None:
        return _jpeg_of(path) if path is not None else None

    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 and len(paths) > 1 else None
    try:
        # Pictures are re-encoded in the pool while the waterfall is drawn; consumed in order below.
        jpegs = pool.map(jpeg, paths) if pool is not None else map(jpeg, paths)
        parts.append("<h2>Waterfall</h2>")
        png = waterfall_png(changes, lo, hi) if len(changes) else None
        _append_pairs(parts, changes, records, lchanges, jpegs, png)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


    parts.append("<h2>Films in no pair</h2>")
    if len(groups):
        alone = groups[groups["group"].isna()]
    else:
        alone = groups
    if len(alone):
        parts.append(_table(alone, [("file", "file", ""), ("role", "role", ""), ("reason", "reason", ""),
                                    ("patient_key", "patient key", ""), ("body_part", "region", ""),
                                    ("timepoint", "date", "")], table_id="unpaired"))
    else:
        parts.append("<p>None: every measured film is in a compared group.</p>")

    parts.append("<h2>Errors</h2>")
    if len(errors):
        parts.append(_table(errors, [("file", "file", ""), ("stage", "stage", ""), ("pair_id", "pair", ""),
                                     ("error", "error", ""), ("reason", "reason", "")], table_id="errors"))
    else:
        parts.append("<p>None.</p>")

    parts.append("<h2>Parameters</h2>")
    shown = {k: v for k, v in settings.items() if k not in ("elapsed_s", "interrupted")}
    parts.append(f"<pre>{_e(json.dumps(shown, indent=2, default=str))}</pre>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>\n")
    return "".join(parts)
