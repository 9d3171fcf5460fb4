"""Resident galleries: in-memory hnswlib copies that answer only at Postgres's version.

Two matcher apps (two replicas) share the session's Postgres; every change is made through replica B and
searched through replica A straight after, with no wait: A must never answer from a copy that misses it.
The cut-over is lowered so that a gallery of a few hundred templates is "large" (searched by HNSW, resident).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.common.db import sqlalchemy_url
from tests.matcher.conftest import DIM, MODEL, running_app, template, unit, with_means

SETTINGS: dict[str, Any] = {"exact_max_templates": 50, "resident_catch_up_rows": 20, "resident_build_threads": 1}
PEOPLE, PER = 100, 4


@pytest.fixture(scope="module")
async def replicas(pg_url: str) -> AsyncIterator[tuple[tuple[FastAPI, httpx.AsyncClient], httpx.AsyncClient]]:
    async with running_app(pg_url, **SETTINGS) as a, running_app(pg_url, **SETTINGS) as (_, b):
        yield a, b


def face_like(rng: np.random.Generator) -> tuple[list[uuid.UUID], np.ndarray, np.ndarray]:
    """PEOPLE identities, PER captures each (centre + noise), unit length: (attendee per row, vectors, centres)."""
    centres = unit(rng, PEOPLE)
    noise = rng.standard_normal((PEOPLE * PER, DIM)).astype(np.float32) * (0.5 / np.sqrt(DIM))
    vecs = np.repeat(centres, PER, axis=0) + noise
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    people = [uuid.uuid4() for _ in range(PEOPLE)]
    return [people[i // PER] for i in range(PEOPLE * PER)], vecs, centres


async def make_gallery(
    client: httpx.AsyncClient, owners: list[uuid.UUID], vecs: np.ndarray, event: uuid.UUID | None = None
) -> uuid.UUID:
    event = event or uuid.uuid4()
    assert (await client.put(f"/v1/galleries/{event}", json={"model_id": MODEL})).status_code == 200
    for lo in range(0, len(vecs), 100):
        body = {"templates": [template(a, v) for a, v in zip(owners[lo : lo + 100], vecs[lo : lo + 100], strict=True)]}
        r = await client.post(f"/v1/galleries/{event}/templates", json=body)
        assert r.status_code == 201, r.text
    return event


async def search(client: httpx.AsyncClient, event: uuid.UUID, q: np.ndarray, k: int = 5) -> dict[str, Any]:
    r = await client.post(f"/v1/galleries/{event}/search", json={"model_id": MODEL, "embedding": q.tolist(), "k": k})
    assert r.status_code == 200, r.text
    return r.json()


async def resident_search(app: FastAPI, client: httpx.AsyncClient, event: uuid.UUID, q: np.ndarray) -> dict:
    """Search once (which schedules the copy's load or catch-up), wait for it, and search again from memory."""
    await search(client, event, q)
    await app.state.residents.wait_idle()
    out = await search(client, event, q)
    assert out["mode"] == "resident", out
    return out


def exact(owners: list[uuid.UUID], vecs: np.ndarray, q: np.ndarray, k: int) -> list[tuple[str, float]]:
    d = 1.0 - vecs @ q
    best: dict[uuid.UUID, float] = {}
    for i in np.argsort(d, kind="stable"):
        best.setdefault(owners[i], float(d[i]))
    return [(str(a), dist) for a, dist in sorted(best.items(), key=lambda x: x[1])[:k]]


async def test_resident_answers_equal_numpy(replicas) -> None:
    (app, a), _ = replicas
    rng = np.random.default_rng(11)
    owners, vecs, centres = face_like(rng)
    event = await make_gallery(a, owners, vecs)
    probes = centres + rng.standard_normal(centres.shape).astype(np.float32) * (0.5 / np.sqrt(DIM))
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    first = await resident_search(app, a, event, probes[0])
    assert first["matches"][0]["attendee_id"] == str(owners[0])
    same = 0
    for q in probes[:50]:
        got = await search(a, event, q)
        assert got["mode"] == "resident"
        want = exact(*with_means(owners, vecs), q, 5)
        same += [m["attendee_id"] for m in got["matches"]] == [w[0] for w in want]
        for m, w in zip(got["matches"], want, strict=False):
            if m["attendee_id"] == w[0]:
                assert m["distance"] == pytest.approx(w[1], abs=1e-5)
    assert same >= 49, f"top-5 equal to NumPy's for {same}/50 probes"


async def test_erasure_through_another_replica_shows_in_the_next_search(replicas, pg_url: str) -> None:
    (app, a), b = replicas
    rng = np.random.default_rng(12)
    owners, vecs, _ = face_like(rng)
    event = await make_gallery(b, owners, vecs)
    q = vecs[0]
    assert (await resident_search(app, a, event, q))["matches"][0]["attendee_id"] == str(owners[0])

    r = await b.delete(f"/v1/galleries/{event}/attendees/{owners[0]}")
    assert r.status_code == 200, r.text
    now = await search(a, event, q)  # no wait: A's copy is one version behind and must not answer
    assert str(owners[0]) not in [m["attendee_id"] for m in now["matches"]]
    assert now["mode"] == "hnsw"
    caught_up = await resident_search(app, a, event, q)
    assert str(owners[0]) not in [m["attendee_id"] for m in caught_up["matches"]]
    assert caught_up["matches"][0]["attendee_id"] == exact(*with_means(owners[PER:], vecs[PER:]), q, 1)[0][0]

    # The tombstones say which template ids went, and nothing about whom they belonged to.
    engine = create_async_engine(sqlalchemy_url(pg_url))
    async with engine.connect() as conn:
        cols = (
            await conn.execute(
                text("SELECT column_name FROM information_schema.columns WHERE table_name = 'matcher_tombstones'")
            )
        ).scalars()
        assert set(cols) == {"event_id", "version", "template_id"}
        gone = (
            await conn.execute(text("SELECT count(*) FROM matcher_tombstones WHERE event_id = :e"), {"e": event})
        ).scalar_one()
        assert gone == PER + 1  # their photos and their mean
    await engine.dispose()


async def test_enrolment_through_another_replica_shows_in_the_next_search(replicas) -> None:
    (app, a), b = replicas
    rng = np.random.default_rng(13)
    owners, vecs, _ = face_like(rng)
    event = await make_gallery(b, owners, vecs)
    await resident_search(app, a, event, vecs[0])

    newcomer, q = uuid.uuid4(), unit(rng, 1)[0]
    r = await b.post(f"/v1/galleries/{event}/templates", json={"templates": [template(newcomer, q)]})
    assert r.status_code == 201, r.text
    now = await search(a, event, q)
    assert now["matches"][0]["attendee_id"] == str(newcomer)
    assert now["matches"][0]["distance"] == pytest.approx(0.0, abs=1e-5)
    caught_up = await resident_search(app, a, event, q)  # a small change: applied in place
    assert caught_up["matches"][0]["attendee_id"] == str(newcomer)

    # More rows than resident_catch_up_rows: the copy is rebuilt off to the side, then answers again.
    crowd = [uuid.uuid4() for _ in range(30)]
    body = {"templates": [template(p, v) for p, v in zip(crowd, unit(rng, 30), strict=True)]}
    assert (await b.post(f"/v1/galleries/{event}/templates", json=body)).status_code == 201
    rebuilt = await resident_search(app, a, event, q)
    assert rebuilt["matches"][0]["attendee_id"] == str(newcomer)
    assert app.state.residents.galleries[event].live == PEOPLE * (PER + 1) + 1 + 30  # each PER photos + mean


async def test_dropped_gallery_is_gone_from_memory_too(replicas) -> None:
    (app, a), b = replicas
    rng = np.random.default_rng(14)
    owners, vecs, _ = face_like(rng)
    event = await make_gallery(b, owners, vecs)
    await resident_search(app, a, event, vecs[0])
    assert event in app.state.residents.galleries

    assert (await b.delete(f"/v1/galleries/{event}")).status_code == 200
    r = await a.post(f"/v1/galleries/{event}/search", json={"model_id": MODEL, "embedding": vecs[0].tolist(), "k": 1})
    assert r.status_code == 404 and r.json()["code"] == "gallery_not_found"
    assert event not in app.state.residents.galleries


async def test_resident_copies_keep_events_apart_and_check_the_model(replicas) -> None:
    (app, a), _ = replicas
    rng = np.random.default_rng(15)
    owners, vecs, _ = face_like(rng)
    one = await make_gallery(a, owners, vecs)
    twin_owners = [uuid.uuid4() for _ in owners]
    two = await make_gallery(a, twin_owners, vecs)  # an exact copy of every template, other attendees
    for event, people in ((one, set(map(str, owners))), (two, set(map(str, twin_owners)))):
        got = await resident_search(app, a, event, vecs[7])
        assert got["matches"][0]["distance"] == pytest.approx(0.0, abs=1e-5)
        assert {m["attendee_id"] for m in got["matches"]} <= people

    r = await a.post(
        f"/v1/galleries/{one}/search", json={"model_id": "dlib-resnet-128", "embedding": [0.1] * 128, "k": 1}
    )
    assert r.status_code == 422 and r.json()["code"] == "model_mismatch"


async def test_a_gallery_created_again_under_the_same_event_is_never_answered_from_the_old_copy(replicas) -> None:
    """Versions come from one sequence: the new gallery's history can never line up with the old copy's."""
    (app, a), b = replicas
    rng = np.random.default_rng(16)
    owners, vecs, _ = face_like(rng)
    event = await make_gallery(b, owners, vecs)
    old = await resident_search(app, a, event, vecs[0])
    assert old["matches"][0]["attendee_id"] == str(owners[0])

    # Dropped and created again through B with other people and the same number of writes.
    assert (await b.delete(f"/v1/galleries/{event}")).status_code == 200
    others = [uuid.uuid4() for _ in owners]
    await make_gallery(b, others, vecs, event=event)
    now = await search(a, event, vecs[0])
    assert {m["attendee_id"] for m in now["matches"]} <= set(map(str, others)), now
    again = await resident_search(app, a, event, vecs[0])
    assert again["matches"][0]["attendee_id"] == str(others[0])


async def test_one_attendee_with_more_templates_than_the_list_still_leaves_room_for_k(replicas) -> None:
    """The candidate list doubles until its templates hold k attendees (here one attendee fills the first one)."""
    (app, a), _ = replicas
    rng = np.random.default_rng(17)
    owners, vecs, _ = face_like(rng)
    q = unit(rng, 1)[0]
    crowd = uuid.uuid4()
    near = q + rng.standard_normal((200, DIM)).astype(np.float32) * (0.05 / np.sqrt(DIM))
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    event = await make_gallery(a, owners + [crowd] * 200, np.vstack([vecs, near]))
    got = await resident_search(app, a, event, q)
    assert [m["attendee_id"] for m in got["matches"]][:1] == [str(crowd)]
    assert len({m["attendee_id"] for m in got["matches"]}) == 5
    want = exact(owners + [crowd] * 200, np.vstack([vecs, near]), q, 5)
    assert [m["attendee_id"] for m in got["matches"]] == [w[0] for w in want]


async def test_a_replaced_mean_template_is_never_answered_stale(replicas) -> None:
    """A new photo through B replaces the attendee's mean (old one tombstoned, new one added, one version): A's copy
    must not answer with the old mean, neither before it catches up nor after."""
    (app, a), b = replicas
    rng = np.random.default_rng(18)
    owners, vecs, _ = face_like(rng)
    event = await make_gallery(b, owners, vecs)
    person = owners[0]

    async def mean_of(person: uuid.UUID) -> dict[str, Any]:
        r = await b.get(f"/v1/galleries/{event}/attendees/{person}/templates")
        (mean,) = [t for t in r.json()["templates"] if t["kind"] == "mean"]
        return mean  # type: ignore[no-any-return]

    old = await mean_of(person)
    old_q = np.asarray(old["embedding"], dtype=np.float32)
    first = await resident_search(app, a, event, old_q)
    assert first["matches"][0]["template_id"] == old["id"]  # the copy holds the mean

    extra = unit(rng, 1)[0]  # a photo far from the others: it moves the mean
    r = await b.post(f"/v1/galleries/{event}/templates", json={"templates": [template(person, extra)]})
    assert r.status_code == 201 and r.json()["attendee_templates"] == {str(person): PER + 2}
    new = await mean_of(person)
    new_q = np.asarray(new["embedding"], dtype=np.float32)
    now = await search(a, event, new_q)  # no wait: A's copy is a version behind
    assert now["mode"] == "hnsw" and now["matches"][0]["template_id"] == new["id"]
    assert now["templates"] == PEOPLE * (PER + 1) + 1
    for got in (await search(a, event, old_q), await resident_search(app, a, event, old_q)):
        assert old["id"] not in {m["template_id"] for m in got["matches"]}
    caught_up = await resident_search(app, a, event, new_q)
    assert caught_up["matches"][0]["template_id"] == new["id"]
    assert caught_up["matches"][0]["distance"] == pytest.approx(0.0, abs=1e-5)
