"""Typed async client of the embedder (used by the gateway)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx
from pydantic import ValidationError

from services.common.errors import (
    BadRequest,
    FacegateError,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unprocessable,
    UnsupportedMediaType,
)
from services.contracts.embedder import EmbedResponse, QualityProfile
from services.contracts.errors import ErrorResponse
from services.contracts.models import ModelDescriptor

_BY_STATUS: dict[int, type[FacegateError]] = {
    400: BadRequest,
    404: NotFound,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: Unprocessable,
}


class EmbedderClient:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8001",
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout, headers=headers)

    async def __aenter__(self) -> EmbedderClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = await self._http.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise ServiceUnavailable(f"embedder timed out: {exc!r}", code="embedder_timeout") from exc
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"embedder unreachable: {exc!r}", code="embedder_unavailable") from exc
        if resp.status_code >= 400:
            raise _error(resp)
        return resp

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
        resp = await self._request("POST", "/v1/embed", content=image_bytes, params=params, headers=headers)
        return EmbedResponse.model_validate_json(resp.content)

    async def model(self) -> ModelDescriptor:
        resp = await self._request("GET", "/v1/model")
        return ModelDescriptor.model_validate_json(resp.content)

    async def ready(self) -> bool:
        try:
            resp = await self._http.get("/readyz")
        except httpx.HTTPError:
            return False
        return resp.status_code == 200


def _error(resp: httpx.Response) -> FacegateError:
    try:
        body = ErrorResponse.model_validate_json(resp.content)
        code, detail, errors = body.code, body.detail, body.errors
    except ValidationError:
        code, detail, errors = None, resp.text[:500] or resp.reason_phrase, None
    if resp.status_code >= 500:
        # The embedder failing is, to the caller, the embedder being unavailable.
        return ServiceUnavailable(f"embedder error {resp.status_code}: {detail}", code=code or "embedder_unavailable")
    cls = _BY_STATUS.get(resp.status_code, BadRequest)
    return cls(detail, code=code, errors=errors)
