"""Large galleries held in memory as hnswlib graphs, answered only when they are at Postgres's version.

pgvector 0.6's HNSW scan costs Postgres ~2 ms at 100k 512-d templates by itself (buffer manager and tuple
access for each visited node), a floor that no tuning above it removes; hnswlib walks the same kind of graph in
process memory in ~0.3 ms. Postgres stays the truth: every search reads the gallery row (model, dim, count and
change `version`, migration 0003) in its one round trip, and a resident copy answers only if it is at exactly
that version. Otherwise Postgres answers and the copy catches up in the background from the rows and
tombstones stamped after its version. So an erasure or enrolment committed by any replica shows in the next
search, here or anywhere, and a copy that is late or broken costs speed, never correctness.

The copy is only ever changed off to the side (a rebuild builds a new object) or between searches on the event
loop (a small catch-up), so a search never sees a half-applied change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field

import hnswlib
import numpy as np
import psycopg
from pgvector.psycopg import register_vector_async

from services.common.db import CONNECT_TIMEOUT_S, libpq_url
from services.matcher import search_store
from services.matcher.settings import MatcherSettings

log = logging.getLogger("facegate.matcher.resident")


@dataclass(frozen=True)
class Match:
    """An attendee and their best template's cosine distance to the query (what a search returns)."""

    attendee_id: uuid.UUID
    template_id: uuid.UUID
    distance: float


class ResidentGallery:
    """One gallery's templates: an inner-product hnswlib graph (unit vectors: 1 - dot is cosine distance),
    labelled 0..count-1, with each label's template id and attendee number in NumPy arrays."""

    def __init__(self, *, model_id: str, dim: int, capacity: int, m: int, ef_construction: int) -> None:
        self.model_id, self.dim = model_id, dim
        self.version = -1
        self.index = hnswlib.Index(space="ip", dim=dim)
        self.index.init_index(max_elements=max(capacity, 16), ef_construction=ef_construction, M=m)
        self.index.set_num_threads(1)  # searches: one query at a time on the event loop
        self.template_ids = np.zeros((max(capacity, 16), 16), dtype=np.uint8)
        self.owner = np.zeros(max(capacity, 16), dtype=np.int32)
        self.attendees: list[uuid.UUID] = []
        self._attendee_no: dict[uuid.UUID, int] = {}
        self.count = 0  # labels handed out
        self.deleted = 0
        self.last_used = time.monotonic()

    @property
    def live(self) -> int:
        return self.count - self.deleted

    def add(
        self, template_ids: list[uuid.UUID], attendee_ids: list[uuid.UUID], vectors: np.ndarray, threads: int
    ) -> None:
        n = len(template_ids)
        if n == 0:
            return
        need = self.count + n
        if need > len(self.owner):
            grown = max(need, 2 * len(self.owner))
            self.index.resize_index(grown)
            self.template_ids = np.resize(self.template_ids, (grown, 16))
            self.owner = np.resize(self.owner, grown)
        labels = np.arange(self.count, need)
        self.template_ids[self.count : need] = np.frombuffer(b"".join(t.bytes for t in template_ids), np.uint8).reshape(
            n, 16
        )
        for i, a in enumerate(attendee_ids):
            no = self._attendee_no.get(a)
            if no is None:
                no = self._attendee_no[a] = len(self.attendees)
                self.attendees.append(a)
            self.owner[self.count + i] = no
        # Arrays first, graph second: a label is only ever returned once its ids are in place.
        self.index.add_items(np.ascontiguousarray(vectors, dtype=np.float32), labels, num_threads=threads)
        self.count = need

    def remove(self, template_ids: list[uuid.UUID]) -> None:
        if not template_ids:
            return
        wanted = np.frombuffer(b"".join(t.bytes for t in template_ids), np.uint64).reshape(-1, 2)
        ids = self.template_ids[: self.count].view(np.uint64)  # (count, 2)
        rows = np.flatnonzero(np.isin(ids[:, 0], wanted[:, 0]))
        keep = {(int(h), int(lo)) for h, lo in wanted}
        for label in rows:
            if (int(ids[label, 0]), int(ids[label, 1])) in keep:
                with contextlib.suppress(RuntimeError):  # already marked
                    self.index.mark_deleted(int(label))
                    self.deleted += 1

    def search(self, query: np.ndarray, *, k: int, ef: int) -> list[Match]:
        """Top-k attendees by their best template among the graph's `ef` nearest templates (distances exact;
        each attendee's first, i.e. nearest, candidate is its best). As in pgvector, the candidate list is
        the search list; if its templates hold fewer than k attendees, the list doubles until they do."""
        self.last_used = time.monotonic()
        n = min(ef, self.live)
        while True:
            if n <= 0:
                return []
            self.index.set_ef(n)
            labels, dists = self.index.knn_query(query, k=n)
            labels, dists = labels[0], dists[0]
            first: dict[int, int] = {}  # attendee number -> position of its nearest candidate, nearest first
            for j, owner in enumerate(self.owner[labels].tolist()):
                if owner not in first:
                    first[owner] = j
                    if len(first) == k:
                        break
            if len(first) >= k or n >= self.live:
                break
            n = min(2 * n, self.live)
        best = list(first.values())
        ids = self.template_ids[labels[best]].tobytes()  # one gather, then plain Python (no NumPy scalars)
        return [
            Match(
                attendee_id=self.attendees[owner],
                template_id=uuid.UUID(bytes=ids[16 * j : 16 * j + 16]),
                distance=max(0.0, d),  # 1 - dot can round to -1e-7 for an identical vector
            )
            for j, (owner, d) in enumerate(zip(first, dists[best].tolist(), strict=True))
        ]


