"""Postgres unreachable is a 503 with Retry-After from both services that use it, never a 500 and never a hang.

The services run in process against a real libpq connection to a socket where no server listens (what the
gateway and matcher see while Postgres is down or restarting), or to a TCP port that accepts and never answers
(a host gone, a frozen server); the fault suite covers the real kill.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from collections.abc import Iterator

import httpx
import pytest

from services.gateway.app import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from services.matcher.app import create_app as create_matcher
from services.matcher.settings import MatcherSettings
from tests.conftest import MATCHER_HEADERS

pytestmark = pytest.mark.faults


@pytest.fixture
def silent_db_url() -> Iterator[str]:
    """A TCP port whose kernel completes the handshake, but nothing ever answers the startup message."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(64)
        yield f"postgresql://postgres@127.0.0.1:{srv.getsockname()[1]}/postgres"


@pytest.fixture
def dead_db_url() -> str:
    return f"postgresql://postgres@/postgres?host={tempfile.mkdtemp(prefix='fg-nopg-')}&connect_timeout=2"


async def test_gateway_answers_503_while_the_database_is_down(dead_db_url: str) -> None:
    settings = GatewaySettings(
        database_url=dead_db_url, redis_url="redis://127.0.0.1:1/0", retry_after_s=7, bootstrap_admin_key=None
    )
    app = create_gateway(settings)
    # it starts anyway: readiness reports the database until it is back
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://gw") as gw:
        r = await gw.get("/v1/events", headers={"Authorization": "Bearer fg_some-key"})
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "7"
        assert r.json()["code"] == "dependency_unavailable"
        assert r.json()["errors"] == [{"dependency": "database"}]
        r = await gw.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["database"].startswith("error"), r.text


async def test_matcher_answers_503_while_the_database_is_down(dead_db_url: str) -> None:
    app = create_matcher(MatcherSettings(database_url=dead_db_url))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://m", headers=MATCHER_HEADERS) as m,
    ):
        r = await m.get("/v1/galleries/8d7f1f4e-5b7e-4d4a-9a39-1f0c6f2b9c11")
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "database_unavailable" and int(r.headers["retry-after"]) > 0


async def test_a_silent_database_is_a_503_within_the_connect_timeout(silent_db_url: str) -> None:
    settings = GatewaySettings(database_url=silent_db_url, redis_url="redis://127.0.0.1:1/0", bootstrap_admin_key=None)
    app = create_gateway(settings)
    transport = httpx.ASGITransport(app=app)  # in process: no client timeout would end a hang, hence the bound
    async with (
        asyncio.timeout(30),
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gw") as gw,
    ):
        started = time.monotonic()
        r = await gw.get("/v1/events", headers={"Authorization": "Bearer fg_some-key"})
        assert r.status_code == 503 and r.json()["code"] == "dependency_unavailable", r.text
        assert time.monotonic() - started < 10  # libpq's connect_timeout (3 s), not forever
