"""The plumbing every typed service client shares: one pooled `httpx.AsyncClient`, and downstream faults
turned into our own errors, so a caller handles a service's answers the same way whichever service it was.

A timeout, an unreachable service or a 5xx is `ServiceUnavailable` (code `<service>_timeout` /
`<service>_unavailable`): to the caller the service is down, never "the input was wrong". A 4xx error envelope
becomes our error class for its status, keeping the service's code, detail and field errors.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from services.common.errors import (
    BadRequest,
    Conflict,
    FacegateError,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unprocessable,
    UnsupportedMediaType,
)
from services.contracts.errors import ErrorResponse

T = TypeVar("T", bound=BaseModel)

_BY_STATUS: dict[int, type[FacegateError]] = {
    400: BadRequest,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: Unprocessable,
}


def downstream_error(service: str, resp: httpx.Response) -> FacegateError:
    try:
        body = ErrorResponse.model_validate_json(resp.content)
        code, detail, errors = body.code, body.detail, body.errors
    except ValidationError:
        code, detail, errors = None, resp.text[:300] or resp.reason_phrase, None
    if resp.status_code >= 500:
        return ServiceUnavailable(f"{service} error {resp.status_code}: {detail}", code=f"{service}_unavailable")
    if resp.status_code in (401, 403):
        # our internal credential was refused: a deployment fault, never the caller's input (and never a 4xx
        # that the gateway would pass on as if the photo were bad)
        return ServiceUnavailable(f"{service} refused our credential", code=f"{service}_unauthorized")
    return _BY_STATUS.get(resp.status_code, BadRequest)(detail, code=code, errors=errors)


class ServiceClient:
    service: ClassVar[str]  # names the service in error codes and messages
    # A cheap call behind the service's credential: readiness also proves our token is accepted (its /readyz is
    # open), so a mismatched token shows in the caller's /readyz, not first at a gate. Any status but 401/403 is fine.
    credential_probe: ClassVar[str | None] = None

    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 5.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout, headers=headers)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send; a fault or an error status raises our error (see the module doc)."""
        try:
            resp = await self._http.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise ServiceUnavailable(f"{self.service} timed out", code=f"{self.service}_timeout") from exc
        except httpx.TransportError as exc:
            raise ServiceUnavailable(
                f"{self.service} unreachable: {type(exc).__name__}", code=f"{self.service}_unavailable"
            ) from exc
        if resp.status_code >= 400:
            raise downstream_error(self.service, resp)
        return resp

    def parse(self, resp: httpx.Response, model: type[T]) -> T:
        try:
            return model.model_validate_json(resp.content)
        except ValidationError as exc:
            raise ServiceUnavailable(
                f"{self.service} sent an unexpected response", code=f"{self.service}_bad_response"
            ) from exc

    async def readiness(self, timeout: float = 2.0) -> str:
        """`ok`, or why not: for a caller's own /readyz. Short timeout: a readiness probe must not hang."""
        try:
            resp = await self._http.get("/readyz", timeout=timeout)
            if resp.status_code == 200 and self.credential_probe is not None:
                probe = await self._http.get(self.credential_probe, timeout=timeout)
                if probe.status_code in (401, 403):
                    return "error: credential refused"
        except httpx.HTTPError as exc:
            return f"error: {type(exc).__name__}"
        return "ok" if resp.status_code == 200 else f"error: HTTP {resp.status_code}"

    async def ready(self) -> bool:
        return await self.readiness() == "ok"
