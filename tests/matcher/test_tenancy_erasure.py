"""Tenancy (a search never crosses events) and erasure (deleted means gone, rows included)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import numpy as np
from fastapi import FastAPI
from sqlalchemy import text

from services.matcher import write_store
from tests.matcher.conftest import MODEL, template, unit


async def _search(client: httpx.AsyncClient, event: uuid.UUID, q: np.ndarray, k: int = 10) -> list[str]:
    r = await client.post(
        f"/v1/galleries/{event}/search", json={"model_id": MODEL, "embedding": [float(x) for x in q], "k": k}
    )
    assert r.status_code == 200, r.text
    return [m["attendee_id"] for m in r.json()["matches"]]


async def _rows(app: FastAPI, where: str, **params: object) -> int:
    # Count through the partitioned parent: sees every event's partition, so nothing can hide.
    async with app.state.sessionmaker() as session:
        return int((await session.execute(text(f"SELECT count(*) FROM face_templates WHERE {where}"), params)).scalar())


async def test_search_never_crosses_events(client: httpx.AsyncClient, new_gallery) -> None:
    a, b = await new_gallery(), await new_gallery()
    rng = np.random.default_rng(11)
    vecs = unit(rng, 21)
    query = vecs[0]
    in_a = [uuid.uuid4() for _ in range(20)]
    intruder = uuid.uuid4()
    await client.post(
        f"/v1/galleries/{a}/templates",
        json={"templates": [template(p, v) for p, v in zip(in_a, vecs[1:], strict=True)]},
    )
    # B holds an exact copy of the query: the perfect match, in the wrong event.
    await client.post(f"/v1/galleries/{b}/templates", json={"templates": [template(intruder, query)]})
    got = await _search(client, a, query, k=100)
    assert str(intruder) not in got and len(got) == 20
    assert await _search(client, b, query, k=1) == [str(intruder)]
    # The intruder's attendee id has no templates in A, whatever it has in B.
    r = await client.get(f"/v1/galleries/{a}/attendees/{intruder}/templates")
    assert r.status_code == 404
    r = await client.post(
        f"/v1/galleries/{a}/attendees/{intruder}/distance",
        json={"model_id": MODEL, "embedding": list(map(float, query))},
    )
    assert r.status_code == 404


async def test_same_attendee_in_two_events_is_two_people(client: httpx.AsyncClient, new_gallery) -> None:
    a, b = await new_gallery(), await new_gallery()
    person = uuid.uuid4()
    va, vb = unit(np.random.default_rng(12), 2)
    await client.post(f"/v1/galleries/{a}/templates", json={"templates": [template(person, va)]})
    await client.post(f"/v1/galleries/{b}/templates", json={"templates": [template(person, vb)]})
    assert (await client.delete(f"/v1/galleries/{a}/attendees/{person}")).json() == {"deleted": 1}
    assert await _search(client, a, va) == []
    assert await _search(client, b, vb) == [str(person)]


async def test_erasure_of_attendee_and_event(app_client: tuple[FastAPI, httpx.AsyncClient], new_gallery) -> None:
    app, client = app_client
    event = await new_gallery()
    rng = np.random.default_rng(13)
    vecs = unit(rng, 12)
    gone, kept = uuid.uuid4(), [uuid.uuid4() for _ in range(4)]
    batch = [template(gone, v) for v in vecs[:4]] + [template(kept[i % 4], v) for i, v in enumerate(vecs[4:])]
    assert (await client.post(f"/v1/galleries/{event}/templates", json={"templates": batch})).status_code == 201

    assert (await client.delete(f"/v1/galleries/{event}/attendees/{gone}")).json() == {"deleted": 5}  # and mean
    for q in vecs[:4]:  # their own templates as queries: the strongest possible pull towards them
        assert str(gone) not in await _search(client, event, q, k=100)
    assert await _rows(app, "attendee_id = :a", a=gone) == 0
    assert (await client.get(f"/v1/galleries/{event}/attendees/{gone}/templates")).status_code == 404
    assert (await client.delete(f"/v1/galleries/{event}/attendees/{gone}")).json() == {"deleted": 0}
    stats = (await client.get(f"/v1/galleries/{event}")).json()
    assert stats["templates"] == 12 and stats["attendees"] == 4  # 2 photos + a mean each

    assert (await client.delete(f"/v1/galleries/{event}")).json() == {"deleted": 12}
    assert await _rows(app, "event_id = :e", e=event) == 0
    async with app.state.sessionmaker() as session:
        reg = await session.execute(text("SELECT to_regclass(:t)"), {"t": write_store.partition_name(event)})
        assert reg.scalar() is None  # the partition (and its index) is gone, not just emptied
    r = await client.post(
        f"/v1/galleries/{event}/search", json={"model_id": MODEL, "embedding": list(map(float, vecs[5]))}
    )
    assert r.status_code == 404
    # the event can be re-created from scratch
    assert (await client.put(f"/v1/galleries/{event}", json={"model_id": MODEL})).json()["templates"] == 0


async def test_concurrent_inserts_all_land(client: httpx.AsyncClient, new_gallery) -> None:
    event = await new_gallery()
    rng = np.random.default_rng(14)
    clients, batches, per_batch = 8, 3, 10
    vecs = unit(rng, clients * batches * per_batch)

    async def writer(c: int) -> list[str]:
        ids: list[str] = []
        for b in range(batches):
            lo = (c * batches + b) * per_batch
            batch = [template(uuid.uuid4(), v) for v in vecs[lo : lo + per_batch]]
            r = await client.post(f"/v1/galleries/{event}/templates", json={"templates": batch})
            assert r.status_code == 201, r.text
            ids += r.json()["ids"]
        return ids

    results = await asyncio.gather(*(writer(c) for c in range(clients)))
    all_ids = [i for ids in results for i in ids]
    assert len(set(all_ids)) == clients * batches * per_batch
    stats = (await client.get(f"/v1/galleries/{event}")).json()
    assert stats["templates"] == stats["attendees"] == len(all_ids)


async def test_concurrent_ensure_of_one_event(client: httpx.AsyncClient) -> None:
    event = uuid.uuid4()
    rs = await asyncio.gather(*(client.put(f"/v1/galleries/{event}", json={"model_id": MODEL}) for _ in range(5)))
    assert [r.status_code for r in rs] == [200] * 5
    assert len({r.json()["created_at"] for r in rs}) == 1
