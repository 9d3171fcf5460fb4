"""Best-of + mean templates (issue 16): an attendee with 2+ photo templates also holds their normalised mean,
remade by every write that changes their photos, counted with the gallery, gone with the attendee or the event.

Real app, real Postgres. The resident (two-replica) case is in test_resident.py, beside its fixtures.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from tests.matcher.conftest import MODEL, running_app, template, unit


def normalised_mean(vecs: np.ndarray) -> np.ndarray:
    m = vecs.astype(np.float64).mean(axis=0)
    return m / np.linalg.norm(m)


async def held(client: httpx.AsyncClient, event: uuid.UUID, attendee: uuid.UUID) -> dict[str, list[dict[str, Any]]]:
    r = await client.get(f"/v1/galleries/{event}/attendees/{attendee}/templates")
    assert r.status_code == 200, r.text
    out: dict[str, list[dict[str, Any]]] = {"photo": [], "mean": []}
    for t in r.json()["templates"]:
        out[t["kind"]].append(t)
    return out


async def add(client: httpx.AsyncClient, event: uuid.UUID, attendee: uuid.UUID, vecs: np.ndarray) -> dict[str, Any]:
    r = await client.post(f"/v1/galleries/{event}/templates", json={"templates": [template(attendee, v) for v in vecs]})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def search(client: httpx.AsyncClient, event: uuid.UUID, q: np.ndarray, k: int = 5) -> dict[str, Any]:
    r = await client.post(f"/v1/galleries/{event}/search", json={"model_id": MODEL, "embedding": q.tolist(), "k": k})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def tombstones(app: FastAPI, event: uuid.UUID) -> set[str]:
    async with app.state.sessionmaker() as session:
        rows = await session.execute(
            text("SELECT template_id FROM matcher_tombstones WHERE event_id = :e"), {"e": event}
        )
        return {str(r[0]) for r in rows}


async def test_two_photos_hold_a_third_template_their_normalised_mean(app_client, new_gallery) -> None:
    _, client = app_client
    event = await new_gallery()
    rng = np.random.default_rng(31)
    person, single = uuid.uuid4(), uuid.uuid4()
    photos = unit(rng, 2)
    created = await add(client, event, person, photos * np.array([[3.0], [0.2]], dtype=np.float32))  # raw scale
    assert created["attendee_templates"] == {str(person): 3} and len(created["ids"]) == 2

    got = await held(client, event, person)
    assert {t["id"] for t in got["photo"]} == set(created["ids"]) and len(got["mean"]) == 1
    mean = got["mean"][0]
    # the mean of the unit photo templates (the matcher normalises each first), normalised again
    np.testing.assert_allclose(mean["embedding"], normalised_mean(photos), atol=1e-6)
    assert mean["quality"] is None and mean["model_id"] == MODEL

    # a 1-photo attendee has no mean
    assert (await add(client, event, single, unit(rng, 1)))["attendee_templates"] == {str(single): 1}
    assert (await held(client, event, single))["mean"] == []

    # counted: the gallery, every search (what the gateway's 1:K threshold reads) and 1:1 all see 3 + 1
    stats = (await client.get(f"/v1/galleries/{event}")).json()
    assert (stats["templates"], stats["attendees"]) == (4, 2)
    q = np.asarray(mean["embedding"], dtype=np.float32)
    found = await search(client, event, q)
    assert (found["templates"], found["attendees"]) == (4, 2)
    assert found["matches"][0]["template_id"] == mean["id"]  # the nearest of the attendee's templates counts
    assert found["matches"][0]["distance"] == pytest.approx(0.0, abs=1e-5)
    d = await client.post(
        f"/v1/galleries/{event}/attendees/{person}/distance", json={"model_id": MODEL, "embedding": q.tolist()}
    )
    assert d.json()["templates"] == 3 and d.json()["template_id"] == mean["id"]


async def test_a_new_photo_replaces_the_mean_and_erasure_removes_it(app_client, new_gallery) -> None:
    app, client = app_client
    event = await new_gallery()
    rng = np.random.default_rng(32)
    person, other = uuid.uuid4(), uuid.uuid4()
    photos = unit(rng, 3)
    await add(client, event, person, photos[:2])
    await add(client, event, other, unit(rng, 2))
    old = (await held(client, event, person))["mean"][0]

    assert (await add(client, event, person, photos[2:]))["attendee_templates"] == {str(person): 4}
    now = await held(client, event, person)
    assert len(now["photo"]) == 3 and len(now["mean"]) == 1 and now["mean"][0]["id"] != old["id"]
    np.testing.assert_allclose(now["mean"][0]["embedding"], normalised_mean(photos), atol=1e-6)
    assert old["id"] in await tombstones(app, event)  # resident copies drop the old mean at this very version
    found = await search(client, event, np.asarray(old["embedding"], dtype=np.float32), k=2)
    assert old["id"] not in {m["template_id"] for m in found["matches"]}
    assert found["templates"] == 4 + 3

    # erasing the attendee takes the mean with the photos; erasing the event takes the rest
    assert (await client.delete(f"/v1/galleries/{event}/attendees/{person}")).json() == {"deleted": 4}
    assert (await client.get(f"/v1/galleries/{event}")).json()["templates"] == 3
    async with app.state.sessionmaker() as session:
        left = await session.execute(
            text("SELECT count(*) FROM face_templates WHERE event_id = :e AND attendee_id = :a"),
            {"e": event, "a": person},
        )
        assert left.scalar() == 0
    assert (await client.delete(f"/v1/galleries/{event}")).json() == {"deleted": 3}
    async with app.state.sessionmaker() as session:
        rows = await session.execute(text("SELECT count(*) FROM face_templates WHERE event_id = :e"), {"e": event})
        assert rows.scalar() == 0


async def test_setting_off_keeps_photos_only_and_never_keeps_a_stale_mean(pg_url: str, app_client, new_gallery) -> None:
    _, on = app_client
    event = await new_gallery()
    rng = np.random.default_rng(33)
    fresh, had_mean = uuid.uuid4(), uuid.uuid4()
    await add(on, event, had_mean, unit(rng, 2))  # made while the setting was on
    async with running_app(pg_url, mean_templates=False) as (_, off):
        assert (await add(off, event, fresh, unit(rng, 2)))["attendee_templates"] == {str(fresh): 2}
        assert (await held(off, event, fresh))["mean"] == []
        # a write with the setting off still removes the old mean, which no longer matches the photos
        assert (await add(off, event, had_mean, unit(rng, 1)))["attendee_templates"] == {str(had_mean): 3}
        assert (await held(off, event, had_mean))["mean"] == []
        stats = (await off.get(f"/v1/galleries/{event}")).json()
        assert (stats["templates"], stats["attendees"]) == (5, 2)
        found = await search(off, event, unit(rng, 1)[0])
        assert found["templates"] == 5


async def test_photos_that_cancel_out_keep_no_mean(app_client, new_gallery) -> None:
    _, client = app_client
    event = await new_gallery()
    person = uuid.uuid4()
    v = unit(np.random.default_rng(34), 1)[0]
    assert (await add(client, event, person, np.vstack([v, -v])))["attendee_templates"] == {str(person): 2}
    assert len((await held(client, event, person))["photo"]) == 2
