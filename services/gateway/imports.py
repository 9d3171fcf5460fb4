"""Bulk import: a CSV of attendees plus a zip of their photos, enrolled by a background job.

CSV columns (header row required): `name`, `ticket_code`, optional `external_ref`, optional `photos` (file names
inside the zip, separated by `;`). Without a `photos` column, a row's photos are the zip entries in a folder
named after its ticket code (`T-123/1.jpg`) or whose base name starts with the ticket code (`T-123.jpg`,
`T-123_2.jpg`).

The request is checked up front (columns, duplicate tickets, missing or oversized photos: 422 with every
problem) and answers 202 with a job id; the job then enrols row by row through the same all-or-nothing
enrolment as the API, with the idempotency key `import:<job>:<row>` so a row is never enrolled twice. A row
that fails (quality, ticket already taken) is reported in the job's results and does not stop the others;
a dependency outage is retried a few times and then reported for that row. Jobs run in the gateway process
that accepted them: a job that made no progress for `STALL_AFTER` (its process died) is marked `failed` at the
next gateway start; re-submitting the same file is then safe, already enrolled tickets answer `ticket_exists`.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.expression import cast

from services.common.errors import DependencyUnavailable, FacegateError, Unprocessable
from services.contracts.images import MAX_IMAGE_BYTES
from services.embedder.client import EmbedderClient
from services.gateway import enrolment
from services.gateway.auth import Principal
from services.gateway.cache import TemplateCache
from services.gateway.errors import EventNotFound
from services.gateway.schemas import CONTROL_CHARS
from services.gateway.tables import Event, ImportJob
from services.gateway.text import ticket_key
from services.gateway.uploads import Photo
from services.matcher.client import MatcherClient

log = logging.getLogger("facegate.gateway.imports")

MAX_ROWS = 5000
STALL_AFTER = timedelta(minutes=10)
_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


@dataclass(frozen=True)
class ImportRow:
    index: int  # 1-based data row number (the header is row 0)
    name: str
    ticket_code: str
    external_ref: str | None
    photo_names: list[str]


def _photo_entries(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    return {
        info.filename: info
        for info in archive.infolist()
        if not info.is_dir() and PurePosixPath(info.filename).suffix.lower() in _TYPES
    }


def parse_import(csv_bytes: bytes, zip_bytes: bytes, *, max_photos: int) -> tuple[list[ImportRow], zipfile.ZipFile]:
    """Validate the whole upload; raises 422 listing every problem, so a job never starts on a broken file."""
    try:
        text = csv_bytes.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Unprocessable("the CSV must be UTF-8", code="invalid_import") from None
    reader = csv.DictReader(io.StringIO(text))
    try:
        # read it all here: csv raises on a stray quote or newline mid-field, which is the client's error (the
        # fuzzer's CSV made this a 500)
        records = list(reader)
        header = reader.fieldnames or []
    except csv.Error as exc:
        raise Unprocessable(f"the CSV is malformed: {exc}", code="invalid_import") from None
    columns = {c.strip() for c in header}
    if not {"name", "ticket_code"} <= columns:
        raise Unprocessable("the CSV needs the columns name and ticket_code", code="invalid_import")
    try:
        archive = zipfile.ZipFile(io.BytesIO(zip_bytes))
    except zipfile.BadZipFile:
        raise Unprocessable("photos must be a zip file", code="invalid_import") from None
    entries = _photo_entries(archive)
    problems: list[dict[str, Any]] = []
    rows: list[ImportRow] = []
    seen: set[str] = set()
    for i, raw in enumerate(records, start=1):
        if i > MAX_ROWS:
            raise Unprocessable(f"at most {MAX_ROWS} rows per import", code="invalid_import")
        rec = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        name, ticket = rec.get("name", ""), rec.get("ticket_code", "")
        if not name or not ticket:
            problems.append({"row": i, "problem": "name and ticket_code are required"})
            continue
        # The same rules as the enrolment form, up front: a NUL or a 201-char name would fail the job's row in
        # Postgres instead (a DataError, not a clear per-row reason).
        bad = [
            field
            for field in ("name", "ticket_code", "external_ref")
            if len(rec.get(field, "")) > 200 or CONTROL_CHARS.search(rec.get(field, ""))
        ]
        if bad:
            problems.append({"row": i, "problem": f"over 200 characters or control characters: {', '.join(bad)}"})
            continue
        if ticket_key(ticket) in seen:  # the same ticket as enrolment and the gate see it (text.py)
            problems.append({"row": i, "ticket_code": ticket, "problem": "duplicate ticket_code in the CSV"})
            continue
        seen.add(ticket_key(ticket))
        if rec.get("photos"):
            names = [n.strip() for n in rec["photos"].split(";") if n.strip()]
        else:
            names = sorted(
                n
                for n in entries
                if PurePosixPath(n).parent.name == ticket or PurePosixPath(n).stem.split("_")[0] == ticket
            )
        missing = [n for n in names if n not in entries]
        too_big = [n for n in names if n in entries and entries[n].file_size > MAX_IMAGE_BYTES]
        if not names or missing or too_big or len(names) > max_photos:
            problems.append(
                {
                    "row": i,
                    "ticket_code": ticket,
                    "problem": "photos missing, too large or too many",
                    "missing": missing,
                    "too_large": too_big,
                    "photos": len(names),
                }
            )
            continue
        rows.append(ImportRow(i, name, ticket, rec.get("external_ref") or None, names))
    if problems:
        raise Unprocessable("the import has problems; nothing was started", code="invalid_import", errors=problems)
    if not rows:
        raise Unprocessable("the CSV has no rows", code="invalid_import")
    return rows, archive


async def create_job(session: AsyncSession, *, principal: Principal, event: Event, total: int) -> ImportJob:
    job = ImportJob(
        id=uuid.uuid4(),
        event_id=event.id,
        created_by=principal.key_id,
        status="queued",
        total=total,
        succeeded=0,
        failed=0,
        results=[],
    )
    session.add(job)
    await session.flush()
    await session.refresh(job)
    return job


async def get_job(session: AsyncSession, *, event: Event, job_id: uuid.UUID) -> ImportJob | None:
    job = await session.get(ImportJob, job_id)
    return job if job is not None and job.event_id == event.id else None


async def mark_interrupted(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(ImportJob)
            .where(ImportJob.status.in_(("queued", "running")), ImportJob.updated_at < datetime.now(UTC) - STALL_AFTER)
            .values(
                status="failed", error="interrupted (no progress; the gateway restarted)", finished_at=datetime.now(UTC)
            )
        )


async def run_job(
    *,
    job_id: uuid.UUID,
    event_id: uuid.UUID,
    principal: Principal,
    rows: list[ImportRow],
    archive: zipfile.ZipFile,
    sessionmaker: async_sessionmaker[AsyncSession],
    embedder: EmbedderClient,
    matcher: MatcherClient,
    cache: TemplateCache,
    max_photos: int,
    concurrency: int = 4,
    retries: int = 3,
    sleep: Callable[[float], Any] = asyncio.sleep,
) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def record(result: dict[str, Any], ok: bool) -> None:
        async with sessionmaker() as session, session.begin():
            counter = ImportJob.succeeded if ok else ImportJob.failed
            await session.execute(
                update(ImportJob)
                .where(ImportJob.id == job_id)
                .values(
                    {
                        counter.key: counter + 1,
                        "results": ImportJob.results.op("||")(cast([result], JSONB)),
                        "updated_at": datetime.now(UTC),
                    }
                )
            )

    async def one(row: ImportRow) -> None:
        async with gate:
            photos = [
                Photo(name, _TYPES[PurePosixPath(name).suffix.lower()], archive.read(name)) for name in row.photo_names
            ]
            for attempt in range(retries + 1):
                try:
                    result = await enrolment.enrol(
                        sessionmaker,
                        principal=principal,
                        event_id=event_id,
                        name=row.name,
                        ticket_code=row.ticket_code,
                        external_ref=row.external_ref,
                        photos=photos,
                        idempotency_key=f"import:{job_id}:{row.index}",
                        embedder=embedder,
                        matcher=matcher,
                        cache=cache,
                        max_photos=max_photos,
                    )
                    attendee_id = None if result.attendee_id is None else str(result.attendee_id)
                    await record({"row": row.index, "ticket_code": row.ticket_code, "attendee_id": attendee_id}, True)
                    return
                except DependencyUnavailable as exc:
                    if attempt < retries:
                        await sleep(min(2.0**attempt, 10.0))
                        continue
                    error: FacegateError = exc
                except EventNotFound:
                    error = Unprocessable("the event was erased", code="event_erased")
                except FacegateError as exc:
                    error = exc
                await record(
                    {
                        "row": row.index,
                        "ticket_code": row.ticket_code,
                        "code": error.error_code,
                        "detail": error.detail,
                        "errors": error.errors,
                    },
                    False,
                )
                return

    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(ImportJob).where(ImportJob.id == job_id).values(status="running", updated_at=datetime.now(UTC))
        )
    status, failure = "done", None
    try:
        await asyncio.gather(*(one(row) for row in rows))
    except asyncio.CancelledError:
        status, failure = "failed", "interrupted by a gateway shutdown"
        raise
    except Exception as exc:  # a bug or the database gone: the job fails, finished rows stay enrolled
        log.exception("import job %s failed", job_id)
        status, failure = "failed", f"{type(exc).__name__}: {exc}"
    finally:
        archive.close()
        try:
            async with sessionmaker() as session, session.begin():
                exists = (await session.execute(select(ImportJob.id).where(ImportJob.id == job_id))).scalar()
                if exists is not None:
                    await session.execute(
                        update(ImportJob)
                        .where(ImportJob.id == job_id)
                        .values(status=status, error=failure, finished_at=datetime.now(UTC))
                    )
        except Exception:
            log.exception("import job %s: final status not stored", job_id)
