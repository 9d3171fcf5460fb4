"""Access log queries: a keyset-paginated page (newest first) and live counts for an event."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import BadRequest
from services.gateway.schemas import Decision, LiveCounts, LogEntry, LogPage
from services.gateway.tables import AccessLog, Attendee, Event


def _decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        value = int(cursor)
    except ValueError:
        raise BadRequest("invalid cursor") from None
    if not 0 < value < 2**63:  # a log id is a Postgres bigint; larger would be a 500 there
        raise BadRequest("invalid cursor")
    return value


async def query_log(
    session: AsyncSession,
    *,
    event: Event,
    gate_key_id: uuid.UUID | None = None,
    decision: Decision | None = None,
    reason: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> LogPage:
    stmt = select(AccessLog).where(AccessLog.event_id == event.id)
    if gate_key_id is not None:
        stmt = stmt.where(AccessLog.gate_key_id == gate_key_id)
    if decision is not None:
        stmt = stmt.where(AccessLog.decision == decision.value)
    if reason is not None:
        if "\x00" in reason:  # Postgres cannot even compare a NUL-bearing string: no row has one
            raise BadRequest("reason must not contain NUL")
        stmt = stmt.where(AccessLog.reason == reason)
    if since is not None:
        stmt = stmt.where(AccessLog.at >= since)
    if until is not None:
        stmt = stmt.where(AccessLog.at < until)
    before = _decode_cursor(cursor)
    if before is not None:
        stmt = stmt.where(AccessLog.id < before)
    rows = list((await session.execute(stmt.order_by(AccessLog.id.desc()).limit(limit + 1))).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return LogPage(
        items=[LogEntry.model_validate(r) for r in rows],
        next_cursor=str(rows[-1].id) if more and rows else None,
    )


async def live_counts(session: AsyncSession, *, event: Event, since: datetime | None = None) -> LiveCounts:
    stmt = (
        select(AccessLog.decision, AccessLog.reason, func.count())
        .where(AccessLog.event_id == event.id)
        .group_by(AccessLog.decision, AccessLog.reason)
    )
    if since is not None:
        stmt = stmt.where(AccessLog.at >= since)
    admitted = denied = unknown = 0
    denied_by: dict[str, int] = {}
    unknown_by: dict[str, int] = {}
    for decision, reason, count in (await session.execute(stmt)).all():
        if decision == Decision.ADMIT.value:
            admitted += count
        elif decision == Decision.DENY.value:
            denied += count
            denied_by[reason or "none"] = denied_by.get(reason or "none", 0) + count
        else:
            unknown += count
            unknown_by[reason or "none"] = unknown_by.get(reason or "none", 0) + count
    attendees, entered = (
        await session.execute(
            select(func.count(), func.count(Attendee.entered_at)).where(Attendee.event_id == event.id)
        )
    ).one()
    return LiveCounts(
        event_id=event.id,
        since=since,
        admitted=admitted,
        denied=denied,
        denied_by_reason=denied_by,
        unknown=unknown,
        unknown_by_reason=unknown_by,
        attendees=int(attendees),
        entered=int(entered),
    )
