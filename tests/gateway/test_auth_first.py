"""Issue 14: work before authentication. The key, its role and the event in the path are checked from the headers
before a byte of the body is read (`services/gateway/authfirst.py`), and a body must arrive within its deadline
(`bodylimit.py`: 408 and the connection closed). Organiser and admin keys are rate limited before the body too.

Measured at the ASGI boundary (how many body chunks the app pulled) and on a real socket (a uvicorn server in this
process serving the real gateway app): what a keyless or slow client costs the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from tests.gateway.conftest import ADMIN_TOKEN, Gateway, Tenant, running_gateway

MB = 1024 * 1024
CHUNK = 64 * 1024


async def asgi_post(
    app: Any, path: str, headers: dict[str, str], total: int, content_type: str = "multipart/form-data; boundary=b"
) -> tuple[int, int, dict[str, str]]:
    """POST a `total`-byte body in 64 KB chunks straight into the app: (status, bytes the app pulled, headers)."""
    pulled = 0
    status = 0
    response_headers: dict[str, str] = {}

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if pulled >= total:
            await asyncio.sleep(3600)  # a client that sends nothing more
        n = min(CHUNK, total - pulled)
        pulled += n
        return {"type": "http.request", "body": b"x" * n, "more_body": pulled < total}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            response_headers.update({k.decode(): v.decode() for k, v in message.get("headers", [])})

    hdrs = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    hdrs += [(b"content-type", content_type.encode()), (b"content-length", str(total).encode())]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "headers": hdrs,
        "client": ("127.0.0.1", 1), "server": ("gateway", 80), "root_path": "", "app": app,
    }  # fmt: skip
    await asyncio.wait_for(app(scope, receive, send), 60)
    return status, pulled, response_headers


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
async def tenants(new_tenant: Any) -> tuple[Tenant, Tenant]:
    return await new_tenant(), await new_tenant()


def _token(client: Any) -> str:
    return str(client.headers["authorization"]).split(" ", 1)[1]


async def test_a_keyless_60_mb_body_is_refused_before_a_byte_is_read(gateway: Gateway, tenants: Any) -> None:
    a, _ = tenants
    status, pulled, headers = await asgi_post(gateway.app, f"/v1/events/{a.event_id}/attendees", {}, 60 * MB)
    assert (status, pulled) == (401, 0)
    assert headers["connection"] == "close" and headers["www-authenticate"] == "Bearer"
    print(f"\nkeyless 60 MB enrolment body: 401 after {pulled} bytes read")


@pytest.mark.parametrize("route", ["attendees", "imports", "photos", "gate"])
async def test_no_body_is_read_for_any_refusal_decided_by_the_headers(
    route: str, gateway: Gateway, tenants: Any
) -> None:
    a, b = tenants
    aid = uuid.uuid4()
    paths = {
        "attendees": f"/v1/events/{a.event_id}/attendees",
        "imports": f"/v1/events/{a.event_id}/imports",
        "photos": f"/v1/events/{a.event_id}/attendees/{aid}/photos",
        "gate": "/v1/gate/identify",
    }
    path = paths[route]
    org_a, org_b, gate_a = _token(a.org), _token(b.org), _token(a.gate)
    cases: list[tuple[str, dict[str, str], int]] = [
        ("no key", {}, 401),
        ("unknown key", _bearer("fg_" + "z" * 43), 401),
        ("another scheme", {"Authorization": f"Basic {org_a}"}, 401),
    ]
    if route == "gate":
        cases += [("an organiser key", _bearer(org_a), 403), ("the admin key", _bearer(ADMIN_TOKEN), 403)]
    else:
        cases += [("a gate key", _bearer(gate_a), 403), ("another tenant's organiser", _bearer(org_b), 404)]
    for name, headers, want in cases:
        # several hundred MB, as the import attack sent; nothing of it may be pulled
        status, pulled, resp = await asgi_post(gateway.app, path, headers, 300 * MB)
        assert (status, pulled) == (want, 0), (name, status, pulled)
        assert resp.get("connection") == "close", name


async def test_the_handlers_still_get_the_body_when_the_headers_pass(gateway: Gateway, tenants: Any) -> None:
    a, _ = tenants
    # an authorised organiser's malformed multipart: read, and refused by the handler's parsing
    status, pulled, _ = await asgi_post(
        gateway.app, f"/v1/events/{a.event_id}/attendees", _bearer(_token(a.org)), 200_000
    )
    assert pulled > 0 and status == 400, (status, pulled)


# --- rate limits of organiser and admin keys ---------------------------------------------------------------------


@pytest.fixture
async def limited(
    pg_url: str, redis_server: Any, embedder_app: FastAPI, matcher_app: FastAPI
) -> AsyncIterator[Gateway]:
    async with running_gateway(
        pg_url,
        f"unix://{redis_server.socket_file}",
        embedder_app,
        matcher_app,
        organiser_rate_limit_per_second=5,
        rate_limit_per_second=2,
    ) as gw:
        yield gw


async def test_organiser_and_admin_keys_are_rate_limited_before_the_body(limited: Gateway) -> None:
    admin = limited.client(ADMIN_TOKEN)
    r = await admin.post("/v1/keys", json={"name": "rl", "role": "organiser"})
    assert r.status_code in (201, 429), r.text
    while r.status_code == 429:  # the admin's own budget may be spent by the fixture's calls this second
        await asyncio.sleep(0.2)
        r = await admin.post("/v1/keys", json={"name": "rl", "role": "organiser"})
    org = limited.client(r.json()["token"])
    other = limited.client(await _new_org(admin))
    await _next_second()
    statuses = [(await org.get("/v1/events")).status_code for _ in range(12)]
    assert statuses.count(429) >= 6 and statuses[:5] == [200] * 5, statuses
    r = await org.get("/v1/events")
    if r.status_code == 429:
        assert r.headers["retry-after"] == "1" and r.json()["code"] == "rate_limited"
    assert (await other.get("/v1/events")).status_code == 200  # per key: another organiser is unaffected
    # refused before the body: a flooding key's uploads are not read either
    for _ in range(6):
        status, pulled, _ = await asgi_post(
            limited.app, "/v1/events", _bearer(_token(org)), 900_000, "application/json"
        )
        if status == 429:
            break
    assert (status, pulled) == (429, 0)
    await asyncio.sleep(1.1)
    assert (await org.get("/v1/events")).status_code == 200  # recovers by itself


async def test_a_flooding_gate_key_is_refused_before_its_frames_are_read(limited: Gateway) -> None:
    admin = limited.client(ADMIN_TOKEN)
    org = limited.client(await _new_org(admin))
    r = await org.post("/v1/events", json={"name": "flood"})
    while r.status_code == 429:
        await asyncio.sleep(0.2)
        r = await org.post("/v1/events", json={"name": "flood"})
    event_id = r.json()["id"]
    r = await org.post("/v1/keys", json={"name": "g", "role": "gate", "event_id": event_id})
    gate_token = r.json()["token"]
    await _next_second()
    results = [await asgi_post(limited.app, "/v1/gate/identify", _bearer(gate_token), 2 * MB) for _ in range(5)]
    refused = [(status, pulled) for status, pulled, _ in results if status == 429]
    assert len(refused) >= 2 and all(pulled == 0 for _, pulled in refused), [(s, p) for s, p, _ in results]


async def _new_org(admin: Any) -> str:
    while True:
        r = await admin.post("/v1/keys", json={"name": "rl2", "role": "organiser"})
        if r.status_code == 201:
            return str(r.json()["token"])
        await asyncio.sleep(0.2)


async def _next_second() -> None:
    await asyncio.sleep(1.0 - (time.time() % 1.0) + 0.01)  # a fresh fixed window


# --- slow bodies, on a real socket --------------------------------------------------------------------------------


@pytest.fixture
async def served(pg_url: str, redis_server: Any, embedder_app: FastAPI, matcher_app: FastAPI) -> AsyncIterator[Any]:
    """The real gateway app behind a real uvicorn server on a free port, with a 1.5 s body grace."""
    async with running_gateway(
        pg_url,
        f"unix://{redis_server.socket_file}",
        embedder_app,
        matcher_app,
        body_timeout_s=1.5,
        body_min_bytes_per_s=64 * 1024,
    ) as gw:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = uvicorn.Config(gw.app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.02)
        try:
            yield gw, port
        finally:
            server.should_exit = True
            await task


async def _raw_request(port: int, head: str, body: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + body)
    await writer.drain()
    return reader, writer


async def _answer_then_eof(reader: asyncio.StreamReader, timeout: float) -> tuple[int, bytes]:
    """The response's status, and everything up to the server closing the connection (must happen)."""
    data = b""
    async with asyncio.timeout(timeout):  # read to EOF: the server must close
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionError:
                break  # closed with our unread bytes in its buffer: a reset, after the answer
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]), data