@dataclass
class Residents:
    """The process's resident galleries and their background loaders (one load at a time: builds are heavy)."""

    settings: MatcherSettings
    galleries: dict[uuid.UUID, ResidentGallery] = field(default_factory=dict)
    _tasks: dict[uuid.UUID, asyncio.Task[None]] = field(default_factory=dict)
    _failed_at: dict[uuid.UUID, float] = field(default_factory=dict)
    _build_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def wanted(self, templates: int) -> bool:
        """Galleries searched by HNSW (above the exact cut-over) that fit the process's budget."""
        return search_store.search_path(templates, self.settings) == "resident"

    def current(self, event_id: uuid.UUID, meta: search_store.GalleryMeta) -> ResidentGallery | None:
        """The resident copy if it is exactly at `meta` (read in this search's round trip); else schedule the
        copy to catch up (or be built) and return None, so this search goes to Postgres."""
        res = self.galleries.get(event_id)
        if res is not None and res.version == meta.version and res.model_id == meta.model_id and res.dim == meta.dim:
            return res
        if self.wanted(meta.templates):
            self.request(event_id)
        elif res is not None:
            self.forget(event_id)  # shrank below the cut-over, or grew past the budget
        return None

    def forget(self, event_id: uuid.UUID) -> None:
        self.galleries.pop(event_id, None)

    def request(self, event_id: uuid.UUID) -> None:
        if event_id in self._tasks:
            return
        if time.monotonic() - self._failed_at.get(event_id, -1e9) < self.settings.resident_retry_s:
            return
        task = asyncio.get_running_loop().create_task(self._refresh(event_id), name=f"resident-{event_id}")
        self._tasks[event_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(event_id, None))

    async def wait_idle(self) -> None:
        """Wait for the loads in flight (tests and benchmarks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)
        self.galleries.clear()

    async def _refresh(self, event_id: uuid.UUID) -> None:
        try:
            async with self._build_lock:
                await self._sync(event_id)
            self._failed_at.pop(event_id, None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Postgres answers meanwhile; try again after resident_retry_s
            log.warning("resident copy of gallery %s not refreshed: %s: %s", event_id, type(exc).__name__, exc)
            self.forget(event_id)
            self._failed_at[event_id] = time.monotonic()

    async def _sync(self, event_id: uuid.UUID) -> None:
        # One REPEATABLE READ snapshot: the version and the rows/tombstones read are of the same moment.
        async with await psycopg.AsyncConnection.connect(
            libpq_url(self.settings.database_url), autocommit=False, connect_timeout=CONNECT_TIMEOUT_S
        ) as conn:
            await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
            await conn.set_read_only(True)
            await register_vector_async(conn)
            meta = await search_store.read_gallery_meta(conn, event_id)
            if meta is None or not self.wanted(meta.templates):
                self.forget(event_id)
                return
            res = self.galleries.get(event_id)
            if res is not None and res.model_id == meta.model_id and res.dim == meta.dim:
                if res.version == meta.version:
                    return
                added = await search_store.changed_since(conn, event_id, res.version)
                # Small changes are applied in place, between searches; big ones or many deletions rebuild.
                if added <= self.settings.resident_catch_up_rows and res.deleted <= res.count // 5:
                    rows = await search_store.fetch_templates(conn, event_id, after=res.version)
                    gone = await search_store.tombstones_since(conn, event_id, res.version)
                    if self.galleries.get(event_id) is res:  # not forgotten meanwhile
                        res.remove(gone)
                        res.add(*rows, threads=1)
                        res.version = meta.version
                    return
            self._make_room(event_id, meta.templates)
            rows = await search_store.fetch_templates(conn, event_id, after=None)
        s = self.settings
        fresh = ResidentGallery(
            model_id=meta.model_id,
            dim=meta.dim,
            capacity=len(rows[0]) + len(rows[0]) // 8,
            m=s.resident_m,
            ef_construction=s.resident_ef_construction,
        )
        started = time.perf_counter()
        await asyncio.to_thread(fresh.add, *rows, threads=s.resident_build_threads)  # hnswlib drops the GIL
        fresh.version = meta.version
        self.galleries[event_id] = fresh  # later changes are caught up on the next search that sees them
        log.info(
            "gallery %s resident: %d templates at version %d, built in %.1f s",
            event_id,
            fresh.count,
            fresh.version,
            time.perf_counter() - started,
        )

    def _make_room(self, event_id: uuid.UUID, templates: int) -> None:
        """Evict the least recently searched copies until this one fits the process's budget."""
        self.forget(event_id)
        while self.galleries and sum(g.live for g in self.galleries.values()) + templates > (
            self.settings.resident_max_templates
        ):
            oldest = min(self.galleries, key=lambda e: self.galleries[e].last_used)
            log.info("gallery %s no longer resident (budget)", oldest)
            self.forget(oldest)
