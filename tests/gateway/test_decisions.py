"""Enrol real photos, then 1:1 and 1:K decisions through the real embedder and matcher."""

from __future__ import annotations

import uuid

import pytest

from services.contracts.models import DEFAULT_MODEL_ID
from tests.gateway.conftest import PINNED_THRESHOLD, Faces, Tenant, enrol, identify, last_log, verify

# identity -> (ticket, enrolled photos); the other photos are held back for the gate
ENROLLED = {
    "Ariel_Sharon": ("T-ARIEL", (1, 2)),
    "Colin_Powell": ("T-COLIN", (1, 2)),
    "Tony_Blair": ("T-TONY", (2, 3)),
    "Angelina_Jolie": ("T-ANGIE", (1, 2)),
    "Jerry_Seinfeld": ("T-JERRY", (1, 3)),
}
# The event pins its thresholds, so these tests do not move when the model's calibrated defaults do.
THRESHOLD = PINNED_THRESHOLD
# These tests fire frames back to back from one gate key; rate limiting has its own test.
pytestmark = pytest.mark.usefixtures("unthrottled")


@pytest.fixture(scope="module")
async def event(new_tenant, faces: Faces) -> tuple[Tenant, dict[str, str]]:
    t = await new_tenant(
        name="Decisions",
        mode="both",
        allow_reentry=False,
        verify_threshold=THRESHOLD,
        identify_threshold=THRESHOLD,
    )
    ids: dict[str, str] = {}
    for identity, (ticket, enrolled) in ENROLLED.items():
        r = await enrol(
            t.org,
            t.event_id,
            name=identity.replace("_", " "),
            ticket=ticket,
            photos=[faces.photo(identity, n) for n in enrolled],
        )
        assert r.status_code == 201, r.text
        assert r.json()["templates_added"] == 2
        ids[identity] = r.json()["attendee"]["id"]
    return t, ids


async def test_verify_admits_the_ticket_holder_then_anti_passback(event, faces: Faces) -> None:
    t, ids = event
    r = await verify(t.gate, "T-ARIEL", faces.photo("Ariel_Sharon", 3))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["decision"] == "admit", body
    assert body["reason"] == "match"
    assert body["attendee_name"] == "Ariel Sharon"
    assert body["attendee_id"] == ids["Ariel_Sharon"]
    entry = await last_log(t)
    assert entry["distance"] <= entry["threshold"] == THRESHOLD
    assert "distance" not in body and "threshold" not in body  # the device learns the decision, not the score
    assert body["model_id"] == DEFAULT_MODEL_ID
    assert body["request_id"] and body["latency_ms"] > 0
    # the same ticket again, the same face: anti-passback
    r = await verify(t.gate, "T-ARIEL", faces.photo("Ariel_Sharon", 5))
    body = r.json()
    assert (body["decision"], body["reason"]) == ("deny", "already_entered"), body
    assert body["attendee_name"] is None
    assert (await last_log(t))["distance"] is not None


async def test_verify_denies_another_persons_face(event, faces: Faces) -> None:
    t, _ = event
    r = await verify(t.gate, "T-COLIN", faces.photo("Angelina_Jolie", 5))
    body = r.json()
    assert (body["decision"], body["reason"]) == ("deny", "face_mismatch"), body
    entry = await last_log(t)
    assert entry["distance"] > entry["threshold"]
    assert body["attendee_name"] is None and body["attendee_id"] is None


async def test_unknown_ticket_still_checks_the_face(event, faces: Faces, gateway) -> None:
    t, _ = event
    name, data, _ = faces.photo("Colin_Powell", 3)
    r = await t.gate.post(
        "/v1/gate/verify",
        data={"ticket_code": "NO-SUCH-TICKET"},
        files={"frame": (name, data, "application/octet-stream")},  # the type is sniffed from the bytes
        headers={"X-Request-ID": "trace-unknown-ticket"},
    )
    body = r.json()
    assert (body["decision"], body["reason"]) == ("deny", "unknown_ticket"), body
    assert body["attendee_id"] is None
    # the request id is ours to answer with and is forwarded downstream
    assert body["request_id"] == r.headers["x-request-id"] == "trace-unknown-ticket"
    assert "trace-unknown-ticket" in gateway.embedder.request_ids


async def test_revoked_ticket_is_denied_and_logged_with_distance(event, faces: Faces) -> None:
    t, ids = event
    r = await t.org.post(f"/v1/events/{t.event_id}/attendees/{ids['Angelina_Jolie']}/revoke")
    assert r.status_code == 200 and r.json()["revoked_at"]
    r = await verify(t.gate, "T-ANGIE", faces.photo("Angelina_Jolie", 3))
    body = r.json()
    assert (body["decision"], body["reason"]) == ("deny", "revoked"), body
    assert (await last_log(t))["distance"] is not None  # the face check ran
    # 1:K finds her, and still denies
    r = await identify(t.gate, faces.photo("Angelina_Jolie", 4))
    body = r.json()
    assert (body["decision"], body["reason"]) == ("deny", "revoked"), body


