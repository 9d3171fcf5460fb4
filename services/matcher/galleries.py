"""Domain logic of the matcher: galleries pinned to a model, template validation, search modes, grouping.

Embeddings are validated (length of the gallery's model, finite, not all zero) and normalised to unit length
here, so a caller may send raw network outputs; every stored vector has norm 1 and cosine distance is
1 - dot product.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import psycopg.errors
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import Conflict, NotFound, Unprocessable
from services.contracts.matcher import TemplateIn
from services.contracts.models import get_model
from services.matcher import search_store, write_store
from services.matcher.metrics import SEARCH_CANDIDATES, SEARCHES
from services.matcher.resident import Match, ResidentGallery, Residents
from services.matcher.searchpool import SearchConnection
from services.matcher.settings import MatcherSettings

Mode = Literal["exact", "hnsw"]  # what the gallery's size picks in Postgres
Answered = Literal["exact", "hnsw", "resident"]  # what answered a search


@dataclass(frozen=True)
class Gallery:
    row: write_store.GalleryRow
    templates: int
    attendees: int
    search_mode: Mode


@dataclass(frozen=True)
class SearchResult:
    matches: list[Match]
    mode: Answered
    templates: int = 0  # the gallery's size at the version searched: a 1:K threshold depends on it
    attendees: int = 0


@dataclass(frozen=True)
class AttendeeDistance:
    template_id: uuid.UUID
    distance: float
    templates: int


class GalleryCache:
    """Per-process cache of what a search needs to know about a gallery (model, dim, template count).

    Only ever trusted on the way to a successful answer: `search` re-reads the row before it returns a 404 or
    a 422 it derived from a cached entry, or when the search statement fails on it (dropped partition, other
    dimension). Writes in this process invalidate their event; other processes' writes show after the TTL.
    The app holds one (`app.state.gallery_cache`, beside the resident copies); callers without one (benchmarks,
    tools) get `NO_CACHE`, which stores nothing, so every search reads the row.
    """

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._entries: dict[uuid.UUID, tuple[float, search_store.GalleryMeta]] = {}

    def get(self, event_id: uuid.UUID, ttl_s: float) -> search_store.GalleryMeta | None:
        hit = self._entries.get(event_id)
        if hit is None or time.monotonic() - hit[0] > ttl_s:
            return None
        return hit[1]

    def put(self, event_id: uuid.UUID, meta: search_store.GalleryMeta) -> None:
        if not self.enabled:
            return
        if len(self._entries) > 10_000:  # bound the memory of a long-lived process; expired entries go first
            self._entries.clear()
        self._entries[event_id] = (time.monotonic(), meta)

    def invalidate(self, event_id: uuid.UUID) -> None:
        self._entries.pop(event_id, None)


NO_CACHE = GalleryCache(enabled=False)


def search_mode(templates: int, settings: MatcherSettings) -> Mode:
    """What Postgres would use (`search_store.search_path` decides; a resident copy stands in for HNSW)."""
    return "exact" if search_store.search_path(templates, settings) == "exact" else "hnsw"


def unit_vector(values: Sequence[float] | np.ndarray, *, dim: int, field: str = "embedding") -> np.ndarray:
    """Check an embedding for a gallery of dimension `dim` and return it normalised (float32)."""
    if len(values) != dim:
        raise Unprocessable(
            f"{field} has {len(values)} values; this gallery's model takes {dim}", code="dimension_mismatch"
        )
    vec = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(vec)):
        raise Unprocessable(f"{field} has non-finite values", code="invalid_embedding")
    norm = float(np.linalg.norm(vec))
    if norm == 0.0 or not math.isfinite(norm):
        raise Unprocessable(f"{field} is all zeros", code="invalid_embedding")
    return (vec / norm).astype(np.float32)


async def _require(session: AsyncSession, event_id: uuid.UUID, *, for_update: bool = False) -> write_store.GalleryRow:
    row = await write_store.get_gallery(session, event_id, for_update=for_update)
    if row is None:
        raise NotFound(f"no gallery for event {event_id}", code="gallery_not_found")
    return row


def _check_model(event_id: uuid.UUID, pinned: str, model_id: str) -> None:
    if model_id != pinned:
        raise Unprocessable(
            f"gallery {event_id} is pinned to model {pinned!r}, not {model_id!r}", code="model_mismatch"
        )


async def ensure_gallery(
    session: AsyncSession,
    event_id: uuid.UUID,
    *,
    model_id: str,
    settings: MatcherSettings,
    cache: GalleryCache = NO_CACHE,
) -> Gallery:
    model = get_model(model_id)
    if model is None:
        raise Unprocessable(f"unknown model {model_id!r}", code="unknown_model")
    cache.invalidate(event_id)
    created = await write_store.insert_gallery(session, event_id, model_id=model.id, dim=model.dim)
    if created is not None:
        # An empty HNSW index costs nothing and takes inserts, so the gallery never needs a rebuild step.
        await write_store.create_partition(
            session, event_id, dim=model.dim, m=settings.hnsw_m, ef_construction=settings.hnsw_ef_construction
        )
        return Gallery(row=created, templates=0, attendees=0, search_mode=search_mode(0, settings))
    existing = await _require(session, event_id)
    if existing.model_id != model.id:
        raise Conflict(f"gallery {event_id} exists with model {existing.model_id!r}", code="model_mismatch")
    return await gallery_stats(session, event_id, settings=settings)


async def gallery_stats(session: AsyncSession, event_id: uuid.UUID, *, settings: MatcherSettings) -> Gallery:
    row = await _require(session, event_id)
    templates, attendees = await write_store.gallery_counts(session, event_id)
    return Gallery(row=row, templates=templates, attendees=attendees, search_mode=search_mode(row.templates, settings))


async def drop_gallery(session: AsyncSession, event_id: uuid.UUID, *, cache: GalleryCache = NO_CACHE) -> int:
    row = await _require(session, event_id, for_update=True)
    cache.invalidate(event_id)
    await write_store.drop_gallery(session, event_id)
    return row.templates


@dataclass(frozen=True)
class Added:
    ids: list[uuid.UUID]  # the photo templates, in request order
    per_attendee: dict[uuid.UUID, int]  # each attendee's templates after the write, their mean included


async def add_templates(
    session: AsyncSession,
    event_id: uuid.UUID,
    *,
    templates: Sequence[TemplateIn],
    cache: GalleryCache = NO_CACHE,
    means: bool = True,
) -> Added:
    """All or nothing: any invalid template rejects the batch before a row is written. With `means`, every
    attendee of the batch left with 2+ photo templates gets their mean template (re)made in the same write."""
    row = await _require(session, event_id)
    rows: list[tuple[uuid.UUID, uuid.UUID, str, np.ndarray, float | None]] = []
    for i, t in enumerate(templates):
        _check_model(event_id, row.model_id, t.model_id)
        vec = unit_vector(t.embedding, dim=row.dim, field=f"templates[{i}].embedding")
        if t.quality is not None and not math.isfinite(t.quality):
            raise Unprocessable(f"templates[{i}].quality is not finite", code="invalid_quality")
        rows.append((uuid.uuid4(), t.attendee_id, t.model_id, vec, t.quality))
    version = await write_store.lock_gallery(session, event_id)
    if version is None:  # dropped between our read and the lock
        raise NotFound(f"no gallery for event {event_id}", code="gallery_not_found")
    new_attendees = sorted({r[1] for r in rows})
    try:
        known = await write_store.known_attendees(session, event_id, new_attendees)
        await write_store.insert_templates(session, event_id, rows=rows, version=version)
        delta = len(rows) + await _remake_means(session, event_id, new_attendees, version=version, enabled=means)
        per_attendee = await write_store.attendee_counts(session, event_id, new_attendees)
    except ProgrammingError as exc:  # the partition is gone though the registry row was there
        raise NotFound(f"no gallery for event {event_id}", code="gallery_not_found") from exc
    await write_store.commit_change(
        session, event_id, version=version, delta=delta, attendees_delta=len(new_attendees) - known
    )
    cache.invalidate(event_id)
    return Added(ids=[r[0] for r in rows], per_attendee=per_attendee)


async def _remake_means(
    session: AsyncSession, event_id: uuid.UUID, attendee_ids: Sequence[uuid.UUID], *, version: int, enabled: bool
) -> int:
    """Replace these attendees' mean templates (under the caller's gallery lock, stamped with its `version`:
    the old mean's tombstone and the new mean land in the one change a resident copy catches up on, so no
    version ever pairs the new photos with the old mean). Returns the change in the template count.

    Off (`mean_templates=False`), the old means still go: a mean that no longer matches its photos is never kept.
    """
    removed = await write_store.delete_means(session, event_id, attendee_ids, version=version)
    if not enabled:
        return -removed
    means: list[tuple[uuid.UUID, uuid.UUID, str, np.ndarray, float | None]] = []
    for attendee_id, model_id, mean in await write_store.photo_means(session, event_id, attendee_ids):
        norm = float(np.linalg.norm(mean))
        if norm > 1e-6:  # photos that cancel out have no direction to keep; the photos still answer
            means.append((uuid.uuid4(), attendee_id, model_id, (mean / norm).astype(np.float32), None))
    await write_store.insert_templates(session, event_id, rows=means, version=version, kind="mean")
    return len(means) - removed


async def attendee_templates(
    session: AsyncSession, event_id: uuid.UUID, attendee_id: uuid.UUID
) -> tuple[str, list[write_store.TemplateRow]]:
    row = await _require(session, event_id)
    found = await write_store.attendee_templates(session, event_id, attendee_id)
    if not found:
        raise NotFound(f"attendee {attendee_id} has no templates in event {event_id}", code="attendee_not_found")
    return row.model_id, found


async def delete_attendee(
    session: AsyncSession, event_id: uuid.UUID, attendee_id: uuid.UUID, *, cache: GalleryCache = NO_CACHE
) -> int:
    version = await write_store.lock_gallery(session, event_id)
    if version is None:
        raise NotFound(f"no gallery for event {event_id}", code="gallery_not_found")
    deleted = await write_store.delete_attendee(session, event_id, attendee_id, version=version)
    if deleted:  # a no-op delete leaves the version alone, so resident copies stay current
        await write_store.commit_change(session, event_id, version=version, delta=-deleted, attendees_delta=-1)
    cache.invalidate(event_id)
    return deleted


async def attendee_distance(
    session: AsyncSession,
    event_id: uuid.UUID,
    attendee_id: uuid.UUID,
    *,
    model_id: str,
    embedding: Sequence[float],
) -> AttendeeDistance:
    row = await _require(session, event_id)
    _check_model(event_id, row.model_id, model_id)
    query = unit_vector(embedding, dim=row.dim)
    found = await write_store.attendee_distances(session, event_id, attendee_id, query=query)
    if not found:
        raise NotFound(f"attendee {attendee_id} has no templates in event {event_id}", code="attendee_not_found")
    best = found[0]
    return AttendeeDistance(template_id=best.template_id, distance=best.distance, templates=len(found))


def best_per_attendee(neighbours: Sequence[write_store.Neighbour], k: int) -> list[Match]:
    """Keep each attendee's nearest template; neighbours arrive nearest first."""
    seen: set[uuid.UUID] = set()
    out: list[Match] = []
    for nb in neighbours:
        if nb.attendee_id in seen:
            continue
        seen.add(nb.attendee_id)
        out.append(Match(attendee_id=nb.attendee_id, template_id=nb.template_id, distance=nb.distance))
        if len(out) == k:
            break
    return out


