"""The embedder's ASGI app.

    .venv/bin/uvicorn services.embedder.app:create_app --factory --port 8001

Models load in the background after start-up, so /healthz answers at once and /readyz says 503 (with the
stage: loading / warming / failed) until both networks are loaded and warmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from services.common.errors import install_error_handlers
from services.common.internal_auth import InternalAuthMiddleware, require_token
from services.common.observability import install_observability
from services.embedder.api import router
from services.embedder.liveness import Streams
from services.embedder.pipeline import FacePipeline
from services.embedder.settings import EmbedderSettings

log = logging.getLogger("facegate.embedder")


def create_app(settings: EmbedderSettings | None = None, *, pipeline: FacePipeline | None = None) -> FastAPI:
    """Build the app. A `pipeline` that is already loaded (tests, in-process tools) is reused as is."""
    settings = settings or (pipeline.settings if pipeline else EmbedderSettings())
    token = require_token(settings.internal_token, "FACEGATE_EMBEDDER_INTERNAL_TOKEN")  # never starts open

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pipe = pipeline or FacePipeline(settings)
        app.state.pipeline = pipe
        rules = settings.liveness
        app.state.streams = Streams(pipe, rules.stream_ttl_s, rules.max_streams, rules.max_stream_bytes)
        pipe.start_batchers()
        loader: asyncio.Task[None] | None = None
        if not pipe.ready:
            if settings.load_in_background:
                loader = asyncio.create_task(_load(pipe), name="embedder-load")
            else:
                await asyncio.to_thread(pipe.load)
        try:
            yield
        finally:
            if loader is not None and not loader.done():
                loader.cancel()  # the loading thread itself finishes on its own
            await pipe.aclose()

    app = FastAPI(title="facegate embedder", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(InternalAuthMiddleware, token=token)  # inside observability: refusals are counted
    install_observability(app, service="embedder")
    app.include_router(router)
    return app


async def _load(pipe: FacePipeline) -> None:
    try:
        await asyncio.to_thread(pipe.load)
    except Exception:
        # /readyz reports pipe.state ("failed: ...") and stays 503; the process stays up for diagnosis.
        log.exception("embedder failed to load its models")
