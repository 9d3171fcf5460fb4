"""Request ids and Prometheus HTTP metrics, as pure ASGI middleware.

Metrics are labelled by the route template (`/v1/galleries/{event_id}`), never the raw path, so ids do not
explode label cardinality. The request id comes from `X-Request-ID` when a caller sends one and is echoed back;
while the request runs it is in `current_request_id`, which the typed clients' httpx hook forwards downstream
(`common/http.py`): the one path a request id travels.
"""

from __future__ import annotations

import contextvars
import time
import uuid
from typing import Any

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"

# Set by the middleware for the whole request (handler, dependencies, background tasks and the tasks they start
# all copy this context), so nothing passes the id around by hand.
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

HTTP_REQUESTS = Counter("facegate_http_requests_total", "HTTP requests", ["service", "method", "route", "status"])
HTTP_LATENCY = Histogram(
    "facegate_http_request_seconds",
    "HTTP request latency",
    ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def _route_template(app: Any, scope: Scope) -> str:
    for route in getattr(app, "routes", []):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            # never the raw path: ids in it would explode label cardinality
            return str(getattr(route, "path", None) or "unmatched")
    return "unmatched"


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        raw = headers.get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = raw if 0 < len(raw) <= 128 and raw.isprintable() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = current_request_id.set(request_id)
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((REQUEST_ID_HEADER.encode(), request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            current_request_id.reset(token)  # an in-process caller (ASGITransport) shares this task
            # FastAPI (0.12x+) wraps included routers, so walking app.routes no longer finds the template;
            # the matched route it leaves in the scope carries it (prefix included).
            route = getattr(scope.get("route"), "path", None) or _route_template(scope.get("app"), scope)
            method = scope.get("method", "")
            HTTP_REQUESTS.labels(self.service, method, route, str(status)).inc()
            HTTP_LATENCY.labels(self.service, method, route).observe(time.perf_counter() - start)


def install_observability(app: FastAPI, *, service: str) -> None:
    app.add_middleware(ObservabilityMiddleware, service=service)
    router = APIRouter(tags=["ops"])

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)