async def search(
    conn: SearchConnection,
    event_id: uuid.UUID,
    *,
    model_id: str,
    embedding: Sequence[float] | np.ndarray,
    k: int,
    settings: MatcherSettings,
    mode: Mode | None = None,
    ef_search: int | None = None,
    residents: Residents | None = None,
    cache: GalleryCache = NO_CACHE,
) -> SearchResult:
    """Top-k attendees by their best template's cosine distance, nearest first.

    `conn` is a connection of the search pool (`searchpool`: autocommit, session-level search settings).
    `mode`/`ef_search` override the gallery's size-based choice (benchmarks and tests use them). With
    `residents`, a gallery searched by HNSW is answered from its resident copy when that copy is at the
    version read in this search's round trip (the gallery cache is bypassed: the read is the freshness check).
    """
    if residents is not None and mode is None and residents.settings.resident_enabled:
        return await _search_resident(conn, event_id, model_id, embedding, k, settings, ef_search, residents, cache)
    meta = cache.get(event_id, settings.gallery_cache_ttl_s)
    if meta is not None:
        try:
            return await _search(conn, event_id, meta, model_id, embedding, k, settings, mode, ef_search)
        except (NotFound, Unprocessable, psycopg.errors.UndefinedTable, psycopg.errors.DataError):
            cache.invalidate(event_id)  # the cached entry may be what is wrong: answer from a fresh read
    meta = await search_store.read_gallery_meta(conn.conn, event_id)
    if meta is None:
        raise NotFound(f"no gallery for event {event_id}", code="gallery_not_found")
    cache.put(event_id, meta)
    try:
        return await _search(conn, event_id, meta, model_id, embedding, k, settings, mode, ef_search)
    except psycopg.errors.UndefinedTable as exc:  # dropped between the read and the search
        cache.invalidate(event_id)
        raise NotFound(f"no gallery for event {event_id}", code="gallery_not_found") from exc


