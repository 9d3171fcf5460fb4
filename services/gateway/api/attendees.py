from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Header, Query, UploadFile
from fastapi.responses import JSONResponse

from services.common.errors import ERROR_RESPONSES
from services.gateway import attendees, enrolment, events
from services.gateway.authfirst import AuthFirstRoute
from services.gateway.deps import (
    CacheDep,
    EmbedderDep,
    MatcherDep,
    RequireOrganiser,
    SessionDep,
    SessionmakerDep,
    SettingsDep,
)
from services.gateway.idempotency import StoredResponse
from services.gateway.schemas import AttendeeList, AttendeeOut, Enrolled, Erased
from services.gateway.uploads import read_upload, single_valued

router = APIRouter(
    prefix="/v1/events/{event_id}/attendees", tags=["attendees"], responses=ERROR_RESPONSES, route_class=AuthFirstRoute
)


@router.post(
    "",
    status_code=201,
    response_model=Enrolled,
    dependencies=[Depends(single_valued("name", "ticket_code", "external_ref"))],
)
async def enrol(
    event_id: uuid.UUID,
    sessionmaker: SessionmakerDep,  # the saga's own unit of work, not the request's session
    principal: RequireOrganiser,
    embedder: EmbedderDep,
    matcher: MatcherDep,
    cache: CacheDep,
    settings: SettingsDep,
    name: Annotated[str, Form(min_length=1, max_length=200)],
    ticket_code: Annotated[str, Form(min_length=1, max_length=200)],
    photos: Annotated[list[UploadFile], File(description="one or more face photos")],
    external_ref: Annotated[str | None, Form(max_length=200)] = None,
    allow_duplicate_face: Annotated[
        bool, Form(description="enrol even if the face identifies another attendee of the event (logged)")
    ] = False,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Register an attendee with face photos, all or nothing. 422 `quality_rejected` lists every photo's reasons;
    409 `duplicate_face` names the attendee whose face a photo shows."""
    result = await enrolment.enrol(
        sessionmaker,
        principal=principal,
        event_id=event_id,
        name=name,
        ticket_code=ticket_code,
        external_ref=external_ref,
        photos=[await read_upload(p) for p in photos],
        idempotency_key=idempotency_key,
        embedder=embedder,
        matcher=matcher,
        cache=cache,
        max_photos=settings.max_photos_per_request,
        idempotency_ttl=timedelta(seconds=settings.idempotency_ttl_s),
        allow_duplicate_face=allow_duplicate_face,
    )
    if isinstance(result, StoredResponse):  # a retry: what the first attempt answered, as it was
        return JSONResponse(status_code=result.status_code, content=result.body)
    return JSONResponse(status_code=201, content=result.response().model_dump(mode="json"))


@router.get("", response_model=AttendeeList)
async def list_attendees(
    event_id: uuid.UUID,
    session: SessionDep,
    principal: RequireOrganiser,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,  # unbounded, it overflowed Postgres's bigint (500)
    q: Annotated[
        str | None, Query(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$", description="name or ticket code contains")
    ] = None,
) -> AttendeeList:
    event = await events.get_managed_event(session, principal=principal, event_id=event_id)
    rows = await attendees.list_attendees(session, event=event, limit=limit + 1, offset=offset, q=(q or "").strip())
    return AttendeeList(
        items=[AttendeeOut.model_validate(a) for a in rows[:limit]],
        next_offset=offset + limit if len(rows) > limit else None,
    )


@router.get("/{attendee_id}", response_model=AttendeeOut)
async def get_attendee(
    event_id: uuid.UUID, attendee_id: uuid.UUID, session: SessionDep, principal: RequireOrganiser
) -> AttendeeOut:
    event = await events.get_managed_event(session, principal=principal, event_id=event_id)
    return AttendeeOut.model_validate(await attendees.get_attendee(session, event=event, attendee_id=attendee_id))


@router.post("/{attendee_id}/photos", status_code=201, response_model=Enrolled)
async def add_photos(
    event_id: uuid.UUID,
    attendee_id: uuid.UUID,
    session: SessionDep,
    principal: RequireOrganiser,
    embedder: EmbedderDep,
    matcher: MatcherDep,
    cache: CacheDep,
    settings: SettingsDep,
    photos: Annotated[list[UploadFile], File()],
    allow_duplicate_face: Annotated[bool, Form()] = False,
) -> Enrolled:
    event = await events.get_managed_event(session, principal=principal, event_id=event_id)
    result = await enrolment.add_photos(
        session,
        event=event,
        attendee_id=attendee_id,
        photos=[await read_upload(p) for p in photos],
        embedder=embedder,
        matcher=matcher,
        cache=cache,
        max_photos=settings.max_photos_per_request,
        allow_duplicate_face=allow_duplicate_face,
    )
    return result.response()


@router.post("/{attendee_id}/revoke", response_model=AttendeeOut)
async def revoke(
    event_id: uuid.UUID, attendee_id: uuid.UUID, session: SessionDep, principal: RequireOrganiser, cache: CacheDep
) -> AttendeeOut:
    event = await events.get_managed_event(session, principal=principal, event_id=event_id)
    return AttendeeOut.model_validate(
        await attendees.revoke(session, event=event, attendee_id=attendee_id, cache=cache)
    )


@router.delete("/{attendee_id}", response_model=Erased)
async def erase(
    event_id: uuid.UUID,
    attendee_id: uuid.UUID,
    session: SessionDep,
    principal: RequireOrganiser,
    matcher: MatcherDep,
    cache: CacheDep,
) -> Erased:
    """Erase templates, cached vectors and personal data; the attendee's log rows are anonymised, not deleted."""
    event = await events.get_managed_event(session, principal=principal, event_id=event_id)
    deleted = await attendees.erase(session, event=event, attendee_id=attendee_id, matcher=matcher, cache=cache)
    return Erased(attendees=1, templates=deleted)
