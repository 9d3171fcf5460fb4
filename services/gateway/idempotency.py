"""`Idempotency-Key`: stored per API key in Postgres with a fingerprint of the request; a retry with the same key
and the same request returns the first response, with another request it is refused (422
`idempotency_key_reused`). Records expire after `IDEMPOTENCY_TTL_S`; erasing an attendee removes theirs."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import Unprocessable
from services.gateway.auth import Principal
from services.gateway.tables import IdempotencyKey
from services.gateway.uploads import Photo


async def purge_idempotency_keys(session: AsyncSession, *, older_than: timedelta) -> int:
    result = await session.execute(
        delete(IdempotencyKey)
        .where(IdempotencyKey.created_at < datetime.now(UTC) - older_than)
        .returning(IdempotencyKey.key)
    )
    return len(result.all())


def request_fingerprint(event_id: uuid.UUID, fields: list[str | None], photos: list[Photo]) -> str:
    h = hashlib.sha256(str(event_id).encode())
    for value in fields:
        h.update(b"\x00" + (value or "").encode())
    for photo in photos:
        h.update(b"\x01" + hashlib.sha256(photo.data).digest())
    return h.hexdigest()


@dataclass(frozen=True)
class StoredResponse:
    """What the first attempt with this key answered: the route sends it again as it is (the response edge)."""

    status_code: int
    body: dict[str, Any]
    attendee_id: uuid.UUID | None


async def stored_response(
    session: AsyncSession, *, principal: Principal, key: str, fingerprint: str, ttl: timedelta
) -> StoredResponse | None:
    row = await session.get(IdempotencyKey, (principal.key_id, key))
    if row is None:
        return None
    if row.created_at < datetime.now(UTC) - ttl:
        await session.delete(row)  # expired: the key may be used again
        await session.flush()
        return None
    if row.fingerprint != fingerprint:
        raise Unprocessable("this Idempotency-Key was used for a different request", code="idempotency_key_reused")
    return StoredResponse(row.status_code, row.response, row.attendee_id)
