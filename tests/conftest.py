"""Fixtures shared by every test package: where the face photos are, and the real Postgres."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
FACES_ENV = "FACEGATE_FACES_DIR"

# The internal services refuse to start without their credential (services/common/internal_auth.py); every app
# the tests build reads these from the environment, and test clients of the internal services send them. Two
# different values, as in a deployment: one service's token must not open the other.
EMBEDDER_TOKEN = "test-embedder-token-" + "e" * 24
MATCHER_TOKEN = "test-matcher-token-" + "m" * 24
for _var, _value in (
    ("FACEGATE_EMBEDDER_INTERNAL_TOKEN", EMBEDDER_TOKEN),
    ("FACEGATE_MATCHER_INTERNAL_TOKEN", MATCHER_TOKEN),
    ("FACEGATE_GATEWAY_EMBEDDER_TOKEN", EMBEDDER_TOKEN),
    ("FACEGATE_GATEWAY_MATCHER_TOKEN", MATCHER_TOKEN),
):
    os.environ[_var] = _value
EMBEDDER_HEADERS = {"Authorization": f"Bearer {EMBEDDER_TOKEN}"}
MATCHER_HEADERS = {"Authorization": f"Bearer {MATCHER_TOKEN}"}


# Set by CI (.ci/run): what a developer's machine may lack and skip over, CI must have. Without them about two
# thirds of the suite (everything on real photos) or all of tests/browser would skip and CI still be green.
REQUIRE_FACES = "FACEGATE_REQUIRE_FACES"
REQUIRE_BROWSER = "FACEGATE_REQUIRE_BROWSER"


def required(flag: str) -> bool:
    return os.environ.get(flag, "").strip() not in ("", "0")


def skip_unless_required(flag: str, reason: str) -> NoReturn:
    """Skip with `reason`, or fail with it where `flag` says this must not be skipped (CI)."""
    if required(flag):
        pytest.fail(f"{reason} [{flag}=1: these tests must run here, not skip]", pytrace=False)
    pytest.skip(reason)


def faces_root() -> Path:
    return Path(os.environ.get(FACES_ENV, REPO.parent / "shared" / "faces"))


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    """`../shared/faces` (override with FACEGATE_FACES_DIR); photos are not ours to commit."""
    root = faces_root()
    if not (root / "dev").is_dir():
        skip_unless_required(
            REQUIRE_FACES,
            f"face photos not found at {root} (set {FACES_ENV} to the folder holding dev/, noface/, group/)",
        )
    return root


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL 16 + pgvector (pgserver) in a temp dir, migrated to head; yields its libpq URL."""
    import pgserver
    from alembic import command
    from alembic.config import Config

    # Unix socket paths are limited to ~100 bytes, so keep the data dir short rather than under pytest's tmp.
    datadir = Path(tempfile.mkdtemp(prefix="fg-pg-"))
    server = pgserver.get_server(datadir, cleanup_mode="stop")
    url = server.get_uri()
    previous = os.environ.get("FACEGATE_DATABASE_URL")
    os.environ["FACEGATE_DATABASE_URL"] = url
    try:
        command.upgrade(Config(str(REPO / "alembic.ini")), "head")
    finally:
        if previous is None:
            os.environ.pop("FACEGATE_DATABASE_URL", None)
        else:
            os.environ["FACEGATE_DATABASE_URL"] = previous
    try:
        yield url
    finally:
        server.cleanup()
        shutil.rmtree(datadir, ignore_errors=True)
