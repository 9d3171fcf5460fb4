"""The plumbing every typed service client shares: one pooled `httpx.AsyncClient`, the request id forwarded by an
event hook, and every downstream failure turned into our own errors, so a caller handles a service's answers the
same way whichever service it was, with no mapping of its own.

- A timeout, an unreachable service, a 5xx, a refused credential or a body that is not the contract is
  `DependencyUnavailable` (503 `dependency_unavailable` with the Retry-After the caller configured): to the caller
  the service is down, never "the input was wrong", and a fault never becomes a decision.
- A 4xx is an answer only where the method says so (`answers`: e.g. the embedder's 4xx about the caller's image,
  the matcher's 404 for a gallery or attendee it does not have); it becomes our error class for its status, with
  the service's code, detail and field errors. Any other 4xx means the two services disagree about the contract:
  also `DependencyUnavailable` (logged as an error), never passed on as if the caller's input were wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

import httpx
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

from services.common.errors import (
    BadRequest,
    Conflict,
    DependencyUnavailable,
    FacegateError,
    NotFound,
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
)
from services.common.observability import REQUEST_ID_HEADER, current_request_id
from services.contracts.errors import ErrorResponse

log = logging.getLogger("facegate.client")

# The name predates the clients raising this themselves (the gateway is their only caller); dashboards keep it.
DEPENDENCY_ERRORS = Counter(
    "facegate_gateway_dependency_errors_total", "Failed calls to dependencies", ["dependency", "operation", "kind"]
)

T = TypeVar("T", bound=BaseModel)

_BY_STATUS: dict[int, type[FacegateError]] = {
    400: BadRequest,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: Unprocessable,
}


def _envelope(resp: httpx.Response) -> tuple[str | None, str, list[dict[str, Any]] | None]:
    try:
        body = ErrorResponse.model_validate_json(resp.content)
        return body.code, body.detail, body.errors
    except ValidationError:
        return None, resp.text[:300] or resp.reason_phrase, None


async def _forward_request_id(request: httpx.Request) -> None:
    """httpx request hook: the id of the request being served goes downstream (one id across the services' logs)."""
    request_id = current_request_id.get()
    if request_id and REQUEST_ID_HEADER not in request.headers:
        request.headers[REQUEST_ID_HEADER] = request_id


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
        retry_after_s: int = 5,
    ) -> None:
        self.retry_after_s = retry_after_s  # what a 503 from this client tells the caller's caller
        self._http = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            timeout=timeout,
            headers=headers,
            event_hooks={"request": [_forward_request_id]},
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def unavailable(
        self, operation: str, reason: str, detail: str, level: int = logging.WARNING
    ) -> DependencyUnavailable:
        DEPENDENCY_ERRORS.labels(self.service, operation, reason).inc()
        log.log(level, "%s %s failed (%s): %s", self.service, operation, reason, detail)
        return DependencyUnavailable(self.service, self.retry_after_s, reason=reason)

    async def request(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        answers: Collection[int] = (),
        retry: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send; an error status in `answers` raises its error class, any other failure `DependencyUnavailable`.

        `retry`: a read is tried once more when the service was unreachable or answered 5xx (right after a database
        restart its pools still hold dead connections, and the first query on each fails). Reads only (a retried
        write could land twice), and never after a timeout (that doubles the wait)."""
        if retry:
            try:
                return await self._request_once(method, url, operation, answers, kwargs)
            except DependencyUnavailable as exc:
                if exc.reason != f"{self.service}_unavailable":
                    raise
        return await self._request_once(method, url, operation, answers, kwargs)

    async def _request_once(
        self, method: str, url: str, operation: str, answers: Collection[int], kwargs: dict[str, Any]
    ) -> httpx.Response:
        try:
            resp = await self._http.request(method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise self.unavailable(operation, f"{self.service}_timeout", "timed out") from exc
        except httpx.TransportError as exc:
            raise self.unavailable(operation, f"{self.service}_unavailable", f"unreachable: {exc!r}") from exc
        if resp.status_code < 400:
            return resp
        code, detail, errors = _envelope(resp)
        if resp.status_code in answers:
            raise _BY_STATUS.get(resp.status_code, BadRequest)(detail, code=code, errors=errors)
        if resp.status_code >= 500:
            raise self.unavailable(operation, f"{self.service}_unavailable", f"HTTP {resp.status_code}: {detail}")
        if resp.status_code in (401, 403):  # our internal credential was refused: a deployment fault
            raise self.unavailable(operation, f"{self.service}_unauthorized", "refused our credential")
        # the two services disagree about the contract: a fault of ours, never the caller's input
        raise self.unavailable(operation, code or f"http_{resp.status_code}", f"refused: {detail}", logging.ERROR)

    def parse(self, resp: httpx.Response, model: type[T], *, operation: str) -> T:
        try:
            return model.model_validate_json(resp.content)
        except ValidationError as exc:
            raise self.unavailable(operation, f"{self.service}_bad_response", "an unexpected response") from exc

    async def call(
        self,
        method: str,
        url: str,
        model: type[T],
        *,
        operation: str,
        body: BaseModel | None = None,
        answers: Collection[int] = (),
        retry: bool = False,
        **kwargs: Any,
    ) -> T:
        """One call of the service's API: a contract model out (as JSON), a contract model back."""
        if body is not None:
            kwargs["content"] = body.model_dump_json().encode()
            kwargs["headers"] = {**kwargs.get("headers", {}), "content-type": "application/json"}
        resp = await self.request(method, url, operation=operation, answers=answers, retry=retry, **kwargs)
        return self.parse(resp, model, operation=operation)

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
