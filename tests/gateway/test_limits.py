"""Issue 8: the gateway's own limits. Whole-request size limits (413 as the body streams in, with or without a
Content-Length, before multipart parsing spools anything to disk) and the per-gate-key rate limit (429 with
Retry-After, per key, recovering by itself). A refused request stores nothing and is not a gate decision.
"""

from __future__ import annotations

import asyncio
import io
import math
import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.contracts.images import MAX_IMAGE_BYTES
from tests.gateway.conftest import ADMIN_TOKEN, Faces, Gateway, Tenant, identify, running_gateway, verify

MB = 1024 * 1024


@pytest.fixture(scope="module")
async def small(pg_url: str, redis_server: Any, embedder_app: FastAPI, matcher_app: FastAPI) -> AsyncIterator[Gateway]:
    """A gateway allowing one photo per enrolment and a 1 MB import zip: its whole-request limits are then
    11 MB for enrolment and 7 MB for imports, small enough to overrun cheaply."""
    async with running_gateway(
        pg_url,
        f"unix://{redis_server.socket_file}",
        embedder_app,
        matcher_app,
        max_photos_per_request=1,
        import_max_zip_bytes=MB,
    ) as gw:
        yield gw


async def _tenant(gw: Gateway) -> Tenant:
    admin = gw.client(ADMIN_TOKEN)
    r = await admin.post("/v1/keys", json={"name": "limits", "role": "organiser"})
    assert r.status_code == 201, r.text
    org_key = r.json()
    org = gw.client(org_key["token"])
    r = await org.post("/v1/events", json={"name": "limits"})
    assert r.status_code == 201, r.text
    event = r.json()
    r = await org.post("/v1/keys", json={"name": "gate", "role": "gate", "event_id": event["id"]})
    assert r.status_code == 201, r.text
    gate = r.json()
    return Tenant(org, org_key["id"], event["id"], event, gw.client(gate["token"]), gate["id"])