def _resident_ef(copy: ResidentGallery, settings: MatcherSettings, ef_search: int | None) -> int:
    """The candidate list: the caller's, or the setting for the copy's size (longer above hnsw_large_templates)."""
    if ef_search:
        return ef_search
    large = copy.live > settings.hnsw_large_templates
    return settings.resident_ef_search_large if large else settings.resident_ef_search


async def _search_resident(
    conn: SearchConnection,
    event_id: uuid.UUID,
    model_id: str,
    embedding: Sequence[float] | np.ndarray,
    k: int,
    settings: MatcherSettings,
    ef_search: int | None,
    residents: Residents,
    cache: GalleryCache,
) -> SearchResult:
    """The gallery row is read in this search's one round trip; the resident copy answers only if it is at the
    version read. While the read is on its way, the copy's graph is already walked (speculatively: that
    answer is kept only if the copy was at the version Postgres then returns)."""
    pending = asyncio.ensure_future(search_store.read_gallery_meta(conn.conn, event_id))
    early: tuple[ResidentGallery, int, list[Match]] | None = None
    copy = residents.galleries.get(event_id)
    if copy is not None and len(embedding) == copy.dim:
        await asyncio.sleep(0)  # let the read go out first: Postgres answers it while the graph is walked
        with contextlib.suppress(Unprocessable):  # a bad embedding gets its 422 below, after the read
            query = unit_vector(embedding, dim=copy.dim)
            # synchronous: no catch-up can change the copy between reading its version and the walk
            early = (copy, copy.version, copy.search(query, k=k, ef=_resident_ef(copy, settings, ef_search)))
    meta = await pending
    if meta is None:
        residents.forget(event_id)
        cache.invalidate(event_id)
        raise NotFound(f"no gallery for event {event_id}", code="gallery_not_found")
    cache.put(event_id, meta)
    res = residents.current(event_id, meta)
    if res is None:
        return await _search(conn, event_id, meta, model_id, embedding, k, settings, None, ef_search)
    _check_model(event_id, meta.model_id, model_id)
    if early is not None and early[0] is res and early[1] == meta.version:
        hits = early[2]
    else:  # the copy caught up while the read was out: walk it now
        hits = res.search(unit_vector(embedding, dim=meta.dim), k=k, ef=_resident_ef(res, settings, ef_search))
    SEARCHES.labels("resident").inc()
    SEARCH_CANDIDATES.labels("resident").observe(_resident_ef(res, settings, ef_search))
    return SearchResult(matches=hits, mode="resident", templates=meta.templates, attendees=meta.attendees)


