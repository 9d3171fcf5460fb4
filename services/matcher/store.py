"""SQL of the matcher: the gallery registry and the per-event partitions of `face_templates`.

Every statement on templates names the event's partition directly. That is the tenancy boundary (a partition
holds one event's rows and nothing else), it needs no plan-time pruning (so prepared/generic plans cannot
fall back to scanning every partition), it takes no lock on the parent (so creating or dropping another
event's partition does not queue behind searches), and it lets one statement carry the partition's own
dimension in the cast that its HNSW index is built on.
"""

from __future__ import annotations

import re
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from psycopg.adapt import Dumper
from psycopg.pq import Format
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.matcher.searchpool import SearchConnection

PARENT = "face_templates"
_PARTITION_RE = re.compile(r"^face_templates_e[0-9a-f]{32}$")


@dataclass(frozen=True)
class GalleryRow:
    event_id: uuid.UUID
    model_id: str
    dim: int
    templates: int
    created_at: datetime


@dataclass(frozen=True)
class TemplateRow:
    id: uuid.UUID
    attendee_id: uuid.UUID
    model_id: str
    embedding: list[float]
    quality: float | None
    created_at: datetime


@dataclass(frozen=True)
class Neighbour:
    template_id: uuid.UUID
    attendee_id: uuid.UUID
    distance: float


def vector_literal(vec: np.ndarray) -> str:
    """pgvector's text form. tolist() + str is ~5x cheaper than formatting numpy scalars one by one (what the
    pgvector SQLAlchemy type does), and float32 values survive the round trip exactly."""
    return "[" + ",".join(map(str, vec.tolist())) + "]"


def partition_name(event_id: uuid.UUID) -> str:
    name = f"{PARENT}_e{event_id.hex}"
    # The name is derived from a UUID and so only ever hex; checked anyway because it is spliced into DDL.
    if not _PARTITION_RE.match(name):
        raise ValueError(f"bad partition name {name!r}")
    return name


def _ident(session: AsyncSession, name: str) -> str:
    return session.bind.dialect.identifier_preparer.quote_identifier(name)  # type: ignore[union-attr]


def _table(session: AsyncSession, event_id: uuid.UUID) -> str:
    return _ident(session, partition_name(event_id))


def index_expression(dim: int) -> str:
    """The expression the HNSW index is built on; queries must repeat it verbatim to be able to use it."""
    return f"(embedding::vector({int(dim)}))"


# --- galleries -------------------------------------------------------------------------------------------


async def get_gallery(session: AsyncSession, event_id: uuid.UUID, *, for_update: bool = False) -> GalleryRow | None:
    sql = "SELECT event_id, model_id, dim, templates, created_at FROM matcher_galleries WHERE event_id = :e"
    if for_update:
        sql += " FOR UPDATE"
    row = (await session.execute(text(sql), {"e": event_id})).one_or_none()
    return GalleryRow(*row) if row else None


async def insert_gallery(session: AsyncSession, event_id: uuid.UUID, *, model_id: str, dim: int) -> GalleryRow | None:
    """Register a gallery; None when the event already has one (a concurrent ensure waits here, then sees it)."""
    row = (
        await session.execute(
            text(
                "INSERT INTO matcher_galleries (event_id, model_id, dim) VALUES (:e, :m, :d)"
                " ON CONFLICT (event_id) DO NOTHING"
                " RETURNING event_id, model_id, dim, templates, created_at"
            ),
            {"e": event_id, "m": model_id, "d": dim},
        )
    ).one_or_none()
    return GalleryRow(*row) if row else None


async def create_partition(
    session: AsyncSession, event_id: uuid.UUID, *, dim: int, m: int, ef_construction: int
) -> None:
    table = _table(session, event_id)
    check = _ident(session, f"{partition_name(event_id)}_dim")
    # DDL cannot take bind parameters: the event id is a formatted uuid.UUID and the numbers are ints.
    await session.execute(
        text(
            f"CREATE TABLE {table} PARTITION OF {PARENT} ("
            f" CONSTRAINT {check} CHECK (vector_dims(embedding) = {int(dim)}))"
            f" FOR VALUES IN ('{event_id}')"
        )
    )
    await create_hnsw_index(session, event_id, dim=dim, m=m, ef_construction=ef_construction)


async def create_hnsw_index(
    session: AsyncSession, event_id: uuid.UUID, *, dim: int, m: int, ef_construction: int
) -> None:
    table = _table(session, event_id)
    index = _ident(session, f"{partition_name(event_id)}_hnsw")
    await session.execute(
        text(
            f"CREATE INDEX {index} ON {table} USING hnsw ({index_expression(dim)} vector_cosine_ops)"
            f" WITH (m = {int(m)}, ef_construction = {int(ef_construction)})"
        )
    )


