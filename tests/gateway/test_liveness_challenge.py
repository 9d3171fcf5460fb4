"""The head-turn challenge through the public API, on the real stack (embedder with its liveness analysis, matcher,
Postgres, Redis) and real video: a real head turning as asked is admitted, a flat photo turned the same way is a
presentation attack; a challenge is single use, short-lived, bound to its gate key and event; a single frame
cannot skip it; bad bursts are 4xx and store nothing; a fault never admits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from services.tools import headturn
from tests.gateway.conftest import PINNED_THRESHOLD, Gateway, Tenant, enrol, identify, verify

pytestmark = pytest.mark.usefixtures("unthrottled")  # one gate key sends challenges and bursts back to back

Upload = tuple[str, bytes, str]


@pytest.fixture(scope="module")
def clip(faces_dir: Path) -> list[np.ndarray]:
    path = faces_dir / headturn.CLIP
    if not path.is_file():
        pytest.fail(f"{path} is missing (../shared/faces/SOURCES.md lists it)")
    return headturn.read_clip(path)


def uploads(frames: list[np.ndarray]) -> list[Upload]:
    return [(f"frame{i}.jpg", headturn.jpeg(f), "image/jpeg") for i, f in enumerate(frames)]


def live_turn(clip: list[np.ndarray], direction: str) -> list[Upload]:
    return uploads(headturn.turn(clip, direction))


def frontal(clip: list[np.ndarray]) -> Upload:
    return uploads([headturn.camera_frame(clip[headturn.FRONTAL_FRAME])])[0]


async def new_live_event(new_tenant: Any, clip: list[np.ndarray], **fields: Any) -> Tenant:
    t = await new_tenant(
        liveness="challenge", verify_threshold=PINNED_THRESHOLD, identify_threshold=PINNED_THRESHOLD, **fields
    )
    r = await enrol(t.org, t.event_id, name="Interviewee", ticket="LIVE-1", photos=[frontal(clip)])
    assert r.status_code == 201, r.text
    return t


@pytest.fixture(scope="module")
async def live(new_tenant: Any, clip: list[np.ndarray]) -> Tenant:
    return await new_live_event(new_tenant, clip, allow_reentry=True)


async def challenge(gate: httpx.AsyncClient) -> dict[str, Any]:
    r = await gate.post("/v1/gate/challenge")
    assert r.status_code == 201, r.text
    return dict(r.json())


async def burst(
    gate: httpx.AsyncClient, nonce: str, frames: list[Upload], ticket: str | None = None, streamed: int = 0
) -> httpx.Response:
    """A burst to verify (with a ticket) or identify; `streamed`: the frames already sent ahead."""
    data = {"nonce": nonce} | ({"ticket_code": ticket} if ticket else {})
    data |= {"streamed": str(streamed)} if streamed else {}
    path = "/v1/gate/verify/burst" if ticket else "/v1/gate/identify/burst"
    return await gate.post(path, data=data, files=[("frames", f) for f in frames])


async def log(t: Tenant) -> list[dict[str, Any]]:
    r = await t.org.get(f"/v1/events/{t.event_id}/log", params={"limit": 500})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def decision(r: httpx.Response) -> tuple[str, str]:
    assert r.status_code == 200, r.text
    body = r.json()
    assert "liveness" not in body and "failure" not in body, "the gate learns the reason only"
    return body["decision"], body["reason"]


async def test_event_setting_is_created_read_and_changed(new_tenant: Any) -> None:
    t = await new_tenant()
    assert t.event["liveness"] == "off"  # the default: a single frame decides, as before
    r = await t.org.patch(f"/v1/events/{t.event_id}", json={"liveness": "challenge"})
    assert r.status_code == 200 and r.json()["liveness"] == "challenge", r.text
    r = await t.org.patch(f"/v1/events/{t.event_id}", json={"name": "renamed", "liveness": None})
    assert r.json()["liveness"] == "challenge", "null leaves it"
    r = await t.org.patch(f"/v1/events/{t.event_id}", json={"liveness": "maybe"})
    assert r.status_code == 422, r.text
    assert (await t.org.get(f"/v1/events/{t.event_id}")).json()["liveness"] == "challenge"
    r = await t.gate.get("/v1/gate/event")
    assert r.status_code == 200 and r.json() == {"mode": "both", "liveness": "challenge"}, r.text
    assert (await t.org.get("/v1/gate/event")).status_code == 403, "gate keys only"


async def test_challenge_is_random_short_lived_and_needs_a_liveness_event(new_tenant: Any) -> None:
    t = await new_tenant(liveness="challenge")
    issued = [await challenge(t.gate) for _ in range(24)]
    first = issued[0]
    assert set(first) == {"nonce", "direction", "expires_at", "frames", "max_duration_ms"}
    assert first["frames"] == {"min": 4, "max": 12} and first["max_duration_ms"] == 2000
    assert len({c["nonce"] for c in issued}) == 24 and all(len(c["nonce"]) >= 32 for c in issued)
    assert {c["direction"] for c in issued} == {"left", "right"}  # all one way: p = 2^-23
    left = (datetime.fromisoformat(first["expires_at"]) - datetime.now(UTC)).total_seconds()
    assert 0 < left <= 6.5, left
    assert (await t.org.post("/v1/gate/challenge")).status_code == 403, "gate keys only"

    plain = await new_tenant()
    r = await plain.gate.post("/v1/gate/challenge")
    assert (r.status_code, r.json()["code"]) == (403, "liveness_off"), r.text
    r = await burst(plain.gate, first["nonce"], [("f.jpg", b"\xff\xd8\xff", "image/jpeg")] * 4)
    assert (r.status_code, r.json()["code"]) == (403, "liveness_off"), r.text


async def test_a_single_frame_cannot_skip_the_challenge(live: Tenant, clip: list[np.ndarray]) -> None:
    before = len(await log(live))
    for r in (await identify(live.gate, frontal(clip)), await verify(live.gate, "LIVE-1", frontal(clip))):
        assert (r.status_code, r.json()["code"]) == (403, "liveness_required"), r.text
    assert len(await log(live)) == before


def analyses(gateway: Gateway) -> int:
    """Calls the gateway made to the embedder's liveness analysis so far."""
    return sum(1 for c in gateway.embedder.calls if c.endswith("/v1/liveness"))


