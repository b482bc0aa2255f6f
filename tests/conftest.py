"""Shared pytest fixtures for calcimeasure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = Path(__file__).resolve().parent / "data"


def shared_corpus_dir() -> Path | None:
    """The developers' shared real-DICOM corpus, if this checkout has it."""
    env = os.environ.get("CALCIMEASURE_CORPUS")
    candidates = [Path(env)] if env else []
    candidates.append(ROOT.parent / "shared" / "real_dicom")
    for c in candidates:
        if (c / "MANIFEST.tsv").is_file():
            return c
    return None


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    d = shared_corpus_dir()
    if d is None:
        pytest.skip("shared real-DICOM corpus (../shared/real_dicom) not present in this checkout")
    return d


@pytest.fixture(scope="session")
def test_data() -> Path:
    return TEST_DATA
