"""Enrolment is all or nothing and idempotent; revoke and erase remove what they say."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import MATCHER_HEADERS
from tests.gateway.conftest import PINNED_THRESHOLD, Faces, Gateway, enrol, verify


@pytest.fixture(scope="session")
async def matcher(matcher_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Direct access to the matcher, to check what it really stores."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=matcher_app), base_url="http://matcher", headers=MATCHER_HEADERS
    ) as c:
        yield c


async def gallery_templates(matcher: httpx.AsyncClient, event_id: str) -> int:
    r = await matcher.get(f"/v1/galleries/{event_id}")
    assert r.status_code == 200, r.text
    return int(r.json()["templates"])


async def attendee_count(org: httpx.AsyncClient, event_id: str) -> int:
    r = await org.get(f"/v1/events/{event_id}/attendees")
    assert r.status_code == 200, r.text
    return len(r.json()["items"])


async def test_quality_rejection_stores_nothing_and_lists_every_photo(
    new_tenant, faces: Faces, matcher: httpx.AsyncClient
) -> None:
    t = await new_tenant()
    photos = [faces.photo("Colin_Powell", 1), faces.other("noface"), faces.other("group")]
    r = await enrol(t.org, t.event_id, name="Colin", ticket="Q-1", photos=photos)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "quality_rejected"
    by_index = {e["index"]: e for e in body["errors"]}
    assert set(by_index) == {0, 1, 2}
    assert by_index[0]["passed"] is True
    assert by_index[1]["passed"] is False and "no_face" in by_index[1]["reasons"]
    assert by_index[2]["passed"] is False and "multiple_faces" in by_index[2]["reasons"]
    assert await attendee_count(t.org, t.event_id) == 0
    assert await gallery_templates(matcher, t.event_id) == 0


async def test_idempotent_retry_returns_the_original(new_tenant, faces: Faces, matcher: httpx.AsyncClient) -> None:
    t = await new_tenant()
    photos = [faces.photo("Kit_Harington", 1)]
    headers = {"Idempotency-Key": "enrol-kit-1"}
    first = await enrol(t.org, t.event_id, name="Kit", ticket="I-1", photos=photos, headers=headers)
    assert first.status_code == 201, first.text
    again = await enrol(t.org, t.event_id, name="Kit", ticket="I-1", photos=photos, headers=headers)
    assert again.status_code == 201
    assert again.json() == first.json()
    assert await attendee_count(t.org, t.event_id) == 1
    assert await gallery_templates(matcher, t.event_id) == 1
    # the same key for another request is refused; without a key a duplicate ticket is a conflict
    other = await enrol(t.org, t.event_id, name="Someone", ticket="I-2", photos=photos, headers=headers)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    dup = await enrol(t.org, t.event_id, name="Kit", ticket="I-1", photos=photos)
    assert dup.status_code == 409 and dup.json()["code"] == "ticket_exists"
    assert await gallery_templates(matcher, t.event_id) == 1


async def test_add_photos_revoke_and_erase_attendee(
    new_tenant, faces: Faces, matcher: httpx.AsyncClient, gateway: Gateway
) -> None:
    t = await new_tenant(allow_reentry=True, verify_threshold=PINNED_THRESHOLD)
    r = await enrol(t.org, t.event_id, name="Hugo", ticket="E-1", photos=[faces.photo("Hugo_Chavez", 1)])
    assert r.status_code == 201, r.text
    aid = r.json()["attendee"]["id"]
    r = await verify(t.gate, "E-1", faces.photo("Hugo_Chavez", 6))  # fills the template cache
    assert r.json()["decision"] == "admit", r.text
    redis = gateway.app.state.redis
    key = f"fg:tpl:{t.event_id}:{aid}"
    assert await redis.exists(key)
    r = await t.org.post(
        f"/v1/events/{t.event_id}/attendees/{aid}/photos", files=[("photos", faces.photo("Hugo_Chavez", 2))]
    )
    assert r.status_code == 201, r.text
    assert r.json()["attendee"]["templates"] == 3  # two photos and the matcher's mean of them
    assert not await redis.exists(key)  # invalidated
    assert await gallery_templates(matcher, t.event_id) == 3

    r = await t.org.delete(f"/v1/events/{t.event_id}/attendees/{aid}")
    assert r.status_code == 200, r.text
    assert r.json()["templates"] == 3
    assert await gallery_templates(matcher, t.event_id) == 0
    assert not await redis.exists(key)
    assert (await t.org.get(f"/v1/events/{t.event_id}/attendees/{aid}")).status_code == 404
    # the log keeps the decision, without the person
    log = (await t.org.get(f"/v1/events/{t.event_id}/log")).json()["items"]
    assert log and all(e["attendee_id"] is None and e["ticket_code"] is None for e in log)
    assert log[0]["decision"] == "admit"
    r = await verify(t.gate, "E-1", faces.photo("Hugo_Chavez", 6))
    assert r.json()["reason"] == "unknown_ticket"


async def test_erase_event_removes_everything(new_tenant, faces: Faces, matcher: httpx.AsyncClient) -> None:
    t = await new_tenant()
    r = await enrol(t.org, t.event_id, name="Tony", ticket="X-1", photos=[faces.photo("Tony_Blair", 2)])
    assert r.status_code == 201
    await verify(t.gate, "X-1", faces.other("noface"))
    r = await t.org.delete(f"/v1/events/{t.event_id}")
    assert r.status_code == 200, r.text
    assert r.json() == {"erased": True, "attendees": 1, "log_rows": 1, "templates": 1}
    assert (await t.org.get(f"/v1/events/{t.event_id}")).status_code == 404
    assert (await matcher.get(f"/v1/galleries/{t.event_id}")).status_code == 404
    # its gate keys went with it
    r = await verify(t.gate, "X-1", faces.other("noface"))
    assert r.status_code == 401


async def test_erase_event_purges_its_cached_templates(new_tenant, faces: Faces, gateway: Gateway) -> None:
    """Erasing an event removes every one of its attendees' templates from Redis, and nobody else's."""
    redis = gateway.app.state.redis
    t = await new_tenant(allow_reentry=True, verify_threshold=PINNED_THRESHOLD)
    other = await new_tenant(allow_reentry=True, verify_threshold=PINNED_THRESHOLD)
    cached = []
    for tenant, person, n, ticket in (
        (t, "Hugo_Chavez", 1, "P-1"),
        (t, "Ariel_Sharon", 1, "P-2"),
        (other, "Tony_Blair", 2, "P-1"),
    ):
        r = await enrol(tenant.org, tenant.event_id, name=person, ticket=ticket, photos=[faces.photo(person, n)])
        assert r.status_code == 201, r.text
        r = await verify(tenant.gate, ticket, faces.photo(person, n))  # a 1:1 check fills the cache
        assert r.json()["decision"] == "admit", r.text
        key = f"fg:tpl:{tenant.event_id}:{r.json()['attendee_id']}"
        assert await redis.exists(key), key
        cached.append(key)
    assert sorted([k.decode() async for k in redis.scan_iter(match=f"fg:tpl:{t.event_id}:*")]) == sorted(cached[:2])

    r = await t.org.delete(f"/v1/events/{t.event_id}")
    assert r.status_code == 200, r.text
    assert [k async for k in redis.scan_iter(match=f"fg:tpl:{t.event_id}:*")] == []
    assert await redis.exists(cached[2]), "another event's cached templates went too"


async def test_one_idempotency_key_string_under_two_api_keys_is_two_requests(
    new_tenant, faces: Faces, gateway: Gateway, admin: httpx.AsyncClient, matcher: httpx.AsyncClient
) -> None:
    """Idempotency keys belong to the API key that sent them: the same string from another organiser key (of
    the same tenant, or of another tenant) never replays the first key's response, and is not 'reused' either."""
    key = {"Idempotency-Key": f"shared-{uuid.uuid4().hex[:8]}"}
    photos = [faces.photo("Hugo_Chavez", 1)]
    a = await new_tenant()
    b = await new_tenant()  # another tenant
    r = await admin.post("/v1/keys", json={"name": "a second", "role": "organiser", "same_tenant_as": a.org_key_id})
    assert r.status_code == 201, r.text
    a2 = gateway.client(r.json()["token"])

    first = await enrol(a.org, a.event_id, name="Hugo", ticket="K-1", photos=photos, headers=key)
    assert first.status_code == 201, first.text
    # another tenant, the same string and the same form, into its own event: its own new attendee
    theirs = await enrol(b.org, b.event_id, name="Hugo", ticket="K-1", photos=photos, headers=key)
    assert theirs.status_code == 201, theirs.text
    assert theirs.json()["attendee"]["id"] != first.json()["attendee"]["id"]
    assert theirs.json()["attendee"]["event_id"] == b.event_id
    # a second key of the same tenant, the identical request: not a replay of the first key's 201, but its own
    # answer (the ticket is taken)...
    same = await enrol(a2, a.event_id, name="Hugo", ticket="K-1", photos=photos, headers=key)
    assert (same.status_code, same.json()["code"]) == (409, "ticket_exists"), same.text
    # ...and another ticket (another person: one face, one ticket) under that string is a new request for this
    # key, not a reuse of another key's
    other = await enrol(
        a2, a.event_id, name="Ariel", ticket="K-2", photos=[faces.photo("Ariel_Sharon", 1)], headers=key
    )
    assert other.status_code == 201, other.text
    # while the first key still gets its own answer replayed
    again = await enrol(a.org, a.event_id, name="Hugo", ticket="K-1", photos=photos, headers=key)
    assert again.status_code == 201 and again.json() == first.json()
    assert await attendee_count(a.org, a.event_id) == 2 and await attendee_count(b.org, b.event_id) == 1
    assert await gallery_templates(matcher, a.event_id) == 2 and await gallery_templates(matcher, b.event_id) == 1
