"""Typed settings, env prefix FACEGATE_GATEWAY_ (nested with `__`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.contracts.models import DEFAULT_MODEL_ID


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEGATE_GATEWAY_", env_nested_delimiter="__", extra="ignore")

    database_url: str = "postgresql://postgres@localhost:5432/postgres"
    redis_url: str = "redis://localhost:6379/0"
    embedder_url: str = "http://127.0.0.1:8001"
    matcher_url: str = "http://127.0.0.1:8002"
    # Where a streamed burst's calls go (POST /v1/gate/burst/frames, then the decision): a name that resolves to
    # every embedder process (Kubernetes: the headless Service `embedder-pods`), one picked per burst, since a
    # streamed burst lives in one process's memory. Unset: embedder_url (one embedder process).
    embedder_stream_url: str | None = None

    # The internal services' credentials (their INTERNAL_TOKENs); the app refuses to start without them
    embedder_token: SecretStr | None = None
    matcher_token: SecretStr | None = None

    embedder_timeout_s: float = 10.0
    matcher_timeout_s: float = 5.0
    redis_timeout_s: float = 0.25  # Redis is a fast path: give up quickly and fall back
    redis_cooldown_s: float = 5.0  # after a Redis failure, skip its fast paths this long
    db_pool_size: int = 10

    bootstrap_admin_key: SecretStr | None = None  # deterministic admin key (tests, supervisor); else random

    template_cache_ttl_s: int = 3600
    rate_limit_per_second: int = 10  # per gate key, fixed one-second window; 0 disables
    # per organiser or admin key, checked before the body is read (authfirst.py); the console polls twice a
    # second at most, so this only stops a stolen or runaway key's flood; 0 disables
    organiser_rate_limit_per_second: int = 50
    retry_after_s: int = 5  # Retry-After on 503 dependency_unavailable

    # slow-body protection (bodylimit.py): a body must arrive within body_timeout_s plus its size at this rate
    body_timeout_s: float = Field(default=20.0, gt=0)
    body_min_bytes_per_s: int = Field(default=64 * 1024, gt=0)

    max_photos_per_request: int = 10
    default_model_id: str = DEFAULT_MODEL_ID  # the model new events are pinned to; must be the embedder's
    # Frames with several comparable faces (the embedder's gate profile decides what is comparable): "deny"
    # with `multiple_faces`, or "largest" to decide on the largest face.
    multiple_faces_policy: Literal["deny", "largest"] = "deny"
    # a head-turn challenge (events with liveness "challenge") must be answered within this long of its issue:
    # the kiosk's guidance, a capture of at most 2 s and the upload
    challenge_ttl_s: float = Field(default=6.0, gt=0, le=60)
    gate_enforce_quality: bool = True  # deny `low_quality` when the face fails the embedder's lax gate profile
    import_max_zip_bytes: int = 512 * 1024 * 1024
    idempotency_ttl_s: int = 7 * 24 * 3600  # how long a retried enrolment gets its first answer back
