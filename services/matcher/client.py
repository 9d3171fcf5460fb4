"""Typed async HTTP client of the matcher: the gateway's way in (clients are a service's public face).

Returns contract models; a downstream error envelope becomes our own error class with the same code and
detail (404 NotFound, 409 Conflict, 422 Unprocessable, other 4xx BadRequest), and an unreachable matcher,
a timeout or a 5xx becomes ServiceUnavailable.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from services.common.errors import BadRequest, Conflict, FacegateError, NotFound, ServiceUnavailable, Unprocessable
from services.contracts.errors import ErrorResponse
from services.contracts.matcher import (
    AttendeeTemplates,
    Deleted,
    DistanceRequest,
    DistanceResponse,
    GalleryCreate,
    GalleryResponse,
    SearchRequest,
    SearchResponse,
    TemplateIn,
    TemplatesCreate,
    TemplatesCreated,
)

T = TypeVar("T", bound=BaseModel)

_ERRORS: dict[int, type[FacegateError]] = {404: NotFound, 409: Conflict, 422: Unprocessable}


class MatcherClient:
    def __init__(
        self,
        base_url: str = "http://matcher",
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 5.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout, headers=headers)

    async def __aenter__(self) -> MatcherClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        model: type[T],
        *,
        body: BaseModel | None = None,
        request_id: str | None = None,
    ) -> T:
        headers = {"x-request-id": request_id} if request_id else None
        content = body.model_dump_json().encode() if body is not None else None
        if content is not None:
            headers = {**(headers or {}), "content-type": "application/json"}
        try:
            resp = await self._http.request(method, path, content=content, headers=headers)
        except httpx.TimeoutException as exc:
            raise ServiceUnavailable("matcher timed out", code="matcher_timeout") from exc
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"matcher unreachable: {type(exc).__name__}", code="matcher_unavailable") from exc
        if resp.status_code >= 400:
            raise self._error(resp)
        try:
            return model.model_validate_json(resp.content)
        except ValidationError as exc:
            raise ServiceUnavailable("matcher sent an unexpected response", code="matcher_bad_response") from exc

    @staticmethod
    def _error(resp: httpx.Response) -> FacegateError:
        try:
            env = ErrorResponse.model_validate_json(resp.content)
            code, detail, errors = env.code, env.detail, env.errors
        except ValidationError:
            code, detail, errors = None, resp.text[:200] or resp.reason_phrase, None
        if resp.status_code >= 500:
            return ServiceUnavailable(f"matcher error {resp.status_code}: {detail}", code="matcher_unavailable")
        cls = _ERRORS.get(resp.status_code, BadRequest)
        return cls(detail, code=code, errors=errors)

    # --- galleries ---

    async def ensure_gallery(self, event_id: uuid.UUID, model_id: str, **kw: Any) -> GalleryResponse:
        return await self._call(
            "PUT", f"/v1/galleries/{event_id}", GalleryResponse, body=GalleryCreate(model_id=model_id), **kw
        )

    async def gallery(self, event_id: uuid.UUID, **kw: Any) -> GalleryResponse:
        return await self._call("GET", f"/v1/galleries/{event_id}", GalleryResponse, **kw)

    async def drop_gallery(self, event_id: uuid.UUID, **kw: Any) -> Deleted:
        return await self._call("DELETE", f"/v1/galleries/{event_id}", Deleted, **kw)

    # --- templates ---

    async def add_templates(self, event_id: uuid.UUID, templates: Sequence[TemplateIn], **kw: Any) -> TemplatesCreated:
        body = TemplatesCreate(templates=list(templates))
        return await self._call("POST", f"/v1/galleries/{event_id}/templates", TemplatesCreated, body=body, **kw)

    async def attendee_templates(self, event_id: uuid.UUID, attendee_id: uuid.UUID, **kw: Any) -> AttendeeTemplates:
        path = f"/v1/galleries/{event_id}/attendees/{attendee_id}/templates"
        return await self._call("GET", path, AttendeeTemplates, **kw)

    async def delete_attendee(self, event_id: uuid.UUID, attendee_id: uuid.UUID, **kw: Any) -> Deleted:
        return await self._call("DELETE", f"/v1/galleries/{event_id}/attendees/{attendee_id}", Deleted, **kw)

    # --- matching ---

    async def search(
        self, event_id: uuid.UUID, *, model_id: str, embedding: Sequence[float], k: int = 5, **kw: Any
    ) -> SearchResponse:
        body = SearchRequest(model_id=model_id, embedding=list(embedding), k=k)
        return await self._call("POST", f"/v1/galleries/{event_id}/search", SearchResponse, body=body, **kw)

    async def distance(
        self, event_id: uuid.UUID, attendee_id: uuid.UUID, *, model_id: str, embedding: Sequence[float], **kw: Any
    ) -> DistanceResponse:
        body = DistanceRequest(model_id=model_id, embedding=list(embedding))
        path = f"/v1/galleries/{event_id}/attendees/{attendee_id}/distance"
        return await self._call("POST", path, DistanceResponse, body=body, **kw)
