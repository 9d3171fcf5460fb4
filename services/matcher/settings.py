"""Matcher configuration (environment variables prefixed FACEGATE_MATCHER_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MatcherSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEGATE_MATCHER_", extra="ignore")

    database_url: str = Field(description="postgresql:// URL (libpq style, as pgserver prints it)")
    pool_size: int = Field(default=10, ge=1)
    max_overflow: int = Field(default=10, ge=0)
    pool_timeout_s: float = Field(default=5.0, gt=0)
    pool_pre_ping: bool = False
    statement_timeout_ms: int = Field(default=10_000, ge=0, description="0 disables the server-side timeout")

    # HNSW build parameters of a new gallery's index (see bench/matcher.py for the measurements).
    hnsw_m: int = Field(default=16, ge=2, le=100)
    hnsw_ef_construction: int = Field(default=128, ge=4, le=1000)
    # Query-time candidate list; pgvector 0.6 returns at most ef_search rows per index scan, so this is
    # also the number of candidates that are ordered exactly and grouped per attendee.
    hnsw_ef_search: int = Field(default=200, ge=1, le=1000)
    # Galleries with at most this many templates are searched exactly (sequential scan, full recall).
    exact_max_templates: int = Field(default=10_000, ge=0)
    # Exact mode fetches k * this many templates before grouping per attendee (doubled until enough).
    overfetch_per_attendee: int = Field(default=8, ge=1)
