"""Calls to the embedder and matcher, with their failures turned into gateway errors.

The clients (`services/embedder/client.py`, `services/matcher/client.py`) already turn an unreachable service, a
timeout or a 5xx into `ServiceUnavailable`; here that becomes `DependencyUnavailable` (503 + Retry-After, code
`dependency_unavailable`): the gateway never decides on a fault. The embedder's 4xx about the caller's image
(undecodable, too large, wrong type) pass through as they are. Anything else unexpected from a client, including
a matcher 4xx (which would mean the gateway and matcher disagree), is treated as unavailability, never a match.
The request id is forwarded downstream (`x-request-id`).
"""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from prometheus_client import Counter

from services.common.errors import FacegateError, NotFound, ServiceUnavailable
from services.contracts.embedder import EmbedResponse, QualityProfile
from services.contracts.matcher import (
    AttendeeTemplates,
    DistanceResponse,
    SearchRequest,
    SearchResponse,
    TemplatesCreate,
    TemplatesCreated,
)
from services.contracts.models import ModelDescriptor
from services.gateway.errors import DependencyUnavailable

log = logging.getLogger("facegate.gateway.downstream")

DEPENDENCY_ERRORS = Counter(
    "facegate_gateway_dependency_errors_total", "Failed calls to dependencies", ["dependency", "operation", "kind"]
)

current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

T = TypeVar("T")


class DownstreamNotFound(NotFound):
    """The dependency answered 404 (no gallery, no such attendee): callers decide what that means."""


async def call(
    dependency: str, operation: str, awaitable: Awaitable[T], *, retry_after_s: int, pass_client_errors: bool = False
) -> T:
    try:
        return await awaitable
    except ServiceUnavailable as exc:
        DEPENDENCY_ERRORS.labels(dependency, operation, "unavailable").inc()
        log.warning("%s %s unavailable: %s", dependency, operation, exc.detail)
        raise DependencyUnavailable(dependency, retry_after_s) from exc
    except NotFound as exc:
        raise DownstreamNotFound(f"{dependency}: {exc.detail}") from exc
    except FacegateError as exc:
        if pass_client_errors and 400 <= exc.status_code < 500:
            raise
        DEPENDENCY_ERRORS.labels(dependency, operation, exc.error_code).inc()
        log.error("%s %s refused our request (%s): %s", dependency, operation, exc.error_code, exc.detail)
        raise DependencyUnavailable(dependency, retry_after_s) from exc
    except (httpx.HTTPError, OSError, TimeoutError) as exc:
        DEPENDENCY_ERRORS.labels(dependency, operation, "unreachable").inc()
        log.warning("%s %s unreachable: %r", dependency, operation, exc)
        raise DependencyUnavailable(dependency, retry_after_s) from exc


async def read_twice(make: Callable[[], Awaitable[T]]) -> T:
    """A read is tried once more when the matcher was unreachable or answered 5xx: right after its database
    restarts, its pools still hold dead connections, and the first query on each fails (then the pool is
    renewed). Reads only (a retried write could land twice) and never after a timeout (that doubles the wait)."""
    try:
        return await make()
    except ServiceUnavailable as exc:
        if exc.error_code.endswith("_timeout"):
            raise
        log.info("matcher read failed once, trying again: %s", exc.detail)
        return await make()


class Downstream:
    """The two clients plus the error mapping; built once in the lifespan, reached through `DownstreamDep`."""

    def __init__(self, *, embedder: Any, matcher: Any, retry_after_s: int) -> None:
        self.embedder = embedder
        self.matcher = matcher
        self.retry_after_s = retry_after_s

    @staticmethod
    def _kw() -> dict[str, Any]:
        rid = current_request_id.get()
        return {"request_id": rid} if rid else {}

    async def embed(
        self, data: bytes, content_type: str, *, profile: QualityProfile, max_faces: int | None = None
    ) -> EmbedResponse:
        return await call(
            "embedder",
            "embed",
            self.embedder.embed(data, content_type, profile=profile, max_faces=max_faces, **self._kw()),
            retry_after_s=self.retry_after_s,
            pass_client_errors=True,
        )

    async def served_model(self) -> ModelDescriptor:
        return await call("embedder", "model", self.embedder.model(), retry_after_s=self.retry_after_s)

    async def ensure_gallery(self, event_id: uuid.UUID, model_id: str) -> Any:
        return await call(
            "matcher",
            "ensure_gallery",
            self.matcher.ensure_gallery(event_id, model_id, **self._kw()),
            retry_after_s=self.retry_after_s,
        )

    async def drop_gallery(self, event_id: uuid.UUID) -> int:
        try:
            result = await call(
                "matcher",
                "drop_gallery",
                self.matcher.drop_gallery(event_id, **self._kw()),
                retry_after_s=self.retry_after_s,
            )
        except DownstreamNotFound:
            return 0  # already gone: erasing is idempotent
        return int(getattr(result, "deleted", 0) or 0)

    async def add_templates(self, event_id: uuid.UUID, body: TemplatesCreate) -> TemplatesCreated:
        return await call(
            "matcher",
            "add_templates",
            self.matcher.add_templates(event_id, body.templates, **self._kw()),
            retry_after_s=self.retry_after_s,
        )

    async def get_attendee_templates(self, event_id: uuid.UUID, attendee_id: uuid.UUID) -> AttendeeTemplates | None:
        try:
            return await call(
                "matcher",
                "attendee_templates",
                read_twice(lambda: self.matcher.attendee_templates(event_id, attendee_id, **self._kw())),
                retry_after_s=self.retry_after_s,
            )
        except DownstreamNotFound:
            return None

    async def delete_attendee(self, event_id: uuid.UUID, attendee_id: uuid.UUID) -> int:
        try:
            result = await call(
                "matcher",
                "delete_attendee",
                self.matcher.delete_attendee(event_id, attendee_id, **self._kw()),
                retry_after_s=self.retry_after_s,
            )
        except DownstreamNotFound:
            return 0
        return int(getattr(result, "deleted", 0) or 0)

    async def search(self, event_id: uuid.UUID, body: SearchRequest) -> SearchResponse:
        return await call(
            "matcher",
            "search",
            read_twice(
                lambda: self.matcher.search(
                    event_id, model_id=body.model_id, embedding=body.embedding, k=body.k, **self._kw()
                )
            ),
            retry_after_s=self.retry_after_s,
        )

    async def distance(
        self, event_id: uuid.UUID, attendee_id: uuid.UUID, *, model_id: str, embedding: list[float]
    ) -> DistanceResponse | None:
        try:
            return await call(
                "matcher",
                "distance",
                read_twice(
                    lambda: self.matcher.distance(
                        event_id, attendee_id, model_id=model_id, embedding=embedding, **self._kw()
                    )
                ),
                retry_after_s=self.retry_after_s,
            )
        except DownstreamNotFound:
            return None
