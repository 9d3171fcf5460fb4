"""Typed async HTTP client of the matcher: the gateway's way in (clients are a service's public face).

Takes and returns contract models. A 404 (no such gallery or attendee) is an answer: `NotFound` with the
matcher's code, for the caller to decide what it means. Anything else that goes wrong, including another 4xx
(the gateway and the matcher would disagree about the contract), is `DependencyUnavailable`
(`services/common/http.py`): never a match. Reads are tried once more after a dropped connection or a 5xx.
"""

from __future__ import annotations

import uuid

import httpx

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
    TemplatesCreate,
    TemplatesCreated,
)

NOT_FOUND = frozenset({404})


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
        retry_after_s: int = 5,
    ) -> None:
        super().__init__(base_url, transport=transport, timeout=timeout, headers=headers, retry_after_s=retry_after_s)

    # --- galleries ---

    async def ensure_gallery(self, event_id: uuid.UUID, body: GalleryCreate) -> GalleryResponse:
        path = f"/v1/galleries/{event_id}"
        return await self.call("PUT", path, GalleryResponse, operation="ensure_gallery", body=body)

    async def gallery(self, event_id: uuid.UUID) -> GalleryResponse:
        path = f"/v1/galleries/{event_id}"
        return await self.call("GET", path, GalleryResponse, operation="gallery", answers=NOT_FOUND, retry=True)

    async def drop_gallery(self, event_id: uuid.UUID) -> Deleted:
        path = f"/v1/galleries/{event_id}"
        return await self.call("DELETE", path, Deleted, operation="drop_gallery", answers=NOT_FOUND)

    # --- templates ---

    async def add_templates(self, event_id: uuid.UUID, body: TemplatesCreate) -> TemplatesCreated:
        path = f"/v1/galleries/{event_id}/templates"
        return await self.call("POST", path, TemplatesCreated, operation="add_templates", body=body, answers=NOT_FOUND)

    async def attendee_templates(self, event_id: uuid.UUID, attendee_id: uuid.UUID) -> AttendeeTemplates:
        path = f"/v1/galleries/{event_id}/attendees/{attendee_id}/templates"
        return await self.call(
            "GET", path, AttendeeTemplates, operation="attendee_templates", answers=NOT_FOUND, retry=True
        )

    async def delete_attendee(self, event_id: uuid.UUID, attendee_id: uuid.UUID) -> Deleted:
        path = f"/v1/galleries/{event_id}/attendees/{attendee_id}"
        return await self.call("DELETE", path, Deleted, operation="delete_attendee", answers=NOT_FOUND)

    # --- matching ---

    async def search(self, event_id: uuid.UUID, body: SearchRequest) -> SearchResponse:
        path = f"/v1/galleries/{event_id}/search"
        return await self.call(
            "POST", path, SearchResponse, operation="search", body=body, answers=NOT_FOUND, retry=True
        )

    async def distance(self, event_id: uuid.UUID, attendee_id: uuid.UUID, body: DistanceRequest) -> DistanceResponse:
        path = f"/v1/galleries/{event_id}/attendees/{attendee_id}/distance"
        return await self.call(
            "POST", path, DistanceResponse, operation="distance", body=body, answers=NOT_FOUND, retry=True
        )