async def test_no_face_and_multiple_faces(event, faces: Faces) -> None:
    t, _ = event
    r = await verify(t.gate, "T-COLIN", faces.other("noface"))
    assert (r.json()["decision"], r.json()["reason"]) == ("deny", "no_face"), r.text
    r = await identify(t.gate, faces.other("group"))
    assert (r.json()["decision"], r.json()["reason"]) == ("deny", "multiple_faces"), r.text


async def test_identify_admits_the_right_person_and_not_a_stranger(event, faces: Faces) -> None:
    t, ids = event
    r = await identify(t.gate, faces.photo("Jerry_Seinfeld", 5))
    body = r.json()
    assert r.status_code == 200, r.text
    assert (body["decision"], body["attendee_id"]) == ("admit", ids["Jerry_Seinfeld"]), body
    assert body["attendee_name"] == "Jerry Seinfeld"
    r = await identify(t.gate, faces.photo("Vladimir_Putin", 2))
    body = r.json()
    assert body["decision"] == "unknown", body
    assert body["reason"] == "no_match"
    assert body["attendee_id"] is None and body["attendee_name"] is None
    # anti-passback applies to 1:K as well
    r = await identify(t.gate, faces.photo("Jerry_Seinfeld", 6))
    assert (r.json()["decision"], r.json()["reason"]) == ("deny", "already_entered"), r.text


async def test_access_log_and_counts(event) -> None:
    t, _ = event
    r = await t.org.get(f"/v1/events/{t.event_id}/log", params={"limit": 3})
    assert r.status_code == 200, r.text
    page = r.json()
    assert len(page["items"]) == 3 and page["next_cursor"]
    seen = [e["id"] for e in page["items"]]
    while page["next_cursor"]:
        page = (
            await t.org.get(f"/v1/events/{t.event_id}/log", params={"limit": 3, "cursor": page["next_cursor"]})
        ).json()
        seen += [e["id"] for e in page["items"]]
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen))
    entry = (await t.org.get(f"/v1/events/{t.event_id}/log", params={"decision": "admit"})).json()["items"][0]
    assert entry["gate_key_id"] == t.gate_key_id and entry["model_id"] == DEFAULT_MODEL_ID
    assert entry["threshold"] and entry["latency_ms"] > 0 and entry["mode"] in ("verify", "identify")
    denies = (await t.org.get(f"/v1/events/{t.event_id}/log", params={"decision": "deny"})).json()["items"]
    assert denies and all(e["decision"] == "deny" for e in denies)
    r = await t.org.get(f"/v1/events/{t.event_id}/log", params={"gate": t.gate_key_id, "since": "2000-01-01T00:00:00Z"})
    # every decision was this gate's and after 2000: the newest default page (50) of them, in order
    assert [e["id"] for e in r.json()["items"]] == seen[:50], r.text[:300]
    # and the filters do filter: another gate, or a time after the last decision, finds nothing
    r = await t.org.get(f"/v1/events/{t.event_id}/log", params={"gate": str(uuid.uuid4())})
    assert r.status_code == 200 and r.json()["items"] == [], r.text[:300]
    r = await t.org.get(f"/v1/events/{t.event_id}/log", params={"since": "2999-01-01T00:00:00Z"})
    assert r.status_code == 200 and r.json()["items"] == [], r.text[:300]
    counts = (await t.org.get(f"/v1/events/{t.event_id}/counts")).json()
    assert counts["admitted"] >= 2
    assert counts["denied_by_reason"].get("face_mismatch", 0) >= 1
    assert counts["denied_by_reason"].get("already_entered", 0) >= 2
    assert counts["unknown"] >= 1
    assert counts["attendees"] == len(ENROLLED) and counts["entered"] >= 2
    assert counts["admitted"] + counts["denied"] + counts["unknown"] == len(seen)


async def test_gate_identify_on_verify_only_event_is_refused(new_tenant, faces: Faces) -> None:
    t = await new_tenant(mode="verify")
    r = await identify(t.gate, faces.photo("Tony_Blair", 1))
    assert r.status_code == 403 and r.json()["code"] == "mode_not_allowed"


async def test_invalid_frames(event) -> None:
    t, _ = event
    r = await verify(t.gate, "T-COLIN", ("f.txt", b"hello", "text/plain"))
    assert r.status_code == 415
    r = await verify(t.gate, "T-COLIN", ("f.jpg", b"not a jpeg at all", "image/jpeg"))
    assert r.status_code in (400, 422), r.text
    r = await t.gate.post("/v1/gate/verify", data={"ticket_code": "x"})
    assert r.status_code == 422
    r = await verify(t.gate, "T-COLIN", ("big.jpg", b"\xff\xd8\xff" + b"\0" * (10 * 1024 * 1024), "image/jpeg"))
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    r = await enrol(t.org, t.event_id, name="Many", ticket="MANY", photos=[("a.jpg", b"x", "image/jpeg")] * 11)
    assert r.status_code == 400, r.text


async def test_metrics_count_decisions(gateway) -> None:
    r = await gateway.client().get("/metrics")
    assert r.status_code == 200
    assert 'facegate_gateway_decisions_total{decision="admit",mode="verify",reason="match"}' in r.text
