"""Fixtures shared by every test package: where the face photos are, and the real Postgres."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FACES_ENV = "FACEGATE_FACES_DIR"


def faces_root() -> Path:
    return Path(os.environ.get(FACES_ENV, REPO.parent / "shared" / "faces"))


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    """`../shared/faces` (override with FACEGATE_FACES_DIR); photos are not ours to commit."""
    root = faces_root()
    if not (root / "dev").is_dir():
        pytest.skip(f"face photos not found at {root} (set {FACES_ENV} to the folder holding dev/, noface/, group/)")
    return root
