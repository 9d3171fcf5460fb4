"""Per-key fixed-window rate limit in Redis: `INCR fg:rl:{key}:{second}` with a short expiry.

Redis down does not block the gate (an event entrance must keep moving); the failure is logged and counted.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from redis.exceptions import RedisError

from services.gateway.errors import RateLimited
from services.gateway.redishealth import RedisHealth

log = logging.getLogger("facegate.gateway.ratelimit")


async def check_rate_limit(
    redis: Any, *, key_id: uuid.UUID, limit_per_second: int, health: RedisHealth | None = None
) -> None:
    if limit_per_second <= 0 or (health is not None and health.is_open):
        return
    window = int(time.time())
    key = f"fg:rl:{key_id}:{window}"
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 2)
            count, _ = await pipe.execute()
    except (RedisError, OSError) as exc:
        (health or RedisHealth()).failed("rate_limit")
        log.warning("rate limit check skipped, Redis failed: %r", exc)
        return
    if int(count) > limit_per_second:
        raise RateLimited(retry_after_s=1)
