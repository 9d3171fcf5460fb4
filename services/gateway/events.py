"""Events: create, read, list, erase. Tenancy: an organiser sees only the events of its tenant (auth.py).

Retention: erasing an event deletes everything of it — the matcher gallery (DROP of its partition), cached
templates, attendees, gate keys bound to it, idempotency records and its access-log rows.
"""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import DependencyUnavailable, NotFound, Unprocessable
from services.contracts.liveness import LivenessMode
from services.contracts.matcher import GalleryCreate
from services.contracts.models import get_model
from services.embedder.client import EmbedderClient
from services.gateway import thresholds
from services.gateway.auth import Principal
from services.gateway.cache import TemplateCache
from services.gateway.errors import EventNotFound
from services.gateway.schemas import Erased, EventCreate, EventMode, EventOut, EventUpdate, Role
from services.gateway.tables import AccessLog, ApiKey, Attendee, Event, IdempotencyKey
from services.gateway.thresholds import GallerySize
from services.matcher.client import MatcherClient


def check_embedded_model(model_id: str, event: Event, retry_after_s: int) -> None:
    """The one model-pin check, for enrolment and the gate alike: vectors of another model than the event's are a
    misconfigured embedder, a fault (503 with the configured Retry-After), never a decision or a stored template."""
    if model_id != event.model_id:
        raise DependencyUnavailable(
            "embedder", retry_after_s, f"embedder runs {model_id!r}, the event is pinned to {event.model_id!r}"
        )


def to_out(event: Event, size: GallerySize) -> EventOut:
    """The event with its effective thresholds and expected rates at `size` (its current gallery)."""
    return EventOut(
        id=event.id,
        name=event.name,
        starts_at=event.starts_at,
        ends_at=event.ends_at,
        mode=EventMode(event.mode),
        allow_reentry=event.allow_reentry,
        model_id=event.model_id,
        target_fpir=event.target_fpir,
        target_fmr=event.target_fmr,
        verify_threshold=thresholds.verify_threshold(event),
        identify_threshold=thresholds.identify_threshold(event, size.templates, size.attendees),
        identify_margin=thresholds.identify_margin(event),
        threshold_overridden=event.verify_threshold is not None or event.identify_threshold is not None,
        margin_overridden=event.identify_margin is not None,
        liveness=LivenessMode(event.liveness),
        expected=thresholds.expected_rates(event, size),
        created_at=event.created_at,
    )


async def event_out(session: AsyncSession, event: Event) -> EventOut:
    return to_out(event, await thresholds.gallery_size(session, event.id))


def can_manage(principal: Principal, event: Event) -> bool:
    return principal.role == Role.ADMIN or (principal.role == Role.ORGANISER and event.tenant_id == principal.tenant_id)


async def get_managed_event(session: AsyncSession, *, principal: Principal, event_id: uuid.UUID) -> Event:
    """The event if this principal may manage it; 404 otherwise (other tenants' events do not exist for you)."""
    event = await session.get(Event, event_id)
    if event is None or not can_manage(principal, event):
        raise EventNotFound()
    return event


async def create_event(
    session: AsyncSession,
    *,
    principal: Principal,
    body: EventCreate,
    embedder: EmbedderClient,
    matcher: MatcherClient,
    default_model_id: str,
) -> Event:
    model_id = body.model_id or default_model_id
    if get_model(model_id) is None:
        raise Unprocessable(f"unknown model {model_id!r}", code="unknown_model")
    served = await embedder.model()
    if served.id != model_id:  # every gate call would be a 503 while /readyz says ok: refuse it now instead
        raise Unprocessable(
            f"model {model_id!r} is not served by the embedder (it serves {served.id!r})", code="model_not_served"
        )
    for field in ("verify_threshold", "identify_threshold"):
        thresholds.check_override(model_id, field, getattr(body, field), force=body.force_thresholds)
    event = Event(
        id=uuid.uuid4(),
        tenant_id=principal.tenant_id or principal.key_id,  # an admin's events form the admin's own tenant
        created_by=principal.key_id,
        name=body.name,
        starts_at=body.starts_at,
        ends_at=body.ends_at,
        mode=body.mode.value,
        allow_reentry=body.allow_reentry,
        model_id=model_id,
        target_fpir=body.target_fpir,
        target_fmr=body.target_fmr,
        verify_threshold=body.verify_threshold,
        identify_threshold=body.identify_threshold,
        identify_margin=body.identify_margin,
        liveness=body.liveness.value,
    )
    session.add(event)
    await session.flush()
    # The gallery first exists in the matcher; if our commit then fails, an empty gallery is left behind, which
    # is harmless (ensure is idempotent and nothing references it).
    await matcher.ensure_gallery(event.id, GalleryCreate(model_id=model_id))
    await session.refresh(event)
    return event


async def update_event(session: AsyncSession, *, principal: Principal, event_id: uuid.UUID, body: EventUpdate) -> Event:
    event = await get_managed_event(session, principal=principal, event_id=event_id)
    changes = body.model_dump(exclude_unset=True)
    force = bool(changes.pop("force_thresholds", False))
    for field in ("name", "mode", "allow_reentry", "target_fpir", "target_fmr", "liveness"):
        if changes.get(field) is None:
            changes.pop(field, None)  # not nullable: null means "leave it"
    for field in ("verify_threshold", "identify_threshold"):
        thresholds.check_override(event.model_id, field, changes.get(field), force=force)
    if "mode" in changes:
        changes["mode"] = EventMode(changes["mode"]).value
    if "liveness" in changes:
        changes["liveness"] = LivenessMode(changes["liveness"]).value
    for field, value in changes.items():
        setattr(event, field, value)
    if event.starts_at and event.ends_at and event.ends_at <= event.starts_at:
        raise Unprocessable("ends_at must be after starts_at", code="validation_error")
    await session.flush()
    await session.refresh(event)
    return event


async def list_events(session: AsyncSession, *, principal: Principal) -> list[Event]:
    stmt = select(Event).order_by(Event.created_at.desc())
    if principal.role != Role.ADMIN:
        stmt = stmt.where(Event.tenant_id == principal.tenant_id)
    return list((await session.execute(stmt)).scalars())


async def erase_event(
    session: AsyncSession,
    *,
    principal: Principal,
    event_id: uuid.UUID,
    matcher: MatcherClient,
    cache: TemplateCache,
) -> Erased:
    event = await get_managed_event(session, principal=principal, event_id=event_id)
    attendees = (
        await session.execute(select(func.count()).select_from(Attendee).where(Attendee.event_id == event.id))
    ).scalar_one()
    # Lock the row so a concurrent enrolment cannot add an attendee between the DROP and our DELETE.
    await session.execute(select(Event.id).where(Event.id == event.id).with_for_update())
    # Templates go first: if the matcher is down we fail with 503 and nothing is erased; a retry is idempotent.
    try:
        templates = (await matcher.drop_gallery(event.id)).deleted
    except NotFound:
        templates = 0  # already gone: erasing is idempotent
    await cache.invalidate_event(event.id)
    deleted_log = await session.execute(delete(AccessLog).where(AccessLog.event_id == event.id).returning(AccessLog.id))
    log_rows = len(deleted_log.all())
    await session.execute(delete(IdempotencyKey).where(IdempotencyKey.event_id == event.id))
    await session.execute(delete(ApiKey).where(ApiKey.event_id == event.id))
    await session.execute(delete(Attendee).where(Attendee.event_id == event.id))
    await session.execute(delete(Event).where(Event.id == event.id))
    await session.flush()
    return Erased(attendees=int(attendees), log_rows=int(log_rows or 0), templates=templates)
