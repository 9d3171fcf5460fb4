"""Anti-passback under races: several gates deciding on the same person at the same moment (1:1 with the same
ticket, or 1:K with the same face) make one entry. Each race is forced, not hoped for: the test holds the
attendee's row lock until every request is waiting on it, so a check-then-update would admit them all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.common.db import sqlalchemy_url
from tests.gateway.conftest import PINNED_THRESHOLD, Faces, Tenant, enrol, identify, verify

GATES = 4  # gates deciding on one person at the same moment


async def more_gates(t: Tenant, n: int) -> list[httpx.AsyncClient]:
    """`n` more gate keys for the tenant's event, each with its own client (closed by the caller)."""
    gates = []
    for i in range(n):
        r = await t.org.post("/v1/keys", json={"name": f"gate {i + 2}", "role": "gate", "event_id": t.event_id})
        assert r.status_code == 201, r.text
        gates.append(
            t.gate.__class__(
                transport=t.gate._transport,
                base_url="http://gateway",
                headers={"authorization": f"Bearer {r.json()['token']}"},
            )
        )
    return gates


async def all_at_once(pg_url: str, attendee_id: str, sends: list[Awaitable[httpx.Response]]) -> list[httpx.Response]:
    """Run the gate requests so that all of them reach the entry update together, however the event loop and the
    embedder's batches happen to order them: the attendee's row is locked here first, the requests are let go
    once every one is waiting on that lock (seen in pg_stat_activity), or has already finished (an implementation
    that takes no row lock), and the lock is then released. A check-then-update would then admit them all."""
    engine = create_async_engine(sqlalchemy_url(pg_url))
    try:
        async with engine.connect() as holder, engine.connect() as watcher:
            lock = await holder.begin()
            await holder.execute(text("SELECT 1 FROM attendees WHERE id = :id FOR UPDATE"), {"id": attendee_id})
            tasks = [asyncio.ensure_future(s) for s in sends]
            waiting_sql = text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE '%attendees%'"
                " AND pid <> pg_backend_pid()"
            )
            deadline = asyncio.get_running_loop().time() + 120
            while True:
                waiting = (await watcher.execute(waiting_sql)).scalar_one()
                await watcher.rollback()  # pg_stat_activity is read once per transaction: a fresh one each time
                if waiting + sum(t.done() for t in tasks) >= len(tasks):
                    break
                assert asyncio.get_running_loop().time() < deadline, f"{waiting} of {len(tasks)} at the lock"
                await asyncio.sleep(0.02)  # polling the database for the condition, not a guess at a duration
            await lock.commit()
        return list(await asyncio.gather(*tasks))
    finally:
        await engine.dispose()


def one_admit(answers: list[httpx.Response], attendee_id: str) -> None:
    bodies = [a.json() for a in answers]
    assert all(a.status_code == 200 for a in answers), bodies
    decisions = sorted((b["decision"], b["reason"]) for b in bodies)
    assert decisions == [("admit", "match")] + [("deny", "already_entered")] * (len(answers) - 1), bodies
    assert [b["attendee_id"] for b in bodies if b["decision"] == "admit"] == [attendee_id], bodies


async def test_gates_verifying_one_ticket_at_once_admit_once(new_tenant, faces: Faces, pg_url: str) -> None:
    """Anti-passback under 1:1: the ticket and its holder's face at several gates at the same moment is one entry."""
    t = await new_tenant(verify_threshold=PINNED_THRESHOLD, allow_reentry=False)
    r = await enrol(t.org, t.event_id, name="Colin", ticket="P-1", photos=[faces.photo("Colin_Powell", 1)])
    assert r.status_code == 201, r.text
    aid = r.json()["attendee"]["id"]
    gates = [t.gate, *await more_gates(t, GATES - 1)]
    try:
        one_admit(
            await all_at_once(pg_url, aid, [verify(g, "P-1", faces.photo("Colin_Powell", 2)) for g in gates]), aid
        )
    finally:
        for g in gates[1:]:
            await g.aclose()
    r = await t.org.get(f"/v1/events/{t.event_id}/attendees/{aid}")
    assert r.status_code == 200 and r.json()["entries"] == 1, r.text


async def test_gates_identifying_one_person_at_once_admit_once(new_tenant, faces: Faces, pg_url: str) -> None:
    """Anti-passback under 1:K: the same face at several gates at the same moment is one entry. Exactly one admit,
    the others `already_entered`, and the attendee counted as entered once."""
    t = await new_tenant(identify_threshold=PINNED_THRESHOLD, identify_margin=0.0, allow_reentry=False)
    r = await enrol(t.org, t.event_id, name="Colin", ticket="R-1", photos=[faces.photo("Colin_Powell", 1)])
    assert r.status_code == 201, r.text
    aid = r.json()["attendee"]["id"]
    gates = [t.gate, *await more_gates(t, GATES - 1)]
    try:
        one_admit(await all_at_once(pg_url, aid, [identify(g, faces.photo("Colin_Powell", 2)) for g in gates]), aid)
    finally:
        for g in gates[1:]:
            await g.aclose()
    r = await t.org.get(f"/v1/events/{t.event_id}/attendees/{aid}")
    assert r.status_code == 200 and r.json()["entries"] == 1, r.text
    counts = (await t.org.get(f"/v1/events/{t.event_id}/counts")).json()
    assert (counts["admitted"], counts["entered"]) == (1, 1), counts