async def drop_gallery(session: AsyncSession, event_id: uuid.UUID) -> None:
    await session.execute(text(f"DROP TABLE IF EXISTS {_table(session, event_id)}"))
    await session.execute(text("DELETE FROM matcher_tombstones WHERE event_id = :e"), {"e": event_id})
    await session.execute(text("DELETE FROM matcher_galleries WHERE event_id = :e"), {"e": event_id})


async def lock_gallery(session: AsyncSession, event_id: uuid.UUID) -> int | None:
    """Take the gallery row's lock first thing in a write, and return the version this write will publish
    (None: no such gallery).

    Writers of one gallery queue here and draw from one sequence under the lock, so a gallery's versions follow
    commit order: a reader that sees version v sees every change stamped <= v and none above (migration 0003).
    """
    row = (
        await session.execute(
            text(
                "SELECT nextval('matcher_versions') FROM"
                " (SELECT 1 FROM matcher_galleries WHERE event_id = :e FOR UPDATE) locked"
            ),
            {"e": event_id},
        )
    ).one_or_none()
    return int(row[0]) if row else None


async def commit_change(
    session: AsyncSession, event_id: uuid.UUID, *, version: int, delta: int, attendees_delta: int = 0
) -> None:
    """Publish a change made under `lock_gallery`: the new version and the template and attendee counts, in step."""
    await session.execute(
        text(
            "UPDATE matcher_galleries SET version = :v, templates = templates + :n, attendees = attendees + :a"
            " WHERE event_id = :e"
        ),
        {"v": version, "n": delta, "a": attendees_delta, "e": event_id},
    )


async def known_attendees(session: AsyncSession, event_id: uuid.UUID, attendee_ids: Sequence[uuid.UUID]) -> int:
    """How many of these attendees already have templates (under `lock_gallery`, so the answer stays true)."""
    row = (
        await session.execute(
            text(f"SELECT count(DISTINCT attendee_id) FROM {_table(session, event_id)} WHERE attendee_id = ANY(:a)"),
            {"a": list(attendee_ids)},
        )
    ).one()
    return int(row[0])


async def gallery_counts(session: AsyncSession, event_id: uuid.UUID) -> tuple[int, int]:
    """(templates, attendees) counted from the partition itself."""
    row = (
        await session.execute(text(f"SELECT count(*), count(DISTINCT attendee_id) FROM {_table(session, event_id)}"))
    ).one()
    return int(row[0]), int(row[1])


# --- templates -------------------------------------------------------------------------------------------


async def insert_templates(
    session: AsyncSession,
    event_id: uuid.UUID,
    *,
    rows: Sequence[tuple[uuid.UUID, uuid.UUID, str, np.ndarray, float | None]],
    version: int,
) -> None:
    """rows: (id, attendee_id, model_id, unit embedding, quality); one executemany (psycopg pipelines it)."""
    stmt = text(
        f"INSERT INTO {_table(session, event_id)}"
        " (id, event_id, attendee_id, model_id, embedding, quality, version)"
        " VALUES (:id, :e, :a, :m, CAST(:v AS vector), :q, :ver)"
    )
    params = [
        {"id": tid, "e": event_id, "a": aid, "m": model_id, "v": vector_literal(vec), "q": quality, "ver": version}
        for tid, aid, model_id, vec, quality in rows
    ]
    await session.execute(stmt, params)


async def attendee_templates(session: AsyncSession, event_id: uuid.UUID, attendee_id: uuid.UUID) -> list[TemplateRow]:
    result = await session.execute(
        text(
            "SELECT id, attendee_id, model_id, embedding::real[], quality, created_at"
            f" FROM {_table(session, event_id)} WHERE event_id = :e AND attendee_id = :a"
            " ORDER BY created_at, id"
        ),
        {"e": event_id, "a": attendee_id},
    )
    return [TemplateRow(*row) for row in result.all()]