async def test_live_head_turn_is_admitted_once_per_challenge(
    live: Tenant, clip: list[np.ndarray], gateway: Gateway
) -> None:
    c = await challenge(live.gate)
    frames = live_turn(clip, c["direction"])
    r = await burst(live.gate, c["nonce"], frames)
    assert decision(r) == ("admit", "match"), r.text
    assert r.json()["attendee_name"] == "Interviewee" and r.json()["mode"] == "identify"
    entry = (await log(live))[0]
    assert (entry["decision"], entry["liveness"], entry["mode"]) == ("admit", "live", "identify")
    assert entry["distance"] <= entry["threshold"]
    # the same burst again (a replay): refused without face work, logged as such
    calls = analyses(gateway)
    r = await burst(live.gate, c["nonce"], frames)
    assert decision(r) == ("deny", "liveness_failed")
    entry = (await log(live))[0]
    assert (entry["reason"], entry["liveness"], entry["attendee_id"]) == ("liveness_failed", "challenge_used", None)
    # replayed with the frames reordered: still the spent nonce
    r = await burst(live.gate, c["nonce"], frames[::-1])
    assert decision(r) == ("deny", "liveness_failed")
    assert analyses(gateway) == calls, "a spent nonce costs no analysis"
    # the other direction is answered as well (the clip mirrored or not): ask until it comes up
    other = next(x for x in [await challenge(live.gate) for _ in range(30)] if x["direction"] != c["direction"])
    r = await burst(live.gate, other["nonce"], live_turn(clip, other["direction"]))
    assert decision(r) == ("admit", "match"), r.text


async def test_verify_burst_decides_as_verify_then_anti_passback(new_tenant: Any, clip: list[np.ndarray]) -> None:
    t = await new_live_event(new_tenant, clip, allow_reentry=False)
    c = await challenge(t.gate)
    r = await burst(t.gate, c["nonce"], live_turn(clip, c["direction"]), ticket="LIVE-1")
    assert decision(r) == ("admit", "match"), r.text
    assert r.json()["mode"] == "verify"
    c = await challenge(t.gate)
    r = await burst(t.gate, c["nonce"], live_turn(clip, c["direction"]), ticket="LIVE-1")
    assert decision(r) == ("deny", "already_entered")
    c = await challenge(t.gate)
    r = await burst(t.gate, c["nonce"], live_turn(clip, c["direction"]), ticket="NOBODY")
    assert decision(r) == ("deny", "unknown_ticket")
    rows = await log(t)
    assert [(e["mode"], e["reason"], e["liveness"]) for e in rows[:3]] == [
        ("verify", "unknown_ticket", "live"),
        ("verify", "already_entered", "live"),
        ("verify", "match", "live"),
    ]


