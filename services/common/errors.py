"""One error model for all services (after Polar's exceptions + exception_handlers).

Domain code raises a `FacegateError` subclass; the handlers render every error, including FastAPI's own
validation and routing errors, as `services.contracts.errors.ErrorResponse`. Unexpected exceptions become a
generic 500 without internals; nothing else is turned into a 4xx behind the code's back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from services.contracts.errors import ErrorResponse

log = logging.getLogger("facegate.errors")


class FacegateError(Exception):
    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.error_code = code or self.code
        self.headers = headers
        self.errors = errors


class BadRequest(FacegateError):
    status_code = 400
    code = "bad_request"


class NotFound(FacegateError):
    status_code = 404
    code = "not_found"


class Conflict(FacegateError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(FacegateError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(FacegateError):
    status_code = 415
    code = "unsupported_media_type"


class Unprocessable(FacegateError):
    status_code = 422
    code = "unprocessable"


class ServiceUnavailable(FacegateError):
    status_code = 503
    code = "service_unavailable"


class DependencyUnavailable(ServiceUnavailable):
    """A service this one depends on could not answer: try again later (503 + Retry-After). Never a decision.

    Here, not in the gateway, because the typed clients (`services/*/client.py`, through `common/http.py`) raise
    it themselves and clients may import only `contracts` and `common`; the caller's own error handler renders it
    like any `FacegateError`, with the Retry-After its settings gave the client. `reason` keeps what went wrong
    (`matcher_timeout`, the downstream's own code, ...) for logs and metrics; the answer only says which
    dependency, so a caller never learns another service's internals.
    """

    code = "dependency_unavailable"

    def __init__(
        self, dependency: str, retry_after_s: int, detail: str | None = None, *, reason: str | None = None
    ) -> None:
        super().__init__(
            detail or f"{dependency} is unavailable, try again later",
            headers={"Retry-After": str(retry_after_s)},
            errors=[{"dependency": dependency}],
        )
        self.dependency = dependency
        self.reason = reason or f"{dependency}_unavailable"


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",  # the body did not arrive in time (the gateway's slow-body protection)
    409: "conflict",  # e.g. a ticket code already registered for the event (schemathesis: it was undocumented)
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "service_unavailable",
}

# For OpenAPI: `responses=ERROR_RESPONSES` on routers lists the envelope for the common statuses.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": code} for status, code in _STATUS_CODES.items()
}


# An object's repr (`<_io.BytesIO object at 0x7f...>`) in an error detail tells a prober which library parsed its
# input and leaks memory layout (ASLR); libraries put them in their exception messages. Scrubbed from every answer.
_OBJECT_REPR = re.compile(r"<[^<>]{0,200}? at 0x[0-9a-fA-F]+>")
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")


def redact_reprs(text: str) -> str:
    return _ADDRESS.sub("0x...", _OBJECT_REPR.sub("<object>", text))


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_reprs(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_response(request: Request, status: int, body: ErrorResponse, headers: dict[str, str] | None = None):
    body.request_id = _request_id(request)
    content = _redacted(body.model_dump(exclude_none=True))
    return JSONResponse(status_code=status, content=content, headers=headers)


def _leaf_routes(routes: list[Any]) -> Iterator[Any]:
    """The routes that serve requests: FastAPI (0.12x+) wraps each included router in one route object whose own
    `methods` is empty, so the walk goes into `original_router`."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _leaf_routes(inner.routes)
        else:
            yield route


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path. Starlette's 405 names only the first route that matched the
    path, but FastAPI registers one route per method, so `Allow` must be the union (RFC 9110)."""
    methods: set[str] = set()
    scope = {"type": "http", "path": request.scope["path"], "method": request.scope.get("method", "GET")}
    for route in _leaf_routes(request.app.routes):
        match, _ = route.matches(scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FacegateError)
    async def _facegate(request: Request, exc: FacegateError) -> JSONResponse:
        body = ErrorResponse(code=exc.error_code, detail=exc.detail, errors=exc.errors)
        return error_response(request, exc.status_code, body, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        body = ErrorResponse(code="validation_error", detail="request is not valid", errors=errors)
        return error_response(request, 422, body)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        body = ErrorResponse(code=code, detail=str(exc.detail))
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        return error_response(request, exc.status_code, body, headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"request_id": _request_id(request)})
        body = ErrorResponse(code="internal_error", detail="internal error")
        return error_response(request, 500, body)
