"""Fuzz fixtures: the gateway's own fixtures (real embedder, matcher on real Postgres, real Redis), imported so
`tests/fuzz` needs no second copy of them, plus a sender that runs schemathesis cases on the session loop."""

from __future__ import annotations

import asyncio

import pytest

from tests.gateway.conftest import (  # noqa: F401 - fixtures are found by name
    admin,
    embedder_app,
    faces,
    gateway,
    matcher_app,
    new_tenant,
    redis_server,
)


@pytest.fixture(scope="session")
async def session_loop() -> asyncio.AbstractEventLoop:
    """The loop that owns the apps' engines and Redis clients: cases are sent on it, never on a second one."""
    return asyncio.get_running_loop()
