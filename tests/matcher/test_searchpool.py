"""The search pool (services/matcher/searchpool.py) on real Postgres: reuse, and what it does with connections
that were lost, cancelled, failed or all in use, through the API where a caller would see it."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import psycopg
import pytest

from services.common.db import PoolExhausted
from services.matcher.searchpool import SearchPool
from tests.matcher.conftest import MODEL, running_app, template, unit


async def _backend_pid(pool: SearchPool) -> int:
    async with pool.connection() as sc:
        cur = await sc.conn.execute("SELECT pg_backend_pid()")
        return (await cur.fetchone())[0]


async def test_connections_are_reused_and_a_failed_statement_keeps_its_connection(pg_url: str) -> None:
    pool = SearchPool(pg_url, size=2, timeout_s=1, options="")
    try:
        pid = await _backend_pid(pool)
        assert await _backend_pid(pool) == pid
        with pytest.raises(psycopg.errors.UndefinedTable):
            async with pool.connection() as sc:
                await sc.conn.execute("SELECT * FROM no_such_table")
        assert await _backend_pid(pool) == pid  # autocommit: nothing left open, so it went back
    finally:
        await pool.close()


async def test_a_search_cancelled_mid_statement_leaves_no_statement_behind(pg_url: str) -> None:
    """A request cancelled mid-statement (client gone) gives its slot back, and the next search on the pool is
    answered at once with its own result: psycopg cancels the statement, or the session is dropped."""
    pool = SearchPool(pg_url, size=1, timeout_s=1, options="")
    try:
        await _backend_pid(pool)

        async def slow() -> None:
            async with pool.connection() as sc:
                await sc.conn.execute("SELECT pg_sleep(30)")

        task = asyncio.ensure_future(slow())
        # cancel only once the statement is running on the server (a fixed wait may cancel it before it starts,
        # and the test would pass without testing anything)
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as watcher:
            for _ in range(600):
                cur = await watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'")
                if (await cur.fetchone())[0] == 1:
                    break
                await asyncio.sleep(0.05)  # polling the server for the condition
            else:
                pytest.fail("the slow statement never started")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with asyncio.timeout(5), pool.connection() as sc:
            cur = await sc.conn.execute("SELECT 42, count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'")
            assert await cur.fetchone() == (42, 0)
    finally:
        await pool.close()


async def test_all_connections_in_use_is_a_503_with_retry_after(pg_url: str) -> None:
    async with running_app(pg_url, pool_size=1, max_overflow=0, pool_timeout_s=0.3) as (app, client):
        event = uuid.uuid4()
        assert (await client.put(f"/v1/galleries/{event}", json={"model_id": MODEL})).status_code == 200
        q = [float(v) for v in unit(np.random.default_rng(3), 1)[0]]
        body = {"model_id": MODEL, "embedding": q, "k": 1}
        async with app.state.search_pool.connection():  # the only one
            with pytest.raises(PoolExhausted):
                async with app.state.search_pool.connection():
                    pass
            r = await client.post(f"/v1/galleries/{event}/search", json=body)
            assert r.status_code == 503 and r.headers["retry-after"]
            assert r.json()["code"] == "database_unavailable"
        assert (await client.post(f"/v1/galleries/{event}/search", json=body)).status_code == 200


async def test_connections_lost_to_a_restart_fail_one_search_then_are_renewed(pg_url: str) -> None:
    """Every pooled search session terminated (as a database restart does): one search gets a 503, and the
    pool is renewed, so the next ones are answered, not one 503 per pooled connection."""
    async with running_app(pg_url, pool_size=3, max_overflow=0) as (app, client):
        event, who = uuid.uuid4(), uuid.uuid4()
        vec = unit(np.random.default_rng(4), 1)[0]
        assert (await client.put(f"/v1/galleries/{event}", json={"model_id": MODEL})).status_code == 200
        r = await client.post(f"/v1/galleries/{event}/templates", json={"templates": [template(who, vec)]})
        assert r.status_code == 201, r.text
        body = {"model_id": MODEL, "embedding": [float(v) for v in vec], "k": 1}
        pool: SearchPool = app.state.search_pool
        # three sessions in the pool
        held = [pool.connection() for _ in range(3)]
        conns = [await h.__aenter__() for h in held]
        pids = []
        for sc in conns:
            pids.append((await (await sc.conn.execute("SELECT pg_backend_pid()")).fetchone())[0])
        for h in held:
            await h.__aexit__(None, None, None)
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid", (pids,))
        statuses = [(await client.post(f"/v1/galleries/{event}/search", json=body)).status_code for _ in range(4)]
        assert statuses == [503, 200, 200, 200]
        r = await client.post(f"/v1/galleries/{event}/search", json=body)
        assert r.json()["matches"][0]["attendee_id"] == str(who)
