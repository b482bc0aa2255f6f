#!/usr/bin/env python3
"""Look at a study's report.html in headless Chromium: it renders, and its images load.

    python scripts/check_report.py results/sample_images/report.html --screenshot docs/report_screenshot.png

1. ``chromium --headless --dump-dom`` after the page's load: the report's own script marks
   ``<body data-images="loaded">`` once every ``<img>`` has decoded (``broken`` if one did
   not); the DOM must say ``loaded`` with as many images decoded as there are.
2. ``chromium --headless --screenshot`` at 1280 x 2000: the picture must not be blank
   (several grey levels, a share of non-background pixels).

Prints one JSON line with the findings; exit 0 when both checks pass, 1 when one fails,
3 when no Chromium is installed (``make chromium`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium(explicit: str | None = None) -> str | None:
    if explicit:
        return explicit if Path(explicit).exists() or shutil.which(explicit) else None
    env = os.environ.get("CHROMIUM")
    if env and (Path(env).exists() or shutil.which(env)):
        return env
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(chromium: str, args: list[str], profile: str, timeout: float) -> subprocess.CompletedProcess:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
           f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def check(report: Path, screenshot: Path | None, chromium: str, timeout: float = 120.0) -> dict:
    url = report.resolve().as_uri()
    found: dict = {"report": str(report), "chromium": chromium}
    with tempfile.TemporaryDirectory(prefix="calcimeasure-chromium-") as profile:
        dom = _run(chromium, ["--virtual-time-budget=15000", "--dump-dom", url], profile, timeout)
        body = re.search(r"<body([^>]*)>", dom.stdout)
        attrs = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', body.group(1))) if body else {}
        found["images"] = attrs.get("data-images")
        found["images_total"] = int(attrs.get("data-images-total", -1))
        found["images_ok"] = int(attrs.get("data-images-ok", -1))
        found["img_tags"] = len(re.findall(r"<img\b", dom.stdout))
        found["dom_ok"] = (found["images"] == "loaded" and found["images_total"] == found["images_ok"]
                           == found["img_tags"] and found["img_tags"] > 0)
        if not found["dom_ok"] and dom.returncode != 0:
            found["dom_stderr"] = dom.stderr[-2000:]
        shot = Path(screenshot) if screenshot else Path(profile) / "shot.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        tmp_shot = shot.with_name(f".{shot.name}.tmp.png")
        res = _run(chromium, ["--hide-scrollbars", "--window-size=1280,2000", "--virtual-time-budget=15000",
                              f"--screenshot={tmp_shot}", url], profile, timeout)
        found["screenshot"] = str(shot) if screenshot else None
        found.update(_blank_check(tmp_shot))
        if tmp_shot.exists():
            os.replace(tmp_shot, shot)
        if not found["screenshot_ok"]:
            found["screenshot_stderr"] = res.stderr[-2000:]
    found["ok"] = bool(found["dom_ok"] and found["screenshot_ok"])
    return found


def _blank_check(path: Path) -> dict:
    """Whether a screenshot shows something: several grey levels and >= 2 % non-background pixels."""
    if not path.exists() or path.stat().st_size == 0:
        return {"screenshot_ok": False, "screenshot_reason": "no screenshot written"}
    from PIL import Image
    import numpy as np

    img = np.asarray(Image.open(path).convert("L"), dtype=np.uint8)
    values, counts = np.unique(img, return_counts=True)
    background = values[np.argmax(counts)]
    content = float((np.abs(img.astype(int) - int(background)) > 16).mean())
    ok = img.shape[0] >= 1000 and len(values) >= 32 and content >= 0.02
    return {"screenshot_ok": bool(ok), "screenshot_size": [int(img.shape[1]), int(img.shape[0])],
            "screenshot_grey_levels": int(len(values)), "screenshot_content_fraction": round(content, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="report.html of a study")
    ap.add_argument("--screenshot", type=Path, help="where to save the screenshot (PNG)")
    ap.add_argument("--chromium", help="Chromium executable (default: $CHROMIUM, then chromium on PATH)")
    args = ap.parse_args(argv)
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("check_report: no Chromium found (looked for $CHROMIUM, " + ", ".join(CANDIDATES) + "); "
              "install it with 'make chromium' (Debian: apt-get install chromium)", file=sys.stderr)
        return 3
    if not args.report.is_file():
        print(f"check_report: {args.report}: no such file", file=sys.stderr)
        return 2
    found = check(args.report, args.screenshot, chromium)
    print(json.dumps(found))
    return 0 if found["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
