"""One face, one attendee: an enrolment whose face already identifies another attendee of the event is refused.

Two tickets with the same face would make every 1:K answer for that face a tie (`ambiguous` at best) and let
one person enter twice. The check is a 1:K search of the event's gallery with each new photo, at the event's
identify threshold: what the gate would answer. `409 duplicate_face` names the other attendee so the organiser
can tell a mistake (the same photos under two tickets) from twins; `allow_duplicate_face=true` enrols anyway
and is logged. Concurrent enrolments of the same face (two import rows at once) can both pass.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import Conflict, NotFound
from services.contracts.embedder import EmbedResponse
from services.contracts.matcher import SearchRequest
from services.gateway import thresholds
from services.gateway.tables import Attendee, Event
from services.matcher.client import MatcherClient

log = logging.getLogger("facegate.gateway.duplicates")


async def check_duplicate_faces(
    session: AsyncSession,
    *,
    event: Event,
    embedded: list[EmbedResponse],
    matcher: MatcherClient,
    allow: bool,
    attendee_id: uuid.UUID | None = None,
) -> None:
    """Raise 409 `duplicate_face` when a photo's face identifies an attendee other than `attendee_id`."""
    for photo_index, e in enumerate(embedded):
        try:
            found = await matcher.search(
                event.id, SearchRequest(model_id=event.model_id, embedding=e.faces[0].embedding, k=2)
            )
        except NotFound:
            return  # no gallery yet: nobody to collide with
        threshold = thresholds.identify_threshold(event, found.templates, found.attendees)
        for match in found.matches:
            if match.attendee_id == attendee_id or match.distance > threshold:
                continue
            other = await session.get(Attendee, match.attendee_id)
            if other is None:
                continue  # erased meanwhile
            if allow:
                log.warning(
                    "duplicate face enrolled on purpose: event %s, photo %d matches attendee %s",
                    event.id, photo_index, other.id,
                )  # fmt: skip
                continue
            raise Conflict(
                f"photo {photo_index} shows the face of attendee {other.name!r} (ticket {other.ticket_code!r}), "
                "already registered for this event; send allow_duplicate_face=true to register it anyway",
                code="duplicate_face",
                errors=[{"photo": photo_index, "attendee_id": str(other.id), "name": other.name,
                         "ticket_code": other.ticket_code}],
            )  # fmt: skip
