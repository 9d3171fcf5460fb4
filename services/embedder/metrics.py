"""The embedder's own Prometheus metrics (HTTP counts and latencies come from common.observability)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BATCH_SIZE = Histogram(
    "facegate_embedder_batch_size",
    "Items per model call",
    ["stage"],  # detect | embed
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
BATCH_SECONDS = Histogram(
    "facegate_embedder_batch_seconds",
    "Time of one batched model call",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
STAGE_SECONDS = Histogram(
    "facegate_embedder_stage_seconds",
    "Per-image time in each pipeline stage, queueing included",
    ["stage"],  # decode | detect | align | embed | total
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
FACES_PER_IMAGE = Histogram(
    "facegate_embedder_faces_per_image",
    "Faces detected per image",
    buckets=(0, 1, 2, 3, 5, 10, 20, 50),
)
QUALITY_REASONS = Counter(
    "facegate_embedder_quality_reasons_total", "Image-level quality reason codes", ["profile", "reason"]
)
IMAGES = Counter("facegate_embedder_images_total", "Images embedded", ["profile", "passed"])
READY = Gauge("facegate_embedder_ready", "1 when models are loaded and warmed")
# Streamed bursts (liveness.Streams): how they end. Many `gone` or `dropped` mean the gateway's parts reach other
# processes (FACEGATE_GATEWAY_EMBEDDER_STREAM_URL) or the limits are too tight: the gates then send bursts whole.
STREAMS = Counter(
    "facegate_embedder_streams_total",
    "Streamed bursts by outcome",
    ["outcome"],  # begun | ended | gone | out_of_step | expired | dropped
)
STREAMS_OPEN = Gauge("facegate_embedder_streams_open", "Streamed bursts held in memory")


def observe_batch(stage: str):  # type: ignore[no-untyped-def]
    def _observe(size: int, seconds: float) -> None:
        BATCH_SIZE.labels(stage).observe(size)
        BATCH_SECONDS.labels(stage).observe(seconds)

    return _observe
