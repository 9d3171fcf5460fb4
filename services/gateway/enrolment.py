"""Enrolment: an attendee with face photos, all or nothing, and more photos for one already enrolled.

Enrolment order (so a failure anywhere leaves no half-enrolled attendee):
1. embed every photo with the strict `enrol` profile; any rejection → 422 listing every photo's reasons, nothing
   stored; a face that identifies another attendee of the event → 409 `duplicate_face` (`duplicates.py`);
2. insert the attendee row (transaction open, not committed);
3. add all templates to the matcher in ONE batch call; if it fails → roll back, 503;
4. store the idempotency record and commit; if the commit fails after the matcher succeeded → compensate by
   deleting the attendee's templates in the matcher.

`Idempotency-Key`: stored per API key in Postgres with a fingerprint of the request; a retry with the same key and
the same request returns the first response, with another request it is refused (422 `idempotency_key_reused`).
Two concurrent first attempts serialise on the unique ticket code; the loser returns the winner's stored response.

The saga commits itself (docs/architecture.md, "Commit policy"): the order of the commit and the matcher call is
the point.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import BadRequest, Conflict, DependencyUnavailable
from services.contracts.embedder import EmbedResponse, QualityProfile
from services.contracts.matcher import TemplateIn, TemplatesCreate
from services.embedder.client import EmbedderClient
from services.gateway.attendees import get_attendee
from services.gateway.auth import Principal
from services.gateway.cache import TemplateCache
from services.gateway.duplicates import check_duplicate_faces
from services.gateway.errors import QualityRejected
from services.gateway.events import check_embedded_model
from services.gateway.idempotency import request_fingerprint, stored_response
from services.gateway.schemas import AttendeeOut, Enrolled, FaceFound, PhotoReport
from services.gateway.tables import Attendee, Event, IdempotencyKey
from services.gateway.text import ticket_key
from services.gateway.uploads import Photo, check_image, clean_text
from services.matcher.client import MatcherClient

log = logging.getLogger("facegate.gateway.enrolment")


async def _embed_all(embedder: EmbedderClient, photos: list[Photo]) -> list[EmbedResponse]:
    """Embed concurrently (the embedder batches across requests); any fault fails the whole enrolment."""
    results = await asyncio.gather(
        *(embedder.embed(p.data, p.content_type, QualityProfile.ENROL) for p in photos),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, EmbedResponse)]


def _reports(photos: list[Photo], embedded: list[EmbedResponse]) -> list[PhotoReport]:
    return [
        PhotoReport(
            index=i,
            filename=p.filename,
            passed=e.passed,
            reasons=[r.value for r in e.reasons],
            faces=len(e.faces),
            image_width=e.image.width,
            image_height=e.image.height,
            detections=[
                FaceFound(box=f.box, landmarks=f.landmarks, score=f.score, reasons=[r.value for r in f.quality.reasons])
                for f in e.faces
            ],
        )
        for i, (p, e) in enumerate(zip(photos, embedded, strict=True))
    ]


def _templates(
    attendee_id: uuid.UUID, event: Event, embedded: list[EmbedResponse], retry_after_s: int
) -> TemplatesCreate:
    items = []
    model_id = event.model_id
    for e in embedded:
        check_embedded_model(e.model.id, event, retry_after_s)
        face = e.faces[0]
        items.append(
            TemplateIn(attendee_id=attendee_id, model_id=model_id, embedding=face.embedding, quality=face.score)
        )
    return TemplatesCreate(templates=items)


async def _embed_and_check(embedder: EmbedderClient, photos: list[Photo], max_photos: int) -> list[EmbedResponse]:
    if not photos:
        raise BadRequest("at least one photo is required")
    if len(photos) > max_photos:
        raise BadRequest(f"at most {max_photos} photos per request")
    for p in photos:
        check_image(p)
    embedded = await _embed_all(embedder, photos)
    reports = _reports(photos, embedded)
    if not all(r.passed for r in reports):
        raise QualityRejected([r.model_dump() for r in reports])
    return embedded


async def enrol(
    session: AsyncSession,
    *,
    principal: Principal,
    event: Event,
    name: str,
    ticket_code: str,
    external_ref: str | None,
    photos: list[Photo],
    idempotency_key: str | None,
    embedder: EmbedderClient,
    matcher: MatcherClient,
    cache: TemplateCache,
    max_photos: int,
    idempotency_ttl: timedelta = timedelta(days=7),
    allow_duplicate_face: bool = False,
) -> tuple[int, dict[str, Any]]:
    """Returns (status, body). Commits itself: the order of commit and matcher call is the point."""
    name, ticket_code = clean_text(name, "name"), clean_text(ticket_code, "ticket_code")
    external_ref = clean_text(external_ref, "external_ref") if external_ref and external_ref.strip() else None
    if idempotency_key is not None and not (0 < len(idempotency_key) <= 200):
        raise BadRequest("Idempotency-Key must be 1-200 characters")
    event_id = event.id
    fingerprint = request_fingerprint(event_id, [name, ticket_code, external_ref], photos)
    if idempotency_key:
        stored = await stored_response(
            session, principal=principal, key=idempotency_key, fingerprint=fingerprint, ttl=idempotency_ttl
        )
        if stored is not None:
            return stored
    taken = (
        await session.execute(
            select(Attendee.id).where(Attendee.event_id == event_id, Attendee.ticket_key == ticket_key(ticket_code))
        )
    ).scalar_one_or_none()
    if taken is not None:
        raise Conflict(f"ticket code {ticket_code!r} is already registered for this event", code="ticket_exists")

    embedded = await _embed_and_check(embedder, photos, max_photos)
    await check_duplicate_faces(session, event=event, embedded=embedded, matcher=matcher, allow=allow_duplicate_face)
    attendee_id = uuid.uuid4()
    batch = _templates(attendee_id, event, embedded, embedder.retry_after_s)

    attendee = Attendee(
        id=attendee_id,
        event_id=event_id,
        name=name,
        ticket_code=ticket_code,
        ticket_key=ticket_key(ticket_code),
        external_ref=external_ref or None,
        templates=len(batch.templates),
        entries=0,
    )
    session.add(attendee)
    try:
        await session.flush()
    except IntegrityError:
        # The same ticket was registered concurrently (maybe by this very request, retried): if it was with this
        # Idempotency-Key, answer what the first attempt answered.
        await session.rollback()
        if idempotency_key:
            stored = await stored_response(
                session, principal=principal, key=idempotency_key, fingerprint=fingerprint, ttl=idempotency_ttl
            )
            if stored is not None:
                return stored
        raise Conflict(
            f"ticket code {ticket_code!r} is already registered for this event", code="ticket_exists"
        ) from None

    try:
        # After the ticket's row is in: a concurrent retry of this very request has by now either replayed the
        # first answer (above) or is a different ticket, so a face found here really is someone else's.
        await check_duplicate_faces(
            session, event=event, embedded=embedded, matcher=matcher, allow=allow_duplicate_face
        )
        await matcher.add_templates(event_id, batch)
    except BaseException:
        await session.rollback()  # nothing was committed; the matcher took nothing either (one batch)
        raise

    await session.refresh(attendee)
    body = Enrolled(
        attendee=AttendeeOut.model_validate(attendee),
        templates_added=len(batch.templates),
        photos=_reports(photos, embedded),
    ).model_dump(mode="json")
    if idempotency_key:
        session.add(
            IdempotencyKey(
                api_key_id=principal.key_id,
                key=idempotency_key,
                fingerprint=fingerprint,
                event_id=event_id,
                attendee_id=attendee_id,
                status_code=201,
                response=body,
            )
        )
    try:
        await session.commit()
    except (SQLAlchemyError, OSError) as exc:
        log.warning("enrolment commit failed after the matcher stored templates; compensating: %r", exc)
        await session.rollback()
        await _compensate(matcher, event_id, attendee_id)
        if isinstance(exc, IntegrityError) and idempotency_key:
            stored = await stored_response(
                session, principal=principal, key=idempotency_key, fingerprint=fingerprint, ttl=idempotency_ttl
            )
            if stored is not None:
                return stored
        if isinstance(exc, IntegrityError):
            raise Conflict("the attendee could not be stored: conflicting write", code="conflict") from exc
        raise DependencyUnavailable("database", matcher.retry_after_s) from exc
    await cache.invalidate(event_id, attendee_id)
    return 201, body


async def _compensate(matcher: MatcherClient, event_id: uuid.UUID, attendee_id: uuid.UUID) -> None:
    try:
        await matcher.delete_attendee(event_id, attendee_id)
    except Exception as exc:  # the orphan templates belong to no attendee row: no gate can ever match them
        log.error("compensation failed: templates of %s/%s left in the matcher: %r", event_id, attendee_id, exc)


async def add_photos(
    session: AsyncSession,
    *,
    event: Event,
    attendee_id: uuid.UUID,
    photos: list[Photo],
    embedder: EmbedderClient,
    matcher: MatcherClient,
    cache: TemplateCache,
    max_photos: int,
    allow_duplicate_face: bool = False,
) -> Enrolled:
    attendee = await get_attendee(session, event=event, attendee_id=attendee_id)
    embedded = await _embed_and_check(embedder, photos, max_photos)
    await check_duplicate_faces(
        session, event=event, embedded=embedded, matcher=matcher, allow=allow_duplicate_face,
        attendee_id=attendee.id,
    )  # fmt: skip
    batch = _templates(attendee.id, event, embedded, embedder.retry_after_s)
    # Lock the row: an erase running concurrently must not leave these templates behind.
    await session.execute(select(Attendee.id).where(Attendee.id == attendee.id).with_for_update())
    await matcher.add_templates(event.id, batch)
    attendee.templates += len(batch.templates)
    await session.flush()
    await cache.invalidate(event.id, attendee.id)
    return Enrolled(
        attendee=AttendeeOut.model_validate(attendee),
        templates_added=len(batch.templates),
        photos=_reports(photos, embedded),
    )
