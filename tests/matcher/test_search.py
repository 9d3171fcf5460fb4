"""Search correctness against NumPy, HNSW recall, and proof (EXPLAIN) that the HNSW index is what runs."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.matcher import galleries, search_store, write_store
from tests.matcher.conftest import DIM, MODEL, running_app, template, with_means

N_PEOPLE, PER_PERSON = 600, 4  # 2,400 templates
N_QUERIES = 200


def face_like(rng: np.random.Generator, people: int, per: int, dim: int = DIM) -> tuple[np.ndarray, np.ndarray]:
    """Identity centres plus noise, unit length: each person's templates are near each other, as real faces."""
    centres = rng.standard_normal((people, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.standard_normal((people, per, dim)) * (0.7 / np.sqrt(dim))
    vecs = (centres[:, None, :] + noise).reshape(people * per, dim)
    return (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32), centres


def brute_force_attendees(gallery: np.ndarray, owners: list[uuid.UUID], q: np.ndarray, k: int) -> list:
    d = 1.0 - gallery.astype(np.float64) @ q.astype(np.float64)
    out, seen = [], set()
    for i in np.argsort(d, kind="stable"):
        if owners[i] not in seen:
            seen.add(owners[i])
            out.append((owners[i], float(d[i])))
            if len(out) == k:
                break
    return out


@pytest.fixture(scope="module")
async def loaded(pg_url: str) -> AsyncIterator[dict]:
    """One 3,000-template gallery, served by two apps: exact below 10k (default) and HNSW from 0 templates."""
    rng = np.random.default_rng(42)
    vecs, centres = face_like(rng, N_PEOPLE, PER_PERSON)
    people = [uuid.uuid4() for _ in range(N_PEOPLE)]
    owners = [p for p in people for _ in range(PER_PERSON)]
    event = uuid.uuid4()
    # ef_construction 64 keeps the load quick; the recall bar below must still hold.
    fast = {"hnsw_ef_construction": 64}
    async with (
        running_app(pg_url, **fast) as (_, client),
        # pgvector's HNSW: resident copies off here (the third app has them, from 0 templates too)
        running_app(pg_url, exact_max_templates=0, resident_enabled=False, **fast) as (happ, hclient),
        running_app(pg_url, exact_max_templates=0) as (rapp, rclient),
    ):
        assert (await client.put(f"/v1/galleries/{event}", json={"model_id": MODEL})).status_code == 200
        for lo in range(0, len(vecs), 1000):
            batch = [template(o, v) for o, v in zip(owners[lo : lo + 1000], vecs[lo : lo + 1000], strict=True)]
            r = await client.post(f"/v1/galleries/{event}/templates", json={"templates": batch})
            assert r.status_code == 201, r.text
        # probes: a fresh noisy capture of a known person (what a turnstile sends)
        probe = centres[:N_QUERIES] + rng.standard_normal((N_QUERIES, DIM)) * (0.7 / np.sqrt(DIM))
        probe = (probe / np.linalg.norm(probe, axis=1, keepdims=True)).astype(np.float32)
        held_owners, held = with_means(owners, vecs)  # what the matcher holds: photos and each person's mean
        yield {
            "event": event,
            "vecs": held,
            "owners": held_owners,
            "probes": probe,
            "exact": client,
            "hnsw": hclient,
            "hnsw_app": happ,
            "resident": rclient,
            "resident_app": rapp,
        }


async def test_exact_search_equals_numpy(loaded: dict) -> None:
    client: httpx.AsyncClient = loaded["exact"]
    rng = np.random.default_rng(7)
    randoms = rng.standard_normal((20, DIM)).astype(np.float32)  # and queries unlike any template
    queries = np.vstack([loaded["probes"][:40], randoms / np.linalg.norm(randoms, axis=1, keepdims=True)])
    for q in queries:
        r = await client.post(
            f"/v1/galleries/{loaded['event']}/search",
            json={"model_id": MODEL, "embedding": [float(x) for x in q], "k": 10},
        )
        body = r.json()
        assert body["mode"] == "exact"
        want = brute_force_attendees(loaded["vecs"], loaded["owners"], q, 10)
        got = [(uuid.UUID(m["attendee_id"]), m["distance"]) for m in body["matches"]]
        assert [a for a, _ in got] == [a for a, _ in want]
        np.testing.assert_allclose([d for _, d in got], [d for _, d in want], atol=2e-5)


@pytest.mark.parametrize("mode", ["hnsw", "resident"])
async def test_hnsw_recall_at_1(loaded: dict, mode: str) -> None:
    """pgvector's HNSW, and the resident hnswlib copy of the same gallery (loaded by a first search)."""
    client: httpx.AsyncClient = loaded[mode]
    if mode == "resident":
        q = [float(x) for x in loaded["probes"][0]]
        await client.post(f"/v1/galleries/{loaded['event']}/search", json={"model_id": MODEL, "embedding": q, "k": 1})
        await loaded["resident_app"].state.residents.wait_idle()
    hits = 0
    for q in loaded["probes"]:
        r = await client.post(
            f"/v1/galleries/{loaded['event']}/search",
            json={"model_id": MODEL, "embedding": [float(x) for x in q], "k": 1},
        )
        body = r.json()
        assert body["mode"] == mode
        want = brute_force_attendees(loaded["vecs"], loaded["owners"], q, 1)[0][0]
        hits += uuid.UUID(body["matches"][0]["attendee_id"]) == want
    assert hits / len(loaded["probes"]) >= 0.99


def _plan_nodes(plan: dict) -> list[dict]:
    out = [plan]
    for child in plan.get("Plans", []):
        out.extend(_plan_nodes(child))
    return out


async def test_explain_uses_the_partition_hnsw_index(loaded: dict) -> None:
    """The silent failure (pgvector #466/#556/#727): a query shape the index cannot serve falls back to a
    sequential scan and still returns plausible answers. Check the plan of the exact statement we send.
    (This test caught one: with an `event_id = ...` filter the planner chose a bitmap scan of the btree.)"""
    app: FastAPI = loaded["hnsw_app"]
    event = loaded["event"]
    q = loaded["probes"][0]
    async with app.state.sessionmaker() as session:
        await _search_settings(session, ef=200, seqscan="off")  # what HNSW mode gets (search_store.search_on)
        sql = search_store.hnsw_search_sql(event, dim=DIM)
        plan = await _explain(session, sql, {"q": q, "n": 200, "k": 10})
        plan = plan if isinstance(plan, list) else json.loads(plan)
        nodes = _plan_nodes(plan[0]["Plan"])
        scans = [n for n in nodes if "Scan" in n["Node Type"]]
        assert [n["Node Type"] for n in scans] == ["Index Scan"], nodes
        assert scans[0]["Index Name"] == f"{write_store.partition_name(event)}_hnsw"
        assert scans[0]["Relation Name"] == write_store.partition_name(event)

        # And without our enable_seqscan guard the planner picks the index on its own at this size.
        await session.rollback()
        await session.execute(text("SELECT set_config('hnsw.ef_search', '40', true)"))
        plan = await _explain(session, sql, {"q": q, "n": 40, "k": 10})
        plan = plan if isinstance(plan, list) else json.loads(plan)
        scans = [n for n in _plan_nodes(plan[0]["Plan"]) if "Scan" in n["Node Type"]]
        assert [n["Node Type"] for n in scans] == ["Index Scan"]

        # The exact statement, with the settings exact mode gets, must not use it (its expression differs).
        await session.rollback()
        await _search_settings(session, ef=200, seqscan="on")
        plan = await _explain(session, search_store.exact_search_sql(event), {"q": q, "n": 10})
        plan = plan if isinstance(plan, list) else json.loads(plan)
        assert not any("Index" in n["Node Type"] for n in _plan_nodes(plan[0]["Plan"]))
        await session.rollback()


async def _search_settings(session: AsyncSession, *, ef: int, seqscan: str) -> None:
    await session.execute(
        text("SELECT set_config('hnsw.ef_search', :ef, true), set_config('enable_seqscan', :s, true)"),
        {"ef": str(ef), "s": seqscan},
    )


async def _explain(session: AsyncSession, sql: str, params: dict[str, Any]) -> Any:
    """EXPLAIN (FORMAT JSON) of a search statement, bound as the search binds it (psycopg, the vector as text)."""
    driver = (await (await session.connection()).get_raw_connection()).driver_connection
    cur = await driver.execute(f"EXPLAIN (FORMAT JSON) {sql}", {**params, "q": write_store.vector_literal(params["q"])})
    return (await cur.fetchone())[0]


async def test_cached_gallery_never_answers_for_a_changed_gallery(
    app_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """The search path caches (model, dim, count) per gallery. Changes made behind this process's back (another
    replica: raw SQL here, so no local invalidation) must still get the right answer, not the cached one."""
    app, client = app_client
    event = uuid.uuid4()
    rng = np.random.default_rng(7)
    vec = rng.standard_normal(DIM).astype(np.float32)
    person = uuid.uuid4()
    assert (await client.put(f"/v1/galleries/{event}", json={"model_id": MODEL})).status_code == 200
    r = await client.post(f"/v1/galleries/{event}/templates", json={"templates": [template(person, vec)]})
    assert r.status_code == 201
    body = {"model_id": MODEL, "embedding": [float(x) for x in vec], "k": 1}
    r = await client.post(f"/v1/galleries/{event}/search", json=body)
    assert r.status_code == 200 and r.json()["matches"][0]["attendee_id"] == str(person)
    assert app.state.gallery_cache.get(event, 60) is not None

    async def behind_our_back(sql: str) -> None:
        async with app.state.sessionmaker() as session:
            await session.execute(text(sql))
            await session.commit()

    part = write_store.partition_name(event)
    # Dropped elsewhere: 404, not a 500 from the missing partition.
    await behind_our_back(f"DROP TABLE \"{part}\"; DELETE FROM matcher_galleries WHERE event_id = '{event}'")
    r = await client.post(f"/v1/galleries/{event}/search", json=body)
    assert r.status_code == 404 and r.json()["code"] == "gallery_not_found"

    # Recreated elsewhere with another model (another dimension): the new model is served, the old one is 422.
    async with app.state.sessionmaker() as session:
        await galleries.ensure_gallery(session, event, model_id="dlib-resnet-128", settings=app.state.settings)
        await session.commit()
    r = await client.post(f"/v1/galleries/{event}/search", json=body)
    assert r.status_code == 422 and r.json()["code"] == "model_mismatch"
    app.state.gallery_cache.put(
        event, search_store.GalleryMeta(model_id=MODEL, dim=DIM, templates=1)
    )  # a replica's: stale
    r = await client.post(
        f"/v1/galleries/{event}/search", json={"model_id": "dlib-resnet-128", "embedding": [0.1] * 128, "k": 1}
    )
    assert r.status_code == 200 and r.json()["matches"] == []
    await client.delete(f"/v1/galleries/{event}")


async def test_search_connection_settings_and_plan(loaded: dict) -> None:
    """The search pool's connections carry the search GUCs at session level; with them, the statement bound
    as the search binds it (binary vector parameter) still uses the partition's HNSW index."""
    app: FastAPI = loaded["hnsw_app"]
    event = loaded["event"]
    q = loaded["probes"][0]
    async with app.state.search_pool.connection() as conn:
        result = await galleries.search(conn, event, model_id=MODEL, embedding=q, k=10, settings=app.state.settings)
        assert result.mode == "hnsw" and len(result.matches) == 10
        drv = conn.conn
        cur = await drv.execute("SELECT current_setting('hnsw.ef_search'), current_setting('enable_seqscan')")
        assert await cur.fetchone() == (str(app.state.settings.hnsw_ef_search), "off")
        cur = await drv.execute(
            "EXPLAIN (FORMAT JSON) " + search_store.hnsw_search_sql(event, dim=DIM), {"q": q, "n": 200, "k": 10}
        )
        plan = (await cur.fetchone())[0]
        plan = plan if isinstance(plan, list) else json.loads(plan)
        scans = [n for n in _plan_nodes(plan[0]["Plan"]) if "Scan" in n["Node Type"]]
        assert [n["Index Name"] for n in scans] == [f"{write_store.partition_name(event)}_hnsw"]