async def _search(
    conn: SearchConnection,
    event_id: uuid.UUID,
    meta: search_store.GalleryMeta,
    model_id: str,
    embedding: Sequence[float] | np.ndarray,
    k: int,
    settings: MatcherSettings,
    mode: Mode | None,
    ef_search: int | None,
) -> SearchResult:
    _check_model(event_id, meta.model_id, model_id)
    query = unit_vector(embedding, dim=meta.dim)
    chosen: Mode = mode or search_mode(meta.templates, settings)
    if chosen == "hnsw":
        # One index scan yields at most ef_search rows, so the candidate set is ef_search templates, ordered
        # exactly and grouped; k attendees need at least k * overfetch candidates. Galleries above
        # `hnsw_large_templates` get the larger list.
        floor = k * settings.overfetch_per_attendee
        large = meta.templates > settings.hnsw_large_templates
        ef = min(1000, max(ef_search or (settings.hnsw_ef_search_large if large else settings.hnsw_ef_search), floor))
        neighbours = await search_store.search_on(
            conn, event_id, query=query, n=ef, k=k, hnsw=True, dim=meta.dim, ef=ef
        )
        matches = best_per_attendee(neighbours, k)  # already one row per attendee; keeps the types uniform
        candidates = ef
    else:
        # Exact: fetch k * overfetch templates; if they hold fewer than k attendees (attendees with many
        # templates) and there are more rows, double and retry. Full recall by construction.
        n = k * settings.overfetch_per_attendee
        while True:
            neighbours = await search_store.search_on(
                conn, event_id, query=query, n=n, k=k, hnsw=False, dim=meta.dim, ef=settings.hnsw_ef_search
            )
            matches = best_per_attendee(neighbours, k)
            if len(matches) == k or len(neighbours) < n:
                break
            n *= 2
        candidates = len(neighbours)
    SEARCHES.labels(chosen).inc()
    SEARCH_CANDIDATES.labels(chosen).observe(candidates)
    return SearchResult(matches=matches, mode=chosen, templates=meta.templates, attendees=meta.attendees)
