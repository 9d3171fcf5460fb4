"""Races the gateway must win: a retried enrolment arriving twice at once, gates seeing the same ticket or face at
once, and the 1:K margin rule."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.common.db import sqlalchemy_url
from tests.gateway.conftest import PINNED_THRESHOLD, Faces, Tenant, enrol, identify, verify


async def test_concurrent_retries_with_one_key_enrol_once(new_tenant, faces: Faces) -> None:
    t = await new_tenant()
    photos = [faces.photo("Vladimir_Putin", 4)]
    headers = {"Idempotency-Key": "vlad"}
    a, b = await asyncio.gather(
        enrol(t.org, t.event_id, name="Vladimir", ticket="C-1", photos=photos, headers=headers),
        enrol(t.org, t.event_id, name="Vladimir", ticket="C-1", photos=photos, headers=headers),
    )
    assert (a.status_code, b.status_code) == (201, 201), (a.text, b.text)
    assert a.json() == b.json()
    items = (await t.org.get(f"/v1/events/{t.event_id}/attendees")).json()["items"]
    assert len(items) == 1 and items[0]["templates"] == 1


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
    assert all(b["attendee_id"] == attendee_id for b in bodies), bodies


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


async def test_identify_margin_rule_answers_ambiguous(new_tenant, faces: Faces) -> None:
    # A margin larger than any possible gap: whoever is nearest, the second-nearest is "too close".
    t = await new_tenant(identify_threshold=PINNED_THRESHOLD, identify_margin=2.0)
    for person, n in (("Hugo_Chavez", 1), ("Ariel_Sharon", 1)):
        r = await enrol(t.org, t.event_id, name=person, ticket=person, photos=[faces.photo(person, n)])
        assert r.status_code == 201, r.text
    body = (await identify(t.gate, faces.photo("Hugo_Chavez", 6))).json()
    assert (body["decision"], body["reason"]) == ("unknown", "ambiguous"), body
    assert body["attendee_id"] is None and body["distance"] <= PINNED_THRESHOLD


async def _top_two(embedder_app: FastAPI, matcher_app: FastAPI, event_id: str, frame: bytes) -> list[dict[str, Any]]:
    """The two nearest attendees to the frame's face, straight from the real embedder and matcher: what the
    gate's margin rule is applied to (the gate embeds with the gate profile too)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=embedder_app), base_url="http://e") as e:
        params = {"profile": "gate", "max_faces": 5}
        r = await e.post("/v1/embed", content=frame, params=params, headers={"content-type": "image/jpeg"})
        assert r.status_code == 200 and len(r.json()["faces"]) == 1, r.text[:300]
        body = r.json()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=matcher_app), base_url="http://m") as m:
        r = await m.post(
            f"/v1/galleries/{event_id}/search",
            json={"model_id": body["model"]["id"], "embedding": body["faces"][0]["embedding"], "k": 2},
        )
        assert r.status_code == 200, r.text[:300]
    return list(r.json()["matches"])


async def test_identify_margin_admits_a_clear_gap_and_refuses_a_near_tie(
    new_tenant, faces: Faces, embedder_app: FastAPI, matcher_app: FastAPI
) -> None:
    """The margin rule on both sides of the real gap between the nearest attendee and the second: a margin under
    the gap admits (an implementation that always answers `ambiguous` fails here), one over it is `ambiguous`;
    and two attendees enrolled from the same photo (a gap of 0) are a tie under any margin, admitted without one."""
    t = await new_tenant(identify_threshold=PINNED_THRESHOLD, identify_margin=0.0, allow_reentry=True)
    ids = {}
    for person, n in (("Hugo_Chavez", 1), ("Ariel_Sharon", 1)):
        r = await enrol(t.org, t.event_id, name=person, ticket=person, photos=[faces.photo(person, n)])
        assert r.status_code == 201, r.text
        ids[person] = r.json()["attendee"]["id"]
    probe = faces.photo("Hugo_Chavez", 6)
    top = await _top_two(embedder_app, matcher_app, t.event_id, probe[1])
    assert [m["attendee_id"] for m in top] == [ids["Hugo_Chavez"], ids["Ariel_Sharon"]], top
    assert top[0]["distance"] <= PINNED_THRESHOLD, top  # within the threshold: only the margin can refuse
    gap = top[1]["distance"] - top[0]["distance"]
    assert gap > 0.01, top  # a clear gap, so that half and twice it are far from it on either side

    async def identify_with(margin: float) -> dict[str, Any]:
        r = await t.org.patch(f"/v1/events/{t.event_id}", json={"identify_margin": margin})
        assert r.status_code == 200 and r.json()["identify_margin"] == margin, r.text
        r = await identify(t.gate, probe)
        assert r.status_code == 200, r.text
        return dict(r.json())

    body = await identify_with(round(gap / 2, 6))
    assert (body["decision"], body["reason"], body["attendee_id"]) == ("admit", "match", ids["Hugo_Chavez"]), body
    body = await identify_with(round(min(gap * 2, 2.0), 6))
    assert (body["decision"], body["reason"], body["attendee_id"]) == ("unknown", "ambiguous", None), body

    # a twin: the same photo enrolled again under another name and ticket is exactly as near as Hugo
    r = await enrol(t.org, t.event_id, name="Twin", ticket="TWIN", photos=[faces.photo("Hugo_Chavez", 1)])
    assert r.status_code == 201, r.text
    body = await identify_with(0.001)
    assert (body["decision"], body["reason"], body["attendee_id"]) == ("unknown", "ambiguous", None), body
    body = await identify_with(0.0)  # no margin rule: the nearest of the two is admitted
    assert body["decision"] == "admit" and body["attendee_id"] in (ids["Hugo_Chavez"], r.json()["attendee"]["id"])


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
