"""Races the gateway must win: a retried enrolment arriving twice at once, two gates seeing the same ticket at
once, and the 1:K margin rule."""

from __future__ import annotations

import asyncio

from tests.gateway.conftest import PINNED_THRESHOLD, Faces, enrol, identify, last_log, verify


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


async def test_two_gates_one_ticket_admit_once(new_tenant, faces: Faces) -> None:
    t = await new_tenant(verify_threshold=PINNED_THRESHOLD)
    r = await enrol(t.org, t.event_id, name="Colin", ticket="P-1", photos=[faces.photo("Colin_Powell", 1)])
    assert r.status_code == 201, r.text
    r = await t.org.post("/v1/keys", json={"name": "gate 2", "role": "gate", "event_id": t.event_id})
    gate2 = t.gate.__class__(
        transport=t.gate._transport, base_url="http://gateway", headers={"authorization": f"Bearer {r.json()['token']}"}
    )
    async with gate2:
        first, second = await asyncio.gather(
            verify(t.gate, "P-1", faces.photo("Colin_Powell", 2)),
            verify(gate2, "P-1", faces.photo("Colin_Powell", 2)),
        )
    decisions = sorted((x.json()["decision"], x.json()["reason"]) for x in (first, second))
    assert decisions == [("admit", "match"), ("deny", "already_entered")], decisions


async def test_identify_margin_rule_answers_ambiguous(new_tenant, faces: Faces) -> None:
    # A margin larger than any possible gap: whoever is nearest, the second-nearest is "too close".
    t = await new_tenant(identify_threshold=PINNED_THRESHOLD, identify_margin=2.0)
    for person, n in (("Hugo_Chavez", 1), ("Ariel_Sharon", 1)):
        r = await enrol(t.org, t.event_id, name=person, ticket=person, photos=[faces.photo(person, n)])
        assert r.status_code == 201, r.text
    body = (await identify(t.gate, faces.photo("Hugo_Chavez", 6))).json()
    assert (body["decision"], body["reason"]) == ("unknown", "ambiguous"), body
    assert body["attendee_id"] is None and (await last_log(t))["distance"] <= PINNED_THRESHOLD