async def test_turning_the_other_way_fails_the_challenge(live: Tenant, clip: list[np.ndarray]) -> None:
    c = await challenge(live.gate)
    other = "right" if c["direction"] == "left" else "left"
    r = await burst(live.gate, c["nonce"], live_turn(clip, other))
    assert decision(r) == ("deny", "liveness_failed"), r.text
    entry = (await log(live))[0]
    assert (entry["reason"], entry["liveness"], entry["attendee_id"]) == ("liveness_failed", "wrong_direction", None)


async def test_flat_photo_turned_as_asked_is_a_presentation_attack(live: Tenant, clip: list[np.ndarray]) -> None:
    c = await challenge(live.gate)
    photo = headturn.camera_frame(clip[headturn.FRONTAL_FRAME])  # the enrolled picture itself, printed
    r = await burst(live.gate, c["nonce"], uploads(headturn.planar_turn(photo, **headturn.PRINT_TURN)), ticket="LIVE-1")
    assert decision(r) == ("deny", "presentation_attack"), r.text
    entry = (await log(live))[0]
    assert (entry["reason"], entry["liveness"]) == ("presentation_attack", "planar_motion")
    assert entry["ticket_code"] == "LIVE-1", "the organiser sees whose ticket the attack came with"


async def test_expired_challenge_is_refused_without_analysis(
    live: Tenant, clip: list[np.ndarray], gateway: Gateway
) -> None:
    settings = gateway.app.state.settings
    old, settings.challenge_ttl_s = settings.challenge_ttl_s, 0.2
    try:
        c = await challenge(live.gate)
    finally:
        settings.challenge_ttl_s = old
    await asyncio.sleep(0.5)
    calls = analyses(gateway)
    r = await burst(live.gate, c["nonce"], live_turn(clip, c["direction"]))
    assert decision(r) == ("deny", "liveness_failed")
    assert (await log(live))[0]["liveness"] == "challenge_expired"
    assert analyses(gateway) == calls


async def test_a_challenge_belongs_to_its_gate_key_and_event(
    live: Tenant, new_tenant: Any, clip: list[np.ndarray], gateway: Gateway
) -> None:
    c = await challenge(live.gate)
    frames = live_turn(clip, c["direction"])
    r = await live.org.post("/v1/keys", json={"name": "gate 2", "role": "gate", "event_id": live.event_id})
    assert r.status_code == 201, r.text
    second_gate = gateway.client(r.json()["token"])
    elsewhere = await new_tenant(liveness="challenge")
    for gate, tenant in ((second_gate, live), (elsewhere.gate, elsewhere)):
        r = await burst(gate, c["nonce"], frames)
        assert decision(r) == ("deny", "liveness_failed"), r.text
        assert (await log(tenant))[0]["liveness"] == "challenge_unknown"
    unknown = await burst(live.gate, "x" * 32, frames)
    assert decision(unknown) == ("deny", "liveness_failed")
    assert (await log(live))[0]["liveness"] == "challenge_unknown"
    # the attempts by others did not spend it: its own gate still can
    r = await burst(live.gate, c["nonce"], frames)
    assert decision(r) == ("admit", "match"), r.text


