from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from services.common.errors import ERROR_RESPONSES
from services.gateway import access_log, events, thresholds
from services.gateway.authfirst import AuthFirstRoute
from services.gateway.deps import CacheDep, EmbedderDep, MatcherDep, RequireOrganiser, SessionDep, SettingsDep
from services.gateway.schemas import (
    Decision,
    Erased,
    EventCreate,
    EventList,
    EventOut,
    EventUpdate,
    IsoDateTime,
    LiveCounts,
    LogPage,
)

router = APIRouter(prefix="/v1/events", tags=["events"], responses=ERROR_RESPONSES, route_class=AuthFirstRoute)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=EventOut)
async def create_event(
    body: EventCreate,
    session: SessionDep,
    principal: RequireOrganiser,
    embedder: EmbedderDep,
    matcher: MatcherDep,
    settings: SettingsDep,
) -> EventOut:
    event = await events.create_event(
        session,
        principal=principal,
        body=body,
        embedder=embedder,
        matcher=matcher,
        default_model_id=settings.default_model_id,
    )
    return await events.event_out(session, event)


@router.get("", response_model=EventList)
async def list_events(session: SessionDep, principal: RequireOrganiser) -> EventList:
    items = await events.list_events(session, principal=principal)
    sizes = await thresholds.gallery_sizes(session, [e.id for e in items])
    empty = thresholds.GallerySize(attendees=0, templates=0)
    return EventList(items=[events.to_out(e, sizes.get(e.id, empty)) for e in items])


@router.get("/{event_id}", response_model=EventOut)
async def get_event(event_id: uuid.UUID, session: SessionDep, principal: RequireOrganiser) -> EventOut:
    """The event with its effective thresholds at its current size and what they are expected to do."""
    event = await events.get_managed_event(session, principal=principal, event_id=event_id)
    return await events.event_out(session, event)


@router.patch("/{event_id}", response_model=EventOut)
async def update_event(
    event_id: uuid.UUID, body: EventUpdate, session: SessionDep, principal: RequireOrganiser
) -> EventOut:
    """Change name, window, mode, re-entry, target rates, threshold overrides (null = derived from the targets) or
    the margin (null = calibrated)."""
    event = await events.update_event(session, principal=principal, event_id=event_id, body=body)
    return await events.event_out(session, event)


@router.delete("/{event_id}", response_model=Erased)
async def erase_event(
    event_id: uuid.UUID,
    session: SessionDep,
    principal: RequireOrganiser,
    matcher: MatcherDep,
    cache: CacheDep,
) -> Erased:
    """Erase the event and everything of it: templates, cached vectors, attendees, gate keys, access log."""
    return await events.erase_event(session, principal=principal, event_id=event_id, matcher=matcher, cache=cache)


@router.get("/{event_id}/log", response_model=LogPage)
async def read_log(
    event_id: uuid.UUID,
    session: SessionDep,
    principal: RequireOrganiser,
    gate: Annotated[uuid.UUID | None, Query(description="gate key id")] = None,
    decision: Decision | None = None,
    reason: str | None = None,
    since: IsoDateTime | None = None,
    until: IsoDateTime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> LogPage:
    event = await events.get_managed_event(session, principal=principal, event_id=event_id)
    return await access_log.query_log(
        session,
        event=event,
        gate_key_id=gate,
        decision=decision,
        reason=reason,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
    )


@router.get("/{event_id}/counts", response_model=LiveCounts)
async def live_counts(
    event_id: uuid.UUID, session: SessionDep, principal: RequireOrganiser, since: IsoDateTime | None = None
) -> LiveCounts:
    event = await events.get_managed_event(session, principal=principal, event_id=event_id)
    return await access_log.live_counts(session, event=event, since=since)
