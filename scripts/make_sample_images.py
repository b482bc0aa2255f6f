#!/usr/bin/env python3
"""Regenerate sample_images/ (same as ``python -m calcimeasure.phantom --out sample_images``)."""

import sys
from pathlib import Path

from calcimeasure.phantom.__main__ import main

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[1] / "sample_images")
    raise SystemExit(main(["samples", "--out", out]))
