"""Matcher ASGI app: `uvicorn services.matcher.app:create_app --factory --port 8002`.

The lifespan builds the write engine, its sessionmaker and the search pool; nothing is created at import time.
Schema changes are Alembic's job (`alembic upgrade head`); on start the app only checks that the schema exists
and says so in the log, and `/readyz` keeps reporting what is missing until it does.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from services.common.db import CONNECT_TIMEOUT_S, install_database_error_handler, libpq_url, sqlalchemy_url
from services.common.errors import install_error_handlers
from services.common.internal_auth import InternalAuthMiddleware, require_token
from services.common.observability import install_observability
from services.matcher import write_store
from services.matcher.api import ops_router, router
from services.matcher.galleries import GalleryCache
from services.matcher.resident import Residents
from services.matcher.searchpool import SearchPool
from services.matcher.settings import MatcherSettings

log = logging.getLogger("facegate.matcher")


def _session_options(settings: MatcherSettings) -> str:
    options = "-c jit=off"  # JIT compilation costs more than it saves on millisecond queries
    if settings.statement_timeout_ms:
        options += f" -c statement_timeout={settings.statement_timeout_ms}"
    return options


def build_engine(settings: MatcherSettings) -> AsyncEngine:
    """The write engine: one transaction per request."""
    return create_async_engine(
        sqlalchemy_url(settings.database_url),
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout_s,
        # No pre-ping: it costs a round trip per request; a connection broken by a database restart fails
        # one request, and the pools are then renewed (`renew_pools` in create_app; the gateway retries reads).
        pool_pre_ping=settings.pool_pre_ping,
        # No server-side prepared statements: a transaction-pooling proxy in front of Postgres cannot break us.
        connect_args={
            "options": _session_options(settings),
            "prepare_threshold": None,
            "connect_timeout": CONNECT_TIMEOUT_S,
        },
    )


def build_search_pool(settings: MatcherSettings) -> SearchPool:
    """The searches' autocommit connections, whose sessions carry the search settings (`search_store.search_on`)."""
    return SearchPool(
        libpq_url(settings.database_url),
        size=settings.pool_size + settings.max_overflow,
        timeout_s=settings.pool_timeout_s,
        options=_session_options(settings),
    )


def create_app(settings: MatcherSettings | None = None) -> FastAPI:
    settings = settings or MatcherSettings()  # type: ignore[call-arg]  # database_url comes from the env
    token = require_token(settings.internal_token, "FACEGATE_MATCHER_INTERNAL_TOKEN")  # never starts open

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = build_engine(settings)
        search_pool = build_search_pool(settings)
        app.state.settings = settings
        app.state.engine = engine
        app.state.search_pool = search_pool
        app.state.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        app.state.residents = Residents(settings)
        app.state.gallery_cache = GalleryCache()  # what searches know of each gallery, for a few seconds
        try:
            async with app.state.sessionmaker() as session:
                missing = await write_store.missing_schema(session)
            if missing:
                log.warning("matcher schema incomplete (%s): run `alembic upgrade head`", ", ".join(missing))
        except Exception as exc:  # start anyway: readiness reports the database until it is reachable
            log.warning("database not reachable at start: %s", type(exc).__name__)
        try:
            yield
        finally:
            await app.state.residents.close()
            await search_pool.close()
            await engine.dispose()

    app = FastAPI(title="facegate matcher", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)

    async def renew_pools() -> None:
        # After a database restart every pooled connection would fail one request (the search path's
        # driver-level errors do not invalidate SQLAlchemy's pool). Drop them all at the first lost one instead.
        await app.state.search_pool.renew()
        await app.state.engine.dispose()

    # the database down: 503, which callers retry
    install_database_error_handler(app, retry_after_s=2, on_lost_connection=renew_pools)
    app.add_middleware(InternalAuthMiddleware, token=token)  # inside observability: refusals are counted
    install_observability(app, service="matcher")
    app.include_router(router)
    app.include_router(ops_router)
    return app
