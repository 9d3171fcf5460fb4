"""Matcher test fixtures: the real app (lifespan run) on the session's Postgres, over ASGI."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from services.matcher.app import create_app
from services.matcher.settings import MatcherSettings
from tests.conftest import MATCHER_HEADERS

MODEL = "facenet-casia-512"
DIM = 512


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def with_means(owners: list[uuid.UUID], vecs: np.ndarray) -> tuple[list[uuid.UUID], np.ndarray]:
    """The gallery the matcher holds for these photo templates (unit rows): plus, for every attendee with 2+, the
    L2-normalised mean of their photos (`mean_templates`, on by default). What a brute-force reference searches."""
    rows: dict[uuid.UUID, list[int]] = {}
    for i, owner in enumerate(owners):
        rows.setdefault(owner, []).append(i)
    extra_owners, extra = [], []
    for owner, idx in rows.items():
        if len(idx) >= 2:
            mean = vecs[idx].astype(np.float64).mean(axis=0)
            extra_owners.append(owner)
            extra.append(mean / np.linalg.norm(mean))
    if not extra:
        return list(owners), vecs
    return list(owners) + extra_owners, np.vstack([vecs, np.asarray(extra, dtype=np.float32)])


def template(attendee: uuid.UUID, vec: np.ndarray, model: str = MODEL, **kw: Any) -> dict[str, Any]:
    return {"attendee_id": str(attendee), "model_id": model, "embedding": [float(v) for v in vec], **kw}


@asynccontextmanager
async def running_app(pg_url: str, **overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(MatcherSettings(database_url=pg_url, **overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://matcher", timeout=60, headers=MATCHER_HEADERS
        ) as client:
            yield app, client


@pytest.fixture(scope="session")
async def app_client(pg_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with running_app(pg_url) as pair:
        yield pair


@pytest.fixture
def client(app_client: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app_client[1]


@pytest.fixture
def new_gallery(client: httpx.AsyncClient) -> Callable[..., Any]:
    async def make(model: str = MODEL) -> uuid.UUID:
        event = uuid.uuid4()
        r = await client.put(f"/v1/galleries/{event}", json={"model_id": model})
        assert r.status_code == 200, r.text
        return event

    return make
