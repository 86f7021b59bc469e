"""Shared test fixtures: the committed test data and the optional real third-party models."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTDATA = REPO / "testdata"
# Real third-party checkpoints with ground truth (not part of the repository); tests skip without them.
REAL_MODELS = Path(os.environ.get("CKPTSCAN_REAL_MODELS", REPO.parent / "shared" / "real-models"))


def real_manifest() -> dict[str, Any] | None:
    manifest = REAL_MODELS / "MANIFEST.json"
    if not manifest.is_file():
        return None
    data: dict[str, Any] = json.loads(manifest.read_text())
    return data


def real_entries(*formats: str) -> list[Any]:
    """pytest params for the manifest entries of the given formats (empty when absent)."""
    manifest = real_manifest()
    if manifest is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{REAL_MODELS} not present"))]
    entries = [e for e in manifest["files"] if e["format"] in formats]
    return [pytest.param(e, id=e["path"]) for e in entries]


@pytest.fixture
def testdata() -> Path:
    return TESTDATA


@pytest.fixture
def real_models() -> Path:
    if not (REAL_MODELS / "MANIFEST.json").is_file():
        pytest.skip(f"{REAL_MODELS} not present")
    return REAL_MODELS