async def test_a_keyless_body_on_a_socket_gets_401_and_the_connection_closed(served: Any) -> None:
    _, port = served
    head = (
        "POST /v1/gate/identify HTTP/1.1\r\nHost: gw\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {60 * MB}\r\n\r\n"
    )
    start = time.perf_counter()
    reader, writer = await _raw_request(port, head, b"x" * 4096)
    status, data = await _answer_then_eof(reader, 10)
    writer.close()
    assert status == 401 and b"connection: close" in data.lower(), data[:300]
    print(f"\nkeyless 60 MB declared on a socket: 401 and closed in {time.perf_counter() - start:.3f} s")


async def test_trickled_bodies_are_cut_at_the_deadline(served: Any, new_tenant: Any) -> None:
    """30 connections each sending a byte every 0.5 s (an authorised organiser's enrolment): every one gets 408
    and is closed once the grace is spent, and the gateway still answers others meanwhile."""
    gw, port = served
    admin = gw.client(ADMIN_TOKEN)
    r = await admin.post("/v1/keys", json={"name": "slow", "role": "organiser"})
    org_token = r.json()["token"]
    org = gw.client(org_token)
    r = await org.post("/v1/events", json={"name": "slow"})
    event_id = r.json()["id"]
    head = (
        f"POST /v1/events/{event_id}/attendees HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {org_token}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
    )

    async def trickler() -> tuple[int, float]:
        start = time.perf_counter()
        # a well-formed start, then a field value that never ends
        reader, writer = await _raw_request(port, head, b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nA')
        answer = b""
        try:
            while time.perf_counter() - start < 30:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), 0.5)
                except TimeoutError:
                    with contextlib.suppress(ConnectionError):
                        writer.write(b"a")
                        await writer.drain()
                    continue
                except ConnectionError:
                    break  # closed (a reset: our last byte met a closed socket)
                if not chunk:
                    break  # closed
                answer += chunk
        finally:
            writer.close()
        status = int(answer.split(b" ", 2)[1]) if answer else 0
        return status, time.perf_counter() - start

    results = await asyncio.gather(*(trickler() for _ in range(30)))
    statuses = [s for s, _ in results]
    took = max(t for _, t in results)
    assert statuses == [408] * 30, statuses
    assert took < 6.0, took  # 1.5 s grace (+ the few bytes at 64 KB/s) and scheduling on a busy machine
    print(f"\n30 trickling connections: all 408 and closed, the last after {took:.2f} s (grace 1.5 s)")
    async with asyncio.timeout(10):
        reader, writer = await _raw_request(port, "GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n", b"")
        status, _ = await _answer_then_eof(reader, 10)
        writer.close()
    assert status == 200
    # nothing was stored by the cut requests
    r = await org.get(f"/v1/events/{event_id}/attendees")
    assert r.status_code == 200 and r.json()["items"] == [], r.text


async def test_an_honest_slow_upload_at_the_minimum_rate_is_not_cut(served: Any) -> None:
    """Past the grace, a body still arriving at the minimum rate is read to the end (here an organiser's JSON)."""
    _, port = served
    body = b'{"name": "slow but honest", "mode": "both"}'
    body = body[:-1] + b" " * 150_000 + b"}"  # 150 KB at ~100 KB/s: 1.5 s, past the 1.5 s grace in total
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode())
    await asyncio.sleep(1.0)  # most of the grace spent before the first byte
    for i in range(0, len(body), 10_000):
        writer.write(body[i : i + 10_000])
        await writer.drain()
        await asyncio.sleep(0.1)
    status, data = await _answer_then_eof(reader, 15)
    writer.close()
    assert status == 201, data[:300]
