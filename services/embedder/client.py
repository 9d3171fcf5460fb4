"""Typed async client of the embedder (used by the gateway)."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from services.common.http import ServiceClient
from services.contracts.embedder import EmbedResponse, QualityProfile
from services.contracts.liveness import LivenessResponse, TurnDirection
from services.contracts.models import ModelDescriptor


class EmbedderClient(ServiceClient):
    service = "embedder"
    credential_probe = "/v1/model"

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8001",
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(base_url, transport=transport, timeout=timeout, headers=headers)

    async def embed(
        self,
        image_bytes: bytes,
        content_type: str = "image/jpeg",
        profile: QualityProfile = QualityProfile.GATE,
        max_faces: int | None = None,
        *,
        min_face_size: int | None = None,
        request_id: str | None = None,
    ) -> EmbedResponse:
        params: dict[str, str | int] = {"profile": QualityProfile(profile).value}
        if max_faces is not None:
            params["max_faces"] = max_faces
        if min_face_size is not None:
            params["min_face_size"] = min_face_size
        headers = {"content-type": content_type}
        if request_id:
            headers["x-request-id"] = request_id
        resp = await self.request("POST", "/v1/embed", content=image_bytes, params=params, headers=headers)
        return self.parse(resp, EmbedResponse)

    async def liveness(
        self,
        frames: Sequence[bytes],
        direction: TurnDirection,
        content_type: str = "image/jpeg",
        *,
        request_id: str | None = None,
    ) -> LivenessResponse:
        """POST /v1/liveness: the burst's frames in capture order, and the turn the subject was asked for."""
        files = [("frames", (f"{i}.img", data, content_type)) for i, data in enumerate(frames)]
        headers = {"x-request-id": request_id} if request_id else {}
        params = {"direction": TurnDirection(direction).value}
        resp = await self.request("POST", "/v1/liveness", files=files, params=params, headers=headers)
        return self.parse(resp, LivenessResponse)

    async def model(self) -> ModelDescriptor:
        return self.parse(await self.request("GET", "/v1/model"), ModelDescriptor)
