"""The matcher's writes (and the reads served beside them), in one style: SQLAlchemy `text()` on the request's
`AsyncSession` (`matcher/api.py` commits it), the write engine's transactional pool.

Why this style here: writes need transactions and row locks (`lock_gallery`), and DDL (a partition and its HNSW
index per event) that must commit or roll back with the registry row; the few reads here (a gallery row, an
attendee's templates, a 1:1 distance, the schema check) are per-request and share the write's session. The
search hot path is `search_store.py`, in its own style.

Every statement on templates names the event's partition directly. That is the tenancy boundary (a partition
holds one event's rows and nothing else), it needs no plan-time pruning (so prepared/generic plans cannot
fall back to scanning every partition), it takes no lock on the parent (so creating or dropping another
event's partition does not queue behind searches), and it lets one statement carry the partition's own
dimension in the cast that its HNSW index is built on.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

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
    kind: str = "photo"


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


async def attendee_counts(
    session: AsyncSession, event_id: uuid.UUID, attendee_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """How many templates (photos and mean) each of these attendees has."""
    result = await session.execute(
        text(
            f"SELECT attendee_id, count(*) FROM {_table(session, event_id)}"
            " WHERE event_id = :e AND attendee_id = ANY(:a) GROUP BY attendee_id"
        ),
        {"e": event_id, "a": list(attendee_ids)},
    )
    return {r[0]: int(r[1]) for r in result.all()}


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
    kind: str = "photo",
) -> None:
    """rows: (id, attendee_id, model_id, unit embedding, quality); one executemany (psycopg pipelines it)."""
    if not rows:
        return
    stmt = text(
        f"INSERT INTO {_table(session, event_id)}"
        " (id, event_id, attendee_id, model_id, embedding, quality, version, kind)"
        " VALUES (:id, :e, :a, :m, CAST(:v AS vector), :q, :ver, :k)"
    )
    params = [
        {
            "id": tid,
            "e": event_id,
            "a": aid,
            "m": model_id,
            "v": vector_literal(vec),
            "q": quality,
            "ver": version,
            "k": kind,
        }
        for tid, aid, model_id, vec, quality in rows
    ]
    await session.execute(stmt, params)


async def delete_means(
    session: AsyncSession, event_id: uuid.UUID, attendee_ids: Sequence[uuid.UUID], *, version: int
) -> int:
    """Delete these attendees' mean templates, leaving a tombstone (stamped `version`) for each."""
    result = await session.execute(
        text(
            f"WITH gone AS (DELETE FROM {_table(session, event_id)}"
            " WHERE event_id = :e AND attendee_id = ANY(:a) AND kind = 'mean' RETURNING id)"
            " INSERT INTO matcher_tombstones (event_id, version, template_id) SELECT :e, :v, id FROM gone"
        ),
        {"e": event_id, "a": list(attendee_ids), "v": version},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # a CursorResult: DML with no RETURNING


async def photo_means(
    session: AsyncSession, event_id: uuid.UUID, attendee_ids: Sequence[uuid.UUID]
) -> list[tuple[uuid.UUID, str, np.ndarray]]:
    """(attendee, model, mean of the photo templates) for those of these attendees with 2+ photo templates.
    pgvector's avg() sums in double precision; the caller normalises."""
    result = await session.execute(
        text(
            f"SELECT attendee_id, min(model_id), avg(embedding)::real[] FROM {_table(session, event_id)}"
            " WHERE event_id = :e AND attendee_id = ANY(:a) AND kind = 'photo'"
            " GROUP BY attendee_id HAVING count(*) >= 2 ORDER BY attendee_id"
        ),
        {"e": event_id, "a": list(attendee_ids)},
    )
    return [(r[0], r[1], np.asarray(r[2], dtype=np.float64)) for r in result.all()]


async def attendee_templates(session: AsyncSession, event_id: uuid.UUID, attendee_id: uuid.UUID) -> list[TemplateRow]:
    result = await session.execute(
        text(
            "SELECT id, attendee_id, model_id, embedding::real[], quality, created_at, kind"
            f" FROM {_table(session, event_id)} WHERE event_id = :e AND attendee_id = :a"
            " ORDER BY kind = 'mean', created_at, id"
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
