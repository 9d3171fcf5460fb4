"""Redis hot cache of attendee templates for 1:1 checks, with the matcher as the fallback.

Key `fg:tpl:{event_id}:{attendee_id}`: a little header (`n`, `dim` as little-endian uint32) and then the
attendee's template vectors as float32, with a TTL. Filled from the matcher's
`GET /v1/galleries/{event}/attendees/{id}/templates` on a miss, deleted on enrol, add-photos, revoke and erase.
Postgres (through the matcher) stays the truth: if Redis fails the distance comes from the matcher's distance
endpoint instead, so Redis down is slower, never wrong.
"""

from __future__ import annotations

import logging
import struct
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import Counter
from redis.exceptions import RedisError

from services.common.errors import NotFound
from services.contracts.distance import min_cosine_distance
from services.contracts.matcher import DistanceRequest
from services.gateway.redishealth import REDIS_ERRORS, RedisHealth
from services.matcher.client import MatcherClient

log = logging.getLogger("facegate.gateway.cache")

CACHE_EVENTS = Counter("facegate_gateway_template_cache_total", "Template cache lookups", ["result"])

_HEADER = struct.Struct("<II")


def template_key(event_id: uuid.UUID, attendee_id: uuid.UUID) -> str:
    return f"fg:tpl:{event_id}:{attendee_id}"


def pack(vectors: np.ndarray) -> bytes:
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    n, dim = vectors.shape
    return _HEADER.pack(n, dim) + vectors.tobytes()


def unpack(blob: bytes) -> np.ndarray:
    n, dim = _HEADER.unpack_from(blob)
    return np.frombuffer(blob, dtype="<f4", offset=_HEADER.size, count=n * dim).reshape(n, dim)


@dataclass(frozen=True)
class DistanceResult:
    distance: float | None  # None: the attendee has no templates
    source: str  # cache | matcher_fill | matcher_distance


class TemplateCache:
    def __init__(self, redis: Any, *, ttl_s: int, health: RedisHealth | None = None) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.health = health or RedisHealth()

    async def _get(self, key: str) -> bytes | None:
        if self.health.is_open:
            raise _RedisDown
        try:
            return await self.redis.get(key)
        except (RedisError, OSError) as exc:
            self.health.failed("template_cache")
            log.warning("template cache read failed: %r", exc)
            raise _RedisDown from exc

    async def invalidate(self, event_id: uuid.UUID, attendee_id: uuid.UUID) -> None:
        try:
            await self.redis.delete(template_key(event_id, attendee_id))
        except (RedisError, OSError) as exc:
            # A stale entry only lacks templates added since, or belongs to an attendee the database no longer
            # admits (revoked/erased are checked in Postgres first); the TTL bounds it.
            REDIS_ERRORS.labels("template_cache").inc()
            log.warning("template cache invalidation failed: %r", exc)

    async def invalidate_event(self, event_id: uuid.UUID) -> None:
        try:
            keys = [k async for k in self.redis.scan_iter(match=f"fg:tpl:{event_id}:*", count=500)]
            if keys:
                await self.redis.delete(*keys)
        except (RedisError, OSError) as exc:
            REDIS_ERRORS.labels("template_cache").inc()
            log.warning("template cache event invalidation failed: %r", exc)

    async def distance(
        self,
        matcher: MatcherClient,
        *,
        event_id: uuid.UUID,
        attendee_id: uuid.UUID,
        model_id: str,
        embedding: list[float],
    ) -> DistanceResult:
        key = template_key(event_id, attendee_id)
        probe = np.asarray(embedding, dtype=np.float32)
        try:
            blob = await self._get(key)
        except _RedisDown:
            CACHE_EVENTS.labels("redis_down").inc()
            try:
                remote = await matcher.distance(
                    event_id, attendee_id, DistanceRequest(model_id=model_id, embedding=embedding)
                )
            except NotFound:
                return DistanceResult(None, "matcher_distance")  # no templates (or no gallery)
            return DistanceResult(remote.distance, "matcher_distance")
        if blob is not None:
            templates = unpack(blob)
            if templates.shape[0] > 0 and templates.shape[1] == probe.shape[0]:
                CACHE_EVENTS.labels("hit").inc()
                return DistanceResult(min_cosine_distance(templates, probe), "cache")
        CACHE_EVENTS.labels("miss").inc()
        try:
            stored = await matcher.attendee_templates(event_id, attendee_id)
        except NotFound:
            return DistanceResult(None, "matcher_fill")
        if not stored.templates:
            return DistanceResult(None, "matcher_fill")
        templates = np.asarray([t.embedding for t in stored.templates if t.model_id == model_id], dtype=np.float32)
        if templates.size == 0:
            return DistanceResult(None, "matcher_fill")
        try:
            await self.redis.set(key, pack(templates), ex=self.ttl_s)
        except (RedisError, OSError) as exc:
            self.health.failed("template_cache")
            log.warning("template cache fill failed: %r", exc)
        return DistanceResult(min_cosine_distance(templates, probe), "matcher_fill")


class _RedisDown(Exception):
    pass
