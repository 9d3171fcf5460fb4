"""Matcher-specific Prometheus metrics (HTTP metrics come from services.common.observability)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SEARCHES = Counter("facegate_matcher_searches_total", "Gallery searches by mode", ["mode"])
SEARCH_CANDIDATES = Histogram(
    "facegate_matcher_search_candidates",
    "Templates fetched per search before grouping per attendee",
    ["mode"],
    buckets=(8, 40, 100, 200, 400, 1000, 4000),
)
