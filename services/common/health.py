"""Liveness and readiness are separate: liveness says the process runs, readiness says why it cannot serve."""

from __future__ import annotations

from pydantic import BaseModel


class Health(BaseModel):
    status: str  # "ok" | "not_ready"
    checks: dict[str, str] = {}
