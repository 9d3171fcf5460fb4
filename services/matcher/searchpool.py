"""The search path's connections: autocommit psycopg connections in a small LIFO pool of the matcher's own.

A search is a single short statement: no ORM, no transaction. At about 1 ms per resident search, SQLAlchemy's
async pool (greenlet hand-offs on checkout, return and reset) cost ~0.15 ms of it (bench/matcher.py). The
writes keep SQLAlchemy. psycopg_pool was not used because it opens connections in the background with
exponential backoff and makes requests wait for them: after a database restart the first searches would wait
seconds. Here, as with SQLAlchemy's pool before, a missing connection is opened in the request with libpq's
connect timeout, and a database that is down is a 503 at once (`services.common.db`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from services.common.db import CONNECT_TIMEOUT_S, PoolExhausted


@dataclass(eq=False)
class SearchConnection:
    """A pooled connection and what its session has been given (see `search_store.search_on`)."""

    conn: psycopg.AsyncConnection[Any]
    generation: int
    gucs: tuple[int, str] | None = None  # (hnsw.ef_search, enable_seqscan) as last set at session level
    vector_dumper: bool = False  # numpy arrays go out as binary pgvector values


class SearchPool:
    """At most `size` connections, reused most-recent-first, opened on demand.

    A connection goes back to the pool only if it is idle and healthy: one whose statement failed is reused
    (autocommit: nothing is left open), one cancelled mid-statement or broken is closed. `renew` (after a lost
    connection) closes the idle ones and retires those in use, so a database restart fails one request, not
    one per pooled connection."""

    def __init__(self, url: str, *, size: int, timeout_s: float, options: str) -> None:
        self._url = url
        self._options = options
        self._timeout_s = timeout_s
        self._slots = asyncio.Semaphore(size)
        self._idle: list[SearchConnection] = []
        self._generation = 0
        self._closed = False

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[SearchConnection]:
        try:
            await asyncio.wait_for(self._slots.acquire(), self._timeout_s)
        except TimeoutError:
            raise PoolExhausted(f"no search connection free within {self._timeout_s} s") from None
        try:
            sc = self._idle.pop() if self._idle else await self._open()
            try:
                yield sc
            finally:
                self._give_back(sc)
        finally:
            self._slots.release()

    async def _open(self) -> SearchConnection:
        if self._closed:
            raise psycopg.InterfaceError("the search pool is closed")
        conn = await psycopg.AsyncConnection.connect(
            self._url,
            autocommit=True,
            # No server-side prepared statements: each search is planned with its real LIMIT and vector (a
            # generic plan may not pick the HNSW index), and a transaction-pooling proxy cannot break us.
            prepare_threshold=None,
            connect_timeout=CONNECT_TIMEOUT_S,
            options=self._options,
        )
        return SearchConnection(conn=conn, generation=self._generation)

    def _give_back(self, sc: SearchConnection) -> None:
        healthy = not sc.conn.closed and sc.conn.info.transaction_status == TransactionStatus.IDLE
        if healthy and sc.generation == self._generation and not self._closed:
            self._idle.append(sc)
        else:
            _close_soon(sc)

    async def renew(self) -> None:
        """Drop every connection opened so far (idle ones now, those in use when they come back)."""
        self._generation += 1
        idle, self._idle = self._idle, []
        for sc in idle:
            _close_soon(sc)

    async def close(self) -> None:
        self._closed = True
        await self.renew()


def _close_soon(sc: SearchConnection) -> None:
    # No round trip (libpq's finish just drops the socket): a connection cancelled mid-statement or lost must
    # not hold up the request that gives it back.
    with contextlib.suppress(Exception):
        sc.conn.pgconn.finish()
