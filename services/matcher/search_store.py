"""The matcher's search path, in one style: psycopg on the search pool's autocommit connections
(`searchpool.SearchConnection`), and the one rule that picks a search's path (`search_path`).

The resident copies' loader (`resident.py`) reads in the same style, on its own REPEATABLE READ connection.

Why this style here: a search is the hot path. No BEGIN/COMMIT round trips, the search settings set at session
level (once per pooled connection, again only when they change, so they never leak into the write engine's
sessions), a binary vector parameter, and no SQLAlchemy statement/result machinery, which was 2-3x the CPU of the
query itself. Usually a search is one round trip. Writes and their reads are `write_store.py`.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import Literal

import numpy as np
import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

from services.matcher.searchpool import SearchConnection
from services.matcher.settings import MatcherSettings
from services.matcher.write_store import Neighbour, index_expression, partition_name

SearchPath = Literal["exact", "hnsw", "resident"]


def search_path(templates: int, settings: MatcherSettings) -> SearchPath:
    """The one rule for how a gallery of this many templates is searched: exactly up to `EXACT_MAX_TEMPLATES`
    (an exact scan is fast and has full recall there); above it by HNSW, from the process's resident copy when
    resident copies are on and the gallery fits their budget, else by pgvector's index."""
    if templates <= settings.exact_max_templates:
        return "exact"
    if settings.resident_enabled and templates <= settings.resident_max_templates:
        return "resident"
    return "hnsw"


def quoted_partition(event_id: uuid.UUID) -> str:
    return f'"{partition_name(event_id)}"'  # hex-only name, checked by partition_name


class _VectorBinaryDumper(Dumper):
    """numpy float32 vector -> pgvector's binary input (int16 dim, int16 unused, big-endian float4s).

    Sending 2 KB of binary instead of ~10 KB of decimal text saved ~0.5 ms per 512-d search (client-side
    formatting and send, server-side parsing)."""

    format = Format.BINARY
    oid = 0  # set per connection from to_regtype('vector')

    def dump(self, obj: np.ndarray) -> bytes:
        return struct.pack(">HH", obj.shape[0], 0) + obj.astype(">f4", copy=False).tobytes()


@dataclass(frozen=True)
class GalleryMeta:
    model_id: str
    dim: int
    templates: int
    version: int = 0
    attendees: int = 0


