from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, FastAPI, File, Request, UploadFile

from services.common.errors import ERROR_RESPONSES, NotFound, PayloadTooLarge
from services.gateway import events, imports
from services.gateway.authfirst import AuthFirstRoute
from services.gateway.bodylimit import MAX_CSV_BYTES
from services.gateway.deps import CacheDep, EmbedderDep, MatcherDep, RequireOrganiser, SessionDep, SettingsDep
from services.gateway.schemas import ImportJobOut

router = APIRouter(
    prefix="/v1/events/{event_id}/imports", tags=["imports"], responses=ERROR_RESPONSES, route_class=AuthFirstRoute
)


async def _read(upload: UploadFile, limit: int, what: str) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"{what} is larger than {limit} bytes")
    return data


@router.post("", status_code=202, response_model=ImportJobOut)
async def start_import(
    event_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    principal: RequireOrganiser,
    embedder: EmbedderDep,
    matcher: MatcherDep,
    cache: CacheDep,
    settings: SettingsDep,
    csv: Annotated[UploadFile, File(description="name,ticket_code[,external_ref][,photos]")],
    photos: Annotated[UploadFile, File(description="zip of the photos")],
    background: BackgroundTasks,
) -> ImportJobOut:
    """Check the CSV and zip, then enrol every row in the background; poll the job for progress."""
    event = await events.get_managed_event(session, principal=principal, event_id=event_id)
    rows, archive = imports.parse_import(
        await _read(csv, MAX_CSV_BYTES, "the CSV"),
        await _read(photos, settings.import_max_zip_bytes, "the zip"),
        max_photos=settings.max_photos_per_request,
    )
    job = await imports.create_job(session, principal=principal, event=event, total=len(rows))
    # Started after the response, so after the request's unit of work committed the job row the task looks for
    # (`deps.get_session` commits before the response is sent; a failed commit is an error and starts nothing).
    background.add_task(
        _start,
        request.app,
        functools.partial(
            imports.run_job,
            job_id=job.id,
            event_id=event.id,
            principal=principal,
            rows=rows,
            archive=archive,
            sessionmaker=request.app.state.sessionmaker,
            embedder=embedder,
            matcher=matcher,
            cache=cache,
            max_photos=settings.max_photos_per_request,
        ),
    )
    return ImportJobOut.model_validate(job)


async def _start(app: FastAPI, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """The job runs beyond this request; the app keeps it (and cancels it at shutdown). Async: a sync background
    task would run in a worker thread, with no event loop to start the job on."""
    task = asyncio.create_task(job())
    jobs: set[asyncio.Task[None]] = app.state.jobs
    jobs.add(task)
    task.add_done_callback(jobs.discard)


@router.get("/{job_id}", response_model=ImportJobOut)
async def get_import(
    event_id: uuid.UUID, job_id: uuid.UUID, session: SessionDep, principal: RequireOrganiser
) -> ImportJobOut:
    event = await events.get_managed_event(session, principal=principal, event_id=event_id)
    job = await imports.get_job(session, event=event, job_id=job_id)
    if job is None:
        raise NotFound("import job not found")
    return ImportJobOut.model_validate(job)
