"""EmbedderClient against the real app, and its error mapping."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from services.common.errors import PayloadTooLarge, ServiceUnavailable, Unprocessable, UnsupportedMediaType
from services.contracts.embedder import QualityProfile
from services.contracts.models import DEFAULT_MODEL_ID, MODELS
from services.embedder.client import EmbedderClient
from tests.conftest import EMBEDDER_HEADERS

DEFAULT_MODEL = MODELS[DEFAULT_MODEL_ID]


@pytest.fixture
async def client(embedder_app: FastAPI):  # type: ignore[no-untyped-def]
    async with EmbedderClient(
        "http://embedder", transport=httpx.ASGITransport(app=embedder_app), headers=EMBEDDER_HEADERS
    ) as c:
        yield c


async def test_embed_and_model(client: EmbedderClient, faces_dir: Path) -> None:
    res = await client.embed((faces_dir / "dev/Madonna/2.jpg").read_bytes(), "image/jpeg", QualityProfile.ENROL, 1)
    assert res.model.id == DEFAULT_MODEL.id
    assert len(res.faces) == 1 and len(res.faces[0].embedding) == DEFAULT_MODEL.dim
    assert (await client.model()).dim == DEFAULT_MODEL.dim
    assert await client.ready()


async def test_errors_map_to_facegate_errors(client: EmbedderClient) -> None:
    with pytest.raises(Unprocessable) as err:
        await client.embed(b"not an image")
    assert err.value.error_code == "invalid_image"
    with pytest.raises(UnsupportedMediaType):
        await client.embed(b"x", content_type="text/plain")
    with pytest.raises(PayloadTooLarge) as too_big:
        await client.embed(b"\0" * (10 * 1024 * 1024 + 1))
    assert too_big.value.error_code == "payload_too_large"


async def test_connect_errors_and_5xx_are_service_unavailable() -> None:
    async with EmbedderClient("http://127.0.0.1:9", timeout=2) as down:
        with pytest.raises(ServiceUnavailable):
            await down.embed(b"x")
        assert not await down.ready()

    def boom(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"code": "internal_error", "detail": "internal error"})

    async with EmbedderClient("http://e", transport=httpx.MockTransport(boom)) as broken:
        with pytest.raises(ServiceUnavailable) as err:
            await broken.embed(b"x")
        assert err.value.status_code == 503