async def read_gallery_meta(conn: psycopg.AsyncConnection, event_id: uuid.UUID) -> GalleryMeta | None:
    cur = await conn.execute(
        "SELECT model_id, dim, templates, version, attendees FROM matcher_galleries WHERE event_id = %s", (event_id,)
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return GalleryMeta(model_id=row[0], dim=row[1], templates=row[2], version=row[3], attendees=row[4])


async def search_on(
    sc: SearchConnection, event_id: uuid.UUID, *, query: np.ndarray, n: int, k: int, hnsw: bool, dim: int, ef: int
) -> list[Neighbour]:
    """Exact: the n nearest templates. HNSW: the k nearest attendees among n candidates (one row each).

    HNSW mode needs hnsw.ef_search = ef and enable_seqscan = off (see `search_context`); exact mode needs
    enable_seqscan = on. They are session settings of this pooled connection, sent only when they differ from
    what it last had, so in steady state this is one round trip.
    """
    have = sc.gucs
    # Exact mode does not read ef_search: keep whatever the connection has rather than flip it back and forth.
    want = (int(ef) if hnsw or have is None else have[0], "off" if hnsw else "on")
    if have != want:
        sc.gucs = None  # unknown until the statement succeeds
        cur = await sc.conn.execute(
            "SELECT set_config('hnsw.ef_search', %s, false), set_config('enable_seqscan', %s, false),"
            " to_regtype('vector')::oid",
            (str(want[0]), want[1]),
        )
        oid = (await cur.fetchone() or (None, None, None))[2]
        if not sc.vector_dumper and oid is not None:
            # Only on the search pool's connections, whose statements are all ours.
            sc.conn.adapters.register_dumper(np.ndarray, type("VectorDumper", (_VectorBinaryDumper,), {"oid": oid}))
            sc.vector_dumper = True
        sc.gucs = want
    sql = hnsw_search_sql(event_id, dim=dim) if hnsw else exact_search_sql(event_id)
    cur = await sc.conn.execute(sql, {"q": query, "n": n, "k": k})
    return [Neighbour(template_id=r[0], attendee_id=r[1], distance=r[2]) for r in await cur.fetchall()]


def exact_search_sql(event_id: uuid.UUID) -> str:
    # Plain `embedding <=> q` does not match the index expression, so this is always a (possibly parallel)
    # sequential scan with a top-N sort: exact, and the right plan for small galleries.
    return (
        f"SELECT id, attendee_id, embedding <=> %(q)s::vector AS d FROM {quoted_partition(event_id)}"
        " ORDER BY d, id LIMIT %(n)s"
    )


def hnsw_search_sql(event_id: uuid.UUID, *, dim: int) -> str:
    """HNSW candidates, re-ordered exactly and reduced to each attendee's best template, top-k.

    The innermost ORDER BY repeats the index expression so the planner can use the partition's HNSW index
    (it yields at most ef_search rows: `%(n)s` is the candidate count). Grouping happens here, not in
    Python, so only k rows come back however large the candidate set. No `WHERE event_id = ...`: the
    partition holds only this event's rows, and with that filter the planner preferred a bitmap scan of the
    (event_id, attendee_id) btree plus a sort over the HNSW index.
    """
    expr = index_expression(dim)
    return (
        "SELECT id, attendee_id, d FROM ("
        " SELECT DISTINCT ON (attendee_id) id, attendee_id, d FROM ("
        f"  SELECT id, attendee_id, {expr} <=> %(q)s::vector AS d FROM {quoted_partition(event_id)}"
        f"  ORDER BY {expr} <=> %(q)s::vector LIMIT %(n)s"
        " ) c ORDER BY attendee_id, d, id"
        ") g ORDER BY d, id LIMIT %(k)s"
    )


# --- the resident copies' loader ---------------------------------------------------------------------------


async def changed_since(conn: psycopg.AsyncConnection, event_id: uuid.UUID, version: int) -> int:
    """How many of the gallery's templates are stamped after `version`."""
    cur = await conn.execute(
        f"SELECT count(*) FROM {quoted_partition(event_id)} WHERE event_id = %s AND version > %s", (event_id, version)
    )
    return int((await cur.fetchone() or (0,))[0])


async def tombstones_since(conn: psycopg.AsyncConnection, event_id: uuid.UUID, version: int) -> list[uuid.UUID]:
    """The templates deleted after `version`."""
    cur = await conn.execute(
        "SELECT template_id FROM matcher_tombstones WHERE event_id = %s AND version > %s", (event_id, version)
    )
    return [r[0] for r in await cur.fetchall()]


async def fetch_templates(
    conn: psycopg.AsyncConnection, event_id: uuid.UUID, *, after: int | None
) -> tuple[list[uuid.UUID], list[uuid.UUID], np.ndarray]:
    """(template ids, attendee ids, vectors [n, dim]) of the partition, or of its rows stamped after `after`.
    A server-side cursor in binary: vectors arrive as float32 arrays, 10k rows at a time."""
    table = quoted_partition(event_id)
    where, params = ("WHERE event_id = %s AND version > %s", (event_id, after)) if after is not None else ("", ())
    tids: list[uuid.UUID] = []
    aids: list[uuid.UUID] = []
    chunks: list[np.ndarray] = []
    async with conn.cursor(name="facegate_resident", binary=True) as cur:
        await cur.execute(f"SELECT id, attendee_id, embedding FROM {table} {where}", params)
        while batch := await cur.fetchmany(10_000):
            tids.extend(r[0] for r in batch)
            aids.extend(r[1] for r in batch)
            chunks.append(np.stack([r[2].to_numpy() for r in batch]).astype(np.float32, copy=False))
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, 1), np.float32)
    return tids, aids, vectors
