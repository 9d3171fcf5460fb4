"""Typed async client of the embedder (used by the gateway): contract models out and back, failures as our errors.

Its 4xx about the caller's image (undecodable, too large, wrong type: `IMAGE_ERRORS`) are answers the caller
passes on; anything else that goes wrong is `DependencyUnavailable` (`services/common/http.py`). The request id
travels by the shared client's hook, not as an argument.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from services.common.http import ServiceClient
from services.contracts.embedder import EmbedResponse, QualityProfile
from services.contracts.liveness import BurstProgress, LivenessResponse, TurnDirection
from services.contracts.models import ModelDescriptor

# What the embedder answers about the image it was sent: the caller's input, not a fault.
IMAGE_ERRORS = frozenset({400, 413, 415, 422})
# ...and, for a streamed burst, that this process no longer has it (404) or has another count of its frames (409).
STREAM_ERRORS = IMAGE_ERRORS | {404, 409}


def _files(frames: Sequence[bytes], content_type: str, first: int = 0) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("frames", (f"{first + i}.img", data, content_type)) for i, data in enumerate(frames)]


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
        retry_after_s: int = 5,
    ) -> None:
        super().__init__(base_url, transport=transport, timeout=timeout, headers=headers, retry_after_s=retry_after_s)

    async def embed(
        self,
        image_bytes: bytes,
        content_type: str = "image/jpeg",
        profile: QualityProfile = QualityProfile.GATE,
        max_faces: int | None = None,
        *,
        min_face_size: int | None = None,
    ) -> EmbedResponse:
        params: dict[str, str | int] = {"profile": QualityProfile(profile).value}
        if max_faces is not None:
            params["max_faces"] = max_faces
        if min_face_size is not None:
            params["min_face_size"] = min_face_size
        return await self.call(
            "POST",
            "/v1/embed",
            EmbedResponse,
            operation="embed",
            answers=IMAGE_ERRORS,
            content=image_bytes,
            params=params,
            headers={"content-type": content_type},
        )

    async def liveness(
        self,
        frames: Sequence[bytes],
        direction: TurnDirection,
        content_type: str = "image/jpeg",
        *,
        burst: str | None = None,
        offset: int = 0,
    ) -> LivenessResponse:
        """POST /v1/liveness: the burst's frames in capture order, and the turn the subject was asked for; with
        `burst`, the last frames of a streamed burst of which `offset` were sent by `liveness_frames`."""
        params: dict[str, str | int] = {"direction": TurnDirection(direction).value}
        if burst is not None:
            params |= {"burst": burst, "offset": offset}
        return await self.call(
            "POST",
            "/v1/liveness",
            LivenessResponse,
            operation="liveness",
            answers=STREAM_ERRORS if burst is not None else IMAGE_ERRORS,
            files=_files(frames, content_type),
            params=params,
        )

    async def liveness_frames(
        self, burst: str, frames: Sequence[bytes], offset: int, content_type: str = "image/jpeg"
    ) -> BurstProgress:
        """POST /v1/liveness/bursts/{burst}/frames: the next frames of a streamed burst, tracked on arrival."""
        return await self.call(
            "POST",
            f"/v1/liveness/bursts/{burst}/frames",
            BurstProgress,
            operation="liveness_frames",
            answers=STREAM_ERRORS,
            files=_files(frames, content_type, offset),
            params={"offset": offset},
        )

    async def model(self) -> ModelDescriptor:
        return await self.call("GET", "/v1/model", ModelDescriptor, operation="model")
