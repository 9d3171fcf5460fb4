"""Gateway-specific errors on top of the shared error model (`services.common.errors`).

`DependencyUnavailable` (503 + Retry-After) is in `services.common.errors`: the typed clients raise it."""

from __future__ import annotations

from typing import Any

from services.common.errors import FacegateError, NotFound, Unprocessable


class Unauthorized(FacegateError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, detail: str = "missing or invalid API key") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(FacegateError):
    status_code = 403
    code = "forbidden"


class RateLimited(FacegateError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("too many requests for this key", headers={"Retry-After": str(retry_after_s)})


class QualityRejected(Unprocessable):
    code = "quality_rejected"

    def __init__(self, photos: list[dict[str, Any]]) -> None:
        super().__init__("one or more photos were rejected; nothing was stored", errors=photos)


class EventNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("event not found")


class AttendeeNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("attendee not found")
