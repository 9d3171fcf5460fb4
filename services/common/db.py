"""Database URL handling shared by the services that own tables (matcher, gateway) and by migrations, and the
mapping of an unavailable database to a clean 503."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

log = logging.getLogger("facegate.db")

# libpq's connect_timeout for every service engine: without it a connection attempt to a Postgres that does not
# answer (host gone, server frozen) waits forever, and so does the request behind it. 2 s is libpq's minimum.
CONNECT_TIMEOUT_S = 3


class PoolExhausted(TimeoutError):
    """No pooled connection came free in time (a pool of our own; SQLAlchemy raises its TimeoutError)."""


def sqlalchemy_url(url: str) -> str:
    """Accept plain `postgresql://` URLs (pgserver, libpq style) and select the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url.split('://', 1)[0]}://...")


def libpq_url(url: str) -> str:
    """The same URL for psycopg itself (code that connects without SQLAlchemy)."""
    return "postgresql://" + sqlalchemy_url(url).removeprefix("postgresql+psycopg://")


def lost_connection(exc: BaseException) -> bool:
    """Whether a database error means the connection itself is gone (server killed, restarted, unreachable),
    as opposed to a statement that failed or timed out on a live one."""
    if getattr(exc, "connection_invalidated", False):
        return True
    state = getattr(getattr(exc, "orig", None) or exc, "sqlstate", None)
    return state is None or state.startswith(("08", "57P"))  # client-side, connection_exception, shutdowns


def install_database_error_handler(
    app: FastAPI,
    *,
    retry_after_s: int,
    code: str = "database_unavailable",
    errors: list[dict[str, Any]] | None = None,
    on_lost_connection: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """The database unreachable, restarting or timing out is a 503 with Retry-After, never a 500: the request
    did nothing and may be retried. Other database errors (integrity, programming) stay what they are.
    `on_lost_connection` runs when the connection was lost (e.g. to renew pools the error did not invalidate)."""
    import psycopg
    from sqlalchemy import exc as sa_exc

    from services.common.errors import error_response
    from services.contracts.errors import ErrorResponse

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", str(exc).splitlines()[0][:300])
        busy = isinstance(exc, (sa_exc.TimeoutError, PoolExhausted))  # a full pool, not a lost connection
        if on_lost_connection is not None and not busy and lost_connection(exc):
            await on_lost_connection()
        body = ErrorResponse(code=code, detail="the database is unavailable, try again later", errors=errors)
        return error_response(request, 503, body, {"Retry-After": str(retry_after_s)})

    # OperationalError: connection refused or lost, server starting up or shutting down, statement timeout;
    # InterfaceError: a connection already closed; TimeoutError, PoolExhausted: no pooled connection in time.
    # The psycopg classes are for code that talks to psycopg directly (SQLAlchemy does not wrap those).
    for cls in (
        sa_exc.OperationalError,
        sa_exc.InterfaceError,
        sa_exc.TimeoutError,
        PoolExhausted,
        psycopg.OperationalError,
        psycopg.InterfaceError,
    ):
        app.add_exception_handler(cls, handler)
