"""Gateway-specific errors on top of the shared error model (`services.common.errors`)."""

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


class DependencyUnavailable(FacegateError):
    """The embedder or matcher (or the database) could not answer: try again later. Never an admit."""

    status_code = 503
    code = "dependency_unavailable"

    def __init__(self, dependency: str, retry_after_s: int, detail: str | None = None) -> None:
        super().__init__(
            detail or f"{dependency} is unavailable, try again later",
            headers={"Retry-After": str(retry_after_s)},
            errors=[{"dependency": dependency}],
        )
        self.dependency = dependency


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
