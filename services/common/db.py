"""Database URL handling shared by the services that own tables (matcher, gateway) and by migrations, and the
mapping of an unavailable database to a clean 503."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

log = logging.getLogger("facegate.db")


def sqlalchemy_url(url: str) -> str:
    """Accept plain `postgresql://` URLs (pgserver, libpq style) and select the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url.split('://', 1)[0]}://...")


def install_database_error_handler(
    app: FastAPI,
    *,
    retry_after_s: int,
    code: str = "database_unavailable",
    errors: list[dict[str, Any]] | None = None,
) -> None:
    """The database unreachable, restarting or timing out is a 503 with Retry-After, never a 500: the request
    did nothing and may be retried. Other database errors (integrity, programming) stay what they are."""
    from sqlalchemy import exc as sa_exc

    from services.common.errors import error_response
    from services.contracts.errors import ErrorResponse

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", str(exc).splitlines()[0][:300])
        body = ErrorResponse(code=code, detail="the database is unavailable, try again later", errors=errors)
        return error_response(request, 503, body, {"Retry-After": str(retry_after_s)})

    # OperationalError: connection refused or lost, server starting up or shutting down, statement timeout;
    # InterfaceError: a connection already closed; TimeoutError: no pooled connection in time.
    for cls in (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError):
        app.add_exception_handler(cls, handler)
