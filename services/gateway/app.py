"""Gateway ASGI app: `uvicorn services.gateway.app:create_app --factory --port 8000`.

The lifespan builds the engine, sessionmaker, Redis client and the embedder/matcher clients and puts them on
`app.state`; endpoints reach them through the dependencies in `deps.py`. On start, a bootstrap admin key is
created when no admin key exists (printed once), or from `FACEGATE_GATEWAY_BOOTSTRAP_ADMIN_KEY`; when the
database is not up yet, a background task keeps trying (`/readyz` only reports, it never writes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import redis.asyncio as aioredis
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from services.common.db import CONNECT_TIMEOUT_S, install_database_error_handler, sqlalchemy_url
from services.common.errors import install_error_handlers
from services.common.health import Health
from services.common.internal_auth import bearer, require_token
from services.common.observability import install_observability
from services.embedder.client import EmbedderClient
from services.gateway import multipart
from services.gateway.api import attendees, events, gate, imports, keys, liveness, web
from services.gateway.auth import ensure_bootstrap_admin
from services.gateway.bodylimit import BodyLimitMiddleware
from services.gateway.bodylimit import limits as body_limits
from services.gateway.cache import TemplateCache
from services.gateway.idempotency import purge_idempotency_keys
from services.gateway.imports import mark_interrupted
from services.gateway.redishealth import RedisHealth
from services.gateway.settings import GatewaySettings
from services.matcher.client import MatcherClient

log = logging.getLogger("facegate.gateway")


def build_engine(settings: GatewaySettings) -> AsyncEngine:
    return create_async_engine(
        sqlalchemy_url(settings.database_url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_timeout=5.0,
        pool_pre_ping=True,
        connect_args={"options": "-c jit=off -c statement_timeout=10000", "connect_timeout": CONNECT_TIMEOUT_S},
        # SQL parameters hold key hashes, names and ticket codes: keep them out of logs and of the error messages
        # that reach the unhandled-error log (tests/gateway/test_secrets_not_logged.py)
        hide_parameters=True,
    )


def build_redis(settings: GatewaySettings) -> Any:
    return aioredis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        retry_on_timeout=False,
    )


async def _bootstrap(app: FastAPI, settings: GatewaySettings) -> None:
    """Create the bootstrap admin key if there is no admin key yet (printed once); sets `app.state.bootstrapped`."""
    token = settings.bootstrap_admin_key.get_secret_value() if settings.bootstrap_admin_key else None
    try:
        created = await ensure_bootstrap_admin(app.state.sessionmaker, token=token)
    except IntegrityError:
        app.state.bootstrapped = True
        return  # another worker created it at the same moment
    except Exception as exc:
        log.warning("bootstrap admin key not checked yet (database not ready?): %r", exc)
        return  # _bootstrap_until_done tries again
    app.state.bootstrapped = True
    if created is not None:
        if token is None:
            # Printed once, on the first start with no admin key; only its hash is stored.
            print(f"facegate gateway: bootstrap admin key (shown once): {created}", flush=True)
        log.warning("bootstrap admin key created")


async def _bootstrap_until_done(app: FastAPI, settings: GatewaySettings, every_s: float = 2.0) -> None:
    """A start before the database is up checks the key once it is, in the background: a start-up step, so that
    /readyz only reports and never writes."""
    while not app.state.bootstrapped:
        await asyncio.sleep(every_s)
        await _bootstrap(app, settings)
        if not app.state.bootstrapped:
            retry = asyncio.create_task(_bootstrap_until_done(app, settings))
            app.state.jobs.add(retry)  # cancelled at shutdown with the import jobs
            retry.add_done_callback(app.state.jobs.discard)


def create_app(
    settings: GatewaySettings | None = None,
    *,
    embedder_transport: httpx.AsyncBaseTransport | None = None,
    matcher_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    settings = settings or GatewaySettings()
    # the gateway cannot work without them; better to fail at start than at the first gate decision
    require_token(settings.embedder_token, "FACEGATE_GATEWAY_EMBEDDER_TOKEN")
    require_token(settings.matcher_token, "FACEGATE_GATEWAY_MATCHER_TOKEN")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = build_engine(settings)
        redis = build_redis(settings)
        embedder = EmbedderClient(
            base_url=settings.embedder_url,
            transport=embedder_transport,
            timeout=settings.embedder_timeout_s,
            headers=bearer(settings.embedder_token),
            retry_after_s=settings.retry_after_s,
            stream_url=settings.embedder_stream_url,
        )
        matcher = MatcherClient(
            base_url=settings.matcher_url,
            transport=matcher_transport,
            timeout=settings.matcher_timeout_s,
            headers=bearer(settings.matcher_token),
            retry_after_s=settings.retry_after_s,
        )
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        app.state.redis = redis
        app.state.redis_health = RedisHealth(settings.redis_cooldown_s)  # the cache's and the limiter's
        app.state.template_cache = TemplateCache(
            redis, ttl_s=settings.template_cache_ttl_s, health=app.state.redis_health
        )
        app.state.embedder = embedder  # the typed clients, reached through deps.EmbedderDep / MatcherDep
        app.state.matcher = matcher
        app.state.jobs = set()
        app.state.bootstrapped = False
        await _bootstrap(app, settings)
        if not app.state.bootstrapped:
            retry = asyncio.create_task(_bootstrap_until_done(app, settings))
            app.state.jobs.add(retry)  # cancelled at shutdown with the import jobs
            retry.add_done_callback(app.state.jobs.discard)
        try:
            await mark_interrupted(app.state.sessionmaker)
            async with app.state.sessionmaker() as session, session.begin():
                await purge_idempotency_keys(session, older_than=timedelta(seconds=settings.idempotency_ttl_s))
        except Exception as exc:
            log.warning("start-up housekeeping skipped: %r", exc)
        try:
            yield
        finally:
            for task in list(app.state.jobs):
                task.cancel()
            if app.state.jobs:
                await asyncio.gather(*app.state.jobs, return_exceptions=True)
            await embedder.aclose()
            await matcher.aclose()
            await redis.aclose()
            await engine.dispose()

    app = FastAPI(title="facegate gateway", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    multipart.install()  # form text fields that are not valid UTF-8: 400, not mojibake
    # Postgres down is a dependency down like the others: 503 dependency_unavailable, never a 500.
    install_database_error_handler(
        app, retry_after_s=settings.retry_after_s, code="dependency_unavailable", errors=[{"dependency": "database"}]
    )
    app.add_middleware(
        BodyLimitMiddleware,
        limit_for=body_limits(settings),
        grace_s=settings.body_timeout_s,
        min_bytes_per_s=settings.body_min_bytes_per_s,
    )  # inside observability's request id
    install_observability(app, service="gateway")
    routers = (keys.router, events.router, attendees.router, imports.router, gate.router, liveness.router, web.router)
    for router in routers:
        app.include_router(router)
    app.include_router(_ops_router())
    return app


def _ops_router() -> APIRouter:
    router = APIRouter(tags=["ops"])

    @router.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok")

    @router.get("/readyz", response_model=Health, responses={503: {"model": Health, "description": "not ready"}})
    async def readyz(request: Request) -> JSONResponse:
        state = request.app.state
        checks = dict(
            zip(
                ("database", "redis", "embedder", "matcher"),
                await asyncio.gather(
                    _check_db(state.engine),
                    _check_redis(state.redis),
                    state.embedder.readiness(),
                    state.matcher.readiness(),
                ),
                strict=True,
            )
        )
        ready = all(v == "ok" for v in checks.values())
        body = Health(status="ok" if ready else "not_ready", checks=checks)
        return JSONResponse(status_code=200 if ready else 503, content=body.model_dump())

    return router


async def _check_db(engine: AsyncEngine) -> str:
    try:
        async with asyncio.timeout(2.0), engine.connect() as conn:
            await conn.execute(text("SELECT 1 FROM api_keys LIMIT 1"))
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}"


async def _check_redis(redis: Any) -> str:
    try:
        async with asyncio.timeout(1.0):
            await redis.ping()
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}"
