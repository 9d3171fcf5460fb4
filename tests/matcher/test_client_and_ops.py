"""MatcherClient against the real app (in-process and as a uvicorn process); readiness failure modes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from services.common.errors import DependencyUnavailable, NotFound, ServiceUnavailable
from services.common.observability import current_request_id
from services.contracts.matcher import (
    DistanceRequest,
    GalleryCreate,
    SearchRequest,
    TemplateIn,
    TemplatesCreate,
)
from services.matcher.client import MatcherClient
from tests.conftest import MATCHER_HEADERS
from tests.matcher.conftest import DIM, MODEL, running_app, unit

REPO = Path(__file__).resolve().parents[2]


def _templates(people: list[uuid.UUID], vecs: np.ndarray) -> TemplatesCreate:
    return TemplatesCreate(
        templates=[
            TemplateIn(attendee_id=p, model_id=MODEL, embedding=[float(x) for x in v])
            for p, v in zip(people, vecs, strict=True)
        ]
    )


def _search(v: np.ndarray, k: int) -> SearchRequest:
    return SearchRequest(model_id=MODEL, embedding=list(map(float, v)), k=k)


async def _exercise(mc: MatcherClient) -> None:
    event = uuid.uuid4()
    g = await mc.ensure_gallery(event, GalleryCreate(model_id=MODEL))
    assert g.model_id == MODEL and g.templates == 0
    people = [uuid.uuid4() for _ in range(5)]
    vecs = unit(np.random.default_rng(21), 5)
    token = current_request_id.set("test-req-1")  # forwarded by the client's hook, as in a gateway request
    try:
        created = await mc.add_templates(event, _templates(people, vecs))
    finally:
        current_request_id.reset(token)
    assert len(created.ids) == 5
    found = await mc.search(event, _search(vecs[3], 2))
    assert found.matches[0].attendee_id == people[3] and found.matches[0].distance < 1e-5
    d = await mc.distance(event, people[1], DistanceRequest(model_id=MODEL, embedding=list(map(float, vecs[1]))))
    assert d.templates == 1 and d.distance < 1e-5
    t = await mc.attendee_templates(event, people[2])
    assert t.templates[0].id == created.ids[2]
    assert (await mc.gallery(event)).templates == 5
    assert (await mc.delete_attendee(event, people[2])).deleted == 1

    with pytest.raises(NotFound) as nf:
        await mc.attendee_templates(event, people[2])
    assert nf.value.error_code == "attendee_not_found"
    # a 4xx other than 404 means the two sides disagree about the contract: a fault (503), never an answer
    with pytest.raises(DependencyUnavailable) as cf:
        await mc.ensure_gallery(event, GalleryCreate(model_id="dlib-resnet-128"))
    assert cf.value.reason == "model_mismatch" and cf.value.error_code == "dependency_unavailable"
    with pytest.raises(DependencyUnavailable) as un:
        await mc.search(event, SearchRequest(model_id=MODEL, embedding=[0.5] * 128))
    assert un.value.reason == "dimension_mismatch"
    assert (await mc.drop_gallery(event)).deleted == 4
    with pytest.raises(NotFound):
        await mc.gallery(event)


async def test_client_against_app(app_client: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, _ = app_client
    async with MatcherClient(transport=httpx.ASGITransport(app=app), timeout=30, headers=MATCHER_HEADERS) as mc:
        await _exercise(mc)


async def test_client_maps_transport_failures() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with MatcherClient(f"http://127.0.0.1:{port}", timeout=2) as mc:
        with pytest.raises(ServiceUnavailable) as exc:
            await mc.gallery(uuid.uuid4())
        assert exc.value.error_code == "dependency_unavailable" and exc.value.reason == "matcher_unavailable"
        assert exc.value.headers == {"Retry-After": "5"}

    def boom(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"code": "internal_error", "detail": "internal error"})

    async with MatcherClient(transport=httpx.MockTransport(boom)) as mc:
        with pytest.raises(ServiceUnavailable):
            await mc.gallery(uuid.uuid4())


async def test_readyz_reports_unreachable_db_and_missing_migrations(pg_url: str) -> None:
    async with running_app("postgresql://postgres:@/postgres?host=/nonexistent-socket-dir") as (_, client):
        r = await client.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["database"].startswith("unreachable")
        assert (await client.get("/healthz")).status_code == 200  # alive, just not ready

    import psycopg

    name = f"fresh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        async with running_app(pg_url.replace("/postgres?", f"/{name}?")) as (_, client):
            r = await client.get("/readyz")
            assert r.status_code == 503
            assert "face_templates" in r.json()["checks"]["schema"]
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


async def test_uvicorn_process(pg_url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "FACEGATE_MATCHER_DATABASE_URL": pg_url}
    cmd = [sys.executable, "-m", "uvicorn", "services.matcher.app:create_app", "--factory", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(base_url=base) as http:
            while True:
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "matcher did not become ready"
                time.sleep(0.2)
        async with MatcherClient(base, timeout=30, headers=MATCHER_HEADERS) as mc:
            await _exercise(mc)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_search_in_exact_and_hnsw_modes_agrees_on_small_gallery(pg_url: str) -> None:
    """The mode switch is by template count; an HNSW-mode app sees the same answers on a tiny gallery.
    (pgvector's HNSW here: resident copies are off; tests/matcher/test_resident.py covers them.)"""
    people = [uuid.uuid4() for _ in range(30)]
    vecs = unit(np.random.default_rng(22), 30, DIM)
    event = uuid.uuid4()
    async with (
        running_app(pg_url) as (app, _),
        running_app(pg_url, exact_max_templates=10, resident_enabled=False) as (happ, _),
        MatcherClient(transport=httpx.ASGITransport(app=app), headers=MATCHER_HEADERS) as mc,
        MatcherClient(transport=httpx.ASGITransport(app=happ), headers=MATCHER_HEADERS) as hc,
    ):
        await mc.ensure_gallery(event, GalleryCreate(model_id=MODEL))
        await mc.add_templates(event, _templates(people, vecs))
        assert (await mc.gallery(event)).search_mode == "exact"
        assert (await hc.gallery(event)).search_mode == "hnsw"
        for v in vecs[:5]:
            a = await mc.search(event, _search(v, 5))
            b = await hc.search(event, _search(v, 5))
            assert (a.mode, b.mode) == ("exact", "hnsw")
            assert [m.attendee_id for m in a.matches] == [m.attendee_id for m in b.matches]
        await mc.drop_gallery(event)