async def test_bad_bursts_are_4xx_and_store_nothing(live: Tenant, clip: list[np.ndarray]) -> None:
    c = await challenge(live.gate)
    frames = live_turn(clip, c["direction"])
    before = len(await log(live))
    cases: list[tuple[dict[str, Any], list[tuple[str, Upload]], int, str]] = [
        ({"nonce": c["nonce"]}, [("frames", f) for f in frames[:3]], 422, "burst_size"),
        ({"nonce": c["nonce"]}, [("frames", f) for f in frames + frames[:5]], 422, "burst_size"),
        ({"nonce": c["nonce"]}, [("frames", ("a.txt", b"hello", "text/plain"))] * 5, 415, "unsupported_media_type"),
        ({"nonce": c["nonce"]}, [("frames", ("e.jpg", b"", "image/jpeg"))] * 5, 400, "bad_request"),
        ({"nonce": "short"}, [("frames", f) for f in frames], 422, "validation_error"),
        ({"nonce": "é" * 32}, [("frames", f) for f in frames], 422, "validation_error"),
        ({}, [("frames", f) for f in frames], 422, "validation_error"),
        ({"nonce": c["nonce"]}, [], 422, "validation_error"),
    ]
    for data, files, status, code in cases:
        r = await live.gate.post("/v1/gate/identify/burst", data=data, files=files or None)
        assert (r.status_code, r.json()["code"]) == (status, code), (data, r.text)
    r = await live.gate.post(
        "/v1/gate/identify/burst", data={"nonce": [c["nonce"], c["nonce"]]}, files=[("frames", f) for f in frames]
    )
    assert (r.status_code, r.json()["code"]) == (400, "duplicate_field"), r.text
    assert len(await log(live)) == before, "nothing logged"
    # nor was the challenge spent: the good burst still decides
    r = await burst(live.gate, c["nonce"], frames)
    assert decision(r) == ("admit", "match"), r.text


async def test_embedder_fault_never_admits(live: Tenant, clip: list[np.ndarray], gateway: Gateway) -> None:
    c = await challenge(live.gate)
    frames = live_turn(clip, c["direction"])
    before = await log(live)
    gateway.embedder.fail = lambda req: req.url.path.endswith("/v1/liveness")
    r = await burst(live.gate, c["nonce"], frames)
    assert (r.status_code, r.json()["code"]) == (503, "dependency_unavailable"), r.text
    assert int(r.headers["retry-after"]) > 0
    assert await log(live) == before, "no decision on a fault"
    gateway.embedder.fail = None
    # nothing was decided, so the challenge was not spent: once the embedder is back it decides once
    r = await burst(live.gate, c["nonce"], frames)
    assert decision(r) == ("admit", "match"), r.text


async def test_one_nonce_sent_twice_at_once_decides_once(live: Tenant, clip: list[np.ndarray]) -> None:
    c = await challenge(live.gate)
    frames = live_turn(clip, c["direction"])
    first, second = await asyncio.gather(burst(live.gate, c["nonce"], frames), burst(live.gate, c["nonce"], frames))
    assert sorted([decision(first), decision(second)]) == [("admit", "match"), ("deny", "liveness_failed")]
    rows = await log(live)
    assert sorted(e["liveness"] for e in rows[:2]) == ["challenge_used", "live"]


# A streamed burst (POST /v1/gate/burst/frames while the person turns, then the rest with `streamed`).


async def part(gate: httpx.AsyncClient, nonce: str, frames: list[Upload], offset: int) -> httpx.Response:
    data = {"nonce": nonce, "offset": str(offset)}
    return await gate.post("/v1/gate/burst/frames", data=data, files=[("frames", f) for f in frames])


def streamed_parts(gateway: Gateway) -> int:
    return sum(1 for c in gateway.embedder.calls if c.endswith("/frames"))


async def test_a_streamed_burst_is_decided_as_the_whole_one(
    live: Tenant, clip: list[np.ndarray], gateway: Gateway
) -> None:
    c = await challenge(live.gate)
    frames = live_turn(clip, c["direction"])
    sent = streamed_parts(gateway)
    r = await part(live.gate, c["nonce"], frames[:3], 0)
    assert (r.status_code, r.json()) == (202, {"frames": 3}), r.text
    r = await part(live.gate, c["nonce"], frames[3:5], 3)
    assert (r.status_code, r.json()) == (202, {"frames": 5}), r.text
    assert streamed_parts(gateway) == sent + 2
    r = await burst(live.gate, c["nonce"], frames[5:], ticket="LIVE-1", streamed=5)
    assert decision(r) == ("admit", "match"), r.text
    entry = (await log(live))[0]
    assert (entry["decision"], entry["liveness"], entry["mode"]) == ("admit", "live", "verify")
    # spent at the decision: no more parts, and the burst again is the spent nonce
    r = await part(live.gate, c["nonce"], frames[:3], 0)
    assert (r.status_code, r.json()["code"]) == (409, "challenge_closed"), r.text
    assert decision(await burst(live.gate, c["nonce"], frames)) == ("deny", "liveness_failed")
    # a flat photo streamed is a presentation attack, as whole
    c = await challenge(live.gate)
    photo = uploads(headturn.planar_turn(headturn.camera_frame(clip[headturn.FRONTAL_FRAME]), **headturn.PRINT_TURN))
    assert (await part(live.gate, c["nonce"], photo[:4], 0)).status_code == 202
    r = await burst(live.gate, c["nonce"], photo[4:], streamed=4)
    assert decision(r) == ("deny", "presentation_attack"), r.text
    assert (await log(live))[0]["liveness"] == "planar_motion"