def _multipart(fields: dict[str, str], files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\ncontent-disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, data in files:
        out.write(f'--{boundary}\r\ncontent-disposition: form-data; name="{name}"; filename="{name}.jpg"\r\n'.encode())
        out.write(b"content-type: image/jpeg\r\n\r\n" + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


async def _chunks(body: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


async def _stored(t: Tenant) -> tuple[int, int]:
    counts = (await t.org.get(f"/v1/events/{t.event_id}/counts")).json()
    return counts["attendees"], counts["admitted"] + counts["denied"] + counts["unknown"]


def _too_large(r: httpx.Response) -> None:
    assert r.status_code == 413, r.text[:300]
    assert r.json()["code"] == "payload_too_large", r.text[:300]


async def test_oversized_requests_are_refused_while_streaming(small: Gateway, faces: Faces) -> None:
    t = await _tenant(small)
    photo = faces.photo("Colin_Powell", 1)[1]
    padding = photo + b"\0" * (6 * MB)  # each part stays under the 10 MB per-photo limit
    calls = len(small.embedder.calls)
    cases: list[tuple[str, Callable[[], Any]]] = []

    body, ctype = _multipart({"name": "Big", "ticket_code": "B-1"}, [("photos", padding), ("photos", padding)])
    url = f"/v1/events/{t.event_id}/attendees"
    cases.append(
        (f"enrol 12 MB, {len(body)} declared", lambda: t.org.post(url, content=body, headers={"content-type": ctype}))
    )
    cases.append(
        ("enrol 12 MB, chunked", lambda: t.org.post(url, content=_chunks(body), headers={"content-type": ctype}))
    )
    frame, fctype = _multipart({"ticket_code": "B-1"}, [("frame", photo + b"\0" * (MAX_IMAGE_BYTES + 2 * MB))])
    cases.append(
        ("verify 12 MB frame", lambda: t.gate.post("/v1/gate/verify", content=frame, headers={"content-type": fctype}))
    )
    cases.append(
        (
            "identify 12 MB, chunked",
            lambda: t.gate.post("/v1/gate/identify", content=_chunks(frame), headers={"content-type": fctype}),
        )
    )
    cases.append(("event JSON of 2 MB", lambda: t.org.post("/v1/events", json={"name": "x" * 2 * MB})))
    zip_body, zctype = _multipart({}, [("csv", b"name,ticket_code\n"), ("photos", b"\0" * 8 * MB)])
    cases.append(
        (
            "import of 8 MB",
            lambda: t.org.post(f"/v1/events/{t.event_id}/imports", content=zip_body, headers={"content-type": zctype}),
        )
    )
    for what, send in cases:
        r = await send()
        assert r.status_code == 413, (what, r.status_code, r.text[:300])
        assert r.headers.get("content-type") == "application/json", (what, r.headers, r.text[:300])
        _too_large(r)
    assert await _stored(t) == (0, 0)
    assert len(small.embedder.calls) == calls, "an oversized request reached the embedder"


async def test_requests_under_the_limits_still_work(small: Gateway, faces: Faces) -> None:
    """The limits leave room for the largest valid request: the maximum photo count at the per-photo limit."""
    t = await _tenant(small)
    photo = faces.photo("Colin_Powell", 1)[1]
    # JPEG decoders stop at the end-of-image marker, so trailing bytes pad the photo to just under 10 MB
    padded = photo + b"\0" * (MAX_IMAGE_BYTES - len(photo) - 1)
    body, ctype = _multipart({"name": "Max", "ticket_code": "M-1"}, [("photos", padded)])
    r = await t.org.post(f"/v1/events/{t.event_id}/attendees", content=body, headers={"content-type": ctype})
    assert r.status_code == 201, r.text[:300]
    r = await verify(t.gate, "M-1", ("f.jpg", padded, "image/jpeg"))
    assert r.status_code == 200 and r.json()["decision"] == "admit", r.text[:300]


async def test_import_zip_over_its_own_limit_is_refused(small: Gateway, faces: Faces) -> None:
    t = await _tenant(small)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("a.jpg", faces.photo("Colin_Powell", 1)[1] + b"\0" * (MB + 10))
    r = await t.org.post(
        f"/v1/events/{t.event_id}/imports",
        files={
            "csv": ("a.csv", b"name,ticket_code,photos\nA,I-1,a.jpg\n", "text/csv"),
            "photos": ("p.zip", buf.getvalue()),
        },
    )
    _too_large(r)
    assert await _stored(t) == (0, 0)


async def _next_second() -> int:
    """Wait for the wall clock's next whole second (the limiter's window) to begin; return it."""
    now = time.time()
    await asyncio.sleep(math.ceil(now) - now + 0.001)
    return int(time.time())


async def test_rate_limit_is_per_gate_key_and_recovers(
    gateway: Gateway, new_tenant: Callable[..., Any], faces: Faces
) -> None:
    """The limiter counts per key and clock second, so the burst starts as a second begins and counts only when
    it ended within that second too (on a loaded machine it may not: then it is tried again in a later one).
    Within one window exactly `limit` calls pass and every other is refused. The refused ones carry real faces,
    so a limiter that let them through would show as embedder calls and logged decisions."""
    t: Tenant = await new_tenant()
    other: Tenant = await new_tenant()
    settings = gateway.app.state.settings
    limit = 3
    old, settings.rate_limit_per_second = settings.rate_limit_per_second, limit
    cheap = ("f.txt", b"x", "text/plain")  # passes the limiter, then refused (415) before any work
    face = faces.photo("Colin_Powell", 2)
    try:
        for _attempt in range(5):
            before = await _stored(t)
            window = await _next_second()
            calls = len(gateway.embedder.calls)
            first = [(await identify(t.gate, cheap)).status_code for _ in range(limit)]
            refused = await asyncio.gather(
                *[identify(t.gate, face) for _ in range(4)], *[verify(t.gate, "T-1", face) for _ in range(3)]
            )
            other_key = (await identify(other.gate, cheap)).status_code
            if int(time.time()) != window:
                # the burst ran into the next second: two windows, so at most `limit` more calls may pass
                passed = [r.status_code for r in refused if r.status_code != 429] + [other_key]
                assert len(passed) <= limit + 1, (first, [r.status_code for r in refused], other_key)
                continue
            break
        else:
            pytest.fail("five bursts of 11 cheap calls never fitted in one second")
        assert first == [415] * limit, first  # the first `limit` calls of the second pass the limiter
        assert [r.status_code for r in refused] == [429] * 7, [(r.status_code, r.text[:100]) for r in refused]
        for r in refused:
            assert r.json()["code"] == "rate_limited" and r.headers["retry-after"] == "1", r.text
        assert other_key == 415, "another gate key was slowed down by this one"
        # refused calls are not decisions and do no work
        assert len(gateway.embedder.calls) == calls, gateway.embedder.calls[calls:]
        assert await _stored(t) == before
        # the key recovers by itself once the window has passed
        await _next_second()
        r = await identify(t.gate, face)
        assert r.status_code == 200 and r.json()["decision"] in ("unknown", "deny"), r.text
    finally:
        settings.rate_limit_per_second = old
