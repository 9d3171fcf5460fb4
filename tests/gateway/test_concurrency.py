"""Races the gateway must win: a retried enrolment arriving twice at once (the gates' races are in
test_anti_passback.py), and the 1:K margin rule."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI

from tests.conftest import EMBEDDER_HEADERS, MATCHER_HEADERS
from tests.gateway.conftest import PINNED_THRESHOLD, Faces, enrol, identify, last_log


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


async def test_identify_margin_rule_answers_ambiguous(new_tenant, faces: Faces) -> None:
    # A margin larger than any possible gap: whoever is nearest, the second-nearest is "too close".
    t = await new_tenant(identify_threshold=PINNED_THRESHOLD, identify_margin=2.0)
    for person, n in (("Hugo_Chavez", 1), ("Ariel_Sharon", 1)):
        r = await enrol(t.org, t.event_id, name=person, ticket=person, photos=[faces.photo(person, n)])
        assert r.status_code == 201, r.text
    body = (await identify(t.gate, faces.photo("Hugo_Chavez", 6))).json()
    assert (body["decision"], body["reason"]) == ("unknown", "ambiguous"), body
    assert body["attendee_id"] is None and (await last_log(t))["distance"] <= PINNED_THRESHOLD


async def _top_two(embedder_app: FastAPI, matcher_app: FastAPI, event_id: str, frame: bytes) -> list[dict[str, Any]]:
    """The two nearest attendees to the frame's face, straight from the real embedder and matcher: what the
    gate's margin rule is applied to (the gate embeds with the gate profile too)."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=embedder_app), base_url="http://e", headers=EMBEDDER_HEADERS
    ) as e:
        params = {"profile": "gate", "max_faces": 5}
        r = await e.post("/v1/embed", content=frame, params=params, headers={"content-type": "image/jpeg"})
        assert r.status_code == 200 and len(r.json()["faces"]) == 1, r.text[:300]
        body = r.json()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=matcher_app), base_url="http://m", headers=MATCHER_HEADERS
    ) as m:
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

    # a twin: the same photo enrolled again under another name and ticket (on purpose: it is a duplicate face) is
    # exactly as near as Hugo; a tie is never an identification, not even with the margin at 0
    r = await t.org.post(
        f"/v1/events/{t.event_id}/attendees",
        data={"name": "Twin", "ticket_code": "TWIN", "allow_duplicate_face": "true"},
        files=[("photos", faces.photo("Hugo_Chavez", 1))],
    )
    assert r.status_code == 201, r.text
    body = await identify_with(0.001)
    assert (body["decision"], body["reason"], body["attendee_id"]) == ("unknown", "ambiguous", None), body
    body = await identify_with(0.0)
    assert (body["decision"], body["reason"], body["attendee_id"]) == ("unknown", "ambiguous", None), body