async def test_streamed_parts_need_this_gates_open_challenge_and_store_nothing(
    live: Tenant, new_tenant: Any, clip: list[np.ndarray], gateway: Gateway
) -> None:
    c = await challenge(live.gate)
    frames = live_turn(clip, c["direction"])
    before = len(await log(live))
    r = await live.org.post("/v1/keys", json={"name": "gate 3", "role": "gate", "event_id": live.event_id})
    second_gate = gateway.client(r.json()["token"])
    elsewhere = await new_tenant(liveness="challenge")
    for gate in (second_gate, elsewhere.gate):
        r = await part(gate, c["nonce"], frames[:3], 0)
        assert (r.status_code, r.json()["code"]) == (409, "challenge_closed"), r.text
    r = await part(live.gate, "x" * 32, frames[:3], 0)
    assert (r.status_code, r.json()["code"]) == (409, "challenge_closed"), r.text
    plain = await new_tenant()
    r = await part(plain.gate, c["nonce"], frames[:3], 0)
    assert (r.status_code, r.json()["code"]) == (403, "liveness_off"), r.text
    assert (await live.org.post("/v1/gate/burst/frames", data={"nonce": c["nonce"], "offset": "0"})).status_code == 403
    cases: list[tuple[list[Upload], int, int, str]] = [
        (frames + frames[:4], 0, 422, "burst_size"),  # 12 ahead leave nothing for the decision
        (frames[:2], 10, 422, "burst_size"),
        ([("a.txt", b"hello", "text/plain")], 0, 415, "unsupported_media_type"),
        ([], 0, 422, "validation_error"),
        (frames[:2], -1, 422, "validation_error"),
    ]
    for files, offset, status, code in cases:
        r = await part(live.gate, c["nonce"], files, offset)
        assert (r.status_code, r.json()["code"]) == (status, code), (offset, r.text)
    assert len(await log(live)) == before, "nothing logged"
    # the end's own bounds: streamed + these frames make a burst
    for files, streamed in ((frames[:2], 11), (frames[:1], 2)):
        r = await burst(live.gate, c["nonce"], files, streamed=streamed)
        assert (r.status_code, r.json()["code"]) == (422, "burst_size"), r.text
    assert len(await log(live)) == before


async def test_a_burst_not_all_streamed_is_409_unspent_and_the_whole_burst_decides(
    live: Tenant, clip: list[np.ndarray], gateway: Gateway
) -> None:
    before = len(await log(live))
    c = await challenge(live.gate)
    frames = live_turn(clip, c["direction"])
    # the end claims more than arrived (a part lost on the way), then claims frames never streamed at all
    assert (await part(live.gate, c["nonce"], frames[:3], 0)).status_code == 202
    r = await burst(live.gate, c["nonce"], frames[5:], streamed=5)
    assert (r.status_code, r.json()["code"]) == (409, "burst_incomplete"), r.text
    r = await burst(live.gate, c["nonce"], frames[3:], streamed=3)  # the embedder ended that burst at the refusal
    assert (r.status_code, r.json()["code"]) == (409, "burst_incomplete"), r.text
    # a part out of step is refused too
    assert (await part(live.gate, c["nonce"], frames[:3], 0)).status_code == 202
    r = await part(live.gate, c["nonce"], frames[5:7], 5)
    assert (r.status_code, r.json()["code"]) == (409, "burst_incomplete"), r.text
    # a fault on a part: 503, nothing decided
    gateway.embedder.fail = lambda req: req.url.path.endswith("/frames")
    try:
        r = await part(live.gate, c["nonce"], frames[3:5], 3)
        assert (r.status_code, r.json()["code"]) == (503, "dependency_unavailable"), r.text
    finally:
        gateway.embedder.fail = None
    assert len(await log(live)) == before, "no decision yet"
    # the nonce was never spent: the whole burst decides
    r = await burst(live.gate, c["nonce"], frames)
    assert decision(r) == ("admit", "match"), r.text
