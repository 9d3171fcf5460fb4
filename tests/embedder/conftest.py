"""Session fixtures: one real pipeline (TF + MTCNN + FaceNet, ~10 s to load) and one app around it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from services.embedder.app import create_app
from services.embedder.pipeline import FacePipeline
from services.embedder.settings import EmbedderSettings
from tests.conftest import EMBEDDER_HEADERS


@pytest.fixture(scope="session")
def embedder_settings() -> EmbedderSettings:
    return EmbedderSettings()


@pytest.fixture(scope="session")
def pipeline(faces_dir: Path, embedder_settings: EmbedderSettings) -> FacePipeline:
    """The loaded and warmed pipeline, built once per session (skips with the photos absent)."""
    pipe = FacePipeline(embedder_settings)
    pipe.load()
    return pipe


@pytest.fixture(scope="session")
async def embedder_app(pipeline: FacePipeline) -> AsyncIterator[FastAPI]:
    """The embedder app with its lifespan running (batchers started), sharing the session pipeline."""
    app = create_app(pipeline=pipeline)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def embedder_http(embedder_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=embedder_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://embedder", headers=EMBEDDER_HEADERS) as client:
        yield client


@pytest.fixture(scope="session")
def dev_images(faces_dir: Path) -> list[tuple[str, Path]]:
    """(identity, path) of every dev photo."""
    return [(p.parent.name, p) for p in sorted((faces_dir / "dev").glob("*/*.jpg"))]
