"""The HTTP API over the real pipeline: happy paths, bad inputs, readiness, metrics, batching."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from services.contracts import images as limits
from services.contracts.embedder import EmbedResponse, QualityProfile, QualityReason
from services.embedder.app import create_app
from services.embedder.pipeline import FacePipeline
from services.embedder.settings import EmbedderSettings
from tests.conftest import EMBEDDER_HEADERS
from tests.embedder.helpers import encode

JPEG = {"content-type": "image/jpeg"}


async def test_health_ready_model(embedder_http: httpx.AsyncClient) -> None:
    assert (await embedder_http.get("/healthz")).json()["status"] == "ok"
    ready = await embedder_http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["models"] == "ready"
    model = (await embedder_http.get("/v1/model")).json()
    assert model["id"] == "dlib-resnet-128" and model["dim"] == 128 and model["input_size"] == 150
    assert model["preprocessing"].startswith("MTCNN landmarks")  # the chip mode really in use (landmarks)


async def test_raw_body_and_multipart_agree(embedder_http: httpx.AsyncClient, faces_dir: Path) -> None:
    data = (faces_dir / "dev/Vladimir_Putin/2.jpg").read_bytes()
    raw = await embedder_http.post("/v1/embed", content=data, headers=JPEG, params={"profile": "enrol"})
    assert raw.status_code == 200, raw.text
    body = EmbedResponse.model_validate(raw.json())
    assert body.profile == QualityProfile.ENROL and body.passed and body.reasons == []
    face = body.faces[0]
    assert face.quality.passed and 0.9 < face.score <= 1.0
    assert face.quality.inter_eye_px > 20 and face.box.width > 50
    multi = await embedder_http.post("/v1/embed", files={"image": ("p.jpg", data, "image/jpeg")})
    assert multi.status_code == 200, multi.text
    assert np.allclose(multi.json()["faces"][0]["embedding"], face.embedding, atol=1e-5)
    # A part without a content type (curl -F image=@file) is sniffed like octet-stream.
    bare = await embedder_http.post("/v1/embed", files={"image": ("p.jpg", data, "application/octet-stream")})
    assert bare.status_code == 200


async def test_no_face_is_a_200_with_a_reason(embedder_http: httpx.AsyncClient, faces_dir: Path) -> None:
    r = await embedder_http.post("/v1/embed", content=(faces_dir / "noface/2.jpg").read_bytes(), headers=JPEG)
    assert r.status_code == 200
    assert r.json()["faces"] == [] and r.json()["reasons"] == ["no_face"] and r.json()["passed"] is False


def _png(w: int, h: int, mode: str = "RGB") -> bytes:
    return encode(Image.new(mode, (w, h)), "PNG")


async def _chunks(data: bytes, size: int = 1 << 20) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"content": b"", "headers": JPEG}, 400, "empty_body"),
        ({"content": b"definitely not a jpeg", "headers": JPEG}, 422, "invalid_image"),
        ({"content": b"plain text", "headers": {"content-type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"content": b"\xff\xd8\xff", "headers": {}}, 415, "unsupported_media_type"),
        ({"files": {"image": ("a.txt", b"hello", "text/plain")}}, 415, "unsupported_media_type"),
        ({"files": {"photo": ("a.jpg", b"\xff\xd8", "image/jpeg")}}, 422, "missing_image"),
        ({"content": _png(1, 1), "headers": {"content-type": "image/png"}}, 422, "image_too_small"),
        ({"content": _png(8000, 6000, "1"), "headers": {"content-type": "image/png"}}, 413, "image_too_large"),
        ({"content": b"\0" * (limits.MAX_IMAGE_BYTES + 1), "headers": JPEG}, 413, "payload_too_large"),
    ],
    ids=[
        "empty",
        "not-image",
        "text-plain",
        "no-content-type",
        "multipart-text",
        "multipart-no-image",
        "1x1",
        "pixel-bomb",
        "too-many-bytes",
    ],
)
async def test_bad_inputs(embedder_http: httpx.AsyncClient, kwargs: dict, status: int, code: str) -> None:
    r = await embedder_http.post("/v1/embed", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["code"] == code
    assert r.json()["detail"]


async def test_truncated_jpeg(embedder_http: httpx.AsyncClient, faces_dir: Path) -> None:
    data = (faces_dir / "dev/Hugo_Chavez/1.jpg").read_bytes()
    r = await embedder_http.post("/v1/embed", content=data[: len(data) * 2 // 3], headers=JPEG)
    assert (r.status_code, r.json()["code"]) == (422, "invalid_image")


async def test_oversized_stream_without_content_length_is_cut_off(embedder_http: httpx.AsyncClient) -> None:
    # A chunked upload declares no length: the server counts while reading and stops at the limit.
    r = await embedder_http.post("/v1/embed", content=_chunks(b"\xff" * (limits.MAX_IMAGE_BYTES + 5)), headers=JPEG)
    assert (r.status_code, r.json()["code"]) == (413, "payload_too_large")


async def test_declared_length_over_limit_is_refused_before_reading(embedder_app: object) -> None:
    received = 0

    async def receive() -> dict:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": "/v1/embed",
        "raw_path": b"/v1/embed",
        "query_string": b"",
        "headers": [
            (b"content-type", b"image/jpeg"),
            (b"content-length", str(50 * 1024 * 1024).encode()),
            *[(k.lower().encode(), v.encode()) for k, v in EMBEDDER_HEADERS.items()],
        ],
        "server": ("test", 80),
        "client": ("test", 1),
        "scheme": "http",
        "root_path": "",
    }
    await embedder_app(scope, receive, send)  # type: ignore[operator]
    assert sent[0]["status"] == 413
    assert received == 0  # not one byte of the 50 MB body was read


async def test_validation_errors_use_the_envelope(embedder_http: httpx.AsyncClient, faces_dir: Path) -> None:
    data = (faces_dir / "dev/Hugo_Chavez/1.jpg").read_bytes()
    for params in ({"max_faces": 0}, {"profile": "strictest"}, {"min_face_size": 2}):
        r = await embedder_http.post("/v1/embed", content=data, headers=JPEG, params=params)
        assert (r.status_code, r.json()["code"]) == (422, "validation_error"), params


async def test_grey_cmyk_16bit_palette_alpha_photos_work(embedder_http: httpx.AsyncClient, faces_dir: Path) -> None:
    img = Image.open(faces_dir / "dev/Jacques_Chirac/2.jpg").convert("RGB")
    grey16 = Image.fromarray((np.asarray(img.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    variants = {
        "grey": (encode(img.convert("L"), "JPEG"), "image/jpeg"),
        "cmyk": (encode(img.convert("CMYK"), "JPEG"), "image/jpeg"),
        "16-bit": (encode(grey16, "PNG"), "image/png"),
        "palette": (encode(img.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), "image/png"),
        "alpha": (encode(img.convert("RGBA"), "PNG"), "image/png"),
        "webp": (encode(img, "WEBP"), "image/webp"),
    }
    results = await asyncio.gather(
        *(embedder_http.post("/v1/embed", content=d, headers={"content-type": ct}) for d, ct in variants.values())
    )
    for name, r in zip(variants, results, strict=True):
        assert r.status_code == 200, (name, r.text)
        assert len(r.json()["faces"]) >= 1, name


async def test_concurrent_requests_are_batched(embedder_http: httpx.AsyncClient, dev_images: list) -> None:
    from services.embedder import metrics

    def count(stage: str) -> tuple[float, float]:
        s = c = 0.0
        for metric in metrics.BATCH_SIZE.collect():
            for sample in metric.samples:
                if sample.labels.get("stage") == stage and sample.name.endswith("_sum"):
                    s = sample.value
                if sample.labels.get("stage") == stage and sample.name.endswith("_count"):
                    c = sample.value
        return s, c

    before = {st: count(st) for st in ("detect", "embed")}
    frames = [p.read_bytes() for _, p in dev_images[:12]]
    rs = await asyncio.gather(*(embedder_http.post("/v1/embed", content=f, headers=JPEG) for f in frames))
    assert all(r.status_code == 200 for r in rs)
    for stage in ("detect", "embed"):
        items = count(stage)[0] - before[stage][0]
        calls = count(stage)[1] - before[stage][1]
        assert items >= 12 and calls < items, (stage, items, calls)  # several frames per model call
    text = (await embedder_http.get("/metrics")).text
    for name in ("facegate_embedder_batch_size", "facegate_embedder_stage_seconds", "facegate_embedder_faces_per_image",
                 "facegate_http_requests_total"):  # fmt: skip
        assert name in text


async def test_dev_photos_pass_enrol(embedder_http: httpx.AsyncClient, dev_images: list) -> None:
    """Every clear single-face dev photo passes `enrol`; the rest fail for a stated reason."""
    sem = asyncio.Semaphore(16)

    async def one(path: Path) -> EmbedResponse:
        async with sem:
            r = await embedder_http.post(
                "/v1/embed", content=path.read_bytes(), headers=JPEG, params={"profile": "enrol"}
            )
            assert r.status_code == 200
            return EmbedResponse.model_validate(r.json())

    results = await asyncio.gather(*(one(p) for _, p in dev_images))
    assert all(r.faces for r in results)  # a face in every dev photo
    failed = {f"{label}/{p.name}": r.reasons for (label, p), r in zip(dev_images, results, strict=True) if not r.passed}
    assert all(reasons for reasons in failed.values())
    assert len(failed) <= 20, failed  # measured: 133 of 150 pass; the 17 are body shots, turned heads, pairs
    lfw = [r for (label, _), r in zip(dev_images, results, strict=True) if r.image.width == 250 == r.image.height]
    assert sum(r.passed or QualityReason.FACE_TOO_SMALL not in r.reasons for r in lfw) == len(lfw)


async def test_not_ready_until_loaded(faces_dir: Path) -> None:
    pipe = FacePipeline(EmbedderSettings(load_in_background=True))
    failed = threading.Event()

    def fail() -> None:
        pipe.state = "failed: RuntimeError: weights missing"
        failed.set()
        raise RuntimeError("weights missing")

    pipe.load = fail  # type: ignore[method-assign]
    app = create_app(pipeline=pipe)
    async with app.router.lifespan_context(app):
        # the background load has run and failed (waited for, not guessed at with a fixed sleep)
        assert await asyncio.to_thread(failed.wait, 60)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://e", headers=EMBEDDER_HEADERS
        ) as client:
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["models"].startswith("failed")
            r = await client.post("/v1/embed", content=(faces_dir / "noface/2.jpg").read_bytes(), headers=JPEG)
            assert (r.status_code, r.json()["code"]) == (503, "not_ready")
