"""Typed async client of the embedder (used by the gateway): contract models out and back, failures as our errors.

Its 4xx about the caller's image (undecodable, too large, wrong type: `IMAGE_ERRORS`) are answers the caller
passes on; anything else that goes wrong is `DependencyUnavailable` (`services/common/http.py`). The request id
travels by the shared client's hook, not as an argument.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

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


class Replicas:
    """The embedder processes behind `url`'s host name (a Kubernetes headless Service lists one address per ready
    pod), re-resolved every `ttl_s`; `pick(key)` is the same process for the same key while the set is unchanged
    (rendezvous hashing: a process that comes or goes moves only its own keys). A streamed burst lives in one
    process's memory, so its parts and its end must reach the same one; where they do not (the set changed, the
    name did not resolve) the embedder answers 404 and the gate sends the whole burst."""

    def __init__(self, url: str, ttl_s: float = 5.0) -> None:
        parts = urlsplit(url)
        self.scheme, self.host = parts.scheme or "http", parts.hostname or ""
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.ttl_s = ttl_s
        self._addresses: list[str] = []
        self._until = 0.0

    async def addresses(self) -> list[str]:
        now = time.monotonic()
        if now >= self._until:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
                self._addresses = sorted({str(info[4][0]) for info in infos})
            except OSError:
                self._addresses = []  # the name is down: the host itself, and the gate may fall back
            self._until = now + self.ttl_s
        return self._addresses

    async def pick(self, key: str) -> str:
        addresses = await self.addresses()
        if not addresses:
            return f"{self.scheme}://{self.host}:{self.port}"
        best = rendezvous(addresses, key)
        return f"{self.scheme}://{f'[{best}]' if ':' in best else best}:{self.port}"


def rendezvous(addresses: Sequence[str], key: str) -> str:
    """The address with the highest hash of (address, key): stable per key, even across addresses."""
    return max(addresses, key=lambda a: hashlib.sha256(f"{a}|{key}".encode()).digest())


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
        stream_url: str | None = None,
    ) -> None:
        super().__init__(base_url, transport=transport, timeout=timeout, headers=headers, retry_after_s=retry_after_s)
        self._replicas = Replicas(stream_url) if stream_url else None

    async def _stream_base(self, burst: str) -> str:
        """Where a streamed burst's calls go: all of them to one embedder process, which holds the burst."""
        return await self._replicas.pick(burst) if self._replicas is not None else ""

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
        base = await self._stream_base(burst) if burst is not None else ""
        return await self.call(
            "POST",
            f"{base}/v1/liveness",
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
            f"{await self._stream_base(burst)}/v1/liveness/bursts/{burst}/frames",
            BurstProgress,
            operation="liveness_frames",
            answers=STREAM_ERRORS,
            files=_files(frames, content_type, offset),
            params={"offset": offset},
        )

    async def model(self) -> ModelDescriptor:
        return await self.call("GET", "/v1/model", ModelDescriptor, operation="model")
