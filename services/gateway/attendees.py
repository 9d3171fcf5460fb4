"""Attendees once enrolled: read, list, revoke, erase (enrolment itself: `enrolment.py`).

Retention: erasing an attendee deletes the templates (matcher), the cached vectors (Redis), the attendee row and
its idempotency records, and anonymises its access-log rows (attendee_id and ticket code nulled; the decision,
reason, distance and time are kept for the event's counts); import results keep only the row number.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import NotFound
from services.gateway.cache import TemplateCache
from services.gateway.errors import AttendeeNotFound
from services.gateway.tables import AccessLog, Attendee, Event
from services.matcher.client import MatcherClient

log = logging.getLogger("facegate.gateway.attendees")


async def get_attendee(session: AsyncSession, *, event: Event, attendee_id: uuid.UUID) -> Attendee:
    attendee = await session.get(Attendee, attendee_id)
    if attendee is None or attendee.event_id != event.id:
        raise AttendeeNotFound()
    return attendee


async def list_attendees(
    session: AsyncSession, *, event: Event, limit: int, offset: int, q: str | None = None
) -> list[Attendee]:
    stmt = select(Attendee).where(Attendee.event_id == event.id)
    if q:
        # a substring of the name or ticket code, case-insensitive; LIKE wildcards in q are taken literally
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(Attendee.name.ilike(pattern, escape="\\") | Attendee.ticket_code.ilike(pattern, escape="\\"))
    stmt = stmt.order_by(Attendee.created_at, Attendee.id).limit(limit).offset(offset)
    return list((await session.execute(stmt)).scalars())


async def revoke(session: AsyncSession, *, event: Event, attendee_id: uuid.UUID, cache: TemplateCache) -> Attendee:
    attendee = await get_attendee(session, event=event, attendee_id=attendee_id)
    if attendee.revoked_at is None:
        attendee.revoked_at = datetime.now(UTC)
        await session.flush()
    await cache.invalidate(event.id, attendee.id)
    return attendee


async def erase(
    session: AsyncSession, *, event: Event, attendee_id: uuid.UUID, matcher: MatcherClient, cache: TemplateCache
) -> int:
    """Returns the number of templates the matcher deleted."""
    attendee = await get_attendee(session, event=event, attendee_id=attendee_id)
    await session.execute(select(Attendee.id).where(Attendee.id == attendee.id).with_for_update())
    deleted = await _delete_templates(matcher, event.id, attendee.id)  # 503 here: nothing erased, retry is safe
    await cache.invalidate(event.id, attendee.id)
    await session.execute(
        update(AccessLog).where(AccessLog.attendee_id == attendee.id).values(attendee_id=None, ticket_code=None)
    )
    await scrub_import_results(session, event_id=event.id, attendee_id=attendee.id, ticket_code=attendee.ticket_code)
    await session.delete(attendee)  # idempotency records go with it (ON DELETE CASCADE)
    await session.flush()
    return deleted


async def _delete_templates(matcher: MatcherClient, event_id: uuid.UUID, attendee_id: uuid.UUID) -> int:
    try:
        return (await matcher.delete_attendee(event_id, attendee_id)).deleted
    except NotFound:
        return 0  # none stored (or no gallery): erasing is idempotent


# An import job's results name each row's ticket code and attendee id (and a failed row's photo file names):
# an erased attendee's rows keep only their row number, so the job's counts still add up.

_SCRUB_IMPORTS = text(
    """
    UPDATE import_jobs SET results = (
        SELECT coalesce(jsonb_agg(
            CASE WHEN r.elem->>'attendee_id' = :attendee_id OR r.elem->>'ticket_code' = :ticket_code
                 THEN jsonb_build_object('row', r.elem->'row', 'erased', true)
                 ELSE r.elem END
            ORDER BY r.ord), '[]'::jsonb)
        FROM jsonb_array_elements(import_jobs.results) WITH ORDINALITY AS r(elem, ord)
    )
    WHERE event_id = :event_id
      AND (results @> jsonb_build_array(jsonb_build_object('attendee_id', CAST(:attendee_id AS text)))
           OR results @> jsonb_build_array(jsonb_build_object('ticket_code', CAST(:ticket_code AS text))))
    """
)


async def scrub_import_results(
    session: AsyncSession, *, event_id: uuid.UUID, attendee_id: uuid.UUID, ticket_code: str
) -> None:
    await session.execute(
        _SCRUB_IMPORTS, {"event_id": event_id, "attendee_id": str(attendee_id), "ticket_code": ticket_code}
    )