async def delete_attendee(session: AsyncSession, event_id: uuid.UUID, attendee_id: uuid.UUID, *, version: int) -> int:
    """Delete one attendee's templates and leave a tombstone (stamped `version`) for each, in one statement."""
    result = await session.execute(
        text(
            f"WITH gone AS (DELETE FROM {_table(session, event_id)} WHERE event_id = :e AND attendee_id = :a"
            " RETURNING id)"
            " INSERT INTO matcher_tombstones (event_id, version, template_id) SELECT :e, :v, id FROM gone"
        ),
        {"e": event_id, "a": attendee_id, "v": version},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # a CursorResult: DML with no RETURNING


async def attendee_distances(
    session: AsyncSession, event_id: uuid.UUID, attendee_id: uuid.UUID, *, query: np.ndarray
) -> list[Neighbour]:
    """All of one attendee's templates by exact distance, nearest first (uses the attendee index)."""
    stmt = text(
        f"SELECT id, attendee_id, embedding <=> CAST(:q AS vector) AS d FROM {_table(session, event_id)}"
        " WHERE event_id = :e AND attendee_id = :a ORDER BY d, id"
    )
    result = await session.execute(stmt, {"q": vector_literal(query), "e": event_id, "a": attendee_id})
    return [Neighbour(template_id=r[0], attendee_id=r[1], distance=float(r[2])) for r in result.all()]


# --- search ----------------------------------------------------------------------------------------------
# The hot path talks to the psycopg connection under the session directly (same transaction): two round
# trips and no SQLAlchemy statement/result machinery, which was 2-3x the CPU of the query itself.


@dataclass(frozen=True)
class SearchContext:
    model_id: str
    dim: int
    templates: int
    hnsw: bool
    ef_search: int


async def _driver(session: AsyncSession) -> Any:
    conn = await session.connection()
    return (await conn.get_raw_connection()).driver_connection


def quoted_partition(event_id: uuid.UUID) -> str:
    return f'"{partition_name(event_id)}"'  # hex-only name, checked by partition_name


async def search_context(
    session: AsyncSession,
    event_id: uuid.UUID,
    *,
    ef_search: int,
    ef_search_large: int,
    large_templates: int,
    force_hnsw: bool | None,
    exact_max: int,
) -> SearchContext | None:
    """Read the gallery and set this transaction's search settings in one round trip.

    HNSW mode (more than `exact_max` templates, unless forced) sets enable_seqscan=off: once a gallery is in
    HNSW mode a sequential scan is never wanted, and pgvector's cost model can prefer one silently (#466,
    #556, #727). Exact mode leaves it on, so its query gets the sequential scan it is written for.
    Galleries above `large_templates` get the larger candidate list `ef_search_large`.
    """
    cur = await (await _driver(session)).execute(
        "SELECT model_id, dim, templates, hnsw, ef, set_config('hnsw.ef_search', ef::text, true),"
        " set_config('enable_seqscan', CASE WHEN hnsw THEN 'off' ELSE 'on' END, true)"
        " FROM (SELECT model_id, dim, templates,"
        "       coalesce(%(force)s::boolean, templates > %(cut)s) AS hnsw,"
        "       CASE WHEN templates > %(large)s THEN %(ef_large)s::int ELSE %(ef)s::int END AS ef"
        "       FROM matcher_galleries WHERE event_id = %(e)s) g",
        {
            "ef": int(ef_search),
            "ef_large": int(ef_search_large),
            "large": large_templates,
            "force": force_hnsw,
            "cut": exact_max,
            "e": event_id,
        },
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return SearchContext(model_id=row[0], dim=row[1], templates=row[2], hnsw=row[3], ef_search=row[4])


# --- read path ------------------------------------------------------------------------------------------
# Searches run on the search pool's autocommit connections (`searchpool`): no BEGIN/COMMIT round trips, and
# the search GUCs are set at session level, once per pooled connection and again only when they change, so
# they never leak into the write engine's sessions. Usually a search is then one round trip.


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


async def read_gallery_meta(sc: SearchConnection, event_id: uuid.UUID) -> GalleryMeta | None:
    cur = await sc.conn.execute(
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


async def explain(session: AsyncSession, sql: str, params: dict[str, Any]) -> Any:
    """EXPLAIN (FORMAT JSON) of a search statement, bound exactly as the search binds it."""
    params = {**params, "q": vector_literal(params["q"])}
    cur = await (await _driver(session)).execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
    return (await cur.fetchone())[0]


# --- schema ----------------------------------------------------------------------------------------------


async def missing_schema(session: AsyncSession) -> list[str]:
    """What the matcher needs that migrations have not created yet (empty when ready)."""
    row = (
        await session.execute(
            text(
                "SELECT to_regclass('matcher_galleries') IS NOT NULL, to_regclass('face_templates') IS NOT NULL,"
                " EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector')"
            )
        )
    ).one()
    names = ("table matcher_galleries", "table face_templates", "extension vector")
    return [name for name, ok in zip(names, row, strict=True) if not ok]
