"""Redis health, owned by the app (`app.state.redis_health`) and shared by its users: the template cache and
the rate limiter. Redis is a cache here; when it fails, both carry on without it (a slower 1:1 path, no rate
limit) and skip it for a cool-down instead of paying a timeout on every request.
"""

from __future__ import annotations

import time

from prometheus_client import Counter

REDIS_ERRORS = Counter("facegate_gateway_redis_errors_total", "Redis failures (the gateway carried on)", ["use"])


class RedisHealth:
    """After a failure reported by any user, Redis is skipped for `cooldown_s`. Only the fast paths (cache reads
    and fills, the rate limit) consult it; invalidations are always tried."""

    def __init__(self, cooldown_s: float = 5.0) -> None:
        self.cooldown_s = cooldown_s
        self._down_until = 0.0

    @property
    def is_open(self) -> bool:
        """True while Redis is being skipped."""
        return time.monotonic() < self._down_until

    def failed(self, use: str) -> None:
        REDIS_ERRORS.labels(use).inc()
        self._down_until = time.monotonic() + self.cooldown_s

    def reset(self) -> None:
        self._down_until = 0.0
