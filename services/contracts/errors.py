"""The one error envelope every service returns, and the stable codes clients may branch on."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorResponse(BaseModel):
    code: str
    detail: str
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = None
