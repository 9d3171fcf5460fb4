"""Typed async HTTP client of the matcher: the gateway's way in (clients are a service's public face).

Returns contract models; a downstream error envelope becomes our own error class with the same code and
detail (404 NotFound, 409 Conflict, 422 Unprocessable, other 4xx BadRequest), and an unreachable matcher,
a timeout or a 5xx becomes ServiceUnavailable.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from services.common.http import ServiceClient
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


class MatcherClient(ServiceClient):
    service = "matcher"
    credential_probe = f"/v1/galleries/{uuid.UUID(int=0)}"  # 404 when our token is accepted (no such gallery)

    def __init__(
        self,
        base_url: str = "http://matcher",
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 5.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(base_url, transport=transport, timeout=timeout, headers=headers)

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
        resp = await self.request(method, path, content=content, headers=headers)
        return self.parse(resp, model)

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
